//! T5 tokenizer parity with transformers 5.23 `T5Tokenizer` on the tiny
//! trained SentencePiece model (tests/data/golden/tokenizer.json: exact ids
//! for every prompt, from both tokenizer layouts), and its error reporting.

mod common;

use std::path::Path;

use cogvideo::Error;
use cogvideo::text_encoder::tokenizer::MAX_ENCODE_LEN;
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
    // The file that declares the id, not spiece.model; no `Some(512)`.
    let msg = err.to_string();
    assert!(
        msg.contains("tokenizer_config.json: added_tokens_decoder: `<extra_id_99>`"),
        "{msg}"
    );
    assert!(
        msg.contains("declared as id 513 but the vocabulary gives it id 512"),
        "{msg}"
    );
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

// ---------------------------------------------------------------------------
// Hostile tokenizer files (issue 8): every one is refused at load with a
// bad-checkpoint error naming the file and the field, never an abort, a
// hang, a stack overflow or a panic later.

fn bad_checkpoint(err: &Error, file: &str, field: &str) {
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains(file), "`{file}` not in: {msg}");
    assert!(msg.contains(field), "`{field}` not in: {msg}");
    assert!(!msg.contains("Some(") && !msg.contains('\n'), "{msg}");
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

#[test]
fn extra_ids_out_of_range_is_refused() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-extra-ids");
    let dir = ckpt.root.join("tokenizer");
    let cfg = dir.join("tokenizer_config.json");
    // transformers' default and a generous bound load.
    for n in [0, 100, 1000] {
        edit_json(&cfg, |v| {
            v.as_object_mut().unwrap().remove("added_tokens_decoder");
            v.as_object_mut()
                .unwrap()
                .remove("additional_special_tokens");
            v["extra_ids"] = n.into();
        });
        std::fs::remove_file(dir.join("added_tokens.json")).ok();
        std::fs::remove_file(dir.join("special_tokens_map.json")).ok();
        let tok = T5Tokenizer::from_dir(&dir).unwrap();
        assert_eq!(tok.vocab_size(), 512 + n as usize);
    }
    // 1e9 once reserved a billion vocabulary entries and aborted.
    for bad in [
        serde_json::json!(1_000_000_000u64),
        serde_json::json!(1001),
        serde_json::json!(-1),
        serde_json::json!(2.5),
        serde_json::json!("100"),
    ] {
        edit_json(&cfg, |v| v["extra_ids"] = bad.clone());
        let err = T5Tokenizer::from_dir(&dir).unwrap_err();
        bad_checkpoint(&err, "tokenizer_config.json", &format!("extra_ids = {bad}"));
        assert!(err.to_string().contains("0 to 1000"), "{err}");
    }
}

/// Offset and length of the precompiled charsmap in the tiny spiece.model:
/// NormalizerSpec starts with its name (field 1, "nmt_nfkc") followed by
/// the charsmap (field 2, length-delimited).
fn charsmap_span(bytes: &[u8]) -> (usize, usize) {
    let name = b"\x0a\x08nmt_nfkc\x12";
    let at = bytes
        .windows(name.len())
        .position(|w| w == name)
        .expect("nmt_nfkc normalizer spec")
        + name.len();
    let (mut len, mut shift, mut i) = (0usize, 0, at);
    loop {
        let b = bytes[i];
        len |= usize::from(b & 0x7f) << shift;
        shift += 7;
        i += 1;
        if b & 0x80 == 0 {
            return (i, len);
        }
    }
}

