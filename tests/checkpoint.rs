//! Bad checkpoints give clear errors naming the file at fault.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use candle_core::{DType, Device, Tensor};
use cogvideo::Error;
use cogvideo::checkpoint::Checkpoint;
use cogvideo::models::autoencoders::{AutoencoderKLCogVideoX, VaeConfig};
use cogvideo::models::transformers::{CogVideoXTransformer3DModel, TransformerConfig};
use cogvideo::pipelines::{LoadOptions, Pipeline};
use cogvideo::schedulers::SchedulerConfig;
use cogvideo::text_encoder::T5Encoder;
use common::ScratchCheckpoint;
use serde_json::{Value, json};

fn load_transformer(root: &Path) -> Result<CogVideoXTransformer3DModel, Error> {
    let ckpt = Checkpoint::open(root)?;
    CogVideoXTransformer3DModel::from_checkpoint(&ckpt, DType::F32, &Device::Cpu)
}

/// A whole pipeline: the checks that join components (the pipeline class
/// and the text length against the transformer) are made in its loading.
fn load_pipeline(root: &Path) -> Result<Pipeline, Error> {
    Pipeline::load(root, &LoadOptions::default())
}

fn transformer_weights(root: &Path) -> PathBuf {
    root.join("transformer/diffusion_pytorch_model.safetensors")
}

#[test]
fn missing_folder() {
    let err = Checkpoint::open("/nonexistent/cogvideox").unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("/nonexistent/cogvideox"), "{err}");
}

#[test]
fn missing_model_index() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "no-index");
    std::fs::remove_file(s.root.join("model_index.json")).unwrap();
    let err = Checkpoint::open(&s.root).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("model_index.json"), "{err}");
}

#[test]
fn missing_component_folder() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "no-transformer");
    std::fs::remove_dir_all(s.root.join("transformer")).unwrap();
    let err = load_transformer(&s.root).unwrap_err();
    assert!(
        err.to_string()
            .contains("component folder `transformer` is missing"),
        "{err}"
    );
}

#[test]
fn missing_weights_file() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "no-weights");
    std::fs::remove_file(transformer_weights(&s.root)).unwrap();
    let err = load_transformer(&s.root).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("diffusion_pytorch_model.safetensors"),
        "{err}"
    );
}

#[test]
fn missing_shard() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "no-shard");
    let dir = s.root.join("transformer");
    let shard = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("-of-"))
        .expect("the 5b tiny transformer is sharded");
    std::fs::remove_file(&shard).unwrap();
    let err = load_transformer(&s.root).unwrap_err();
    let name = shard.file_name().unwrap().to_string_lossy().to_string();
    assert!(err.to_string().contains(&name), "{err}");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn truncated_safetensors() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "truncated");
    let path = transformer_weights(&s.root);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 100]).unwrap();
    let err = load_transformer(&s.root).unwrap_err();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert!(err.to_string().contains("truncated"), "{err}");
    std::fs::write(&path, &bytes[..4]).unwrap();
    let err = load_transformer(&s.root).unwrap_err();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
}

#[test]
fn wrong_tensor_shape() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "bad-shape");
    let path = transformer_weights(&s.root);
    let mut tensors: HashMap<String, Tensor> =
        candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let name = "transformer_blocks.0.attn1.to_q.weight";
    let w = &tensors[name];
    let (o, i) = w.dims2().unwrap();
    let bad = Tensor::zeros((o, i + 1), w.dtype(), &Device::Cpu).unwrap();
    tensors.insert(name.to_string(), bad);
    candle_core::safetensors::save(&tensors, &path).unwrap();
    let err = load_transformer(&s.root).unwrap_err();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert!(err.to_string().contains("to_q"), "{err}");
}

#[test]
fn missing_required_config_field() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "bad-config");
    let path = s.root.join("transformer/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("num_layers");
    cfg.as_object_mut()
        .unwrap()
        .insert("some_future_field".into(), 1.into());
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = load_transformer(&s.root).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{msg}");
    assert!(
        msg.contains("transformer/config.json") && msg.contains("num_layers"),
        "{msg}"
    );
}

