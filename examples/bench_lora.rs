//! LoRA's cost per transformer forward on the CPU (f32): no adapter, one and
//! three unfused rank-64 adapters, and the same fused, on the mid-size
//! 5b-style model of docs/benchmarks.md (4 blocks, 16 heads x 64 = 1024
//! wide, latent 5x30x44 + 226 text tokens = 1,876 tokens, batch 1: one
//! denoising step without guidance; with guidance a step is a batch of 2).
//! Weights and adapters are random (adapters on attention q/k/v/out and both
//! feed-forward layers of every block, written to a temporary file and read
//! back as a user's would be).
//!
//! Usage: `cargo run --release --example bench_lora [runs]` (default 3;
//! prints min and median per setting, and the adapters' memory).

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use cogvideo::loaders::lora_pipeline::{LoraAdapter, transformer_lora};
use cogvideo::models::transformers::{
    CogVideoXTransformer3DModel, ForwardOptions, TransformerConfig, TransformerLora,
};

const RANK: usize = 64;
const SITES: [(&str, usize, usize); 6] = [
    ("attn1.to_q", 1, 1),
    ("attn1.to_k", 1, 1),
    ("attn1.to_v", 1, 1),
    ("attn1.to_out.0", 1, 1),
    ("ff.net.0.proj", 1, 4),
    ("ff.net.2", 4, 1),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(3);
    eprintln!(
        "libcogvideo kernels: {}",
        cogvideo::models::cpu_code_paths()
    );
    let device = Device::Cpu;
    let cfg: TransformerConfig = serde_json::from_value(serde_json::json!({
        "num_attention_heads": 16, "attention_head_dim": 64, "num_layers": 4,
        "in_channels": 16, "out_channels": 16, "time_embed_dim": 512,
        "text_embed_dim": 4096, "sample_width": 90, "sample_height": 60,
        "sample_frames": 49, "patch_size": 2, "use_rotary_positional_embeddings": true
    }))?;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let model = CogVideoXTransformer3DModel::load(vb, &cfg)?;
    let dim = cfg.inner_dim();

    let dir = std::env::temp_dir().join(format!("cogvideo-bench-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut adapters = Vec::new();
    for k in 0..3 {
        let mut tensors = HashMap::new();
        for block in 0..cfg.num_layers {
            for (site, fin, fout) in SITES {
                let m = format!("transformer.transformer_blocks.{block}.{site}");
                let a = Tensor::randn(0f32, 0.02, (RANK, fin * dim), &device)?;
                let b = Tensor::randn(0f32, 0.02, (fout * dim, RANK), &device)?;
                tensors.insert(format!("{m}.lora_A.weight"), a);
                tensors.insert(format!("{m}.lora_B.weight"), b);
            }
        }
        let path = dir.join(format!("lora{k}.safetensors"));
        candle_core::safetensors::save(&tensors, &path)?;
        adapters.push(LoraAdapter::from_file(&path, &cfg)?);
    }
    std::fs::remove_dir_all(&dir)?;
    println!(
        "adapters: rank {RANK} on {} layers, {:.1} MiB each in f32",
        SITES.len() * cfg.num_layers,
        adapters[0].bytes(DType::F32) as f64 / (1 << 20) as f64
    );

    let (f, h, w) = (5, 30, 44);
    let hidden = Tensor::randn(0f32, 1.0, (1, f, 16, h, w), &device)?;
    let text = Tensor::randn(0f32, 1.0, (1, 226, 4096), &device)?;
    let rope = model.prepare_rotary(model.rotary_tables(h, w, f)?.as_ref())?;

    let setting = |n: usize, fused: bool| -> Result<TransformerLora, Box<dyn std::error::Error>> {
        let pairs: Vec<(&LoraAdapter, f64)> = adapters[..n].iter().map(|a| (a, 0.8)).collect();
        let mut l = transformer_lora(&pairs, cfg.num_layers, DType::F32, &device, fused)?;
        let start = Instant::now();
        l.fuse_kept(&model)?;
        if fused {
            println!(
                "fusing {n} adapter(s): {:.3} s",
                start.elapsed().as_secs_f64()
            );
        }
        Ok(l)
    };
    let cases: Vec<(String, Option<TransformerLora>)> = vec![
        ("no LoRA".into(), None),
        ("1 unfused".into(), Some(setting(1, false)?)),
        ("3 unfused".into(), Some(setting(3, false)?)),
        ("1 fused".into(), Some(setting(1, true)?)),
        ("3 fused".into(), Some(setting(3, true)?)),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    // a warm-up each, then the settings interleaved so that all see the same load
    for run in 0..=runs {
        for (i, (_, lora)) in cases.iter().enumerate() {
            let opts = ForwardOptions {
                rope: rope.as_ref(),
                lora: lora.as_ref(),
                ..Default::default()
            };
            let start = Instant::now();
            let out = model.forward_with(&hidden, &text, &[500.0], opts)?;
            drop(out);
            if run > 0 {
                times[i].push(start.elapsed().as_secs_f64());
            }
        }
    }
    let base = {
        let mut t = times[0].clone();
        t.sort_by(f64::total_cmp);
        t[0]
    };
    println!("| setting | min | median | min vs no LoRA |");
    println!("|---|---|---|---|");
    for ((name, _), t) in cases.iter().zip(&mut times) {
        t.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.3} s | {:.3} s | {:+.1}% |",
            t[0],
            t[t.len() / 2],
            100.0 * (t[0] / base - 1.0)
        );
    }
    Ok(())
}
