//! The CogVideoX bundle in the test host playing Natron, as read from its
//! sources (NatronGitHub/Natron RB-2.5 and its HostSupport fork
//! NatronGitHub/openfx; neither can be installed here): parameter
//! descriptors hold only HostSupport's properties and refuse others, the
//! host says it is Natron (`NatronOfxHostIsNatron`), it has temporal
//! access, and `progressUpdate` answers `ReplyNo` until the GUI's progress
//! bar exists. Each behaviour's source is cited where the test host
//! implements it (`host/params.rs` `hostsupport_props`, `host/mod.rs`
//! `HostConfig`). A plugin keeps one host per process, hence this binary
//! of its own.

// Shared with tests/host.rs, which uses all of them.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod fixtures;
#[allow(dead_code)]
#[path = "host/mod.rs"]
mod host;

use std::ffi::CString;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use fixtures::*;
use host::{
    Binary, Depth, Event, HostConfig, Instance, Layout, Render, Setup, SourceFn, Temporal, Value,
};

/// Natron's context order (`Engine/OfxHost.cpp`, `OfxHost::OfxHost`).
fn natron() -> HostConfig {
    HostConfig {
        name: "fr.inria.Natron",
        temporal: Temporal::Full,
        contexts: vec![
            host::kOfxImageEffectContextGenerator,
            host::kOfxImageEffectContextFilter,
            host::kOfxImageEffectContextGeneral,
        ],
        hostsupport: true,
        natron: true,
        late_progress: 3,
        ..HostConfig::default()
    }
}

fn cogvideox() -> &'static Binary {
    static BIN: OnceLock<Binary> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = Binary::load(&common::bundle_file("CogVideoX.ofx"), natron()).unwrap();
        for p in bin.plugins() {
            assert_eq!(p.load(), host::kOfxStatOK, "{}", p.id());
        }
        bin
    })
}

fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn log() -> String {
    std::fs::read_to_string(scratch().join("plugin.log")).unwrap_or_default()
}

/// The instance takes the host's values as display-referred (`colour`;
/// Natron's default is linear): the tests that compare with the C API's
/// frames for the pattern as it is set this; the linear path has its own
/// test (`natron_linear_float_input_is_converted_for_the_model_and_back`).
fn display_referred(inst: &Instance) {
    assert!(ok_or_default(inst.set_int("colour", 0)));
}

/// Item 0 of issue 26: HostSupport gives a push button no value
/// properties, so `kOfxParamPropCacheInvalidation` on `process` failed
/// with `kOfxStatErrUnknown` and no effect could be created. Every effect
/// is described and instantiated in every context it declares.
#[test]
fn natron_creates_every_effect_in_every_context_it_declares() {
    let _serial = serial();
    env_traced();
    let bin = cogvideox();
    let logged = log().len();
    for p in bin.plugins() {
        let id = p.id();
        let (st, desc) = p.describe();
        assert_eq!(st, host::kOfxStatOK, "{id}: Describe");
        let contexts = desc
            .props
            .strings(host::kOfxImageEffectPropSupportedContexts);
        assert!(!contexts.is_empty(), "{id} declares no context");
        for context in contexts {
            let c = CString::new(context.as_str()).unwrap();
            let (st, ctx) = p.describe_in_context(&desc, &c);
            assert_eq!(st, host::kOfxStatOK, "{id} in {context}");
            // What HostSupport has no room for was not set, and the
            // button is still there.
            let button =
                ctx.param_props("process", |p| p.get(host::kOfxParamPropCacheInvalidation));
            assert_eq!(button, Some(None), "{id} in {context}");
            let generator = c.as_c_str() == host::kOfxImageEffectContextGenerator;
            let setup = Setup {
                source: (!generator).then(|| pattern_source(W, H, Depth::Byte)),
                ..edit_setup(Depth::Float, Layout::PLAIN)
            };
            let inst = p
                .create_instance(&ctx, &c, setup)
                .unwrap_or_else(|st| panic!("{id} in {context}: CreateInstance {st}"));
            assert!(ok_or_default(inst.destroy()));
        }
    }
    let new = &log()[logged..];
    assert!(!new.contains("warning"), "a property was refused:\n{new}");
    assert_no_violations();
}

