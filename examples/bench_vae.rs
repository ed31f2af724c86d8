//! Times CogVideoX VAE encodes or decodes on the CPU, one per request, so
//! that scripts/bench/bench_vae.py can interleave them with diffusers'.
//!
//! Usage: `bench_vae <vae-dir> <inputs.safetensors> <encode|decode> <out.safetensors>
//! [tile_h tile_w overlap_h overlap_w]`
//!
//! The inputs file holds `video` `[B, 3, T, H, W]` (for encode) and
//! `latents` `[B, 16, F, h, w]` (for decode), as written by
//! scripts/bench/bench_vae.py, which also runs diffusers on the same weights
//! and inputs and compares the outputs. With the four tile arguments the VAE
//! is tiled with those `Tiling` settings. Once loaded it prints
//! `rss_loaded_kb=<KiB>` (resident memory with the weights and inputs), then
//! runs one encode or decode per `run` line on stdin, printing
//! `run_s=<seconds>`; at the end of input it writes the last output (the
//! posterior mean for encode) to `out.safetensors` under the name `output`.
//! One case per process, so the caller can read the process's peak resident
//! memory.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use cogvideo::models::autoencoders::{AutoencoderKLCogVideoX, Tiling};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

fn usage(program: &str) -> ! {
    eprintln!(
        "usage: {program} <vae-dir> <inputs.safetensors> <encode|decode> <out.safetensors> \
         [tile_h tile_w overlap_h overlap_w]"
    );
    std::process::exit(2);
}

/// Resident memory of this process now, in KiB (Linux; 0 elsewhere).
fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn main() -> BoxResult<()> {
    let args: Vec<String> = std::env::args().collect();
    if ![5, 9].contains(&args.len()) {
        usage(&args[0]);
    }
    let op = args[3].as_str();
    if op != "encode" && op != "decode" {
        usage(&args[0]);
    }
    let tiling = if args.len() == 9 {
        Some(Tiling {
            tile_sample_min_height: args[5].parse()?,
            tile_sample_min_width: args[6].parse()?,
            tile_overlap_factor_height: args[7].parse()?,
            tile_overlap_factor_width: args[8].parse()?,
        })
    } else {
        None
    };

    // On stderr, so the benchmark's record of a run names the code paths.
    eprintln!(
        "libcogvideo kernels: {}",
        cogvideo::models::cpu_code_paths()
    );
    let device = Device::Cpu;
    let mut vae = AutoencoderKLCogVideoX::from_dir(&args[1], DType::F32, &device)?;
    vae.set_tiling(tiling)?;
    let mut inputs = candle_core::safetensors::load(&args[2], &device)?;
    let input = inputs
        .remove(if op == "encode" { "video" } else { "latents" })
        .ok_or("the inputs file lacks the tensor for this case")?;
    drop(inputs);
    println!("rss_loaded_kb={}", rss_kb());
    std::io::stdout().flush()?;

    let run = |x: &Tensor| -> BoxResult<Tensor> {
        Ok(if op == "encode" {
            vae.encode(x)?.mean().clone()
        } else {
            vae.decode(x)?
        })
    };
    let mut out = None;
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        if line?.trim() != "run" {
            return Err("the only command is `run`".into());
        }
        // Free the previous output first so it does not add to the peak.
        drop(out.take());
        let start = Instant::now();
        out = Some(run(&input)?);
        writeln!(stdout, "run_s={:.4}", start.elapsed().as_secs_f64())?;
        stdout.flush()?;
    }
    if let Some(out) = out {
        candle_core::safetensors::save(&HashMap::from([("output", out)]), &args[4])?;
    }
    Ok(())
}