#[test]
fn corrupt_precompiled_charsmap_is_refused_at_load() {
    let original = std::fs::read(tiny("cogvideox-5b").join("tokenizer/spiece.model")).unwrap();
    let (at, len) = charsmap_span(&original);
    let trie = u32::from_le_bytes(original[at..at + 4].try_into().unwrap()) as usize;
    assert!(trie > 0 && trie + 4 < len);
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-charsmap");
    let dir = ckpt.root.join("tokenizer");
    type Corrupt = Box<dyn Fn(&mut [u8])>;
    let cases: Vec<(&str, Corrupt)> = vec![
        // The length field that reserved 8 GiB.
        ("trie size 4294967295", Box::new(|b| b[..4].fill(0xff))),
        ("trie size 0", Box::new(|b| b[..4].fill(0))),
        (
            "trie size",
            Box::new(move |b| b[..4].copy_from_slice(&(trie as u32 + 2).to_le_bytes())),
        ),
        // A root unit pointing outside the trie: loads before, then every
        // prompt panicked on an out-of-bounds index.
        ("outside its", Box::new(|b| b[4..8].fill(0xff))),
        // Every unit a leaf pointing past the replacement strings.
        (
            "replacement offset",
            Box::new(move |b| {
                for unit in b[4..4 + trie].chunks_exact_mut(4) {
                    let u = u32::from_le_bytes(unit.try_into().unwrap());
                    // Value units carry bit 31.
                    let v = if u >> 31 == 0 { u } else { u | 0x7fff_ffff };
                    unit.copy_from_slice(&v.to_le_bytes());
                }
            }),
        ),
        ("not UTF-8", Box::new(move |b| b[4 + trie] = 0xff)),
    ];
    for (what, corrupt) in cases {
        let mut bytes = original.clone();
        corrupt(&mut bytes[at..at + len]);
        std::fs::write(dir.join("spiece.model"), &bytes).unwrap();
        let err = T5Tokenizer::from_dir(&dir).unwrap_err();
        bad_checkpoint(&err, "spiece.model", "precompiled_charsmap");
        assert!(err.to_string().contains(what), "{what}: {err}");
        println!("{err}");
    }

    // The same map inside a tokenizer.json.
    let scratch = ScratchCheckpoint::copy_of("tokenizer-json", "tok-json-charsmap");
    let path = scratch.root.join("tokenizer.json");
    edit_json(&path, |v| {
        let b64 = v["normalizer"]["precompiled_charsmap"].as_str().unwrap();
        // Six base64 digits hold the 4-byte trie size (0x2bc00) and 4 bits
        // of the first unit: make the size 0xffffffff.
        assert!(b64.starts_with("ALwCAA"), "{b64:.8}");
        let patched = format!("//////{}", &b64[6..]);
        v["normalizer"]["precompiled_charsmap"] = patched.into();
    });
    let err = T5Tokenizer::from_dir(&scratch.root).unwrap_err();
    bad_checkpoint(&err, "tokenizer.json", "precompiled_charsmap");
    assert!(err.to_string().contains("trie size"), "{err}");
}

