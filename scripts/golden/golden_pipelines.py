"""Golden end-to-end pipeline cases: text-to-video, image-to-video and DDIM-inversion editing.

Every random draw is injected so that a port can reproduce a run exactly:

- initial latents are passed with ``latents=`` (saved as ``latents_init``);
- CogVideoXDPMScheduler noise: ``scheduling_dpm_cogvideox.randn_tensor`` is replaced by a queue of pre-generated
  tensors; only the draws that affect the result are saved (``dpm_noise_<k>``), which is proven by perturbing every
  draw in turn (a used draw must change the final latents, an unused one must not);
- VAE posterior noise (image-to-video, inversion): ``diffusers.models.autoencoders.vae.randn_tensor`` (the name
  DiagonalGaussianDistribution.sample calls) is replaced by a recorded tensor (``posterior_noise``).

The DDIM-inversion cases call the functions of zai-org/CogVideo ``inference/ddim_inversion.py`` (commit 7a1af715),
which is not a pip package: it is imported from the path in the environment variable COGVIDEO_DDIM_INVERSION
(default /tmp/cogvideo_ddim_inversion.py); without it those cases are skipped (recorded in pipeline_cases.json).
"""

import importlib.util
import math
import os
import sys
import types
import warnings

import numpy as np
import PIL.Image
import torch
from safetensors.torch import save_file

import diffusers.models.autoencoders.vae as vae_mod
import diffusers.schedulers.scheduling_dpm_cogvideox as dpm_mod
from diffusers import (
    CogVideoXDDIMScheduler,
    CogVideoXDPMScheduler,
    CogVideoXImageToVideoPipeline,
    CogVideoXPipeline,
    DDIMInverseScheduler,
)

from common import assert_close, check_nontrivial, gen, randn, write_cases_json

T2V_PROMPT = "a red fox running through snow"
I2V_PROMPT = "the fox turns its head and looks into the camera"
EDIT_PROMPT = "a white wolf running through a snowy forest"
NEGATIVE_PROMPT = ""  # the pipelines' default (negative_prompt=None becomes "")
GUIDANCE = 6.0
HEIGHT, WIDTH = 64, 96  # transformer sample size (8 x 12 latent) x 8
DDIM_INVERSION_ENV = "COGVIDEO_DDIM_INVERSION"
DDIM_INVERSION_DEFAULT = "/tmp/cogvideo_ddim_inversion.py"
DDIM_INVERSION_SOURCE = "zai-org/CogVideo commit 7a1af715, inference/ddim_inversion.py"

# name, kind, variant, scheduler, steps, use_dynamic_cfg, num_frames, seed
T2V_CASES = [
    ("pipeline_t2v_5b_dpm", "cogvideox-5b", "dpm", 4, True, 9, 31000),
    ("pipeline_t2v_5b_dpm7", "cogvideox-5b", "dpm", 7, True, 9, 32000),
    ("pipeline_t2v_2b_ddim", "cogvideox-2b", "ddim", 4, False, 9, 33000),
    ("pipeline_t2v_15_dpm", "cogvideox1.5-5b", "dpm", 4, True, 9, 34000),
]
I2V_CASES = [
    ("pipeline_i2v_5b", "cogvideox-5b-i2v", "dpm", 4, True, 9, 35000),
    ("pipeline_i2v_15", "cogvideox1.5-5b-i2v", "dpm", 4, True, 9, 36000),
]
# name, variant, num_frames, reconstruction start ("noise" | "inverted"), seed
EDIT_CASES = [
    ("pipeline_edit_5b", "cogvideox-5b", 9, "noise", 37000),
    ("pipeline_edit_5b_from_inverted", "cogvideox-5b", 9, "inverted", 37000),
    ("pipeline_edit_15", "cogvideox1.5-5b", 13, "noise", 38000),
]
EDIT_STEPS = 4
# The f32 decoded videos are ~0.66 MB each at 9 x 64 x 96 (two thirds of all pipeline bytes). False leaves out
# `video` / `inversion_video` (everything is still computed and checked; `video_u8` stays).
STORE_F32_VIDEO = False


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _save(path, tensors):
    """safetensors with f32 floats and uint8 images kept as U8 (other ints as int64)."""
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu()
        if v.dtype in (torch.int32, torch.int16, torch.int8):
            v = v.to(torch.int64)
        assert v.dtype in (torch.float32, torch.uint8, torch.int64), (k, v.dtype)
        out[k] = v.contiguous()
    save_file(out, path)


def _shapes(tensors):
    names = {torch.float32: "f32", torch.uint8: "u8", torch.int64: "i64"}
    return {k: [list(v.shape), names[v.dtype]] for k, v in sorted(tensors.items())}


