"""Times CogVideoX transformer forwards on the CPU in diffusers and in
libcogvideo, on the same random weights and inputs, interleaved in one run.

Usage (from the repository root, with the golden-reference venv):
    python scripts/bench/bench_transformer.py [--config mid|real|both] [--threads N] [--runs R]

Configurations:
- mid: a mid-size 5b-style transformer (RoPE, 16 heads x 64 = 1024 wide,
  4 blocks), latent 5 x 30 x 44 (a 17-frame 240x352 clip): 1650 video tokens
  + 226 text = 1876 tokens.
- real: one block of CogVideoX-5b's width (48 heads x 64 = 3072 wide), latent
  13 x 60 x 90 (49 frames at 480x720): 17550 video tokens + 226 text = 17776
  tokens, the length the 5b models run at.

For each configuration it writes the random model and its inputs to a
temporary folder (removed at the end), starts `cargo run --release --example bench_transformer`
on them (which loads the model and then runs one forward per request), and
alternates: one warm-up forward each, then torch, rust, torch, rust, ... so
that both see the same machine load. It prints min and median of each, their
ratio, the largest difference of the outputs, the peak resident memory of each
process (weights, inputs and outputs included) and the CPU.
"""

import argparse
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline
from safetensors.torch import save_file

BASE = dict(
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    time_embed_dim=512,
    text_embed_dim=4096,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    use_rotary_positional_embeddings=True,
)
# Checkpoint::open checks every component's declared class; only the
# transformer's folder is read.
MODEL_INDEX = {
    "_class_name": "CogVideoXPipeline",
    "scheduler": ["diffusers", "CogVideoXDDIMScheduler"],
    "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"],
    "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
    "vae": ["diffusers", "AutoencoderKLCogVideoX"],
}
CONFIGS = {
    "mid": (dict(BASE, num_attention_heads=16, num_layers=4), (1, 5, 16, 30, 44)),
    "real": (dict(BASE, num_attention_heads=48, num_layers=1), (1, 13, 16, 60, 90)),
}


def cpu_description():
    model, flags = platform.processor(), set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    vec = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile") if f in flags]
    return f"{model}, {os.cpu_count()} cpus, {' '.join(vec)}; torch kernels: {torch.backends.cpu.get_cpu_capability()}"


def peak_rss_gib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def bench(name, runs, threads, rust_bin):
    # The model folder is removed afterwards: 0.3 GB for mid, 0.6 GB for real.
    with tempfile.TemporaryDirectory(prefix=f"cogvideo-bench-{name}-") as tmp:
        bench_in(tmp, name, runs, threads, rust_bin)


def bench_in(tmp, name, runs, threads, rust_bin):
    config, latent = CONFIGS[name]
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(**config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    model.save_pretrained(os.path.join(tmp, "transformer"))
    with open(os.path.join(tmp, "model_index.json"), "w") as f:
        json.dump(MODEL_INDEX, f)

    hidden = torch.randn(latent)
    text = torch.randn(1, 226, config["text_embed_dim"])
    timestep = torch.tensor([500], dtype=torch.int64)
    inputs = os.path.join(tmp, "inputs.safetensors")
    save_file({"hidden_states": hidden, "encoder_hidden_states": text, "timestep": timestep}, inputs)

    class _Pipe:  # just enough of the pipeline to build its rotary tables
        vae_scale_factor_spatial = 8
        transformer = model

    _, f, _, h, w = latent
    rope = CogVideoXPipeline._prepare_rotary_positional_embeddings(_Pipe(), h * 8, w * 8, f, "cpu")
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    cmd = [rust_bin] if rust_bin else ["cargo", "run", "--quiet", "--release", "--example", "bench_transformer", "--"]
    rust = subprocess.Popen(
        cmd + [tmp, inputs],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
    )

    def rust_run():
        rust.stdin.write("run\n")
        rust.stdin.flush()
        line = rust.stdout.readline()
        m = re.match(r"rust_forward_s=([0-9.]+)", line)
        if not m:
            sys.exit(f"bench_transformer failed: {line!r}")
        return float(m.group(1))

    def torch_run():
        start = time.perf_counter()
        with torch.no_grad():
            out = model(hidden, text, timestep, image_rotary_emb=rope, return_dict=False)[0]
        return time.perf_counter() - start, out

    torch_times, rust_times = [], []
    _, out = torch_run()
    rust_run()
    for _ in range(runs):
        t, out = torch_run()
        torch_times.append(t)
        rust_times.append(rust_run())
    torch_peak = peak_rss_gib()
    outputs = os.path.join(tmp, "output.safetensors")
    save_file({"output": out}, outputs)
    rust.stdin.write(f"compare {outputs}\n")
    rust.stdin.close()
    tail = rust.stdout.read()
    if rust.wait() != 0:
        sys.exit("bench_transformer failed")
    diff = re.search(r"rust_max_abs_diff=(\S+)", tail).group(1)
    rust_peak = int(re.search(r"rust_peak_rss_kib=(\d+)", tail).group(1)) / 2**20
    n = (latent[1] * latent[3] * latent[4]) // 4 + 226
    width = config["num_attention_heads"] * 64
    print(f"config {name}: {config['num_layers']} block(s) x {width} wide ({config['num_attention_heads']} heads x 64), "
          f"latent {latent}, {n} tokens, f32, {threads} threads, {runs} interleaved runs after 1 warm-up each")
    tmin, tmed = min(torch_times), statistics.median(torch_times)
    rmin, rmed = min(rust_times), statistics.median(rust_times)
    print(f"  torch {torch.__version__}: min {tmin:.3f} s, median {tmed:.3f} s; peak RSS {torch_peak:.2f} GiB")
    print(f"  libcogvideo: min {rmin:.3f} s, median {rmed:.3f} s; peak RSS {rust_peak:.2f} GiB")
    print(f"  ratio libcogvideo/torch: min {rmin / tmin:.2f}, median {rmed / tmed:.2f}; max abs difference {diff}")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", choices=["mid", "real", "both"], default="both")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rust-bin", help="a prebuilt bench_transformer (e.g. built with other features) instead of cargo run")
    ap.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if not args.no_header:
        print(cpu_description(), flush=True)
    for name in ["mid", "real"] if args.config == "both" else [args.config]:
        # One process per configuration, so that each peak RSS is its own.
        if args.config == "both":
            extra = ["--rust-bin", args.rust_bin] if args.rust_bin else []
            subprocess.run([sys.executable, __file__, "--config", name, "--threads", str(args.threads),
                            "--runs", str(args.runs), "--no-header"] + extra, check=True)
        else:
            bench(name, args.runs, args.threads, args.rust_bin)


if __name__ == "__main__":
    main()