#[test]
fn pipeline_class_must_match_transformer() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "wrong-class");
    let path = s.root.join("model_index.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"CogVideoXPipeline\"", "\"CogVideoXImageToVideoPipeline\""),
    )
    .unwrap();
    let err = load_pipeline(&s.root).err().unwrap();
    assert!(
        err.to_string().contains("does not match the transformer"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------
// Hostile copies of the tiny checkpoints (issue 8).

/// Runs `f` on its own thread and fails the test if it has not returned
/// within 20 s, so a load that blocks on a FIFO fails instead of hanging.
fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("{what} hung"))
}

fn load_vae(dir: &Path) -> Result<(), Error> {
    AutoencoderKLCogVideoX::from_dir(dir, DType::F32, &Device::Cpu).map(|_| ())
}

fn load_t5(dir: &Path) -> Result<(), Error> {
    T5Encoder::load(dir, DType::F32, &Device::Cpu).map(|_| ())
}

/// Asserts a bad-checkpoint error naming `file` (a path suffix) and every
/// one of `words`, on one line.
fn assert_bad(err: &Error, file: &str, words: &[&str]) {
    let msg = err.to_string();
    println!("{msg}");
    match err {
        Error::BadCheckpoint { path, .. } => {
            assert!(path.ends_with(file), "names {}: {msg}", path.display())
        }
        _ => panic!("not a bad checkpoint: {msg}"),
    }
    for w in words {
        assert!(msg.contains(w), "`{w}` missing from: {msg}");
    }
    assert!(!msg.contains('\n'), "not one line: {msg}");
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Replaces `path` by a FIFO (`fifo`) or a symlink to `/dev/zero`.
fn make_hostile(path: &Path, fifo: bool) {
    std::fs::remove_file(path).unwrap();
    if fifo {
        mkfifo(path);
    } else {
        std::os::unix::fs::symlink("/dev/zero", path).unwrap();
    }
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

/// A safetensors file taken apart: header entries in data order, each with
/// its bytes.
struct RawSafetensors {
    tensors: Vec<(String, Value, Vec<u8>)>,
}

impl RawSafetensors {
    fn read(path: &Path) -> Self {
        let bytes = std::fs::read(path).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        let header: serde_json::Map<String, Value> =
            serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        let data = &bytes[8 + n..];
        let mut tensors: Vec<(String, Value, Vec<u8>)> = header
            .into_iter()
            .filter(|(k, _)| k != "__metadata__")
            .map(|(k, v)| {
                let s = v["data_offsets"][0].as_u64().unwrap() as usize;
                let e = v["data_offsets"][1].as_u64().unwrap() as usize;
                (k, v, data[s..e].to_vec())
            })
            .collect();
        tensors.sort_by_key(|(_, v, _)| v["data_offsets"][0].as_u64().unwrap());
        Self { tensors }
    }

    fn get(&self, name: &str) -> (Value, Vec<u8>) {
        let (_, v, b) = self.tensors.iter().find(|(n, _, _)| n == name).unwrap();
        (v.clone(), b.clone())
    }

    fn remove(&mut self, name: &str) -> (Value, Vec<u8>) {
        let i = self.tensors.iter().position(|(n, _, _)| n == name).unwrap();
        let (_, v, b) = self.tensors.remove(i);
        (v, b)
    }

    fn push(&mut self, name: &str, entry: Value, bytes: Vec<u8>) {
        self.tensors.push((name.to_string(), entry, bytes));
    }

    /// The header with contiguous offsets in the current order, and the data.
    fn pack(&self) -> (serde_json::Map<String, Value>, Vec<u8>) {
        let mut header = serde_json::Map::new();
        let mut data = Vec::new();
        for (name, entry, bytes) in &self.tensors {
            let mut entry = entry.clone();
            entry["data_offsets"] = json!([data.len(), data.len() + bytes.len()]);
            header.insert(name.clone(), entry);
            data.extend_from_slice(bytes);
        }
        (header, data)
    }

    fn write(&self, path: &Path) {
        let (header, data) = self.pack();
        write_safetensors(path, &header, &data, 0);
    }
}

/// Writes a safetensors file from a header and data, then extends it with
/// `sparse_tail` bytes that take no disk space.
fn write_safetensors(
    path: &Path,
    header: &serde_json::Map<String, Value>,
    data: &[u8],
    sparse_tail: u64,
) {
    let mut h = serde_json::to_vec(header).unwrap();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut bytes = (h.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(&h);
    bytes.extend_from_slice(data);
    std::fs::write(path, &bytes).unwrap();
    if sparse_tail > 0 {
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_len(bytes.len() as u64 + sparse_tail).unwrap();
    }
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("-of-"))
        .collect();
    v.sort();
    v
}

const TO_Q: &str = "transformer_blocks.0.attn1.to_q.weight";

// Finding 1: shapes and dtypes come from the header, before any data.

#[test]
fn oversized_stored_tensor_is_refused_before_reading() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "huge-tensor");
    let path = transformer_weights(&s.root);
    let mut raw = RawSafetensors::read(&path);
    // to_q.weight [32, 32] stored as [32, 2^34] f16: a sparse TiB that no
    // loader copying the stored tensor first can allocate.
    let (mut entry, _) = raw.remove(TO_Q);
    entry["shape"] = json!([32u64, 1u64 << 34]);
    let (mut header, data) = raw.pack();
    let tail = 32u64 << 35;
    entry["data_offsets"] = json!([data.len() as u64, data.len() as u64 + tail]);
    header.insert(TO_Q.into(), entry);
    write_safetensors(&path, &header, &data, tail);
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors",
        &[TO_Q, "[32, 17179869184]", "expects [32, 32]"],
    );
}

