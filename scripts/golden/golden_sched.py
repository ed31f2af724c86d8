"""Golden outputs for CogVideoXDDIMScheduler, CogVideoXDPMScheduler, DDIMInverseScheduler and dynamic CFG."""

import json
import math
import os

import torch

import diffusers.schedulers.scheduling_dpm_cogvideox as dpm_mod
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler, DDIMInverseScheduler

from common import randn, save_tensors, write_json

STEP_COUNTS = [1, 2, 4, 7, 10, 30, 50]
SEQ_STEP_COUNTS = [4, 7]
SAMPLE_SHAPE = (1, 3, 2, 4, 4)
# Configs for the step sequences: name -> (tiny variant, overrides of its scheduler_config.json).
SEQ_CONFIGS = {"snr3": ("cogvideox-2b", {}), "snr1": ("cogvideox-5b", {}),
               "snr1_final": ("cogvideox-5b", {"set_alpha_to_one": False})}
# Configs for the timesteps of every step count 1..=num_train_timesteps.
ALL_COUNTS_CONFIGS = {"snr3": ("cogvideox-2b", {}), "snr1": ("cogvideox-5b", {}),
                      "snr1_leading": ("cogvideox-5b", {"timestep_spacing": "leading"}),
                      "snr1_leading_offset10": ("cogvideox-5b", {"timestep_spacing": "leading", "steps_offset": 10}),
                      "snr1_linspace": ("cogvideox-5b", {"timestep_spacing": "linspace"})}
ADD_NOISE_TIMESTEPS = [0, 1, 250, 499, 998, 999]


class _NoisePatch:
    """Replace randn_tensor inside scheduling_dpm_cogvideox with a queue of pre-generated tensors."""

    def __init__(self):
        self.queue = []
        self.calls = 0
        self._orig = dpm_mod.randn_tensor

    def __enter__(self):
        def fake(shape, generator=None, device=None, dtype=None, layout=None):
            if not self.queue:
                raise AssertionError("DPM scheduler drew more noise than prepared")
            t = self.queue.pop(0)
            assert tuple(t.shape) == tuple(shape) and t.dtype == dtype, (t.shape, shape, t.dtype, dtype)
            self.calls += 1
            return t.clone()

        dpm_mod.randn_tensor = fake
        return self

    def __exit__(self, *exc):
        dpm_mod.randn_tensor = self._orig
        return False


def _dpm_step(sched, v, old_x0, t, t_back, x, draws):
    with _NoisePatch() as p:
        p.queue = list(draws)
        out = sched.step(v, old_x0, t, t_back, x, return_dict=False)
        used = p.calls
    return out, used


def _schedulers(tiny_root, variant, overrides):
    ddim = CogVideoXDDIMScheduler.from_pretrained(os.path.join(tiny_root, variant, "scheduler"))
    if overrides:
        ddim = CogVideoXDDIMScheduler.from_config({**ddim.config, **overrides})
    cfg = ddim.config
    dpm = CogVideoXDPMScheduler.from_config(cfg)
    # built as the DDIM-inversion script (diffusers examples/community/cogvideox_ddim_inversion.py) does
    inv = DDIMInverseScheduler(**cfg)
    assert torch.equal(inv.alphas_cumprod, DDIMInverseScheduler.from_config(cfg).alphas_cumprod)
    return ddim, dpm, inv


def _fnv1a32(ts):
    """FNV-1a (32 bit) of the timesteps written as `999,979,...`: a compact, exact fingerprint."""
    h = 0x811C9DC5
    for byte in ",".join(str(int(t)) for t in ts).encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return f"{h:08x}"


