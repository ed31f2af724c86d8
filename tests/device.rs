//! Device selection (Rust and C APIs) and parity on the device the
//! environment names: `COGVIDEO_TEST_DEVICE=cpu` (default) or `cuda` /
//! `cuda:N` (a `cuda` build on a GPU machine; `scripts/gpu/run.sh` runs it
//! so). `COGVIDEO_TEST_EXPECT_CUDNN=1` also requires the fused cuDNN
//! attention to be in use on a GPU.
//!
//! Tolerances, max abs error <= tol x max(1, max|reference|):
//! - f32 against diffusers f32: 1e-4 on the CPU (as `pipelines.rs`), 1e-3 on
//!   a GPU (cuBLAS and cuDNN sum in other orders than the CPU; a real bug
//!   moves results by O(scale));
//! - the transformer in bf16 against diffusers bf16: 2e-2 on the CPU (as
//!   `transformer.rs`), 3e-2 on a GPU (cuBLAS accumulates bf16 products in
//!   f32, torch's CPU kernels round in other places);
//! - whole pipelines in bf16 against diffusers f32 (a few sampling steps,
//!   each feeding bf16 rounding into the next): 1e-1 (measured on the CPU:
//!   0.8%, 1.8% and 2.4% of scale for text-to-video, image-to-video and
//!   the edit);
//! - attention in bf16 (cuDNN or chunked) against f32 attention of the same
//!   bf16 inputs: 1e-2 (bf16's step is 2^-8 of the output's scale).

mod common;

use std::collections::HashMap;
use std::ffi::{CStr, CString, c_char};
use std::ptr::{null, null_mut};

use candle_core::{DType, Device, Tensor};
use cogvideo::checkpoint::Checkpoint;
use cogvideo::ffi::cogvideo_status::*;
use cogvideo::ffi::*;
use cogvideo::frames::{FrameRef, PixelFormat, ResizeMode, frames_to_video};
use cogvideo::models::attention::scaled_dot_product_attention;
use cogvideo::models::transformers::CogVideoXTransformer3DModel;
use cogvideo::pipelines::{
    AnimateOptions, DeviceKind, EditOptions, GenerateOptions, InvertOptions, LoadOptions,
    NoiseOptions, Pipeline, Progress, Residency, SamplingOptions, SchedulerKind,
};
use common::{assert_close, load_json, load_tensors, tiny};

/// The device `COGVIDEO_TEST_DEVICE` names.
fn test_device() -> DeviceKind {
    let name = std::env::var("COGVIDEO_TEST_DEVICE").unwrap_or_default();
    match name.trim() {
        "" | "cpu" => DeviceKind::Cpu,
        "cuda" => DeviceKind::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse) {
            Some(Ok(i)) => DeviceKind::Cuda(i),
            _ => panic!("COGVIDEO_TEST_DEVICE={other:?}: use cpu, cuda or cuda:N"),
        },
    }
}

fn on_gpu() -> bool {
    test_device() != DeviceKind::Cpu
}

fn open(kind: DeviceKind) -> Device {
    match kind {
        DeviceKind::Cuda(i) => Device::new_cuda(i).expect("the test device opens"),
        _ => Device::Cpu,
    }
}

fn load(variant: &str, dtype: DType) -> Pipeline {
    let opts = LoadOptions {
        device: test_device(),
        dtype: Some(dtype),
        ..Default::default()
    };
    Pipeline::load(tiny(variant), &opts).unwrap()
}

fn expect_cudnn() -> bool {
    std::env::var("COGVIDEO_TEST_EXPECT_CUDNN").is_ok_and(|v| v == "1")
}