#[test]
fn header_offsets_must_tile_the_data() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "overlap");
    let path = transformer_weights(&s.root);
    let raw = RawSafetensors::read(&path);
    let (header, data) = raw.pack();
    let to_k = "transformer_blocks.0.attn1.to_k.weight";

    // Two tensors on the same bytes (the later one moved onto the earlier).
    let mut h = header.clone();
    h[TO_Q]["data_offsets"] = h[to_k]["data_offsets"].clone();
    write_safetensors(&path, &h, &data, 0);
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(&err, "diffusion_pytorch_model.safetensors", &["overlaps"]);

    // A shape whose size is not the bytes the offsets hold.
    let mut h = header.clone();
    h[TO_Q]["shape"] = json!([32, 16]);
    write_safetensors(&path, &h, &data, 0);
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors",
        &[TO_Q, "takes 1024 bytes"],
    );

    // Data that is no tensor's.
    write_safetensors(&path, &header, &[&data[..], &[0u8; 8]].concat(), 0);
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors",
        &["belong to no tensor"],
    );

    // Integers are no weights.
    let mut h = header;
    h[TO_Q]["dtype"] = json!("I16");
    write_safetensors(&path, &h, &data, 0);
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors",
        &[TO_Q, "dtype I16", "accepted"],
    );
}

#[test]
fn huge_header_length_is_refused() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "huge-header");
    let path = transformer_weights(&s.root);
    // Claims a 3 GiB header in a sparse 3 GiB file.
    let mut bytes = (3u64 << 30).to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    std::fs::write(&path, &bytes).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(8 + (3u64 << 30)).unwrap();
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors",
        &["header of", "at most"],
    );
}

// Finding 2: no FIFO or device is ever read.

#[test]
fn fifo_or_dev_zero_config_files_are_refused() {
    for fifo in [true, false] {
        let s = ScratchCheckpoint::copy_of("cogvideox-2b", &format!("special-config-{fifo}"));
        let root = s.root.clone();
        type Loader = fn(&Path) -> Result<(), Error>;
        let cases: [(&str, Loader); 4] = [
            ("model_index.json", |r| Checkpoint::open(r).map(|_| ())),
            ("transformer/config.json", |r| {
                load_transformer(r).map(|_| ())
            }),
            ("vae/config.json", |r| load_vae(&r.join("vae"))),
            ("scheduler/scheduler_config.json", |r| {
                SchedulerConfig::load(r.join("scheduler/scheduler_config.json")).map(|_| ())
            }),
        ];
        for (file, load) in cases {
            let original = std::fs::read(root.join(file)).unwrap();
            make_hostile(&root.join(file), fifo);
            let r = root.clone();
            let err = within(file, move || load(&r)).unwrap_err();
            assert_bad(&err, file, &["not a regular file"]);
            std::fs::remove_file(root.join(file)).unwrap();
            std::fs::write(root.join(file), original).unwrap();
        }
    }
}

