//! Times `scaled_dot_product_attention` alone on the CPU (f32): queries,
//! keys and values `[1, S, H, 64]` of fixed pseudo-random values, one
//! segment. Usage: `bench_attn S H`, then `run` lines on stdin; each prints
//! `rust_forward_s=<seconds>`. Two builds of it, before and after a change
//! to the kernel, are compared by `scripts/bench/ab_builds.py`.
use std::io::{BufRead, Write};
use std::time::Instant;

use candle_core::{Device, Tensor};
use cogvideo::models::attention::scaled_dot_product_attention;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let [s, h] = args[..] else {
        eprintln!("usage: bench_attn S H");
        std::process::exit(2);
    };
    let dev = Device::Cpu;
    let make = |seed: u32| -> candle_core::Result<Tensor> {
        let n = s * h * 64;
        let v: Vec<f32> = (0..n as u32)
            .map(|i| {
                let x = (i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(0x85eb_ca6b);
                (x >> 8) as f32 / (1 << 23) as f32 - 1.0
            })
            .collect();
        Tensor::from_vec(v, (1, s, h, 64), &dev)
    };
    let (q, k, v) = (make(1)?, make(2)?, make(3)?);
    let mut out = std::io::stdout();
    for line in std::io::stdin().lock().lines() {
        if line? != "run" {
            continue;
        }
        let t = Instant::now();
        let o = scaled_dot_product_attention(&q, &[(&k, &v)], 0.125)?;
        let secs = t.elapsed().as_secs_f64();
        let sum = o.sum_all()?.to_scalar::<f32>()?;
        writeln!(out, "rust_forward_s={secs:.6} checksum={sum}")?;
        out.flush()?;
    }
    Ok(())
}
