"""The diffusers half of scripts/gpu/run.sh, on the weights make_weights.py
wrote; prints key=value lines like examples/bench_gpu.rs.

    python3 bench_diffusers.py parity CKPT DIR [bf16] [f32]
        One transformer forward (CFG batch of 2 at the checkpoint's default
        size, timestep 999) in each dtype named (default both) on the same
        inputs: DIR/inputs.safetensors (f32 copies of the bf16 inputs, for
        bench_gpu parity; made by the first run, read by later ones) and
        DIR/diffusers_DTYPE.safetensors (`output`).
    python3 bench_diffusers.py time CKPT [t2v_steps=N edit_steps=N]
        CogVideoXPipeline in bf16 with the DPM scheduler and CFG: per-step
        times of text-to-video (first step a warm-up), the VAE decode of the
        result, and the edit step: the transformer on a batch of 4 with the
        reference attention of CogVideo's DDIM-inversion script (main rows
        attend to their own and the reference rows' keys).
"""

import os
import sys
import time

import torch
import torch.nn.functional as F

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def pipeline(ckpt, dtype):
    from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline

    pipe = CogVideoXPipeline.from_pretrained(ckpt, torch_dtype=dtype).to(DEV)
    pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def default_size(pipe):
    c = pipe.transformer.config
    return c.sample_height * 8, c.sample_width * 8, 49 if c.sample_frames >= 49 else c.sample_frames


def rope(pipe, h, w, frames):
    latent_frames = (frames - 1) // 4 + 1
    return pipe._prepare_rotary_positional_embeddings(h, w, latent_frames, torch.device(DEV))


def parity(ckpt, out_dir, dtypes):
    from diffusers import CogVideoXTransformer3DModel
    from safetensors.torch import load_file, save_file

    # f32 means f32: no TF32 in matmuls or the patch embedding's convolution.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tr = CogVideoXTransformer3DModel.from_pretrained(ckpt, subfolder="transformer",
                                                     torch_dtype=torch.bfloat16).to(DEV)
    c = tr.config
    frames = 49 if c.sample_frames >= 49 else c.sample_frames
    f = (frames - 1) // 4 + 1
    inputs = f"{out_dir}/inputs.safetensors"
    if os.path.exists(inputs):
        saved = load_file(inputs, device=DEV)
        hidden = saved["hidden_states"].to(torch.bfloat16)
        text = saved["encoder_hidden_states"].to(torch.bfloat16)
    else:
        g = torch.Generator(DEV).manual_seed(0)
        hidden = torch.randn(2, f, 16, c.sample_height, c.sample_width, generator=g, device=DEV)
        text = torch.randn(2, 226, c.text_embed_dim, generator=g, device=DEV)
        hidden, text = hidden.to(torch.bfloat16), text.to(torch.bfloat16)
        save_file({"hidden_states": hidden.float().cpu().contiguous(),
                   "encoder_hidden_states": text.float().cpu().contiguous(),
                   "timestep": torch.tensor([999.0, 999.0])}, inputs)
    t = torch.tensor([999, 999], device=DEV)

    class P:  # what _prepare_rotary_positional_embeddings reads
        transformer = tr
        vae_scale_factor_spatial = 8

    from diffusers import CogVideoXPipeline

    emb = CogVideoXPipeline._prepare_rotary_positional_embeddings(
        P, c.sample_height * 8, c.sample_width * 8, f, torch.device(DEV))
    for name in dtypes:
        dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[name]
        tr.to(dtype)
        with torch.no_grad():
            sync()
            start = time.perf_counter()
            o = tr(hidden_states=hidden.to(dtype), encoder_hidden_states=text.to(dtype),
                   timestep=t, image_rotary_emb=emb, return_dict=False)[0]
            sync()
        print(f"parity_{name}_forward_s={time.perf_counter() - start:.3f}")
        save_file({"output": o.float().cpu().contiguous()},
                  f"{out_dir}/diffusers_{name}.safetensors")
        del o


