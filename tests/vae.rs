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
use cogvideo::models::autoencoders::{AutoencoderKLCogVideoX, Tiling, VaeRunOptions, VaeTiling};
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

/// The golden cases' explicit tiles for the tiny VAE (48x40 pixels, 6x5
/// latents, default overlaps; 2x2 tiles on 56x48 pixels / 7x6 latents).
fn tiles_48x40() -> Tiling {
    Tiling {
        tile_sample_min_height: 48,
        tile_sample_min_width: 40,
        tile_overlap_factor_height: 1.0 / 6.0,
        tile_overlap_factor_width: 0.2,
    }
}

/// Small tiles without overlap, cheap to run: 2x2 tiles on 32x32 pixels.
fn tiles_16() -> Tiling {
    Tiling {
        tile_sample_min_height: 16,
        tile_sample_min_width: 16,
        tile_overlap_factor_height: 0.0,
        tile_overlap_factor_width: 0.0,
    }
}

fn with_tiling(tiling: VaeTiling) -> VaeRunOptions {
    VaeRunOptions { tiling }
}

fn rand(shape: &[usize]) -> Tensor {
    Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// What a call reported: every `(done, total)`, and its result.
fn recorded<T>(
    call: impl FnOnce(&mut dyn FnMut(usize, usize) -> Result<(), Error>) -> Result<T, Error>,
) -> (Vec<(usize, usize)>, Result<T, Error>) {
    let mut seen = Vec::new();
    let result = call(&mut |done, total| {
        seen.push((done, total));
        Ok(())
    });
    (seen, result)
}

fn counting(total: usize) -> Vec<(usize, usize)> {
    (0..=total).map(|d| (d, total)).collect()
}

#[test]
fn progress_counts_frame_batches_tiles_and_samples() {
    let mut vae = load_vae("cogvideox-5b");
    let off = with_tiling(VaeTiling::Off);
    let tiled = with_tiling(VaeTiling::Custom(tiles_16()));
    // Decode: 2 latent frames a batch, the remainder joining the first.
    for (shape, opts, units) in [
        (vec![1, 16, 1, 2, 3], off, 1),
        (vec![1, 16, 5, 2, 3], off, 2),
        (vec![1, 16, 3, 4, 4], tiled, 4),
        (vec![1, 16, 5, 4, 3], tiled, 8),
        // Not larger than one tile: not tiled.
        (vec![1, 16, 4, 2, 2], tiled, 2),
    ] {
        let z = rand(&shape);
        let (seen, out) = recorded(|p| vae.decode_with(&z, &opts, p));
        out.unwrap();
        assert_eq!(seen, counting(units), "decode {shape:?} {opts:?}");
    }
    // Encode: 8 pixel frames a batch.
    for (shape, opts, units) in [
        (vec![1, 3, 5, 16, 24], off, 1),
        (vec![1, 3, 17, 16, 24], off, 2),
        (vec![1, 3, 9, 32, 32], tiled, 4),
        (vec![1, 3, 17, 32, 24], tiled, 8),
    ] {
        let x = rand(&shape);
        let (seen, out) = recorded(|p| vae.encode_with(&x, &opts, p));
        out.unwrap();
        assert_eq!(seen, counting(units), "encode {shape:?} {opts:?}");
    }
    // Slicing runs each sample through the network on its own.
    vae.set_slicing(true);
    let z = rand(&[2, 16, 5, 2, 3]);
    let (seen, out) = recorded(|p| vae.decode_with(&z, &off, p));
    out.unwrap();
    assert_eq!(seen, counting(4));
    vae.set_slicing(false);
    let (seen, out) = recorded(|p| vae.decode_with(&z, &off, p));
    out.unwrap();
    assert_eq!(seen, counting(2));
}

#[test]
fn progress_error_cancels_at_once() {
    let vae = load_vae("cogvideox-5b");
    let tiled = with_tiling(VaeTiling::Custom(tiles_16()));
    let z = rand(&[1, 16, 5, 4, 4]);
    let x = rand(&[1, 3, 17, 32, 32]);
    for stop_at in [0, 3] {
        let mut seen = Vec::new();
        let mut cancel = |done, total| {
            seen.push((done, total));
            if done == stop_at {
                Err(Error::Cancelled)
            } else {
                Ok(())
            }
        };
        match vae.decode_with(&z, &tiled, &mut cancel) {
            Err(Error::Cancelled) => {}
            other => panic!("decode cancelled at {stop_at}: got {other:?}"),
        }
        assert_eq!(seen, counting(8)[..=stop_at], "decode stops at {stop_at}");
        seen.clear();
        let mut cancel = |done, total| {
            seen.push((done, total));
            if done == stop_at {
                Err(Error::Cancelled)
            } else {
                Ok(())
            }
        };
        match vae.encode_with(&x, &tiled, &mut cancel) {
            Err(Error::Cancelled) => {}
            other => panic!("encode cancelled at {stop_at}: got {other:?}"),
        }
        assert_eq!(seen, counting(8)[..=stop_at], "encode stops at {stop_at}");
    }
}

#[test]
fn results_with_progress_equal_results_without() {
    let mut vae = load_vae("cogvideox-5b");
    let z = rand(&[1, 16, 3, 7, 6]);
    let x = rand(&[1, 3, 5, 56, 48]);
    let untiled = (
        values(&vae.decode(&z).unwrap()),
        values(vae.encode(&x).unwrap().mean()),
    );
    vae.set_tiling(Some(tiles_48x40())).unwrap();
    let tiled = (
        values(&vae.decode(&z).unwrap()),
        values(vae.encode(&x).unwrap().mean()),
    );
    assert_ne!(untiled.0, tiled.0, "the inputs are large enough to tile");
    let run = |opts: VaeRunOptions| {
        let mut calls = 0;
        let mut count = |_, _| {
            calls += 1;
            Ok(())
        };
        let video = values(&vae.decode_with(&z, &opts, &mut count).unwrap());
        let mean = values(vae.encode_with(&x, &opts, &mut count).unwrap().mean());
        assert!(calls > 2);
        (video, mean)
    };
    assert!(run(VaeRunOptions::default()) == tiled, "model's tiling");
    assert!(run(with_tiling(VaeTiling::Custom(tiles_48x40()))) == tiled);
    // The tiny config's default tiles are the same 48x40 pixels.
    assert!(run(with_tiling(VaeTiling::Default)) == tiled);
    assert!(
        run(with_tiling(VaeTiling::Pixels {
            height: 50,
            width: 47
        })) == tiled
    );
    assert!(
        run(with_tiling(VaeTiling::Latents {
            height: 6,
            width: 5
        })) == tiled
    );
    assert!(
        run(with_tiling(VaeTiling::Off)) == untiled,
        "off on a tiled model"
    );
}

#[test]
fn calls_on_a_shared_model_choose_their_own_tiling() {
    let vae = load_vae("cogvideox-5b");
    let z = rand(&[1, 16, 3, 7, 6]);
    let expect = |tiling| {
        values(
            &vae.decode_with(&z, &with_tiling(tiling), &mut |_, _| Ok(()))
                .unwrap(),
        )
    };
    let (off, on) = (expect(VaeTiling::Off), expect(VaeTiling::Default));
    std::thread::scope(|s| {
        let a = s.spawn(|| expect(VaeTiling::Off));
        let b = s.spawn(|| expect(VaeTiling::Default));
        assert!(a.join().unwrap() == off);
        assert!(b.join().unwrap() == on);
    });
}

#[test]
fn per_call_tile_sizes_are_checked() {
    let vae = load_vae("cogvideox-5b");
    let z = rand(&[1, 16, 2, 7, 6]);
    let decode = |tiling| vae.decode_with(&z, &with_tiling(tiling), &mut |_, _| Ok(()));
    let px = |height, width| VaeTiling::Pixels { height, width };
    let lat = |height, width| VaeTiling::Latents { height, width };
    expect_invalid(decode(px(0, 40)), "tile height 0");
    expect_invalid(
        decode(px(47, 40)),
        "smallest that lines up with the default overlap, 48",
    );
    expect_invalid(decode(px(48, 39)), "tile width 39");
    expect_invalid(decode(px(48, 1 << 20)), "16384");
    expect_invalid(decode(lat(0, 5)), "0x5 latent pixels");
    expect_invalid(decode(lat(6, usize::MAX)), "16384");
    let mut custom = tiles_48x40();
    custom.tile_sample_min_height = 0;
    expect_invalid(
        decode(VaeTiling::Custom(custom)),
        "smaller than one latent pixel",
    );
    custom.tile_sample_min_height = 1 << 20;
    expect_invalid(decode(VaeTiling::Custom(custom)), "16384");
    custom.tile_sample_min_height = 48;
    custom.tile_overlap_factor_width = f64::NAN;
    expect_invalid(
        decode(VaeTiling::Custom(custom)),
        "tile_overlap_factor_width",
    );
    // The largest tiles that line up, up to the requested size.
    assert_eq!(
        vae.resolve_tiling(&px(100, 100)).unwrap(),
        Some(Tiling {
            tile_sample_min_height: 96,
            tile_sample_min_width: 80,
            ..tiles_48x40()
        })
    );
    assert_eq!(
        vae.resolve_tiling(&lat(13, 11)).unwrap(),
        vae.resolve_tiling(&px(96, 80)).unwrap()
    );
    assert_eq!(vae.resolve_tiling(&VaeTiling::Off).unwrap(), None);
    assert_eq!(vae.resolve_tiling(&VaeTiling::Model).unwrap(), None);
}

/// diffusers places tiles `int(tile * (1 - overlap))` apart but keeps
/// `tile - int(tile * overlap)` rows of each; where the two differ its output
/// has the wrong size, with rows repeated. Such tiles are refused.
#[test]
fn tiles_that_do_not_line_up_are_refused() {
    let mut vae = load_vae("cogvideox-5b");
    let mut t = tiles_48x40();
    t.tile_sample_min_height = 56;
    expect_invalid(
        vae.set_tiling(Some(t)),
        "nearest sizes that line up: 48 and 96",
    );
    let z = rand(&[1, 16, 2, 14, 6]);
    expect_invalid(
        vae.decode_with(&z, &with_tiling(VaeTiling::Custom(t)), &mut |_, _| Ok(())),
        "tile_sample_min_height 56",
    );
    // Tiles that line up give the untiled output's size.
    vae.set_tiling(Some(tiles_48x40())).unwrap();
    assert_eq!(vae.decode(&z).unwrap().dims(), [1, 3, 8, 112, 48]);
}

/// A buffer the VAE cannot allocate is an `OutOfMemory` error, not an abort
/// of the process: a child process decodes with its address space limited.
#[test]
fn allocation_failure_is_an_error() {
    const CHILD: &str = "COGVIDEO_TEST_VAE_OOM_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let vae = load_vae("cogvideox-5b");
        // Warm up thread pools and GEMM buffers before the limit.
        vae.decode(&rand(&[1, 16, 2, 16, 16])).unwrap();
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let vm_kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap();
        // 256 MiB more address space; the decode below needs gigabytes.
        let limit = (vm_kb << 10) + (256 << 20);
        let rl = libc::rlimit {
            rlim_cur: limit,
            rlim_max: limit,
        };
        // SAFETY: setrlimit reads the struct it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_AS, &rl) }, 0);
        match vae.decode(&zeros(&[1, 16, 2, 160, 160])) {
            Err(Error::OutOfMemory(msg)) => {
                assert!(msg.contains("bytes"), "{msg}");
                println!("child: {msg}");
            }
            other => panic!(
                "expected OutOfMemory, got {:?}",
                other.map(|t| t.dims().to_vec())
            ),
        }
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "allocation_failure_is_an_error", "--nocapture"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "child failed ({}):\n{text}",
        out.status
    );
    assert!(text.contains("child: cannot allocate"), "{text}");
}
