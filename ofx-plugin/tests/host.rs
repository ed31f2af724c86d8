//! The OpenFX plugins driven through their real entry points by the test
//! host in `host/`: first the OpenFX association's own example plugins
//! (Invert, and Basic, the gain example with parameters), to show the host
//! honest, pixel by pixel; then the CogVideoX bundle on the tiny
//! checkpoint, against the C API's frames for the same inputs.

mod common;
mod fixtures;
#[path = "host/mod.rs"]
mod host;
#[path = "../../tests/common/tools.rs"]
mod tools;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use cogvideox_ofx::capi;
use fixtures::*;
use host::{
    Binary, Depth, Event, HostConfig, Instance, Layout, Pixels, Render, Setup, SourceFn, Temporal,
};

/// Whether the C++ compiler the OpenFX examples need is here; the test is
/// skipped, saying so, when it is not (failed in CI; see `tools`).
fn have_cxx(test: &str) -> bool {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    tools::available(test, &tools::missing_programs(&[(&cxx, &["--version"])]))
}

fn setup(w: usize, h: usize, depth: Depth, layout: Layout, source: Option<SourceFn>) -> Setup {
    Setup {
        depth,
        layout,
        size: (w, h),
        fps: 24.0,
        frame_range: (0.0, 9.0),
        source,
        interactive: false,
    }
}

#[test]
fn invert_example_pixel_by_pixel() {
    if !have_cxx("invert_example_pixel_by_pixel") {
        return;
    }
    env();
    let bin = Binary::load(&host::compile::example("invert"), HostConfig::default()).unwrap();
    let plugins = bin.plugins();
    assert_eq!(plugins.len(), 1);
    let p = &plugins[0];
    assert_eq!(p.id(), "uk.co.thefoundry.OfxInvertExample");
    assert_eq!(p.api(), ("OfxImageEffectPluginAPI".to_string(), 1));
    assert_eq!(p.load(), host::kOfxStatOK);
    let (st, desc) = p.describe();
    assert_eq!(st, host::kOfxStatOK);
    assert_eq!(
        desc.props
            .strings(host::kOfxImageEffectPropSupportedContexts),
        ["OfxImageEffectContextFilter"]
    );
    assert_eq!(
        desc.props
            .strings(host::kOfxImageEffectPropSupportedPixelDepths),
        ["OfxBitDepthByte"]
    );
    let filter = host::kOfxImageEffectContextFilter;
    let (st, ctx) = p.describe_in_context(&desc, filter);
    assert_eq!(st, host::kOfxStatOK);
    assert_eq!(ctx.clip_names(), ["Output", "Source"]);

    // An odd size, so that a row-bytes mistake cannot cancel out.
    let (w, h) = (37, 23);
    for layout in LAYOUTS {
        // invert.cpp declares a second `outputImg` inside its `try`, so it
        // never releases the output image: the host must see each one.
        let mut leaked = Vec::new();
        let src = pattern_source(w, h, Depth::Byte);
        let inst = p
            .create_instance(
                &ctx,
                filter,
                setup(w, h, Depth::Byte, layout, Some(src.clone())),
            )
            .unwrap();
        for scale in [1.0, 0.5] {
            for t in [0.0, 3.0] {
                let r = inst.render(&Render {
                    scale,
                    ..Render::at(t)
                });
                assert_eq!(r.status, host::kOfxStatOK);
                let want = src(t, scale).unwrap();
                assert_eq!((r.pixels.width, r.pixels.height), (want.width, want.height));
                for (i, (&got, &x)) in r.pixels.data.iter().zip(&want.data).enumerate() {
                    assert_eq!(got, 255 - x, "{layout:?} scale {scale} t {t} sample {i}");
                }
                assert!(r.padding_intact, "{layout:?}: wrote into row padding");
                leaked.push(format!("Output@{t}"));
                leaked.sort();
                assert_eq!(inst.unreleased_images(), leaked);
            }
        }
        // The example stops between rows once the host aborts: nothing is
        // written, and the next render (abort lowered) is whole again.
        inst.raise_abort();
        let r = inst.render(&Render::at(1.0));
        assert_eq!(r.status, host::kOfxStatOK);
        assert!(r.pixels.data.iter().all(|&b| b == host::image::FILL));
        assert!(inst.abort_polls() > 0);
        inst.lower_abort();
        let r = inst.render(&Render::at(1.0));
        let want = src(1.0, 1.0).unwrap();
        assert!(
            r.pixels
                .data
                .iter()
                .zip(&want.data)
                .all(|(&g, &x)| g == 255 - x)
        );
        assert_eq!(inst.live_images(), leaked.len() as isize + 2);
        assert_eq!(inst.destroy(), host::kOfxStatReplyDefault);
    }
    assert!(ok_or_default(p.unload()));
    assert_no_violations();
}