class ReferenceAttnProcessor:
    """CogVideoXAttnProcessor2_0 where the batch is [main..., reference...]
    and each main row also attends to its reference row's tokens, as
    CogVideo's inference/ddim_inversion.py does for editing."""

    def __call__(self, attn, hidden_states, encoder_hidden_states, attention_mask=None,
                 image_rotary_emb=None):
        from diffusers.models.embeddings import apply_rotary_emb

        n_text = encoder_hidden_states.size(1)
        x = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        b = x.shape[0]
        q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
        d = k.shape[-1] // attn.heads
        q, k, v = (y.view(b, -1, attn.heads, d).transpose(1, 2) for y in (q, k, v))
        q, k = attn.norm_q(q), attn.norm_k(k)
        if image_rotary_emb is not None:
            q[:, :, n_text:] = apply_rotary_emb(q[:, :, n_text:], image_rotary_emb)
            k[:, :, n_text:] = apply_rotary_emb(k[:, :, n_text:], image_rotary_emb)
        h = b // 2
        main = F.scaled_dot_product_attention(q[:h], torch.cat([k[:h], k[h:]], dim=2),
                                              torch.cat([v[:h], v[h:]], dim=2))
        ref = F.scaled_dot_product_attention(q[h:], k[h:], v[h:])
        o = torch.cat([main, ref]).transpose(1, 2).reshape(b, -1, attn.heads * d)
        o = attn.to_out[1](attn.to_out[0](o))
        return o[:, n_text:], o[:, :n_text]


def timing(ckpt, opts):
    t2v_steps = int(opts.get("t2v_steps", 4))
    edit_steps = int(opts.get("edit_steps", 3))
    start = time.perf_counter()
    pipe = pipeline(ckpt, torch.bfloat16)
    sync()
    print(f"load_s={time.perf_counter() - start:.2f}")
    h, w, frames = default_size(pipe)
    print(f"size={w}x{h}x{frames}")
    stamps = []

    def on_step(p, i, t, kw):
        sync()
        stamps.append(time.perf_counter())
        return kw

    if DEV == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync()
    call = time.perf_counter()
    text_start = time.perf_counter()
    with torch.no_grad():
        pe, ne = pipe.encode_prompt("a red fox running through snow, cinematic", "",
                                    do_classifier_free_guidance=True, device=torch.device(DEV))
    sync()
    print(f"encode_text_s={time.perf_counter() - text_start:.3f}")
    sync()
    stamps.append(time.perf_counter())
    latents = pipe(prompt_embeds=pe, negative_prompt_embeds=ne, height=h, width=w,
                   num_frames=frames, num_inference_steps=t2v_steps, guidance_scale=6.0,
                   use_dynamic_cfg=True, generator=torch.Generator(DEV).manual_seed(42),
                   output_type="latent", callback_on_step_end=on_step).frames
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    report("t2v_step", steps)
    sync()
    start = time.perf_counter()
    with torch.no_grad():
        pipe.decode_latents(latents)
    sync()
    print(f"decode_s={time.perf_counter() - start:.3f}")
    print(f"t2v_call_s={time.perf_counter() - call:.3f}")
    if DEV == "cuda":
        print(f"torch_peak_allocated_bytes={torch.cuda.max_memory_allocated()}")

    if edit_steps > 0:
        tr = pipe.transformer
        tr.set_attn_processor(ReferenceAttnProcessor())
        lat = torch.cat([latents] * 4).to(torch.bfloat16)
        text = torch.cat([ne, pe, ne, pe])
        emb = rope(pipe, h, w, frames)
        times = []
        with torch.no_grad():
            for i in range(edit_steps):
                sync()
                s = time.perf_counter()
                tr(hidden_states=lat, encoder_hidden_states=text,
                   timestep=torch.tensor([999 - i] * 4, device=DEV), image_rotary_emb=emb,
                   return_dict=False)
                sync()
                times.append(time.perf_counter() - s)
        report("edit_step", times)


def report(prefix, steps):
    if not steps:
        print(f"{prefix}_steps=0")
        return
    print(f"{prefix}_first_s={steps[0]:.3f}")
    rest = sorted(steps[1:])
    if rest:
        print(f"{prefix}_min_s={rest[0]:.3f}\n{prefix}_median_s={rest[len(rest) // 2]:.3f}\n"
              f"{prefix}_timed_steps={len(rest)}")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "parity":
        dtypes = sys.argv[4:] or ["bf16", "f32"]
        if not set(dtypes) <= {"bf16", "f32"}:
            sys.exit(__doc__)
        parity(sys.argv[2], sys.argv[3], dtypes)
    elif len(sys.argv) >= 3 and sys.argv[1] == "time":
        timing(sys.argv[2], dict(a.split("=", 1) for a in sys.argv[3:]))
    else:
        sys.exit(__doc__)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