#[test]
fn automatic_device_and_dtype() {
    let p = Pipeline::load(tiny("cogvideox-5b"), &LoadOptions::default()).unwrap();
    let description = p.attention_backend();
    println!(
        "default load: {:?}, {:?}, attention: {description}",
        p.device(),
        p.dtype()
    );
    if cfg!(feature = "cuda") && on_gpu() {
        assert!(p.device().is_cuda(), "a GPU is used when there is one");
        assert_eq!(p.dtype(), DType::BF16);
        if expect_cudnn() {
            assert!(description.starts_with("cuDNN 9."), "{description}");
        }
    } else if !cfg!(feature = "cuda") {
        assert!(p.device().is_cpu());
        assert_eq!(p.dtype(), DType::F32);
        assert_eq!(description, "fused CPU kernel (f32)");
    }
    // An explicit dtype wins over the device's default.
    let bf16 = Pipeline::load(
        tiny("cogvideox-5b"),
        &LoadOptions {
            device: DeviceKind::Cpu,
            dtype: Some(DType::BF16),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(bf16.device().is_cpu());
    assert_eq!(bf16.dtype(), DType::BF16);
    assert!(
        bf16.attention_backend().starts_with("chunked ("),
        "{}",
        bf16.attention_backend()
    );
}

#[test]
fn cuda_without_the_cuda_build_is_a_clear_error() {
    if cfg!(feature = "cuda") {
        return;
    }
    let opts = LoadOptions {
        device: DeviceKind::Cuda(0),
        ..Default::default()
    };
    let err = Pipeline::load(tiny("cogvideox-5b"), &opts)
        .err()
        .expect("no CUDA in this build");
    let msg = err.to_string();
    assert!(matches!(err, cogvideo::Error::Device(_)), "{msg}");
    assert!(msg.contains("built without CUDA support"), "{msg}");
    assert!(!msg.contains('\n'), "{msg}");
}

fn last_error() -> String {
    unsafe { CStr::from_ptr(cogvideo_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn c_api_device_options_and_queries() {
    let mut o = unsafe { std::mem::zeroed::<cogvideo_load_options>() };
    unsafe { cogvideo_load_options_init_sized(&mut o, std::mem::size_of_val(&o)) };
    assert_eq!(o.device, COGVIDEO_DEVICE_AUTO);
    assert_eq!(o.dtype, COGVIDEO_DTYPE_AUTO);
    assert_eq!(cogvideo_abi_version(), COGVIDEO_ABI_VERSION);

    let ckpt = CString::new(tiny("cogvideox-5b").to_str().unwrap()).unwrap();
    let mut p = null_mut();
    assert_eq!(
        unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) },
        COGVIDEO_OK,
        "{}",
        last_error()
    );
    let (mut device, mut index, mut dtype) = (99u32, -1i32, 99u32);
    let st = unsafe { cogvideo_pipeline_device(p, &mut device, &mut index, &mut dtype) };
    assert_eq!(st, COGVIDEO_OK, "{}", last_error());
    if cfg!(feature = "cuda") && on_gpu() {
        assert_eq!((device, dtype), (COGVIDEO_DEVICE_CUDA, COGVIDEO_DTYPE_BF16));
    } else if !cfg!(feature = "cuda") {
        assert_eq!(
            (device, index, dtype),
            (COGVIDEO_DEVICE_CPU, 0, COGVIDEO_DTYPE_F32)
        );
    }
    // NULL out pointers are allowed.
    let st = unsafe { cogvideo_pipeline_device(p, null_mut(), null_mut(), null_mut()) };
    assert_eq!(st, COGVIDEO_OK);

    // The attention description: its length, then truncated and whole.
    let mut needed = 0usize;
    let st = unsafe { cogvideo_pipeline_attention(p, null_mut(), 0, &mut needed) };
    assert_eq!(st, COGVIDEO_OK, "{}", last_error());
    assert!(needed > 5);
    let mut small = [1 as c_char; 6];
    let st = unsafe { cogvideo_pipeline_attention(p, small.as_mut_ptr(), 6, null_mut()) };
    assert_eq!(st, COGVIDEO_OK);
    let text = unsafe { CStr::from_ptr(small.as_ptr()) }.to_str().unwrap();
    assert_eq!(text.len(), 5);
    let mut buf = vec![1 as c_char; needed + 1];
    let st = unsafe { cogvideo_pipeline_attention(p, buf.as_mut_ptr(), buf.len(), null_mut()) };
    assert_eq!(st, COGVIDEO_OK);
    let whole = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap();
    assert_eq!(whole.len(), needed);
    assert!(whole.starts_with(text), "{whole:?} / {text:?}");
    println!("C API attention: {whole}");
    let st = unsafe { cogvideo_pipeline_attention(p, null_mut(), 4, null_mut()) };
    assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("buf is NULL"), "{}", last_error());
    let st = unsafe { cogvideo_pipeline_attention(null(), buf.as_mut_ptr(), 4, null_mut()) };
    assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT);
    let st = unsafe { cogvideo_pipeline_device(null(), &mut device, null_mut(), null_mut()) };
    assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT);
    unsafe { cogvideo_pipeline_free(p) };

    // An explicit dtype wins; the CPU is always there.
    o.device = COGVIDEO_DEVICE_CPU;
    o.dtype = COGVIDEO_DTYPE_BF16;
    let mut p = null_mut();
    assert_eq!(
        unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) },
        COGVIDEO_OK
    );
    let st = unsafe { cogvideo_pipeline_device(p, &mut device, &mut index, &mut dtype) };
    assert_eq!(st, COGVIDEO_OK);
    assert_eq!(
        (device, index, dtype),
        (COGVIDEO_DEVICE_CPU, 0, COGVIDEO_DTYPE_BF16)
    );
    unsafe { cogvideo_pipeline_free(p) };

    for (device, dtype, needle) in [(7, COGVIDEO_DTYPE_AUTO, "_AUTO (2)"), (0, 9, "_AUTO (3)")] {
        o.device = device;
        o.dtype = dtype;
        let mut p = null_mut();
        let st = unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) };
        assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT);
        assert!(last_error().contains(needle), "{}", last_error());
        assert!(p.is_null());
    }
    if !cfg!(feature = "cuda") {
        o.device = COGVIDEO_DEVICE_CUDA;
        o.dtype = COGVIDEO_DTYPE_AUTO;
        let st = unsafe { cogvideo_load_pipeline(ckpt.as_ptr(), &o, &mut p) };
        assert_eq!(st, COGVIDEO_ERR_DEVICE);
        assert!(
            last_error().contains("built without CUDA support"),
            "{}",
            last_error()
        );
    }
}

