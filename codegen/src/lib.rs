//! `pc-codegen`: the compiler side of pcc — circuit IR, builder, validation, structure files and
//! the compiler from IR to an execution plan, the CUDA emitter, and ahead-of-time output: the
//! build-script API ([`build`]) and the declarations behind the `circuit!` macro ([`declare`]).

pub mod aot;
pub mod build;
pub mod builder;
pub mod compile;
pub mod declare;
pub mod emit;
mod error;
pub mod ir;
pub mod model;
pub mod pipeline;
pub mod structures;
pub mod syntax;
pub mod validate;

pub use builder::{CircuitBuilder, SumEdges};
pub use compile::{CompileOptions, compile, compile_with};
pub use error::{CircuitError, ModelError};
pub use ir::{Circuit, Dist, Node, NodeId};
pub use model::Model;
pub use validate::validate;
