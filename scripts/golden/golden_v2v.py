#!/usr/bin/env python
"""Golden video-to-video cases: diffusers ``CogVideoXVideoToVideoPipeline`` on the tiny checkpoints.

Same conventions as golden_pipelines.py; every random draw is injected and saved, in the order the pipeline makes
them:

1. the VAE posterior sample of the input clip: ``diffusers.models.autoencoders.vae.randn_tensor``
   (``posterior_noise``, VAE layout [1, 16, F, h, w]);
2. the noise ``prepare_latents`` hands to ``scheduler.add_noise``:
   ``diffusers.pipelines.cogvideo.pipeline_cogvideox_video2video.randn_tensor`` (``noise``, [1, F, 16, h, w]);
3. CogVideoXDPMScheduler draws, as in golden_pipelines.py (only the used ones are saved, ``dpm_noise_<k>``; every
   draw is perturbed to prove which ones are used).

Also written: ``get_timesteps`` (the strength truncation) for a grid of step counts and strengths, and what diffusers
does at the edges (strength giving no step, 1.5 frame counts, image-to-video checkpoints).

make_golden.py calls gen_v2v after the other generators. Run on its own (from the repository root) it writes only
the video-to-video files, against the checkpoints already in tests/data/tiny:

    /work/pyenv/bin/python scripts/golden/golden_v2v.py
"""

import math
import os
import sys

sys.dont_write_bytecode = True  # keep scripts/golden free of __pycache__
if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import PIL.Image  # noqa: E402
import torch  # noqa: E402

import diffusers.models.autoencoders.vae as vae_mod  # noqa: E402
import diffusers.pipelines.cogvideo.pipeline_cogvideox_video2video as v2v_mod  # noqa: E402
import diffusers.schedulers.scheduling_dpm_cogvideox as dpm_mod  # noqa: E402
from diffusers import CogVideoXDDIMScheduler, CogVideoXDPMScheduler, CogVideoXVideoToVideoPipeline  # noqa: E402

from common import assert_close, check_nontrivial, randn, write_cases_json  # noqa: E402
from golden_pipelines import (  # noqa: E402
    GUIDANCE,
    HEIGHT,
    WIDTH,
    _check_dpm_usage,
    _decode,
    _dpm_queue,
    _load,
    _pil_frames_to_u8,
    _save,
    _shapes,
    _test_clip,
    _TransformerSpy,
)

V2V_PROMPT = "a red fox running through snow, painted in watercolor"
V2V_NEGATIVE = "blurry, low quality, distorted"

# name, variant, scheduler, steps, strength, use_dynamic_cfg, num_frames, negative prompt (None: the default ""),
# seed
V2V_CASES = [
    ("pipeline_v2v_5b_dpm", "cogvideox-5b", "dpm", 4, 0.8, True, 9, None, 41000),
    ("pipeline_v2v_5b_dpm7", "cogvideox-5b", "dpm", 7, 0.6, True, 9, None, 42000),
    ("pipeline_v2v_2b_ddim", "cogvideox-2b", "ddim", 4, 0.5, False, 9, V2V_NEGATIVE, 43000),
    # 10 x 0.7 runs 7 steps in f64 but 6 if strength were a float32 (f64(0.7f) * 10 = 6.99999988)
    ("pipeline_v2v_5b_ddim", "cogvideox-5b", "ddim", 10, 0.7, False, 9, None, 45000),
    ("pipeline_v2v_15_dpm", "cogvideox1.5-5b", "dpm", 4, 0.8, True, 13, None, 44000),
]

# get_timesteps grid; the strengths include values whose f64 product with the step count lands just below an
# integer (0.29 * 100 = 28.999999999999996) and ones that an f32 strength would truncate one step lower (0.7, 0.9)
TRUNCATION_STEPS = [1, 2, 3, 4, 7, 10, 50, 100]
TRUNCATION_STRENGTHS = [0.0, 0.05, 0.1, 0.2, 0.25, 0.29, 0.3, 0.5, 0.57, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0]


