//! T5 tokenizer parity with transformers 5.23 `T5Tokenizer` on the tiny
//! trained SentencePiece model (tests/data/golden/tokenizer.json: exact ids
//! for every prompt, from both tokenizer layouts), and its error reporting.

mod common;

use std::path::Path;

use cogvideo::Error;
use cogvideo::text_encoder::{MAX_SEQUENCE_LENGTH, T5Tokenizer};
use common::{ScratchCheckpoint, data_dir, load_json, tiny};

fn golden_cases() -> Vec<(String, Vec<u32>)> {
    let golden = load_json("tokenizer.json");
    assert_eq!(golden["max_length"], MAX_SEQUENCE_LENGTH);
    golden["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let ids = c["ids"].as_array().unwrap();
            let ids = ids.iter().map(|v| v.as_u64().unwrap() as u32).collect();
            (c["prompt"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

fn check_all_cases(tok: &T5Tokenizer, layout: &str) {
    let cases = golden_cases();
    assert!(cases.len() >= 220, "only {} golden prompts", cases.len());
    let mut failures = Vec::new();
    for (prompt, want) in &cases {
        let got = tok.encode(prompt, MAX_SEQUENCE_LENGTH).unwrap();
        if &got != want {
            failures.push(format!("{prompt:?}\n  got  {got:?}\n  want {want:?}"));
        }
    }
    println!(
        "{layout}: {} of {} prompts match exactly",
        cases.len() - failures.len(),
        cases.len()
    );
    assert!(
        failures.is_empty(),
        "{layout}: {} prompts differ, first: {}",
        failures.len(),
        failures[0]
    );
}

#[test]
fn spiece_model_layout_matches_transformers() {
    let tok = T5Tokenizer::from_dir(tiny("cogvideox-5b").join("tokenizer")).unwrap();
    assert_eq!(tok.vocab_size(), 612);
    assert_eq!((tok.eos_id(), tok.pad_id()), (1, 0));
    assert_eq!(tok.model_max_length(), Some(226));
    check_all_cases(&tok, "spiece.model");
}

#[test]
fn tokenizer_json_layout_matches_transformers() {
    let tok = T5Tokenizer::from_dir(data_dir().join("tiny/tokenizer-json")).unwrap();
    assert_eq!(tok.vocab_size(), 612);
    check_all_cases(&tok, "tokenizer.json");
}

#[test]
fn spiece_model_alone_uses_t5_defaults() {
    // Without the json side files: `<pad>`/`</s>`/`<unk>`, 100 extra ids.
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-bare");
    let dir = ckpt.root.join("tokenizer");
    for f in [
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
    ] {
        std::fs::remove_file(dir.join(f)).unwrap();
    }
    let tok = T5Tokenizer::from_dir(&dir).unwrap();
    assert_eq!(tok.model_max_length(), None);
    check_all_cases(&tok, "spiece.model without config");
}

#[test]
fn legacy_side_files_without_added_tokens_decoder() {
    // Older configs have no `added_tokens_decoder`; transformers then reads
    // special_tokens_map.json and added_tokens.json.
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-legacy");
    let path = ckpt.root.join("tokenizer/tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("added_tokens_decoder");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let tok = T5Tokenizer::from_dir(ckpt.root.join("tokenizer")).unwrap();
    check_all_cases(&tok, "spiece.model with legacy side files");
}

#[test]
fn truncation_and_padding_follow_max_len() {
    let tok = T5Tokenizer::from_dir(tiny("cogvideox-5b").join("tokenizer")).unwrap();
    let cases = golden_cases();
    let (prompt, full) = cases
        .iter()
        .find(|(_, ids)| !ids.contains(&0))
        .expect("a golden prompt that fills all 226 ids");
    for n in [1, 2, 10, 225, 226] {
        let ids = tok.encode(prompt, n).unwrap();
        assert_eq!(ids.len(), n);
        assert_eq!(ids[..n - 1], full[..n - 1]);
        assert_eq!(ids[n - 1], 1, "</s> last");
    }
    let ids = tok.encode("a cat", 300).unwrap();
    assert_eq!(ids.len(), 300);
    assert_eq!(ids[2..], [vec![1], vec![0; 297]].concat()[..]);
    assert!(matches!(
        tok.encode("a cat", 0),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn odd_text_does_not_fail() {
    let tok = T5Tokenizer::from_dir(tiny("cogvideox-5b").join("tokenizer")).unwrap();
    let long = "x\u{0}y ".repeat(50_000);
    for p in [
        "\0",
        "a\0b\0\0c",
        "\u{1}\u{7f}\u{9f}",
        "\u{301}\u{301}",
        "\u{feff}\u{200b}\u{ffff}\u{10ffff}",
        "\r\n\t\u{b}\u{c}\u{85}\u{2028}",
        "<extra_id_",
        "<extra_id_100>",
        "🏳️‍🌈👩‍👩‍👧‍👦",
        long.as_str(),
    ] {
        let ids = tok.encode(p, MAX_SEQUENCE_LENGTH).unwrap();
        assert_eq!(ids.len(), MAX_SEQUENCE_LENGTH, "{p:?}");
        assert!(ids.contains(&1), "{p:?}");
    }
}

fn names(err: &Error, file: &str) -> bool {
    err.to_string().contains(file)
}

#[test]
fn missing_folder_is_an_io_error() {
    let dir = std::env::temp_dir().join(format!("cogvideo-no-such-{}", std::process::id()));
    let err = T5Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(names(&err, &dir.display().to_string()), "{err}");
}

#[test]
fn folder_without_tokenizer_file_names_spiece_model() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-none");
    let dir = ckpt.root.join("tokenizer");
    std::fs::remove_file(dir.join("spiece.model")).unwrap();
    let err = T5Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(names(&err, "spiece.model"), "{err}");
    assert!(names(&err, "tokenizer.json"), "{err}");
}

fn truncate(path: &Path, keep: usize) {
    let bytes = std::fs::read(path).unwrap();
    assert!(keep < bytes.len());
    std::fs::write(path, &bytes[..keep]).unwrap();
}

#[test]
fn truncated_spiece_model_is_a_bad_checkpoint() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-trunc");
    let dir = ckpt.root.join("tokenizer");
    let len = std::fs::metadata(dir.join("spiece.model")).unwrap().len() as usize;
    for keep in [len - 1, len / 2, 7] {
        std::fs::copy(
            tiny("cogvideox-5b").join("tokenizer/spiece.model"),
            dir.join("spiece.model"),
        )
        .unwrap();
        truncate(&dir.join("spiece.model"), keep);
        let err = T5Tokenizer::from_dir(&dir).unwrap_err();
        assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
        assert!(names(&err, "spiece.model"), "{err}");
        println!("cut to {keep} bytes: {err}");
    }
    std::fs::write(dir.join("spiece.model"), b"not a model").unwrap();
    let err = T5Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
}

#[test]
fn bad_json_is_a_bad_checkpoint_naming_the_file() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-json");
    let dir = ckpt.root.join("tokenizer");
    std::fs::write(dir.join("tokenizer_config.json"), "{\"eos_token\": ").unwrap();
    let err = T5Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert!(names(&err, "tokenizer_config.json"), "{err}");

    std::fs::copy(
        tiny("cogvideox-5b").join("tokenizer/tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .unwrap();
    let json = data_dir().join("tiny/tokenizer-json/tokenizer.json");
    std::fs::copy(&json, dir.join("tokenizer.json")).unwrap();
    truncate(&dir.join("tokenizer.json"), 5000);
    let err = T5Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert!(names(&err, "tokenizer.json"), "{err}");

    // Valid JSON, but not a unigram tokenizer.
    std::fs::write(
        dir.join("tokenizer.json"),
        r#"{"model": {"type": "BPE", "vocab": {}, "merges": []}}"#,
    )
    .unwrap();
    let err = T5Tokenizer::from_dir(&dir).unwrap_err();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert!(names(&err, "tokenizer.json"), "{err}");
}

#[test]
fn added_token_with_a_conflicting_id_is_rejected() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-conflict");
    let path = ckpt.root.join("tokenizer/tokenizer_config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // Declares <extra_id_99> at 513 while the vocabulary puts it at 512.
    let text = text.replacen("\"512\": {", "\"9999\": {", 1).replacen(
        "\"513\": {\n      \"content\": \"<extra_id_98>\"",
        "\"513\": {\n      \"content\": \"<extra_id_99>\"",
        1,
    );
    std::fs::write(&path, text).unwrap();
    let err = T5Tokenizer::from_dir(ckpt.root.join("tokenizer")).unwrap_err();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert!(names(&err, "<extra_id_99>"), "{err}");
}

#[test]
fn tokenizer_json_pipeline_is_rebuilt_as_transformers_does() {
    // transformers 5.x keeps only the vocabulary and the charsmap of a
    // tokenizer.json and rebuilds the rest, so an older file's
    // Strip/Replace normalizers and first-only Metaspace change nothing.
    let scratch = ScratchCheckpoint::copy_of("tokenizer-json", "tok-old-json");
    let path = scratch.root.join("tokenizer.json");
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let precompiled = json["normalizer"].take();
    json["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": [
        precompiled,
        {"type": "Strip", "strip_left": false, "strip_right": true},
        {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "▁"},
    ]});
    json["pre_tokenizer"] = serde_json::json!(
        {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": true}
    );
    std::fs::write(&path, json.to_string()).unwrap();
    let tok = T5Tokenizer::from_dir(&scratch.root).unwrap();
    check_all_cases(&tok, "tokenizer.json with a transformers 4.x pipeline");
}

#[test]
fn legacy_and_add_prefix_space_flags_change_nothing() {
    // transformers 5.x T5Tokenizer always prepends `▁` to every word.
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-nonlegacy");
    let path = ckpt.root.join("tokenizer/tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["legacy"] = false.into();
    cfg["add_prefix_space"] = false.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let tok = T5Tokenizer::from_dir(ckpt.root.join("tokenizer")).unwrap();
    check_all_cases(&tok, "legacy=false, add_prefix_space=false");
}