/// What the Basic example computes for one sample: `int(v * s)` clamped
/// (8 and 16 bits), `v * s` (float), in single precision as it does.
fn gain(depth: Depth, v: f64, s: f32) -> f64 {
    match depth {
        Depth::Byte => ((v as f32 * s) as i32).clamp(0, 255) as f64,
        Depth::Short => ((v as f32 * s) as i32).clamp(0, 65535) as f64,
        Depth::Float => (v as f32 * s) as f64,
    }
}

#[test]
fn basic_gain_example_with_parameters_pixel_by_pixel() {
    if !have_cxx("basic_gain_example_with_parameters_pixel_by_pixel") {
        return;
    }
    env();
    let bin = Binary::load(&host::compile::example("basic"), HostConfig::default()).unwrap();
    let p = bin.plugin("uk.co.thefoundry.BasicGainPlugin");
    assert_eq!(p.load(), host::kOfxStatOK);
    let (st, desc) = p.describe();
    assert_eq!(st, host::kOfxStatOK);
    // It fetches the host's suites in describe.
    for suite in [
        "OfxImageEffectSuite",
        "OfxPropertySuite",
        "OfxParameterSuite",
        "OfxMemorySuite",
        "OfxMultiThreadSuite",
        "OfxMessageSuite",
    ] {
        assert!(
            bin.events().contains(&Event::Suite(suite.into(), 1, true)),
            "{suite} not fetched"
        );
    }
    assert!(
        bin.events()
            .contains(&Event::Suite("OfxInteractSuite".into(), 1, false)),
        "the interact suite is not offered"
    );
    assert_eq!(
        desc.props
            .strings(host::kOfxImageEffectPropSupportedPixelDepths),
        ["OfxBitDepthByte", "OfxBitDepthShort", "OfxBitDepthFloat"]
    );
    let general = host::kOfxImageEffectContextGeneral;
    let (st, ctx) = p.describe_in_context(&desc, general);
    assert_eq!(st, host::kOfxStatOK);
    assert_eq!(ctx.clip_names(), ["Output", "Source", "Mask"]);
    assert_eq!(
        ctx.params.names(),
        [
            "scale",
            "scaleComponents",
            "componentScales",
            "scaleR",
            "scaleG",
            "scaleB",
            "scaleA",
            "Main"
        ]
    );
    assert_eq!(
        ctx.param_props("scaleR", |p| p.string(host::kOfxParamPropParent)),
        Some(Some("componentScales".to_string()))
    );

    let (w, h) = (29, 17);
    for depth in [Depth::Byte, Depth::Short, Depth::Float] {
        for layout in [LAYOUTS[1], LAYOUTS[3]] {
            let src = pattern_source(w, h, depth);
            let inst = p
                .create_instance(&ctx, general, setup(w, h, depth, layout, Some(src.clone())))
                .unwrap();
            // Defaults: a gain of 1 is the identity, answered by IsIdentity.
            let r = inst.render(&Render::at(2.0));
            assert_eq!(r.identity.as_deref(), Some("Source"));
            assert_eq!(r.pixels, src(2.0, 1.0).unwrap());

            assert!(ok_or_default(inst.set_double("scale", 0.5)));
            let check = |t: f64, scale: f64, gains: [f32; 4]| {
                let r = inst.render(&Render {
                    scale,
                    ..Render::at(t)
                });
                assert_eq!(r.status, host::kOfxStatOK, "{depth:?}");
                assert_eq!(r.identity, None);
                let want = src(t, scale).unwrap();
                for i in 0..want.samples() {
                    let expected = gain(depth, want.sample(i), gains[i % 4]);
                    assert_eq!(
                        r.pixels.sample(i),
                        expected,
                        "{depth:?} {layout:?} t {t} scale {scale} sample {i}"
                    );
                }
                assert!(r.padding_intact);
                assert_eq!(inst.live_images(), 0);
            };
            check(4.0, 1.0, [0.5; 4]);
            check(4.0, 0.5, [0.5; 4]);

            // Per-component gains: the example enables them on the change.
            assert_eq!(
                inst.effect
                    .param_props("scaleR", |p| p.int(host::kOfxParamPropEnabled)),
                Some(Some(0))
            );
            assert_eq!(inst.set_int("scaleComponents", 1), host::kOfxStatOK);
            assert_eq!(
                inst.effect
                    .param_props("scaleR", |p| p.int(host::kOfxParamPropEnabled)),
                Some(Some(1))
            );
            for (name, v) in [
                ("scaleR", 2.0),
                ("scaleG", 0.25),
                ("scaleB", 1.5),
                ("scaleA", 0.75),
            ] {
                assert!(ok_or_default(inst.set_double(name, v)));
            }
            check(5.0, 1.0, [1.0, 0.125, 0.75, 0.375]);
            assert_eq!(inst.destroy(), host::kOfxStatOK);
        }
    }
    assert!(ok_or_default(p.unload()));
    assert_no_violations();
}

