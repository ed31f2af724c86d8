#!/usr/bin/env python
"""Golden LoRA cases: tiny LoRAs made with PEFT on the tiny cogvideox-5b transformer, and diffusers' outputs with them.

Writes only its own files, against the checkpoints and goldens already in tests/data:

- tests/data/lora/*.safetensors: two adapters, saved with ``CogVideoXPipeline.save_lora_weights`` (keys
  ``transformer.<module>.lora_A/lora_B.weight``, PEFT's LoraConfig as the ``lora_adapter_metadata`` entry of the
  safetensors header), and adapter ``a`` again in the other spellings diffusers' CogVideoX loader reads: without the
  ``transformer.`` prefix (loaded by diffusers with ``transformer.load_lora_adapter(..., prefix=None)``), the old
  diffusers spellings that ``convert_unet_state_dict_to_peft`` renames (``to_q_lora.down``, ``lora.up``), and
  without the metadata (then diffusers takes lora_alpha = rank, a scale of 1).
- tests/data/golden/lora_*.safetensors and lora_cases.json: one transformer forward (the inputs of
  transformer_cogvideox-5b_default.safetensors), text-to-video (the inputs and draws of pipeline_t2v_5b_dpm) and
  video-to-video (those of pipeline_v2v_5b_dpm) with adapter ``a`` alone and ``a``/``b`` mixed 0.7/0.4, unfused and
  fused (``fuse_lora``), and the same with no LoRA.

make_golden.py calls gen_lora last; on its own (from the repository root):

    /work/pyenv/bin/python scripts/golden/golden_lora.py      # or: make_golden.py --only lora
"""

import json
import os
import sys

sys.dont_write_bytecode = True  # keep scripts/golden free of __pycache__
if __name__ == "__main__":
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import PIL.Image  # noqa: E402
import torch  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import diffusers.models.autoencoders.vae as vae_mod  # noqa: E402
import diffusers.pipelines.cogvideo.pipeline_cogvideox_video2video as v2v_mod  # noqa: E402
import diffusers.schedulers.scheduling_dpm_cogvideox as dpm_mod  # noqa: E402
from diffusers import CogVideoXDPMScheduler, CogVideoXPipeline, CogVideoXVideoToVideoPipeline  # noqa: E402

from common import assert_close, check_nontrivial, randn, write_cases_json  # noqa: E402
from golden_pipelines import (  # noqa: E402
    EDIT_PROMPT,
    EDIT_STEPS,
    GUIDANCE,
    HEIGHT,
    T2V_PROMPT,
    WIDTH,
    _decode,
    _load_ddim_inversion_script,
    _dpm_plan,
    _dpm_queue,
    _load,
    _Queue,
    _save,
    _test_clip,
    edit_from_base,
)

VARIANT = "cogvideox-5b"
# name, rank, lora_alpha, target modules (PEFT suffix match), seed
ADAPTERS = [
    ("a", 2, 3, ["to_q", "to_k", "to_v", "to_out.0"], 61000),
    ("b", 4, 2, ["to_k", "ff.net.0.proj", "ff.net.2", "norm1.linear"], 62000),
]
# what each golden run sets: (label, [(adapter, weight)], fused)
SETTINGS = [
    ("none", [], False),
    ("one", [("a", 1.0)], False),
    ("mix", [("a", 0.7), ("b", 0.4)], False),
    ("one_fused", [("a", 1.0)], True),
    ("mix_fused", [("a", 0.7), ("b", 0.4)], True),
]
T2V = ("pipeline_t2v_5b_dpm", 4, True, 9, 31000)  # base case, steps, dynamic cfg, frames, seed
V2V = ("pipeline_v2v_5b_dpm", 4, 0.8, True, 9, 41000)  # base case, steps, strength, dynamic cfg, frames, seed
V2V_PROMPT = "a red fox running through snow, painted in watercolor"
EDIT_BASE = "pipeline_edit_5b"  # the edit case whose inputs the LoRA edit reuses
EDIT_SETTINGS = ["none", "one", "one_fused"]  # SETTINGS entries the edit runs: one adapter, unfused and fused
# the spellings of adapter `a` besides the saved one, as (file, note)
SPELLINGS = {
    "a_rank2.safetensors": "CogVideoXPipeline.save_lora_weights: transformer.<module>.lora_A/lora_B.weight and "
                           "PEFT's LoraConfig in the header's lora_adapter_metadata",
    "a_rank2_noprefix.safetensors": "the same keys without 'transformer.' (metadata keys too); diffusers reads it "
                                    "with transformer.load_lora_adapter(folder, weight_name=file, prefix=None)",
    "a_rank2_old.safetensors": "old diffusers spellings renamed by convert_unet_state_dict_to_peft: "
                               "attn1.to_q_lora.down/up.weight, attn1.to_out_lora.down/up.weight (-> to_out.0)",
    "a_rank2_nometa.safetensors": "no lora_adapter_metadata: diffusers takes lora_alpha = rank (scale 1)",
}