def gen_all_step_counts(golden_dir, tiny_root):
    """Timesteps of every step count 1..=num_train_timesteps, fingerprinted per count.

    diffusers computes trailing spacing as np.round(np.arange(train, 0, -train / n)) - 1. For some counts (61,
    103, ...) numpy's arange has n + 1 elements, the last a rounding residue of about 1e-13 that becomes timestep
    -1 (an extra step that indexes the tables from the end). libcogvideo keeps the n timesteps asked for, so the
    fingerprint is of diffusers' list without negative entries, and `dropped` records what was left out.
    Counts whose timesteps run past the table (leading spacing with steps_offset) are listed in `out_of_range`.
    """
    meta = {"hash": "FNV-1a 32 of the comma-joined decimal timesteps", "configs": {}, "lists": {}}
    for cfg_name, (variant, overrides) in ALL_COUNTS_CONFIGS.items():
        ddim, dpm, inv = _schedulers(tiny_root, variant, overrides)
        train = ddim.config.num_train_timesteps
        meta["configs"][cfg_name] = {"source": f"tests/data/tiny/{variant}/scheduler/scheduler_config.json",
                                     "overrides": overrides}
        scheds = {"forward": [ddim, dpm]}
        if ddim.config.timestep_spacing != "linspace":  # DDIMInverseScheduler has leading and trailing only
            scheds["inverse"] = [inv]
        for kind, group in scheds.items():
            entry = {"config": cfg_name, "kind": kind, "schedulers": [type(s).__name__ for s in group],
                     "hashes": [], "dropped": {}, "out_of_range": []}
            for n in range(1, train + 1):
                lists = []
                for s in group:
                    s.set_timesteps(n)
                    lists.append([int(t) for t in s.timesteps])
                assert all(ts == lists[0] for ts in lists), (cfg_name, kind, n)
                ts = lists[0]
                if any(t >= train for t in ts):
                    entry["out_of_range"].append(n)
                    entry["hashes"].append(None)
                    continue
                kept = [t for t in ts if t >= 0]
                if len(kept) != len(ts):
                    entry["dropped"][str(n)] = [t for t in ts if t < 0]
                assert len(kept) == n, (cfg_name, kind, n, len(ts))
                entry["hashes"].append(_fnv1a32(kept))
            meta["lists"][f"{kind}_{cfg_name}"] = entry
    with open(os.path.join(golden_dir, "scheduler_timesteps.json"), "w", encoding="utf-8") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.write("\n")
    return len(meta["lists"])


def _load_config(tiny_root, variant):
    with open(os.path.join(tiny_root, variant, "scheduler", "scheduler_config.json")) as f:
        return json.load(f)


