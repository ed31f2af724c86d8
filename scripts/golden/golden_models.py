"""Golden outputs for the tokenizer, the T5 text encoder and the CogVideoX transformer."""

import copy
import os

import sentencepiece as spm
import torch
from transformers import T5Tokenizer

from common import assert_close, check_nontrivial, randn, save_tensors, write_cases_json, write_json
from text_data import T5_PROMPTS, tokenizer_prompts

MAX_LEN = 226


def _pipeline_ids(tok, prompt):
    # The exact call CogVideoXPipeline._get_t5_prompt_embeds makes.
    return tok(prompt, padding="max_length", max_length=MAX_LEN, truncation=True, add_special_tokens=True).input_ids


def write_tokenizer_json_layout(published_dir, out_dir):
    """Save the tokenizer the way transformers 5.x save_pretrained does (tokenizer.json + tokenizer_config.json)."""
    tok = T5Tokenizer.from_pretrained(published_dir)
    tok.save_pretrained(out_dir)
    files = sorted(os.listdir(out_dir))
    assert "tokenizer.json" in files and "spiece.model" not in files, files
    return files


def gen_tokenizer(golden_dir, published_dir, json_dir, spiece_bytes):
    tok = T5Tokenizer.from_pretrained(published_dir)
    tok_json = T5Tokenizer.from_pretrained(json_dir)
    sp = spm.SentencePieceProcessor(model_proto=spiece_bytes)
    prompts = tokenizer_prompts()
    assert len(prompts) >= 220, len(prompts)
    cases = []
    n_trunc = 0
    for p in prompts:
        ids = _pipeline_ids(tok, p)
        ids2 = _pipeline_ids(tok_json, p)
        if ids != ids2:
            raise AssertionError(f"tokenizer layouts disagree on {p!r}")
        assert len(ids) == MAX_LEN
        # ids the raw sentencepiece library gives (pieces truncated to 225, then EOS, then pads)
        raw = sp.encode(p)[: MAX_LEN - 1] + [1]
        raw += [0] * (MAX_LEN - len(raw))
        n_pieces = len(sp.encode(p))
        if n_pieces >= MAX_LEN:
            n_trunc += 1
        cases.append({"prompt": p, "ids": ids, "equals_raw_sentencepiece": ids == raw})
    assert n_trunc >= 5, n_trunc
    write_cases_json(
        os.path.join(golden_dir, "tokenizer.json"),
        {
            "max_length": MAX_LEN,
            "tokenizer_class": f"{type(tok).__module__}.{type(tok).__name__}",
            "source": "tests/data/tiny/cogvideox-5b/tokenizer",
            "call": "tokenizer(prompt, padding='max_length', max_length=226, truncation=True, "
            "add_special_tokens=True).input_ids",
            "vocab_size": len(tok),
        },
        cases,
    )
    return len(cases), sum(not c["equals_raw_sentencepiece"] for c in cases)


@torch.no_grad()
def gen_t5(golden_dir, pipe, variant, other_pipes=()):
    tensors = {}
    cases = []
    for k, prompt in enumerate(T5_PROMPTS):
        emb = pipe._get_t5_prompt_embeds(
            prompt=prompt, num_videos_per_prompt=1, max_sequence_length=MAX_LEN, device=torch.device("cpu"),
            dtype=torch.float32,
        )
        ids = torch.tensor([_pipeline_ids(pipe.tokenizer, prompt)], dtype=torch.int64)
        direct = pipe.text_encoder(ids)[0]
        assert_close(emb, direct, f"t5 prompt {k}: _get_t5_prompt_embeds vs text_encoder(ids)[0]")
        for op in other_pipes:  # same weights stored differently (single file vs shards) must agree exactly
            assert_close(op.text_encoder(ids)[0], emb, f"t5 prompt {k}: other layout")
        check_nontrivial(emb, f"t5 {k}")
        assert emb.shape == (1, MAX_LEN, 32)
        tensors[f"input_ids_{k}"] = ids
        tensors[f"hidden_{k}"] = emb
        cases.append({"key": k, "prompt": prompt})
    save_tensors(os.path.join(golden_dir, "t5.safetensors"), tensors)
    write_json(
        os.path.join(golden_dir, "t5.json"),
        {"variant": variant, "file": "t5.safetensors", "tensors": {"input_ids_<key>": "[1,226] int64",
                                                                    "hidden_<key>": "[1,226,32] f32"},
         "cases": cases},
    )


