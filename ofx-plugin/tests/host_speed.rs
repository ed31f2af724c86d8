//! The *Speed* choice and the LoRA parameters (`src/model_settings.rs`)
//! through the test host, with temporal access (a final render fetches its
//! segment): preview and fast results are the C API's with the library's
//! step cache (preview at half the steps and size), differ from the exact
//! one and are cached apart from it; going
//! back to exact serves the exact result without computing; a LoRA changes
//! the result as the C API's adapters do, weight 0 and an emptied file parameter give the base
//! model's, and a file the library refuses gives an error and no job.

#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod fixtures;
#[allow(dead_code)]
#[path = "host/mod.rs"]
mod host;

use std::sync::{Mutex, OnceLock};

use cogvideox_ofx::capi;
use fixtures::*;
use host::{Binary, Depth, HostConfig, Instance, Layout, Pixels, Render, Setup};

fn cogvideox() -> &'static Binary {
    static BIN: OnceLock<Binary> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin =
            Binary::load(&common::bundle_file("CogVideoX.ofx"), HostConfig::default()).unwrap();
        for p in bin.plugins() {
            assert_eq!(p.load(), host::kOfxStatOK, "{}", p.id());
        }
        bin
    })
}

/// The tests count lines of the one log (inversions have no cache
/// version in theirs): one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Steps enough for the step caches to skip work (a preview samples half).
const STEPS_CACHED: i32 = 10;

fn generate_instance(version: i32) -> Instance {
    let p = cogvideox().plugin(GENERATE);
    let (_, desc) = p.describe();
    let generator = host::kOfxImageEffectContextGenerator;
    let (st, ctx) = p.describe_in_context(&desc, generator);
    assert_eq!(st, host::kOfxStatOK);
    let setup = Setup {
        source: None,
        ..edit_setup(Depth::Byte, Layout::PLAIN)
    };
    let inst = p.create_instance(&ctx, generator, setup).unwrap();
    set_params(&inst, &checkpoint(), version);
    inst
}

fn result(inst: &Instance, t: f64) -> Pixels {
    let r = inst.render(&Render::at(t));
    assert_eq!(r.status, host::kOfxStatOK, "{}", message(inst));
    r.pixels
}

/// `cogvideo_generate_video` at the fixtures' parameters and `steps`, 8-bit.
fn c_api_generate(steps: i32) -> Vec<Pixels> {
    c_api_generate_with(steps, (0, 0), None, &[])
}

/// The same at working size `size` (0: the default), with the step cache
/// `method` and LoRA `adapters` (file, weight), on a pipeline of its own.
fn c_api_generate_with(
    steps: i32,
    size: (i32, i32),
    method: Option<u32>,
    adapters: &[(&std::path::Path, f64)],
) -> Vec<Pixels> {
    use std::ffi::CString;
    let api = common::api();
    let mut lo = capi::LoadOptions::default();
    // SAFETY: writable options.
    unsafe { api.load_options_init.run(&mut lo) };
    let ckpt = checkpoint();
    let pipe = capi::PipelineHandle::load(api, ckpt.to_str().unwrap(), &lo).unwrap();
    let names: Vec<CString> = (0..adapters.len())
        .map(|i| CString::new(format!("test{i}")).unwrap())
        .collect();
    for ((path, _), name) in adapters.iter().zip(&names) {
        let path = CString::new(path.to_str().unwrap()).unwrap();
        let load = api.pipeline_load_lora.unwrap();
        // SAFETY: live pipeline, NUL-terminated strings.
        api.check(unsafe { load(pipe.ptr, path.as_ptr(), name.as_ptr()) })
            .unwrap();
    }
    let ptrs: Vec<_> = names.iter().map(|n| n.as_ptr()).collect();
    let weights: Vec<f64> = adapters.iter().map(|(_, w)| *w).collect();
    let set = api.pipeline_set_adapters.unwrap();
    // SAFETY: live pipeline, n names and weights.
    api.check(unsafe { set(pipe.ptr, ptrs.as_ptr(), weights.as_ptr(), ptrs.len()) })
        .unwrap();
    let mut cache = capi::CacheOptions::default();
    // SAFETY: writable 1.4 struct.
    unsafe { api.cache_options_init.unwrap()(&mut cache, std::mem::size_of_val(&cache)) };
    let mut out: Vec<Vec<u8>> = (0..FRAMES).map(|_| vec![0u8; W * H * 4]).collect();
    let descs: Vec<capi::Frame> = out
        .iter_mut()
        .map(|f| capi::Frame {
            data: f.as_mut_ptr().cast(),
            width: W as i32,
            height: H as i32,
            stride_bytes: (W * 4) as i64,
            format: capi::FORMAT_RGBA8,
        })
        .collect();
    let prompt = CString::new(PROMPT).unwrap();
    let mut o = capi::GenerateOptions::default();
    // SAFETY: writable options.
    unsafe { api.generate_options_init.run(&mut o) };
    o.prompt = prompt.as_ptr();
    o.num_frames = FRAMES as i32;
    o.steps = steps;
    o.guidance_scale = GUIDANCE as f32;
    o.seed = SEED as u64;
    (o.width, o.height) = size;
    if let Some(m) = method {
        cache.method = m;
        o.cache = &cache;
    }
    // SAFETY: valid options and outputs.
    api.check(unsafe { (api.generate_video)(pipe.ptr, &o, descs.as_ptr(), descs.len()) })
        .unwrap();
    out.into_iter()
        .map(|data| Pixels {
            width: W,
            height: H,
            depth: Depth::Byte,
            data,
        })
        .collect()
}