#[test]
fn fifo_or_dev_zero_weight_files_are_refused() {
    for fifo in [true, false] {
        // A single weights file.
        let s = ScratchCheckpoint::copy_of("cogvideox-2b", &format!("special-weights-{fifo}"));
        make_hostile(&transformer_weights(&s.root), fifo);
        let root = s.root.clone();
        let err = within("weights", move || load_transformer(&root).map(|_| ())).unwrap_err();
        assert_bad(
            &err,
            "diffusion_pytorch_model.safetensors",
            &["not a regular file"],
        );

        // A shard index, and a shard.
        let s = ScratchCheckpoint::copy_of("cogvideox-5b", &format!("special-shards-{fifo}"));
        let index = s
            .root
            .join("transformer/diffusion_pytorch_model.safetensors.index.json");
        make_hostile(&index, fifo);
        let root = s.root.clone();
        let err = within("index", move || load_transformer(&root).map(|_| ())).unwrap_err();
        assert_bad(
            &err,
            "diffusion_pytorch_model.safetensors.index.json",
            &["not a regular file"],
        );
        let te = s.root.join("text_encoder");
        let shard = shards(&te).remove(0);
        make_hostile(&shard, fifo);
        let err = within("shard", move || load_t5(&te)).unwrap_err();
        assert_bad(
            &err,
            shard.file_name().unwrap().to_str().unwrap(),
            &["not a regular file"],
        );
    }
}

// Finding 3: the shard index is the truth.

#[test]
fn tensor_in_two_shards_is_refused() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "two-shards");
    let dir = s.root.join("transformer");
    let files = shards(&dir);
    let first = RawSafetensors::read(&files[0]);
    let (name, entry, bytes) = first.tensors[0].clone();
    let mut second = RawSafetensors::read(&files[1]);
    second.push(&name, entry, bytes.iter().map(|_| 0).collect());
    second.write(&files[1]);
    let err = load_transformer(&s.root).unwrap_err();
    let first_name = files[0].file_name().unwrap().to_str().unwrap();
    assert_bad(
        &err,
        files[1].file_name().unwrap().to_str().unwrap(),
        &[&name, "assigns to", first_name],
    );
}

#[test]
fn shard_index_entries_must_match_the_shards() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "index-mismatch");
    let dir = s.root.join("transformer");
    let index = dir.join("diffusion_pytorch_model.safetensors.index.json");
    let original = std::fs::read(&index).unwrap();
    let files = shards(&dir);
    let shard_name = |i: usize| files[i].file_name().unwrap().to_str().unwrap().to_string();
    let in_first = RawSafetensors::read(&files[0]).tensors[0].0.clone();

    // Paths outside the component folder, even to a real file.
    for outside in [
        "../vae/diffusion_pytorch_model.safetensors".to_string(),
        s.root
            .join("vae/diffusion_pytorch_model.safetensors")
            .display()
            .to_string(),
    ] {
        edit_json(&index, |v| {
            v["weight_map"][&in_first] = json!(outside);
        });
        let err = load_transformer(&s.root).unwrap_err();
        assert_bad(
            &err,
            "diffusion_pytorch_model.safetensors.index.json",
            &[&in_first, "outside the component folder"],
        );
        std::fs::write(&index, &original).unwrap();
    }

    // The index sends a tensor to a shard that does not hold it.
    edit_json(&index, |v| {
        v["weight_map"][&in_first] = json!(shard_name(1));
    });
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(&err, &shard_name(0), &[&in_first, "assigns to"]);
    std::fs::write(&index, &original).unwrap();

    // The index does not list a tensor a shard holds.
    edit_json(&index, |v| {
        v["weight_map"].as_object_mut().unwrap().remove(&in_first);
    });
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(&err, &shard_name(0), &[&in_first, "does not list"]);
    std::fs::write(&index, &original).unwrap();

    // The index lists a tensor no shard holds.
    edit_json(&index, |v| {
        v["weight_map"]["extra.weight"] = json!(shard_name(0));
    });
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors.index.json",
        &["extra.weight", "does not hold it"],
    );
}

