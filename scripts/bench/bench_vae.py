"""Times the CogVideoX VAE (encode and decode, untiled and tiled) on the CPU in
diffusers and in libcogvideo, on the same random weights and inputs,
interleaved in one run, and reports each case's peak resident memory.

Usage (from the repository root, with the golden-reference venv):
    python scripts/bench/bench_vae.py [--threads N] [--runs R] [--warmup W] [--cases a,b]

It writes a full-size VAE (diffusers' default AutoencoderKLCogVideoX config,
as in CogVideoX-5b's vae/config.json) with random weights, a 9-frame 240x360
clip and a 3 x 30 x 45 latent to a temporary folder and builds
`examples/bench_vae.rs`. Each case then runs in two processes at once, one
diffusers and one libcogvideo, each loaded and waiting for requests: W
warm-up runs each, then torch, rust, torch, rust, ... R times, so that both
see the same machine load; the median of the R runs is reported. One process
per case and implementation, so that the process's peak resident memory
(ru_maxrss) belongs to that case alone. Both sides include their runtime and
weights in that peak; the resident memory after loading is printed as well.
The Rust outputs are compared with diffusers'.
"""

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file, save_file

# CogVideoX-5b's vae/config.json: diffusers' defaults with its scaling factor.
SCALING_FACTOR = 0.7
FRAMES, HEIGHT, WIDTH = 9, 240, 360
# 9 frames -> 3 latent frames of 30 x 45.
LATENT = (1, 16, (FRAMES - 1) // 4 + 1, HEIGHT // 8, WIDTH // 8)
# Tiles smaller than the clip in both directions: 2 x 2 tiles when encoding
# (144 x 240 px, stride 120 x 192) and when decoding (18 x 30 latent, stride
# 15 x 24), with diffusers' default overlaps. The strides in pixels and in
# latents must agree (8x); with 160-pixel tiles they do not (133 vs 16 x 8),
# and diffusers then assembles a wrongly sized output, which libcogvideo
# refuses.
TILE = dict(
    tile_sample_min_height=144,
    tile_sample_min_width=240,
    tile_overlap_factor_height=1 / 6,
    tile_overlap_factor_width=1 / 5,
)
CASES = ["encode", "decode", "encode_tiled", "decode_tiled"]


def rss_kb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@torch.no_grad()
def random_weights_(model, seed):
    """Seeded weights that keep activations O(1) through the whole network:
    N(0, 1/fan_in) kernels, norm scales near 1, small biases."""
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(model.named_parameters()):
        if p.dim() > 1:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()))
        elif "norm" in name and name.endswith("weight"):
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(0.02 * torch.randn(p.shape, generator=g))


def worker(folder, case, threads):
    """One case in diffusers, with the protocol of examples/bench_vae.rs:
    `rss_loaded_kb=` once loaded, then one run per `run` line on stdin, each
    printing `run_s=`; at the end of input the last output is saved."""
    from diffusers import AutoencoderKLCogVideoX

    torch.set_num_threads(threads)
    vae = AutoencoderKLCogVideoX.from_pretrained(os.path.join(folder, "vae")).eval()
    if case.endswith("_tiled"):
        vae.enable_tiling(**TILE)
    encode = case.startswith("encode")
    x = load_file(os.path.join(folder, "inputs.safetensors"))["video" if encode else "latents"]
    print(f"rss_loaded_kb={rss_kb()}", flush=True)

    out = None
    for line in sys.stdin:
        if line.strip() != "run":
            sys.exit(f"unknown command {line!r}")
        out = None  # free the previous output first so it does not add to the peak
        start = time.perf_counter()
        with torch.no_grad():
            out = vae.encode(x).latent_dist.mean if encode else vae.decode(x).sample
        print(f"run_s={time.perf_counter() - start:.4f}", flush=True)
    save_file({"output": out.contiguous()}, os.path.join(folder, f"torch_{case}.safetensors"))


