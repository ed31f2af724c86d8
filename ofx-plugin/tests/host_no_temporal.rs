//! The CogVideoX bundle in a test host where fetching a source frame at
//! another time than the render's fails (neither temporal access nor MLT's
//! "current image for any time"): Edit collects its segment as the frames
//! are rendered, as in `tests/host.rs`, and never asks for another time. A
//! plugin keeps one host per process, hence this binary of its own.

// Shared with tests/host.rs, which uses all of them.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod fixtures;
#[allow(dead_code)]
#[path = "host/mod.rs"]
mod host;

use fixtures::*;
use host::{Binary, Depth, Event, HostConfig, Layout, Render, Temporal};

#[test]
fn cogvideox_edit_collects_its_segment_where_other_times_fail() {
    env();
    let config = HostConfig {
        temporal: Temporal::None,
        ..HostConfig::default()
    };
    let bin = Binary::load(&common::bundle_file("CogVideoX.ofx"), config).unwrap();
    for p in bin.plugins() {
        assert_eq!(p.load(), host::kOfxStatOK, "{}", p.id());
    }
    const VERSION: i32 = 100;
    let inst = edit_instance(&bin, edit_setup(Depth::Byte, Layout::PLAIN), VERSION);
    // No temporal access: the host's default.
    assert_eq!(
        inst.frames_needed(4.0),
        (host::kOfxStatReplyDefault, vec![(4.0, 4.0)])
    );
    let src = pattern_source(W, H, Depth::Byte);
    for k in 0..FRAMES - 1 {
        let r = inst.render(&Render::at(k as f64));
        assert_eq!(r.pixels, src(k as f64, 1.0).unwrap(), "frame {k}");
        assert!(
            message(&inst).contains(&format!("collected {} of {FRAMES} frames", k + 1)),
            "frame {k}: {:?}",
            message(&inst)
        );
        assert_eq!(status(&inst), message(&inst));
    }
    let want = expected(Depth::Byte, 1.0, &[PROMPT]);
    for k in (0..FRAMES).rev() {
        let r = inst.render(&Render::at(k as f64));
        assert_same(&r.pixels, &want[0][k], &format!("frame {k}"));
    }
    assert_eq!(processed(VERSION), 1);
    let other_times = inst
        .events()
        .iter()
        .any(|e| matches!(e, Event::Fetch { time, render_time: Some(rt), .. } if time != rt));
    assert!(!other_times, "fetched a source frame at another time");
    assert_eq!(inst.live_images(), 0);
    assert!(ok_or_default(inst.destroy()));
    assert_no_violations();
}
