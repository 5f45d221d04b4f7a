//! Compile-fail tests of `circuit!`: each file in `tests/ui` is a broken declaration, and its
//! `.stderr` holds the expected error, pointing at the offending tokens. Regenerate with
//! `TRYBUILD=overwrite cargo test --test macro_ui` and read the diff.

#[test]
fn circuit_macro_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
