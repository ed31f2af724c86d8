//! Peak memory and time of each residency mode on a CogVideoX-5B-shaped
//! checkpoint with random weights, on the CPU.
//!
//! Usage: `bench_memory_modes [--every K] [--steps N] [--frames F]
//! [--height H] [--width W] [--dtype bf16|f32] [--rounds R]
//! [--modes resident,per_component,streamed] [--dir DIR]`
//!
//! Writes a diffusers-layout checkpoint to DIR (default: a folder under the
//! system's temp dir, reused when its configs match): the T5-XXL encoder
//! shape, the CogVideoX-5B transformer and the real VAE config, bf16
//! safetensors with random weights, tokenizer and scheduler from the tiny
//! test checkpoint. `--every K` keeps every K-th layer of the T5 encoder
//! and of the transformer (full widths), so a machine with less memory can
//! run it; K = 1 is full size (about 21 GB of weights). Then, for R rounds,
//! runs each mode in a child process of its own (so its peak resident
//! memory is the mode's): load, then one text-to-video call at the given
//! size and steps, decode included. Prints each run and a table of min and
//! median per mode with ratios to `resident`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use candle_core::{DType, Device};
use candle_nn::{VarBuilder, VarMap};
use cogvideo::models::autoencoders::{AutoencoderKLCogVideoX, VaeConfig};
use cogvideo::models::transformers::{CogVideoXTransformer3DModel, TransformerConfig};
use cogvideo::pipelines::{
    GenerateOptions, LoadOptions, Pipeline, Progress, Residency, SamplingOptions,
};
use serde_json::json;

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    every: usize,
    steps: usize,
    frames: usize,
    height: usize,
    width: usize,
    dtype: String,
    rounds: usize,
    modes: Vec<String>,
    dir: Option<PathBuf>,
    child: Option<String>,
}

