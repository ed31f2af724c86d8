"""Golden values for src/frames: diffusers' VideoProcessor pre- and postprocessing of CogVideoX videos.

Writes tests/data/golden/frames.safetensors and frames.json (see the json's "tensors" entry for each tensor).

    /work/pyenv/bin/python scripts/golden/golden_frames.py      # from the repository root; ~2 s

Postprocessing: `VideoProcessor(vae_scale_factor=8).postprocess_video(video, output_type=...)` for "np" (the
denormalised floats) and "pil" (8-bit, via numpy_to_pil's `(x * 255).round().astype("uint8")`), on an f32 video
and on the same video cast to bf16 (denormalisation then runs in bf16, as with a bf16 VAE). The last frame holds
values whose `x * 255` lands exactly on .5 after denormalisation, so round-half-to-even is exercised.

Resizing: `preprocess(image, height, width, resize_mode="default" | "crop")` of one 8-bit image to smaller, larger
and other-aspect sizes (Pillow LANCZOS on 8-bit data; the Rust side resamples in f32, so it is compared with a
tolerance).

Preprocessing: `VideoProcessor(vae_scale_factor=8).preprocess_video(list_of_pil_frames, height, width)` on 8-bit
frames already at the target size (Pillow's resize is then a copy), checked equal to `preprocess` of a single
image and to the CogVideo DDIM-inversion script's `x / 255.0 * 2.0 - 1.0`.
"""

import os

import numpy as np
import PIL.Image
import torch

import diffusers
from diffusers.video_processor import VideoProcessor

from safetensors.torch import save_file

from common import write_json

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
POST_SHAPE = (1, 3, 4, 8, 12)  # [B, C, T, H, W]
PRE_FRAMES, PRE_H, PRE_W = 2, 8, 16
RESIZE_SRC = (15, 21)  # [H, W]
RESIZE_TARGETS = [(8, 16), (32, 40), (16, 8), (8, 24)]  # [H, W], multiples of 8 as preprocess requires


def tie_values():
    """Model-space f32 values x whose denormalised value v = f32(f32(x * 0.5) + 0.5) has f32(v * 255) == k + 0.5."""
    found = []
    for k in range(255):
        x0 = np.float32(2) * np.float32((k + 0.5) / 255) - np.float32(1)
        # The naive inverse and a few ulps either side of it.
        candidates, up, down = [x0], x0, x0
        for _ in range(64):
            up = np.nextafter(up, np.float32(np.inf), dtype=np.float32)
            down = np.nextafter(down, np.float32(-np.inf), dtype=np.float32)
            candidates += [up, down]
        for x in candidates:
            v = np.float32(np.float32(x * np.float32(0.5)) + np.float32(0.5))
            if np.float32(v * np.float32(255)) == np.float32(k + 0.5):
                found.append(float(x))
                break
    return found


def post_video():
    g = torch.Generator().manual_seed(1234)
    video = (torch.rand(POST_SHAPE, generator=g, dtype=torch.float32) * 2.4 - 1.2).contiguous()
    ties = tie_values()
    special = [-1.2, -1.0, -0.999, 0.0, 1.0, 1.0001, 1.2, -0.0, 1e-30, -1e-30] + ties
    last = video[0, :, -1].reshape(-1)
    assert len(special) <= last.numel(), len(special)
    last[: len(special)] = torch.tensor(special, dtype=torch.float32)
    video[0, :, -1] = last.reshape(video[0, :, -1].shape)
    return video, len(ties)