/// The host's own temporal access, through the suite a plugin would call
/// (no plugin fetches other times yet; the CogVideoX effects will).
#[test]
fn temporal_access_modes_serve_what_they_promise() {
    if !have_cxx("temporal_access_modes_serve_what_they_promise") {
        return;
    }
    env();
    for temporal in [Temporal::Full, Temporal::CurrentOnly, Temporal::None] {
        let config = HostConfig {
            temporal,
            ..HostConfig::default()
        };
        let bin = Binary::load(&host::compile::example("invert"), config).unwrap();
        let p = &bin.plugins()[0];
        assert_eq!(p.load(), host::kOfxStatOK);
        let (_, desc) = p.describe();
        // As a plugin with temporal access would declare it.
        desc.props.set(
            host::kOfxImageEffectPropTemporalClipAccess,
            vec![host::Value::Int(1)],
        );
        let filter = host::kOfxImageEffectContextFilter;
        let (_, ctx) = p.describe_in_context(&desc, filter);
        let src = pattern_source(8, 6, Depth::Byte);
        let inst = p
            .create_instance(
                &ctx,
                filter,
                setup(8, 6, Depth::Byte, LAYOUTS[2], Some(src.clone())),
            )
            .unwrap();
        let got = host::fetch_in_render(&inst, 2.0, 5.0);
        match temporal {
            Temporal::Full => assert_eq!(got, src(5.0, 1.0)),
            Temporal::CurrentOnly => assert_eq!(got, src(2.0, 1.0)),
            Temporal::None => assert_eq!(got, None),
        }
        // Outside a render no image is given (images belong to renders).
        assert_eq!(host::fetch_outside_render(&inst, 5.0), None);
        assert_eq!(inst.live_images(), 0);
        let fetches: Vec<_> = inst
            .events()
            .into_iter()
            .filter(|e| matches!(e, Event::Fetch { .. }))
            .collect();
        assert_eq!(fetches.len(), 2, "{fetches:?}");
        inst.destroy();
    }
    assert_no_violations();
}

// ---------------------------------------------------------------------------
// The CogVideoX bundle on the tiny checkpoint (steps 2, 9 frames, 96x64).

/// The bundle's binary, loaded once per process with Load sent to each
/// effect, in a host without temporal access that gives the current image
/// for any time (as MLT): the effects must collect a segment as it is
/// rendered, which stays true once they can fetch other times from hosts
/// that allow it. (A plugin keeps one host per process, so a host with
/// temporal access needs a test binary of its own.)
fn cogvideox() -> &'static Binary {
    static BIN: OnceLock<Binary> = OnceLock::new();
    BIN.get_or_init(|| {
        let config = HostConfig {
            temporal: Temporal::CurrentOnly,
            ..HostConfig::default()
        };
        let bin = Binary::load(&common::bundle_file("CogVideoX.ofx"), config).unwrap();
        for p in bin.plugins() {
            assert_eq!(p.load(), host::kOfxStatOK, "{}", p.id());
        }
        bin
    })
}

fn edit_instance(setup: Setup, cache_version: i32) -> Instance {
    fixtures::edit_instance(cogvideox(), setup, cache_version)
}

