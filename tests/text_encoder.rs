//! Prompt embeddings (tokenizer + T5 encoder through `TextEncoder`) against
//! transformers 5.23 `T5EncoderModel` as `CogVideoXPipeline._get_t5_prompt_embeds`
//! calls it (tests/data/golden/t5.*), and loading errors.
//!
//! Tolerance: f32 max abs error <= 1e-4 x max(1, max|reference|). The tiny
//! encoder sees all 226 positions, so every relative-position bucket up to
//! distance 225 (including the log-spaced ones at 16, 32, 64, 128) is used.
//! bf16 is compared with the f32 reference at 6e-2 x scale: this tiny random
//! encoder amplifies rounding (rounding only its weights to bf16 moves the
//! outputs by 4% of scale, and transformers' own bf16 run differs from its
//! f32 run by 5.4%), while wrong weights or a wrong computation move outputs
//! by O(scale).

mod common;

use candle_core::{DType, Device, IndexOp, Tensor};
use cogvideo::Error;
use cogvideo::checkpoint::Checkpoint;
use cogvideo::text_encoder::{MAX_SEQUENCE_LENGTH, T5Encoder, TextEncoder};
use common::{ScratchCheckpoint, assert_close, load_json, load_tensors, tiny};

const VARIANTS: [&str; 5] = [
    "cogvideox-2b",
    "cogvideox-5b",
    "cogvideox-5b-i2v",
    "cogvideox1.5-5b",
    "cogvideox1.5-5b-i2v",
];

struct Golden {
    prompts: Vec<String>,
    ids: Vec<Vec<u32>>,
    hidden: Vec<Tensor>,
}

fn golden() -> Golden {
    let meta = load_json("t5.json");
    let tensors = load_tensors("t5.safetensors");
    let mut g = Golden {
        prompts: Vec::new(),
        ids: Vec::new(),
        hidden: Vec::new(),
    };
    for case in meta["cases"].as_array().expect("cases") {
        let key = case["key"].as_u64().unwrap();
        g.prompts.push(case["prompt"].as_str().unwrap().to_string());
        let ids = &tensors[&format!("input_ids_{key}")];
        let ids = ids.squeeze(0).unwrap().to_vec1::<i64>().unwrap();
        g.ids.push(ids.into_iter().map(|i| i as u32).collect());
        g.hidden.push(tensors[&format!("hidden_{key}")].clone());
    }
    assert!(!g.prompts.is_empty());
    g
}

fn load(variant: &str, dtype: DType) -> TextEncoder {
    let ckpt = Checkpoint::open(tiny(variant)).unwrap();
    TextEncoder::from_checkpoint(&ckpt, dtype, &Device::Cpu).unwrap()
}

fn check_against_golden(variant: &str, dtype: DType, rel: f64) -> f64 {
    let g = golden();
    let enc = load(variant, dtype);
    for (p, want) in g.prompts.iter().zip(&g.ids) {
        let got = enc.tokenizer().encode(p, MAX_SEQUENCE_LENGTH).unwrap();
        assert_eq!(&got, want, "{variant}: ids of {p:?}");
    }
    let prompts: Vec<&str> = g.prompts.iter().map(String::as_str).collect();
    let emb = enc.encode_prompts(&prompts).unwrap();
    assert_eq!(emb.dims(), &[prompts.len(), MAX_SEQUENCE_LENGTH, 32]);
    assert_eq!(emb.dtype(), dtype);
    let mut worst = 0f64;
    for (k, want) in g.hidden.iter().enumerate() {
        let got = emb.i(k..k + 1).unwrap();
        let label = format!("{variant} {dtype:?} prompt {k}");
        worst = worst.max(assert_close(&label, &got, want, rel));
    }
    worst
}

#[test]
fn sharded_text_encoder_matches_transformers_f32() {
    // cogvideox-5b ships the text encoder in two shards, as published.
    check_against_golden("cogvideox-5b", DType::F32, 1e-4);
}

#[test]
fn every_variant_matches_transformers_f32() {
    // The tiny checkpoints share one encoder, stored single-file (2b, 1.5-5B)
    // or sharded (the others).
    for v in VARIANTS {
        check_against_golden(v, DType::F32, 1e-4);
    }
}

#[test]
fn bf16_stays_close_to_the_f32_reference() {
    check_against_golden("cogvideox-2b", DType::BF16, 6e-2);
}

#[test]
fn empty_prompt_embedding_is_computed_once() {
    let g = golden();
    let k = g.prompts.iter().position(|p| p.is_empty()).expect("\"\"");
    let enc = load("cogvideox-5b", DType::F32);
    let a = enc.empty_prompt_embedding().unwrap();
    assert_eq!(a.dims(), &[1, MAX_SEQUENCE_LENGTH, 32]);
    assert_close("empty prompt", &a, &g.hidden[k], 1e-4);
    let b = enc.empty_prompt_embedding().unwrap();
    assert_eq!(a.id(), b.id(), "second call must reuse the cached tensor");
}

