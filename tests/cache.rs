//! Step caching against diffusers 0.42.1's cache hooks on the tiny
//! checkpoints (tests/data/golden/cache_cases.json, made by
//! scripts/golden/golden_cache.py): the same decision on every step (rows
//! computed, attention computed per block, blocks skipped, First-block
//! cache's residual change) and the final latents within the pipelines'
//! f32 tolerance (1e-4 x max(1, scale)); plus the edge cases.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use cogvideo::frames::{FrameRef, PixelFormat, ResizeMode, frames_to_video};
use cogvideo::hooks::{
    CacheConfig, CacheReport, FasterCacheConfig, FirstBlockCacheConfig,
    PyramidAttentionBroadcastConfig, TaylorSeerCacheConfig,
};
use cogvideo::pipelines::{
    AnimateOptions, DeviceKind, EditOptions, GenerateOptions, InvertOptions, LoadOptions,
    NoiseOptions, Pipeline, Progress, SamplingOptions, SchedulerKind, Stage,
};
use common::{assert_close, load_json, load_tensors, max_abs_diff, tiny};
use serde_json::Value;

fn cpu_f32() -> LoadOptions {
    LoadOptions {
        device: DeviceKind::Cpu,
        ..Default::default()
    }
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn range(v: &Value) -> (f64, f64) {
    (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
}

/// The case's cache, from the settings diffusers ran with.
fn config(case: &Value) -> CacheConfig {
    let s = &case["settings"];
    match case["method"].as_str().unwrap() {
        "first_block" => CacheConfig::FirstBlock(FirstBlockCacheConfig {
            threshold: s["threshold"].as_f64().unwrap(),
        }),
        "pab" => CacheConfig::PyramidAttentionBroadcast(PyramidAttentionBroadcastConfig {
            spatial_attention_block_skip_range: usize_of(&s["spatial_attention_block_skip_range"]),
            spatial_attention_timestep_skip_range: range(
                &s["spatial_attention_timestep_skip_range"],
            ),
        }),
        "faster" => CacheConfig::FasterCache(FasterCacheConfig {
            spatial_attention_block_skip_range: usize_of(&s["spatial_attention_block_skip_range"]),
            spatial_attention_timestep_skip_range: range(
                &s["spatial_attention_timestep_skip_range"],
            ),
            low_frequency_weight_update_timestep_range: range(
                &s["low_frequency_weight_update_timestep_range"],
            ),
            high_frequency_weight_update_timestep_range: range(
                &s["high_frequency_weight_update_timestep_range"],
            ),
            alpha_low_frequency: s["alpha_low_frequency"].as_f64().unwrap(),
            alpha_high_frequency: s["alpha_high_frequency"].as_f64().unwrap(),
            unconditional_batch_skip_range: usize_of(&s["unconditional_batch_skip_range"]),
            unconditional_batch_timestep_skip_range: range(
                &s["unconditional_batch_timestep_skip_range"],
            ),
            attention_weight: s["attention_weight"].as_f64().unwrap(),
        }),
        "taylorseer" => CacheConfig::TaylorSeer(TaylorSeerCacheConfig {
            cache_interval: usize_of(&s["cache_interval"]),
            disable_cache_before_step: usize_of(&s["disable_cache_before_step"]),
            disable_cache_after_step: s["disable_cache_after_step"].as_u64().map(|v| v as usize),
            max_order: usize_of(&s["max_order"]),
        }),
        other => panic!("unknown method {other}"),
    }
}

fn draws(g: &HashMap<String, Tensor>, case: &Value) -> NoiseOptions {
    let list: Vec<Tensor> = case["seed_tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| g[k.as_str().unwrap()].clone())
        .collect();
    NoiseOptions::with_draws(0, &list).unwrap()
}

fn sampling(case: &Value, g: &HashMap<String, Tensor>) -> SamplingOptions {
    SamplingOptions {
        prompt: case["prompt"].as_str().unwrap().into(),
        negative_prompt: String::new(),
        steps: usize_of(&case["steps"]),
        guidance_scale: case["guidance_scale"].as_f64().unwrap(),
        dynamic_cfg: case["use_dynamic_cfg"].as_bool().unwrap(),
        scheduler: match case["scheduler"].as_str().unwrap() {
            "CogVideoXDPMScheduler" => SchedulerKind::Dpm,
            _ => SchedulerKind::Ddim,
        },
        noise: draws(g, case),
        cache: CacheConfig::Off,
    }
}

/// Golden `[H, W, 3]` u8 image as a `[1, 3, H, W]` model image.
fn image_from_u8(t: &Tensor) -> Tensor {
    let (h, w, _) = t.dims3().unwrap();
    let bytes = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let frame = FrameRef::packed(&bytes, w, h, PixelFormat::Rgb8).unwrap();
    frames_to_video(&[frame], h, w, ResizeMode::Stretch, &Device::Cpu)
        .unwrap()
        .squeeze(2)
        .unwrap()
}

/// Golden `[T, H, W, 3]` u8 frames as a `[1, 3, T, H, W]` model video.
fn video_from_u8(t: &Tensor) -> Tensor {
    let (n, h, w, _) = t.dims4().unwrap();
    let bytes = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let frames: Vec<FrameRef> = bytes
        .chunks_exact(h * w * 3)
        .map(|b| FrameRef::packed(b, w, h, PixelFormat::Rgb8).unwrap())
        .collect();
    assert_eq!(frames.len(), n);
    frames_to_video(&frames, h, w, ResizeMode::Stretch, &Device::Cpu).unwrap()
}

/// Runs `case` with `cache`: the final latents and the cache's report.
fn run(
    p: &Pipeline,
    case: &Value,
    g: &HashMap<String, Tensor>,
    cache: CacheConfig,
    progress_cb: Option<&mut dyn FnMut(Stage, usize, usize) -> bool>,
) -> cogvideo::Result<(Tensor, Option<CacheReport>)> {
    let mut progress = match progress_cb {
        Some(cb) => Progress::new(cb),
        None => Progress::none(),
    };
    if case["kind"] == "edit" {
        // the base edit case's inputs; the inversion exact, the reconstruction cached
        let base = load_tensors("pipeline_edit_5b.safetensors");
        let inv_opts = InvertOptions {
            steps: usize_of(&case["steps"]),
            noise: NoiseOptions::with_draws(0, &[base["posterior_noise"].clone()]).unwrap(),
            ..Default::default()
        };
        let inversion =
            p.invert_video(&video_from_u8(&base["frames_u8"]), &inv_opts, &mut progress)?;
        assert!(progress.cache_report().is_none(), "the inversion is exact");
        let opts = EditOptions {
            prompt: case["prompt"].as_str().unwrap().into(),
            guidance_scale: case["guidance_scale"].as_f64().unwrap(),
            noise: NoiseOptions::with_draws(0, &[base["recon_noise"].clone()]).unwrap(),
            cache,
            ..Default::default()
        };
        let out = p.edit_latents(&inversion, &opts, &mut progress)?;
        return Ok((out, progress.cache_report().cloned()));
    }
    let s = SamplingOptions {
        cache,
        ..sampling(case, g)
    };
    let latents = match case["kind"].as_str().unwrap() {
        "t2v" => p.generate_latents(
            &GenerateOptions {
                sampling: s,
                height: Some(usize_of(&case["height"])),
                width: Some(usize_of(&case["width"])),
                num_frames: Some(usize_of(&case["num_frames"])),
            },
            &mut progress,
        )?,
        "i2v" => p.animate_latents(
            &image_from_u8(&g["image_u8"]),
            &AnimateOptions {
                sampling: s,
                num_frames: usize_of(&case["num_frames"]),
            },
            &mut progress,
        )?,
        other => panic!("unknown kind {other}"),
    };
    Ok((latents, progress.cache_report().cloned()))
}

fn golden_latents(case: &Value, g: &HashMap<String, Tensor>, key: &str) -> Tensor {
    let want = &g[key];
    let pad = case["padding_frames"].as_u64().unwrap_or(0) as usize;
    let f = want.dim(1).unwrap();
    want.narrow(1, pad, f - pad).unwrap()
}

fn cases() -> Vec<Value> {
    load_json("cache_cases.json")["cases"]
        .as_array()
        .unwrap()
        .clone()
}

fn check_case(p: &Pipeline, case: &Value) {
    let name = case["name"].as_str().unwrap();
    let g = load_tensors(case["file"].as_str().unwrap());
    let (latents, report) = run(p, case, &g, config(case), None).unwrap();
    let report = report.unwrap_or_else(|| panic!("{name}: no cache report"));
    let want = case["steps_record"].as_array().unwrap();
    assert_eq!(report.steps.len(), want.len(), "{name}: steps");
    let blocks = usize_of(&case["blocks"]);
    let mut skipped = 0u64;
    for (i, (got, w)) in report.steps.iter().zip(want).enumerate() {
        let attention: Vec<bool> = w["attention"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_bool().unwrap())
            .collect();
        assert_eq!(got.rows, usize_of(&w["rows"]), "{name} step {i}: rows");
        assert_eq!(got.attention, attention, "{name} step {i}: attention");
        assert_eq!(
            got.blocks_skipped,
            usize_of(&w["blocks_skipped"]),
            "{name} step {i}: blocks skipped"
        );
        match (got.first_block_change, w["fbc_diff"].as_f64()) {
            (None, None) => {}
            (Some(a), Some(b)) => assert!(
                (a - b).abs() <= 1e-4 * b.abs(),
                "{name} step {i}: residual change {a} vs {b}"
            ),
            (a, b) => panic!("{name} step {i}: residual change {a:?} vs {b:?}"),
        }
        // the batch without a cache: prompt editing's is [x, x, ref, ref]
        let rows = match (
            case["kind"] == "edit",
            case["guidance_scale"].as_f64().unwrap() > 1.0,
        ) {
            (true, _) => 4,
            (false, true) => 2,
            (false, false) => 1,
        };
        skipped += ((rows - got.rows) * blocks + got.blocks_skipped * got.rows) as u64;
    }
    assert_eq!(report.blocks_skipped, skipped, "{name}: blocks skipped");
    let scale = assert_close(
        &format!("{name} latents"),
        &latents,
        &golden_latents(case, &g, "latents_final"),
        1e-4,
    );
    // the cache must change the result measurably where diffusers' does, so
    // that agreement above means something
    let exact = golden_latents(case, &g, "latents_exact");
    let (d, _) = max_abs_diff(&latents, &exact);
    if case["differs_from_exact"].as_bool().unwrap() {
        assert!(
            d > 1e-3 * scale.max(1.0),
            "{name}: cached result only {d} from the exact one"
        );
    } else {
        assert!(d <= 1e-4 * scale.max(1.0), "{name}: {d} from the exact one");
    }
}

#[test]
fn caches_match_the_diffusers_hooks() {
    let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
    let mut methods = std::collections::BTreeSet::new();
    for case in cases() {
        methods.insert(case["method"].as_str().unwrap().to_string());
        let variant = case["variant"].as_str().unwrap().to_string();
        let p = pipelines
            .entry(variant.clone())
            .or_insert_with(|| Pipeline::load(tiny(&variant), &cpu_f32()).unwrap());
        check_case(p, &case);
    }
    assert_eq!(methods.len(), 4, "{methods:?}");
}

/// Prompt editing with the reconstruction cached (the inversion exact)
/// against diffusers' hooks on the CogVideo script's edit
/// (cache_edit_cases.json): the same decisions, latents within tolerance.
#[test]
fn cached_edits_match_the_diffusers_hooks() {
    let p = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let cases = load_json("cache_edit_cases.json")["cases"]
        .as_array()
        .unwrap()
        .clone();
    let methods: Vec<&str> = cases
        .iter()
        .map(|c| c["method"].as_str().unwrap())
        .collect();
    assert_eq!(methods, ["first_block", "pab", "taylorseer"]);
    for case in &cases {
        check_case(&p, case);
    }
}

/// The README's bound on what a cache keeps (section "Fast mode"), from the
/// tiny checkpoint's config: copies of the token stream (batch x tokens x
/// width x bytes) per method, and FasterCache's f32 latent of the branch
/// difference.
fn readme_bound(case: &Value, cache: &CacheConfig) -> u64 {
    let cfg = load_transformer_config(case["variant"].as_str().unwrap());
    let n = |k: &str| cfg[k].as_u64().unwrap();
    let blocks = n("num_layers");
    let copies = match cache {
        CacheConfig::Off => 0,
        CacheConfig::FirstBlock(_) => 3,
        CacheConfig::PyramidAttentionBroadcast(_) | CacheConfig::FasterCache(_) => blocks,
        CacheConfig::TaylorSeer(c) => (c.max_order as u64 + 1) * blocks,
    };
    let frames = case["num_frames"].as_u64().unwrap_or(9);
    let f = (frames - 1) / 4 + 1;
    let pt = cfg["patch_size_t"].as_u64().unwrap_or(1);
    let f = f.div_ceil(pt) * pt; // 1.5's padding frame
    let (h, w) = (
        usize_of(&case["height"]) as u64 / 8,
        usize_of(&case["width"]) as u64 / 8,
    );
    let p = n("patch_size");
    let tokens = f / pt * (h / p) * (w / p) + n("max_text_seq_length");
    let width = n("num_attention_heads") * n("attention_head_dim");
    let batch = match (
        case["kind"] == "edit",
        case["guidance_scale"].as_f64().unwrap() > 1.0,
    ) {
        (true, _) => 4,
        (false, true) => 2,
        (false, false) => 1,
    };
    let latent = match cache {
        CacheConfig::FasterCache(_) => f * n("out_channels") * h * w * 4,
        _ => 0,
    };
    copies * batch * tokens * width * 4 + latent
}

fn load_transformer_config(variant: &str) -> Value {
    let path = tiny(variant).join("transformer").join("config.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// What each cache holds between steps (the allocations behind its kept
/// tensors) stays within the memory estimate's share for it, and that share
/// is the README's bound; the bound is not loose by more than a factor 2.
#[test]
fn cache_memory_stays_under_the_estimate() {
    let edits = load_json("cache_edit_cases.json")["cases"]
        .as_array()
        .unwrap()
        .clone();
    let mut pipelines: HashMap<String, Pipeline> = HashMap::new();
    for c in [
        case("cache_fbc_5b_dpm"),
        case("cache_fbc_15_dpm"),
        case("cache_pab_5b_dpm"),
        case("cache_faster_5b_dpm"),
        case("cache_faster_i2v_5b"),
        case("cache_taylor_5b_dpm"),
        case("cache_taylor_2b_ddim"),
        edits[1].clone(),
        edits[2].clone(),
    ] {
        let name = c["name"].as_str().unwrap();
        let variant = c["variant"].as_str().unwrap().to_string();
        let p = pipelines
            .entry(variant.clone())
            .or_insert_with(|| Pipeline::load(tiny(&variant), &cpu_f32()).unwrap());
        let g = load_tensors(c["file"].as_str().unwrap());
        let cache = config(&c);
        let (_, report) = run(p, &c, &g, cache.clone(), None).unwrap();
        let held = report.unwrap().peak_held_bytes;
        let estimate = p.cache_estimate_bytes(
            usize_of(&c["height"]),
            usize_of(&c["width"]),
            c["num_frames"].as_u64().unwrap_or(9) as usize,
            c["guidance_scale"].as_f64().unwrap() > 1.0,
            c["kind"] == "edit",
            &cache,
        );
        assert_eq!(
            estimate,
            readme_bound(&c, &cache),
            "{name}: the README's bound"
        );
        assert!(
            held <= estimate && held * 2 >= estimate,
            "{name}: held {held} bytes, estimate {estimate}"
        );
    }
}

fn case(name: &str) -> Value {
    cases()
        .into_iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Caching off, and a First-block cache of threshold 0, give the exact
/// result bit for bit; the report says nothing was skipped.
#[test]
fn off_and_zero_threshold_are_exact() {
    let c = case("cache_fbc_5b_zero");
    let g = load_tensors(c["file"].as_str().unwrap());
    let p = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let (exact, report) = run(&p, &c, &g, CacheConfig::Off, None).unwrap();
    assert!(report.is_none());
    let zero = CacheConfig::FirstBlock(FirstBlockCacheConfig { threshold: 0.0 });
    let (cached, report) = run(&p, &c, &g, zero, None).unwrap();
    assert_eq!(bits(&exact), bits(&cached));
    let report = report.unwrap();
    assert_eq!((report.blocks_skipped, report.attention_skipped), (0, 0));
    assert_eq!(report.block_evaluations, 6 * 2 * 2);
}

/// One step: every method computes every block on its first step (as the
/// hooks do, cache_fbc_5b_1step for diffusers), so the result is the exact
/// one bit for bit, and the report counts one step with nothing skipped.
#[test]
fn one_step_is_exact_for_every_method() {
    let c = case("cache_fbc_5b_1step");
    let g = load_tensors(c["file"].as_str().unwrap());
    let p = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let (exact, _) = run(&p, &c, &g, CacheConfig::Off, None).unwrap();
    for cache in [
        CacheConfig::FirstBlock(FirstBlockCacheConfig { threshold: 1e9 }),
        CacheConfig::PyramidAttentionBroadcast(Default::default()),
        CacheConfig::FasterCache(Default::default()),
        CacheConfig::TaylorSeer(TaylorSeerCacheConfig {
            disable_cache_before_step: 1,
            cache_interval: 1,
            ..Default::default()
        }),
    ] {
        let (latents, report) = run(&p, &c, &g, cache.clone(), None).unwrap();
        assert_eq!(bits(&latents), bits(&exact), "{cache:?}");
        let report = report.unwrap();
        assert_eq!(report.steps.len(), 1, "{cache:?}");
        assert_eq!(
            (report.blocks_skipped, report.attention_skipped),
            (0, 0),
            "{cache:?}"
        );
    }
}

/// A cancel while a step is being served from the cache ends the call with
/// `Cancelled`, and the next call starts from a fresh cache.
#[test]
fn cancel_during_a_cached_step() {
    for name in [
        "cache_pab_5b_dpm",
        "cache_fbc_5b_huge",
        "cache_faster_5b_dpm",
        "cache_taylor_5b_dpm",
    ] {
        let c = case(name);
        let g = load_tensors(c["file"].as_str().unwrap());
        let p = Pipeline::load(tiny(c["variant"].as_str().unwrap()), &cpu_f32()).unwrap();
        // the first step whose record shows reuse
        let target = c["steps_record"]
            .as_array()
            .unwrap()
            .iter()
            .position(|r| {
                r["rows"].as_u64() == Some(1)
                    || r["attention"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|a| a == false)
            })
            .unwrap();
        // `done == target` is reported when the step before ends, then
        // polled before each block of the step: cancel at its first block
        let mut polls = 0;
        let mut cb = |stage: Stage, done: usize, _total: usize| {
            if stage == Stage::Denoise && done == target {
                polls += 1;
            }
            polls < 2
        };
        let err = run(&p, &c, &g, config(&c), Some(&mut cb)).unwrap_err();
        assert!(matches!(err, cogvideo::Error::Cancelled), "{name}: {err}");
        check_case(&p, &c);
    }
}

#[test]
fn bad_settings_are_refused() {
    let c = case("cache_fbc_5b_nocfg");
    let g = load_tensors(c["file"].as_str().unwrap());
    let p = Pipeline::load(tiny("cogvideox-5b"), &cpu_f32()).unwrap();
    let bad = [
        CacheConfig::FirstBlock(FirstBlockCacheConfig { threshold: -1.0 }),
        CacheConfig::FirstBlock(FirstBlockCacheConfig {
            threshold: f64::NAN,
        }),
        CacheConfig::PyramidAttentionBroadcast(PyramidAttentionBroadcastConfig {
            spatial_attention_block_skip_range: 0,
            ..Default::default()
        }),
        CacheConfig::TaylorSeer(TaylorSeerCacheConfig {
            cache_interval: 0,
            ..Default::default()
        }),
        CacheConfig::TaylorSeer(TaylorSeerCacheConfig {
            max_order: 9,
            ..Default::default()
        }),
        // FasterCache needs guidance; this case runs without
        CacheConfig::FasterCache(FasterCacheConfig::default()),
    ];
    for cfg in bad {
        let err = run(&p, &c, &g, cfg.clone(), None).unwrap_err();
        assert!(
            matches!(err, cogvideo::Error::InvalidArgument(_)),
            "{cfg:?}: {err}"
        );
    }
}

/// The C API: a cache set through `cogvideo_generate_options.cache` gives
/// the Rust API's result and decisions, reported in `cache_report`; bad
/// settings are refused with a message.
#[test]
fn c_api_cache_and_report() {
    use cogvideo::ffi::cogvideo_status::*;
    use cogvideo::ffi::*;
    use std::ffi::{CStr, CString};
    use std::ptr::{null, null_mut};

    let c = case("cache_pab_5b_dpm");
    let g = load_tensors(c["file"].as_str().unwrap());
    let noise: Vec<f32> = c["seed_tensors"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|k| {
            g[k.as_str().unwrap()]
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect();
    let path = CString::new(tiny("cogvideox-5b").to_str().unwrap()).unwrap();
    let mut p = null_mut();
    let st = unsafe { cogvideo_load_pipeline(path.as_ptr(), null(), &mut p) };
    assert_eq!(st, COGVIDEO_OK);
    // SAFETY (here and below): plain structs initialised by their inits
    let mut cache: cogvideo_cache_options = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<cogvideo_cache_options>();
    assert_eq!(
        unsafe { cogvideo_cache_options_init_sized(&mut cache, size) },
        COGVIDEO_OK
    );
    assert_eq!(cache.method, COGVIDEO_CACHE_OFF);
    cache.method = COGVIDEO_CACHE_PYRAMID_ATTENTION_BROADCAST;
    // the library writes the report through the options' pointer: every
    // access here goes through the same raw pointer
    let mut report_box: Box<cogvideo_cache_report> = Box::new(unsafe { std::mem::zeroed() });
    let report: *mut cogvideo_cache_report = &mut *report_box;
    let size = std::mem::size_of::<cogvideo_cache_report>();
    assert_eq!(
        unsafe { cogvideo_cache_report_init_sized(report, size) },
        COGVIDEO_OK
    );
    let mut o: cogvideo_generate_options = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<cogvideo_generate_options>();
    assert_eq!(
        unsafe { cogvideo_generate_options_init_sized(&mut o, size) },
        COGVIDEO_OK
    );
    assert!(o.cache.is_null() && o.cache_report.is_null());
    let prompt = CString::new(c["prompt"].as_str().unwrap()).unwrap();
    o.prompt = prompt.as_ptr();
    (o.height, o.width, o.num_frames) = (64, 96, 9);
    o.steps = usize_of(&c["steps"]) as i32;
    o.noise = noise.as_ptr();
    o.noise_len = noise.len();
    let want = golden_latents(&c, &g, "latents_final");
    let mut latents = vec![0f32; want.elem_count()];
    o.latents_out = latents.as_mut_ptr();
    o.latents_out_len = latents.len();
    o.cache = &cache;
    o.cache_report = report;
    let st = unsafe { cogvideo_generate_video(p, &o, null(), 0) };
    assert_eq!(st, COGVIDEO_OK, "{:?}", unsafe {
        CStr::from_ptr(cogvideo_last_error())
    });
    let got = Tensor::from_vec(latents.clone(), want.dims(), &Device::Cpu).unwrap();
    assert_close("C API PAB latents", &got, &want, 1e-4);
    let records = c["steps_record"].as_array().unwrap();
    let reused: usize = records
        .iter()
        .map(|r| {
            r["attention"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| **a == false)
                .count()
                * 2
        })
        .sum();
    let r = unsafe { *report };
    assert_eq!(r.steps as usize, records.len());
    assert_eq!(r.block_evaluations, 8 * 2 * 2);
    assert_eq!(r.blocks_skipped, 0);
    assert_eq!(r.attention_skipped as usize, reused);
    assert!(reused > 0);

    // without a cache: the report is all zero and the result the exact one
    o.cache = null();
    let st = unsafe { cogvideo_generate_video(p, &o, null(), 0) };
    assert_eq!(st, COGVIDEO_OK);
    let r = unsafe { *report };
    assert_eq!((r.steps, r.attention_skipped), (0, 0));
    let got = Tensor::from_vec(latents.clone(), want.dims(), &Device::Cpu).unwrap();
    assert_close(
        "C API exact latents",
        &got,
        &golden_latents(&c, &g, "latents_exact"),
        1e-4,
    );

    // bad settings: an unknown method, a negative threshold, FasterCache
    // without guidance, a report with a bad struct_size
    o.cache = &cache;
    for (edit, what) in [
        (
            &(|c: &mut cogvideo_cache_options| c.method = 9) as &dyn Fn(&mut _),
            "method",
        ),
        (
            &|c: &mut cogvideo_cache_options| {
                c.method = COGVIDEO_CACHE_FIRST_BLOCK;
                c.first_block_threshold = -1.0;
            },
            "threshold",
        ),
        (
            &|c: &mut cogvideo_cache_options| {
                c.method = COGVIDEO_CACHE_TAYLORSEER;
                c.taylorseer_cache_interval = 0;
            },
            "taylorseer_cache_interval",
        ),
    ] {
        let mut bad = cache;
        edit(&mut bad);
        o.cache = &bad;
        let st = unsafe { cogvideo_generate_video(p, &o, null(), 0) };
        assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT);
        let msg = unsafe { CStr::from_ptr(cogvideo_last_error()) }.to_string_lossy();
        assert!(msg.contains(what), "{msg}");
    }
    let mut faster = cache;
    faster.method = COGVIDEO_CACHE_FASTER_CACHE;
    o.cache = &faster;
    o.guidance_scale = 1.0;
    let st = unsafe { cogvideo_generate_video(p, &o, null(), 0) };
    assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT);
    o.guidance_scale = 6.0;
    o.cache = &cache;
    unsafe { (*report).struct_size = 3 };
    let st = unsafe { cogvideo_generate_video(p, &o, null(), 0) };
    assert_eq!(st, COGVIDEO_ERR_INVALID_ARGUMENT);
    unsafe { cogvideo_pipeline_free(p) };
    drop(report_box);
}