#[test]
fn cogvideox_effects_describe_in_every_context() {
    env();
    let bin = cogvideox();
    let ids: Vec<String> = bin.plugins().iter().map(|p| p.id()).collect();
    assert_eq!(ids, [EDIT, ANIMATE, GENERATE]);
    // Hosts such as MLT send Load and Unload many times per process.
    for p in bin.plugins() {
        assert_eq!(p.load(), host::kOfxStatOK);
        assert!(ok_or_default(p.unload()));
    }
    for suite in [
        "OfxPropertySuite",
        "OfxImageEffectSuite",
        "OfxParameterSuite",
    ] {
        assert!(bin.events().contains(&Event::Suite(suite.into(), 1, true)));
    }
    let filter = host::kOfxImageEffectContextFilter;
    let general = host::kOfxImageEffectContextGeneral;
    let generator = host::kOfxImageEffectContextGenerator;
    let common_params = [
        "checkpoint",
        "device",
        "device_index",
        "dtype",
        "vae_tiling",
        "resize_mode",
        "prompt",
        "negative_prompt",
        "steps",
        "guidance",
        "seed",
        "width",
        "height",
    ];
    for (id, label, contexts, own) in [
        (
            EDIT,
            "CogVideoX Edit",
            vec![filter, general],
            &["start_from_inverted", "strength"][..],
        ),
        (
            ANIMATE,
            "CogVideoX Animate",
            vec![filter, general],
            &["source_frame"][..],
        ),
        // Filter and general too, for hosts without generators (MLT).
        (
            GENERATE,
            "CogVideoX Generate",
            vec![generator, filter, general],
            &[][..],
        ),
    ] {
        let p = bin.plugin(id);
        assert_eq!(p.api(), ("OfxImageEffectPluginAPI".to_string(), 1));
        assert_eq!(p.version().0, 1);
        let (st, desc) = p.describe();
        assert_eq!(st, host::kOfxStatOK, "{id}");
        assert_eq!(
            desc.props.string(host::kOfxPropLabel).as_deref(),
            Some(label)
        );
        assert_eq!(
            desc.props
                .string(host::kOfxImageEffectPluginPropGrouping)
                .as_deref(),
            Some("CogVideoX")
        );
        let names: Vec<String> = contexts
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            desc.props
                .strings(host::kOfxImageEffectPropSupportedContexts),
            names
        );
        assert_eq!(
            desc.props
                .strings(host::kOfxImageEffectPropSupportedPixelDepths),
            ["OfxBitDepthByte", "OfxBitDepthShort", "OfxBitDepthFloat"]
        );
        assert_eq!(
            desc.props
                .string(host::kOfxImageEffectPluginRenderThreadSafety)
                .as_deref(),
            Some("OfxImageEffectRenderFullySafe")
        );
        assert_eq!(
            desc.props.int(host::kOfxImageEffectPropSupportsTiles),
            Some(0)
        );
        // Declared only where the host has temporal access (this one has
        // not; `tests/host_temporal.rs` has).
        assert_eq!(
            desc.props.int(host::kOfxImageEffectPropTemporalClipAccess),
            Some(0)
        );
        for &context in &contexts {
            let (st, ctx) = p.describe_in_context(&desc, context);
            assert_eq!(st, host::kOfxStatOK, "{id} in {context:?}");
            let clips = if context == generator {
                vec!["Output"]
            } else {
                vec!["Output", "Source"]
            };
            assert_eq!(ctx.clip_names(), clips, "{id} in {context:?}");
            let params = ctx.params.names();
            let segment = ["segment_start", "set_start", "segment_length", "frame_step"];
            let control = ["process", "cache_version", "status"];
            for name in common_params
                .iter()
                .chain(own)
                .chain(&segment)
                .chain(&control)
            {
                assert!(params.iter().any(|p| p == name), "{id} lacks {name}");
            }
            let ty = |name: &str| {
                ctx.param_props(name, |p| p.string(host::kOfxParamPropType))
                    .flatten()
                    .unwrap()
            };
            assert_eq!(ty("prompt"), "OfxParamTypeString");
            assert_eq!(ty("steps"), "OfxParamTypeInteger");
            assert_eq!(ty("guidance"), "OfxParamTypeDouble");
            assert_eq!(ty("device"), "OfxParamTypeChoice");
            assert_eq!(ty("process"), "OfxParamTypePushButton");
            // A whole segment depends on them: none animates.
            for name in &params {
                if ty(name) != "OfxParamTypePushButton" {
                    let animates = ctx.param_props(name, |p| p.int(host::kOfxParamPropAnimates));
                    assert_eq!(animates, Some(Some(0)), "{id}: {name} animates");
                }
            }

            // An instance in this context, with the defaults.
            let source = (context != generator).then(|| pattern_source(W, H, Depth::Byte));
            let setup = Setup {
                source,
                ..edit_setup(Depth::Byte, Layout::PLAIN)
            };
            let inst = p.create_instance(&ctx, context, setup).unwrap();
            assert_eq!(inst.param("steps"), [host::Value::Int(50)]);
            assert_eq!(inst.param("seed"), [host::Value::Int(42)]);
            assert_eq!(inst.param("guidance"), [host::Value::Double(6.0)]);
            // Automatic device and precision (COGVIDEO_DEVICE_AUTO, _DTYPE_AUTO).
            assert_eq!(inst.param("device"), [host::Value::Int(2)]);
            assert_eq!(inst.param("dtype"), [host::Value::Int(3)]);
            if context != generator {
                // Without temporal access the host's default (this frame).
                assert_eq!(
                    inst.frames_needed(4.0),
                    (host::kOfxStatReplyDefault, vec![(4.0, 4.0)])
                );
            }
            assert!(ok_or_default(inst.press("process")));
            // "Set start here" moves the segment to the timeline's frame.
            assert!(ok_or_default(inst.press_at("set_start", 5.0)));
            assert_eq!(inst.param("segment_start"), [host::Value::Int(5)]);
            assert!(ok_or_default(inst.destroy()));
        }
    }
    // The trace switch is off here.
    let log = std::fs::read_to_string(scratch().join("plugin.log")).unwrap_or_default();
    assert!(!log.contains("trace:"), "traced without the switch");
    assert_no_violations();
}