#[test]
fn batch_rows_do_not_depend_on_each_other() {
    let enc = load("cogvideox-5b", DType::F32);
    let alone = enc.encode_prompts(&["a cat"]).unwrap();
    let batch = enc.encode_prompts(&["", "a cat", "a\0dog"]).unwrap();
    assert_close("row 1 of 3", &batch.i(1..2).unwrap(), &alone, 1e-6);
    assert!(matches!(
        enc.encode_prompts(&[]),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn text_encoder_is_shareable_between_threads() {
    fn is_sync<T: Send + Sync>() {}
    is_sync::<TextEncoder>();
    let enc = load("cogvideox-5b", DType::F32);
    let want = enc.encode_prompts(&["a cat"]).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|_| s.spawn(|| enc.encode_prompts(&["a cat"]).unwrap()))
            .collect();
        for h in handles {
            assert_close("threaded", &h.join().unwrap(), &want, 0.0);
        }
    });
}

#[test]
fn f16_and_integer_dtypes_are_refused() {
    for dtype in [DType::F16, DType::U32] {
        let err = T5Encoder::load(
            tiny("cogvideox-2b").join("text_encoder"),
            dtype,
            &Device::Cpu,
        )
        .err()
        .expect("refused");
        assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    }
}

fn load_err(root: &std::path::Path) -> Error {
    let ckpt = Checkpoint::open(root).unwrap();
    TextEncoder::from_checkpoint(&ckpt, DType::F32, &Device::Cpu)
        .err()
        .expect("loading must fail")
}

fn assert_names(err: &Error, what: &str) {
    assert!(err.to_string().contains(what), "`{what}` not in: {err}");
}

#[test]
fn missing_config_is_an_io_error_naming_it() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-2b", "te-noconfig");
    std::fs::remove_file(ckpt.root.join("text_encoder/config.json")).unwrap();
    let err = load_err(&ckpt.root);
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_names(&err, "text_encoder/config.json");
}

#[test]
fn config_without_a_shape_field_is_a_bad_checkpoint() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-2b", "te-badconfig");
    let path = ckpt.root.join("text_encoder/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("d_model");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = load_err(&ckpt.root);
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert_names(&err, "config.json");
    assert_names(&err, "d_model");

    cfg["d_model"] = 32.into();
    cfg["feed_forward_proj"] = "gated-relu".into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = load_err(&ckpt.root);
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert_names(&err, "feed_forward_proj = \"gated-relu\"");
}

#[test]
fn config_defaults_and_extra_fields() {
    // Optional fields take T5Config's defaults; unknown ones are ignored.
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-2b", "te-defaults");
    let path = ckpt.root.join("text_encoder/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let obj = cfg.as_object_mut().unwrap();
    for key in [
        "relative_attention_num_buckets",
        "relative_attention_max_distance",
        "layer_norm_epsilon",
        "is_encoder_decoder",
        "initializer_factor",
        "dropout_rate",
        "pad_token_id",
        "eos_token_id",
    ] {
        obj.remove(key);
    }
    obj.insert("is_decoder".into(), true.into());
    obj.insert("use_cache".into(), true.into());
    obj.insert("some_future_field".into(), "x".into());
    std::fs::write(&path, cfg.to_string()).unwrap();

    let g = golden();
    let ckpt = Checkpoint::open(&ckpt.root).unwrap();
    let enc = TextEncoder::from_checkpoint(&ckpt, DType::F32, &Device::Cpu).unwrap();
    let emb = enc.encode_prompts(&[g.prompts[1].as_str()]).unwrap();
    assert_close("defaults", &emb, &g.hidden[1], 1e-4);
    // A second call must not see a key/value cache of the first.
    let again = enc.encode_prompts(&[g.prompts[1].as_str()]).unwrap();
    assert_close("defaults, second call", &again, &g.hidden[1], 1e-4);
}

#[test]
fn missing_shard_is_an_io_error_naming_it() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-5b", "te-noshard");
    std::fs::remove_file(
        ckpt.root
            .join("text_encoder/model-00002-of-00002.safetensors"),
    )
    .unwrap();
    let err = load_err(&ckpt.root);
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert_names(&err, "model-00002-of-00002.safetensors");
}

#[test]
fn truncated_safetensors_is_a_bad_checkpoint_naming_it() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-2b", "te-trunc");
    let path = ckpt.root.join("text_encoder/model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    for keep in [bytes.len() - 1, bytes.len() / 2, 4] {
        std::fs::write(&path, &bytes[..keep]).unwrap();
        let err = load_err(&ckpt.root);
        assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
        assert_names(&err, "model.safetensors");
    }
}

/// Rewrites the single-file encoder with `edit` applied to its tensors.
fn rewrite_weights(
    root: &std::path::Path,
    edit: impl FnOnce(&mut std::collections::HashMap<String, Tensor>),
) {
    let path = root.join("text_encoder/model.safetensors");
    let mut tensors = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    edit(&mut tensors);
    candle_core::safetensors::save(&tensors, &path).unwrap();
}

