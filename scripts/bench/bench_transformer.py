"""Times one CogVideoX transformer forward on the CPU in diffusers and in
libcogvideo, on the same random weights and inputs, in the same run.

Usage (from the repository root, with the golden-reference venv):
    python scripts/bench/bench_transformer.py [--threads N] [--runs R]

It writes a mid-size random 5b-style transformer (RoPE, 1024 wide, 4 blocks)
and its inputs to a temporary folder, times diffusers, then runs
`cargo run --release --example bench_transformer` on the same files and
prints both medians and their ratio.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.pipelines.cogvideo.pipeline_cogvideox import CogVideoXPipeline
from safetensors.torch import save_file

CONFIG = dict(
    num_attention_heads=16,
    attention_head_dim=64,
    in_channels=16,
    out_channels=16,
    time_embed_dim=512,
    text_embed_dim=4096,
    num_layers=4,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    use_rotary_positional_embeddings=True,
)
# Latent 5 x 30 x 44 (a 17-frame 240x352 clip): 5*15*22 = 1650 video tokens + 226 text.
LATENT = (1, 5, 16, 30, 44)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    tmp = tempfile.mkdtemp(prefix="cogvideo-bench-")
    model = CogVideoXTransformer3DModel(**CONFIG).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.02)
    model.save_pretrained(os.path.join(tmp, "transformer"))
    with open(os.path.join(tmp, "model_index.json"), "w") as f:
        json.dump({"_class_name": "CogVideoXPipeline", "transformer": ["diffusers", "CogVideoXTransformer3DModel"]}, f)

    hidden = torch.randn(LATENT)
    text = torch.randn(1, 226, CONFIG["text_embed_dim"])
    timestep = torch.tensor([500], dtype=torch.int64)

    class _Pipe:  # just enough of the pipeline to build its rotary tables
        vae_scale_factor_spatial = 8
        transformer = model

    _, f, _, h, w = LATENT
    rope = CogVideoXPipeline._prepare_rotary_positional_embeddings(_Pipe(), h * 8, w * 8, f, "cpu")
    times = []
    with torch.no_grad():
        for _ in range(args.runs):
            start = time.perf_counter()
            out = model(hidden, text, timestep, image_rotary_emb=rope, return_dict=False)[0]
            times.append(time.perf_counter() - start)
    times.sort()
    torch_s = times[len(times) // 2]
    inputs = os.path.join(tmp, "inputs.safetensors")
    save_file({"hidden_states": hidden, "encoder_hidden_states": text, "timestep": timestep, "output": out}, inputs)

    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    res = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "--example", "bench_transformer", "--", tmp, inputs, str(args.runs)],
        capture_output=True, text=True, env=env,
    )
    if res.returncode != 0:
        sys.exit(res.stderr)
    rust_s = float(re.search(r"rust_forward_s=([0-9.]+)", res.stdout).group(1))
    diff = re.search(r"rust_max_abs_diff=(\S+)", res.stdout).group(1)
    print(f"config: 4 blocks x 1024 wide (16 heads x 64), latent {LATENT}, {1650 + 226} tokens, f32, {args.threads} threads")
    print(f"torch {torch.__version__}: {torch_s:.3f} s   libcogvideo: {rust_s:.3f} s   ratio rust/torch: {rust_s / torch_s:.2f}")
    print(f"max abs difference of the outputs: {diff}")


if __name__ == "__main__":
    main()