class Case:
    """One implementation's process for one case, loaded and waiting for `run` lines."""

    def __init__(self, cmd, env=None):
        self.cmd = cmd
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        self.loaded = int(self.expect(r"rss_loaded_kb=(\d+)"))
        self.times = []

    def expect(self, pattern):
        line = self.proc.stdout.readline()
        m = re.match(pattern, line)
        if not m:
            self.proc.kill()
            sys.exit(f"{' '.join(self.cmd)} failed: {line!r}")
        return m.group(1)

    def run(self):
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return float(self.expect(r"run_s=([0-9.]+)"))

    def finish(self):
        """Ends input (the process saves its output); returns (min and median run seconds, peak RSS KiB, RSS after loading KiB)."""
        self.proc.stdin.close()
        # wait4 rather than proc.wait(): it also gives this child's own peak RSS.
        _, status, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if self.proc.returncode != 0:
            sys.exit(f"{' '.join(self.cmd)} failed with status {self.proc.returncode}")
        times = sorted(self.times)
        return (times[0], times[len(times) // 2]), usage.ru_maxrss, self.loaded


def interleaved(torch_cmd, rust_cmd, runs, warmup, env):
    """Both processes loaded, then warm-ups and runs alternating torch, rust."""
    sides = [Case(torch_cmd), Case(rust_cmd, env)]
    for _ in range(warmup):
        for side in sides:
            side.run()
    for _ in range(max(runs, 1)):
        for side in sides:
            side.times.append(side.run())
    return [side.finish() for side in sides]


def rust_binary():
    """Builds the example (not timed) and returns its path."""
    subprocess.run(["cargo", "build", "--quiet", "--release", "--example", "bench_vae"], check=True)
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"], check=True, capture_output=True, text=True
    )
    return os.path.join(json.loads(meta.stdout)["target_directory"], "release", "examples", "bench_vae")


def prepare(folder):
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(scaling_factor=SCALING_FACTOR).eval()
    random_weights_(vae, seed=1)
    vae.save_pretrained(os.path.join(folder, "vae"))
    g = torch.Generator().manual_seed(2)
    video = torch.rand((1, 3, FRAMES, HEIGHT, WIDTH), generator=g) * 2 - 1
    latents = torch.randn(LATENT, generator=g)
    save_file({"video": video, "latents": latents}, os.path.join(folder, "inputs.safetensors"))
    return sum(p.numel() for p in vae.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated subset of " + ", ".join(CASES))
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--rust-bin", help="a prebuilt bench_vae (e.g. built with other features) instead of cargo build")
    ap.add_argument("--worker", nargs=2, metavar=("FOLDER", "CASE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, args.threads)
        return
    cases = args.cases.split(",")
    if not set(cases) <= set(CASES):
        sys.exit(f"unknown case in {args.cases}; cases are {CASES}")

    binary = args.rust_bin or rust_binary()
    folder = tempfile.mkdtemp(prefix="cogvideo-bench-vae-")
    try:
        params = prepare(folder)
        print(
            f"VAE: diffusers' default AutoencoderKLCogVideoX config ({params / 1e6:.1f} M parameters), random weights, "
            f"f32; video 1x3x{FRAMES}x{HEIGHT}x{WIDTH}, latents {'x'.join(map(str, LATENT))}; "
            f"tiled: {TILE}; {args.threads} threads, {args.warmup} warm-up + median of {args.runs} interleaved runs; "
            f"torch kernels: {torch.backends.cpu.get_cpu_capability()}",
            flush=True,
        )
        env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
        tile_args = [str(TILE[k]) for k in TILE]
        rows = []
        for case in cases:
            rust_out = os.path.join(folder, f"rust_{case}.safetensors")
            op = case.split("_")[0]
            torch_res, rust_res = interleaved(
                [sys.executable, __file__, "--worker", folder, case, "--threads", str(args.threads)],
                [
                    binary,
                    os.path.join(folder, "vae"),
                    os.path.join(folder, "inputs.safetensors"),
                    op,
                    rust_out,
                    *(tile_args if case.endswith("_tiled") else []),
                ],
                args.runs,
                args.warmup,
                env,
            )
            ref = load_file(os.path.join(folder, f"torch_{case}.safetensors"))["output"]
            got = load_file(rust_out)["output"]
            if got.shape != ref.shape:
                sys.exit(f"{case}: Rust output {tuple(got.shape)}, diffusers {tuple(ref.shape)}")
            diff = (got - ref).abs().max().item()
            scale = ref.abs().max().item()
            rows.append((case, torch_res, rust_res, diff, scale))
            print(
                f"{case}: torch min {torch_res[0][0]:.2f} s, median {torch_res[0][1]:.2f} s, peak {torch_res[1] / 2**20:.2f} GiB "
                f"(loaded {torch_res[2] / 2**20:.2f}); rust min {rust_res[0][0]:.2f} s, median {rust_res[0][1]:.2f} s, "
                f"peak {rust_res[1] / 2**20:.2f} GiB (loaded {rust_res[2] / 2**20:.2f}); "
                f"max abs diff {diff:.2e} (max |ref| {scale:.2f})",
                flush=True,
            )
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)

    print()
    print(f"| case | torch {torch.__version__.split('+')[0]} min / median | libcogvideo min / median | ratio min / median "
          "| torch peak RSS | libcogvideo peak RSS | ratio | max abs diff (max abs ref) |")
    print("|---|---|---|---|---|---|---|---|")
    for case, ((tmin, tmed), tm, _), ((rmin, rmed), rm, _), diff, scale in rows:
        print(
            f"| {case} | {tmin:.2f} s / {tmed:.2f} s | {rmin:.2f} s / {rmed:.2f} s | {rmin / tmin:.2f} / {rmed / tmed:.2f} "
            f"| {tm / 2**20:.2f} GiB | {rm / 2**20:.2f} GiB | {rm / tm:.2f} | {diff:.1e} ({scale:.2f}) |"
        )


if __name__ == "__main__":
    main()
