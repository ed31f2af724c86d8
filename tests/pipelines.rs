//! End-to-end parity of the pipelines with diffusers (text-to-video,
//! image-to-video) and the CogVideo DDIM-inversion script (inversion and
//! prompt editing) on the tiny checkpoints, with the reference's noise
//! injected (tests/data/golden/pipeline_cases.json).
//!
//! Tolerances: latents (inversion trajectory, final latents) 1e-4 x
//! max(1, scale), as for single components: the loop chains a few f32
//! forwards, each matching to ~1e-6. Decoded 8-bit frames may differ by one
//! level where a value sits on a rounding boundary.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use cogvideo::frames::{
    FrameMut, FrameRef, PixelFormat, ResizeMode, frames_to_video, video_to_frames,
};
use cogvideo::pipelines::{
    AnimateOptions, DecodeOptions, DeviceKind, EditOptions, GenerateOptions, InvertOptions,
    LoadOptions, NoiseOptions, Pipeline, Progress, SamplingOptions, SchedulerKind, VideoOutput,
    VideoToVideoOptions,
};
use common::{assert_close, load_json, load_tensors, tiny};

/// The goldens are diffusers' f32 numbers: the pipelines run on the CPU in
/// f32 even in a `cuda` build on a GPU machine, where the default would
/// pick the GPU in bf16 (tests/device.rs covers that).
fn cpu_f32() -> LoadOptions {
    LoadOptions {
        device: DeviceKind::Cpu,
        ..Default::default()
    }
}

fn u8_bytes(t: &Tensor) -> Vec<u8> {
    t.to_dtype(DType::U8)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<u8>()
        .unwrap()
}

/// Golden `[T, H, W, 3]` u8 frames as a `[1, 3, T, H, W]` model video.
fn video_from_u8(t: &Tensor) -> Tensor {
    let (n, h, w, _) = t.dims4().unwrap();
    let bytes = u8_bytes(t);
    let frames: Vec<FrameRef> = bytes
        .chunks_exact(h * w * 3)
        .map(|b| FrameRef::packed(b, w, h, PixelFormat::Rgb8).unwrap())
        .collect();
    assert_eq!(frames.len(), n);
    frames_to_video(&frames, h, w, ResizeMode::Stretch, &Device::Cpu).unwrap()
}

fn check_output(label: &str, out: &VideoOutput, g: &HashMap<String, Tensor>, pad: usize) {
    let want = &g["latents_final"];
    let f = want.dim(1).unwrap();
    assert_close(
        &format!("{label} latents"),
        &out.latents,
        &want.narrow(1, pad, f - pad).unwrap(),
        1e-4,
    );
    let want_u8 = &g["video_u8"];
    let (t, h, w, _) = want_u8.dims4().unwrap();
    assert_eq!(
        out.video.dims(),
        &[1, 3, t, h, w],
        "{label}: decoded video shape"
    );
    let mut bytes = vec![0u8; t * h * w * 3];
    {
        let mut frames: Vec<FrameMut> = bytes
            .chunks_exact_mut(h * w * 3)
            .map(|b| FrameMut::packed(b, w, h, PixelFormat::Rgb8).unwrap())
            .collect();
        video_to_frames(&out.video, &mut frames, ResizeMode::Stretch).unwrap();
    }
    let want = u8_bytes(want_u8);
    let worst = bytes
        .iter()
        .zip(&want)
        .map(|(a, b)| a.abs_diff(*b))
        .max()
        .unwrap();
    let off = bytes.iter().zip(&want).filter(|(a, b)| a != b).count();
    println!(
        "{label} frames: max 8-bit difference {worst}, {off} of {} values differ",
        want.len()
    );
    assert!(worst <= 1, "{label}: 8-bit frames differ by {worst}");
}

fn draws(g: &HashMap<String, Tensor>, first: &[&str]) -> NoiseOptions {
    let mut list: Vec<Tensor> = first.iter().map(|k| g[*k].clone()).collect();
    let mut i = 0;
    while let Some(t) = g.get(&format!("dpm_noise_{i}")) {
        list.push(t.clone());
        i += 1;
    }
    NoiseOptions::with_draws(0, &list).unwrap()
}

fn scheduler(case: &serde_json::Value) -> SchedulerKind {
    match case["scheduler"].as_str().unwrap() {
        "CogVideoXDPMScheduler" => SchedulerKind::Dpm,
        "CogVideoXDDIMScheduler" => SchedulerKind::Ddim,
        other => panic!("unexpected scheduler {other}"),
    }
}

