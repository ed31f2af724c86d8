"""Prints the table of scripts/gpu/run.sh from its logs: libcogvideo and
diffusers side by side with ratios (libcogvideo / diffusers), the 50-step
estimate, peak GPU memory, and the full-size parity.

    python3 summary.py RESULTS_DIR
reads rust_time.txt, diffusers_time.txt, smi_rust.csv, smi_diffusers.csv,
rust.safetensors and diffusers.safetensors there (any may be missing).
"""

import os
import sys


def read_kv(path):
    out = {}
    if os.path.exists(path):
        for line in open(path, errors="replace"):
            if "=" in line and " " not in line.split("=", 1)[0]:
                k, v = line.strip().split("=", 1)
                out[k] = v
    return out


def num(d, k):
    try:
        return float(d[k])
    except (KeyError, ValueError):
        return None


def peak_mib(path):
    if not os.path.exists(path):
        return None
    vals = []
    for line in open(path):
        try:
            vals.append(float(line.strip().split(",")[-1]))
        except ValueError:
            pass
    return max(vals) if vals else None


def estimate(d):
    """encode_text + 50 x median t2v step + decode, in seconds."""
    parts = [num(d, "encode_text_s"), num(d, "t2v_step_median_s"), num(d, "decode_s")]
    if None in parts:
        return None
    return parts[0] + 50 * parts[1] + parts[2]


def main():
    res = sys.argv[1]
    rust = read_kv(os.path.join(res, "rust_time.txt"))
    torch = read_kv(os.path.join(res, "diffusers_time.txt"))
    print(f"size {rust.get('size', torch.get('size', '?'))}, libcogvideo on {rust.get('device', '?')} "
          f"{rust.get('dtype', '?')}, attention: {rust.get('attention', '?')}")
    rows = [
        ("t2v step with CFG, min (s)", "t2v_step_min_s"),
        ("t2v step with CFG, median (s)", "t2v_step_median_s"),
        ("edit step (reference attention, batch 4), min (s)", "edit_step_min_s"),
        ("edit step, median (s)", "edit_step_median_s"),
        ("VAE decode of the clip (s)", "decode_s"),
        ("T5 encode (s)", "encode_text_s"),
        ("load (s)", "load_s"),
    ]
    print("| what | libcogvideo | diffusers | ratio |")
    print("|---|---|---|---|")

    def row(name, a, b, fmt="{:.3f}"):
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        show = lambda x: "-" if x is None else fmt.format(x)
        print(f"| {name} | {show(a)} | {show(b)} | {ratio} |")

    for name, key in rows:
        row(name, num(rust, key), num(torch, key))
    row("50-step text-to-video, estimated (s): T5 + 50 x median step + decode",
        estimate(rust), estimate(torch), "{:.1f}")
    row("peak GPU memory, nvidia-smi (GiB)",
        *(None if m is None else m / 1024 for m in (peak_mib(os.path.join(res, "smi_rust.csv")),
                                                    peak_mib(os.path.join(res, "smi_diffusers.csv")))),
        "{:.1f}")

    try:
        from safetensors.torch import load_file
    except ImportError:
        return
    r, d = os.path.join(res, "rust.safetensors"), os.path.join(res, "diffusers.safetensors")
    if os.path.exists(r) and os.path.exists(d):
        ours = load_file(r)["output"].double()
        ref = load_file(d)
        f32, bf16 = ref["f32_output"].double(), ref["bf16_output"].double()
        scale = f32.abs().max().item()

        def err(a, b):
            return (a - b).abs().max().item(), ((a - b).norm() / b.norm()).item()

        print(f"full-size transformer forward (timestep 999, CFG batch), max|f32 ref| {scale:.3g}:")
        for name, a, b in (("libcogvideo bf16 vs diffusers f32", ours, f32),
                           ("diffusers bf16 vs diffusers f32", bf16, f32),
                           ("libcogvideo bf16 vs diffusers bf16", ours, bf16)):
            m, rel = err(a, b)
            print(f"  {name}: max abs {m:.3e} ({m / scale:.2%} of scale), relative L2 {rel:.3e}")


if __name__ == "__main__":
    main()
