#!/usr/bin/env python
"""Golden step-caching cases: diffusers 0.42.1's cache hooks (``diffusers/hooks/``) on the tiny checkpoints.

Each case runs a pipeline with ``pipe.transformer.enable_cache(config)`` exactly as golden_pipelines.py runs it
without one (every random draw injected and saved) and records, per denoising step, what the hooks decided:

- ``rows``: the batch the transformer computed (FasterCache runs only the conditional half on the steps where it
  approximates the unconditional branch; otherwise 2 with CFG, 1 without);
- ``attention``: per block, whether ``attn1``'s processor ran (PAB, FasterCache and TaylorSeer reuse or forecast
  the attention output instead; First-block cache skips whole blocks);
- ``fbc_diff``: First-block cache's relative L1 change of the first block's residual (null where it has no cached
  residual to compare with), and ``blocks_skipped``.

The hooks are diffusers' own; the records come from a spy processor on every ``attn1``, a pre-hook on
``patch_embed`` and a wrapper around ``FBCHeadBlockHook._should_compute_remaining_blocks``.

make_golden.py calls gen_cache last. Run on its own (from the repository root) it writes only the cache files
(``tests/data/golden/cache_*``), against the checkpoints already in tests/data/tiny:

    /work/pyenv/bin/python scripts/golden/golden_cache.py
"""

import os
import sys

sys.dont_write_bytecode = True  # keep scripts/golden free of __pycache__
if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import PIL.Image  # noqa: E402
import torch  # noqa: E402

import diffusers.models.autoencoders.vae as vae_mod  # noqa: E402
import diffusers.schedulers.scheduling_dpm_cogvideox as dpm_mod  # noqa: E402
from diffusers import (  # noqa: E402
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    FasterCacheConfig,
    FirstBlockCacheConfig,
    PyramidAttentionBroadcastConfig,
    TaylorSeerCacheConfig,
)
from diffusers.hooks.first_block_cache import _FBC_LEADER_BLOCK_HOOK  # noqa: E402
from diffusers.hooks.hooks import CacheContext, _set_cache_context  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from common import check_nontrivial, randn, write_cases_json  # noqa: E402
from golden_pipelines import (  # noqa: E402
    EDIT_PROMPT,
    GUIDANCE,
    HEIGHT,
    I2V_PROMPT,
    T2V_PROMPT,
    WIDTH,
    _dpm_plan,
    _dpm_queue,
    _latent_layout,
    _load,
    _load_ddim_inversion_script,
    _Queue,
    _save,
    _shapes,
    _test_image,
    edit_from_base,
)