def _make_adapter(transformer, name, rank, alpha, targets, seed):
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=True)
    transformer.add_adapter(cfg, adapter_name=name)
    k = 0
    for pname, p in sorted(transformer.named_parameters()):
        if f".lora_A.{name}." in pname or f".lora_B.{name}." in pname:
            # lora_B is non-zero (PEFT's default init leaves it 0, which would hide every LoRA bug)
            p.data.copy_(randn(p.shape, seed + k, scale=0.3))
            k += 1
    sd = get_peft_model_state_dict(transformer, adapter_name=name)
    # sets as sorted lists: the saved JSON is then the same on every run (diffusers lists sets in hash order)
    meta = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.to_dict().items()}
    transformer.delete_adapters(name)
    return sd, meta


def _write_safetensors(path, tensors, header_metadata):
    """safetensors bytes in a fixed order (the library writes its __metadata__ map in hash order, so two runs would
    differ): header entries sorted by name, data in that order, the header padded with spaces to 8 bytes."""
    header = {"__metadata__": dict(sorted(header_metadata.items()))}
    data, off = [], 0
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous()
        assert t.dtype == torch.float32, (k, t.dtype)
        b = t.numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        data.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(data))
    # what was written reads back as written
    back = load_file(path)
    assert back.keys() == tensors.keys() and all(torch.equal(back[k], tensors[k]) for k in back), path


def _save_with_meta(path, tensors, meta, prefix):
    """A safetensors file as diffusers' write_lora_layers writes it (metadata keys prefixed like the tensors)."""
    header = {"format": "pt"}
    if meta is not None:
        m = {(f"{prefix}.{k}" if prefix else k): v for k, v in meta.items()}
        header["lora_adapter_metadata"] = json.dumps(m, indent=2, sort_keys=True)
    _write_safetensors(path, tensors, header)


def _old_spelling(key):
    for new, old in ((".to_out.0.lora_A", ".to_out_lora.down"), (".to_out.0.lora_B", ".to_out_lora.up"),
                     (".to_q.lora_A", ".to_q_lora.down"), (".to_q.lora_B", ".to_q_lora.up"),
                     (".to_k.lora_A", ".to_k_lora.down"), (".to_k.lora_B", ".to_k_lora.up"),
                     (".lora_A", ".lora.down"), (".lora_B", ".lora.up")):
        if new in key:
            return key.replace(new, old)
    raise AssertionError(key)