class _Queue:
    """Replace ``module.randn_tensor`` with a queue of recorded tensors (in call order)."""

    def __init__(self, module, tensors=()):
        self.module = module
        self.queue = [t.clone() for t in tensors]
        self.calls = 0
        self.orig = module.randn_tensor

    def __enter__(self):
        def fake(shape, generator=None, device=None, dtype=None, layout=None):
            if not self.queue:
                raise AssertionError(f"{self.module.__name__}.randn_tensor: more draws than prepared")
            t = self.queue.pop(0)
            assert tuple(t.shape) == tuple(shape) and t.dtype == dtype, (t.shape, shape, t.dtype, dtype)
            self.calls += 1
            return t.clone()

        self.module.randn_tensor = fake
        return self

    def __exit__(self, *exc):
        self.module.randn_tensor = self.orig
        if exc[0] is None and self.queue:
            raise AssertionError(f"{self.module.__name__}.randn_tensor: {len(self.queue)} prepared draws unused")
        return False


def _load(tiny_root, variant, cls):
    pipe = cls.from_pretrained(os.path.join(tiny_root, variant), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    for name in ("transformer", "vae", "text_encoder"):
        getattr(pipe, name).eval()
        assert {p.dtype for p in getattr(pipe, name).parameters()} == {torch.float32}
    return pipe


def _latent_layout(pipe, num_frames, height, width):
    f = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    pt = pipe.transformer.config.patch_size_t
    extra = pt - f % pt if pt is not None and f % pt != 0 else 0
    c = pipe.transformer.config.out_channels
    return f, extra, (1, f + extra, c, height // 8, width // 8)


def _pil_frames_to_u8(frames):
    """postprocess_video(output_type="pil")[0] (a list of PIL images) -> uint8 [T, H, W, 3]."""
    return torch.from_numpy(np.stack([np.array(im) for im in frames]))


def _decode(pipe, latents):
    """Decode exactly as the pipelines do after the loop; returns (video [1,T,3,H,W] in [0,1], uint8 [T,H,W,3])."""
    raw = pipe.decode_latents(latents)
    video = pipe.video_processor.postprocess_video(video=raw, output_type="pt")
    u8 = _pil_frames_to_u8(pipe.video_processor.postprocess_video(video=raw, output_type="pil")[0])
    # the "pil" path is numpy round-half-to-even of the f32 "pt" video times 255
    expect = torch.from_numpy((video[0].permute(0, 2, 3, 1).numpy() * 255).round().astype("uint8"))
    assert torch.equal(u8, expect), "pil frames != round(pt * 255)"
    return video, u8


def _test_image(h, w, seed):
    """A deterministic RGB uint8 picture [H, W, 3]: gradients, a disc and a little seeded noise."""
    y = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    x = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    r = 40 + 180 * x / (w - 1)
    g = 30 + 150 * y / (h - 1)
    b = 128 + 100 * torch.sin(x / 7.0) * torch.cos(y / 5.0)
    disc = ((x - 0.6 * w) ** 2 + (y - 0.45 * h) ** 2) < (0.22 * h) ** 2
    r = torch.where(disc, torch.full_like(r, 230.0), r)
    g = torch.where(disc, torch.full_like(g, 110.0), g)
    b = torch.where(disc, torch.full_like(b, 20.0), b)
    img = torch.stack([r, g, b], dim=-1)
    img = img + torch.randint(-12, 13, (h, w, 3), generator=gen(seed)).double()
    return img.round().clamp(0, 255).to(torch.uint8)


def _test_clip(t, h, w, seed):
    """A deterministic uint8 clip [T, H, W, 3]: a disc moving right over a drifting background, plus noise."""
    frames = []
    for i in range(t):
        y = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
        x = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
        r = 60 + 120 * ((x + 3 * i) % w) / (w - 1)
        g = 50 + 140 * y / (h - 1)
        b = 120 + 90 * torch.sin((x + 2 * i) / 9.0) * torch.cos(y / 6.0)
        cx, cy = 0.2 * w + i * (0.6 * w) / max(t - 1, 1), 0.5 * h + 0.15 * h * math.sin(i / 2.0)
        disc = ((x - cx) ** 2 + (y - cy) ** 2) < (0.2 * h) ** 2
        r = torch.where(disc, torch.full_like(r, 220.0), r)
        g = torch.where(disc, torch.full_like(g, 90.0), g)
        b = torch.where(disc, torch.full_like(b, 30.0), b)
        frames.append(torch.stack([r, g, b], dim=-1))
    clip = torch.stack(frames)
    clip = clip + torch.randint(-10, 11, tuple(clip.shape), generator=gen(seed)).double()
    return clip.round().clamp(0, 255).to(torch.uint8)


class _TransformerSpy:
    """Forward pre-hook recording what the pipeline feeds the transformer on each call."""

    def __init__(self, transformer):
        self.transformer = transformer
        self.calls = []

    def __enter__(self):
        def hook(module, args, kwargs):
            self.calls.append({k: (v.detach().clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()
                               if k in ("hidden_states", "encoder_hidden_states", "timestep", "ofs")})

        def out_hook(module, args, kwargs, output):
            self.outputs.append(output[0].detach().clone())

        self.outputs = []
        self.handle = self.transformer.register_forward_pre_hook(hook, with_kwargs=True)
        self.handle_out = self.transformer.register_forward_hook(out_hook, with_kwargs=True)
        return self

    def __exit__(self, *exc):
        self.handle.remove()
        self.handle_out.remove()
        return False


# ----------------------------------------------------------------------------------------------------------------
# DPM noise plan


def _dpm_plan(scheduler_config, steps):
    """Per step: number of randn draws the scheduler makes and the index of the one that affects the result."""
    s = CogVideoXDPMScheduler.from_config(scheduler_config)
    s.set_timesteps(steps)
    plan = []
    for i, t in enumerate(s.timesteps):
        prev_t = int(t) - s.config.num_train_timesteps // steps
        n = 1 if (i == 0 or prev_t < 0) else 2
        plan.append({"t": int(t), "prev_t": prev_t, "draws": n, "used_draw": (n - 1) if prev_t >= 0 else None})
    return plan


def _dpm_queue(plan, shape, seed):
    """(queue of all draws in call order, list of queue positions that are used)."""
    queue, used_pos = [], []
    k = 0
    for i, st in enumerate(plan):
        for j in range(st["draws"]):
            if st["used_draw"] == j:
                queue.append(randn(shape, seed + 100 + k))
                used_pos.append(len(queue) - 1)
                k += 1
            else:
                queue.append(randn(shape, seed + 500 + 10 * i + j))
    return queue, used_pos


def _check_dpm_usage(run_latent, queue, used_pos, reference, what):
    """Perturb every draw in turn: exactly the draws in used_pos must change the final latents."""
    for p in range(len(queue)):
        alt = [q.clone() for q in queue]
        alt[p] = alt[p] + 1.0
        changed = not torch.equal(run_latent(alt), reference)
        if changed != (p in used_pos):
            raise AssertionError(f"{what}: DPM draw {p} changed={changed}, expected {p in used_pos}")


# ----------------------------------------------------------------------------------------------------------------
# text-to-video and image-to-video


def _run_generation(golden_dir, tiny_root, name, kind, variant, sched, steps, dyn, num_frames, seed):
    cls = CogVideoXImageToVideoPipeline if kind == "i2v" else CogVideoXPipeline
    pipe = _load(tiny_root, variant, cls)
    if sched == "dpm":
        pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    else:
        assert type(pipe.scheduler) is CogVideoXDDIMScheduler
    prompt = I2V_PROMPT if kind == "i2v" else T2V_PROMPT
    h, w = HEIGHT, WIDTH
    assert (h, w) == (pipe.transformer.config.sample_height * 8, pipe.transformer.config.sample_width * 8)
    f, extra, shape = _latent_layout(pipe, num_frames, h, w)
    if kind == "i2v":
        shape = (1, shape[1], pipe.transformer.config.in_channels // 2) + shape[3:]

    tensors = {}
    pos, neg = pipe.encode_prompt(prompt, None, True, num_videos_per_prompt=1, max_sequence_length=226,
                                  device=torch.device("cpu"))
    tensors["prompt_embeds"], tensors["negative_prompt_embeds"] = pos, neg
    latents_init = randn(shape, seed)
    tensors["latents_init"] = latents_init

    plan = _dpm_plan(pipe.scheduler.config, steps) if sched == "dpm" else None
    queue, used_pos = _dpm_queue(plan, shape, seed) if plan else ([], [])

    image = None
    if kind == "i2v":
        image_u8 = _test_image(h, w, seed + 1)
        image = PIL.Image.fromarray(image_u8.numpy())
        assert image.mode == "RGB" and image.size == (w, h), (image.mode, image.size)
        tensors["image_u8"] = image_u8
        # the preprocessed image: PIL resize to the same size must be the identity
        image_tensor = pipe.video_processor.preprocess(image, height=h, width=w)
        expect = torch.from_numpy(2.0 * (image_u8.numpy().astype(np.float32) / 255.0) - 1.0).permute(2, 0, 1)[None]
        assert_close(image_tensor, expect, f"{name}: VideoProcessor.preprocess at the same size")
        tensors["image_tensor"] = image_tensor
        posterior_shape = (1, shape[2], 1, shape[3], shape[4])  # VAE layout [B, C, 1, h, w]
        posterior_noise = randn(posterior_shape, seed + 2)
        tensors["posterior_noise"] = posterior_noise

    guidance_per_step = []

    def run(output_type, draws, spy=False, record=False):
        kw = dict(prompt=prompt, height=h, width=w, num_frames=num_frames, num_inference_steps=steps,
                  guidance_scale=GUIDANCE, use_dynamic_cfg=dyn, latents=latents_init.clone(),
                  output_type=output_type)
        if kind == "i2v":
            kw["image"] = image
        counts = []
        with _Queue(dpm_mod, draws) as q:
            def cb(p, i, t, cbk):
                counts.append(q.calls)
                if record:
                    guidance_per_step.append(float(p.guidance_scale))
                return {}

            kw["callback_on_step_end"] = cb
            post = _Queue(vae_mod, [posterior_noise] if kind == "i2v" else [])
            with post:
                if spy:
                    with _TransformerSpy(pipe.transformer) as s:
                        out = pipe(**kw).frames
                    run.spy = s
                else:
                    out = pipe(**kw).frames
            if kind == "i2v":
                assert post.calls == 1
        return out, counts

    captured = {}
    if kind == "i2v":
        orig_prepare = pipe.prepare_latents
        orig_pre = pipe.video_processor.preprocess

        def prepare_spy(*a, **k):
            out = orig_prepare(*a, **k)
            captured["latents"], captured["image_latents"] = out[0].clone(), out[1].clone()
            return out

        def pre_spy(*a, **k):
            out = orig_pre(*a, **k)
            captured["image_tensor"] = out.clone()
            return out

        pipe.prepare_latents = prepare_spy
        pipe.video_processor.preprocess = pre_spy

    rng = torch.random.get_rng_state()
    latents_final, counts = run("latent", queue, spy=True, record=True)
    assert torch.equal(rng, torch.random.get_rng_state()), f"{name}: the global RNG was used"
    spy_calls = run.spy.calls
    # the loop really started from latents_init and used the text embeddings [negative, positive]
    assert len(spy_calls) == steps
    first = spy_calls[0]
    cond_in = first["hidden_states"][:, :, : shape[2]]
    assert torch.equal(cond_in, torch.cat([latents_init, latents_init])), name
    for c in spy_calls:
        assert torch.equal(c["encoder_hidden_states"], torch.cat([neg, pos])), name
    timesteps = [int(c["timestep"][0]) for c in spy_calls]

    if plan is not None:
        assert [b - a for a, b in zip([0] + counts[:-1], counts)] == [st["draws"] for st in plan], (counts, plan)
        for k, p in enumerate(used_pos):
            tensors[f"dpm_noise_{k}"] = queue[p]
    else:
        assert counts == [0] * steps

    if kind == "i2v":
        assert torch.equal(captured["image_tensor"], image_tensor), name
        # image latents as the pipeline computes them: posterior sample, frames-first, then scaled
        sf = pipe.vae_scaling_factor_image
        with _Queue(vae_mod, [posterior_noise]):
            z = pipe.vae.encode(image_tensor.unsqueeze(2)).latent_dist.sample()
        z = z.permute(0, 2, 1, 3, 4)
        img_lat = (1 / sf * z) if pipe.vae.config.invert_scale_latents else (sf * z)
        # i.e. the f64 factor is rounded to f32 before the multiplication
        factor = torch.tensor((1 / sf) if pipe.vae.config.invert_scale_latents else sf, dtype=torch.float32)
        assert torch.equal(img_lat, z * factor), name
        cond = captured["image_latents"]
        assert cond.shape == shape, (cond.shape, shape)
        assert torch.equal(cond[:, :1], img_lat), name
        assert torch.equal(cond[:, 1:], torch.zeros_like(cond[:, 1:])), name
        assert torch.equal(first["hidden_states"][:, :, shape[2]:], torch.cat([cond, cond])), name
        tensors["image_latents"] = img_lat
        if pipe.transformer.config.ofs_embed_dim is not None:
            assert torch.equal(first["ofs"], torch.tensor([2.0])), first["ofs"]

    tensors["latents_final"] = latents_final
    video, video_u8 = _decode(pipe, latents_final[:, extra:])
    pt_run, _ = run("pt", queue)
    assert torch.equal(pt_run, video), f"{name}: output_type=pt run != decode(latent run)"
    pil_run, _ = run("pil", queue)
    assert torch.equal(_pil_frames_to_u8(pil_run[0]), video_u8), f"{name}: output_type=pil run differs"
    tensors["video_u8"] = video_u8
    if STORE_F32_VIDEO:
        tensors["video"] = video
    check_nontrivial(latents_final, name)
    check_nontrivial(video, name)

    if plan is not None:
        _check_dpm_usage(lambda d: run("latent", d)[0], queue, used_pos, latents_final, name)

    _save(os.path.join(golden_dir, f"{name}.safetensors"), tensors)
    entry = {
        "name": name, "file": f"{name}.safetensors", "kind": kind, "variant": variant,
        "pipeline": cls.__name__, "scheduler": type(pipe.scheduler).__name__, "steps": steps,
        "timesteps": timesteps, "guidance_scale": GUIDANCE, "use_dynamic_cfg": dyn,
        "guidance_per_step": guidance_per_step, "height": h, "width": w, "num_frames": num_frames,
        "latent_frames": f, "padding_frames": extra, "latent_shape": list(shape),
        "prompt": prompt, "negative_prompt": NEGATIVE_PROMPT,
        "seed_tensors": ["latents_init"] + (["posterior_noise"] if kind == "i2v" else [])
        + [f"dpm_noise_{k}" for k in range(len(used_pos))],
        "dpm_draws": len(used_pos), "dpm_draws_made": len(queue),
        "dpm_plan": plan,
        "latents_final": "loop output as output_type='latent' returns it"
        + (f", INCLUDING the {extra} padding frame(s); decode latents_final[:, {extra}:]" if extra else
           "; decoded as is"),
        "decoded_frames": int(video.shape[1]),
        "tensors": _shapes(tensors),
    }
    if kind == "i2v":
        entry["image_scaling"] = ("image_latents = f32(1/scaling_factor) * z (invert_scale_latents)"
                                  if pipe.vae.config.invert_scale_latents else
                                  "image_latents = f32(scaling_factor) * z")
        entry["scaling_factor"] = pipe.vae_scaling_factor_image
        entry["ofs"] = 2.0 if pipe.transformer.config.ofs_embed_dim is not None else None
    return entry


# ----------------------------------------------------------------------------------------------------------------
# DDIM inversion + editing (zai-org/CogVideo inference/ddim_inversion.py)


def _load_ddim_inversion_script():
    path = os.environ.get(DDIM_INVERSION_ENV, DDIM_INVERSION_DEFAULT)
    if not os.path.isfile(path):
        return None, path
    # decord and torchvision are imported at module level but only used by the video-reading helper: stub them
    # for the duration of the import (the stubs are removed from sys.modules again afterwards).
    stubs = {"decord": types.ModuleType("decord"), "torchvision": types.ModuleType("torchvision"),
             "torchvision.transforms": types.ModuleType("torchvision.transforms")}
    stubs["torchvision"].transforms = stubs["torchvision.transforms"]
    saved = {k: sys.modules.get(k) for k in stubs}
    sys.modules.update(stubs)
    try:
        spec = importlib.util.spec_from_file_location("cogvideo_ddim_inversion", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    for fn in ("encode_video_frames", "sample", "OverrideAttnProcessors"):
        assert hasattr(mod, fn), f"{path} has no {fn}"
    return mod, path


def _run_edit(golden_dir, tiny_root, script, name, variant, num_frames, start, seed, shared):
    pipe = _load(tiny_root, variant, CogVideoXPipeline)
    if not pipe.transformer.config.use_rotary_positional_embeddings:  # the script's own check
        raise NotImplementedError("This script supports CogVideoX 5B model only.")
    h, w = HEIGHT, WIDTH
    tensors = {}
    frames_u8 = _test_clip(num_frames, h, w, seed + 1)
    tensors["frames_u8"] = frames_u8
    # as get_video_frames: float, x / 255 * 2 - 1 per frame, [T, H, W, C] -> [T, C, H, W]
    frames = torch.stack([x / 255.0 * 2.0 - 1.0 for x in frames_u8.float()], dim=0).permute(0, 3, 1, 2).contiguous()
    f = (num_frames - 1) // 4 + 1
    pt = pipe.transformer.config.patch_size_t
    if pt is not None and f % pt != 0:
        raise ValueError(f"{f} latent frames is not a multiple of patch_size_t {pt}")
    posterior_noise = randn((1, 16, f, h // 8, w // 8), seed + 2)
    with _Queue(vae_mod, [posterior_noise]):
        video_latents = script.encode_video_frames(pipe.vae, frames)
    shape = tuple(video_latents.shape)
    assert shape == (1, f, 16, h // 8, w // 8), shape
    with _Queue(vae_mod, [posterior_noise]):
        z = pipe.vae.encode(frames.unsqueeze(0).permute(0, 2, 1, 3, 4)).latent_dist.sample()
    sf32 = torch.tensor(pipe.vae.config.scaling_factor, dtype=torch.float32)
    assert torch.equal(video_latents, z.transpose(1, 2) * sf32), name
    tensors["posterior_noise"] = posterior_noise
    tensors["video_latents"] = video_latents

    neg, _ = pipe.encode_prompt("", None, True, device=torch.device("cpu"))
    edit_pos, edit_neg = pipe.encode_prompt(EDIT_PROMPT, None, True, device=torch.device("cpu"))
    assert torch.equal(neg, edit_neg)

    rng = torch.random.get_rng_state()
    inverse = DDIMInverseScheduler(**pipe.scheduler.config)
    with torch.no_grad(), _Queue(dpm_mod), _TransformerSpy(pipe.transformer) as spy_inv:
        inverse_latents = script.sample(pipeline=pipe, latents=video_latents, scheduler=inverse, prompt="",
                                        num_inference_steps=EDIT_STEPS, guidance_scale=GUIDANCE,
                                        generator=torch.Generator().manual_seed(42))
    inv_timesteps = [int(c["timestep"][0]) for c in spy_inv.calls]
    for c in spy_inv.calls:
        assert torch.equal(c["encoder_hidden_states"], torch.cat([neg, neg]))
    assert torch.equal(spy_inv.calls[0]["hidden_states"], torch.cat([video_latents, video_latents]))
    # both CFG halves of the inversion get identical inputs; are the two predictions bit-identical?
    inversion_halves_equal = all(torch.equal(o[0], o[1]) for o in spy_inv.outputs)
    tensors["inverse_trajectory"] = inverse_latents
    assert inverse_latents.shape == (EDIT_STEPS,) + shape

    if start == "noise":
        recon_start = randn(shape, seed + 3)  # stands for the script's torch.randn_like(video_latents)
    else:
        recon_start = inverse_latents[-1].clone()
    tensors["recon_noise"] = recon_start
    with torch.no_grad(), script.OverrideAttnProcessors(transformer=pipe.transformer), \
            _TransformerSpy(pipe.transformer) as spy_rec:
        recon_latents = script.sample(pipeline=pipe, latents=recon_start.clone(), scheduler=pipe.scheduler,
                                      prompt=EDIT_PROMPT, num_inference_steps=EDIT_STEPS, guidance_scale=GUIDANCE,
                                      generator=torch.Generator().manual_seed(42),
                                      reference_latents=reversed(inverse_latents))
    assert torch.equal(rng, torch.random.get_rng_state()), f"{name}: the global RNG was used"
    rec_timesteps = [int(c["timestep"][0]) for c in spy_rec.calls]
    # batch layout of the reconstruction: latents [x, x, ref, ref], text [neg, pos, neg, pos]
    x = recon_start
    for i, c in enumerate(spy_rec.calls):
        ref = inverse_latents[EDIT_STEPS - 1 - i]
        assert torch.equal(c["hidden_states"], torch.cat([x, x, ref, ref])), (name, i)
        assert torch.equal(c["encoder_hidden_states"], torch.cat([neg, edit_pos, neg, edit_pos])), (name, i)
        x = recon_latents[i]
    latents_final = recon_latents[-1]
    tensors["edit_prompt_embeds"] = edit_pos
    tensors["negative_prompt_embeds"] = neg
    tensors["latents_final"] = latents_final
    video, video_u8 = _decode(pipe, latents_final)
    tensors["video_u8"] = video_u8
    inv_video, _ = _decode(pipe, inverse_latents[-1])
    check_nontrivial(inv_video, name)
    check_nontrivial(latents_final, name)
    check_nontrivial(video, name)

    # the variant that starts from the inverted latent shares the inversion with the noise-start case
    # (its inversion_video would be a byte-identical copy, so it is left out there)
    key = (variant, num_frames, seed)
    shared_with = None
    if key in shared:
        shared_with = shared[key][0]
        for k in ("frames_u8", "posterior_noise", "video_latents", "inverse_trajectory", "edit_prompt_embeds",
                  "negative_prompt_embeds"):
            assert torch.equal(shared[key][1][k], tensors[k]), (name, k)
        assert torch.equal(shared[key][2], inv_video), name
    else:
        shared[key] = (name, tensors, inv_video)
    if STORE_F32_VIDEO:
        tensors["video"] = video
        if shared_with is None:
            tensors["inversion_video"] = inv_video

    _save(os.path.join(golden_dir, f"{name}.safetensors"), tensors)
    return {
        "name": name, "file": f"{name}.safetensors", "kind": "edit", "variant": variant,
        "pipeline": "CogVideoXPipeline", "script": DDIM_INVERSION_SOURCE,
        "scheduler": "DDIMInverseScheduler(**pipe.scheduler.config) for the inversion, then "
        + type(pipe.scheduler).__name__ + " (the checkpoint's) for the reconstruction",
        "steps": EDIT_STEPS, "inverse_timesteps": inv_timesteps, "timesteps": rec_timesteps,
        "guidance_scale": GUIDANCE, "use_dynamic_cfg": False, "height": h, "width": w, "num_frames": num_frames,
        "latent_frames": f, "padding_frames": 0, "latent_shape": list(shape),
        "prompt": EDIT_PROMPT, "negative_prompt": NEGATIVE_PROMPT, "inversion_prompt": "",
        "reconstruction_start": "recon_noise = seeded noise (the script's torch.randn_like(video_latents))"
        if start == "noise" else "recon_noise = inverse_trajectory[-1] (the last inverse latent)",
        "seed_tensors": ["posterior_noise"] + (["recon_noise"] if start == "noise" else []),
        "dpm_draws": 0, "dpm_draws_made": 0,
        "latents_final": "last reconstruction latent (trajectory[-1]); decoded as is",
        "decoded_frames": int(video.shape[1]),
        "video_latents": "encode_video_frames: posterior sample (noise injected), transposed to frames-first, "
        "times f32(vae.config.scaling_factor) (invert_scale_latents is not consulted)",
        "inversion_cfg_halves_bit_identical": inversion_halves_equal,
        "cfg_batch": "inversion: latents [x, x], text ['', ''] ; reconstruction: latents [x, x, ref, ref], "
        "text [neg, pos, neg, pos], ref = inverse_trajectory[steps-1-i] at step i; only the first half of the "
        "prediction is kept, then ordinary CFG",
        "inversion_video": "decode of inverse_trajectory[-1] (the script's *_inversion.mp4)" if shared_with is None
        else f"identical to {shared_with}'s inversion_video (not repeated)",
        "tensors": _shapes(tensors),
    }


def edit_from_base(pipe, script, base, steps, reconstruction=None):
    """_run_edit's edit (noise start) again on a base edit case's inputs (frames_u8, posterior_noise, recon_noise)
    with `steps` steps, for the LoRA and cache goldens: returns (inverse trajectory, final latents).
    `reconstruction(run)`, where given, runs the reconstruction (`run()`, the script's sample call, already inside
    OverrideAttnProcessors) and returns its result, so that a caller can hook the reconstruction only."""
    frames = torch.stack([x / 255.0 * 2.0 - 1.0 for x in base["frames_u8"].float()], dim=0)
    frames = frames.permute(0, 3, 1, 2).contiguous()
    with _Queue(vae_mod, [base["posterior_noise"]]):
        video_latents = script.encode_video_frames(pipe.vae, frames)
    # (goldens made on another CPU differ in the last bits, tests/data/README.md)
    assert_close(video_latents, base["video_latents"], "edit inputs vs the base case", atol=1e-4)
    inverse = DDIMInverseScheduler(**pipe.scheduler.config)
    with torch.no_grad(), _Queue(dpm_mod):
        inverse_latents = script.sample(pipeline=pipe, latents=video_latents, scheduler=inverse, prompt="",
                                        num_inference_steps=steps, guidance_scale=GUIDANCE,
                                        generator=torch.Generator().manual_seed(42))

    def run():
        return script.sample(pipeline=pipe, latents=base["recon_noise"].clone(), scheduler=pipe.scheduler,
                             prompt=EDIT_PROMPT, num_inference_steps=steps, guidance_scale=GUIDANCE,
                             generator=torch.Generator().manual_seed(42),
                             reference_latents=reversed(inverse_latents))

    with torch.no_grad(), script.OverrideAttnProcessors(transformer=pipe.transformer):
        recon = reconstruction(run) if reconstruction else run()
    return inverse_latents, recon[-1]


# ----------------------------------------------------------------------------------------------------------------


NOTES = [
    "latents_final is the latent tensor right after the denoising loop (output_type='latent'). For cogvideox1.5 "
    "cases with padding_frames > 0 it still holds the padding frame(s): the pipelines add them at the END of the "
    "noise tensor (latents_init has F+extra frames) but drop them from the FRONT before decoding "
    "(latents_final[:, extra:]); for image-to-video that is the frame aligned with the image.",
    "Decoded frame counts: 3 latent frames decode to 9 frames, but an EVEN number of latent frames decodes to "
    "4*F frames (pipeline_edit_15: 4 latent frames -> 16 frames from a 13-frame clip). The 1.5 padding/drop rule "
    "makes the t2v/i2v 1.5 pipelines decode an odd count (3 latent frames -> 9 frames).",
    "DPM noise: the scheduler draws 1 tensor on the first step, 2 on every later step whose previous timestep "
    "t - 1000//n is >= 0 (only the second is used) and 1 on a step whose previous timestep is < 0 (multiplied by "
    "0: unused). With 7 steps the last timestep is 142 and 142 - 142 = 0 is not < 0, so the last step makes 2 draws "
    "and its second draw DOES affect the result (pipeline_t2v_5b_dpm7: 7 used draws out of 13 made). Every draw "
    "was perturbed by +1 to prove exactly which ones are used.",
    "The forward DDIM/DPM previous timestep uses the integer stride 1000//n (7 steps: 999 -> 857 although the next "
    "scheduled timestep is 856).",
    "video is postprocess_video(output_type='pt'): clamp(x*0.5+0.5, 0, 1) of the VAE output, [1, T, 3, H, W] f32. "
    "video_u8 is the output_type='pil' frames as uint8 [T, H, W, 3] = numpy round-half-to-even of video*255 in "
    "f32 (asserted). A full pipeline call with output_type 'pt' / 'pil' was checked bit-identical to "
    "decode_latents + postprocess_video of latents_final.",
    "Scalings are f64 Python scalars applied to f32 tensors (rounded to f32 first): decode multiplies by "
    "f32(1/scaling_factor); image-to-video multiplies the image posterior sample by f32(scaling_factor) (5b-i2v) or "
    "f32(1/scaling_factor) (1.5-i2v, invert_scale_latents); the DDIM-inversion script multiplies by "
    "f32(vae.config.scaling_factor) for every model (it ignores invert_scale_latents, as does its decode).",
    "posterior_noise is in the VAE layout [1, 16, F, h, w] (it is what DiagonalGaussianDistribution.sample draws).",
    "Image-to-video: the image is created at the target size; VideoProcessor.preprocess (PIL resize to the same "
    "size, /255, 2x-1) was checked to give exactly 2*(u8/255)-1 in f32. The conditioning sequence is "
    "[image_latents, zeros x (F-1)] (F including 1.5's padding frame); channels are [noisy | image] (16 + 16). "
    "cogvideox1.5-5b-i2v gets ofs = [2.0].",
    "DDIM-inversion editing: the inversion runs CFG with '' for both halves (batch 2); the reconstruction runs the "
    "transformer on a batch of 4: latents [x, x, ref, ref] with text [neg, pos, neg, pos] (so CFG is applied, with "
    "the reference pair carrying the same text order), ref at step i = inverse_trajectory[steps-1-i], and the "
    "reference-attention processor on attn1 of every block; only the first two predictions are kept. "
    "No dynamic CFG, the checkpoint's CogVideoXDDIMScheduler (eta 0, no noise). The script's global-RNG "
    "torch.randn_like start noise is replaced by recon_noise.",
]


@torch.no_grad()  # as the pipelines (and the script's ddim_inversion): autograd mode changes the T5 numbers
def gen_pipelines(golden_dir, tiny_root):
    cases, skipped = [], []
    for name, variant, sched, steps, dyn, frames, seed in T2V_CASES:
        cases.append(_run_generation(golden_dir, tiny_root, name, "t2v", variant, sched, steps, dyn, frames, seed))
    for name, variant, sched, steps, dyn, frames, seed in I2V_CASES:
        cases.append(_run_generation(golden_dir, tiny_root, name, "i2v", variant, sched, steps, dyn, frames, seed))

    script, path = _load_ddim_inversion_script()
    if script is None:
        msg = (f"DDIM-inversion script not found at {path} (set {DDIM_INVERSION_ENV}; get it from "
               f"{DDIM_INVERSION_SOURCE}): skipping the pipeline_edit_* cases")
        warnings.warn(msg)
        skipped = [{"name": c[0], "reason": msg} for c in EDIT_CASES]
    else:
        shared = {}
        for name, variant, frames, start, seed in EDIT_CASES:
            try:
                cases.append(_run_edit(golden_dir, tiny_root, script, name, variant, frames, start, seed, shared))
            except Exception as e:  # recorded, not fatal (e.g. a model the script cannot handle)
                if variant.startswith("cogvideox1.5"):
                    skipped.append({"name": name, "reason": f"{type(e).__name__}: {e}"})
                    warnings.warn(f"{name} skipped: {type(e).__name__}: {e}")
                else:
                    raise

    write_cases_json(os.path.join(golden_dir, "pipeline_cases.json"),
                     {"generator": "scripts/golden/golden_pipelines.py", "store_f32_video": STORE_F32_VIDEO,
                      "notes": NOTES, "skipped": skipped},
                     cases)
    return len(cases), len(skipped)