# variant -> list of (case, latent_frames, h_latent, w_latent, dtype, timesteps)
TRANSFORMER_CASES = {
    "cogvideox-2b": [
        ("default", 3, 8, 12, "f32", [999, 437]),
        ("alt", 2, 6, 10, "f32", [1, 750]),
        ("bf16", 3, 8, 12, "bf16", [999, 437]),
    ],
    "cogvideox-5b": [
        ("default", 3, 8, 12, "f32", [999, 437]),
        ("alt", 5, 12, 12, "f32", [1, 750]),
    ],
    "cogvideox-5b-i2v": [
        ("default", 3, 8, 12, "f32", [999, 437]),
        ("alt", 2, 8, 12, "f32", [1, 750]),
    ],
    "cogvideox1.5-5b": [
        ("default", 4, 8, 12, "f32", [999, 437]),
        ("alt", 6, 6, 10, "f32", [1, 750]),
    ],
    "cogvideox1.5-5b-i2v": [
        ("default", 4, 8, 12, "f32", [999, 437]),
        ("alt", 2, 8, 8, "f32", [1, 750]),
        ("bf16", 4, 8, 12, "bf16", [999, 437]),
    ],
}


@torch.no_grad()
def gen_transformer(golden_dir, pipes):
    cases = []
    seed = 5000
    for variant, vcases in TRANSFORMER_CASES.items():
        pipe = pipes[variant]
        tr = pipe.transformer
        cfg = tr.config
        for case, F, H, W, dt, ts in vcases:
            seed += 10
            B = 2
            cin = cfg.in_channels
            hs = randn((B, F, cin, H, W), seed)
            ehs = randn((B, MAX_LEN, cfg.text_embed_dim), seed + 1)
            t = torch.tensor(ts, dtype=torch.int64)
            rope = bool(cfg.use_rotary_positional_embeddings)
            image_rotary_emb = None
            if rope:
                image_rotary_emb = pipe._prepare_rotary_positional_embeddings(H * 8, W * 8, F, torch.device("cpu"))
            ofs = None
            if cfg.ofs_embed_dim is not None:
                ofs = torch.full((1,), 2.0, dtype=torch.float32)  # pipeline: latents.new_full((1,), 2.0)
            model = tr
            if dt == "bf16":
                model = copy.deepcopy(tr).to(torch.bfloat16)
                hs = hs.to(torch.bfloat16)
                ehs = ehs.to(torch.bfloat16)
                if ofs is not None:
                    ofs = ofs.to(torch.bfloat16)
            out = model(
                hidden_states=hs,
                encoder_hidden_states=ehs,
                timestep=t,
                ofs=ofs,
                image_rotary_emb=image_rotary_emb,
                return_dict=False,
            )[0]
            assert out.shape == (B, F, cfg.out_channels, H, W), out.shape
            check_nontrivial(out, f"transformer {variant} {case}")
            tensors = {
                "hidden_states": hs.float(),
                "encoder_hidden_states": ehs.float(),
                "timestep": t,
                "output": out.float(),
            }
            if ofs is not None:
                tensors["ofs"] = ofs.float()
            if rope:
                cos, sin = image_rotary_emb
                assert cos.dtype == torch.float32
                tensors["rope_cos"] = cos
                tensors["rope_sin"] = sin
            if variant == "cogvideox-2b" and case == "default":
                t_emb = model.time_proj(t).to(hs.dtype)
                tensors["time_emb"] = model.time_embedding(t_emb, None)
            fname = f"transformer_{variant}_{case}.safetensors"
            save_tensors(os.path.join(golden_dir, fname), tensors)
            entry = {
                "variant": variant,
                "case": case,
                "file": fname,
                "batch": B,
                "latent_frames": F,
                "height_latent": H,
                "width_latent": W,
                "height_px": H * 8,
                "width_px": W * 8,
                "in_channels": cin,
                "dtype": dt,
                "rope": rope,
                "ofs": 2.0 if ofs is not None else None,
                "timestep": ts,
                "tensors": sorted(tensors.keys()),
            }
            if rope:
                entry["rope_shape"] = list(tensors["rope_cos"].shape)
            cases.append(entry)
    write_json(os.path.join(golden_dir, "transformer_cases.json"), {"cases": cases})
    return len(cases)
