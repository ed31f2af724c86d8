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
CONFIG_SOURCES = {"snr3": "cogvideox-2b", "snr1": "cogvideox-5b"}


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


def _load_config(tiny_root, variant):
    with open(os.path.join(tiny_root, variant, "scheduler", "scheduler_config.json")) as f:
        return json.load(f)


@torch.no_grad()
def gen_schedulers(golden_dir, tiny_root):
    tensors = {}
    meta = {"file": "scheduler.safetensors", "sample_shape": list(SAMPLE_SHAPE), "configs": {}, "timesteps": {},
            "sequences": [], "dynamic_cfg": []}
    seed = 9000
    for cfg_name, variant in CONFIG_SOURCES.items():
        path = os.path.join(tiny_root, variant, "scheduler")
        ddim = CogVideoXDDIMScheduler.from_pretrained(path)
        cfg = ddim.config
        dpm = CogVideoXDPMScheduler.from_config(cfg)
        # built as the DDIM-inversion script (diffusers examples/community/cogvideox_ddim_inversion.py) does
        inv = DDIMInverseScheduler(**cfg)
        assert torch.equal(inv.alphas_cumprod, DDIMInverseScheduler.from_config(cfg).alphas_cumprod)
        meta["configs"][cfg_name] = {"source": f"tests/data/tiny/{variant}/scheduler/scheduler_config.json",
                                     "config": _load_config(tiny_root, variant)}

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

    # Dynamic CFG (diffusers 0.42.1 src/diffusers/pipelines/cogvideo/pipeline_cogvideox.py, lines 742-745):
    #   self._guidance_scale = 1 + guidance_scale * (
    #       (1 - math.cos(math.pi * ((num_inference_steps - t.item()) / num_inference_steps) ** 5.0)) / 2)
    g = 6.0
    sched = CogVideoXDDIMScheduler.from_pretrained(os.path.join(tiny_root, CONFIG_SOURCES["snr1"], "scheduler"))
    for n in [4, 50]:
        sched.set_timesteps(n)
        ts = [int(t) for t in sched.timesteps]
        scales = [1 + g * ((1 - math.cos(math.pi * ((n - t) / n) ** 5.0)) / 2) for t in ts]
        tensors[f"dynamic_cfg_n{n}"] = torch.tensor(scales, dtype=torch.float64)
        meta["dynamic_cfg"].append({"guidance_scale": g, "n": n, "timesteps": ts, "scales": scales,
                                    "tensor": f"dynamic_cfg_n{n}"})

    save_tensors(os.path.join(golden_dir, "scheduler.safetensors"), tensors)
    write_json(os.path.join(golden_dir, "scheduler.json"), meta)
    return len(meta["sequences"])
