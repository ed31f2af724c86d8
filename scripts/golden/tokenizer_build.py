"""Tiny T5 tokenizer: train a SentencePiece unigram model and write the published CogVideoX tokenizer layout."""

import io
import json
import os

import sentencepiece as spm

from text_data import training_corpus

SPM_VOCAB_SIZE = 512
EXTRA_IDS = 100
MODEL_MAX_LENGTH = 226


def train_spiece() -> bytes:
    """Train the tiny unigram model in memory. Deterministic (single thread, fixed seed, no shuffling)."""
    spm.set_random_generator_seed(1234)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(training_corpus()),
        model_writer=buf,
        model_type="unigram",
        vocab_size=SPM_VOCAB_SIZE,
        hard_vocab_limit=True,
        normalization_rule_name="nmt_nfkc",
        add_dummy_prefix=True,
        remove_extra_whitespaces=True,
        split_digits=False,
        byte_fallback=False,
        character_coverage=1.0,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        pad_piece="<pad>",
        eos_piece="</s>",
        unk_piece="<unk>",
        num_threads=1,
        shuffle_input_sentence=False,
        input_sentence_size=0,
        minloglevel=2,
    )
    return buf.getvalue()


def _tok_entry(content):
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False}


def write_published_tokenizer(folder: str, spiece: bytes) -> None:
    """Write tokenizer/ as the CogVideoX hub repos ship it: spiece.model, tokenizer_config.json,
    special_tokens_map.json, added_tokens.json and NO tokenizer.json (transformers 4.x slow-tokenizer layout)."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "spiece.model"), "wb") as f:
        f.write(spiece)
    sp = spm.SentencePieceProcessor(model_proto=spiece)
    v = sp.get_piece_size()
    extra = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    extra_id = {f"<extra_id_{i}>": v + EXTRA_IDS - 1 - i for i in range(EXTRA_IDS)}  # reversed: extra_id_99 = v

    added_tokens_decoder = {}
    for i, tok in [(0, "<pad>"), (1, "</s>"), (2, "<unk>")]:
        added_tokens_decoder[str(i)] = dict(_tok_entry(tok), special=True)
    for tok in sorted(extra_id, key=lambda t: extra_id[t]):
        added_tokens_decoder[str(extra_id[tok])] = dict(_tok_entry(tok), special=True)

    tokenizer_config = {
        "add_prefix_space": True,
        "added_tokens_decoder": added_tokens_decoder,
        "additional_special_tokens": extra,
        "clean_up_tokenization_spaces": True,
        "eos_token": "</s>",
        "extra_ids": EXTRA_IDS,
        "legacy": True,
        "model_max_length": MODEL_MAX_LENGTH,
        "pad_token": "<pad>",
        "sp_model_kwargs": {},
        "tokenizer_class": "T5Tokenizer",
        "unk_token": "<unk>",
    }
    special_tokens_map = {
        "additional_special_tokens": extra,
        "eos_token": _tok_entry("</s>"),
        "pad_token": _tok_entry("<pad>"),
        "unk_token": _tok_entry("<unk>"),
    }
    with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer_config, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(folder, "special_tokens_map.json"), "w", encoding="utf-8") as f:
        json.dump(special_tokens_map, f, indent=2, ensure_ascii=False)
        f.write("\n")
    with open(os.path.join(folder, "added_tokens.json"), "w", encoding="utf-8") as f:
        json.dump(extra_id, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")


def total_vocab(spiece: bytes) -> int:
    return spm.SentencePieceProcessor(model_proto=spiece).get_piece_size() + EXTRA_IDS