/// softmax(q k^T s) v in f32 by plain candle ops, as the reference.
fn reference_attention(q: &Tensor, k: &Tensor, v: &Tensor, scale: f64) -> Tensor {
    let f = |t: &Tensor| t.to_dtype(DType::F32).unwrap().transpose(1, 2).unwrap();
    let (q, k, v) = (f(q), f(k), f(v));
    let scores = (q.contiguous().unwrap())
        .matmul(&k.t().unwrap().contiguous().unwrap())
        .unwrap();
    let probs = candle_nn::ops::softmax_last_dim(&(scores * scale).unwrap()).unwrap();
    probs
        .matmul(&v.contiguous().unwrap())
        .unwrap()
        .transpose(1, 2)
        .unwrap()
}

/// The attention entry point in bf16, with one key segment and with two
/// (editing's reference attention), at the tiny models' head size and
/// CogVideoX's, against f32 attention of the same inputs.
#[test]
fn bf16_attention_matches_f32_on_the_test_device() {
    let dev = open(test_device());
    println!(
        "attention on {dev:?} bf16: {}",
        cogvideo::models::attention::backend_description(&dev, DType::BF16)
    );
    for (b, h, sq, sk, d) in [(2, 2, 131, 131, 16), (1, 3, 300, 517, 64)] {
        let r = |s: usize, scale: f64| {
            (Tensor::randn(0f32, 1.0, (b, s, h, d), &Device::Cpu).unwrap() * scale)
                .unwrap()
                .to_dtype(DType::BF16)
                .unwrap()
                .to_device(&dev)
                .unwrap()
        };
        let (q, k, v) = (r(sq, 2.0), r(sk, 1.0), r(sk, 1.0));
        let (k2, v2) = (r(37, 1.0), r(37, 1.0));
        let scale = 1.0 / (d as f64).sqrt();
        let one = scaled_dot_product_attention(&q, &[(&k, &v)], scale).unwrap();
        assert_eq!(one.dtype(), DType::BF16);
        let want = reference_attention(&q, &k, &v, scale);
        assert_close(&format!("attention {sq}x{sk} d{d}"), &one, &want, 1e-2);
        let two = scaled_dot_product_attention(&q, &[(&k, &v), (&k2, &v2)], scale).unwrap();
        let kk = Tensor::cat(&[&k, &k2], 1).unwrap();
        let vv = Tensor::cat(&[&v, &v2], 1).unwrap();
        let want = reference_attention(&q, &kk, &vv, scale);
        assert_close(&format!("attention {sq}x{sk}+37 d{d}"), &two, &want, 1e-2);
    }
    if on_gpu() && expect_cudnn() {
        let text = cogvideo::models::attention::backend_description(&dev, DType::BF16);
        assert!(
            text.starts_with("cuDNN") && !text.contains("refused"),
            "{text}"
        );
    }
}

