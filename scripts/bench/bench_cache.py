"""End-to-end text-to-video with each step cache against exact mode, on the CPU.

Usage (from the repository root, with the golden-reference venv):
    python scripts/bench/bench_cache.py [--steps 50] [--rounds 1] [--threads 2]

The mid-size configuration of bench_transformer.py (a 5b-style transformer,
RoPE, 16 heads x 64 = 1024 wide, 4 blocks; latent 5 x 30 x 44, a 17-frame
240x352 clip: 1,650 video tokens + 226 text) with random weights, in a copy
of the tiny cogvideox-5b pipeline (its T5 and VAE; the transformer's
text_embed_dim is the tiny T5's 32). Each run is its own process
(examples/bench_cache.rs, built with the dev profile at opt-level 3 so the
dependencies' build is shared with the tests), so each peak RSS is its own;
the methods alternate within a round, exact first and last. Prints every run
and, per method, min / median seconds, their ratio to exact's, the block and
attention evaluations skipped and the peak RSS.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

import torch
from diffusers import CogVideoXTransformer3DModel

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
MID = dict(attention_head_dim=64, num_attention_heads=16, num_layers=4, in_channels=16, out_channels=16,
           time_embed_dim=512, text_embed_dim=32, sample_width=90, sample_height=60, sample_frames=49,
           patch_size=2, use_rotary_positional_embeddings=True)
# "method@steps" runs that method at fewer steps (the preview setting)
METHODS = ["exact", "first_block", "pab", "faster", "taylorseer", "faster@5", "faster@25"]


def make_checkpoint(root):
    ckpt = os.path.join(root, "mid")
    shutil.copytree(os.path.join(REPO, "tests", "data", "tiny", "cogvideox-5b"), ckpt,
                    ignore=shutil.ignore_patterns("transformer"))
    torch.manual_seed(0)
    model = CogVideoXTransformer3DModel(**MID)
    model.save_pretrained(os.path.join(ckpt, "transformer"), safe_serialization=True)
    return ckpt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    env = dict(os.environ, CARGO_PROFILE_DEV_OPT_LEVEL="3", RAYON_NUM_THREADS=str(args.threads))
    subprocess.run(["cargo", "build", "--workspace", "--example", "bench_cache"], cwd=REPO, env=env, check=True)
    exe = os.path.join(REPO, "target", "debug", "examples", "bench_cache")
    runs = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as root:
        ckpt = make_checkpoint(root)
        for _ in range(args.rounds):
            for m in METHODS + ["exact"]:
                method, _, steps = m.partition("@")
                out = subprocess.run([exe, ckpt, method, steps or str(args.steps)], env=env, check=True,
                                     capture_output=True, text=True).stdout
                rec = dict(json.loads(out.strip().splitlines()[-1]), method=m)
                print(json.dumps(rec), flush=True)
                runs[m].append(rec)
    exact = runs["exact"]
    e_min, e_med = min(r["seconds"] for r in exact), statistics.median(r["seconds"] for r in exact)
    print(f"\n{'method':<18} {'min s':>8} {'median s':>9} {'ratio min/med':>14} {'blocks skipped':>15} "
          f"{'attn skipped':>13} {'peak RSS MiB':>13}")
    for m, rs in runs.items():
        s = [r["seconds"] for r in rs]
        r0 = rs[0]
        print(f"{m:<18} {min(s):8.1f} {statistics.median(s):9.1f} "
              f"{min(s) / e_min:6.2f} /{statistics.median(s) / e_med:5.2f} "
              f"{r0['blocks_skipped']:>7} of {r0['block_evaluations']:<5} {r0['attention_skipped']:>13} "
              f"{max(r['peak_rss'] for r in rs) / 2**20:13.0f}")
    print(f"cpu: {platform_cpu()}, threads {args.threads}")


def platform_cpu():
    try:
        with open("/proc/cpuinfo") as f:
            return next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