def _write_adapters(lora_dir, tiny_root):
    os.makedirs(lora_dir, exist_ok=True)
    pipe = _load(tiny_root, VARIANT, CogVideoXPipeline)
    files = {}
    for name, rank, alpha, targets, seed in ADAPTERS:
        sd, meta = _make_adapter(pipe.transformer, name, rank, alpha, targets, seed)
        fname = f"{name}_rank{rank}.safetensors"
        CogVideoXPipeline.save_lora_weights(lora_dir, transformer_lora_layers=sd, weight_name=fname,
                                            transformer_lora_adapter_metadata=meta)
        # the same bytes rewritten in a fixed order (see _write_safetensors)
        path = os.path.join(lora_dir, fname)
        with safe_open(path, "pt") as f:
            header = f.metadata()
        _write_safetensors(path, load_file(path), header)
        files[name] = fname
        if name == "a":
            _save_with_meta(os.path.join(lora_dir, "a_rank2_noprefix.safetensors"), sd, meta, None)
            old = {_old_spelling(f"transformer.{k}"): v for k, v in sd.items()}
            _save_with_meta(os.path.join(lora_dir, "a_rank2_old.safetensors"), old, meta, "transformer")
            _save_with_meta(os.path.join(lora_dir, "a_rank2_nometa.safetensors"),
                            {f"transformer.{k}": v for k, v in sd.items()}, None, None)
    # the saved file is what this script meant: prefixed keys and the metadata
    with safe_open(os.path.join(lora_dir, files["a"]), "pt") as f:
        keys, meta = list(f.keys()), json.loads(f.metadata()["lora_adapter_metadata"])
    assert all(k.startswith("transformer.") and ".lora_" in k for k in keys), keys
    assert meta["transformer.r"] == 2 and meta["transformer.lora_alpha"] == 3, meta
    return files


def _load_adapters(pipe, lora_dir, files):
    for name, fname in files.items():
        pipe.load_lora_weights(lora_dir, weight_name=fname, adapter_name=name)


def _apply(pipe, setting):
    """Set (and fuse) one SETTINGS entry; returns a function that undoes it."""
    _, pairs, fused = setting
    if not pairs:
        pipe.disable_lora()
        return pipe.enable_lora
    pipe.set_adapters([n for n, _ in pairs], [w for _, w in pairs])
    if fused:
        pipe.fuse_lora(components=["transformer"], adapter_names=[n for n, _ in pairs])
        return lambda: pipe.unfuse_lora(components=["transformer"])
    return lambda: None


def _transformer_case(golden_dir, tiny_root, lora_dir, files):
    base = load_file(os.path.join(golden_dir, f"transformer_{VARIANT}_default.safetensors"))
    pipe = _load(tiny_root, VARIANT, CogVideoXPipeline)
    _load_adapters(pipe, lora_dir, files)
    hs, ehs = base["hidden_states"], base["encoder_hidden_states"]
    _, f, _, h, w = hs.shape
    rope = pipe._prepare_rotary_positional_embeddings(h * 8, w * 8, f, torch.device("cpu"))
    out = {}
    for s in SETTINGS:
        undo = _apply(pipe, s)
        out[s[0]] = pipe.transformer(hidden_states=hs, encoder_hidden_states=ehs, timestep=base["timestep"],
                                     image_rotary_emb=rope, return_dict=False)[0]
        undo()
    # diffusers without LoRA reproduces the stored transformer golden, so the inputs are the ones stated
    assert_close(out["none"], base["output"], "no-LoRA forward vs the transformer golden", atol=1e-4)
    _check_changes(out, "transformer")

    # every spelling of adapter `a` loads to the same adapter (no-metadata: alpha = rank, so weight 3/2 = alpha/r)
    spelled = {}
    for fname in SPELLINGS:
        p = _load(tiny_root, VARIANT, CogVideoXPipeline)
        if "noprefix" in fname:
            p.transformer.load_lora_adapter(lora_dir, weight_name=fname, prefix=None, adapter_name="a")
        else:
            p.load_lora_weights(lora_dir, weight_name=fname, adapter_name="a")
        p.set_adapters(["a"], [1.5 if "nometa" in fname else 1.0])
        spelled[fname] = p.transformer(hidden_states=hs, encoder_hidden_states=ehs, timestep=base["timestep"],
                                       image_rotary_emb=rope, return_dict=False)[0]
        assert torch.equal(spelled[fname], out["one"]), f"{fname} loads differently"
    _save(os.path.join(golden_dir, "lora_transformer_5b.safetensors"), out)
    return {"name": "lora_transformer_5b", "file": "lora_transformer_5b.safetensors", "kind": "transformer",
            "variant": VARIANT, "inputs": f"transformer_{VARIANT}_default.safetensors",
            "outputs": {s[0]: s[0] for s in SETTINGS}}


