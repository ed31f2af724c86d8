//! Programs built against every released C header keep working with
//! today's library. `tests/abi/caller.c` is compiled against each frozen
//! header (`tests/abi/cogvideo-1.N.h`) and against `include/cogvideo.h`,
//! linked with the built `libcogvideo.so` and run on the tiny checkpoints:
//! it initialises every options struct with its header's `*_init` (canary
//! bytes behind it must survive) and passes each call a struct that ends at
//! an inaccessible page (any byte read or written past it faults), and the
//! frames each call produces must equal the current header's.
//!
//! Needs a C compiler (`cc`); `.ci/run` installs one.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The released headers, oldest first; the last is the current ABI version.
const RELEASED: [&str; 6] = ["1.0", "1.1", "1.2", "1.3", "1.4", "1.5"];

fn abi_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/abi")
}

fn current_header() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include/cogvideo.h")
}

/// `cc` if there is one; outside CI its absence skips the test (said on
/// stderr), in CI (`CI=true`) it fails.
fn c_compiler() -> Option<&'static str> {
    if Command::new("cc").arg("--version").output().is_ok() {
        return Some("cc");
    }
    assert!(
        std::env::var("CI").is_err(),
        "no C compiler (cc) on this CI machine"
    );
    eprintln!("SKIPPED: the ABI tests need a C compiler (cc); `apt-get install gcc` installs one");
    None
}

/// Builds the caller against `header` into `dir`.
fn build_caller(cc: &str, header: &Path, lib: &Path, dir: &Path) -> PathBuf {
    let exe = dir.join("caller");
    let libdir = lib.parent().unwrap();
    let out = Command::new(cc)
        .args(["-std=c11", "-O1", "-Wall", "-Wextra", "-Werror"])
        .arg(format!("-DHEADER=\"{}\"", header.display()))
        .arg(abi_dir().join("caller.c"))
        .arg("-o")
        .arg(&exe)
        .arg(format!("-L{}", libdir.display()))
        .arg(format!("-Wl,-rpath,{}", libdir.display()))
        .arg("-lcogvideo")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "compiling caller.c against {} failed:\n{}",
        header.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn programs_built_against_every_released_header_work_unchanged() {
    let Some(cc) = c_compiler() else { return };
    let lib = common::cdylib();
    let root = Scratch(std::env::temp_dir().join(format!("cogvideo-abi-{}", std::process::id())));
    let mut headers: Vec<(String, PathBuf)> = RELEASED
        .iter()
        .map(|v| (v.to_string(), abi_dir().join(format!("cogvideo-{v}.h"))))
        .collect();
    headers.push(("current".into(), current_header()));

    let mut outputs = Vec::new();
    for (version, header) in &headers {
        let dir = root.0.join(version);
        std::fs::create_dir_all(&dir).unwrap();
        let exe = build_caller(cc, header, &lib, &dir);
        let run = Command::new(&exe)
            .arg(common::data_dir().join("tiny"))
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "the program built against header {version} failed ({}):\n{}{}",
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        outputs.push((version.clone(), dir));
    }

    // The current header's program, run again in a new process with the
    // inversion the first run saved, edits it to the same frames.
    let (_, current_dir) = outputs.last().unwrap();
    let again = root.0.join("again");
    std::fs::create_dir_all(&again).unwrap();
    let run = Command::new(current_dir.join("caller"))
        .arg(common::data_dir().join("tiny"))
        .arg(&again)
        .env("COGVIDEO_ABI_INVERSION", current_dir.join("clip.inv"))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "editing a saved inversion in a new process failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        std::fs::read(again.join("edit.raw")).unwrap()
            == std::fs::read(current_dir.join("edit.raw")).unwrap(),
        "the saved inversion edits to other frames"
    );

    // Each call's frames equal the current header's, for every header that
    // has the call.
    let (_, current) = outputs.last().unwrap();
    let calls = [
        ("generate", "1.0"),
        ("animate", "1.0"),
        ("edit", "1.0"),
        ("video_to_video", "1.1"),
        ("decode", "1.1"),
    ];
    for (call, since) in calls {
        let want = std::fs::read(current.join(format!("{call}.raw"))).unwrap();
        assert!(!want.is_empty() && want.iter().any(|&b| b != want[0]));
        for (version, dir) in &outputs[..outputs.len() - 1] {
            let path = dir.join(format!("{call}.raw"));
            if version.as_str() < since {
                assert!(!path.exists(), "{call} is not in header {version}");
                continue;
            }
            let got = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                got == want,
                "{call}: the frames of the program built against header {version} differ from the current header's"
            );
        }
    }
}

/// The declarations of a header without its comments: the structs' and
/// functions' text as a compiler sees it.
fn declarations(header: &str) -> String {
    let mut out = String::new();
    let mut in_block = false;
    for line in header.lines() {
        let mut line = line.to_string();
        if in_block {
            match line.find("*/") {
                Some(end) => {
                    line = line[end + 2..].to_string();
                    in_block = false;
                }
                None => continue,
            }
        }
        if let Some(start) = line.find("/*") {
            match line[start..].find("*/") {
                Some(end) => line.replace_range(start..start + end + 2, ""),
                None => {
                    line.truncate(start);
                    in_block = true;
                }
            }
        }
        if let Some(start) = line.find("//") {
            line.truncate(start);
        }
        let line = line.trim_end();
        if !line.is_empty() {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

#[test]
fn the_current_abi_version_has_its_header_frozen() {
    let header = std::fs::read_to_string(current_header()).unwrap();
    let abi = cogvideo::ffi::COGVIDEO_ABI_VERSION;
    let version = format!("{}.{}", abi >> 16, abi & 0xffff);
    assert_eq!(
        RELEASED.last(),
        Some(&version.as_str()),
        "COGVIDEO_ABI_VERSION is {version}: add it to RELEASED"
    );
    let frozen_path = abi_dir().join(format!("cogvideo-{version}.h"));
    let frozen = std::fs::read_to_string(&frozen_path).unwrap_or_default();
    assert!(
        declarations(&frozen) == declarations(&header),
        "include/cogvideo.h declares something {} does not: a changed struct or function needs a new \
         COGVIDEO_ABI_VERSION, its header frozen as tests/abi/cogvideo-<version>.h, and the \
         version added to RELEASED (comments may change freely)",
        frozen_path.display()
    );
}
