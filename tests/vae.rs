//! AutoencoderKLCogVideoX parity with diffusers 0.42.1 on the tiny
//! checkpoints (tests/data/golden/vae_cases.json), and its input / loading
//! errors.
//!
//! Tolerance (f32): max abs error <= 1e-4 * max(1, max |reference|) for every
//! output tensor; the measured error of each case is printed (run with
//! `--nocapture` to see it).

mod common;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use cogvideo::Error;
use cogvideo::models::autoencoders::{AutoencoderKLCogVideoX, Tiling};
use common::{ScratchCheckpoint, assert_close, load_json, load_tensors, tiny};
use serde_json::Value;

const REL_TOL: f64 = 1e-4;

fn load_vae(variant: &str) -> AutoencoderKLCogVideoX {
    AutoencoderKLCogVideoX::from_dir(tiny(variant).join("vae"), DType::F32, &Device::Cpu)
        .unwrap_or_else(|e| panic!("loading the {variant} VAE: {e}"))
}

/// The tiling a case was generated with: explicit `enable_tiling(...)`
/// arguments, or the VAE's defaults for `enable_tiling()`.
fn case_tiling(vae: &AutoencoderKLCogVideoX, case: &Value) -> Option<Tiling> {
    if !case["tiled"].as_bool().unwrap_or(false) {
        return None;
    }
    let t = &case["tile"];
    let recorded = Tiling {
        tile_sample_min_height: t["tile_sample_min_height"].as_u64().unwrap() as usize,
        tile_sample_min_width: t["tile_sample_min_width"].as_u64().unwrap() as usize,
        tile_overlap_factor_height: t["tile_overlap_factor_height"].as_f64().unwrap(),
        tile_overlap_factor_width: t["tile_overlap_factor_width"].as_f64().unwrap(),
    };
    if case["tiling_call"].as_str() == Some("enable_tiling()") {
        assert_eq!(vae.default_tiling(), recorded, "default tiling");
        Some(vae.default_tiling())
    } else {
        Some(recorded)
    }
}

#[test]
fn vae_matches_diffusers() {
    let cases = load_json("vae_cases.json");
    let cases = cases["cases"].as_array().expect("cases");
    assert!(!cases.is_empty());
    let mut report = Vec::new();
    for case in cases {
        let variant = case["variant"].as_str().unwrap();
        let name = format!("{variant}/{}", case["case"].as_str().unwrap());
        let mut vae = load_vae(variant);
        vae.set_tiling(case_tiling(&vae, case)).unwrap();
        vae.set_slicing(case["sliced"].as_bool().unwrap_or(false));
        let t = load_tensors(case["file"].as_str().unwrap());
        match case["op"].as_str().unwrap() {
            "encode" => {
                let dist = vae.encode(&t["video"]).unwrap();
                let e1 = assert_close(&format!("{name} mean"), dist.mean(), &t["mean"], REL_TOL);
                let e2 = assert_close(
                    &format!("{name} logvar"),
                    dist.logvar(),
                    &t["logvar"],
                    REL_TOL,
                );
                assert_eq!(dist.mode().dims(), t["mean"].dims());
                let sample = dist.sample(&t["posterior_noise"]).unwrap();
                let e3 = assert_close(&format!("{name} sample"), &sample, &t["sample"], REL_TOL);
                report.push((name, e1.max(e2).max(e3)));
            }
            "decode" => {
                let video = vae.decode(&t["latents"]).unwrap();
                let e = assert_close(&format!("{name} video"), &video, &t["video"], REL_TOL);
                report.push((name, e));
            }
            op => panic!("{name}: unknown op {op}"),
        }
    }
    println!("\nVAE parity, max abs error per case (bound {REL_TOL:e} x max(1, |ref|)):");
    for (name, e) in &report {
        println!("  {name:40} {e:.3e}");
    }
}

fn expect_invalid(result: Result<impl std::fmt::Debug, Error>, needle: &str) {
    match result {
        Err(Error::InvalidArgument(msg)) => {
            assert!(msg.contains(needle), "message `{msg}` lacks `{needle}`")
        }
        other => panic!("expected InvalidArgument containing `{needle}`, got {other:?}"),
    }
}

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn encode_rejects_inputs_it_cannot_take() {
    let vae = load_vae("cogvideox-5b");
    expect_invalid(vae.encode(&zeros(&[1, 4, 5, 16, 24])), "4 channels");
    expect_invalid(vae.encode(&zeros(&[3, 5, 16, 24])), "5 dimensions");
    expect_invalid(vae.encode(&zeros(&[1, 3, 0, 16, 24])), "0 frames");
    expect_invalid(vae.encode(&zeros(&[0, 3, 5, 16, 24])), "0 samples");
    expect_invalid(vae.encode(&zeros(&[1, 3, 5, 12, 24])), "multiples of 8");
    expect_invalid(vae.encode(&zeros(&[1, 3, 5, 16, 20])), "multiples of 8");
}