fn parse_args() -> BoxResult<Args> {
    let mut a = Args {
        every: 1,
        steps: 1,
        frames: 9,
        height: 240,
        width: 352,
        dtype: "bf16".into(),
        rounds: 1,
        modes: vec!["resident".into(), "per_component".into(), "streamed".into()],
        dir: None,
        child: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--every" => a.every = value()?.parse()?,
            "--steps" => a.steps = value()?.parse()?,
            "--frames" => a.frames = value()?.parse()?,
            "--height" => a.height = value()?.parse()?,
            "--width" => a.width = value()?.parse()?,
            "--dtype" => a.dtype = value()?,
            "--rounds" => a.rounds = value()?.parse()?,
            "--modes" => a.modes = value()?.split(',').map(str::to_string).collect(),
            "--dir" => a.dir = Some(value()?.into()),
            "--child" => a.child = Some(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    if a.every == 0 {
        return Err("--every must be at least 1".into());
    }
    Ok(a)
}

fn residency(mode: &str) -> BoxResult<Residency> {
    Ok(match mode {
        "resident" => Residency::Resident,
        "per_component" => Residency::PerComponent,
        "streamed" => Residency::Streamed,
        "auto" => Residency::Auto,
        other => return Err(format!("unknown mode {other}").into()),
    })
}

fn compute_dtype(name: &str) -> BoxResult<DType> {
    Ok(match name {
        "bf16" => DType::BF16,
        "f32" => DType::F32,
        other => return Err(format!("unknown dtype {other}").into()),
    })
}

/// Layers kept when every `every`-th of `n` is.
fn kept_layers(n: usize, every: usize) -> usize {
    n.div_ceil(every)
}

fn text_encoder_config(every: usize) -> serde_json::Value {
    json!({
        "architectures": ["T5EncoderModel"],
        "d_ff": 10240, "d_kv": 64, "d_model": 4096,
        "feed_forward_proj": "gated-gelu", "is_gated_act": true,
        "layer_norm_epsilon": 1e-6, "model_type": "t5",
        "num_heads": 64, "num_layers": kept_layers(24, every),
        "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
        "vocab_size": 32128
    })
}

fn transformer_config(every: usize) -> serde_json::Value {
    json!({
        "_class_name": "CogVideoXTransformer3DModel",
        "activation_fn": "gelu-approximate", "attention_bias": true,
        "attention_head_dim": 64, "num_attention_heads": 48,
        "flip_sin_to_cos": true, "freq_shift": 0, "in_channels": 16, "out_channels": 16,
        "max_text_seq_length": 226, "norm_elementwise_affine": true, "norm_eps": 1e-5,
        "num_layers": kept_layers(42, every), "patch_size": 2, "patch_bias": true,
        "sample_frames": 49, "sample_height": 60, "sample_width": 90,
        "spatial_interpolation_scale": 1.875, "temporal_compression_ratio": 4,
        "temporal_interpolation_scale": 1.0, "text_embed_dim": 4096, "time_embed_dim": 512,
        "timestep_activation_fn": "silu",
        "use_learned_positional_embeddings": false, "use_rotary_positional_embeddings": true
    })
}

fn vae_config() -> serde_json::Value {
    let down = "CogVideoXDownBlock3D";
    let up = "CogVideoXUpBlock3D";
    json!({
        "_class_name": "AutoencoderKLCogVideoX",
        "act_fn": "silu", "block_out_channels": [128, 256, 256, 512],
        "down_block_types": [down, down, down, down], "up_block_types": [up, up, up, up],
        "force_upcast": true, "in_channels": 3, "out_channels": 3, "latent_channels": 16,
        "layers_per_block": 3, "norm_eps": 1e-6, "norm_num_groups": 32,
        "sample_height": 480, "sample_width": 720, "scaling_factor": 0.7,
        "temporal_compression_ratio": 4, "use_quant_conv": false, "use_post_quant_conv": false,
        "invert_scale_latents": false
    })
}

/// Creates one component's weights with `load` over a `VarMap` (random
/// values, the models' own init hints) and saves them as bf16 safetensors.
fn write_weights(
    file: &Path,
    load: impl FnOnce(VarBuilder<'static>) -> candle_core::Result<()>,
) -> BoxResult<()> {
    let vars = VarMap::new();
    load(VarBuilder::from_varmap(&vars, DType::BF16, &Device::Cpu))?;
    vars.save(file)?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> BoxResult<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// Writes the checkpoint unless `dir` already holds one with these configs.
fn write_checkpoint(dir: &Path, every: usize) -> BoxResult<()> {
    let stamp = dir.join("bench-every.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(&every.to_string()) {
        println!("reusing the checkpoint in {}", dir.display());
        return Ok(());
    }
    let t0 = Instant::now();
    let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny/cogvideox-5b");
    for sub in [
        "tokenizer",
        "scheduler",
        "text_encoder",
        "transformer",
        "vae",
    ] {
        std::fs::create_dir_all(dir.join(sub))?;
    }
    std::fs::copy(tiny.join("model_index.json"), dir.join("model_index.json"))?;
    for sub in ["tokenizer", "scheduler"] {
        for entry in std::fs::read_dir(tiny.join(sub))? {
            let entry = entry?;
            std::fs::copy(entry.path(), dir.join(sub).join(entry.file_name()))?;
        }
    }

    let t5 = text_encoder_config(every);
    write_json(&dir.join("text_encoder/config.json"), &t5)?;
    let t5_cfg = candle_transformers::models::t5::Config {
        vocab_size: 32128,
        d_model: 4096,
        d_kv: 64,
        d_ff: 10240,
        num_layers: kept_layers(24, every),
        num_decoder_layers: None,
        num_heads: 64,
        relative_attention_num_buckets: 32,
        relative_attention_max_distance: 128,
        dropout_rate: 0.0,
        layer_norm_epsilon: 1e-6,
        initializer_factor: 1.0,
        feed_forward_proj: candle_transformers::models::t5::ActivationWithOptionalGating {
            gated: true,
            activation: candle_nn::Activation::NewGelu,
        },
        tie_word_embeddings: false,
        is_decoder: false,
        is_encoder_decoder: false,
        use_cache: false,
        pad_token_id: 0,
        eos_token_id: 1,
        decoder_start_token_id: None,
    };
    write_weights(&dir.join("text_encoder/model.safetensors"), |vb| {
        candle_transformers::models::t5::T5EncoderModel::load(vb, &t5_cfg).map(drop)
    })?;
    println!("text encoder written ({:.0} s)", t0.elapsed().as_secs_f64());

    let tr = transformer_config(every);
    write_json(&dir.join("transformer/config.json"), &tr)?;
    let tr_cfg: TransformerConfig = serde_json::from_value(tr)?;
    write_weights(
        &dir.join("transformer/diffusion_pytorch_model.safetensors"),
        |vb| CogVideoXTransformer3DModel::load(vb, &tr_cfg).map(drop),
    )?;
    println!("transformer written ({:.0} s)", t0.elapsed().as_secs_f64());

    let vae = vae_config();
    write_json(&dir.join("vae/config.json"), &vae)?;
    let vae_cfg: VaeConfig = serde_json::from_value(vae)?;
    write_weights(&dir.join("vae/diffusion_pytorch_model.safetensors"), |vb| {
        AutoencoderKLCogVideoX::load(vb, &vae_cfg).map(drop)
    })?;
    std::fs::write(&stamp, every.to_string())?;
    println!("checkpoint written in {:.0} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// One mode in this process: load, one call; prints a `RESULT` line.
fn run_child(a: &Args, mode: &str, dir: &Path) -> BoxResult<()> {
    let t0 = Instant::now();
    let opts = LoadOptions {
        dtype: Some(compute_dtype(&a.dtype)?),
        residency: residency(mode)?,
        ..Default::default()
    };
    let p = Pipeline::load(dir, &opts)?;
    let load_s = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let call = GenerateOptions {
        sampling: SamplingOptions {
            prompt: "a red fox running through a snowy forest".into(),
            steps: a.steps,
            ..Default::default()
        },
        height: Some(a.height),
        width: Some(a.width),
        num_frames: Some(a.frames),
    };
    p.generate_video(&call, &mut Progress::none())?;
    let call_s = t1.elapsed().as_secs_f64();
    let r = p.memory_report();
    println!(
        "RESULT mode={mode} chosen={:?} load_s={load_s:.2} call_s={call_s:.2} peak_rss={} kept_weights={} estimated_peak={}",
        r.residency,
        r.peak_rss_bytes.unwrap_or(0),
        r.kept_weight_bytes,
        r.estimated_peak_bytes,
    );
    Ok(())
}

struct Run {
    load_s: f64,
    call_s: f64,
    peak_rss: u64,
}

fn field<T: std::str::FromStr>(line: &str, key: &str) -> Option<T> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn min_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2])
}

fn gib(b: f64) -> String {
    format!("{:.2} GiB", b / (1u64 << 30) as f64)
}

fn main() -> BoxResult<()> {
    let a = parse_args()?;
    let dir = a.dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("cogvideo-bench-memory-every{}", a.every))
    });
    if let Some(mode) = &a.child {
        return run_child(&a, mode, &dir);
    }
    write_checkpoint(&dir, a.every)?;
    println!(
        "T5 {} of 24 layers, transformer {} of 42, {} compute, {} frames at {}x{}, {} step(s), {} round(s)",
        kept_layers(24, a.every),
        kept_layers(42, a.every),
        a.dtype,
        a.frames,
        a.width,
        a.height,
        a.steps,
        a.rounds
    );
    let exe = std::env::current_exe()?;
    let mut runs: Vec<Vec<Run>> = a.modes.iter().map(|_| Vec::new()).collect();
    // Rounds interleave the modes, so each sees the same machine load.
    for round in 0..a.rounds {
        for (i, mode) in a.modes.iter().enumerate() {
            let out = Command::new(&exe)
                .args(["--child", mode, "--dir"])
                .arg(&dir)
                .args(["--dtype", &a.dtype, "--steps", &a.steps.to_string()])
                .args(["--frames", &a.frames.to_string()])
                .args(["--height", &a.height.to_string()])
                .args(["--width", &a.width.to_string()])
                .output()?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let line = stdout
                .lines()
                .find(|l| l.starts_with("RESULT"))
                .ok_or_else(|| {
                    format!(
                        "{mode} failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    )
                })?;
            println!("round {round}: {line}");
            runs[i].push(Run {
                load_s: field(line, "load_s").ok_or("no load_s")?,
                call_s: field(line, "call_s").ok_or("no call_s")?,
                peak_rss: field(line, "peak_rss").ok_or("no peak_rss")?,
            });
        }
    }

    let stats: Vec<_> = runs
        .iter()
        .map(|r| {
            (
                min_median(r.iter().map(|x| x.peak_rss as f64).collect()),
                min_median(r.iter().map(|x| x.call_s).collect()),
                min_median(r.iter().map(|x| x.load_s).collect()),
            )
        })
        .collect();
    let base = a
        .modes
        .iter()
        .position(|m| m == "resident")
        .map(|i| stats[i]);
    println!();
    println!(
        "| mode | peak RSS min / median | call min / median | load min / median | peak / resident | call / resident |"
    );
    println!("|---|---|---|---|---|---|");
    for (mode, (rss, call, load)) in a.modes.iter().zip(&stats) {
        let ratio = |x: f64, b: Option<f64>| b.map_or("-".into(), |b| format!("{:.2}", x / b));
        println!(
            "| {mode} | {} / {} | {:.1} s / {:.1} s | {:.1} s / {:.1} s | {} | {} |",
            gib(rss.0),
            gib(rss.1),
            call.0,
            call.1,
            load.0,
            load.1,
            ratio(rss.1, base.map(|b| b.0.1)),
            ratio(call.1, base.map(|b| b.1.1)),
        );
    }
    Ok(())
}