# The methods' settings. "doc" ones are diffusers' documented CogVideoX settings (the PAB example of
# CacheMixin.enable_cache and the FasterCache example of apply_faster_cache); TaylorSeer has no CogVideoX example:
# its defaults hook no CogVideoX module (the default patterns fullmatch "...attn", CogVideoX names it "attn1"), so
# the attention modules are named, and the factors kept in f32 as the library keeps them.
PAB_DOC = {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": [100, 800]}
FASTER_DOC = {
    "spatial_attention_block_skip_range": 2,
    "spatial_attention_timestep_skip_range": [-1, 681],
    "low_frequency_weight_update_timestep_range": [99, 641],
    "high_frequency_weight_update_timestep_range": [-1, 301],
    "alpha_low_frequency": 1.1,
    "alpha_high_frequency": 1.1,
    "unconditional_batch_skip_range": 5,
    "unconditional_batch_timestep_skip_range": [-1, 641],
    "attention_weight": 0.3,
}
TAYLOR_DOC = {"cache_interval": 5, "disable_cache_before_step": 3, "disable_cache_after_step": None, "max_order": 1}
TAYLOR_FAST = {"cache_interval": 2, "disable_cache_before_step": 1, "disable_cache_after_step": None, "max_order": 2}
TAYLOR_LATE = {"cache_interval": 3, "disable_cache_before_step": 2, "disable_cache_after_step": 7, "max_order": 1}

# name, kind, variant, scheduler, steps, use_dynamic_cfg, guidance, method, settings, seed.
# First-block cache thresholds: "auto" picks, from a run with caching off, a threshold that skips some steps and
# computes others with every decision at least 5% away from it (the random tiny weights set the residual changes).
CASES = [
    ("cache_fbc_5b_dpm", "t2v", "cogvideox-5b", "dpm", 8, True, GUIDANCE, "first_block", "auto", 51000),
    ("cache_fbc_2b_ddim", "t2v", "cogvideox-2b", "ddim", 6, False, GUIDANCE, "first_block", "auto", 52000),
    ("cache_fbc_15_dpm", "t2v", "cogvideox1.5-5b", "dpm", 6, True, GUIDANCE, "first_block", "auto", 53000),
    ("cache_fbc_i2v_5b", "i2v", "cogvideox-5b-i2v", "dpm", 6, True, GUIDANCE, "first_block", "auto", 54000),
    ("cache_fbc_5b_nocfg", "t2v", "cogvideox-5b", "ddim", 6, False, 1.0, "first_block", "auto", 55000),
    ("cache_fbc_5b_1step", "t2v", "cogvideox-5b", "dpm", 1, True, GUIDANCE, "first_block", {"threshold": 1e9}, 56000),
    ("cache_fbc_5b_2steps", "t2v", "cogvideox-5b", "dpm", 2, True, GUIDANCE, "first_block", {"threshold": 1e9},
     57000),
    ("cache_fbc_5b_zero", "t2v", "cogvideox-5b", "dpm", 6, True, GUIDANCE, "first_block", {"threshold": 0.0}, 58000),
    ("cache_fbc_5b_huge", "t2v", "cogvideox-5b", "dpm", 6, True, GUIDANCE, "first_block", {"threshold": 1e9}, 59000),
    ("cache_pab_5b_dpm", "t2v", "cogvideox-5b", "dpm", 8, True, GUIDANCE, "pab", PAB_DOC, 61000),
    ("cache_pab_2b_ddim", "t2v", "cogvideox-2b", "ddim", 6, False, GUIDANCE, "pab", PAB_DOC, 62000),
    ("cache_pab_15_dpm", "t2v", "cogvideox1.5-5b", "dpm", 6, True, GUIDANCE, "pab", PAB_DOC, 63000),
    ("cache_pab_i2v_15", "i2v", "cogvideox1.5-5b-i2v", "dpm", 6, True, GUIDANCE, "pab", PAB_DOC, 64000),
    ("cache_pab_5b_2steps", "t2v", "cogvideox-5b", "dpm", 2, True, GUIDANCE, "pab", PAB_DOC, 65000),
    ("cache_faster_5b_dpm", "t2v", "cogvideox-5b", "dpm", 10, True, GUIDANCE, "faster", FASTER_DOC, 71000),
    ("cache_faster_2b_ddim", "t2v", "cogvideox-2b", "ddim", 8, False, GUIDANCE, "faster", FASTER_DOC, 72000),
    ("cache_faster_15_dpm", "t2v", "cogvideox1.5-5b", "dpm", 8, True, GUIDANCE, "faster", FASTER_DOC, 73000),
    ("cache_faster_i2v_5b", "i2v", "cogvideox-5b-i2v", "dpm", 8, True, GUIDANCE, "faster", FASTER_DOC, 74000),
    ("cache_faster_5b_2steps", "t2v", "cogvideox-5b", "dpm", 2, True, GUIDANCE, "faster", FASTER_DOC, 75000),
    ("cache_taylor_5b_dpm", "t2v", "cogvideox-5b", "dpm", 10, True, GUIDANCE, "taylorseer", TAYLOR_DOC, 81000),
    ("cache_taylor_2b_ddim", "t2v", "cogvideox-2b", "ddim", 8, False, GUIDANCE, "taylorseer", TAYLOR_FAST, 82000),
    ("cache_taylor_15_dpm", "t2v", "cogvideox1.5-5b", "dpm", 10, True, GUIDANCE, "taylorseer", TAYLOR_LATE, 83000),
    ("cache_taylor_i2v_15", "i2v", "cogvideox1.5-5b-i2v", "dpm", 8, True, GUIDANCE, "taylorseer", TAYLOR_FAST,
     84000),
    ("cache_taylor_5b_2steps", "t2v", "cogvideox-5b", "dpm", 2, True, GUIDANCE, "taylorseer", TAYLOR_FAST, 85000),
]

# Prompt editing (the CogVideo DDIM-inversion script, as golden_pipelines.py's edit cases) with the inversion exact
# and the reconstruction cached: name, method, settings. Inputs are EDIT_BASE's (frames_u8, posterior_noise,
# recon_noise) at EDIT_STEPS steps. FasterCache has no edit case: it splits the batch into an unconditional and a
# conditional half, which the reconstruction's [x, x, ref, ref] batch is not, and the library refuses it for edits.
EDIT_BASE = "pipeline_edit_5b"
EDIT_STEPS = 8
EDIT_CASES = [
    ("cache_edit_fbc_5b", "first_block", "auto"),
    ("cache_edit_pab_5b", "pab", PAB_DOC),
    ("cache_edit_taylor_5b", "taylorseer", TAYLOR_DOC),
]

NOTES = [
    "Each case is golden_pipelines.py's run (same draw injection: latents_init, posterior_noise for "
    "image-to-video, the used DPM draws dpm_noise_<k>) with pipe.transformer.enable_cache(config) before the call; "
    "the pipeline resets the hooks' state at the end of every call.",
    "steps[i] is step i's record: rows = the batch the transformer computed (patch_embed's input), attention = "
    "per block whether attn1's processor ran, fbc_diff = First-block cache's mean|r - r_prev| / mean|r_prev| of the "
    "first block's video-token residual (null without a cached residual), blocks_skipped = blocks the step did "
    "not run at all.",
    "latents_exact is the same run with caching off; differs_from_exact says whether the cache changed the result "
    "(a zero threshold must not).",
    "FasterCache: current_timestep_callback = pipe.current_timestep, attention_weight_callback = constant "
    "attention_weight, tensor_format BFCHW, spatial_attention_block_identifiers ['transformer_blocks']. PAB: "
    "current_timestep_callback = pipe.current_timestep. TaylorSeer: cache_identifiers "
    "['transformer_blocks\\\\.\\\\d+\\\\.attn1'], taylor_factors_dtype float32.",
]


class _AttnSpy:
    """attn1 processor wrapper that logs each call (the signature is the processor's: Attention.forward filters
    keyword arguments by it)."""

    def __init__(self, inner, log, index):
        self.inner, self.log, self.index = inner, log, index

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None, image_rotary_emb=None):
        self.log.append(self.index)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask=attention_mask,
                          image_rotary_emb=image_rotary_emb)