/// Streamed residency reads each block on a background thread while the
/// previous one runs; on a GPU that thread has a stream of its own and must
/// finish its uploads before the block runs (`models/layers.rs`). Its
/// latents are those of resident weights.
#[test]
fn streamed_residency_matches_resident_on_the_test_device() {
    let run = |residency| {
        let opts = LoadOptions {
            device: test_device(),
            dtype: Some(DType::BF16),
            residency,
            ..Default::default()
        };
        let p = Pipeline::load(tiny("cogvideox-5b"), &opts).unwrap();
        assert_eq!(p.residency(), residency);
        let opts = GenerateOptions {
            sampling: SamplingOptions {
                prompt: "a fox".into(),
                steps: 2,
                ..Default::default()
            },
            height: Some(64),
            width: Some(96),
            num_frames: Some(9),
        };
        p.generate_latents(&opts, &mut Progress::none()).unwrap()
    };
    let resident = run(Residency::Resident);
    let streamed = run(Residency::Streamed);
    assert_close("streamed against resident", &streamed, &resident, 1e-3);
}

#[test]
fn transformer_matches_diffusers_on_the_test_device() {
    let dev = open(test_device());
    let cases = load_json("transformer_cases.json");
    for case in cases["cases"].as_array().unwrap() {
        let variant = case["variant"].as_str().unwrap();
        let bf16 = case["dtype"].as_str() == Some("bf16");
        let label = format!("{variant}/{} on {dev:?}", case["case"].as_str().unwrap());
        let t = load_tensors(case["file"].as_str().unwrap());
        let ckpt = Checkpoint::open(tiny(variant)).unwrap();
        let dtype = if bf16 { DType::BF16 } else { DType::F32 };
        let model = CogVideoXTransformer3DModel::from_checkpoint(&ckpt, dtype, &dev).unwrap();
        let on = |name: &str| t[name].to_device(&dev).unwrap();
        let hidden = on("hidden_states");
        let (_, f, _, h, w) = hidden.dims5().unwrap();
        let tables = model.rotary_tables(h, w, f).unwrap();
        let rope = model.prepare_rotary(tables.as_ref()).unwrap();
        let timesteps: Vec<f32> = t["timestep"]
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        let ofs = t
            .get("ofs")
            .map(|o| o.to_dtype(DType::F32).unwrap().to_vec1::<f32>().unwrap()[0]);
        let out = model
            .forward(
                &hidden,
                &on("encoder_hidden_states"),
                &timesteps,
                ofs,
                rope.as_ref(),
            )
            .unwrap();
        let tol = match (bf16, on_gpu()) {
            (false, false) => 1e-4,
            (false, true) => 1e-3,
            (true, false) => 2e-2,
            (true, true) => 3e-2,
        };
        assert_close(&label, &out, &t["output"], tol);
    }
}

fn usize_of(v: &serde_json::Value) -> usize {
    v.as_u64().unwrap() as usize
}

/// Supplied noise: `first`, then every DPM step draw.
fn draws(g: &HashMap<String, Tensor>, first: &[&str]) -> NoiseOptions {
    let mut list: Vec<Tensor> = first.iter().map(|k| g[*k].clone()).collect();
    let mut i = 0;
    while let Some(t) = g.get(&format!("dpm_noise_{i}")) {
        list.push(t.clone());
        i += 1;
    }
    NoiseOptions::with_draws(0, &list).unwrap()
}

