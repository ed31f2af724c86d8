//! GPU benchmark and full-size parity of libcogvideo, the Rust half of
//! `scripts/gpu/run.sh` (`scripts/gpu/bench_diffusers.py` is the diffusers
//! half, on the same weights and inputs). Runs wherever the pipeline's
//! automatic device is (the GPU in a `cuda` build, else the CPU, so it is
//! tried at a tiny size on the CPU too).
//!
//! `bench_gpu parity <checkpoint> <inputs.safetensors> <out.safetensors>`:
//! one transformer forward in bf16 on the inputs diffusers saved
//! (`hidden_states`, `encoder_hidden_states`, `timestep`), written as
//! `output` for the comparison.
//!
//! `bench_gpu time <checkpoint> [key=value ...]`: text-to-video with CFG
//! (`t2v_steps`, first step a warm-up), VAE decode of the result, DDIM
//! inversion of it and the edit (reference attention, batch of 4) with
//! `edit_steps` steps, at `height` x `width` x `frames` (default the model's).
//! Steps are timed between progress reports with the device synchronised.
//! `max_step_s` (default 120) stops a stage after a step that slow (a slow
//! fallback must not eat the GPU time). Prints `key=value` lines.

use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device};
use cogvideo::checkpoint::Checkpoint;
use cogvideo::models::transformers::CogVideoXTransformer3DModel;
use cogvideo::pipelines::{
    EditOptions, GenerateOptions, InvertOptions, LoadOptions, NoiseOptions, Pipeline, Progress,
    Residency, SamplingOptions, SchedulerKind, Stage,
};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("parity") if args.len() == 5 => parity(&args[2], &args[3], &args[4]),
        Some("time") if args.len() >= 3 => time(&args[2], &args[3..]),
        _ => {
            eprintln!(
                "usage: {0} parity <checkpoint> <inputs.safetensors> <out.safetensors>\n       {0} time <checkpoint> [t2v_steps=N edit_steps=N height=H width=W frames=F max_step_s=S]",
                args[0]
            );
            std::process::exit(2);
        }
    }
}

/// The device the pipeline's `Auto` picks.
fn auto_device() -> Device {
    #[cfg(feature = "cuda")]
    if let Ok(d) = Device::new_cuda(0) {
        return d;
    }
    Device::Cpu
}

fn parity(ckpt: &str, inputs: &str, out: &str) -> Result<(), Error> {
    let dev = auto_device();
    let start = Instant::now();
    let model =
        CogVideoXTransformer3DModel::from_checkpoint(&Checkpoint::open(ckpt)?, DType::BF16, &dev)?;
    println!("parity_load_s={:.2}", start.elapsed().as_secs_f64());
    let t = candle_core::safetensors::load(inputs, &dev)?;
    let hidden = &t["hidden_states"];
    let steps: Vec<f32> = t["timestep"].to_dtype(DType::F32)?.to_vec1()?;
    let (_, f, _, h, w) = hidden.dims5()?;
    let rope = model.prepare_rotary(model.rotary_tables(h, w, f)?.as_ref())?;
    let start = Instant::now();
    let output = model.forward(
        hidden,
        &t["encoder_hidden_states"],
        &steps,
        None,
        rope.as_ref(),
    )?;
    dev.synchronize()?;
    println!("parity_forward_s={:.3}", start.elapsed().as_secs_f64());
    // After the forward: the shapes cuDNN refused ran the chunked path.
    println!(
        "parity_attention={}",
        cogvideo::models::attention::backend_description(&dev, DType::BF16)
    );
    let output = output.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    candle_core::safetensors::save(&HashMap::from([("output".to_string(), output)]), out)?;
    Ok(())
}

/// Wall times between the synchronised progress reports of one stage.
struct StepTimer {
    dev: Device,
    stage: Stage,
    last: Option<Instant>,
    /// The count last reported: the pipeline also polls mid-step with the
    /// counts unchanged, which must neither sync the device nor restart
    /// the step's clock.
    last_done: Option<usize>,
    steps: Vec<f64>,
    max_step_s: f64,
}

impl StepTimer {
    fn new(dev: &Device, stage: Stage, max_step_s: f64) -> Self {
        Self {
            dev: dev.clone(),
            stage,
            last: None,
            last_done: None,
            steps: Vec::new(),
            max_step_s,
        }
    }

    /// The progress callback: false (cancel) after a step slower than the
    /// limit.
    fn report(&mut self, stage: Stage, done: usize) -> bool {
        if stage != self.stage || self.last_done == Some(done) {
            return true;
        }
        self.last_done = Some(done);
        if self.dev.synchronize().is_err() {
            return false;
        }
        let now = Instant::now();
        if let (Some(last), true) = (self.last, done > 0) {
            let s = (now - last).as_secs_f64();
            self.steps.push(s);
            if s > self.max_step_s {
                return false;
            }
        }
        self.last = Some(now);
        true
    }