/// CogVideoX Generate in the generator context: every frame of the segment
/// equals `cogvideo_generate_video`'s, black outside the segment.
#[test]
fn cogvideox_generate_renders_the_c_api_clip() {
    env();
    const VERSION: i32 = 800;
    let p = cogvideox().plugin(GENERATE);
    let (_, desc) = p.describe();
    let generator = host::kOfxImageEffectContextGenerator;
    let (_, ctx) = p.describe_in_context(&desc, generator);
    let setup = Setup {
        source: None,
        ..edit_setup(Depth::Float, LAYOUTS[3])
    };
    let inst = p.create_instance(&ctx, generator, setup).unwrap();
    set_params(&inst, &checkpoint(), VERSION);
    let want = expected_generate(1.0);
    for k in [4, 0, 1, 2, 3, 5, 6, 7, 8] {
        let r = inst.render(&Render::at(k as f64));
        assert_eq!(r.status, host::kOfxStatOK);
        assert!(r.padding_intact);
        assert_same(&r.pixels, &want[k], &format!("generate, frame {k}"));
    }
    assert_eq!(generated(VERSION), 1);
    let r = inst.render(&Render::at(10.0));
    assert!(
        (0..r.pixels.samples()).all(|i| r.pixels.sample(i) == 0.0),
        "not black outside the segment"
    );
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}

/// Every frame of a segment through an Edit instance as a host without
/// temporal access renders them (the plugin collects the sources, then
/// processes), a second pass from the cache, a second instance with
/// negative row bytes served from the same cache, a new prompt, interactive
/// renders of cached frames, a frame outside the segment; all equal to the
/// C API's frames.
#[test]
fn cogvideox_edit_renders_every_frame_of_a_segment_as_the_c_api() {
    env();
    const VERSION: i32 = 100;
    let inst = edit_instance(edit_setup(Depth::Byte, Layout::PLAIN), VERSION);
    let src = pattern_source(W, H, Depth::Byte);
    let want = expected(Depth::Byte, 1.0, &[PROMPT, PROMPT_2]);

    // First pass: each frame passes through while the segment is collected
    // (the status parameter says the same as the message); the last one
    // completes it, and its final render waits for the result.
    for k in 0..FRAMES - 1 {
        let t = k as f64;
        let r = inst.render(&Render::at(t));
        assert_eq!(r.status, host::kOfxStatOK);
        assert_eq!(r.pixels, src(t, 1.0).unwrap(), "frame {k}: not the source");
        assert!(
            message(&inst).contains(&format!("collected {} of {FRAMES} frames", k + 1)),
            "frame {k}: {:?}",
            inst.persistent_message()
        );
        assert_eq!(status(&inst), message(&inst));
    }
    let last = (FRAMES - 1) as f64;
    let r = inst.render(&Render::at(last));
    assert_eq!(r.status, host::kOfxStatOK);
    assert_same(&r.pixels, &want[0][FRAMES - 1], "first pass, last frame");
    assert_eq!(processed(VERSION), 1);
    assert_eq!(status(&inst), "done: the result");
    assert!(
        inst.events()
            .iter()
            .any(|e| matches!(e, Event::ProgressStart(..)))
    );
    assert!(
        inst.events()
            .iter()
            .any(|e| matches!(e, Event::ProgressEnd(..)))
    );

    // Second pass, from the cache, final then interactive.
    for interactive in [false, true] {
        for k in 0..FRAMES {
            let r = inst.render(&Render {
                interactive,
                ..Render::at(k as f64)
            });
            assert_eq!(r.status, host::kOfxStatOK);
            assert_same(&r.pixels, &want[0][k], &format!("second pass, frame {k}"));
        }
    }
    // Outside the segment the source passes through.
    let r = inst.render(&Render::at(10.0));
    assert_eq!(r.pixels, src(10.0, 1.0).unwrap());
    assert_eq!(inst.live_images(), 0);

    // Another instance (hosts such as MLT make one per frame), bottom-up
    // rows in memory with padding: the same results, from the cache.
    let other = edit_instance(edit_setup(Depth::Byte, LAYOUTS[3]), VERSION);
    for k in (0..FRAMES).rev() {
        let r = other.render(&Render::at(k as f64));
        assert!(r.padding_intact, "frame {k}: wrote into row padding");
        assert_same(
            &r.pixels,
            &want[0][k],
            &format!("negative row bytes, frame {k}"),
        );
    }
    assert_eq!(processed(VERSION), 1, "the second instance processed again");
    assert!(ok_or_default(other.destroy()));

    // A new prompt: computed again (the inversion is kept), the first
    // render that asks for it.
    assert!(ok_or_default(inst.set_string("prompt", PROMPT_2)));
    for k in 0..FRAMES {
        let r = inst.render(&Render::at(k as f64));
        assert_same(&r.pixels, &want[1][k], &format!("new prompt, frame {k}"));
    }
    assert_eq!(processed(VERSION), 2);
    assert_eq!(inst.live_images(), 0);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}

