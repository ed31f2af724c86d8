//! How soon a cancel lands inside a transformer step on the CPU: one block
//! of a CogVideoX transformer with the real model's widths (random
//! weights) at a real working size, run with a poll that records when it
//! is called. Prints the gaps between polls (a cancel waits at most the
//! largest) and, when asked to cancel, how long the pass took to end after
//! the poll said stop. The gaps are also given in process CPU time divided
//! by the threads: on a shared machine, that is what they would be idle.
//!
//! Usage: `cancel_latency [5b|2b|mid] [frames height width] [cancel-after-seconds]`,
//! defaults `5b 49 480 720` and no cancel (the whole block runs); `mid` is
//! 16 heads (1024 wide). With `AB=n` in the environment it instead times
//! n passes without a poll and n with one (which splits the work into
//! pieces), interleaved, and prints min and median of each: the cost of
//! being cancellable. With `GAP_TRACE=seconds` it prints where each pass
//! stood at both ends of every gap longer than that (build with
//! `CARGO_PROFILE_RELEASE_DEBUG=line-tables-only` for file and line).

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use cogvideo::models::transformers::{
    CogVideoXTransformer3DModel, ForwardOptions, TransformerConfig,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model = args.first().map_or("5b", String::as_str);
    let num = |i: usize, default: usize| -> Result<usize, Box<dyn std::error::Error>> {
        Ok(args.get(i).map_or(Ok(default), |a| a.parse())?)
    };
    let (frames, height, width) = (num(1, 49)?, num(2, 480)?, num(3, 720)?);
    let cancel_after = args.get(4).map(|a| a.parse::<f64>()).transpose()?;
    // diffusers' configs of CogVideoX-5b and -2b, one block.
    let (heads, rope) = match model {
        "5b" => (48, true),
        "2b" => (30, false),
        "mid" => (16, true),
        _ => return Err(format!("unknown model `{model}` (5b, 2b or mid)").into()),
    };
    let cfg: TransformerConfig = serde_json::from_value(serde_json::json!({
        "attention_head_dim": 64, "num_attention_heads": heads, "num_layers": 1,
        "in_channels": 16, "out_channels": 16, "text_embed_dim": 4096,
        "time_embed_dim": 512, "patch_size": 2, "sample_frames": 49,
        "sample_height": 60, "sample_width": 90,
        "use_rotary_positional_embeddings": rope,
        "use_learned_positional_embeddings": false,
        "spatial_interpolation_scale": 1.875, "temporal_interpolation_scale": 1.0,
    }))?;
    let device = Device::Cpu;
    let vars = VarMap::new();
    let transformer = CogVideoXTransformer3DModel::load(
        VarBuilder::from_varmap(&vars, DType::F32, &device),
        &cfg,
    )?;
    let latent_frames = (frames - 1) / 4 + 1;
    // Classifier-free guidance: a batch of two.
    let hidden = Tensor::randn(
        0f32,
        1.0,
        (2, latent_frames, 16, height / 8, width / 8),
        &device,
    )?;
    let text = Tensor::randn(0f32, 1.0, (2, 226, 4096), &device)?;
    let tables = transformer.rotary_tables(height / 8, width / 8, latent_frames)?;
    let rope = transformer.prepare_rotary(tables.as_ref())?;
    eprintln!(
        "{model}, one block, {frames}x{height}x{width}, batch 2; kernels: {}; {} threads",
        cogvideo::models::cpu_code_paths(),
        candle_core::utils::get_num_threads()
    );

    if let Some(n) = std::env::var("AB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut times = [Vec::new(), Vec::new()];
        for i in 0..2 * n + 2 {
            let polled = i % 2 == 1;
            let mut poll = || -> candle_core::Result<()> { Ok(()) };
            let opts = ForwardOptions {
                rope: rope.as_ref(),
                poll: if polled { Some(&mut poll) } else { None },
                ..Default::default()
            };
            let t = Instant::now();
            transformer.forward_with(&hidden, &text, &[500.0, 500.0], opts)?;
            // The first pass of each is a warm-up.
            if i >= 2 {
                times[polled as usize].push(t.elapsed().as_secs_f64());
            }
        }
        for (name, mut t) in ["unpolled", "polled"].into_iter().zip(times) {
            t.sort_by(f64::total_cmp);
            println!(
                "{name}_min_s={:.3} {name}_median_s={:.3}",
                t[0],
                t[t.len() / 2]
            );
        }
        return Ok(());
    }

    // Process CPU time at each poll too: divided by the threads, the gaps
    // it gives are what they would be on an otherwise idle machine.
    let cpu_now = || -> f64 {
        // SAFETY: getrusage only writes the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
        let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
        t(u.ru_utime) + t(u.ru_stime)
    };
    let threads = candle_core::utils::get_num_threads().max(1) as f64;
    let start = Instant::now();
    let mut polls: Vec<Instant> = vec![start];
    let mut cpu: Vec<f64> = vec![cpu_now()];
    let mut stop_at: Option<Instant> = None;
    let trace_over = std::env::var("GAP_TRACE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok());
    let mut previous_trace: Option<std::backtrace::Backtrace> = None;
    let mut poll = || -> candle_core::Result<()> {
        let now = Instant::now();
        let cpu_at = cpu_now();
        if let Some(over) = trace_over {
            let here = std::backtrace::Backtrace::force_capture();
            let wall = (now - polls[polls.len() - 1]).as_secs_f64();
            let idle = (cpu_at - cpu[cpu.len() - 1]) / threads;
            if wall.max(idle) > over {
                eprintln!(
                    "gap wall {wall:.3} s, idle-equivalent {idle:.3} s, at {:.2} s\nfrom:\n{}\nto:\n{}",
                    (now - start).as_secs_f64(),
                    previous_trace
                        .as_ref()
                        .map_or(String::from("(start)"), own_frames),
                    own_frames(&here)
                );
            }
            previous_trace = Some(here);
        }
        polls.push(now);
        cpu.push(cpu_at);
        if cancel_after.is_some_and(|s| now - start >= Duration::from_secs_f64(s)) {
            stop_at = Some(now);
            candle_core::bail!("cancelled");
        }
        Ok(())
    };
    let opts = ForwardOptions {
        rope: rope.as_ref(),
        poll: Some(&mut poll),
        ..Default::default()
    };
    let result = transformer.forward_with(&hidden, &text, &[500.0, 500.0], opts);
    let end = Instant::now();
    polls.push(end);
    cpu.push(cpu_now());
    let mut cpu_gaps: Vec<f64> = cpu.windows(2).map(|w| (w[1] - w[0]) / threads).collect();
    cpu_gaps.sort_by(f64::total_cmp);
    let mut gaps: Vec<f64> = polls
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let (worst_at, worst) =
        gaps.iter().enumerate().fold(
            (0, 0.0),
            |acc, (i, &g)| if g > acc.1 { (i, g) } else { acc },
        );
    gaps.sort_by(f64::total_cmp);
    println!(
        "pass_s={:.2} polls={} gap_max_s={worst:.3} (after {:.2} s) gap_median_s={:.3} gap_p99_s={:.3}",
        (end - start).as_secs_f64(),
        polls.len() - 2,
        (polls[worst_at] - start).as_secs_f64(),
        gaps[gaps.len() / 2],
        gaps[(gaps.len() * 99 / 100).min(gaps.len() - 1)],
    );
    let q = |p: usize| cpu_gaps[(cpu_gaps.len() * p / 100).min(cpu_gaps.len() - 1)];
    println!(
        "cpu_s={:.1} idle_equivalent_gap_max_s={:.3} gap_median_s={:.3} gap_p99_s={:.3} (CPU time between polls / {threads} threads)",
        cpu[cpu.len() - 1] - cpu[0],
        cpu_gaps[cpu_gaps.len() - 1],
        q(50),
        q(99)
    );
    if let (Some(over), Some(from)) = (trace_over, previous_trace) {
        let wall = (end - polls[polls.len() - 2]).as_secs_f64();
        if wall > over {
            eprintln!("last gap wall {wall:.3} s\nfrom:\n{}", own_frames(&from));
        }
    }
    match (result, stop_at) {
        // From the request (the first poll after it says stop) to the end,
        // and from the poll that said stop: the rest is freeing the pass's
        // memory and the workers finishing their tasks.
        (Err(_), Some(at)) => println!(
            "cancel_latency_s={:.3} cancel_return_s={:.3}",
            (end - start).as_secs_f64() - cancel_after.unwrap_or(0.0),
            (end - at).as_secs_f64()
        ),
        (Ok(_), None) => {}
        (r, _) => return Err(format!("unexpected end: {:?}", r.err()).into()),
    }
    Ok(())
}

/// The frames of a backtrace that are this crate's, innermost first.
fn own_frames(trace: &std::backtrace::Backtrace) -> String {
    let text = trace.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("cogvideo::") {
            out.push(line.trim().to_string());
            if let Some(at) = lines
                .get(i + 1)
                .filter(|l| l.trim_start().starts_with("at "))
            {
                out.push(format!("    {}", at.trim()));
            }
        }
    }
    out.join("\n")
}