/// A host without some optional parameter properties (here the hint and
/// the display range): the describe succeeds and the log names each
/// refused property.
#[test]
fn a_refused_optional_property_is_a_warning_naming_it() {
    let _serial = serial();
    env_traced();
    let p = cogvideox().plugin(EDIT);
    let (_, desc) = p.describe();
    let filter = host::kOfxImageEffectContextFilter;
    let refused = [host::kOfxParamPropHint, host::kOfxParamPropDisplayMax];
    let (st, ctx) = p.describe_in_context_refusing(&desc, filter, &refused);
    assert_eq!(st, host::kOfxStatOK);
    assert!(ctx.params.names().iter().any(|n| n == "segment_start"));
    let log = log();
    for prop in ["OfxParamPropHint", "OfxParamPropDisplayMax"] {
        let line = log
            .lines()
            .find(|l| l.contains("warning") && l.contains(prop) && l.contains("segment_start"))
            .unwrap_or_else(|| panic!("no warning names {prop}:\n{log}"));
        assert!(line.contains("kOfxStatErrUnknown"), "{line}");
    }
    assert_no_violations();
}

/// Item 1: Natron answers `ReplyNo` to the first progress updates (no bar
/// yet); that is no cancellation. A final render loads the checkpoint,
/// processes its segment and returns the C API's frame, with one progress
/// bar started and ended.
#[test]
fn natron_final_render_is_not_cancelled_by_reply_no() {
    let _serial = serial();
    env_traced();
    const VERSION: i32 = 100;
    let inst = edit_instance(
        cogvideox(),
        edit_setup(Depth::Float, Layout::PLAIN),
        VERSION,
    );
    display_referred(&inst);
    let want = expected(Depth::Float, 1.0, &[PROMPT]);
    let r = inst.render(&Render::at(4.0));
    assert_eq!(
        r.status,
        host::kOfxStatOK,
        "{:?}",
        inst.persistent_message()
    );
    assert_same(&r.pixels, &want[0][4], "the final render");
    let events = inst.events();
    let starts = events
        .iter()
        .filter(|e| matches!(e, Event::ProgressStart(..)))
        .count();
    let ends = events
        .iter()
        .filter(|e| matches!(e, Event::ProgressEnd(..)))
        .count();
    assert_eq!((starts, ends), (1, 1), "progress bars started and ended");
    assert_eq!(processed(VERSION), 1);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

fn messages(inst: &Instance) -> Vec<(String, String)> {
    inst.events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Message {
                persistent: true,
                kind,
                text,
                ..
            } => Some((kind, text)),
            _ => None,
        })
        .collect()
}

