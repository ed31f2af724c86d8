//! System tools some tests need beyond a Rust toolchain: make, a C or C++
//! compiler, pkg-config, binutils, FFmpeg's development libraries, melt.
//! Outside CI a test whose tools are missing is skipped and says why, so
//! `cargo test` passes on a fresh machine; in CI (`CI=true`), where
//! `.ci/run` installs them all, a missing tool fails the test instead of
//! quietly testing less. The plugin's tests include this file too.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::Write;
use std::process::{Command, Stdio};

/// Whether `program args` starts and exits successfully.
pub fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether a test may go on: true when nothing is `missing` (the names of
/// what was looked for and not found). Otherwise prints that `test` is
/// skipped and why, and returns false; panics in CI.
pub fn available(test: &str, missing: &[&str]) -> bool {
    if missing.is_empty() {
        return true;
    }
    let what = missing.join(", ");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: {what} not found; CI needs it (`bash .ci/run` installs it)");
    }
    // Straight to stderr: the test harness captures `eprintln!` of a
    // passing test, and a skip must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {test}: {what} not found (README, Quick start, says how to install the test tools)"
    );
    false
}

/// Of `programs` (each with arguments that make it succeed, such as
/// `--version`), those that do not run.
pub fn missing_programs<'a>(programs: &[(&'a str, &[&str])]) -> Vec<&'a str> {
    programs
        .iter()
        .filter(|(p, args)| !runs(p, args))
        .map(|(p, _)| *p)
        .collect()
}