def _check_changes(out, what):
    for k, v in out.items():
        check_nontrivial(v, f"{what} {k}")
        if k != "none":
            d = (v - out["none"]).abs().max().item()
            assert d > 1e-2 * max(1.0, out["none"].abs().max().item()), f"{what} {k}: LoRA changes little ({d})"
        if k.endswith("_fused"):
            d = (v - out[k[: -len("_fused")]]).abs().max().item()
            assert d < 1e-4 * max(1.0, v.abs().max().item()), f"{what} {k}: fused differs from unfused by {d}"


def _t2v_case(golden_dir, tiny_root, lora_dir, files):
    base_name, steps, dyn, num_frames, seed = T2V
    base = load_file(os.path.join(golden_dir, f"{base_name}.safetensors"))
    pipe = _load(tiny_root, VARIANT, CogVideoXPipeline)
    pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    _load_adapters(pipe, lora_dir, files)
    shape = tuple(base["latents_init"].shape)
    latents_init = randn(shape, seed)
    assert torch.equal(latents_init, base["latents_init"]), "t2v inputs differ from the base case"
    queue, used = _dpm_queue(_dpm_plan(pipe.scheduler.config, steps), shape, seed)
    for k, p in enumerate(used):
        assert torch.equal(queue[p], base[f"dpm_noise_{k}"]), k
    tensors, latents = {}, {}
    for s in SETTINGS:
        undo = _apply(pipe, s)
        with _Queue(dpm_mod, queue):
            lat = pipe(prompt=T2V_PROMPT, height=HEIGHT, width=WIDTH, num_frames=num_frames,
                       num_inference_steps=steps, guidance_scale=GUIDANCE, use_dynamic_cfg=dyn,
                       latents=latents_init.clone(), output_type="latent").frames
        undo()
        latents[s[0]] = lat
        tensors[f"{s[0]}.latents_final"] = lat
        if s[0] == "mix":  # decoded frames of one setting: the latents are what LoRA changes
            tensors[f"{s[0]}.video_u8"] = _decode(pipe, lat)[1]
    assert_close(latents["none"], base["latents_final"], "t2v without LoRA vs the base golden", atol=1e-4)
    _check_changes(latents, "t2v")
    _save(os.path.join(golden_dir, "lora_t2v_5b.safetensors"), tensors)
    return {"name": "lora_t2v_5b", "file": "lora_t2v_5b.safetensors", "kind": "t2v", "variant": VARIANT,
            "inputs": f"{base_name}.safetensors (prompt, latents_init, dpm_noise_*; see pipeline_cases.json)",
            "steps": steps, "use_dynamic_cfg": dyn, "num_frames": num_frames, "prompt": T2V_PROMPT}


