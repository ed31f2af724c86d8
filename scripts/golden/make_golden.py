#!/usr/bin/env python
"""Regenerate tests/data (tiny CogVideoX checkpoints + golden outputs) for libcogvideo.

Run from the repository root:

    /work/pyenv/bin/python scripts/golden/make_golden.py
    /work/pyenv/bin/python scripts/golden/make_golden.py --only cache   # only the cache_* files, against tiny/

Deterministic: fixed seeds, one CPU thread. Everything under tests/data/tiny and tests/data/golden is deleted and
rewritten (tests/data/README.md is left alone).

    make_golden.py --only lora     # only golden_lora.py's files (tests/data/lora, golden/lora_*), against tiny/
"""

import os
import shutil
import sys
import time
import warnings

sys.dont_write_bytecode = True  # keep scripts/golden free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import CogVideoXImageToVideoPipeline, CogVideoXPipeline  # noqa: E402

from build_tiny import PIPELINE_CLASS, VARIANTS, build_all  # noqa: E402
from golden_cache import gen_cache  # noqa: E402
from golden_frames import gen_frames  # noqa: E402
from golden_lora import gen_lora  # noqa: E402
from golden_models import gen_t5, gen_tokenizer, gen_transformer, write_tokenizer_json_layout  # noqa: E402
from golden_pipelines import gen_pipelines  # noqa: E402
from golden_sched import gen_schedulers  # noqa: E402
from golden_v2v import gen_v2v  # noqa: E402
from golden_vae import gen_vae  # noqa: E402
from tokenizer_build import train_spiece  # noqa: E402

EXPECTED = {"torch": "2.15.0", "diffusers": "0.42.1", "transformers": "5.23.0"}


def load_pipeline(folder, variant):
    cls = CogVideoXImageToVideoPipeline if PIPELINE_CLASS[variant] == "CogVideoXImageToVideoPipeline" \
        else CogVideoXPipeline
    pipe = cls.from_pretrained(folder, dtype=torch.float32)
    for name in ("transformer", "vae", "text_encoder"):
        m = getattr(pipe, name)
        m.eval()
        dtypes = {p.dtype for p in m.parameters()}
        assert dtypes == {torch.float32}, (variant, name, dtypes)
        # (the 2b transformer's non-persistent sincos buffer stays float64; it is cast to f32 when added)
    return pipe


def main():
    t0 = time.time()
    repo = os.path.abspath(os.path.join(HERE, "..", ".."))
    data = os.path.join(repo, "tests", "data")
    only = sys.argv[sys.argv.index("--only") + 1] if "--only" in sys.argv else None
    if only not in (None, "lora", "cache"):
        sys.exit(f"--only {only}: the generators that run alone are: lora, cache")
    if only == "cache":
        n = gen_cache(os.path.join(data, "golden"), os.path.join(data, "tiny"))
        print(f"[{time.time() - t0:5.1f}s] cache: {n} cases")
        return
    for mod, want in EXPECTED.items():
        have = {"torch": torch.__version__, "diffusers": diffusers.__version__,
                "transformers": transformers.__version__}[mod].split("+")[0]
        if have != want:
            warnings.warn(f"{mod} {have} installed, golden files were made with {want}")

    tiny = os.path.join(data, "tiny")
    golden = os.path.join(data, "golden")
    lora = os.path.join(data, "lora")
    if only == "lora":
        n = gen_lora(golden, tiny, lora)
        print(f"[{time.time() - t0:5.1f}s] lora: {n} cases")
        return
    for d in (tiny, golden):
        if os.path.isdir(d):
            shutil.rmtree(d)
    os.makedirs(tiny)
    os.makedirs(golden)

    # 1. tokenizer model. Training is deterministic (checked: byte-identical across runs); the committed copy
    #    scripts/golden/spiece.model is the reference. If a different sentencepiece build trains a different model,
    #    the committed copy is used instead so that the golden files do not change.
    spiece = train_spiece()
    ref = os.path.join(HERE, "spiece.model")
    if os.path.exists(ref):
        with open(ref, "rb") as f:
            stored = f.read()
        if stored != spiece:
            warnings.warn("freshly trained spiece.model differs from scripts/golden/spiece.model; using the stored one")
            spiece = stored
    else:
        with open(ref, "wb") as f:
            f.write(spiece)

    # 2. tiny checkpoints
    vocab_size = build_all(tiny, spiece)
    json_tok = os.path.join(tiny, "tokenizer-json")
    write_tokenizer_json_layout(os.path.join(tiny, "cogvideox-5b", "tokenizer"), json_tok)
    print(f"[{time.time() - t0:5.1f}s] built tiny checkpoints (T5 vocab_size {vocab_size})")

    # 3. reload every pipeline from disk in float32 (half-precision weights are upcast here)
    pipes = {v: load_pipeline(os.path.join(tiny, v), v) for v in VARIANTS}
    print(f"[{time.time() - t0:5.1f}s] reloaded pipelines")

    n, n_special = gen_tokenizer(golden, os.path.join(tiny, "cogvideox-5b", "tokenizer"), json_tok, spiece)
    print(f"[{time.time() - t0:5.1f}s] tokenizer: {n} prompts ({n_special} differ from raw sentencepiece)")
    gen_t5(golden, pipes["cogvideox-5b"], "cogvideox-5b",
           other_pipes=[pipes["cogvideox-2b"], pipes["cogvideox1.5-5b"]])
    print(f"[{time.time() - t0:5.1f}s] t5")
    n = gen_transformer(golden, pipes)
    print(f"[{time.time() - t0:5.1f}s] transformer: {n} cases")
    n = gen_schedulers(golden, tiny)
    print(f"[{time.time() - t0:5.1f}s] schedulers: {n} sequences")
    n = gen_vae(golden, pipes)
    print(f"[{time.time() - t0:5.1f}s] vae: {n} cases")
    gen_frames(golden)
    print(f"[{time.time() - t0:5.1f}s] frames: pre/postprocessing cases")
    n, n_skipped = gen_pipelines(golden, tiny)
    print(f"[{time.time() - t0:5.1f}s] pipelines: {n} cases" + (f" ({n_skipped} skipped)" if n_skipped else ""))
    n = gen_v2v(golden, tiny)
    print(f"[{time.time() - t0:5.1f}s] video-to-video: {n} cases")
    n = gen_lora(golden, tiny, lora)
    print(f"[{time.time() - t0:5.1f}s] lora: {n} cases")
    n = gen_cache(golden, tiny)
    print(f"[{time.time() - t0:5.1f}s] cache: {n} cases")

    total = 0
    for root, _, files in os.walk(data):
        total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    print(f"done in {time.time() - t0:.1f}s; tests/data is {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
