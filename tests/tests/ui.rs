//! Compile-fail tests: each file under `ui/` is a mistake the derives must
//! reject with an error on the offending token (see its `.stderr`).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*/*.rs");
}
