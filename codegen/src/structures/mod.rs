//! Standard PC structures, each producing IR that passes validation: HCLT (learned from data),
//! PD (images), RAT-SPN and HMM.

mod common;
pub mod hclt;
pub mod hmm;
pub mod pd;
pub mod rat_spn;