#[test]
fn decode_rejects_inputs_it_cannot_take() {
    let vae = load_vae("cogvideox-5b");
    expect_invalid(vae.decode(&zeros(&[1, 3, 2, 2, 3])), "3 channels");
    expect_invalid(vae.decode(&zeros(&[16, 2, 2, 3])), "5 dimensions");
    expect_invalid(vae.decode(&zeros(&[1, 16, 0, 2, 3])), "empty");
    expect_invalid(vae.decode(&zeros(&[1, 16, 2, 0, 3])), "empty");
}

#[test]
fn posterior_sample_checks_the_noise_shape() {
    let vae = load_vae("cogvideox-5b");
    let dist = vae.encode(&zeros(&[1, 3, 5, 16, 24])).unwrap();
    expect_invalid(dist.sample(&zeros(&[1, 16, 1, 2, 3])), "noise");
}

#[test]
fn tiling_settings_are_checked() {
    let mut vae = load_vae("cogvideox-5b");
    let ok = vae.default_tiling();
    let bad = |f: &dyn Fn(&mut Tiling)| {
        let mut t = ok;
        f(&mut t);
        t
    };
    expect_invalid(
        vae.set_tiling(Some(bad(&|t| t.tile_overlap_factor_height = 1.0))),
        "tile_overlap_factor_height",
    );
    expect_invalid(
        vae.set_tiling(Some(bad(&|t| t.tile_sample_min_width = 4))),
        "smaller than one latent pixel",
    );
    expect_invalid(
        vae.set_tiling(Some(bad(&|t| {
            t.tile_sample_min_height = 8;
            t.tile_overlap_factor_height = 0.9;
        }))),
        "no stride",
    );
    assert_eq!(vae.tiling(), None, "a rejected setting must not be applied");
    vae.set_tiling(Some(ok)).unwrap();
    assert_eq!(vae.tiling(), Some(ok));
}

fn load_dir(dir: &Path) -> Result<AutoencoderKLCogVideoX, Error> {
    AutoencoderKLCogVideoX::from_dir(dir, DType::F32, &Device::Cpu)
}

#[test]
fn missing_config_is_reported() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "vae-noconfig");
    let vae = s.root.join("vae");
    std::fs::remove_file(vae.join("config.json")).unwrap();
    match load_dir(&vae) {
        Err(Error::Io { path, .. }) => assert!(path.ends_with("vae/config.json"), "{path:?}"),
        other => panic!("expected an Io error for config.json, got {other:?}"),
    }
}

#[test]
fn missing_weights_are_reported() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "vae-noweights");
    let vae = s.root.join("vae");
    std::fs::remove_file(vae.join("diffusion_pytorch_model.safetensors")).unwrap();
    match load_dir(&vae) {
        Err(e @ Error::Io { .. }) => assert!(e.to_string().contains("no weights"), "{e}"),
        other => panic!("expected an Io error for the weights, got {other:?}"),
    }
}

/// Rewrites one field of the scratch VAE's config.json (`Null` removes it).
fn patch_config(vae: &Path, key: &str, value: Value) {
    let path = vae.join("config.json");
    let mut cfg: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    match value {
        Value::Null => {
            cfg.as_object_mut().unwrap().remove(key);
        }
        v => cfg[key] = v,
    }
    std::fs::write(&path, serde_json::to_string(&cfg).unwrap()).unwrap();
}

fn expect_bad_checkpoint(result: Result<AutoencoderKLCogVideoX, Error>, needle: &str) {
    match result {
        Err(e @ Error::BadCheckpoint { .. }) => {
            assert!(e.to_string().contains(needle), "`{e}` lacks `{needle}`")
        }
        other => panic!("expected BadCheckpoint containing `{needle}`, got {other:?}"),
    }
}

#[test]
fn unsupported_configs_are_reported() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "vae-quant");
    let vae = s.root.join("vae");
    patch_config(&vae, "use_quant_conv", Value::Bool(true));
    expect_bad_checkpoint(load_dir(&vae), "use_quant_conv");
    patch_config(&vae, "use_quant_conv", Value::Bool(false));
    patch_config(&vae, "use_post_quant_conv", Value::Bool(true));
    expect_bad_checkpoint(load_dir(&vae), "use_post_quant_conv");
    patch_config(&vae, "use_post_quant_conv", Value::Bool(false));
    patch_config(&vae, "act_fn", Value::from("gelu"));
    expect_bad_checkpoint(load_dir(&vae), "act_fn");
    patch_config(&vae, "act_fn", Value::from("silu"));
    patch_config(&vae, "block_out_channels", Value::Null);
    expect_bad_checkpoint(load_dir(&vae), "missing field `block_out_channels`");
}

#[test]
fn weights_that_do_not_fit_the_config_are_reported() {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", "vae-layers");
    let vae = s.root.join("vae");
    // One more resnet per block than the weights hold.
    patch_config(&vae, "layers_per_block", Value::from(2));
    expect_bad_checkpoint(load_dir(&vae), "resnets.1");
}
