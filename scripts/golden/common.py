"""Small helpers shared by the golden generators."""

import json
import os

import torch
from safetensors.torch import save_file


def gen(seed):
    return torch.Generator().manual_seed(seed)


def randn(shape, seed, scale=1.0):
    return torch.randn(tuple(shape), generator=gen(seed), dtype=torch.float32) * scale


def save_tensors(path, tensors):
    """Save a dict of tensors; float tensors keep their dtype (f32 / f64), ints are saved as int64."""
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if v.dtype in (torch.int32, torch.int16, torch.int8, torch.uint8):
            v = v.to(torch.int64)
        if v.dtype in (torch.float16, torch.bfloat16):
            v = v.to(torch.float32)
        out[k] = v.contiguous()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    save_file(out, path)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


def assert_close(a, b, what, atol=0.0):
    if atol == 0.0:
        if not torch.equal(a, b):
            raise AssertionError(f"{what}: not bit-identical (max diff {(a.double() - b.double()).abs().max()})")
    else:
        d = (a.double() - b.double()).abs().max().item()
        if d > atol:
            raise AssertionError(f"{what}: max diff {d} > {atol}")


def check_nontrivial(t, what):
    t = t.detach().double()
    if not torch.isfinite(t).all():
        raise AssertionError(f"{what}: non-finite values")
    if t.numel() > 1 and t.std().item() < 1e-3:
        raise AssertionError(f"{what}: (nearly) constant output, std {t.std().item()}")


def write_cases_json(path, head, cases):
    """JSON with one compact line per case (keeps long id lists small and diffable)."""
    import json as _json
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write("{\n")
        for k, v in head.items():
            f.write(f" {_json.dumps(k)}: {_json.dumps(v, ensure_ascii=False)},\n")
        f.write(' "cases": [\n')
        for i, c in enumerate(cases):
            sep = "," if i + 1 < len(cases) else ""
            f.write("  " + _json.dumps(c, ensure_ascii=False, separators=(", ", ": ")) + sep + "\n")
        f.write(" ]\n}\n")