@torch.no_grad()
def gen_schedulers(golden_dir, tiny_root):
    tensors = {}
    meta = {"file": "scheduler.safetensors", "sample_shape": list(SAMPLE_SHAPE), "configs": {}, "timesteps": {},
            "sequences": [], "dynamic_cfg": []}
    seed = 9000
    for cfg_name, (variant, overrides) in SEQ_CONFIGS.items():
        ddim, dpm, inv = _schedulers(tiny_root, variant, overrides)
        meta["configs"][cfg_name] = {"source": f"tests/data/tiny/{variant}/scheduler/scheduler_config.json",
                                     "overrides": overrides, "config": _load_config(tiny_root, variant)}

        assert ddim.alphas_cumprod.dtype == torch.float64
        assert torch.equal(ddim.alphas_cumprod, dpm.alphas_cumprod)
        tensors[f"alphas_cumprod_ddim_{cfg_name}"] = ddim.alphas_cumprod.clone()
        tensors[f"alphas_cumprod_dpm_{cfg_name}"] = dpm.alphas_cumprod.clone()
        tensors[f"alphas_cumprod_inverse_{cfg_name}"] = inv.alphas_cumprod.clone()
        meta["configs"][cfg_name]["alphas_cumprod_dtypes"] = {
            "ddim": str(ddim.alphas_cumprod.dtype), "dpm": str(dpm.alphas_cumprod.dtype),
            "inverse": str(inv.alphas_cumprod.dtype)}

        scheds = {"ddim": ddim, "dpm": dpm, "inverse": inv}
        for sname, s in scheds.items():
            for n in STEP_COUNTS:
                s.set_timesteps(n)
                key = f"timesteps_{sname}_{cfg_name}_n{n}"
                tensors[key] = s.timesteps.clone().to(torch.int64)
                meta["timesteps"][key] = [int(x) for x in s.timesteps]

        # Multi-step sequences with random model outputs.
        for sname, s in scheds.items():
            for n in SEQ_STEP_COUNTS:
                seed += 100
                s.set_timesteps(n)
                timesteps = s.timesteps
                prefix = f"seq_{sname}_{cfg_name}_n{n}_"
                x = randn(SAMPLE_SHAPE, seed)
                tensors[prefix + "sample_0"] = x.clone()
                steps = []
                old_x0 = None
                for i, t in enumerate(timesteps):
                    v = randn(SAMPLE_SHAPE, seed + 1 + 10 * i)
                    tensors[prefix + f"model_output_{i}"] = v.clone()
                    entry = {"i": i, "t": int(t)}
                    if sname == "ddim":
                        prev, x0 = s.step(v, t, x, return_dict=False)
                        entry["prev_t"] = int(t) - 1000 // n
                    elif sname == "inverse":
                        # as the DDIM-inversion script: step(v, t, x, return_dict=False)[0], ascending timesteps
                        prev, x0 = s.step(v, t, x, return_dict=False)
                        entry["from_t"] = min(int(t) - 1000 // n, 999)
                    else:
                        t_back = timesteps[i - 1] if i > 0 else None
                        draws = [randn(SAMPLE_SHAPE, seed + 5 + 10 * i + j) for j in range(2)]
                        (prev, x0), ndraws = _dpm_step(s, v, old_x0, t, t_back, x, draws)
                        # Find which draw affects the result: perturb each in turn and compare.
                        used = []
                        for j in range(ndraws):
                            alt = [d.clone() for d in draws]
                            alt[j] = alt[j] + 1.0
                            (prev_alt, _), _ = _dpm_step(s, v, old_x0, t, t_back, x, alt)
                            if not torch.equal(prev_alt, prev):
                                used.append(j)
                        assert len(used) <= 1, used
                        used_j = used[0] if used else ndraws - 1
                        for j in range(ndraws):
                            tensors[prefix + f"noise_draw_{i}_{j}"] = draws[j].clone()
                        tensors[prefix + f"noise_used_{i}"] = draws[used_j].clone()
                        entry.update({
                            "prev_t": int(t) - 1000 // n,
                            "timestep_back": int(t_back) if t_back is not None else None,
                            "noise_draws": ndraws,
                            "noise_used_draw": used_j,
                            "noise_has_effect": bool(used),
                        })
                        old_x0 = x0
                    x = prev
                    tensors[prefix + f"sample_{i + 1}"] = x.clone()
                    tensors[prefix + f"pred_original_{i}"] = x0.clone()
                    steps.append(entry)
                meta["sequences"].append({"scheduler": sname, "config": cfg_name, "n": n, "prefix": prefix,
                                          "timesteps": [int(t) for t in timesteps], "steps": steps})

    # add_noise (used by video-to-video): f32 and bf16 samples, several timesteps.
    meta["add_noise"] = []
    for cfg_name, (variant, overrides) in SEQ_CONFIGS.items():
        ddim, dpm, _ = _schedulers(tiny_root, variant, overrides)
        seed += 100
        x = randn(SAMPLE_SHAPE, seed)
        noise = randn(SAMPLE_SHAPE, seed + 1)
        tensors[f"add_noise_{cfg_name}_original"] = x.clone()
        tensors[f"add_noise_{cfg_name}_noise"] = noise.clone()
        for dtype_name, dtype in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
            for t in ADD_NOISE_TIMESTEPS:
                ts = torch.tensor([t], dtype=torch.int64)
                out = ddim.add_noise(x.to(dtype), noise.to(dtype), ts)
                assert out.dtype == dtype
                assert torch.equal(out, dpm.add_noise(x.to(dtype), noise.to(dtype), ts))
                key = f"add_noise_{cfg_name}_{dtype_name}_t{t}"
                tensors[key] = out.clone()
                meta["add_noise"].append({"config": cfg_name, "dtype": dtype_name, "timestep": t, "tensor": key,
                                          "original": f"add_noise_{cfg_name}_original",
                                          "noise": f"add_noise_{cfg_name}_noise"})

    # Dynamic CFG (diffusers 0.42.1 src/diffusers/pipelines/cogvideo/pipeline_cogvideox.py, lines 742-745):
    #   self._guidance_scale = 1 + guidance_scale * (
    #       (1 - math.cos(math.pi * ((num_inference_steps - t.item()) / num_inference_steps) ** 5.0)) / 2)
    g = 6.0
    sched = CogVideoXDDIMScheduler.from_pretrained(os.path.join(tiny_root, SEQ_CONFIGS["snr1"][0], "scheduler"))
    for n in [4, 50]:
        sched.set_timesteps(n)
        ts = [int(t) for t in sched.timesteps]
        scales = [1 + g * ((1 - math.cos(math.pi * ((n - t) / n) ** 5.0)) / 2) for t in ts]
        tensors[f"dynamic_cfg_n{n}"] = torch.tensor(scales, dtype=torch.float64)
        meta["dynamic_cfg"].append({"guidance_scale": g, "n": n, "timesteps": ts, "scales": scales,
                                    "tensor": f"dynamic_cfg_n{n}"})

    save_tensors(os.path.join(golden_dir, "scheduler.safetensors"), tensors)
    write_json(os.path.join(golden_dir, "scheduler.json"), meta)
    gen_all_step_counts(golden_dir, tiny_root)
    return len(meta["sequences"])
