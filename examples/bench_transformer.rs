//! Times CogVideoX transformer forwards on the CPU, one per request, so that
//! scripts/bench/bench_transformer.py can interleave them with diffusers'.
//!
//! Usage: `bench_transformer <checkpoint-dir> <inputs.safetensors>`, where
//! the inputs file holds `hidden_states`, `encoder_hidden_states` and
//! `timestep`. Then, one command a line on stdin:
//! - `run`: one forward; prints `rust_forward_s=<seconds>`.
//! - `compare <file.safetensors>`: prints `rust_max_abs_diff=<value>`, the
//!   largest difference of the last output to the file's `output`.
//!
//! At the end of input it prints `rust_peak_rss_kib=<KiB>`, the process's
//! peak resident memory.

use std::io::{BufRead, Write};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use cogvideo::checkpoint::Checkpoint;
use cogvideo::models::transformers::CogVideoXTransformer3DModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: {} <checkpoint-dir> <inputs.safetensors>", args[0]);
        std::process::exit(2);
    }
    // On stderr, so the benchmark's record of a run names the code paths.
    eprintln!(
        "libcogvideo kernels: {}",
        cogvideo::models::cpu_code_paths()
    );
    let device = Device::Cpu;
    let ckpt = Checkpoint::open(&args[1])?;
    let model = CogVideoXTransformer3DModel::from_checkpoint(&ckpt, DType::F32, &device)?;
    let t = candle_core::safetensors::load(&args[2], &device)?;
    let hidden = &t["hidden_states"];
    let text = &t["encoder_hidden_states"];
    let steps: Vec<f32> = t["timestep"]
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let (_, f, _, h, w) = hidden.dims5()?;
    let rope = model.prepare_rotary(model.rotary_tables(h, w, f)?.as_ref())?;

    let mut out: Option<Tensor> = None;
    let mut stdout = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("run"), None) => {
                // The previous output is freed first, as the caller's would be.
                drop(out.take());
                let start = Instant::now();
                out = Some(model.forward(hidden, text, &steps, None, rope.as_ref())?);
                writeln!(
                    stdout,
                    "rust_forward_s={:.4}",
                    start.elapsed().as_secs_f64()
                )?;
            }
            (Some("compare"), Some(path)) => {
                let reference = &candle_core::safetensors::load(path, &device)?["output"];
                let out = out.as_ref().ok_or("`compare` before any `run`")?;
                let diff = (out - reference)?
                    .abs()?
                    .flatten_all()?
                    .max(0)?
                    .to_scalar::<f32>()?;
                writeln!(stdout, "rust_max_abs_diff={diff:.3e}")?;
            }
            _ => return Err(format!("unknown command `{line}`").into()),
        }
        stdout.flush()?;
    }
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    writeln!(stdout, "rust_peak_rss_kib={}", usage.ru_maxrss)?;
    Ok(())
}