class _Draws:
    """Replace ``randn_tensor`` in several modules by queues of recorded tensors, logging the call order."""

    def __init__(self, queues):
        self.queues = {m: [t.clone() for t in ts] for m, ts in queues.items()}
        self.log = []

    def __enter__(self):
        self.orig = {m: m.randn_tensor for m in self.queues}
        for m in self.queues:
            def fake(shape, generator=None, device=None, dtype=None, layout=None, _m=m):
                q = self.queues[_m]
                if not q:
                    raise AssertionError(f"{_m.__name__}.randn_tensor: more draws than prepared")
                t = q.pop(0)
                assert tuple(t.shape) == tuple(shape) and t.dtype == dtype, (_m.__name__, t.shape, shape, dtype)
                self.log.append(_m)
                return t.clone()

            m.randn_tensor = fake
        return self

    def __exit__(self, *exc):
        for m, f in self.orig.items():
            m.randn_tensor = f
        if exc[0] is None:
            for m, q in self.queues.items():
                if q:
                    raise AssertionError(f"{m.__name__}.randn_tensor: {len(q)} prepared draws unused")
        return False

    def calls(self, module):
        return sum(1 for m in self.log if m is module)


def _dpm_plan(scheduler, timesteps):
    """As golden_pipelines._dpm_plan, for the truncated list: the step stride still uses the full step count."""
    stride = scheduler.config.num_train_timesteps // scheduler.num_inference_steps
    plan = []
    for i, t in enumerate(timesteps):
        prev_t = int(t) - stride
        n = 1 if (i == 0 or prev_t < 0) else 2
        plan.append({"t": int(t), "prev_t": prev_t, "timestep_back": int(timesteps[i - 1]) if i > 0 else None,
                     "draws": n, "used_draw": (n - 1) if prev_t >= 0 else None})
    return plan


def _dynamic_cfg(n, t):
    """The pipeline's formula, with n = the TRUNCATED step count (what get_timesteps returns)."""
    return 1 + GUIDANCE * ((1 - math.cos(math.pi * ((n - t) / n) ** 5.0)) / 2)


def _truncation_table(tiny_root):
    """get_timesteps over a grid (both CogVideoX schedulers have order 1 and the same trailing schedule)."""
    pipe = _load(tiny_root, "cogvideox-5b", CogVideoXVideoToVideoPipeline)
    assert pipe.scheduler.order == 1
    rows = []
    for steps in TRUNCATION_STEPS:
        pipe.scheduler.set_timesteps(steps)
        full = pipe.scheduler.timesteps
        for strength in TRUNCATION_STRENGTHS:
            ts, n = pipe.get_timesteps(steps, full, strength, "cpu")
            init = min(int(steps * strength), steps)
            assert n == init == len(ts), (steps, strength, n, init, len(ts))
            rows.append({"steps": steps, "strength": strength, "steps_x_strength": steps * strength,
                         "init_timestep": init, "t_start": steps - init, "timesteps": [int(t) for t in ts]})
    return rows


