//! Bad checkpoints give clear errors naming the file at fault.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use cogvideo::Error;
use cogvideo::checkpoint::Checkpoint;
use cogvideo::models::transformers::CogVideoXTransformer3DModel;
use common::ScratchCheckpoint;

fn load_transformer(root: &std::path::Path) -> Result<CogVideoXTransformer3DModel, Error> {
    let ckpt = Checkpoint::open(root)?;
    CogVideoXTransformer3DModel::from_checkpoint(&ckpt, DType::F32, &Device::Cpu)
}

fn transformer_weights(root: &std::path::Path) -> std::path::PathBuf {
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
    let err = load_transformer(&s.root).unwrap_err();
    assert!(
        err.to_string().contains("does not match the transformer"),
        "{err}"
    );
}
