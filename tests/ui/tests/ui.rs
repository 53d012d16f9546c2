//! Pins every accepted handler shape (`pass/`) and every misuse's compile
//! error (`fail/`, one per file, with its `.stderr`). Refresh the expected
//! output with `TRYBUILD=overwrite cargo test -p xrayprofile-ui-tests` and
//! review the diff like code.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("pass/*.rs");
    cases.compile_fail("fail/*.rs");
}
