"""Golden outputs for AutoencoderKLCogVideoX (encode / decode, frame batching, tiling, slicing)."""

import os

import torch

import diffusers.models.autoencoders.vae as vae_mod

from common import assert_close, check_nontrivial, randn, save_tensors, write_json

# Untiled spatial size (pixels) and latent size.
H_PX, W_PX = 16, 24

# Tile settings. "A" keeps the default overlap factors (1/6, 1/5) with 48x40 px tiles (= the tiny VAE config's own
# defaults, sample 96x80 // 2); "B" uses larger factors so the *encoder* blend extents are > 1 latent pixel.
TILE_A = dict(tile_sample_min_height=48, tile_sample_min_width=40,
              tile_overlap_factor_height=1 / 6, tile_overlap_factor_width=1 / 5)
TILE_B = dict(tile_sample_min_height=32, tile_sample_min_width=48,
              tile_overlap_factor_height=1 / 2, tile_overlap_factor_width=1 / 3)


def _cases():
    """(variant, case, op, frames, h, w, tiling(None|dict|'default'), batch, slicing)"""
    out = []
    v = "cogvideox-5b"
    for T in [1, 5, 9, 13, 17]:
        out.append((v, f"encode_t{T}", "encode", T, H_PX, W_PX, None, 1, False))
    for F in [1, 2, 3, 4, 5]:
        out.append((v, f"decode_f{F}", "decode", F, H_PX // 8, W_PX // 8, None, 1, False))
    # tiled (A: 56x48 px video / 7x6 latent -> 2x2 tiles; B: 40x64 px / 5x8 latent -> 3 rows x 2 columns)
    for T in [5, 9]:
        out.append((v, f"encode_tiled_a_t{T}", "encode", T, 56, 48, TILE_A, 1, False))
    for F in [2, 3]:
        out.append((v, f"decode_tiled_a_f{F}", "decode", F, 7, 6, TILE_A, 1, False))
    out.append((v, "encode_tiled_b_t5", "encode", 5, 40, 64, TILE_B, 1, False))
    out.append((v, "decode_tiled_b_f2", "decode", 2, 5, 8, TILE_B, 1, False))
    # enable_tiling() with no arguments: defaults derived from the VAE config (sample 96x80 -> tiles 48x40)
    out.append((v, "encode_tiled_default_t1", "encode", 1, 56, 48, "default", 1, False))
    out.append((v, "decode_tiled_default_f1", "decode", 1, 7, 6, "default", 1, False))
    # batch 2 with slicing
    out.append((v, "decode_sliced_b2_f2", "decode", 2, H_PX // 8, W_PX // 8, None, 2, True))
    out.append((v, "encode_sliced_b2_t5", "encode", 5, H_PX, W_PX, None, 2, True))
    for v in ["cogvideox-2b", "cogvideox-5b-i2v", "cogvideox1.5-5b", "cogvideox1.5-5b-i2v"]:
        out.append((v, "encode_t5", "encode", 5, H_PX, W_PX, None, 1, False))
        out.append((v, "decode_f2", "decode", 2, H_PX // 8, W_PX // 8, None, 1, False))
    return out


class _PosteriorNoise:
    def __init__(self, noise):
        self.noise = noise
        self.orig = vae_mod.randn_tensor

    def __enter__(self):
        def fake(shape, generator=None, device=None, dtype=None, layout=None):
            assert tuple(shape) == tuple(self.noise.shape) and dtype == self.noise.dtype
            return self.noise.clone()

        vae_mod.randn_tensor = fake
        return self

    def __exit__(self, *exc):
        vae_mod.randn_tensor = self.orig
        return False


def _tile_info(vae):
    """The effective tiling parameters as AutoencoderKLCogVideoX computes them (tiled_encode / tiled_decode)."""
    hs, ws = vae.tile_sample_min_height, vae.tile_sample_min_width
    hl, wl = vae.tile_latent_min_height, vae.tile_latent_min_width
    fh, fw = vae.tile_overlap_factor_height, vae.tile_overlap_factor_width
    return {
        "tile_sample_min_height": hs,
        "tile_sample_min_width": ws,
        "tile_overlap_factor_height": fh,
        "tile_overlap_factor_width": fw,
        "tile_latent_min_height": hl,
        "tile_latent_min_width": wl,
        "encode": {
            "stride_height_px": int(hs * (1 - fh)),
            "stride_width_px": int(ws * (1 - fw)),
            "blend_extent_height_latent": int(hl * fh),
            "blend_extent_width_latent": int(wl * fw),
            "row_limit_height_latent": hl - int(hl * fh),
            "row_limit_width_latent": wl - int(wl * fw),
        },
        "decode": {
            "stride_height_latent": int(hl * (1 - fh)),
            "stride_width_latent": int(wl * (1 - fw)),
            "blend_extent_height_px": int(hs * fh),
            "blend_extent_width_px": int(ws * fw),
            "row_limit_height_px": hs - int(hs * fh),
            "row_limit_width_px": ws - int(ws * fw),
        },
    }


@torch.no_grad()
def gen_vae(golden_dir, pipes):
    cases = []
    seed = 20000
    for variant, case, op, frames, h, w, tiling, batch, slicing in _cases():
        seed += 10
        vae = pipes[variant].vae
        defaults = (vae.tile_sample_min_height, vae.tile_sample_min_width, vae.tile_latent_min_height,
                    vae.tile_latent_min_width, vae.tile_overlap_factor_height, vae.tile_overlap_factor_width)
        vae.use_tiling = False
        vae.use_slicing = False
        if tiling == "default":
            vae.enable_tiling()
        elif tiling is not None:
            vae.enable_tiling(**tiling)
        if slicing:
            vae.enable_slicing()
        # encode: frames/height/width are the pixel input; decode: the latent input
        entry = {"variant": variant, "case": case, "op": op, "batch": batch, "frames": frames, "height": h,
                 "width": w, "dims_are": "pixels" if op == "encode" else "latents", "tiled": tiling is not None, "sliced": slicing,
                 "scaling_factor": vae.config.scaling_factor}
        if tiling is not None:
            entry["tiling_call"] = "enable_tiling()" if tiling == "default" else (
                "enable_tiling(" + ", ".join(f"{k}={v!r}" for k, v in tiling.items()) + ")")
            entry["tile"] = _tile_info(vae)
        tensors = {}
        if op == "encode":
            video = torch.rand((batch, 3, frames, h, w), generator=torch.Generator().manual_seed(seed)) * 2 - 1
            dist = vae.encode(video).latent_dist
            mean, logvar = dist.mean, dist.logvar
            noise = randn(mean.shape, seed + 1)
            with _PosteriorNoise(noise):
                sample = dist.sample()
            assert_close(sample, mean + torch.exp(0.5 * logvar) * noise, f"vae {case} posterior sample")
            # without tiling the latent frame count follows the frame batching rule
            check_nontrivial(mean, f"vae {variant} {case} mean")
            if tiling is not None:  # prove that tiling really changed the computation
                vae.use_tiling = False
                assert not torch.equal(vae.encode(video).latent_dist.mean, mean), case
            tensors.update(video=video, mean=mean, logvar=logvar, posterior_noise=noise, sample=sample)
            entry["input_shape"] = list(video.shape)
            entry["output_shape"] = list(mean.shape)
            entry["latent_shape"] = list(mean.shape)
            entry["logvar_clamped"] = bool((dist.parameters[:, 16:] != logvar).any())
        else:
            latents = randn((batch, 16, frames, h, w), seed)
            video = vae.decode(latents).sample
            check_nontrivial(video, f"vae {variant} {case} video")
            if tiling is not None:
                vae.use_tiling = False
                assert not torch.equal(vae.decode(latents).sample, video), case
            tensors.update(latents=latents, video=video)
            entry["input_shape"] = list(latents.shape)
            entry["output_shape"] = list(video.shape)
            entry["video_shape"] = list(video.shape)
        fname = f"vae_{variant}_{case}.safetensors"
        save_tensors(os.path.join(golden_dir, fname), tensors)
        entry["file"] = fname
        entry["tensors"] = sorted(tensors.keys())
        cases.append(entry)
        # restore
        vae.use_tiling = False
        vae.use_slicing = False
        (vae.tile_sample_min_height, vae.tile_sample_min_width, vae.tile_latent_min_height,
         vae.tile_latent_min_width, vae.tile_overlap_factor_height, vae.tile_overlap_factor_width) = defaults
    write_json(os.path.join(golden_dir, "vae_cases.json"), {"cases": cases})
    return len(cases)
