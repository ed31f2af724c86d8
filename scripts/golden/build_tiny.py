"""Build the tiny randomly initialised CogVideoX pipeline folders (diffusers on-disk layout)."""

import json
import math
import os
import shutil

import torch

import diffusers
from diffusers import AutoencoderKLCogVideoX, CogVideoXDDIMScheduler, CogVideoXTransformer3DModel
from transformers import T5Config, T5EncoderModel

from tokenizer_build import total_vocab, write_published_tokenizer

VARIANTS = ["cogvideox-2b", "cogvideox-5b", "cogvideox-5b-i2v", "cogvideox1.5-5b", "cogvideox1.5-5b-i2v"]

PIPELINE_CLASS = {
    "cogvideox-2b": "CogVideoXPipeline",
    "cogvideox-5b": "CogVideoXPipeline",
    "cogvideox-5b-i2v": "CogVideoXImageToVideoPipeline",
    "cogvideox1.5-5b": "CogVideoXPipeline",
    "cogvideox1.5-5b-i2v": "CogVideoXImageToVideoPipeline",
}

# ---------------------------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------------------------


def transformer_config(variant):
    is15 = variant.startswith("cogvideox1.5")
    i2v = variant.endswith("i2v")
    return dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=32 if i2v else 16,
        out_channels=16,
        flip_sin_to_cos=True,
        freq_shift=0,
        time_embed_dim=16,
        ofs_embed_dim=16 if variant == "cogvideox1.5-5b-i2v" else None,
        text_embed_dim=32,
        num_layers=2,
        dropout=0.0,
        attention_bias=True,
        sample_width=12,
        sample_height=8,
        sample_frames=13 if is15 else 9,
        patch_size=2,
        patch_size_t=2 if is15 else None,
        temporal_compression_ratio=4,
        max_text_seq_length=226,
        activation_fn="gelu-approximate",
        timestep_activation_fn="silu",
        norm_elementwise_affine=True,
        norm_eps=1e-5,
        spatial_interpolation_scale=1.875,
        temporal_interpolation_scale=1.0,
        use_rotary_positional_embeddings=variant != "cogvideox-2b",
        use_learned_positional_embeddings=variant == "cogvideox-5b-i2v",
        patch_bias=not is15,
    )


# VAE sample size 96x80 px: the default tiles are then 48x40 px (6x5 latent), see README.
VAE_SAMPLE_HEIGHT = 96
VAE_SAMPLE_WIDTH = 80


def vae_config(variant):
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=["CogVideoXDownBlock3D"] * 4,
        up_block_types=["CogVideoXUpBlock3D"] * 4,
        block_out_channels=[4, 8, 8, 8],
        latent_channels=16,
        layers_per_block=1,
        act_fn="silu",
        norm_eps=1e-6,
        norm_num_groups=4,
        temporal_compression_ratio=4,
        sample_height=VAE_SAMPLE_HEIGHT,
        sample_width=VAE_SAMPLE_WIDTH,
        scaling_factor=1.15258426 if variant == "cogvideox-2b" else 0.7,
        shift_factor=None,
        latents_mean=None,
        latents_std=None,
        force_upcast=True,
        use_quant_conv=False,
        use_post_quant_conv=False,
        invert_scale_latents=variant.startswith("cogvideox1.5"),
    )


def scheduler_config(variant):
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        trained_betas=None,
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=0,
        prediction_type="v_prediction",
        clip_sample_range=1.0,
        sample_max_value=1.0,
        timestep_spacing="trailing",
        rescale_betas_zero_snr=True,
        snr_shift_scale=3.0 if variant == "cogvideox-2b" else 1.0,
    )


def t5_config(vocab_size):
    return T5Config(
        vocab_size=vocab_size,
        d_model=32,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.1,
        layer_norm_epsilon=1e-6,
        initializer_factor=1.0,
        feed_forward_proj="gated-gelu",
        is_encoder_decoder=True,
        use_cache=True,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
        tie_word_embeddings=False,
        architectures=["T5EncoderModel"],
    )


# Storage choices (dtype of the saved weights, shard size) per variant.
TRANSFORMER_STORAGE = {
    "cogvideox-2b": (torch.float16, None),  # single file, fp16
    "cogvideox-5b": (torch.bfloat16, "40KB"),  # sharded, bf16
    "cogvideox-5b-i2v": (torch.float32, None),
    "cogvideox1.5-5b": (torch.float32, None),
    "cogvideox1.5-5b-i2v": (torch.float32, None),
}
TEXT_ENCODER_SHARD = {
    "cogvideox-2b": None,  # single model.safetensors
    "cogvideox-5b": "90KB",  # 2 shards + model.safetensors.index.json
    "cogvideox-5b-i2v": "90KB",
    "cogvideox1.5-5b": None,
    "cogvideox1.5-5b-i2v": "90KB",
}

