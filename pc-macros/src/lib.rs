//! `pc-macros`: procedural macros of pcc. The `circuit! { … }` macro and the include helper for
//! build-script output land with the macro issue; the crate exists now so the workspace layout is
//! final and dependents can name it.