/// The skipped block evaluations a status reports ("12 of 40 block
/// evaluations skipped").
fn skipped(status: &str) -> u64 {
    let (before, _) = status
        .split_once(" block evaluations skipped")
        .unwrap_or_else(|| panic!("no step cache report in {status:?}"));
    let n = before.rsplit(' ').nth(2).unwrap();
    n.parse().unwrap()
}

#[test]
fn speed_computes_preview_and_fast_apart_from_exact() {
    env();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const VERSION: i32 = 3100;
    let inst = generate_instance(VERSION);
    assert!(ok_or_default(inst.set_int("steps", STEPS_CACHED)));
    let exact = c_api_generate(STEPS_CACHED);
    assert_same(&result(&inst, 4.0), &exact[4], "exact");
    assert_eq!(status(&inst), "done: the result");
    assert_eq!(generated(VERSION), 1);

    // Preview: FasterCache (guidance above 1) at half the steps and the
    // model's smallest working size, served at the host's size.
    assert!(ok_or_default(inst.set_int("speed", 2)));
    let preview = result(&inst, 4.0);
    assert_eq!((preview.width, preview.height), (W, H));
    assert!(preview != exact[4], "the preview is the exact frame");
    let want = c_api_generate_with(5, (48, 32), Some(capi::CACHE_FASTER_CACHE), &[]);
    assert_same(&preview, &want[4], "preview");
    let st = status(&inst);
    assert!(
        st.starts_with("done: the preview (FasterCache, 5 steps, 48x32)"),
        "{st}"
    );
    assert!(skipped(&st) > 0, "the step cache skipped nothing: {st}");
    assert_eq!(generated(VERSION), 2);

    // Fast: Pyramid Attention Broadcast at the chosen steps.
    assert!(ok_or_default(inst.set_int("speed", 1)));
    let fast = result(&inst, 4.0);
    assert!(fast != exact[4] && fast != preview);
    let want = c_api_generate_with(
        STEPS_CACHED,
        (0, 0),
        Some(capi::CACHE_PYRAMID_ATTENTION_BROADCAST),
        &[],
    );
    assert_same(&fast, &want[4], "fast");
    let st = status(&inst);
    assert!(
        st.starts_with("done: the fast result (Pyramid Attention Broadcast, 10 steps)"),
        "{st}"
    );
    assert!(!st.contains(" 0 attention evaluations reused"), "{st}");
    assert_eq!(generated(VERSION), 3);

    // Back to exact, then preview: both from the cache, not computed again.
    assert!(ok_or_default(inst.set_int("speed", 0)));
    assert_same(&result(&inst, 4.0), &exact[4], "exact again");
    assert_eq!(status(&inst), "done: the result");
    assert!(ok_or_default(inst.set_int("speed", 2)));
    assert!(result(&inst, 4.0) == preview);
    assert_eq!(generated(VERSION), 3);
    let log = std::fs::read_to_string(scratch().join("plugin.log")).unwrap();
    assert!(
        log.contains("step cache: "),
        "the log has no step cache report"
    );
    inst.destroy();
    assert_no_violations();
}

/// Fast mode shares the exact edit's inversion (inversion is exact); a
/// preview inverts at its own steps and size.
#[test]
fn edit_fast_mode_reuses_the_exact_inversion() {
    env();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const VERSION: i32 = 3200;
    let inverted = || {
        let log = std::fs::read_to_string(scratch().join("plugin.log")).unwrap_or_default();
        log.lines()
            .filter(|l| l.contains("inverting the segment"))
            .count()
    };
    let before = inverted();
    let inst = edit_instance(cogvideox(), edit_setup(Depth::Byte, Layout::PLAIN), VERSION);
    assert!(ok_or_default(inst.set_int("steps", STEPS_CACHED)));
    let exact = result(&inst, 4.0);
    assert_eq!(inverted(), before + 1);
    assert!(ok_or_default(inst.set_int("speed", 1)));
    let fast = result(&inst, 4.0);
    assert!(fast != exact, "fast mode gave the exact frame");
    assert!(
        status(&inst).starts_with("done: the fast result"),
        "{}",
        status(&inst)
    );
    assert_eq!(inverted(), before + 1, "fast mode inverted again");
    // An edit's preview: TaylorSeer (FasterCache takes no edits).
    assert!(ok_or_default(inst.set_int("speed", 2)));
    let preview = result(&inst, 4.0);
    assert!(preview != exact && preview != fast);
    let st = status(&inst);
    assert!(
        st.starts_with("done: the preview (TaylorSeer, 5 steps, 48x32)"),
        "{st}"
    );
    assert_eq!(inverted(), before + 2);
    assert_eq!(processed(VERSION), 3);
    assert!(ok_or_default(inst.set_int("speed", 0)));
    assert!(result(&inst, 4.0) == exact);
    assert_eq!(processed(VERSION), 3, "exact computed again");
    inst.destroy();
    assert_no_violations();
}

