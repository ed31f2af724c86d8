//! Times one CogVideoX transformer forward on the CPU.
//!
//! Usage: `bench_transformer <checkpoint-dir> <inputs.safetensors> [runs]`
//! where the inputs file holds `hidden_states`, `encoder_hidden_states` and
//! `timestep` (as written by scripts/bench/bench_transformer.py, which also
//! times diffusers on the same weights and inputs). Prints one line
//! `rust_forward_s=<median seconds>` plus the max difference to the
//! reference output when the file holds one.

use std::time::Instant;

use candle_core::{DType, Device};
use cogvideo::checkpoint::Checkpoint;
use cogvideo::models::transformers::CogVideoXTransformer3DModel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!(
            "usage: {} <checkpoint-dir> <inputs.safetensors> [runs]",
            args[0]
        );
        std::process::exit(2);
    }
    let runs: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(3);
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

    let mut times = Vec::with_capacity(runs);
    let mut out = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        out = Some(model.forward(hidden, text, &steps, None, rope.as_ref())?);
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("rust_forward_s={:.4}", times[times.len() / 2]);
    if let (Some(out), Some(reference)) = (out, t.get("output")) {
        let diff = (out - reference)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        println!("rust_max_abs_diff={diff:.3e}");
    }
    Ok(())
}
