//! The library's layers (docs/architecture.md) import only downward: no
//! module names a module of its own layer or of a layer above it through a
//! `crate::` path. Read from the sources, so a new upward import fails here
//! rather than in review.

use std::path::{Path, PathBuf};

/// Top-level modules of `src/` by layer; a module may use only lower ones.
const LAYERS: &[(&str, u8)] = &[
    ("ffi", 7),
    ("pipelines", 6),
    ("text_encoder", 5),
    ("loaders", 5),
    ("variant", 5),
    ("models", 4),
    ("schedulers", 4),
    ("frames", 4),
    ("hooks", 3),
    ("checkpoint", 2),
    ("memory", 2),
    ("noise", 2),
    ("device", 2),
    ("numerics", 1),
    ("error", 1),
    ("test_util", 1),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|&(_, l)| l)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The modules a source names as `crate::name`, comments left out.
fn crate_paths(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    code.match_indices("crate::")
        .map(|(i, m)| {
            code[i + m.len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn imports_point_down_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let top = top.trim_end_matches(".rs");
        let Some(own) = layer(top) else {
            assert_eq!(top, "lib", "{} is in no layer of this test", rel.display());
            continue;
        };
        for dep in crate_paths(&std::fs::read_to_string(file).unwrap()) {
            if let Some(l) = layer(&dep)
                && dep != top
                && l >= own
            {
                upward.push(format!("{}: {top} uses {dep}", rel.display()));
            }
        }
    }
    upward.sort();
    upward.dedup();
    assert!(
        upward.is_empty(),
        "imports that do not point down:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    assert_eq!(
        crate_paths(
            "use crate::variant::Variant; // crate::ffi\nlet x = crate::text_encoder::MAX;"
        ),
        ["variant", "text_encoder"]
    );
}