#[test]
fn animate_preview_differs_from_exact() {
    env();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let p = cogvideox().plugin(ANIMATE);
    let (_, desc) = p.describe();
    let general = host::kOfxImageEffectContextGeneral;
    let (_, ctx) = p.describe_in_context(&desc, general);
    let inst = p
        .create_instance(&ctx, general, edit_setup(Depth::Byte, Layout::PLAIN))
        .unwrap();
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b-i2v");
    set_params(&inst, &checkpoint, 3300);
    assert!(ok_or_default(inst.set_int("steps", STEPS_CACHED)));
    let exact = result(&inst, 4.0);
    assert!(ok_or_default(inst.set_int("speed", 2)));
    let preview = result(&inst, 4.0);
    assert!(preview != exact, "the preview is the exact frame");
    let st = status(&inst);
    assert!(
        st.starts_with("done: the preview (FasterCache, 5 steps"),
        "{st}"
    );
    assert!(skipped(&st) > 0, "{st}");
    inst.destroy();
    assert_no_violations();
}

#[test]
fn a_lora_changes_the_result_and_a_bad_one_is_an_error_without_a_job() {
    env();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const VERSION: i32 = 3400;
    let lora = common::repo().join("tests/data/lora/a_rank2.safetensors");
    let inst = generate_instance(VERSION);
    let base = c_api_generate(STEPS);
    assert_same(&result(&inst, 4.0), &base[4], "no LoRA");

    assert!(ok_or_default(
        inst.set_string("lora_1", lora.to_str().unwrap())
    ));
    let with = result(&inst, 4.0);
    assert!(with != base[4], "the LoRA changed nothing");
    let want = c_api_generate_with(STEPS, (0, 0), None, &[(&lora, 1.0)]);
    assert_same(&with, &want[4], "with the LoRA");
    assert!(
        status(&inst).contains("with 1 LoRA (weights 1)"),
        "{}",
        status(&inst)
    );
    assert_eq!(generated(VERSION), 2);
    let half = {
        assert!(ok_or_default(inst.set_double("lora_1_weight", 0.5)));
        result(&inst, 4.0)
    };
    assert!(half != with && half != base[4]);
    let want = c_api_generate_with(STEPS, (0, 0), None, &[(&lora, 0.5)]);
    assert_same(&half, &want[4], "with the LoRA at 0.5");
    assert_eq!(generated(VERSION), 3);

    // Weight 0 is the model without it: the base result, not computed again.
    assert!(ok_or_default(inst.set_double("lora_1_weight", 0.0)));
    assert_same(&result(&inst, 4.0), &base[4], "weight 0");
    assert_eq!(generated(VERSION), 3);

    // A file the library refuses (truncated): an error naming it, and the
    // next render fails without a job.
    let bad = scratch().join("truncated.safetensors");
    let bytes = std::fs::read(&lora).unwrap();
    std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap();
    assert!(ok_or_default(inst.set_double("lora_1_weight", 1.0)));
    assert!(ok_or_default(
        inst.set_string("lora_2", bad.to_str().unwrap())
    ));
    for _ in 0..2 {
        let r = inst.render(&Render::at(4.0));
        assert_eq!(r.status, host::kOfxStatFailed);
        let (kind, text) = inst.persistent_message().unwrap();
        assert!(kind.contains("Error"), "{kind}");
        assert!(
            text.contains("LoRA") && text.contains("truncated.safetensors"),
            "{text}"
        );
    }
    assert_eq!(generated(VERSION), 4, "the refused LoRA was tried again");
    // A file that is not there: an error before any job.
    assert!(ok_or_default(
        inst.set_string("lora_2", "/nonexistent/x.safetensors")
    ));
    assert_eq!(inst.render(&Render::at(4.0)).status, host::kOfxStatFailed);
    assert!(message(&inst).contains("/nonexistent/x.safetensors"));
    assert_eq!(generated(VERSION), 4);

    // Emptied file parameters: the base model again, also for a new
    // result (the pipeline's adapters are unset, not only the cache used).
    assert!(ok_or_default(inst.set_string("lora_2", "")));
    assert!(ok_or_default(inst.set_string("lora_1", "")));
    assert_same(&result(&inst, 4.0), &base[4], "LoRA removed");
    assert!(ok_or_default(inst.set_int("cache_version", VERSION + 1)));
    assert_same(&result(&inst, 4.0), &base[4], "LoRA removed, computed");
    assert_eq!(generated(VERSION + 1), 1);
    inst.destroy();
    assert_no_violations();
}
