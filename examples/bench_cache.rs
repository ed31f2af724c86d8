//! One end-to-end text-to-video call with a step cache, for
//! scripts/bench/bench_cache.py, which interleaves these processes (one per
//! run, so each peak RSS is its own).
//!
//! Usage: `bench_cache <checkpoint-dir> <method> <steps>`, method one of
//! `exact`, `first_block[:threshold]`, `pab`, `faster`,
//! `taylorseer[:interval]`. Generates 17 frames at 240x352 (latent
//! 5 x 30 x 44, 1,876 tokens), DPM, guidance 6 with the dynamic schedule,
//! seed 42, on the CPU in f32, and prints one JSON line: seconds of the
//! call (text encoding, denoising, decoding) and of its denoising loop, the
//! cache's report and the process's peak RSS.

use std::time::Instant;

use cogvideo::hooks::{
    CacheConfig, FasterCacheConfig, FirstBlockCacheConfig, PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
};
use cogvideo::pipelines::{
    DeviceKind, GenerateOptions, LoadOptions, Pipeline, Progress, SamplingOptions, Stage,
};

fn method(name: &str) -> Result<CacheConfig, String> {
    let (m, arg) = match name.split_once(':') {
        Some((m, a)) => (m, Some(a.parse::<f64>().map_err(|e| e.to_string())?)),
        None => (name, None),
    };
    Ok(match m {
        "exact" => CacheConfig::Off,
        "first_block" => CacheConfig::FirstBlock(FirstBlockCacheConfig {
            threshold: arg.unwrap_or(FirstBlockCacheConfig::default().threshold),
        }),
        "pab" => CacheConfig::PyramidAttentionBroadcast(PyramidAttentionBroadcastConfig::default()),
        "faster" => CacheConfig::FasterCache(FasterCacheConfig::default()),
        "taylorseer" => {
            let d = TaylorSeerCacheConfig::default();
            CacheConfig::TaylorSeer(TaylorSeerCacheConfig {
                cache_interval: arg.map_or(d.cache_interval, |a| a as usize),
                ..d
            })
        }
        other => return Err(format!("unknown method {other}")),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: {} <checkpoint-dir> <method> <steps>", args[0]);
        std::process::exit(2);
    }
    let cache = method(&args[2])?;
    let steps: usize = args[3].parse()?;
    let p = Pipeline::load(
        &args[1],
        &LoadOptions {
            device: DeviceKind::Cpu,
            ..Default::default()
        },
    )?;
    let opts = GenerateOptions {
        sampling: SamplingOptions {
            prompt: "a red fox running through snow".into(),
            steps,
            cache,
            ..Default::default()
        },
        height: Some(240),
        width: Some(352),
        num_frames: Some(17),
    };
    // the denoising loop's share: from its first report to its last
    let (mut first, mut last) = (None, None);
    let mut cb = |stage: Stage, _done: usize, _total: usize| {
        if stage == Stage::Denoise {
            first.get_or_insert_with(Instant::now);
            last = Some(Instant::now());
        }
        true
    };
    let mut progress = Progress::new(&mut cb);
    let start = Instant::now();
    let out = p.generate_video(&opts, &mut progress)?;
    let seconds = start.elapsed().as_secs_f64();
    let r = progress.cache_report().cloned().unwrap_or_default();
    drop(progress);
    let denoise = match (first, last) {
        (Some(a), Some(b)) => (b - a).as_secs_f64(),
        _ => 0.0,
    };
    let peak = cogvideo::memory::rss_bytes().map_or(0, |(peak, _)| peak);
    // a checksum, so that runs of one method can be seen to agree
    let sum = out.latents.abs()?.sum_all()?.to_scalar::<f32>()?;
    println!(
        "{{\"method\": \"{}\", \"seconds\": {seconds:.3}, \"denoise_seconds\": {denoise:.3}, \"block_evaluations\": {}, \"blocks_skipped\": {}, \"attention_skipped\": {}, \"peak_rss\": {peak}, \"latents_abs_sum\": {sum}}}",
        args[2], r.block_evaluations, r.blocks_skipped, r.attention_skipped
    );
    Ok(())
}