/// A minimal unigram spiece.model (no normalization rules) holding
/// `<pad>`, `</s>`, `<unk>` and then `pieces`.
fn spiece_model(pieces: &[&str]) -> Vec<u8> {
    fn varint(mut v: u64, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes_field(num: u64, data: &[u8], out: &mut Vec<u8>) {
        varint(num << 3 | 2, out);
        varint(data.len() as u64, out);
        out.extend_from_slice(data);
    }
    let mut m = Vec::new();
    let specials = [("<pad>", 3), ("</s>", 3), ("<unk>", 2)];
    let normal = pieces.iter().map(|p| (*p, 1));
    for (i, (text, kind)) in specials.into_iter().chain(normal).enumerate() {
        let mut p = Vec::new();
        bytes_field(1, text.as_bytes(), &mut p);
        varint(2 << 3 | 5, &mut p);
        p.extend_from_slice(&(-(i as f32)).to_le_bytes());
        varint(3 << 3, &mut p);
        varint(kind, &mut p);
        bytes_field(1, &p, &mut m);
    }
    m
}

fn scratch_dir(tag: &str) -> ScratchCheckpoint {
    let root = std::env::temp_dir().join(format!("cogvideo-test-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    ScratchCheckpoint { root }
}

#[test]
fn overlong_pieces_are_refused_before_the_trie_is_built() {
    // tokenizers' unigram trie has a node per byte and frees them
    // recursively: a 32,000-byte piece loaded, then overflowed the stack
    // when the tokenizer was dropped (aborting this test process).
    let dir = scratch_dir("tok-long-piece");
    let long = "▁".to_string() + &"a".repeat(32_000);
    std::fs::write(
        dir.root.join("spiece.model"),
        spiece_model(&["▁a", "a", long.as_str()]),
    )
    .unwrap();
    let err = T5Tokenizer::from_dir(&dir.root).unwrap_err();
    bad_checkpoint(&err, "spiece.model", "pieces[5]");
    assert!(err.to_string().contains("32003 bytes"), "{err}");
    assert!(err.to_string().contains("at most 256"), "{err}");

    let scratch = ScratchCheckpoint::copy_of("tokenizer-json", "tok-json-long-piece");
    let path = scratch.root.join("tokenizer.json");
    edit_json(&path, |v| {
        v["model"]["vocab"][7][0] = "x".repeat(200_000).into()
    });
    let err = T5Tokenizer::from_dir(&scratch.root).unwrap_err();
    bad_checkpoint(&err, "tokenizer.json", "model.vocab[7]");
}

#[test]
fn pieces_at_the_length_bound_load_and_free_on_a_small_stack() {
    // 256 bytes: four times the longest piece SentencePiece trains by
    // default (16 characters). Loading, tokenizing and dropping it must fit
    // in a thread stack far smaller than the usual 2 MiB.
    let dir = scratch_dir("tok-bound-piece");
    let longest = "▁".to_string() + &"b".repeat(253);
    assert_eq!(longest.len(), 256);
    std::fs::write(
        dir.root.join("spiece.model"),
        spiece_model(&["▁a", "a", "b", longest.as_str()]),
    )
    .unwrap();
    let path = dir.root.clone();
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(move || {
            let tok = T5Tokenizer::from_dir(&path).unwrap();
            let ids = tok.encode(&"b".repeat(253), 4).unwrap();
            assert_eq!(ids, [6, 1, 0, 0]);
            drop(tok);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn messages_name_the_declaring_file_without_debug_formatting() {
    // A conflicting id in added_tokens.json is that file's fault, not
    // spiece.model's.
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-msg-legacy");
    let dir = ckpt.root.join("tokenizer");
    edit_json(&dir.join("tokenizer_config.json"), |v| {
        v.as_object_mut().unwrap().remove("added_tokens_decoder");
    });
    edit_json(&dir.join("added_tokens.json"), |v| {
        v["<extra_id_99>"] = 600.into();
    });
    let err = T5Tokenizer::from_dir(&dir).unwrap_err();
    bad_checkpoint(
        &err,
        "added_tokens.json",
        "`<extra_id_99>` is declared as id 600",
    );
    assert!(err.to_string().contains("gives it id 512"), "{err}");

    let scratch = ScratchCheckpoint::copy_of("tokenizer-json", "tok-msg-json");
    let path = scratch.root.join("tokenizer.json");
    edit_json(&path, |v| v["model"]["type"] = "WordPiece".into());
    let err = T5Tokenizer::from_dir(&scratch.root).unwrap_err();
    bad_checkpoint(&err, "tokenizer.json", "model.type is \"WordPiece\"");
}

fn mkfifo(path: &Path) {
    std::fs::remove_file(path).ok();
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn fifos_devices_and_oversized_files_are_refused() {
    // Each file in turn: a FIFO used to block the load forever (or was
    // silently skipped), `/dev/zero` was read until memory ran out.
    let files = [
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "spiece.model",
        "tokenizer.json",
    ];
    for (i, file) in files.into_iter().enumerate() {
        let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", &format!("tok-fifo-{i}"));
        let dir = ckpt.root.join("tokenizer");
        if file != "tokenizer_config.json" {
            // The side files are read only without `added_tokens_decoder`.
            edit_json(&dir.join("tokenizer_config.json"), |v| {
                v.as_object_mut().unwrap().remove("added_tokens_decoder");
            });
        }
        let path = dir.join(file);
        mkfifo(&path);
        let err = T5Tokenizer::from_dir(&dir).unwrap_err();
        bad_checkpoint(&err, file, "not a regular file");

        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &path).unwrap();
        let err = T5Tokenizer::from_dir(&dir).unwrap_err();
        bad_checkpoint(&err, file, "not a regular file");

        // A sparse file larger than any real one.
        std::fs::remove_file(&path).unwrap();
        std::fs::File::create(&path)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let err = T5Tokenizer::from_dir(&dir).unwrap_err();
        bad_checkpoint(&err, file, "accepted");

        // A dangling link is a missing file, not an absent optional one.
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.join("nowhere"), &path).unwrap();
        let err = T5Tokenizer::from_dir(&dir).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(names(&err, file), "{err}");
    }
}

// ---------------------------------------------------------------------------
// Bounded encoding: `encode` tokenizes a few KiB at a time and stops once
// it has the pieces it keeps; its ids must equal those of the whole prompt
// tokenized at once, then cut.

/// xorshift64*: deterministic prompts without a dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) as usize % n
    }
}

/// Words, every kind of whitespace, characters the nmt_nfkc charsmap
/// rewrites (full-width, ligatures, NBSP, U+3000, U+FDFA which expands to
/// four words) or drops (zero-width), combining marks that join a
/// preceding space, a Prepend character, emoji sequences, literal `▁` and
/// the special tokens, whole and broken.
const FRAGMENTS: &[&str] = &[
    "a",
    "cat",
    "dog",
    "the",
    "sun",
    "x",
    "xyz",
    "2024",
    ".",
    ",",
    "!",
    "'s",
    "(",
    " ",
    " ",
    " ",
    "  ",
    "   ",
    "\t",
    "\n",
    "\r\n",
    "\u{b}",
    "\u{3000}",
    "\u{a0}",
    "\u{2028}",
    "\u{85}",
    "\u{200b}",
    "\u{feff}",
    "\u{ad}",
    "\0",
    "\u{1}",
    "▁",
    "▁▁",
    "Ａ",
    "ｂ",
    "ﬁ",
    "①",
    "½",
    "é",
    "e\u{301}",
    "\u{301}",
    "\u{300}\u{301}",
    "\u{200d}",
    "\u{600}",
    "日本",
    "猫",
    "한국어",
    "ｶﾞ",
    "\u{3099}",
    "🏳️‍🌈",
    "👍🏽",
    "🇫🇷🇩🇪",
    "\u{1f1eb}",
    "</s>",
    "<pad>",
    "<unk>",
    "<extra_id_3>",
    "<extra_id_",
    "ﷺ",
    "™",
    "…",
];

fn whole_then_cut(tok: &T5Tokenizer, prompt: &str, max_len: usize) -> Vec<u32> {
    let mut ids = tok.piece_ids(prompt).unwrap();
    ids.truncate(max_len - 1);
    ids.push(tok.eos_id());
    ids.resize(max_len, tok.pad_id());
    ids
}

fn check_same(tok: &T5Tokenizer, prompt: &str, max_len: usize) {
    let got = tok.encode(prompt, max_len).unwrap();
    let want = whole_then_cut(tok, prompt, max_len);
    if got != want {
        let at = got.iter().zip(&want).position(|(a, b)| a != b).unwrap();
        panic!(
            "max_len {max_len}, prompt of {} bytes: id {at} differs ({} vs {}); prompt {:?}",
            prompt.len(),
            got[at],
            want[at],
            prompt
        );
    }
}

fn random_prompt(rng: &mut Rng, fragments: &[&str], bytes: usize) -> String {
    let mut p = String::new();
    while p.len() < bytes {
        p.push_str(fragments[rng.below(fragments.len())]);
    }
    p
}

#[test]
fn bounded_encoding_equals_whole_prompt_encoding() {
    let tok = T5Tokenizer::from_dir(tiny("cogvideox-5b").join("tokenizer")).unwrap();
    let mut rng = Rng(0x5eed_cafe_f00d_1234);
    let no_space: Vec<&str> = FRAGMENTS
        .iter()
        .copied()
        .filter(|f| !f.contains(char::is_whitespace))
        .collect();
    let sparse: Vec<&str> = FRAGMENTS
        .iter()
        .copied()
        .filter(|f| f.chars().all(|c| c.is_whitespace() || c == '\u{200b}'))
        .chain(["cat"])
        .collect();
    for case in 0..60 {
        let max_len = [226, 226, 1000, 5000, 30_000][rng.below(5)];
        let bytes = 1 + rng.below(20_000);
        let prompt = match case % 3 {
            0 => random_prompt(&mut rng, FRAGMENTS, bytes),
            1 => random_prompt(&mut rng, &no_space, bytes),
            // Mostly whitespace: many chunks before 225 pieces.
            _ => random_prompt(&mut rng, &sparse, bytes),
        };
        check_same(&tok, &prompt, max_len);
    }
    // Fragment pairs around the space that ends the first 4 KiB chunk
    // (bytes 4095..4096), where a cut is tried first.
    for (i, a) in FRAGMENTS.iter().enumerate() {
        for b in FRAGMENTS.iter().skip(i % 5).step_by(5) {
            let mut prompt = "x ".repeat(2000);
            prompt.push_str(&"y".repeat(95 - a.len()));
            prompt.push_str(a);
            assert_eq!(prompt.len(), 4095);
            prompt.push(' ');
            prompt.push_str(b);
            prompt.push_str(" z");
            check_same(&tok, &prompt, 5000);
        }
    }
}

#[test]
fn a_token_containing_a_space_disables_cutting_at_spaces() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "tok-spaced-token");
    let dir = ckpt.root.join("tokenizer");
    edit_json(&dir.join("tokenizer_config.json"), |v| {
        v["added_tokens_decoder"]["612"] = serde_json::json!({
            "content": "big cat", "special": false, "normalized": false,
        });
    });
    let tok = T5Tokenizer::from_dir(&dir).unwrap();
    // "big cat" straddles the first 4 KiB chunk boundary.
    let prompt = "y".repeat(4092) + "big cat and more";
    let ids = tok.encode(&prompt, 20_000).unwrap();
    assert!(ids.contains(&612));
    check_same(&tok, &prompt, 20_000);
}

#[test]
fn long_prompts_cost_only_what_is_used() {
    // A 16 MB prompt was tokenized whole (2.7 GB, 7.7 s) for 225 pieces.
    let tok = T5Tokenizer::from_dir(tiny("cogvideox-5b").join("tokenizer")).unwrap();
    let mb16 = 16 << 20;
    let spaced = "A panda, dressed in a small red jacket, plays a guitar. ".repeat(mb16 / 56);
    let prompts = [
        spaced.clone(),
        // No space at all: read up to 256 bytes per id, never the whole.
        "x".repeat(mb16),
        "猫".repeat(mb16 / 3),
        random_prompt(&mut Rng(7), &["a", "bc", "ﬁ", "Ａ", "\u{200b}"], mb16),
        // Only whitespace: read up to 256 bytes per id.
        " \n".repeat(mb16 / 2),
    ];
    for prompt in &prompts {
        let t = std::time::Instant::now();
        let ids = tok.encode(prompt, MAX_SEQUENCE_LENGTH).unwrap();
        let took = t.elapsed();
        let start: String = prompt.chars().take(12).collect();
        println!("{start:?}...: {took:?}");
        assert_eq!(ids.len(), MAX_SEQUENCE_LENGTH);
        assert!(took.as_secs_f64() < 2.0, "{took:?} for {start:?}...");
    }
    assert_eq!(
        tok.encode(&spaced, MAX_SEQUENCE_LENGTH).unwrap(),
        whole_then_cut(&tok, &spaced[..8192], MAX_SEQUENCE_LENGTH)
    );
    // The documented bound: what lies beyond 256 bytes per id is not read.
    let far = " ".repeat(256 * MAX_SEQUENCE_LENGTH) + "cat";
    let ids = tok.encode(&far, MAX_SEQUENCE_LENGTH).unwrap();
    assert_eq!(ids[..2], [1, 0]);
    let near = " ".repeat(256 * MAX_SEQUENCE_LENGTH - 4) + "cat";
    check_same(&tok, &near, MAX_SEQUENCE_LENGTH);
    assert_ne!(tok.encode(&near, MAX_SEQUENCE_LENGTH).unwrap()[0], 1);
}

#[test]
fn max_len_is_bounded_before_allocating() {
    let tok = T5Tokenizer::from_dir(tiny("cogvideox-5b").join("tokenizer")).unwrap();
    assert_eq!(
        tok.encode("a cat", MAX_ENCODE_LEN).unwrap().len(),
        MAX_ENCODE_LEN
    );
    for n in [0, MAX_ENCODE_LEN + 1, usize::MAX] {
        let err = tok.encode("a cat", n).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains(&format!("max_len = {n}")), "{err}");
    }
}