// Finding 4: model_index.json names the classes this library loads.

#[test]
fn model_index_classes_are_checked() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "classes");
    let path = s.root.join("model_index.json");
    let original = std::fs::read(&path).unwrap();
    let refused: [(&str, Value, &str); 6] = [
        (
            "_class_name",
            json!("StableDiffusionPipeline"),
            "_class_name",
        ),
        ("vae", json!(["diffusers", "AutoencoderKL"]), "`vae`"),
        (
            "transformer",
            json!(["diffusers", "UNet2DConditionModel"]),
            "`transformer`",
        ),
        ("scheduler", Value::Null, "`scheduler`"),
        (
            "text_encoder",
            json!(["diffusers", "T5EncoderModel"]),
            "`text_encoder`",
        ),
        (
            "tokenizer",
            json!(["transformers", "CLIPTokenizer"]),
            "`tokenizer`",
        ),
    ];
    for (key, value, named) in refused {
        edit_json(&path, |v| v[key] = value);
        let err = Checkpoint::open(&s.root).unwrap_err();
        assert_bad(&err, "model_index.json", &[named, "accepted"]);
        std::fs::write(&path, &original).unwrap();
    }
    edit_json(&path, |v| {
        v.as_object_mut().unwrap().remove("text_encoder");
    });
    let err = Checkpoint::open(&s.root).unwrap_err();
    assert_bad(&err, "model_index.json", &["`text_encoder` is missing"]);
    std::fs::write(&path, &original).unwrap();

    // What diffusers swaps in, and video-to-video on a text-to-video model.
    edit_json(&path, |v| {
        v["_class_name"] = json!("CogVideoXVideoToVideoPipeline");
        v["scheduler"] = json!(["diffusers", "CogVideoXDPMScheduler"]);
        v["tokenizer"] = json!(["transformers", "T5TokenizerFast"]);
    });
    load_pipeline(&s.root).unwrap();
}

#[test]
fn video_to_video_needs_a_text_to_video_transformer() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b-i2v", "v2v-i2v");
    edit_json(&s.root.join("model_index.json"), |v| {
        v["_class_name"] = json!("CogVideoXVideoToVideoPipeline");
    });
    let err = load_pipeline(&s.root).err().unwrap();
    assert_bad(
        &err,
        "model_index.json",
        &[
            "does not match the transformer",
            "CogVideoXImageToVideoPipeline",
        ],
    );
}

#[test]
fn transformer_text_length_must_match_the_text_encoder() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "text-length");
    edit_json(&s.root.join("transformer/config.json"), |v| {
        v["max_text_seq_length"] = json!(300);
    });
    // The transformer alone has no text encoder to agree with.
    load_transformer(&s.root).unwrap();
    let err = load_pipeline(&s.root)
        .err()
        .expect("a text length of 300 is refused");
    assert_bad(
        &err,
        "transformer/config.json",
        &["max_text_seq_length 300", "accepted: 226"],
    );
}

// Finding 5: every stored tensor is one the model reads.

#[test]
fn tensors_the_config_leaves_unused_are_refused() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "unused");
    let cfg = s.root.join("transformer/config.json");
    edit_json(&cfg, |v| v["num_layers"] = json!(1));
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors",
        &["transformer_blocks.1.", "config.json"],
    );
    edit_json(&cfg, |v| {
        v["num_layers"] = json!(2);
        v["attention_bias"] = json!(false);
    });
    let err = load_transformer(&s.root).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors",
        &["attn1.to_k.bias", "and 3 more"],
    );

    // The VAE: a tensor no module has.
    let vae = s.root.join("vae");
    let path = vae.join("diffusion_pytorch_model.safetensors");
    let mut raw = RawSafetensors::read(&path);
    let (entry, bytes) = raw.get("encoder.conv_in.conv.bias");
    raw.push("encoder.conv_in.conv.extra", entry, bytes);
    raw.write(&path);
    let err = load_vae(&vae).unwrap_err();
    assert_bad(
        &err,
        "diffusion_pytorch_model.safetensors",
        &["encoder.conv_in.conv.extra"],
    );

    // T5: one block fewer in the config than in the file.
    let te = s.root.join("text_encoder");
    edit_json(&te.join("config.json"), |v| v["num_layers"] = json!(1));
    let err = load_t5(&te).unwrap_err();
    assert_bad(&err, "model.safetensors", &["encoder.block.1."]);
}