def _config(pipe, method, s):
    now = lambda: pipe.current_timestep  # noqa: E731
    if method == "first_block":
        return FirstBlockCacheConfig(threshold=s["threshold"])
    if method == "pab":
        return PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=s["spatial_attention_block_skip_range"],
            spatial_attention_timestep_skip_range=tuple(s["spatial_attention_timestep_skip_range"]),
            current_timestep_callback=now)
    if method == "faster":
        w = s["attention_weight"]
        return FasterCacheConfig(
            spatial_attention_block_skip_range=s["spatial_attention_block_skip_range"],
            spatial_attention_timestep_skip_range=tuple(s["spatial_attention_timestep_skip_range"]),
            low_frequency_weight_update_timestep_range=tuple(s["low_frequency_weight_update_timestep_range"]),
            high_frequency_weight_update_timestep_range=tuple(s["high_frequency_weight_update_timestep_range"]),
            alpha_low_frequency=s["alpha_low_frequency"], alpha_high_frequency=s["alpha_high_frequency"],
            unconditional_batch_skip_range=s["unconditional_batch_skip_range"],
            unconditional_batch_timestep_skip_range=tuple(s["unconditional_batch_timestep_skip_range"]),
            spatial_attention_block_identifiers=["transformer_blocks"],
            attention_weight_callback=lambda _: w, tensor_format="BFCHW", current_timestep_callback=now)
    if method == "taylorseer":
        return TaylorSeerCacheConfig(
            cache_interval=s["cache_interval"], disable_cache_before_step=s["disable_cache_before_step"],
            disable_cache_after_step=s["disable_cache_after_step"], max_order=s["max_order"],
            taylor_factors_dtype=torch.float32, cache_identifiers=[r"transformer_blocks\.\d+\.attn1"])
    raise ValueError(method)