/// 16-bit images at render scale 0.5 (a 48x32 source is its own segment),
/// rows bottom-up in memory.
#[test]
fn cogvideox_edit_at_render_scale_half_in_16_bit() {
    env();
    const VERSION: i32 = 200;
    let inst = edit_instance(edit_setup(Depth::Short, LAYOUTS[2]), VERSION);
    let want = expected(Depth::Short, 0.5, &[PROMPT]);
    let half = |t: f64| Render {
        scale: 0.5,
        ..Render::at(t)
    };
    for k in 0..FRAMES {
        inst.render(&half(k as f64));
    }
    for k in 0..FRAMES {
        let r = inst.render(&half(k as f64));
        assert_eq!((r.pixels.width, r.pixels.height), (W / 2, H / 2));
        assert_same(&r.pixels, &want[0][k], &format!("scale 0.5, frame {k}"));
    }
    assert_eq!(processed(VERSION), 1);
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}

/// Two threads render the frames of one instance at once (the plugin
/// declares itself fully thread safe): the segment is processed once and
/// every frame equals the C API's.
#[test]
fn cogvideox_edit_concurrent_renders() {
    env();
    const VERSION: i32 = 300;
    let inst = edit_instance(edit_setup(Depth::Byte, Layout::PLAIN), VERSION);
    let want = expected(Depth::Byte, 1.0, &[PROMPT, PROMPT_2]);
    let src = pattern_source(W, H, Depth::Byte);
    let pass = |first: bool| {
        std::thread::scope(|s| {
            for parity in 0..2 {
                let (inst, want, src) = (&inst, &want, &src);
                s.spawn(move || {
                    for k in (parity..FRAMES).step_by(2) {
                        let t = k as f64;
                        let r = inst.render(&Render::at(t));
                        assert_eq!(r.status, host::kOfxStatOK);
                        // While collecting: the source; from the render that
                        // completes the segment on: the result.
                        if !(first && r.pixels == src(t, 1.0).unwrap()) {
                            assert_same(&r.pixels, &want[0][k], &format!("frame {k}"));
                        }
                    }
                });
            }
        })
    };
    pass(true);
    pass(false);
    assert_eq!(processed(VERSION), 1);
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}

/// The host aborts while the segment is processed: the render returns
/// within a second (the source, with a status), and the next render
/// processes the segment in full.
#[test]
fn cogvideox_edit_abort_in_the_middle_of_processing() {
    env();
    const VERSION: i32 = 400;
    let inst = edit_instance(edit_setup(Depth::Float, LAYOUTS[1]), VERSION);
    let src = pattern_source(W, H, Depth::Float);
    for k in 0..FRAMES - 1 {
        inst.render(&Render::at(k as f64));
    }
    let last = (FRAMES - 1) as f64;
    inst.abort_at_progress_update(3);
    let r = inst.render(&Render::at(last));
    let raised = inst
        .abort_raised_at()
        .expect("the plugin reported progress");
    let returned_after = raised.elapsed();
    assert!(
        returned_after < Duration::from_secs(1),
        "returned {returned_after:?} after the abort"
    );
    assert_eq!(r.status, host::kOfxStatOK);
    assert_eq!(
        r.pixels,
        src(last, 1.0).unwrap(),
        "an aborted frame shows the source"
    );
    assert!(!message(&inst).is_empty());

    inst.lower_abort();
    let r = inst.render(&Render::at(last));
    let want = expected(Depth::Float, 1.0, &[PROMPT]);
    assert_same(&r.pixels, &want[0][FRAMES - 1], "after the abort");
    assert_eq!(processed(VERSION), 2);
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}