#[test]
fn tied_t5_embedding_copy_is_accepted() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "tied");
    let te = s.root.join("text_encoder");
    let path = te.join("model.safetensors");
    let original = RawSafetensors::read(&path);
    let (entry, bytes) = original.get("shared.weight");
    let mut raw = RawSafetensors::read(&path);
    raw.push("encoder.embed_tokens.weight", entry.clone(), bytes.clone());
    raw.write(&path);
    load_t5(&te).unwrap();

    // Not a copy when its shape differs.
    let mut raw = RawSafetensors::read(&path);
    raw.remove("encoder.embed_tokens.weight");
    let mut entry = entry;
    let shape = entry["shape"].clone();
    entry["shape"] = json!([shape[1], shape[0]]);
    raw.push("encoder.embed_tokens.weight", entry, bytes);
    raw.write(&path);
    let err = load_t5(&te).unwrap_err();
    assert_bad(&err, "model.safetensors", &["encoder.embed_tokens.weight"]);
}

// Finding 6: config fields that set sizes or divisors.

#[test]
fn transformer_config_fields_out_of_range_are_refused() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "cfg-ranges");
    let path = s.root.join("transformer/config.json");
    let original = std::fs::read(&path).unwrap();
    let cases: Vec<(&str, Value)> = vec![
        ("sample_height", json!(0)),
        ("sample_height", json!(1u64 << 40)),
        ("sample_width", json!(7)),
        ("sample_frames", json!(0)),
        ("sample_frames", json!(10)),
        ("temporal_compression_ratio", json!(0)),
        ("num_attention_heads", json!(0)),
        ("attention_head_dim", json!(0)),
        ("patch_size", json!(0)),
        ("patch_size_t", json!(0)),
        ("num_layers", json!(0)),
        ("num_layers", json!(1_000_000)),
        ("time_embed_dim", json!(0)),
        ("text_embed_dim", json!(0)),
        ("in_channels", json!(0)),
        ("in_channels", json!(24)),
        ("out_channels", json!(0)),
        ("max_text_seq_length", json!(0)),
        ("norm_eps", json!(0.0)),
        ("freq_shift", json!(-1.0)),
        ("spatial_interpolation_scale", json!(0.0)),
        ("temporal_interpolation_scale", json!(-1.0)),
    ];
    for (field, value) in cases {
        std::fs::write(&path, &original).unwrap();
        edit_json(&path, |v| v[field] = value.clone());
        let err = load_transformer(&s.root).unwrap_err();
        assert_bad(&err, "transformer/config.json", &[field, "accepted"]);
    }
}

#[test]
fn vae_config_fields_out_of_range_are_refused() {
    let s = ScratchCheckpoint::copy_of("cogvideox-2b", "vae-ranges");
    let dir = s.root.join("vae");
    let path = dir.join("config.json");
    let original = std::fs::read(&path).unwrap();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("block_out_channels", json!([]), "block_out_channels"),
        ("block_out_channels", json!([4, 8, 8]), "block_types"),
        (
            "block_out_channels",
            json!([4, 8, 8, 0]),
            "block_out_channels",
        ),
        ("norm_num_groups", json!(3), "norm_num_groups"),
        ("norm_num_groups", json!(0), "norm_num_groups"),
        (
            "temporal_compression_ratio",
            json!(0),
            "temporal_compression_ratio",
        ),
        (
            "temporal_compression_ratio",
            json!(3),
            "temporal_compression_ratio",
        ),
        (
            "temporal_compression_ratio",
            json!(16),
            "temporal_compression_ratio",
        ),
        ("layers_per_block", json!(0), "layers_per_block"),
        ("layers_per_block", json!(1000), "layers_per_block"),
        ("latent_channels", json!(0), "latent_channels"),
        ("in_channels", json!(4), "in_channels"),
        ("sample_height", json!(0), "sample_height"),
        ("sample_height", json!(1u64 << 40), "sample_height"),
        ("sample_width", json!(8), "sample_width"),
        ("scaling_factor", json!(0.0), "scaling_factor"),
        ("norm_eps", json!(-1e-6), "norm_eps"),
    ];
    for (field, value, named) in cases {
        std::fs::write(&path, &original).unwrap();
        edit_json(&path, |v| v[field] = value.clone());
        let err = load_vae(&dir).unwrap_err();
        assert_bad(&err, "vae/config.json", &[named, "accepted"]);
    }
}