def _auto_thresholds(diffs):
    """Candidate thresholds between the sorted diffs of an uncached run, widest gap first."""
    ds = sorted(d for d in diffs if d is not None)
    gaps = sorted(((b / a, (a * b) ** 0.5) for a, b in zip(ds, ds[1:]) if b > a * 1.1), reverse=True)
    return [t for _, t in gaps]


def _cached_run(pipe, method, settings, run):
    blocks = pipe.transformer.transformer_blocks
    pipe.transformer.enable_cache(_config(pipe, method, settings))
    fbc_log = []
    if method == "first_block":
        hook = blocks[0]._diffusers_hook.get_hook(_FBC_LEADER_BLOCK_HOOK)
        orig = hook._should_compute_remaining_blocks

        def should(res):
            st = hook.state_manager.get_state()
            prev = st.head_block_residual
            d = None if prev is None else ((res - prev).abs().mean() / prev.abs().mean()).item()
            decision = orig(res)
            fbc_log.append((d, decision))
            return decision

        hook._should_compute_remaining_blocks = should
    try:
        latents, per_step = run()
    finally:
        pipe.transformer.disable_cache()
    return latents, per_step, fbc_log


def _run_case(golden_dir, tiny_root, name, kind, variant, sched, steps, dyn, guidance, method, settings, seed):
    cls = CogVideoXImageToVideoPipeline if kind == "i2v" else CogVideoXPipeline
    pipe = _load(tiny_root, variant, cls)
    if sched == "dpm":
        pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    else:
        assert type(pipe.scheduler) is CogVideoXDDIMScheduler
    prompt = I2V_PROMPT if kind == "i2v" else T2V_PROMPT
    h, w = HEIGHT, WIDTH
    f, extra, shape = _latent_layout(pipe, 9, h, w)
    if kind == "i2v":
        shape = (1, shape[1], pipe.transformer.config.in_channels // 2) + shape[3:]
    tensors = {}
    latents_init = randn(shape, seed)
    tensors["latents_init"] = latents_init
    plan = _dpm_plan(pipe.scheduler.config, steps) if sched == "dpm" else None
    queue, used_pos = _dpm_queue(plan, shape, seed) if plan else ([], [])
    for k, p in enumerate(used_pos):
        tensors[f"dpm_noise_{k}"] = queue[p]
    image = posterior_noise = None
    if kind == "i2v":
        image_u8 = _test_image(h, w, seed + 1)
        image = PIL.Image.fromarray(image_u8.numpy())
        tensors["image_u8"] = image_u8
        posterior_noise = randn((1, shape[2], 1, shape[3], shape[4]), seed + 2)
        tensors["posterior_noise"] = posterior_noise

    blocks = pipe.transformer.transformer_blocks
    n_blocks = len(blocks)
    attn_log, rows_log = [], []
    for i, b in enumerate(blocks):
        b.attn1.processor = _AttnSpy(b.attn1.processor, attn_log, i)
    pipe.transformer.patch_embed.register_forward_pre_hook(
        lambda m, args: rows_log.append(int(args[1].shape[0])))

    def run():
        attn_log.clear()
        rows_log.clear()
        per_step = []

        def cb(p, i, t, cbk):
            per_step.append((list(rows_log), list(attn_log)))
            rows_log.clear()
            attn_log.clear()
            return {}

        kw = dict(prompt=prompt, height=h, width=w, num_frames=9, num_inference_steps=steps,
                  guidance_scale=guidance, use_dynamic_cfg=dyn, latents=latents_init.clone(),
                  output_type="latent", callback_on_step_end=cb)
        if kind == "i2v":
            kw["image"] = image
        with _Queue(dpm_mod, queue), _Queue(vae_mod, [posterior_noise] if kind == "i2v" else []):
            out = pipe(**kw).frames
        return out, per_step

    # the first block's residuals with caching off (to place "auto" thresholds and to check the recorded diffs)
    residuals = []
    handle = blocks[0].register_forward_hook(
        lambda m, args, kwargs, out: residuals.append((out[0] - kwargs["hidden_states"]).detach().clone()),
        with_kwargs=True)
    latents_exact, exact_steps = run()
    handle.remove()
    for rows, attn in exact_steps:
        assert len(rows) == 1 and attn == list(range(n_blocks)), (name, rows, attn)

    candidates = [settings]
    if method == "first_block" and settings == "auto":
        diffs = [None] + [((residuals[i] - residuals[i - 1]).abs().mean() / residuals[i - 1].abs().mean()).item()
                          for i in range(1, steps)]
        candidates = [{"threshold": t} for t in _auto_thresholds(diffs)]
    for settings in candidates:
        latents_final, cached_steps, fbc_log = _cached_run(pipe, method, settings, run)
        if method != "first_block" or len(candidates) == 1:
            break
        # an "auto" threshold must skip some steps and compute others, every decision clear of it
        t = settings["threshold"]
        decided = [(d, c) for d, c in fbc_log if d is not None]
        if any(not c for _, c in decided) and any(c for _, c in decided) \
                and all(abs(d - t) > 0.05 * t for d, _ in decided):
            break
    else:
        raise AssertionError(f"{name}: no usable First-block cache threshold")

    records = _records(name, method, settings, cached_steps, fbc_log, n_blocks, steps)
    differs = not torch.equal(latents_final, latents_exact)
    if method == "first_block" and settings["threshold"] == 0.0:
        assert not differs, f"{name}: a zero threshold changed the result"
    skipped_any = any(r["rows"] < (2 if guidance > 1 else 1) or not all(r["attention"]) for r in records)
    assert differs == skipped_any, (name, differs, skipped_any)
    check_nontrivial(latents_final, name)
    tensors["latents_final"] = latents_final
    tensors["latents_exact"] = latents_exact
    _save(os.path.join(golden_dir, f"{name}.safetensors"), tensors)
    pipe.scheduler.set_timesteps(steps)
    return {
        "name": name, "file": f"{name}.safetensors", "kind": kind, "variant": variant,
        "scheduler": type(pipe.scheduler).__name__, "steps": steps,
        "timesteps": [int(t) for t in pipe.scheduler.timesteps], "guidance_scale": guidance,
        "use_dynamic_cfg": dyn, "height": h, "width": w, "num_frames": 9, "padding_frames": extra,
        "prompt": prompt, "negative_prompt": "", "method": method, "settings": settings,
        "blocks": n_blocks, "differs_from_exact": differs, "steps_record": records,
        "seed_tensors": (["posterior_noise"] if kind == "i2v" else []) + ["latents_init"]
        + [f"dpm_noise_{k}" for k in range(len(used_pos))],
        "tensors": _shapes(tensors),
    }


def _records(name, method, settings, cached_steps, fbc_log, n_blocks, steps):
    """One record per step from the spies' logs (and First-block cache's decisions), checked for consistency."""
    records = []
    for i, (rows, attn) in enumerate(cached_steps):
        assert len(rows) == 1, (name, i, rows)
        ran = [b in attn for b in range(n_blocks)]
        assert sorted(attn) == [b for b in range(n_blocks) if ran[b]], (name, i, attn)
        rec = {"rows": rows[0], "attention": ran, "fbc_diff": None, "blocks_skipped": 0}
        if method == "first_block":
            d, decision = fbc_log[i]
            rec["fbc_diff"] = d
            if not decision:
                rec["blocks_skipped"] = n_blocks - 1
                assert ran == [True] + [False] * (n_blocks - 1), (name, i, ran)
            if d is not None:
                margin = abs(d - settings["threshold"]) / max(settings["threshold"], 1e-30)
                assert settings["threshold"] == 0.0 or settings["threshold"] > 1e8 or margin > 0.05, \
                    (name, i, d, settings)
        records.append(rec)
    assert len(records) == steps, (name, len(records))
    return records


def _run_edit_case(golden_dir, tiny_root, script, name, method, settings):
    base = load_file(os.path.join(golden_dir, f"{EDIT_BASE}.safetensors"))
    pipe = _load(tiny_root, "cogvideox-5b", CogVideoXPipeline)
    tr = pipe.transformer
    blocks = tr.transformer_blocks
    n_blocks = len(blocks)
    attn_log, rows_log, per_step = [], [], []
    tr.patch_embed.register_forward_pre_hook(lambda m, args: rows_log.append(int(args[1].shape[0])))

    def pre(m, args, kwargs):
        # what the pipelines do around each transformer call and the script does not: the hooks' timestep and
        # cache context
        pipe._current_timestep = kwargs["timestep"][0]
        _set_cache_context(m, CacheContext("cond_uncond"))

    def post(m, args, kwargs, out):
        _set_cache_context(m, None)
        per_step.append((list(rows_log), list(attn_log)))
        rows_log.clear()
        attn_log.clear()

    def edit(cache_settings):
        """The edit with the reconstruction cached by `cache_settings` (None: exact): latents, steps, FBC log."""
        fbc = []

        def reconstruction(run):
            # inside OverrideAttnProcessors: spy on the reference-attention processors
            for i, b in enumerate(blocks):
                b.attn1.processor = _AttnSpy(b.attn1.processor, attn_log, i)
            per_step.clear()
            rows_log.clear()
            hooks = [tr.register_forward_pre_hook(pre, with_kwargs=True),
                     tr.register_forward_hook(post, with_kwargs=True)]
            try:
                if cache_settings is None:
                    return run()
                rec, _, log = _cached_run(pipe, method, cache_settings, lambda: (run(), None))
                fbc.extend(log)
                return rec
            finally:
                for h in hooks:
                    h.remove()
                pipe._current_timestep = None

        _, latents = edit_from_base(pipe, script, base, EDIT_STEPS, reconstruction)
        return latents, list(per_step), fbc

    residuals = []
    handle = blocks[0].register_forward_hook(
        lambda m, args, kwargs, out: residuals.append((out[0] - kwargs["hidden_states"]).detach().clone()),
        with_kwargs=True)
    latents_exact, exact_steps, _ = edit(None)
    handle.remove()
    residuals = residuals[-EDIT_STEPS:]  # the reconstruction's (the inversion ran first)
    for rows, attn in exact_steps:
        assert rows == [4] and attn == list(range(n_blocks)), (name, rows, attn)

    candidates = [settings]
    if settings == "auto":
        diffs = [None] + [((residuals[i] - residuals[i - 1]).abs().mean() / residuals[i - 1].abs().mean()).item()
                          for i in range(1, EDIT_STEPS)]
        candidates = [{"threshold": t} for t in _auto_thresholds(diffs)]
    for settings in candidates:
        latents_final, cached_steps, fbc_log = edit(settings)
        if method != "first_block" or len(candidates) == 1:
            break
        t = settings["threshold"]
        decided = [(d, c) for d, c in fbc_log if d is not None]
        if any(not c for _, c in decided) and any(c for _, c in decided) \
                and all(abs(d - t) > 0.05 * t for d, _ in decided):
            break
    else:
        raise AssertionError(f"{name}: no usable First-block cache threshold")
    records = _records(name, method, settings, cached_steps, fbc_log, n_blocks, EDIT_STEPS)
    differs = not torch.equal(latents_final, latents_exact)
    skipped_any = any(not all(r["attention"]) for r in records)
    assert differs == skipped_any and skipped_any, (name, differs, skipped_any)
    check_nontrivial(latents_final, name)
    _save(os.path.join(golden_dir, f"{name}.safetensors"),
          {"latents_final": latents_final, "latents_exact": latents_exact})
    pipe.scheduler.set_timesteps(EDIT_STEPS)
    return {
        "name": name, "file": f"{name}.safetensors", "kind": "edit", "variant": "cogvideox-5b",
        "inputs": f"{EDIT_BASE}.safetensors (frames_u8, posterior_noise, recon_noise; see pipeline_cases.json)",
        "scheduler": type(pipe.scheduler).__name__, "steps": EDIT_STEPS,
        "timesteps": [int(t) for t in pipe.scheduler.timesteps], "guidance_scale": GUIDANCE,
        "height": HEIGHT, "width": WIDTH, "num_frames": int(base["frames_u8"].shape[0]), "prompt": EDIT_PROMPT, "negative_prompt": "", "method": method, "settings": settings, "blocks": n_blocks,
        "cached": "the reconstruction only (the inversion exact)", "differs_from_exact": differs,
        "steps_record": records,
    }


@torch.no_grad()
def gen_cache_edit(golden_dir, tiny_root):
    """The edit cases alone (cache_edit_*.safetensors, cache_edit_cases.json). Needs the DDIM-inversion script
    (golden_pipelines.py); without it nothing is written and 0 is returned."""
    script, path = _load_ddim_inversion_script()
    if script is None:
        import warnings

        warnings.warn(f"DDIM-inversion script not found at {path}: skipping the cache_edit_* cases")
        return 0
    cases = [_run_edit_case(golden_dir, tiny_root, script, *c) for c in EDIT_CASES]
    write_cases_json(os.path.join(golden_dir, "cache_edit_cases.json"),
                     {"generator": "scripts/golden/golden_cache.py (gen_cache_edit)", "notes": NOTES + [
                         "Edit cases: the CogVideo script's inversion runs without hooks; the reconstruction runs "
                         "with pipe.transformer.enable_cache(config), with the cache context 'cond_uncond' and "
                         "pipe._current_timestep set around each transformer call as the pipelines set them (the "
                         "script does not). rows is the reconstruction's batch [x, x, ref, ref] (4). "
                         "latents_exact is the same edit uncached."]}, cases)
    return len(cases)


@torch.no_grad()
def gen_cache(golden_dir, tiny_root):
    cases = [_run_case(golden_dir, tiny_root, *c) for c in CASES]
    write_cases_json(os.path.join(golden_dir, "cache_cases.json"),
                     {"generator": "scripts/golden/golden_cache.py", "notes": NOTES}, cases)
    return len(cases) + gen_cache_edit(golden_dir, tiny_root)


if __name__ == "__main__":
    import time

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    here = os.path.dirname(os.path.abspath(__file__))
    data = os.path.join(here, "..", "..", "tests", "data")
    t0 = time.time()
    args = (os.path.join(data, "golden"), os.path.join(data, "tiny"))
    # --edit: the edit cases alone
    n = gen_cache_edit(*args) if "--edit" in sys.argv else gen_cache(*args)
    print(f"cache: {n} cases in {time.time() - t0:.1f}s")