/// Golden `[T, H, W, 3]` u8 frames as a `[1, 3, T, H, W]` video on `dev`.
fn video_from_u8(t: &Tensor, dev: &Device) -> Tensor {
    let (n, h, w, _) = t.dims4().unwrap();
    let bytes: Vec<u8> = t.flatten_all().unwrap().to_vec1().unwrap();
    let frames: Vec<FrameRef> = bytes
        .chunks_exact(h * w * 3)
        .map(|b| FrameRef::packed(b, w, h, PixelFormat::Rgb8).unwrap())
        .collect();
    assert_eq!(frames.len(), n);
    frames_to_video(&frames, h, w, ResizeMode::Stretch, dev).unwrap()
}

/// Text-to-video, image-to-video and an edit (inversion and reference
/// attention) on the test device, in f32 and in bf16, against diffusers f32.
#[test]
fn pipelines_match_diffusers_on_the_test_device() {
    let cases = load_json("pipeline_cases.json");
    let wanted = ["pipeline_t2v_5b_dpm", "pipeline_i2v_5b", "pipeline_edit_5b"];
    for dtype in [DType::F32, DType::BF16] {
        let tol = match (dtype, on_gpu()) {
            (DType::F32, false) => 1e-4,
            (DType::F32, true) => 1e-3,
            _ => 1e-1,
        };
        let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
        for case in cases["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            if !wanted.contains(&name) {
                continue;
            }
            let variant = case["variant"].as_str().unwrap();
            let p = pipelines
                .entry(variant.to_string())
                .or_insert_with(|| load(variant, dtype));
            let g = load_tensors(case["file"].as_str().unwrap());
            let label = format!("{name} {dtype:?} on {:?}", p.device());
            let sampling = |noise| SamplingOptions {
                prompt: case["prompt"].as_str().unwrap().to_string(),
                negative_prompt: String::new(),
                steps: usize_of(&case["steps"]),
                guidance_scale: case["guidance_scale"].as_f64().unwrap(),
                dynamic_cfg: case["use_dynamic_cfg"].as_bool().unwrap(),
                scheduler: match case["scheduler"].as_str() {
                    Some("CogVideoXDDIMScheduler") => SchedulerKind::Ddim,
                    _ => SchedulerKind::Dpm,
                },
                noise,
                ..Default::default()
            };
            let mut progress = Progress::none();
            let latents = match case["kind"].as_str().unwrap() {
                "t2v" => {
                    let opts = GenerateOptions {
                        sampling: sampling(draws(&g, &["latents_init"])),
                        height: Some(usize_of(&case["height"])),
                        width: Some(usize_of(&case["width"])),
                        num_frames: Some(usize_of(&case["num_frames"])),
                    };
                    p.generate_video(&opts, &mut progress).unwrap().latents
                }
                "i2v" => {
                    let image = video_from_u8(&g["image_u8"].unsqueeze(0).unwrap(), p.device())
                        .squeeze(2)
                        .unwrap();
                    let opts = AnimateOptions {
                        sampling: sampling(draws(&g, &["posterior_noise", "latents_init"])),
                        num_frames: usize_of(&case["num_frames"]),
                    };
                    p.animate_image(&image, &opts, &mut progress)
                        .unwrap()
                        .latents
                }
                _ => {
                    let video = video_from_u8(&g["frames_u8"], p.device());
                    let inv_opts = InvertOptions {
                        steps: usize_of(&case["steps"]),
                        noise: NoiseOptions::with_draws(0, &[g["posterior_noise"].clone()])
                            .unwrap(),
                        ..Default::default()
                    };
                    let inversion = p.invert_video(&video, &inv_opts, &mut progress).unwrap();
                    let opts = EditOptions {
                        prompt: case["prompt"].as_str().unwrap().to_string(),
                        guidance_scale: case["guidance_scale"].as_f64().unwrap(),
                        noise: NoiseOptions::with_draws(0, &[g["recon_noise"].clone()]).unwrap(),
                        ..Default::default()
                    };
                    p.edit_with_prompt(&inversion, &opts, &mut progress)
                        .unwrap()
                        .latents
                }
            };
            let latents = latents.to_device(&Device::Cpu).unwrap();
            assert_close(&label, &latents, &g["latents_final"], tol);
        }
        assert_eq!(pipelines.len(), 2, "5b and 5b-i2v loaded");
    }
}