def _edge_cases(tiny_root):
    """What diffusers does where a port must decide: recorded as notes, and asserted so they stay true."""
    frames = [PIL.Image.fromarray(f.numpy()) for f in _test_clip(9, HEIGHT, WIDTH, 1)]
    out = {}
    pipe = _load(tiny_root, "cogvideox-5b", CogVideoXVideoToVideoPipeline)
    for strength in (0.0, 0.1):
        lat = pipe(video=frames, prompt="x", num_inference_steps=4, strength=strength, output_type="latent",
                   generator=torch.Generator().manual_seed(0)).frames
        assert lat.shape[0] == 0, lat.shape
        out[f"strength_{strength}_steps_4"] = (
            f"int(4 * {strength}) = 0 steps: no error, the timestep list is empty and diffusers returns an EMPTY "
            f"batch (latents shape {list(lat.shape)}); nothing is denoised or decoded")
    pipe = _load(tiny_root, "cogvideox1.5-5b", CogVideoXVideoToVideoPipeline)
    try:
        pipe(video=frames, prompt="x", num_inference_steps=4, strength=0.8, output_type="latent")
        raise AssertionError("1.5 with 3 latent frames was accepted")
    except ValueError as e:
        assert "patch_size_t" in str(e), e
        out["cogvideox1.5_9_frames"] = f"ValueError: {e} (no padding frame in video-to-video, unlike t2v/i2v)"
    pipe = _load(tiny_root, "cogvideox-5b-i2v", CogVideoXVideoToVideoPipeline)
    try:
        pipe(video=frames, prompt="x", num_inference_steps=4, strength=0.8, output_type="latent")
        raise AssertionError("an image-to-video checkpoint was accepted")
    except RuntimeError as e:
        out["image_to_video_checkpoint"] = (
            f"RuntimeError: {e} (the noise gets transformer in_channels = 32 channels, the clip latents 16; "
            "video-to-video does not work on I2V checkpoints)")
    return out