SEEDS = {v: 1000 + 10 * i for i, v in enumerate(VARIANTS)}

# ---------------------------------------------------------------------------------------------------------------
# Random re-initialisation
# ---------------------------------------------------------------------------------------------------------------


def _is_norm_weight(name, tensor):
    n = name.lower()
    return tensor.dim() == 1 and name.endswith("weight") and ("norm" in n)


@torch.no_grad()
def reinit_(module, seed, extra_buffers=()):
    """Overwrite every parameter (and the listed persistent buffers) with seeded random values.

    - norm weights (LayerNorm / GroupNorm / RMSNorm, 1-D): 1 + 0.2 * N(0, 1)
    - other 1-D tensors (biases): 0.1 * N(0, 1)
    - >= 2-D weights: N(0, 1) / sqrt(fan_in), fan_in = prod(shape[1:]) (keeps activations O(1))
    - listed buffers (e.g. the learned positional table): 0.3 * N(0, 1)
    """
    g = torch.Generator().manual_seed(seed)
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        shape = tuple(p.shape)
        if _is_norm_weight(name, p):
            val = 1.0 + 0.2 * torch.randn(shape, generator=g, dtype=torch.float32)
        elif p.dim() <= 1:
            val = 0.1 * torch.randn(shape, generator=g, dtype=torch.float32)
        else:
            fan_in = math.prod(shape[1:])
            val = torch.randn(shape, generator=g, dtype=torch.float32) / math.sqrt(fan_in)
        p.copy_(val.to(p.dtype))
    bufs = dict(module.named_buffers())
    for name in extra_buffers:
        b = bufs[name]
        b.copy_((0.3 * torch.randn(tuple(b.shape), generator=g, dtype=torch.float32)).to(b.dtype))


# ---------------------------------------------------------------------------------------------------------------
# Writers
# ---------------------------------------------------------------------------------------------------------------


def _write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def build_text_encoder(vocab_size):
    torch.manual_seed(0)
    model = T5EncoderModel(t5_config(vocab_size)).eval()
    reinit_(model, seed=7)
    return model


def build_variant(root, variant, spiece, text_encoder):
    folder = os.path.join(root, variant)
    if os.path.isdir(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    seed = SEEDS[variant]

    # model_index.json (written by hand: pipeline.save_pretrained would write the transformers-5 tokenizer layout)
    _write_json(
        os.path.join(folder, "model_index.json"),
        {
            "_class_name": PIPELINE_CLASS[variant],
            "_diffusers_version": diffusers.__version__,
            "scheduler": ["diffusers", "CogVideoXDDIMScheduler"],
            "text_encoder": ["transformers", "T5EncoderModel"],
            "tokenizer": ["transformers", "T5Tokenizer"],
            "transformer": ["diffusers", "CogVideoXTransformer3DModel"],
            "vae": ["diffusers", "AutoencoderKLCogVideoX"],
        },
    )

    # scheduler
    CogVideoXDDIMScheduler(**scheduler_config(variant)).save_pretrained(os.path.join(folder, "scheduler"))

    # tokenizer (published slow-tokenizer layout)
    write_published_tokenizer(os.path.join(folder, "tokenizer"), spiece)

    # text encoder
    shard = TEXT_ENCODER_SHARD[variant]
    kw = {"max_shard_size": shard} if shard else {}
    text_encoder.save_pretrained(os.path.join(folder, "text_encoder"), **kw)

    # transformer
    torch.manual_seed(seed)
    tr = CogVideoXTransformer3DModel(**transformer_config(variant)).eval()
    extra = ("patch_embed.pos_embedding",) if variant == "cogvideox-5b-i2v" else ()
    reinit_(tr, seed=seed + 1, extra_buffers=extra)
    dtype, shard = TRANSFORMER_STORAGE[variant]
    tr = tr.to(dtype)
    kw = {"max_shard_size": shard} if shard else {}
    tr.save_pretrained(os.path.join(folder, "transformer"), **kw)

    # vae
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLCogVideoX(**vae_config(variant)).eval()
    reinit_(vae, seed=seed + 3)
    if variant == "cogvideox-2b":
        # Push two logvar channels outside [-30, 20] so DiagonalGaussianDistribution's clamp is exercised.
        with torch.no_grad():
            b = vae.encoder.conv_out.conv.bias
            b[16] = 25.0
            b[17] = -35.0
    vae.save_pretrained(os.path.join(folder, "vae"))
    return folder


def build_all(root, spiece):
    os.makedirs(root, exist_ok=True)
    vocab = total_vocab(spiece)
    vocab_size = ((vocab + 127) // 128) * 128
    te = build_text_encoder(vocab_size)
    for v in VARIANTS:
        build_variant(root, v, spiece, te)
    return vocab_size
