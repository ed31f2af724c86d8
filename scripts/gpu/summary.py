"""The results of scripts/gpu/run.sh, from the files it leaves in its work
folder. Python's standard library only, so it runs anywhere (and is tested
on fabricated inputs by test_scripts.py).

    python3 summary.py parity WORK
        The full-size parity: libcogvideo bf16 (rust.safetensors) against
        diffusers bf16 and f32 (diffusers_bf16/_f32.safetensors), and
        diffusers' own bf16-vs-f32 spread, whichever of them exist. Prints
        key=value lines and writes them to WORK/parity.txt.
    python3 summary.py table WORK
        The table: how each stage ended (stages.txt), libcogvideo and
        diffusers side by side with ratios (rust_time.txt,
        diffusers_time.txt), the 50-step estimate, peak GPU memory
        (smi_rust.csv, smi_diffusers.csv), the attention backend before and
        after the runs, and the parity (parity.txt). Any file may be missing.
"""

import array
import json
import math
import os
import struct
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


def load_f32(path, name="output"):
    """One F32 tensor of a safetensors file: (shape, values)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        meta = header[name]
        if meta["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {meta['dtype']}, not F32")
        start, end = meta["data_offsets"]
        f.seek(8 + n + start)
        values = array.array("f")
        values.frombytes(f.read(end - start))
    if sys.byteorder != "little":
        values.byteswap()
    return tuple(meta["shape"]), values


def compare(a, b):
    """max |a - b| and ||a - b|| / ||b||."""
    worst, diff2, ref2 = 0.0, 0.0, 0.0
    for x, y in zip(a, b):
        d = abs(x - y)
        worst = max(worst, d)
        diff2 += d * d
        ref2 += y * y
    return worst, math.sqrt(diff2) / math.sqrt(ref2) if ref2 else math.inf


def parity(work):
    files = {"rust_bf16": "rust.safetensors", "diffusers_bf16": "diffusers_bf16.safetensors",
             "diffusers_f32": "diffusers_f32.safetensors"}
    outs = {}
    lines = []
    for key, name in files.items():
        path = os.path.join(work, name)
        if not os.path.exists(path):
            continue
        try:
            outs[key] = load_f32(path)
        except (OSError, ValueError, KeyError) as e:
            lines.append(f"parity_error_{key}={e}")
    ref = outs.get("diffusers_f32") or outs.get("diffusers_bf16")
    if ref is not None:
        scale = max(map(abs, ref[1]), default=0.0)
        lines.append(f"parity_scale={scale:.6g}")
        for a, b in (("rust_bf16", "diffusers_bf16"), ("rust_bf16", "diffusers_f32"),
                     ("diffusers_bf16", "diffusers_f32")):
            if a not in outs or b not in outs:
                continue
            key = f"parity_{a}_vs_{b}"
            if outs[a][0] != outs[b][0]:
                lines.append(f"{key}_error=shapes {list(outs[a][0])} and {list(outs[b][0])}")
                continue
            worst, rel = compare(outs[a][1], outs[b][1])
            lines.append(f"{key}_max_abs={worst:.6g}")
            lines.append(f"{key}_of_scale={worst / scale if scale else math.inf:.6g}")
            lines.append(f"{key}_rel_l2={rel:.6g}")
    missing = [files[k] for k in files if k not in outs]
    if missing:
        lines.append(f"parity_missing={','.join(missing)}")
    with open(os.path.join(work, "parity.txt"), "w") as f:
        f.write("".join(line + "\n" for line in lines))
    print("\n".join(lines))


def stages(work):
    path = os.path.join(work, "stages.txt")
    rows = []
    if os.path.exists(path):
        for line in open(path):
            fields = dict(f.split("=", 1) for f in line.strip().split(" ", 5) if "=" in f)
            rows.append(fields)
    return rows


def table(work):
    rows = stages(work)
    if rows:
        print("| stage | status | s (cap) | note |")
        print("|---|---|---|---|")
        for r in rows:
            print(f"| {r.get('stage', '?')} | {r.get('status', '?')} (exit {r.get('rc', '-')}) "
                  f"| {r.get('seconds', '?')} ({r.get('cap', '?')}) | {r.get('note', '').strip()} |")
        print()
    rust = read_kv(os.path.join(work, "rust_time.txt"))
    torch = read_kv(os.path.join(work, "diffusers_time.txt"))
    rust_parity = read_kv(os.path.join(work, "rust_parity.txt"))
    print(f"size {rust.get('size', torch.get('size', '?'))}, libcogvideo on "
          f"{rust.get('device', '?')} {rust.get('dtype', '?')}")
    # At load nothing has run; the later lines say what the shapes really ran.
    for label, key, src in (("attention at load", "attention", rust),
                            ("attention after the t2v steps", "attention_after_t2v", rust),
                            ("attention after the edit", "attention_after_edit", rust),
                            ("attention after the parity forward", "parity_attention",
                             rust_parity)):
        print(f"- {label}: {src.get(key, '-')}")
    print()
    timing = [
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
        show = lambda x: "-" if x is None else fmt.format(x)  # noqa: E731
        print(f"| {name} | {show(a)} | {show(b)} | {ratio} |")

    for name, key in timing:
        row(name, num(rust, key), num(torch, key))
    row("50-step text-to-video, estimated (s): T5 + 50 x median step + decode",
        estimate(rust), estimate(torch), "{:.1f}")
    row("full-size transformer forward, bf16 (s)", num(rust_parity, "parity_forward_s"),
        num(read_kv(os.path.join(work, "diffusers_parity.txt")), "parity_bf16_forward_s"))
    row("peak GPU memory, nvidia-smi (GiB)",
        *(None if m is None else m / 1024 for m in (peak_mib(os.path.join(work, "smi_rust.csv")),
                                                    peak_mib(os.path.join(work, "smi_diffusers.csv")))),
        "{:.1f}")
    errors = {k: v for k, v in rust.items() if k.endswith("_error")}
    for k, v in errors.items():
        print(f"libcogvideo {k}: {v}")

    p = read_kv(os.path.join(work, "parity.txt"))
    if not p:
        print("\nfull-size parity: not computed")
        return
    print(f"\nfull-size transformer forward (timestep 999, CFG batch), "
          f"max|reference| {p.get('parity_scale', '?')}:")
    for a, b in (("rust_bf16", "diffusers_f32"), ("diffusers_bf16", "diffusers_f32"),
                 ("rust_bf16", "diffusers_bf16")):
        key = f"parity_{a}_vs_{b}"
        name = f"{a.replace('rust', 'libcogvideo').replace('_', ' ')} vs {b.replace('_', ' ')}"
        if f"{key}_error" in p:
            print(f"- {name}: {p[f'{key}_error']}")
        elif f"{key}_max_abs" in p:
            of_scale = num(p, f"{key}_of_scale")
            print(f"- {name}: max abs {p[f'{key}_max_abs']} "
                  f"({'-' if of_scale is None else f'{of_scale:.2%}'} of scale), "
                  f"relative L2 {p[f'{key}_rel_l2']}")
    for k in p:
        if k.startswith("parity_error") or k == "parity_missing":
            print(f"- {k}: {p[k]}")


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "parity":
        parity(sys.argv[2])
    elif len(sys.argv) == 3 and sys.argv[1] == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
