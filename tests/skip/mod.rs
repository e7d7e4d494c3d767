//! What a test does when data it needs (`../shared`: the datasets and the authors' weights) is
//! not beside the checkout. Under CI (`CI=true`, as `.ci/run` is run) that is a failure: a green
//! CI run must mean the tests ran. Elsewhere the test returns early and says so in one line that
//! the test harness does not swallow (written to the process's stderr directly, not through
//! `eprintln!`, which a passing test's capture hides), so that a green run counts its skips.
#![allow(dead_code)]

use std::io::Write as _;

/// True when the tests run under CI (`CI=true`).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// Reports that `what` is missing: panics under CI, otherwise prints one visible SKIP line
/// naming the test; the caller then returns.
pub fn missing(what: &str) {
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    if under_ci() {
        panic!("{test}: {what} not found, and CI=true: data a test needs must be there under CI");
    }
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "SKIP {test}: {what} not found (under CI=true this fails)"
    );
}