@torch.no_grad()
def gen_frames(golden_dir):
    vp = VideoProcessor(vae_scale_factor=8)
    tensors = {}
    info = {}

    video, n_ties = post_video()
    tensors["post_video"] = video
    for tag, v in (("f32", video), ("bf16", video.to(torch.bfloat16))):
        if tag == "bf16":
            tensors["post_video_bf16"] = v.float()  # stored as f32, exactly
        out_np = vp.postprocess_video(v, output_type="np")  # [B, T, H, W, C] float32
        out_pil = vp.postprocess_video(v, output_type="pil")  # [[PIL] * T]
        assert out_np.dtype == np.float32, out_np.dtype
        pil = np.stack([np.asarray(im) for im in out_pil[0]])  # [T, H, W, 3] uint8
        assert pil.dtype == np.uint8
        # The pil path is the np path followed by numpy_to_pil's rounding.
        assert np.array_equal(pil, (out_np[0] * 255).round().astype("uint8"))
        tensors[f"post_np_{tag}"] = torch.from_numpy(out_np)
        tensors[f"post_u8_{tag}"] = torch.from_numpy(pil)

    g = torch.Generator().manual_seed(99)
    pre = torch.randint(0, 256, (PRE_FRAMES, PRE_H, PRE_W, 3), generator=g, dtype=torch.uint8)
    pre.view(-1)[:256] = torch.arange(256, dtype=torch.uint8)  # every code once
    pre_np = pre.numpy()
    images = [PIL.Image.fromarray(f) for f in pre_np]
    out = vp.preprocess_video(images, height=PRE_H, width=PRE_W)  # [1, 3, T, H, W]
    assert out.shape == (1, 3, PRE_FRAMES, PRE_H, PRE_W) and out.dtype == torch.float32
    single = vp.preprocess(images[0], height=PRE_H, width=PRE_W)  # [1, 3, H, W]
    assert torch.equal(single, out[:, :, 0])
    script = (torch.from_numpy(pre_np).float() / 255.0 * 2.0 - 1.0).permute(3, 0, 1, 2)[None]
    assert torch.equal(script, out), "DDIM-inversion script and VideoProcessor disagree"
    tensors["pre_u8"] = pre
    tensors["pre_video"] = out

    # Resizing: Pillow LANCZOS through preprocess's "default" (stretch) and "crop" modes. Pillow works on 8-bit
    # data, so these agree with the f32 resampler only to within about one 8-bit level.
    g = torch.Generator().manual_seed(7)
    src = torch.randint(0, 256, (RESIZE_SRC[0], RESIZE_SRC[1], 3), generator=g, dtype=torch.uint8)
    # Smooth the noise a little so the comparison is not dominated by ringing on single-pixel spikes.
    src = ((src.float() + src.roll(1, 0).float() + src.roll(1, 1).float()) / 3).round().to(torch.uint8)
    tensors["resize_u8"] = src
    image = PIL.Image.fromarray(src.numpy())
    resize_cases = []
    for mode in ("default", "crop"):
        for h, w in RESIZE_TARGETS:
            key = f"resize_{mode}_{h}x{w}"
            out = vp.preprocess(image, height=h, width=w, resize_mode=mode)
            assert out.shape == (1, 3, h, w), out.shape
            tensors[key] = out
            resize_cases.append({"key": key, "resize_mode": mode, "height": h, "width": w})

    # CogVideo DDIM-inversion script: keep the first 4k + 1 frames.
    counts = []
    for n in range(1, 101):
        frames = list(range(n))
        remainder = (3 + n) % 4
        if remainder != 0:
            frames = frames[:-remainder]
        assert len(frames) % 4 == 1
        counts.append([n, len(frames)])

    info = {
        "generator": "scripts/golden/golden_frames.py",
        "diffusers": diffusers.__version__,
        "torch": torch.__version__.split("+")[0],
        "numpy": np.__version__,
        "pillow": PIL.__version__,
        "processor": "VideoProcessor(vae_scale_factor=8)",
        "tie_values": n_ties,
        "tensors": {
            "post_video": "[1, 3, T, H, W] f32 in [-1.2, 1.2]; last frame starts with edge values and ties",
            "post_video_bf16": "post_video cast to bf16 (stored as f32, exact)",
            "post_np_<f32|bf16>": "[1, T, H, W, 3] f32 = postprocess_video(video, output_type='np')",
            "post_u8_<f32|bf16>": "[T, H, W, 3] uint8 = np.asarray of postprocess_video(video, 'pil')[0]",
            "pre_u8": "[T, H, W, 3] uint8 RGB frames; the first 256 samples are 0..255",
            "pre_video": "[1, 3, T, H, W] f32 = preprocess_video([PIL frames], height=H, width=W)",
            "resize_u8": "[H, W, 3] uint8 RGB source image for the resize cases",
            "resize_<mode>_<h>x<w>": "[1, 3, h, w] f32 = preprocess(PIL image, height=h, width=w, resize_mode=mode)",
        },
        "resize_cases": resize_cases,
        "frame_counts": counts,
    }
    # Stored as is (uint8 stays uint8, unlike common.save_tensors) to keep the file small.
    os.makedirs(golden_dir, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(golden_dir, "frames.safetensors"))
    write_json(os.path.join(golden_dir, "frames.json"), info)
    return info


if __name__ == "__main__":
    torch.set_num_threads(1)
    info = gen_frames(os.path.join(ROOT, "tests", "data", "golden"))
    print(f"frames: {info['tie_values']} tie values")