fn usize_of(v: &serde_json::Value) -> usize {
    v.as_u64().unwrap() as usize
}

#[test]
fn pipelines_match_the_reference() {
    let cases = load_json("pipeline_cases.json");
    let cases = cases["cases"].as_array().unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let variant = case["variant"].as_str().unwrap();
        let kind = case["kind"].as_str().unwrap();
        kinds.insert(kind.to_string());
        let g = load_tensors(case["file"].as_str().unwrap());
        let p = pipelines
            .entry(variant.to_string())
            .or_insert_with(|| Pipeline::load(tiny(variant), &cpu_f32()).unwrap());
        let pad = usize_of(&case["padding_frames"]);
        let prompt = case["prompt"].as_str().unwrap().to_string();
        let steps = usize_of(&case["steps"]);
        let guidance_scale = case["guidance_scale"].as_f64().unwrap();
        let dynamic_cfg = case["use_dynamic_cfg"].as_bool().unwrap();
        let mut progress = Progress::none();
        match kind {
            "t2v" => {
                let opts = GenerateOptions {
                    sampling: SamplingOptions {
                        prompt,
                        negative_prompt: String::new(),
                        steps,
                        guidance_scale,
                        dynamic_cfg,
                        scheduler: scheduler(case),
                        noise: draws(&g, &["latents_init"]),
                        ..Default::default()
                    },
                    height: Some(usize_of(&case["height"])),
                    width: Some(usize_of(&case["width"])),
                    num_frames: Some(usize_of(&case["num_frames"])),
                };
                let out = p.generate_video(&opts, &mut progress).unwrap();
                check_output(name, &out, &g, pad);
            }
            "i2v" => {
                let image = video_from_u8(&g["image_u8"].unsqueeze(0).unwrap())
                    .squeeze(2)
                    .unwrap();
                assert_close(&format!("{name} image"), &image, &g["image_tensor"], 1e-6);
                let opts = AnimateOptions {
                    sampling: SamplingOptions {
                        prompt,
                        negative_prompt: String::new(),
                        steps,
                        guidance_scale,
                        dynamic_cfg,
                        scheduler: scheduler(case),
                        noise: draws(&g, &["posterior_noise", "latents_init"]),
                        ..Default::default()
                    },
                    num_frames: usize_of(&case["num_frames"]),
                };
                let out = p.animate_image(&image, &opts, &mut progress).unwrap();
                check_output(name, &out, &g, pad);
            }
            "edit" => {
                let video = video_from_u8(&g["frames_u8"]);
                let inv_opts = InvertOptions {
                    steps,
                    noise: NoiseOptions::with_draws(0, &[g["posterior_noise"].clone()]).unwrap(),
                    ..Default::default()
                };
                let inversion = p.invert_video(&video, &inv_opts, &mut progress).unwrap();
                let want = &g["inverse_trajectory"];
                for (i, got) in inversion.trajectory().iter().enumerate() {
                    let w = want.get(i).unwrap();
                    assert_close(&format!("{name} inversion step {i}"), got, &w, 1e-4);
                }
                let from_inverted = case["reconstruction_start"]
                    .as_str()
                    .unwrap()
                    .contains("inverse_trajectory");
                let noise = if from_inverted {
                    NoiseOptions::seed(0)
                } else {
                    NoiseOptions::with_draws(0, &[g["recon_noise"].clone()]).unwrap()
                };
                let opts = EditOptions {
                    prompt,
                    negative_prompt: String::new(),
                    guidance_scale,
                    start_from_inverted: from_inverted,
                    noise,
                    ..Default::default()
                };
                let out = p
                    .edit_with_prompt(&inversion, &opts, &mut progress)
                    .unwrap();
                check_output(name, &out, &g, pad);
            }
            other => panic!("unknown kind {other}"),
        }
    }
    assert_eq!(kinds.len(), 3, "t2v, i2v and edit covered: {kinds:?}");
}