#[test]
fn wrong_tensor_shape_is_a_bad_checkpoint_naming_the_tensor() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-2b", "te-shape");
    let name = "encoder.block.1.layer.1.DenseReluDense.wo.weight";
    rewrite_weights(&ckpt.root, |t| {
        t.insert(
            name.into(),
            Tensor::zeros((32, 48), DType::F32, &Device::Cpu).unwrap(),
        );
    });
    let err = load_err(&ckpt.root);
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert_names(&err, "text_encoder");
    assert_names(&err, name);
}

#[test]
fn missing_tensor_is_a_bad_checkpoint_naming_it() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-2b", "te-notensor");
    let name = "encoder.final_layer_norm.weight";
    rewrite_weights(&ckpt.root, |t| {
        t.remove(name);
    });
    let err = load_err(&ckpt.root);
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert_names(&err, name);
}

#[test]
fn half_precision_weights_load_and_convert() {
    // Published encoders are stored in bf16, f16 or f32: loading converts
    // to the compute dtype, so a half-precision copy computes exactly what
    // an f32 copy of the same rounded values computes.
    for stored in [DType::BF16, DType::F16] {
        let half = ScratchCheckpoint::copy_of("cogvideox-2b", &format!("te-{stored:?}"));
        let widened = ScratchCheckpoint::copy_of("cogvideox-2b", &format!("te-{stored:?}-f32"));
        rewrite_weights(&half.root, |t| {
            for v in t.values_mut() {
                *v = v.to_dtype(stored).unwrap();
            }
        });
        rewrite_weights(&widened.root, |t| {
            for v in t.values_mut() {
                *v = v.to_dtype(stored).unwrap().to_dtype(DType::F32).unwrap();
            }
        });
        let run = |root: &std::path::Path| {
            let ckpt = Checkpoint::open(root).unwrap();
            let enc = TextEncoder::from_checkpoint(&ckpt, DType::F32, &Device::Cpu).unwrap();
            enc.encode_prompts(&["A panda in a bamboo forest."])
                .unwrap()
        };
        let got = run(&half.root);
        assert_eq!(got.dtype(), DType::F32);
        assert_close(
            &format!("{stored:?}-stored weights"),
            &got,
            &run(&widened.root),
            1e-6,
        );
    }
}

#[test]
fn tokenizer_larger_than_the_embedding_is_rejected() {
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-2b", "te-vocab");
    let path = ckpt.root.join("text_encoder/config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["vocab_size"] = 600.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    rewrite_weights(&ckpt.root, |t| {
        let w = t["shared.weight"].narrow(0, 0, 600).unwrap();
        t.insert("shared.weight".into(), w);
    });
    let err = load_err(&ckpt.root);
    assert!(matches!(err, Error::BadCheckpoint { .. }), "{err}");
    assert_names(&err, "config.json");
    assert_names(
        &err,
        "vocab_size = 600: expected at least the tokenizer's 612 tokens",
    );
}

#[test]
fn config_sizes_that_are_zero_or_absurd_are_refused_naming_the_field() {
    // Each of these feeds a size, a loop count or a divisor. They used to
    // fail, if at all, on a tensor shape with a message naming neither the
    // file nor the field (and with tensors to match, zero buckets underflow
    // in candle's position bias).
    let ckpt = ScratchCheckpoint::copy_of("cogvideox-2b", "te-sizes");
    let path = ckpt.root.join("text_encoder/config.json");
    let original = std::fs::read_to_string(&path).unwrap();
    let cases: &[(&str, serde_json::Value, &str)] = &[
        ("vocab_size", 0.into(), "1 to 1048576"),
        ("vocab_size", 2_000_000.into(), "1 to 1048576"),
        ("d_model", 0.into(), "1 to"),
        ("d_model", 1_000_000_000_000u64.into(), "1 to"),
        ("d_kv", 0.into(), "1 to"),
        ("d_ff", 0.into(), "1 to"),
        ("num_heads", 0.into(), "1 to"),
        ("num_layers", 0.into(), "1 to 1024"),
        ("num_layers", 1_000_000.into(), "1 to 1024"),
        ("relative_attention_num_buckets", 0.into(), "4 to"),
        ("relative_attention_num_buckets", 3.into(), "4 to"),
        ("relative_attention_max_distance", 8.into(), "9 to"),
        ("relative_attention_max_distance", 0.into(), "9 to"),
        ("layer_norm_epsilon", 0.0.into(), "positive"),
        ("layer_norm_epsilon", (-1e-6).into(), "positive"),
    ];
    for (field, value, range) in cases {
        let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
        cfg[*field] = value.clone();
        std::fs::write(&path, cfg.to_string()).unwrap();
        let err = load_err(&ckpt.root);
        assert!(matches!(err, Error::BadCheckpoint { .. }), "{field}: {err}");
        assert_names(&err, "text_encoder/config.json");
        let shown = value.as_f64().unwrap();
        assert_names(&err, &format!("{field} = {shown}"));
        assert_names(&err, range);
    }
    // A product that no single bound catches.
    let mut cfg: serde_json::Value = serde_json::from_str(&original).unwrap();
    cfg["num_heads"] = 65536.into();
    cfg["d_kv"] = 65536.into();
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = load_err(&ckpt.root);
    assert_names(&err, "num_heads x d_kv = 4294967296");
}