/// The published transformer configs (reference notes 1.3), which the
/// ranges must keep accepting.
fn published_transformer_configs() -> Vec<(&'static str, Value)> {
    let base = json!({
        "activation_fn": "gelu-approximate", "attention_bias": true, "attention_head_dim": 64,
        "dropout": 0.0, "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 16,
        "max_text_seq_length": 226, "norm_elementwise_affine": true, "norm_eps": 1e-5,
        "num_attention_heads": 48, "num_layers": 42, "out_channels": 16, "patch_size": 2,
        "sample_frames": 49, "sample_height": 60, "sample_width": 90,
        "spatial_interpolation_scale": 1.875, "temporal_compression_ratio": 4,
        "temporal_interpolation_scale": 1.0, "text_embed_dim": 4096, "time_embed_dim": 512,
        "timestep_activation_fn": "silu", "use_rotary_positional_embeddings": true
    });
    let with = |changes: Value| {
        let mut v = base.clone();
        for (k, x) in changes.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    let v15 = json!({"patch_size_t": 2, "patch_bias": false, "sample_frames": 81,
                     "sample_height": 96, "sample_width": 170});
    let mut v15_i2v = v15.clone();
    v15_i2v["in_channels"] = json!(32);
    v15_i2v["ofs_embed_dim"] = json!(512);
    let mut v15_old = v15.clone();
    v15_old["sample_height"] = json!(300);
    v15_old["sample_width"] = json!(300);
    let mut v2b = with(json!({"num_attention_heads": 30, "num_layers": 30}));
    v2b.as_object_mut()
        .unwrap()
        .remove("use_rotary_positional_embeddings");
    vec![
        ("CogVideoX-2b", v2b),
        ("CogVideoX-5b", base.clone()),
        (
            "CogVideoX-5b-I2V",
            with(json!({"in_channels": 32, "use_learned_positional_embeddings": true})),
        ),
        ("CogVideoX1.5-5B", with(v15)),
        ("CogVideoX1.5-5B", with(v15_old)),
        ("CogVideoX1.5-5B-I2V", with(v15_i2v)),
    ]
}

#[test]
fn published_configs_are_accepted() {
    for (variant, v) in published_transformer_configs() {
        let cfg: TransformerConfig = serde_json::from_value(v).unwrap();
        cfg.validate()
            .unwrap_or_else(|e| panic!("{variant} refused: {e}"));
        assert_eq!(cogvideo::Variant::detect(&cfg).name(), variant);
    }
    for (scaling, invert) in [(1.15258426, false), (0.7, false), (0.7, true)] {
        let (down, up) = (["CogVideoXDownBlock3D"; 4], ["CogVideoXUpBlock3D"; 4]);
        let v = json!({
            "act_fn": "silu", "block_out_channels": [128, 256, 256, 512],
            "down_block_types": down, "up_block_types": up,
            "force_upcast": true, "in_channels": 3, "out_channels": 3, "latent_channels": 16,
            "layers_per_block": 3, "norm_eps": 1e-6, "norm_num_groups": 32,
            "sample_height": 480, "sample_width": 720, "scaling_factor": scaling,
            "invert_scale_latents": invert, "temporal_compression_ratio": 4,
            "shift_factor": null, "latents_mean": null, "latents_std": null,
            "use_quant_conv": false, "use_post_quant_conv": false
        });
        let cfg: VaeConfig = serde_json::from_value(v).unwrap();
        cfg.validate().unwrap();
    }
}