def _run_v2v(golden_dir, tiny_root, name, variant, sched, steps, strength, dyn, num_frames, negative, seed):
    pipe = _load(tiny_root, variant, CogVideoXVideoToVideoPipeline)
    if sched == "dpm":
        pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    else:
        assert type(pipe.scheduler) is CogVideoXDDIMScheduler
    h, w = HEIGHT, WIDTH
    assert (h, w) == (pipe.transformer.config.sample_height * 8, pipe.transformer.config.sample_width * 8)
    f = (num_frames - 1) // pipe.vae_scale_factor_temporal + 1
    pt = pipe.transformer.config.patch_size_t
    assert pt is None or f % pt == 0, (name, f, pt)
    c = pipe.transformer.config.in_channels
    assert c == pipe.vae.config.latent_channels == 16
    shape = (1, f, c, h // 8, w // 8)
    sf = pipe.vae_scaling_factor_image
    assert sf == pipe.vae.config.scaling_factor

    tensors = {}
    frames_u8 = _test_clip(num_frames, h, w, seed + 1)
    tensors["frames_u8"] = frames_u8
    video_in = [PIL.Image.fromarray(x.numpy()) for x in frames_u8]
    # preprocess_video at the same size: PIL resize is the identity, then f32(u8) / 255 and 2x - 1
    video_tensor = pipe.video_processor.preprocess_video(video_in, height=h, width=w)
    expect = 2.0 * torch.from_numpy(frames_u8.numpy().astype(np.float32) / 255.0) - 1.0
    assert_close(video_tensor, expect.permute(3, 0, 1, 2)[None], f"{name}: preprocess_video at the same size")

    pos, neg = pipe.encode_prompt(V2V_PROMPT, negative, True, num_videos_per_prompt=1, max_sequence_length=226,
                                  device=torch.device("cpu"))
    tensors["prompt_embeds"], tensors["negative_prompt_embeds"] = pos, neg

    # the schedule: the full one, then get_timesteps' truncation
    ref = type(pipe.scheduler).from_config(pipe.scheduler.config)
    ref.set_timesteps(steps)
    full = [int(t) for t in ref.timesteps]
    init_timestep = min(int(steps * strength), steps)
    t_start = steps - init_timestep
    expected_ts = full[t_start:]
    assert 0 < init_timestep < steps, (name, init_timestep)  # a partial schedule
    t0 = expected_ts[0]

    posterior_noise = randn((1, 16, f, h // 8, w // 8), seed + 2)
    noise = randn(shape, seed + 3)
    tensors["posterior_noise"] = posterior_noise
    tensors["noise"] = noise

    # the latents the loop starts from, computed independently of the pipeline
    with _Draws({vae_mod: [posterior_noise]}):
        z = pipe.vae.encode(video_tensor).latent_dist.sample()
    init_latents = z.permute(0, 2, 1, 3, 4) * torch.tensor(sf, dtype=torch.float32)
    assert torch.equal(init_latents, sf * z.permute(0, 2, 1, 3, 4)), name  # the f64 factor is rounded to f32 first
    a32 = ref.alphas_cumprod.to(torch.float32)[t0]
    sqrt_a, sqrt_1ma = a32 ** 0.5, (1 - a32) ** 0.5
    latents_start = sqrt_a * init_latents + sqrt_1ma * noise
    tensors["init_latents"] = init_latents
    tensors["latents_start"] = latents_start

    if sched == "dpm":
        ref_steps = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
        ref_steps.set_timesteps(steps)
        plan = _dpm_plan(ref_steps, expected_ts)
        dpm_draws, used_pos = _dpm_queue(plan, shape, seed)
    else:
        plan, dpm_draws, used_pos = None, [], []

    captured = {}
    orig_prepare = pipe.prepare_latents

    def prepare_spy(*a, **k):
        out = orig_prepare(*a, **k)
        captured["latents"] = out.clone()
        return out

    pipe.prepare_latents = prepare_spy
    guidance_per_step = []

    def run(output_type, draws, spy=False, record=False):
        counts = []
        with _Draws({vae_mod: [posterior_noise], v2v_mod: [noise], dpm_mod: draws}) as d:
            def cb(p, i, t, cbk):
                counts.append(d.calls(dpm_mod))
                if record:
                    guidance_per_step.append(float(p.guidance_scale))
                return {}

            kw = dict(video=video_in, prompt=V2V_PROMPT, negative_prompt=negative, height=h, width=w,
                      num_inference_steps=steps, strength=strength, guidance_scale=GUIDANCE, use_dynamic_cfg=dyn,
                      output_type=output_type, callback_on_step_end=cb)
            if spy:
                with _TransformerSpy(pipe.transformer) as s:
                    out = pipe(**kw).frames
                run.spy = s
            else:
                out = pipe(**kw).frames
        # posterior sample first, then the add_noise draw, then the scheduler's
        assert d.log[:2] == [vae_mod, v2v_mod] and all(m is dpm_mod for m in d.log[2:]), name
        return out, counts

    rng = torch.random.get_rng_state()
    latents_final, counts = run("latent", dpm_draws, spy=True, record=True)
    assert torch.equal(rng, torch.random.get_rng_state()), f"{name}: the global RNG was used"
    assert torch.equal(captured["latents"], latents_start), f"{name}: prepare_latents != add_noise formula"
    spy_calls = run.spy.calls
    timesteps = [int(c["timestep"][0]) for c in spy_calls]
    assert timesteps == expected_ts, (name, timesteps, expected_ts)
    assert torch.equal(spy_calls[0]["hidden_states"], torch.cat([latents_start, latents_start])), name
    for c in spy_calls:
        assert torch.equal(c["encoder_hidden_states"], torch.cat([neg, pos])), name
    if dyn:
        expect_g = [_dynamic_cfg(init_timestep, t) for t in timesteps]
        assert guidance_per_step == expect_g, (name, guidance_per_step, expect_g)
        with_full_n = [_dynamic_cfg(steps, t) for t in timesteps]
    else:
        assert guidance_per_step == [GUIDANCE] * len(timesteps), guidance_per_step
        with_full_n = None

    if plan is not None:
        assert [b - a for a, b in zip([0] + counts[:-1], counts)] == [st["draws"] for st in plan], (counts, plan)
        for k, p in enumerate(used_pos):
            tensors[f"dpm_noise_{k}"] = dpm_draws[p]
    else:
        assert counts == [0] * len(timesteps)

    tensors["latents_final"] = latents_final
    video, video_u8 = _decode(pipe, latents_final)
    pt_run, _ = run("pt", dpm_draws)
    assert torch.equal(pt_run, video), f"{name}: output_type=pt run != decode(latent run)"
    pil_run, _ = run("pil", dpm_draws)
    assert torch.equal(_pil_frames_to_u8(pil_run[0]), video_u8), f"{name}: output_type=pil run differs"
    tensors["video_u8"] = video_u8
    for k in ("init_latents", "latents_final"):
        check_nontrivial(tensors[k], f"{name} {k}")
    check_nontrivial(video, name)
    if plan is not None:
        _check_dpm_usage(lambda d: run("latent", d)[0], dpm_draws, used_pos, latents_final, name)

    _save(os.path.join(golden_dir, f"{name}.safetensors"), tensors)
    return {
        "name": name, "file": f"{name}.safetensors", "kind": "v2v", "variant": variant,
        "pipeline": "CogVideoXVideoToVideoPipeline", "scheduler": type(pipe.scheduler).__name__,
        "steps": steps, "strength": strength, "init_timestep": init_timestep, "t_start": t_start,
        "init_timestep_if_strength_f32": min(int(steps * float(np.float32(strength))), steps),
        "full_timesteps": full, "timesteps": timesteps, "add_noise_timestep": t0,
        "add_noise_sqrt_alpha_f32": float(sqrt_a), "add_noise_sqrt_one_minus_alpha_f32": float(sqrt_1ma),
        "guidance_scale": GUIDANCE, "use_dynamic_cfg": dyn, "guidance_per_step": guidance_per_step,
        "guidance_per_step_if_full_steps": with_full_n,
        "height": h, "width": w, "num_frames": num_frames, "latent_frames": f, "padding_frames": 0,
        "latent_shape": list(shape), "scaling_factor": sf,
        "invert_scale_latents": bool(pipe.vae.config.invert_scale_latents),
        "prompt": V2V_PROMPT, "negative_prompt": negative if negative is not None else "",
        "draw_order": ["posterior_noise [1, 16, F, h, w] (VAE encode of the clip)",
                       "noise [1, F, 16, h, w] (prepare_latents -> add_noise)"]
        + (["dpm draws, per step as dpm_plan"] if plan is not None else []),
        "seed_tensors": ["posterior_noise", "noise"] + [f"dpm_noise_{k}" for k in range(len(used_pos))],
        "dpm_draws": len(used_pos), "dpm_draws_made": len(dpm_draws), "dpm_plan": plan,
        "latents_final": "loop output as output_type='latent' returns it; decoded as is",
        "decoded_frames": int(video.shape[1]),
        "tensors": _shapes(tensors),
    }


NOTES = [
    "Input: a list of PIL frames at the target size; preprocess_video = per frame PIL resize to (width, height) "
    "with LANCZOS (the identity here: same size), f32(u8) / 255 in numpy, 2x - 1 in torch, stacked to "
    "[1, 3, T, H, W]; checked bit-identical to 2 * (f32(u8) / 255) - 1. A frame of another size would be "
    "stretched (resize_mode 'default': no crop, no aspect ratio). num_frames = len(video). height / width default "
    "to transformer sample size x 8.",
    "Draw order: (1) VAE posterior sample of the whole clip, posterior_noise [1, 16, F, h, w]; (2) the add_noise "
    "noise, noise [1, F, 16, h, w] (frames first); (3) the DPM scheduler draws. init_latents = posterior sample "
    "permuted to [1, F, 16, h, w] times f32(vae.config.scaling_factor) for EVERY model: invert_scale_latents "
    "(true for 1.5) is NOT consulted here (image-to-video 1.5 uses 1/scaling_factor); decode divides by "
    "f32(1/scaling_factor) as usual. latents_start = sqrt(a) * init_latents + sqrt(1 - a) * noise with "
    "a = f32(alphas_cumprod_f64)[t0] and both square roots taken in f32 (add_noise casts the table to the sample "
    "dtype first), t0 = the first timestep actually run; then times init_noise_sigma = 1.0.",
    "Strength: get_timesteps keeps timesteps[t_start:] of the full trailing schedule of num_inference_steps, with "
    "init_timestep = min(int(num_inference_steps * strength), num_inference_steps), the product in f64 and int() "
    "truncating (0.29 * 100 = 28.999999999999996 -> 28) and t_start = num_inference_steps - init_timestep. A "
    "strength held as f32 gives one step fewer in common cases: f64(0.7f) * 10 = 6.99999988 -> 6 where diffusers "
    "runs 7 (also 0.9 x 10, 0.7 x 20, 0.7 x 50, 0.9 x 50; pipeline_v2v_5b_ddim is 0.7 x 10). See "
    "truncation_table (steps_x_strength is the f64 product).",
    "Dynamic CFG sees the TRUNCATED count: get_timesteps returns num_inference_steps = init_timestep, and "
    "w = 1 + 6 * (1 - cos(pi * ((n - t) / n) ** 5)) / 2 is evaluated with that n (guidance_per_step; "
    "guidance_per_step_if_full_steps shows what the full count would give).",
    "The schedulers still hold the FULL count (set_timesteps(num_inference_steps) ran before the truncation): the "
    "DDIM/DPM previous timestep is t - 1000 // full_steps (7 steps: 428 -> 286 although the next timestep run is "
    "285). DPM: the loop resets old_pred_original_sample = None and passes timesteps[i - 1] of the TRUNCATED list "
    "(None at i = 0), so the first step run is always the first-order step with 1 draw (used if its previous "
    "timestep is >= 0), exactly like the first step of text-to-video, even though it starts mid-schedule; "
    "timestep_back at step i > 0 is the timestep run just before. dpm_plan lists t, prev_t, timestep_back, draws "
    "made and the used draw per step.",
    "cogvideox1.5: no padding frame in video-to-video: the clip's latent frame count must already be a multiple "
    "of patch_size_t (2), else ValueError (9 frames -> 3 latent frames is refused; 13 frames -> 4 is the case "
    "here, and 4 latent frames decode to 16 frames). RoPE uses latents.size(1) = 4 latent frames "
    "(2 temporal patches). No ofs.",
    "The transformer call and CFG are those of text-to-video: hidden_states [latents, latents], text "
    "[negative, positive], guidance uncond + w * (text - uncond). The first call's hidden_states were checked to be "
    "[latents_start, latents_start].",
    "pipeline_v2v_2b_ddim is badly conditioned on purpose-built weights: the tiny 2b VAE's logvar bias clamps "
    "latent channel 0 to std e^10, so init_latents reach ~6e4 and latents_final ~1e4 in that channel (the others "
    "are O(1)) and 99.5% of video_u8 is 0 or 255. Compare its latents with a relative tolerance; "
    "pipeline_v2v_5b_ddim is the well-conditioned DDIM case.",
    "video_u8 = output_type='pil' frames as uint8 [T, H, W, 3] (round-half-to-even of clamp(x / 2 + 0.5, 0, 1) "
    "* 255 in f32), checked bit-identical to full pipeline calls with output_type 'pt' and 'pil'.",
]


@torch.no_grad()
def gen_v2v(golden_dir, tiny_root):
    cases = [_run_v2v(golden_dir, tiny_root, *c) for c in V2V_CASES]
    edges = _edge_cases(tiny_root)
    write_cases_json(os.path.join(golden_dir, "pipeline_v2v_cases.json"),
                     {"generator": "scripts/golden/golden_v2v.py", "notes": NOTES, "edge_cases": edges,
                      "truncation_table": _truncation_table(tiny_root)},
                     cases)
    return len(cases)


def main():
    import warnings

    import diffusers

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if diffusers.__version__ != "0.42.1":
        warnings.warn(f"diffusers {diffusers.__version__} installed, golden files were made with 0.42.1")
    repo = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    n = gen_v2v(os.path.join(repo, "tests", "data", "golden"), os.path.join(repo, "tests", "data", "tiny"))
    print(f"video-to-video: {n} cases")


if __name__ == "__main__":
    main()