#[test]
fn wrong_variant_for_the_call_is_refused() {
    let t2v = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let image = Tensor::zeros((1, 3, 64, 96), DType::F32, &Device::Cpu).unwrap();
    let err = t2v
        .animate_image(&image, &AnimateOptions::default(), &mut Progress::none())
        .unwrap_err();
    assert!(
        matches!(err, cogvideo::Error::UnsupportedVariant(_)),
        "{err}"
    );

    let sincos = Pipeline::load(tiny("cogvideox-2b"), &cpu_f32()).unwrap();
    let video = Tensor::zeros((1, 3, 9, 64, 96), DType::F32, &Device::Cpu).unwrap();
    let err = sincos
        .invert_video(&video, &InvertOptions::default(), &mut Progress::none())
        .unwrap_err();
    assert!(
        matches!(err, cogvideo::Error::UnsupportedVariant(_)),
        "{err}"
    );
    assert!(err.to_string().contains("rotary"), "{err}");

    let i2v = Pipeline::load(tiny("cogvideox-5b-i2v"), &cpu_f32()).unwrap();
    let err = i2v
        .generate_video(&GenerateOptions::default(), &mut Progress::none())
        .unwrap_err();
    assert!(
        matches!(err, cogvideo::Error::UnsupportedVariant(_)),
        "{err}"
    );
}

#[test]
fn bad_sizes_and_frame_counts_are_errors() {
    let p = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let run = |h, w, f| {
        let opts = GenerateOptions {
            sampling: SamplingOptions {
                steps: 1,
                ..Default::default()
            },
            height: Some(h),
            width: Some(w),
            num_frames: Some(f),
        };
        p.generate_video(&opts, &mut Progress::none())
            .unwrap_err()
            .to_string()
    };
    assert!(run(64, 96, 8).contains("4k+1"));
    assert!(run(64, 90, 9).contains("multiples of 16"));
    assert!(run(0, 96, 9).contains("outside"));
    assert!(run(1 << 20, 96, 9).contains("outside"));
}

#[test]
fn cancelling_stops_the_call_and_keeps_the_pipeline_usable() {
    let p = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let opts = GenerateOptions {
        sampling: SamplingOptions {
            prompt: "a fox".into(),
            steps: 4,
            ..Default::default()
        },
        height: Some(64),
        width: Some(96),
        num_frames: Some(9),
    };
    let mut seen = Vec::new();
    let mut cb = |stage, done, total| {
        seen.push((stage, done, total));
        !(stage == cogvideo::pipelines::Stage::Denoise && done == 2)
    };
    let err = p
        .generate_video(&opts, &mut Progress::new(&mut cb))
        .unwrap_err();
    assert!(matches!(err, cogvideo::Error::Cancelled), "{err}");
    assert!(
        seen.contains(&(cogvideo::pipelines::Stage::Denoise, 2, 4)),
        "{seen:?}"
    );
    let a = p.generate_video(&opts, &mut Progress::none()).unwrap();
    let b = p.generate_video(&opts, &mut Progress::none()).unwrap();
    assert_eq!(
        (a.video - b.video)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap(),
        0.0,
        "same seed, same video"
    );
}

/// diffusers' `CogVideoXVideoToVideoPipeline` on the tiny checkpoints
/// (tests/data/golden/pipeline_v2v_cases.json): partial schedules by
/// strength, DPM and DDIM, CogVideoX 1.0 and 1.5.
#[test]
fn video_to_video_matches_the_reference() {
    let cases = load_json("pipeline_v2v_cases.json");
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 4, "{} cases", cases.len());
    let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let variant = case["variant"].as_str().unwrap();
        let g = load_tensors(case["file"].as_str().unwrap());
        let p = pipelines
            .entry(variant.to_string())
            .or_insert_with(|| Pipeline::load(tiny(variant), &cpu_f32()).unwrap());
        let opts = VideoToVideoOptions {
            sampling: SamplingOptions {
                prompt: case["prompt"].as_str().unwrap().to_string(),
                negative_prompt: case["negative_prompt"].as_str().unwrap().to_string(),
                steps: usize_of(&case["steps"]),
                guidance_scale: case["guidance_scale"].as_f64().unwrap(),
                dynamic_cfg: case["use_dynamic_cfg"].as_bool().unwrap(),
                scheduler: scheduler(case),
                noise: draws(&g, &["posterior_noise", "noise"]),
                ..Default::default()
            },
            strength: case["strength"].as_f64().unwrap(),
        };
        let video = video_from_u8(&g["frames_u8"]);
        let plan = p
            .noise_plan_video_to_video(64, 96, usize_of(&case["num_frames"]), &opts)
            .unwrap();
        assert_eq!(
            plan.total(),
            opts.sampling.noise.supplied.len(),
            "{name}: the plan names every draw the reference made"
        );
        let out = p
            .video_to_video(&video, &opts, &mut Progress::none())
            .unwrap();
        check_output(name, &out, &g, 0);
    }
}

fn tiny_generate(steps: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: SamplingOptions {
            prompt: "a fox".into(),
            steps,
            ..Default::default()
        },
        height: Some(64),
        width: Some(96),
        num_frames: Some(9),
    }
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    common::max_abs_diff(a, b).0
}

