//! The committed C header must be the one cbindgen generates from src/ffi.

#[test]
fn committed_header_is_up_to_date() {
    let generated = std::fs::read_to_string(concat!(env!("OUT_DIR"), "/cogvideo.h")).unwrap();
    let committed_path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/cogvideo.h");
    let committed = std::fs::read_to_string(committed_path).unwrap_or_default();
    assert!(
        generated == committed,
        "include/cogvideo.h is stale: regenerate it with `COGVIDEO_UPDATE_HEADER=1 cargo build` and commit it"
    );
}

#[test]
fn header_exports_only_prefixed_names() {
    let header = include_str!("../include/cogvideo.h");
    for line in header.lines() {
        let name = if let Some(rest) = line.strip_prefix("#define ") {
            rest.split_whitespace().next()
        } else if line.starts_with("typedef")
            || line.contains('(') && !line.starts_with(' ') && !line.starts_with("//")
        {
            line.split(|c: char| !c.is_alphanumeric() && c != '_')
                .find(|w| w.starts_with("cogvideo_") || w.starts_with("COGVIDEO_"))
                .or(Some(line))
        } else {
            None
        };
        if let Some(name) = name {
            assert!(
                name.starts_with("cogvideo_") || name.starts_with("COGVIDEO_"),
                "unprefixed name in the C header: {line}"
            );
        }
    }
}

/// Every call that returns a status says which, in its comment: the
/// header is the C programmer's reference.
#[test]
fn every_call_lists_its_statuses() {
    let header = include_str!("../include/cogvideo.h");
    let mut comment = String::new();
    let mut missing = Vec::new();
    for line in header.lines() {
        if let Some(text) = line.strip_prefix("//") {
            comment.push_str(text);
            comment.push(' ');
        } else if let Some(rest) = line.strip_prefix("enum cogvideo_status ") {
            let name = rest.split('(').next().unwrap_or(rest);
            if !comment.contains("Returns COGVIDEO_OK;") {
                missing.push(name.to_string());
            }
            comment.clear();
        } else if !line.starts_with(' ') {
            comment.clear();
        }
    }
    assert!(
        missing.is_empty(),
        "no \"Returns COGVIDEO_OK; ...\" in the comment of {missing:?}"
    );
}