def _v2v_case(golden_dir, tiny_root, lora_dir, files):
    from golden_v2v import _Draws, _dpm_plan as v2v_plan

    base_name, steps, strength, dyn, num_frames, seed = V2V
    base = load_file(os.path.join(golden_dir, f"{base_name}.safetensors"))
    pipe = _load(tiny_root, VARIANT, CogVideoXVideoToVideoPipeline)
    pipe.scheduler = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    _load_adapters(pipe, lora_dir, files)
    frames_u8 = _test_clip(num_frames, HEIGHT, WIDTH, seed + 1)
    assert torch.equal(frames_u8, base["frames_u8"])
    video_in = [PIL.Image.fromarray(x.numpy()) for x in frames_u8]
    posterior, noise = base["posterior_noise"], base["noise"]
    ref = CogVideoXDPMScheduler.from_config(pipe.scheduler.config)
    ref.set_timesteps(steps)
    init = min(int(steps * strength), steps)
    ts = [int(t) for t in ref.timesteps][steps - init:]
    queue, used = _dpm_queue(v2v_plan(ref, ts), tuple(noise.shape), seed)
    for k, p in enumerate(used):
        assert torch.equal(queue[p], base[f"dpm_noise_{k}"]), k
    tensors, latents = {}, {}
    for s in SETTINGS:
        undo = _apply(pipe, s)
        with _Draws({vae_mod: [posterior], v2v_mod: [noise], dpm_mod: queue}):
            lat = pipe(video=video_in, prompt=V2V_PROMPT, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                       strength=strength, guidance_scale=GUIDANCE, use_dynamic_cfg=dyn,
                       output_type="latent").frames
        undo()
        latents[s[0]] = lat
        tensors[f"{s[0]}.latents_final"] = lat
        if s[0] == "mix":  # decoded frames of one setting: the latents are what LoRA changes
            tensors[f"{s[0]}.video_u8"] = _decode(pipe, lat)[1]
    assert_close(latents["none"], base["latents_final"], "v2v without LoRA vs the base golden", atol=1e-4)
    _check_changes(latents, "v2v")
    _save(os.path.join(golden_dir, "lora_v2v_5b.safetensors"), tensors)
    return {"name": "lora_v2v_5b", "file": "lora_v2v_5b.safetensors", "kind": "v2v", "variant": VARIANT,
            "inputs": f"{base_name}.safetensors (frames_u8, posterior_noise, noise, dpm_noise_*; see "
                      "pipeline_v2v_cases.json)", "steps": steps, "strength": strength, "prompt": V2V_PROMPT}


def _edit_case(golden_dir, tiny_root, lora_dir, files, script):
    """The DDIM-inversion edit (the CogVideo script's functions, as golden_pipelines.py's edit cases) with adapter
    ``a`` active for both the inversion and the reconstruction, unfused and fused."""
    base = load_file(os.path.join(golden_dir, f"{EDIT_BASE}.safetensors"))
    pipe = _load(tiny_root, VARIANT, CogVideoXPipeline)
    _load_adapters(pipe, lora_dir, {"a": files["a"]})
    tensors, latents, trajectories = {}, {}, {}
    for s in SETTINGS:
        if s[0] not in EDIT_SETTINGS:
            continue
        undo = _apply(pipe, s)
        trajectories[s[0]], latents[s[0]] = edit_from_base(pipe, script, base, EDIT_STEPS)
        undo()
        if s[0] != "none":
            tensors[f"{s[0]}.latents_final"] = latents[s[0]]
            tensors[f"{s[0]}.inverse_trajectory"] = trajectories[s[0]]
    assert_close(latents["none"], base["latents_final"], "edit without LoRA vs the base golden", atol=1e-4)
    assert_close(trajectories["none"], base["inverse_trajectory"], "inversion without LoRA vs the base golden",
                 atol=1e-4)
    _check_changes(latents, "edit")
    _check_changes({k: v[-1] for k, v in trajectories.items()}, "inversion")
    _save(os.path.join(golden_dir, "lora_edit_5b.safetensors"), tensors)
    return {"name": "lora_edit_5b", "file": "lora_edit_5b.safetensors", "kind": "edit", "variant": VARIANT,
            "inputs": f"{EDIT_BASE}.safetensors (frames_u8, posterior_noise, recon_noise; see pipeline_cases.json)",
            "steps": EDIT_STEPS, "guidance_scale": GUIDANCE, "prompt": EDIT_PROMPT,
            "settings": [s for s in EDIT_SETTINGS if s != "none"],
            "lora": "adapter a active for the inversion and the reconstruction (reference attention included)"}