    /// `prefix_first_s`, and the min and median of the others.
    fn print(&self, prefix: &str) {
        let Some((first, rest)) = self.steps.split_first() else {
            println!("{prefix}_steps=0");
            return;
        };
        println!("{prefix}_first_s={first:.3}");
        let mut rest = rest.to_vec();
        rest.sort_by(f64::total_cmp);
        if let Some(min) = rest.first() {
            println!(
                "{prefix}_min_s={min:.3}\n{prefix}_median_s={:.3}\n{prefix}_timed_steps={}",
                rest[rest.len() / 2],
                rest.len()
            );
        }
    }
}

fn time(ckpt: &str, args: &[String]) -> Result<(), Error> {
    let mut opt: HashMap<&str, f64> = HashMap::new();
    for a in args {
        let (k, v) = a
            .split_once('=')
            .ok_or(format!("expected key=value, got {a}"))?;
        opt.insert(k, v.parse()?);
    }
    let get = |k: &str, default: f64| opt.get(k).copied().unwrap_or(default);
    let start = Instant::now();
    let opts = LoadOptions {
        residency: Residency::Resident,
        ..Default::default()
    };
    let p = Pipeline::load(ckpt, &opts)?;
    let dev = p.device().clone();
    dev.synchronize()?;
    println!("load_s={:.2}", start.elapsed().as_secs_f64());
    println!("device={:?}\ndtype={:?}", dev, p.dtype());
    // Before any shape has run; `attention_after_*` say what the runs used.
    println!("attention={}", p.attention_backend());
    let (dh, dw, df) = p.default_video_size();
    let (h, w, frames) = (
        get("height", dh as f64) as usize,
        get("width", dw as f64) as usize,
        get("frames", df as f64) as usize,
    );
    let max_step_s = get("max_step_s", 120.0);
    println!("size={w}x{h}x{frames}");

    // Text-to-video with CFG, then the decode of its latents.
    let t2v_steps = get("t2v_steps", 4.0) as usize;
    let mut denoise = StepTimer::new(&dev, Stage::Denoise, max_step_s);
    let mut decode: Option<Instant> = None;
    let mut encode_text = 0.0;
    let mut text_start: Option<Instant> = None;
    let call = Instant::now();
    let generated = {
        let mut cb = |stage: Stage, done: usize, _total: usize| {
            match (stage, done) {
                // The first report: the encoder polls again with the same counts.
                (Stage::EncodeText, 0) => {
                    text_start.get_or_insert_with(Instant::now);
                }
                (Stage::EncodeText, _) => {
                    let _ = dev.synchronize();
                    encode_text = text_start.map_or(0.0, |s| s.elapsed().as_secs_f64());
                }
                (Stage::DecodeVideo, 0) => {
                    let _ = dev.synchronize();
                    decode = Some(Instant::now());
                }
                _ => {}
            }
            denoise.report(stage, done)
        };
        let opts = GenerateOptions {
            sampling: SamplingOptions {
                prompt: "a red fox running through snow, cinematic".into(),
                steps: t2v_steps,
                scheduler: SchedulerKind::Dpm,
                noise: NoiseOptions::seed(42),
                ..Default::default()
            },
            height: Some(h),
            width: Some(w),
            num_frames: Some(frames),
        };
        p.generate_video(&opts, &mut Progress::new(&mut cb))
    };
    dev.synchronize()?;
    println!("encode_text_s={encode_text:.3}");
    denoise.print("t2v_step");
    println!("attention_after_t2v={}", p.attention_backend());
    let generated = match generated {
        Ok(g) => g,
        Err(e) => {
            println!("t2v_error={e}");
            return Ok(());
        }
    };
    if let Some(d) = decode {
        println!("decode_s={:.3}", d.elapsed().as_secs_f64());
    }
    println!("t2v_call_s={:.3}", call.elapsed().as_secs_f64());

    // Inversion and the edit: the reference attention doubles the batch.
    let edit_steps = get("edit_steps", 3.0) as usize;
    if edit_steps > 0 {
        let video = generated.video.clone();
        drop(generated);
        let mut invert = StepTimer::new(&dev, Stage::Invert, max_step_s);
        let inv_opts = InvertOptions {
            steps: edit_steps,
            ..Default::default()
        };
        let inversion = p.invert_video(
            &video,
            &inv_opts,
            &mut Progress::new(&mut |s, d, _| invert.report(s, d)),
        );
        invert.print("invert_step");
        let inversion = match inversion {
            Ok(i) => i,
            Err(e) => {
                println!("invert_error={e}");
                return Ok(());
            }
        };
        let mut edit = StepTimer::new(&dev, Stage::Denoise, max_step_s);
        let edit_opts = EditOptions {
            prompt: "a white wolf running through snow".into(),
            ..Default::default()
        };
        let edited = p.edit_with_prompt(
            &inversion,
            &edit_opts,
            &mut Progress::new(&mut |s, d, _| edit.report(s, d)),
        );
        edit.print("edit_step");
        println!("attention_after_edit={}", p.attention_backend());
        if let Err(e) = edited {
            println!("edit_error={e}");
        }
    }
    if let Some(free) = cogvideo::memory::device_available_bytes(&dev) {
        println!("device_free_bytes_at_end={free}");
    }
    Ok(())
}
