//! The CogVideoX bundle under a small memory bound
//! (`COGVIDEOX_OFX_MEMORY_GB`, set for this process only, hence this
//! binary of its own): Edit's segments beyond it are dropped, least
//! recently used first, each accounted at its sources and results as the
//! plugin keeps them (16 bits per channel for a float host), and a dropped
//! segment's result is read back from the disk cache, not computed again
//! (issue 26 item 7). Resolve keeps the plugin in its own process for the
//! whole session (gyroflow's plugin notes; shared/reference/openfx.md
//! section 11), so what the caches hold must stay bounded.

// Shared with tests/host.rs, which uses all of them.
#[allow(dead_code)]
mod common;
#[allow(dead_code)]
mod fixtures;
#[allow(dead_code)]
#[path = "host/mod.rs"]
mod host;

use fixtures::*;
use host::{Binary, Depth, HostConfig, Layout, Render, Temporal};

/// Bytes one of this test's segments holds: its sources and its results,
/// FRAMES frames each, RGBA at 16 bits.
const SEGMENT_BYTES: usize = 2 * FRAMES * W * H * 4 * 2;

#[test]
fn cogvideox_edit_segments_beyond_the_memory_bound_are_dropped_oldest_first() {
    // Room for one segment, not two. Set before any thread of the plugin
    // reads it (this binary's only test, before the plugin loads).
    let gb = 1.2 * SEGMENT_BYTES as f64 / (1u64 << 30) as f64;
    // SAFETY: no other thread runs yet.
    unsafe { std::env::set_var("COGVIDEOX_OFX_MEMORY_GB", gb.to_string()) };
    env();
    let config = HostConfig {
        temporal: Temporal::Full,
        ..HostConfig::default()
    };
    let bin = Binary::load(&common::bundle_file("CogVideoX.ofx"), config).unwrap();
    for p in bin.plugins() {
        assert_eq!(p.load(), host::kOfxStatOK, "{}", p.id());
    }
    let dropped = || {
        let log = std::fs::read_to_string(scratch().join("plugin.log")).unwrap_or_default();
        log.lines()
            .filter_map(|l| l.split("an entry of ").nth(1))
            .map(|rest| rest.split(' ').next().unwrap().parse::<usize>().unwrap())
            .collect::<Vec<usize>>()
    };
    const A: i32 = 100;
    const B: i32 = 101;
    let want = expected(Depth::Float, 1.0, &[PROMPT]);
    let a = edit_instance(&bin, edit_setup(Depth::Float, Layout::PLAIN), A);
    let r = a.render(&Render::at(2.0));
    assert_same(&r.pixels, &want[0][2], "segment A");
    assert!(dropped().is_empty(), "one segment is within the bound");

    // A second segment (another cache version: the same frames, another
    // key) takes the room: A, the least recently used, is dropped whole.
    let b = edit_instance(&bin, edit_setup(Depth::Float, Layout::PLAIN), B);
    let r = b.render(&Render::at(3.0));
    assert_same(&r.pixels, &want[0][3], "segment B");
    assert_eq!(dropped(), [SEGMENT_BYTES], "segment A dropped");

    // A again: its sources fetched anew, its result read from the disk
    // cache; B is dropped in turn.
    let r = a.render(&Render::at(5.0));
    assert_same(&r.pixels, &want[0][5], "segment A again");
    assert_eq!((processed(A), processed(B)), (1, 1), "processed again");
    let log = std::fs::read_to_string(scratch().join("plugin.log")).unwrap();
    assert_eq!(log.matches("segment read from").count(), 1, "{log}");
    assert_eq!(dropped(), [SEGMENT_BYTES; 2], "segment B dropped");
    assert_eq!(a.live_images(), 0);
    assert!(ok_or_default(a.destroy()));
    assert!(ok_or_default(b.destroy()));
    assert_no_violations();
}
