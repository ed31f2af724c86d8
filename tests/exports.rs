//! The shared library's public surface is the C API and nothing else: every
//! dynamic symbol it defines starts with `cogvideo_`, and every function of
//! the header is exported.

mod common;

use std::process::Command;

#[test]
fn only_cogvideo_symbols_are_exported() {
    let missing = common::tools::missing_programs(&[("nm", &["--version"])]);
    if !common::tools::available("only_cogvideo_symbols_are_exported", &missing) {
        return;
    }
    let out = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(common::cdylib())
        .output()
        .expect("nm (binutils) is needed for this test");
    assert!(
        out.status.success(),
        "nm failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let symbols: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    let foreign: Vec<&String> = symbols
        .iter()
        .filter(|s| !s.starts_with("cogvideo_"))
        .collect();
    assert!(
        foreign.is_empty(),
        "symbols outside the C API are exported: {foreign:?}"
    );

    let header = include_str!("../include/cogvideo.h");
    let declared: Vec<&str> = header
        .lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with("//") && l.contains('('))
        .filter_map(|l| {
            l.split(|c: char| !c.is_alphanumeric() && c != '_')
                .find(|w| w.starts_with("cogvideo_") && l.contains(&format!("{w}(")))
        })
        .collect();
    assert!(declared.len() >= 15, "header functions found: {declared:?}");
    for f in declared {
        assert!(
            symbols.iter().any(|s| s == f),
            "{f} is declared but not exported"
        );
    }
}