@torch.no_grad()
def gen_lora_edit(golden_dir, tiny_root, lora_dir):
    """The edit case alone (lora_edit_5b.safetensors, lora_edit_cases.json), against tests/data/lora's adapters.
    Needs the DDIM-inversion script (golden_pipelines.py); without it, nothing is written and 0 is returned."""
    script, path = _load_ddim_inversion_script()
    if script is None:
        import warnings

        warnings.warn(f"DDIM-inversion script not found at {path}: skipping lora_edit_5b")
        return 0
    files = {name: f"{name}_rank{rank}.safetensors" for name, rank, *_ in ADAPTERS}
    case = _edit_case(golden_dir, tiny_root, lora_dir, files, script)
    settings = [{"name": n, "adapters": [[a, w] for a, w in p], "fused": f} for n, p, f in SETTINGS
                if n in case["settings"]]
    write_cases_json(os.path.join(golden_dir, "lora_edit_cases.json"),
                     {"generator": "scripts/golden/golden_lora.py (gen_lora_edit)", "notes": NOTES + [
                         "Edit: each setting's <setting>.inverse_trajectory (the inversion with the adapter active) "
                         "and <setting>.latents_final (the reconstruction from recon_noise); without LoRA both "
                         "are within 1e-4 of the base edit case's."],
                      "settings": settings}, [case])
    return 1


NOTES = [
    "Scaling as PEFT applies it: each adapter adds weight * lora_alpha / r * lora_B(lora_A(x)) to its base linear "
    "layer's output, adapters in the order given to set_adapters; r is the tensor's rank. lora_alpha (and "
    "alpha_pattern / rank_pattern) come from the header's lora_adapter_metadata, whose keys carry the same "
    "'transformer.' prefix as the tensors; a file without it gets lora_alpha = r.",
    "Fused (fuse_lora): W += weight * lora_alpha / r * (lora_B @ lora_A) per adapter in order, then the base layer "
    "alone runs.",
    "Each setting's tensors are <setting>.latents_final (pipelines; mix.video_u8 too) or <setting> (transformer "
    "output); 'none' is the model without LoRA, within 1e-4 of the base case's golden (the same inputs; goldens "
    "made on another CPU differ in the last bits, tests/data/README.md).",
]


@torch.no_grad()
def gen_lora(golden_dir, tiny_root, lora_dir):
    files = _write_adapters(lora_dir, tiny_root)
    cases = [_transformer_case(golden_dir, tiny_root, lora_dir, files),
             _t2v_case(golden_dir, tiny_root, lora_dir, files),
             _v2v_case(golden_dir, tiny_root, lora_dir, files)]
    adapters = [{"name": n, "file": files[n], "rank": r, "lora_alpha": a, "target_modules": t}
                for n, r, a, t, _ in ADAPTERS]
    settings = [{"name": n, "adapters": [[a, w] for a, w in p], "fused": f} for n, p, f in SETTINGS]
    write_cases_json(os.path.join(golden_dir, "lora_cases.json"),
                     {"generator": "scripts/golden/golden_lora.py", "notes": NOTES, "adapters": adapters,
                      "spellings": SPELLINGS, "settings": settings}, cases)
    return len(cases) + gen_lora_edit(golden_dir, tiny_root, lora_dir)


def main():
    import warnings

    import diffusers
    import peft

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if diffusers.__version__ != "0.42.1":
        warnings.warn(f"diffusers {diffusers.__version__} installed, golden files were made with 0.42.1")
    if peft.__version__ != "0.22.0":
        warnings.warn(f"peft {peft.__version__} installed, golden files were made with 0.22.0")
    repo = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
    data = os.path.join(repo, "tests", "data")
    args = (os.path.join(data, "golden"), os.path.join(data, "tiny"), os.path.join(data, "lora"))
    if "--edit" in sys.argv:  # the edit case alone, against the adapters already in tests/data/lora
        print(f"lora edit: {gen_lora_edit(*args)} cases")
        return
    n = gen_lora(*args)
    print(f"lora: {n} cases")


if __name__ == "__main__":
    main()