#[test]
fn latents_decode_to_the_same_video_and_noise_is_checked_against_the_plan() {
    let p = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let opts = tiny_generate(4);
    let out = p.generate_video(&opts, &mut Progress::none()).unwrap();
    let latents = p.generate_latents(&opts, &mut Progress::none()).unwrap();
    assert_eq!(latents.dims(), p.latent_shape(64, 96, 9).unwrap());
    assert_eq!(max_diff(&latents, &out.latents), 0.0);
    let video = p
        .decode_latents(&latents, &DecodeOptions::default(), &mut Progress::none())
        .unwrap();
    assert_eq!(max_diff(&video, &out.video), 0.0);

    // DPM with 4 steps: initial latents and 3 re-noising steps.
    let plan = p.noise_plan_generate(&opts).unwrap();
    let one = 3 * 16 * 8 * 12;
    assert_eq!(plan.draws.len(), 4, "{plan:?}");
    assert_eq!(plan.total(), 4 * one);
    for bad in [1, one - 1, one + 1, 5 * one] {
        let mut o = opts.clone();
        o.sampling.noise = NoiseOptions {
            seed: 0,
            supplied: vec![0.0; bad],
        };
        let err = p.generate_video(&o, &mut Progress::none()).unwrap_err();
        assert!(matches!(err, cogvideo::Error::InvalidArgument(_)), "{err}");
        assert!(err.to_string().contains(&format!("{}", 4 * one)), "{err}");
    }
    for good in [one, 2 * one, 4 * one] {
        let mut o = opts.clone();
        o.sampling.noise = NoiseOptions {
            seed: 0,
            supplied: vec![0.5; good],
        };
        p.generate_latents(&o, &mut Progress::none()).unwrap();
    }
}

#[test]
fn edit_strength_spans_the_source_clip_to_the_full_edit() {
    let p = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let source = p
        .generate_video(&tiny_generate(2), &mut Progress::none())
        .unwrap()
        .video;
    let inv_opts = InvertOptions {
        steps: 4,
        posterior_mean: true,
        ..Default::default()
    };
    let inversion = p
        .invert_video(&source, &inv_opts, &mut Progress::none())
        .unwrap();
    let again = p
        .invert_video(&source, &inv_opts, &mut Progress::none())
        .unwrap();
    assert_eq!(
        max_diff(inversion.source_latents(), again.source_latents()),
        0.0,
        "the posterior mean is deterministic"
    );
    let edit = |strength: f64| EditOptions {
        prompt: "a wolf".into(),
        strength,
        ..Default::default()
    };
    let decoded = p
        .decode_inversion(&inversion, &DecodeOptions::default(), &mut Progress::none())
        .unwrap();
    // 4 steps x 0.2 runs no step: the source clip as the model sees it.
    let tiny = p
        .edit_with_prompt(&inversion, &edit(0.2), &mut Progress::none())
        .unwrap();
    assert_eq!(max_diff(&tiny.video, &decoded), 0.0);
    let full = p
        .edit_with_prompt(&inversion, &edit(1.0), &mut Progress::none())
        .unwrap();
    let default = p
        .edit_with_prompt(
            &inversion,
            &EditOptions {
                prompt: "a wolf".into(),
                ..Default::default()
            },
            &mut Progress::none(),
        )
        .unwrap();
    assert_eq!(
        max_diff(&full.video, &default.video),
        0.0,
        "strength 1 is today's edit"
    );
    // Half the steps: closer to the source than the full edit, and not equal to it.
    let mut seen = Vec::new();
    let mut cb = |stage, done, total| {
        if stage == cogvideo::pipelines::Stage::Denoise {
            seen.push((done, total));
        }
        true
    };
    let half = p
        .edit_with_prompt(&inversion, &edit(0.5), &mut Progress::new(&mut cb))
        .unwrap();
    assert_eq!(seen.last(), Some(&(2, 2)), "{seen:?}");
    let d_half = max_diff(&half.latents, inversion.source_latents());
    let d_full = max_diff(&full.latents, inversion.source_latents());
    assert!(d_half > 0.0 && d_half < d_full, "{d_half} vs {d_full}");
    for bad in [0.0, -0.5, 1.5, f64::NAN] {
        let err = p
            .edit_with_prompt(&inversion, &edit(bad), &mut Progress::none())
            .unwrap_err();
        assert!(
            err.to_string().contains("strength must be in (0, 1]"),
            "{err}"
        );
    }
}