/// An interactive render while another thread processes the segment
/// returns at once with the source and a status, and the final render gets
/// the result.
#[test]
fn cogvideox_edit_interactive_render_while_processing_returns_at_once() {
    env();
    const VERSION: i32 = 500;
    let inst = edit_instance(edit_setup(Depth::Byte, Layout::PLAIN), VERSION);
    let src = pattern_source(W, H, Depth::Byte);
    for k in 0..FRAMES - 1 {
        inst.render(&Render::at(k as f64));
    }
    let last = FRAMES - 1;
    std::thread::scope(|s| {
        let inst = &inst;
        let worker = s.spawn(move || inst.render(&Render::at(last as f64)));
        while !inst
            .events()
            .iter()
            .any(|e| matches!(e, Event::ProgressStart(..)))
        {
            assert!(
                !worker.is_finished(),
                "processed without reporting progress"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let r = inst.render(&Render {
            interactive: true,
            ..Render::at(3.0)
        });
        assert!(!worker.is_finished(), "too late to tell");
        assert!(r.elapsed < Duration::from_secs(1), "waited {:?}", r.elapsed);
        assert_eq!(r.pixels, src(3.0, 1.0).unwrap());
        // Queued while other tests' jobs hold the one worker.
        let m = message(inst);
        assert!(m.contains("processing") || m.contains("queued"), "{m:?}");
        let done = worker.join().unwrap();
        let want = expected(Depth::Byte, 1.0, &[PROMPT, PROMPT_2]);
        assert_same(&done.pixels, &want[0][last], "final render");
    });
    inst.destroy();
    assert_no_violations();
}

/// CogVideoX Animate on the image-to-video checkpoint: the source frame at
/// `source_frame` becomes the segment's clip, computed when that frame is
/// rendered; every frame equals the C API's.
#[test]
fn cogvideox_animate_renders_the_c_api_clip() {
    env();
    let p = cogvideox().plugin(ANIMATE);
    let (_, desc) = p.describe();
    let general = host::kOfxImageEffectContextGeneral;
    let (st, ctx) = p.describe_in_context(&desc, general);
    assert_eq!(st, host::kOfxStatOK);
    let inst = p
        .create_instance(&ctx, general, edit_setup(Depth::Byte, LAYOUTS[2]))
        .unwrap();
    let checkpoint = common::repo().join("tests/data/tiny/cogvideox-5b-i2v");
    // Image-to-video's default segment is 49 frames; the shared ones set {FRAMES}.
    set_params(&inst, &checkpoint, 600);
    assert!(ok_or_default(inst.set_int("source_frame", 2)));
    let src = pattern_source(W, H, Depth::Byte);
    // Before the image is seen: the source, with a status.
    let r = inst.render(&Render::at(0.0));
    assert_eq!(r.pixels, src(0.0, 1.0).unwrap());
    assert!(
        message(&inst).contains("waiting for host frame 2"),
        "{:?}",
        inst.persistent_message()
    );

    let image = src(2.0, 1.0).unwrap();
    let inputs = common::AnimateInputs {
        checkpoint: &checkpoint,
        prompt: PROMPT,
        frames: FRAMES,
        steps: STEPS,
        seed: SEED as u64,
        guidance: GUIDANCE as f32,
    };
    let frames = [image.data.clone()];
    let want = common::c_api_animate(
        &inputs,
        &common::Frames {
            width: W,
            height: H,
            format: capi::FORMAT_RGBA8,
            frames: &frames,
        },
    );
    for k in [2, 0, 1, 3, 4, 5, 6, 7, 8] {
        let r = inst.render(&Render::at(k as f64));
        assert_eq!(r.status, host::kOfxStatOK);
        let want = Pixels {
            width: W,
            height: H,
            depth: Depth::Byte,
            data: want[k].clone(),
        };
        assert_same(&r.pixels, &want, &format!("animate, frame {k}"));
    }
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}

/// A checkpoint folder without a model: every frame passes the source
/// through with an error naming the log, the load is not retried on every
/// frame, and Process retries it.
#[test]
fn cogvideox_broken_checkpoint_passes_the_source_through_and_says_why() {
    env();
    let broken = scratch().join("empty-checkpoint");
    std::fs::create_dir_all(&broken).unwrap();
    let inst = edit_instance(edit_setup(Depth::Byte, Layout::PLAIN), 700);
    assert!(ok_or_default(
        inst.set_string("checkpoint", broken.to_str().unwrap())
    ));
    let loads = || {
        let log = std::fs::read_to_string(scratch().join("plugin.log")).unwrap_or_default();
        let tag = format!(
            "loading LoadKey {{ checkpoint: {:?}",
            broken.to_str().unwrap()
        );
        log.lines().filter(|l| l.contains(&tag)).count()
    };
    let src = pattern_source(W, H, Depth::Byte);
    for k in 0..3 {
        let r = inst.render(&Render::at(k as f64));
        assert_eq!(r.status, host::kOfxStatOK);
        assert_eq!(r.pixels, src(k as f64, 1.0).unwrap());
        let (kind, text) = inst.persistent_message().expect("an error message");
        assert_eq!(kind, "OfxMessageError", "{text}");
        assert!(text.contains("cannot load the checkpoint"), "{text}");
        assert_eq!(status(&inst), text);
        let log = scratch().join("plugin.log");
        assert!(
            text.contains(&format!("(log: {})", log.display())),
            "{text}"
        );
    }
    assert_eq!(loads(), 1, "the broken checkpoint was loaded again");
    assert!(ok_or_default(inst.press("process")));
    inst.render(&Render::at(0.0));
    assert_eq!(loads(), 2, "Process did not retry");
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}

/// Interactive renders of frame `t` (one at a time, as a user scrubbing)
/// until `done` holds for one, each returning within a second; that one.
fn poll(inst: &Instance, t: f64, done: impl Fn(&host::Rendered) -> bool) -> host::Rendered {
    let start = Instant::now();
    loop {
        let r = inst.render(&Render {
            interactive: true,
            ..Render::at(t)
        });
        assert_eq!(r.status, host::kOfxStatOK);
        assert!(
            r.elapsed < Duration::from_secs(1),
            "an interactive render waited {:?}",
            r.elapsed
        );
        // A result clears the message; the status says so.
        match message(inst).as_str() {
            "" => assert_eq!(status(inst), "done: the result"),
            m => assert_eq!(status(inst), m),
        }
        if done(&r) {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "still {:?}",
            inst.persistent_message()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Interactive renders of every frame of a segment, the checkpoint loaded
/// first: each passes the source through at once; the last one queues the
/// segment.
fn collect_interactively(inst: &Instance, src: &SourceFn) {
    poll(inst, 0.0, |_| !message(inst).contains("loading"));
    for k in 0..FRAMES {
        let r = poll(inst, k as f64, |_| true);
        assert_eq!(r.pixels, src(k as f64, 1.0).unwrap(), "frame {k}");
    }
    assert!(
        message(inst).contains("queued for processing"),
        "{:?}",
        inst.persistent_message()
    );
}

/// The background worker: interactive renders never wait; once the
/// segment is complete they show its status until the result is ready
/// (the plugin cannot make the host redraw, so the test renders again as a
/// user scrubbing would), then the result; the segment is processed once.
#[test]
fn cogvideox_edit_processes_in_the_background_while_interactive_renders_return_at_once() {
    env();
    const VERSION: i32 = 900;
    let inst = edit_instance(edit_setup(Depth::Byte, Layout::PLAIN), VERSION);
    let src = pattern_source(W, H, Depth::Byte);
    let want = expected(Depth::Byte, 1.0, &[PROMPT, PROMPT_2]);
    collect_interactively(&inst, &src);
    let r = poll(&inst, 4.0, |r| r.pixels != src(4.0, 1.0).unwrap());
    assert_same(&r.pixels, &want[0][4], "the first result shown");
    for k in 0..FRAMES {
        let r = poll(&inst, k as f64, |_| true);
        assert_same(&r.pixels, &want[0][k], &format!("frame {k}"));
    }
    assert_eq!(status(&inst), "done: the result");
    assert_eq!(processed(VERSION), 1);
    assert!(
        !inst
            .events()
            .iter()
            .any(|e| matches!(e, Event::ProgressStart(..))),
        "interactive renders reported progress"
    );
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}

/// A final render waits for the segment a background job processes; the
/// host aborts it: it returns within a second with the source and says
/// so, and the next final render gets the result.
#[test]
fn cogvideox_edit_abort_of_a_final_render_while_a_background_job_runs() {
    env();
    const VERSION: i32 = 1000;
    let inst = edit_instance(edit_setup(Depth::Byte, LAYOUTS[1]), VERSION);
    let src = pattern_source(W, H, Depth::Byte);
    let want = expected(Depth::Byte, 1.0, &[PROMPT, PROMPT_2]);
    collect_interactively(&inst, &src);
    let source = src(4.0, 1.0).unwrap();
    let r = poll(&inst, 4.0, |r| {
        message(&inst).contains("processing") || r.pixels != source
    });
    assert_eq!(
        r.pixels, source,
        "the job ended before the test could abort"
    );

    inst.abort_at_progress_update(1);
    let r = inst.render(&Render::at(4.0));
    let raised = inst
        .abort_raised_at()
        .expect("the final render reported progress");
    let returned_after = raised.elapsed();
    assert!(
        returned_after < Duration::from_secs(1),
        "returned {returned_after:?} after the abort"
    );
    assert_eq!(r.status, host::kOfxStatOK);
    assert_eq!(r.pixels, src(4.0, 1.0).unwrap());
    assert!(message(&inst).contains("aborted"), "{:?}", message(&inst));
    assert_eq!(status(&inst), message(&inst));

    inst.lower_abort();
    for k in [4, 0, 8] {
        let r = inst.render(&Render::at(k as f64));
        assert_same(
            &r.pixels,
            &want[0][k],
            &format!("after the abort, frame {k}"),
        );
    }
    // Processed again unless the job ended before it saw the cancellation.
    assert!((1..=2).contains(&processed(VERSION)));
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}

/// RGB images (no alpha), 16-bit, bottom-up rows with padding: the plugin
/// reads them as opaque RGBA and writes the result's colour only.
#[test]
fn cogvideox_edit_rgb_images() {
    env();
    const VERSION: i32 = 1100;
    let layout = Layout {
        negative: true,
        padding: 6,
        rgb: true,
    };
    let inst = edit_instance(edit_setup(Depth::Short, layout), VERSION);
    let src = pattern_source(W, H, Depth::Short);
    let want = expected_opaque(Depth::Short, &[PROMPT]);
    for k in 0..FRAMES - 1 {
        let r = inst.render(&Render::at(k as f64));
        let mut source = src(k as f64, 1.0).unwrap();
        set_alpha(&mut source, &[0, 0]);
        assert_eq!(r.pixels, source, "frame {k}: not the source's colour");
        assert!(r.padding_intact);
    }
    for k in (0..FRAMES).rev() {
        let r = inst.render(&Render::at(k as f64));
        assert!(r.padding_intact);
        let mut want = want[0][k].clone();
        set_alpha(&mut want, &[0, 0]);
        assert_same(&r.pixels, &want, &format!("RGB, frame {k}"));
    }
    assert_eq!(processed(VERSION), 1);
    assert_eq!(inst.live_images(), 0);
    inst.destroy();
    assert_no_violations();
}