/// Item 1: a render that cannot serve a result fails (Natron would cache
/// the source as the result), final and interactive alike, and its error
/// is posted once, not on every render.
#[test]
fn natron_render_without_result_fails_and_says_so_once() {
    let _serial = serial();
    env_traced();
    let broken = scratch().join("natron-empty-checkpoint");
    std::fs::create_dir_all(&broken).unwrap();
    let inst = edit_instance(cogvideox(), edit_setup(Depth::Float, Layout::PLAIN), 200);
    assert!(ok_or_default(
        inst.set_string("checkpoint", broken.to_str().unwrap())
    ));
    for interactive in [false, false, true, true] {
        let r = inst.render(&Render {
            interactive,
            ..Render::at(2.0)
        });
        assert_eq!(r.status, host::kOfxStatFailed, "interactive: {interactive}");
        assert!(
            r.pixels.data.iter().all(|&b| b == host::image::FILL),
            "a failed render wrote its output"
        );
    }
    let posted = messages(&inst);
    assert_eq!(posted.len(), 1, "{posted:#?}");
    let (kind, text) = &posted[0];
    assert_eq!(kind, "OfxMessageError");
    assert!(text.contains("cannot load the checkpoint"), "{text}");
    assert_eq!(status(&inst), *text);
    assert_eq!(inst.live_images(), 0);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// Item 8: with `COGVIDEOX_OFX_TRACE` set, every action is logged with its
/// inputs (time, render scale, window, interactive and sequential flags,
/// thread) and its status, and every image given with its bounds.
#[test]
fn the_trace_switch_logs_every_action_with_its_inputs() {
    let _serial = serial();
    env_traced();
    let logged = log().len();
    let inst = edit_instance(cogvideox(), edit_setup(Depth::Float, Layout::PLAIN), 400);
    inst.render(&Render {
        interactive: true,
        scale: 0.5,
        ..Render::at(3.0)
    });
    let log = log()[logged..].to_string();
    let render = log
        .lines()
        .find(|l| {
            l.contains("trace: Edit OfxImageEffectActionRender instance") && !l.contains("returns")
        })
        .unwrap_or_else(|| panic!("no render traced:\n{log}"));
    for field in [
        "time=3",
        "scale=0.5,0.5",
        "window=0,0,48,32",
        "interactive=1",
        "sequential=0",
        "thread ThreadId(",
    ] {
        assert!(render.contains(field), "{field} missing: {render}");
    }
    assert!(
        log.lines()
            .any(|l| l.contains("trace: Edit OfxImageEffectActionRender") && l.contains("returns")),
        "no status traced"
    );
    assert!(
        log.contains("trace: image at time=3 bounds=0,0,48,32"),
        "no image traced"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("OfxActionInstanceChanged") && l.contains("name=prompt")),
        "no InstanceChanged traced"
    );
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// Item 2: every integer and double parameter's default lies inside its
/// display range, and that inside its hard range (Resolve shows a slider
/// over the display range and needs the default in it, openfx-misc
/// `README-hosts.txt`; `segment_start`'s was [-1000000, -999000]), for all
/// three effects in every context.
#[test]
fn every_default_lies_inside_its_display_range_inside_its_hard_range() {
    let _serial = serial();
    env_traced();
    for p in cogvideox().plugins() {
        let (_, desc) = p.describe();
        for context in desc
            .props
            .strings(host::kOfxImageEffectPropSupportedContexts)
        {
            let c = CString::new(context.as_str()).unwrap();
            let (st, ctx) = p.describe_in_context(&desc, &c);
            assert_eq!(st, host::kOfxStatOK);
            for name in ctx.params.names() {
                let get = |prop| {
                    ctx.param_props(&name, |p| p.get(prop))
                        .flatten()
                        .and_then(|v| v.first().cloned())
                };
                let num = |v: Option<Value>| match v {
                    Some(Value::Int(i)) => Some(i as f64),
                    Some(Value::Double(d)) => Some(d),
                    _ => None,
                };
                let Some(d) = num(get(host::kOfxParamPropDefault)) else {
                    continue;
                };
                let Some(lo) = num(get(host::kOfxParamPropMin)) else {
                    continue;
                };
                let range = [
                    lo,
                    num(get(host::kOfxParamPropDisplayMin)).unwrap(),
                    d,
                    num(get(host::kOfxParamPropDisplayMax)).unwrap(),
                    num(get(host::kOfxParamPropMax)).unwrap(),
                ];
                assert!(
                    range.windows(2).all(|w| w[0] <= w[1]),
                    "{} {name} in {context}: min, display min, default, display max, max = {range:?}",
                    p.id()
                );
            }
        }
    }
    assert_no_violations();
}

/// Item 2: the default segment (start 0) starts at the clip's first frame,
/// which is 1 in Natron (`Engine/Project.cpp`: a new project's range starts at 1),
/// and "Set start here" (InstanceChanged at the timeline's time) moves it
/// to a trimmed clip's first frame far from 0 (Resolve's render times are
/// frames of the source media, e.g. 7665: gyroflow's notes, the NDI
/// plugin's trace).
#[test]
fn the_segment_starts_with_the_clip_and_set_start_here_moves_it() {
    let _serial = serial();
    env_traced();
    const TRIM: f64 = 7665.0;
    // Frame 1 (and TRIM) hold the pattern's frame 0, and so on.
    let pattern = pattern_source(W, H, Depth::Float);
    let source: SourceFn = Arc::new(move |t, scale| {
        let k = if t >= TRIM { t - TRIM } else { t - 1.0 };
        pattern(k.max(0.0), scale)
    });
    let setup = Setup {
        // Natron's range starts at 1; Resolve's spans the whole media.
        frame_range: (1.0, 10_000.0),
        source: Some(source),
        ..edit_setup(Depth::Float, Layout::PLAIN)
    };
    let inst = edit_instance(cogvideox(), setup, 500);
    display_referred(&inst);
    let want = expected(Depth::Float, 1.0, &[PROMPT]);
    for k in [0usize, 8] {
        let r = inst.render(&Render::at(1.0 + k as f64));
        assert_eq!(
            r.status,
            host::kOfxStatOK,
            "{:?}",
            inst.persistent_message()
        );
        assert_same(&r.pixels, &want[0][k], &format!("Natron frame {}", k + 1));
    }
    assert!(ok_or_default(inst.press_at("set_start", TRIM)));
    assert_eq!(inst.param("segment_start"), [Value::Int(TRIM as i32)]);
    let r = inst.render(&Render::at(TRIM + 4.0));
    assert_eq!(
        r.status,
        host::kOfxStatOK,
        "{:?}",
        inst.persistent_message()
    );
    assert_same(&r.pixels, &want[0][4], "the trimmed clip's frame 4");
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// Item 7 (in part): Natron's *Clear All Caches* sends PurgeCaches to
/// every node (`Gui/Gui.cpp` line 534, `AppManager::clearAllCaches`): the
/// results go, the loaded pipeline stays (a 5B checkpoint takes minutes to
/// load), and the next render computes again without loading.
#[test]
fn natron_purge_caches_keeps_the_loaded_pipeline() {
    let _serial = serial();
    env_traced();
    const VERSION: i32 = 700;
    let inst = edit_instance(
        cogvideox(),
        edit_setup(Depth::Float, Layout::PLAIN),
        VERSION,
    );
    display_referred(&inst);
    let want = expected(Depth::Float, 1.0, &[PROMPT]);
    let loads = || {
        let tag = format!(
            "loading LoadKey {{ checkpoint: {:?}",
            checkpoint().to_str().unwrap()
        );
        log().lines().filter(|l| l.contains(&tag)).count()
    };
    let r = inst.render(&Render::at(2.0));
    assert_same(&r.pixels, &want[0][2], "before the purge");
    let before = loads();
    assert!(before >= 1);
    assert!(ok_or_default(inst.action(
        host::kOfxActionPurgeCaches,
        None,
        None
    )));
    let r = inst.render(&Render::at(5.0));
    assert_eq!(r.status, host::kOfxStatOK);
    assert_same(&r.pixels, &want[0][5], "after the purge");
    assert_eq!(loads(), before, "the checkpoint was loaded again");
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// Item 5: Natron instantiates Generate in the general context, which it
/// prefers over generator and filter (`Engine/OfxHost.cpp`, `getContext`:
/// general first); there its Source is optional, and with nothing
/// connected a final render returns the C API's clip (it failed with "no
/// source image").
#[test]
fn natron_generate_in_the_general_context_with_nothing_connected() {
    let _serial = serial();
    env_traced();
    let p = cogvideox().plugin(GENERATE);
    let (_, desc) = p.describe();
    let general = host::kOfxImageEffectContextGeneral;
    let (st, ctx) = p.describe_in_context(&desc, general);
    assert_eq!(st, host::kOfxStatOK);
    let optional = {
        let clips = ctx.clips.lock().unwrap();
        let source = clips.iter().find(|c| c.name == "Source").unwrap();
        source.props.int(host::kOfxImageClipPropOptional)
    };
    assert_eq!(optional, Some(1), "Source is not optional in general");
    let setup = Setup {
        source: None,
        ..edit_setup(Depth::Float, Layout::PLAIN)
    };
    let inst = p.create_instance(&ctx, general, setup).unwrap();
    set_params(&inst, &checkpoint(), 600);
    display_referred(&inst);
    let r = inst.render(&Render::at(3.0));
    assert_eq!(
        r.status,
        host::kOfxStatOK,
        "{:?}",
        inst.persistent_message()
    );
    assert_same(&r.pixels, &expected_generate(1.0)[3], "frame 3");
    assert_eq!(inst.live_images(), 0);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// `p` reduced by `k` in each direction, each pixel the mean of a k x k
/// block (float images).
fn block_mean(p: &host::Pixels, k: usize) -> host::Pixels {
    let (w, h) = (p.width / k, p.height / k);
    let mut out = host::Pixels::new(w, h, Depth::Float);
    for y in 0..h {
        for x in 0..w {
            for c in 0..4 {
                let mut sum = 0.0;
                for sy in y * k..(y + 1) * k {
                    for sx in x * k..(x + 1) * k {
                        sum += p.sample((sy * p.width + sx) * 4 + c);
                    }
                }
                let v = (sum / (k * k) as f64) as f32;
                let i = 4 * ((y * w + x) * 4 + c);
                out.data[i..i + 4].copy_from_slice(&v.to_ne_bytes());
            }
        }
    }
    out
}

/// Natron renders at the viewer's zoom, and probes render-scale support
/// with GetRegionOfDefinition at scale 0.5: where that fails it renders at
/// full size and scales the result itself (Natron `Engine/OfxEffectInstance.cpp`,
/// `ViewerInstance.cpp`; shared/reference/openfx.md section 11). The plugin
/// fails the probe; renders at 1, 0.5 and 0.25 come from one full-size job
/// (below full size its result downscaled), and a render below full size
/// before there is a result starts no job and fails, so that Natron caches
/// nothing wrong (issue 26 item 3).
#[test]
fn natron_zoom_levels_are_served_from_one_full_size_job() {
    let _serial = serial();
    env_traced();
    const VERSION: i32 = 950;
    let inst = edit_instance(
        cogvideox(),
        edit_setup(Depth::Float, Layout::PLAIN),
        VERSION,
    );
    display_referred(&inst);
    let rod = |scale: f64| {
        let args = host::PropSet::new("region of definition args");
        args.set(host::kOfxPropTime, vec![Value::Double(2.0)]);
        args.set(
            host::kOfxImageEffectPropRenderScale,
            vec![Value::Double(scale), Value::Double(scale)],
        );
        let out = host::PropSet::new("region of definition");
        out.set(
            host::kOfxImageEffectPropRegionOfDefinition,
            vec![Value::Double(0.0); 4],
        );
        inst.action(
            host::kOfxImageEffectActionGetRegionOfDefinition,
            Some(&args),
            Some(&out),
        )
    };
    assert_eq!(rod(0.5), host::kOfxStatFailed, "the render-scale probe");
    assert!(ok_or_default(rod(1.0)));

    let at = |scale: f64| Render {
        scale,
        ..Render::at(2.0)
    };
    let r = inst.render(&at(0.25));
    assert_eq!(r.status, host::kOfxStatFailed);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(processed(VERSION), 0, "a render at 0.25 started a job");

    let want = expected(Depth::Float, 1.0, &[PROMPT]);
    let r = inst.render(&at(1.0));
    assert_same(&r.pixels, &want[0][2], "scale 1");
    for (scale, k) in [(0.5, 2), (0.25, 4)] {
        let r = inst.render(&at(scale));
        assert_eq!(r.status, host::kOfxStatOK, "scale {scale}");
        let d = max_diff(&r.pixels, &block_mean(&want[0][2], k));
        // The result is kept at 16 bits: its mean rounds to a 16-bit level.
        assert!(d <= 1.0 / 65535.0, "scale {scale}: differs by {d}");
    }
    assert_eq!(processed(VERSION), 1, "a zoom level processed again");
    assert_eq!(inst.live_images(), 0);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// Natron's frames start at 1 (`Engine/Project.cpp`): Animate's image to
/// animate, `source_frame` 0 by default, is taken no earlier than the
/// clip's first frame, as the segment's start is, so GetFramesNeeded asks
/// for frame 1, not for a frame 0 the clip does not have (issue 26 item 6).
#[test]
fn animate_takes_its_image_no_earlier_than_the_clips_first_frame() {
    let _serial = serial();
    env_traced();
    let p = cogvideox().plugin(ANIMATE);
    let (_, desc) = p.describe();
    let filter = host::kOfxImageEffectContextFilter;
    let (_, ctx) = p.describe_in_context(&desc, filter);
    let setup = Setup {
        frame_range: (1.0, 100.0),
        ..edit_setup(Depth::Float, Layout::PLAIN)
    };
    let inst = p.create_instance(&ctx, filter, setup).unwrap();
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b-i2v");
    set_params(&inst, &checkpoint, 1100);
    assert_eq!(inst.param("source_frame"), [Value::Int(0)]);
    let start = std::time::Instant::now();
    let ranges = loop {
        match inst.frames_needed(5.0) {
            (host::kOfxStatOK, ranges) => break ranges,
            (host::kOfxStatReplyDefault, _) => {
                assert!(start.elapsed().as_secs() < 120, "never loaded");
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            (st, _) => panic!("GetFramesNeeded: {st}"),
        }
    };
    assert_eq!(ranges, [(1.0, 1.0), (5.0, 5.0)]);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// Natron caches GetFramesNeeded's answer per parameter hash, time and
/// scale, and renders only the frames it declares before calling render
/// (`Engine/EffectInstance.cpp`, `ParallelRenderArgs.cpp`; shared
/// reference section 11). Asked while the checkpoint loads, the plugin
/// waits for the load and declares the whole segment, not the current
/// frame only, which Natron would keep (issue 26 item 6).
#[test]
fn natron_frames_needed_while_the_checkpoint_loads_declares_the_segment() {
    let _serial = serial();
    env_traced();
    // A checkpoint folder never loaded in this process.
    let fresh = scratch().join("natron-fresh-checkpoint");
    copy_tree(&checkpoint(), &fresh);
    let inst = edit_instance(cogvideox(), edit_setup(Depth::Byte, Layout::PLAIN), 1200);
    assert!(ok_or_default(
        inst.set_string("checkpoint", fresh.to_str().unwrap())
    ));
    let (st, ranges) = inst.frames_needed(3.0);
    assert_eq!(st, host::kOfxStatOK);
    assert_eq!(ranges, [(0.0, (FRAMES - 1) as f64)]);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// Item 6: Natron works in linear light ("32 bits floating point linear
/// colour processing pipeline", NatronGitHub/Natron `README.md`; float
/// images with values above 1), while the model is trained on
/// display-referred frames. In Natron `colour` defaults to linear on every
/// effect; a final render gives the model the sRGB encoding of the linear
/// source (the C API's result for it, decoded back to linear, is what
/// comes back), not the linear values (which the library would take as
/// display-referred and clamp), and frames outside the segment keep the
/// host's values, highlights above 1 included.
#[test]
fn natron_linear_float_input_is_converted_for_the_model_and_back() {
    let _serial = serial();
    env_traced();
    for id in [EDIT, ANIMATE, GENERATE] {
        let p = cogvideox().plugin(id);
        let (_, desc) = p.describe();
        for context in desc
            .props
            .strings(host::kOfxImageEffectPropSupportedContexts)
        {
            let c = CString::new(context.as_str()).unwrap();
            let (st, ctx) = p.describe_in_context(&desc, &c);
            assert_eq!(st, host::kOfxStatOK);
            let default = ctx.param_props("colour", |p| p.int(host::kOfxParamPropDefault));
            assert_eq!(default, Some(Some(1)), "{id} in {context}: linear");
        }
    }
    const VERSION: i32 = 1300;
    let inst = edit_instance(
        cogvideox(),
        edit_setup(Depth::Float, Layout::PLAIN),
        VERSION,
    );
    let source = pattern(W, H, Depth::Float, 4.0);
    let above_one = (0..source.samples()).filter(|&i| source.sample(i) > 1.0);
    assert!(above_one.count() > 0, "the source has no values above 1");
    let r = inst.render(&Render::at(4.0));
    assert_eq!(
        r.status,
        host::kOfxStatOK,
        "{:?}",
        inst.persistent_message()
    );
    // The same arithmetic as the plugin's; the bound only allows for a
    // last bit of `powf`.
    let d = max_diff(&r.pixels, &expected_linear(&[PROMPT])[0][4]);
    assert!(d <= 1e-5, "differs from the encoded input's result by {d}");
    let plain = max_diff(&r.pixels, &expected(Depth::Float, 1.0, &[PROMPT])[0][4]);
    assert!(plain > 0.01, "the model got the linear values ({plain})");
    // Outside the segment (frames 0 to 8) the host's values pass through.
    let r = inst.render(&Render::at(11.0));
    assert_eq!(r.status, host::kOfxStatOK);
    assert_same(&r.pixels, &pattern(W, H, Depth::Float, 11.0), "frame 11");
    assert_eq!(processed(VERSION), 1);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}
