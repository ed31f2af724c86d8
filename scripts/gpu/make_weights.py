"""Random CogVideoX weights in the diffusers folder layout, created on the
device and saved once, so that diffusers and libcogvideo load the same
weights (nothing is downloaded).

    python3 make_weights.py OUT [--size full|small] [--t5-layers N]

full: CogVideoX-5b's shapes (transformer 42 blocks of 48 heads x 64, the
5b VAE, T5 v1.1 XXL), bf16, about 21 GB. small: the same layout at a size
that runs on a CPU in seconds, to try the scripts. The tokenizer is the
tiny checkpoint's (its ids fit any vocabulary here).
"""

import argparse
import json
import os
import shutil
import time

import torch

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
TINY = os.path.join(REPO, "tests", "data", "tiny", "cogvideox-5b")

SIZES = {
    "full": dict(
        transformer=dict(num_attention_heads=48, attention_head_dim=64, num_layers=42,
                         time_embed_dim=512, text_embed_dim=4096, sample_height=60,
                         sample_width=90, sample_frames=49),
        vae=dict(),
        t5=dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24,
                vocab_size=32128),
    ),
    "small": dict(
        transformer=dict(num_attention_heads=2, attention_head_dim=64, num_layers=2,
                         time_embed_dim=32, text_embed_dim=64, sample_height=8,
                         sample_width=12, sample_frames=9),
        vae=dict(block_out_channels=(8, 16, 16, 16), norm_num_groups=4, layers_per_block=1),
        t5=dict(d_model=64, d_ff=128, d_kv=16, num_heads=4, num_layers=2, vocab_size=32128),
    ),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--size", choices=SIZES, default="full")
    ap.add_argument("--t5-layers", type=int, default=None)
    args = ap.parse_args()
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    size = SIZES[args.size]
    torch.manual_seed(0)
    os.makedirs(args.out, exist_ok=True)
    start = time.time()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(dev):
        transformer = CogVideoXTransformer3DModel(
            in_channels=16, out_channels=16, flip_sin_to_cos=True, freq_shift=0,
            use_rotary_positional_embeddings=True, use_learned_positional_embeddings=False,
            patch_size=2, max_text_seq_length=226, **size["transformer"])
    transformer.save_pretrained(os.path.join(args.out, "transformer"))
    del transformer
    with torch.device(dev):
        vae = AutoencoderKLCogVideoX(scaling_factor=0.7, **size["vae"])
    vae.save_pretrained(os.path.join(args.out, "vae"))
    del vae
    t5 = dict(size["t5"])
    if args.t5_layers:
        t5["num_layers"] = args.t5_layers
    cfg = T5Config(feed_forward_proj="gated-gelu", is_encoder_decoder=False, use_cache=False,
                   tie_word_embeddings=False, **t5)
    with torch.device(dev):
        text_encoder = T5EncoderModel(cfg)
    text_encoder.save_pretrained(os.path.join(args.out, "text_encoder"))
    del text_encoder
    torch.set_default_dtype(torch.float32)
    shutil.copytree(os.path.join(TINY, "tokenizer"), os.path.join(args.out, "tokenizer"),
                    dirs_exist_ok=True)
    os.makedirs(os.path.join(args.out, "scheduler"), exist_ok=True)
    with open(os.path.join(TINY, "scheduler", "scheduler_config.json")) as f:
        sched = json.load(f)
    sched["_class_name"] = "CogVideoXDPMScheduler"
    with open(os.path.join(args.out, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(sched, f, indent=2)
    with open(os.path.join(TINY, "model_index.json")) as f:
        index = json.load(f)
    index["scheduler"] = ["diffusers", "CogVideoXDPMScheduler"]
    with open(os.path.join(args.out, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    print(f"weights_written_s={time.time() - start:.1f} size={args.size} at {args.out}")


if __name__ == "__main__":
    main()
