//! LoRA: parity with diffusers 0.42.1 + PEFT on the tiny cogvideox-5b
//! (tests/data/golden/lora_cases.json and lora_edit_cases.json, adapters in
//! tests/data/lora), the
//! key spellings diffusers accepts, weight 0 and unfuse as exact no-ops,
//! every residency mode, the per-call snapshot and its report, and hostile
//! files (through Rust and C).
//!
//! Tolerances are those of the LoRA-free parity tests: 1e-4 x max(1, scale)
//! for a forward pass and for pipeline latents.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use cogvideo::checkpoint::Checkpoint;
use cogvideo::frames::{
    FrameMut, FrameRef, PixelFormat, ResizeMode, frames_to_video, video_to_frames,
};
use cogvideo::loaders::lora_pipeline::{LoraAdapter, transformer_lora};
use cogvideo::models::transformers::{CogVideoXTransformer3DModel, ForwardOptions};
use cogvideo::pipelines::{
    DeviceKind, EditOptions, GenerateOptions, InvertOptions, LoadOptions, NoiseOptions, Pipeline,
    Progress, Residency, SamplingOptions, SchedulerKind, Stage, VideoToVideoOptions,
};
use common::{assert_close, data_dir, load_json, load_tensors, tiny};

const VARIANT: &str = "cogvideox-5b";

fn lora_file(name: &str) -> PathBuf {
    data_dir().join("lora").join(name)
}

/// A golden setting: its name, the adapters with weights, fused or not.
type Setting = (String, Vec<(String, f64)>, bool);

fn settings() -> Vec<Setting> {
    let cases = load_json("lora_cases.json");
    cases["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let adapters = s["adapters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
                .collect();
            (
                s["name"].as_str().unwrap().to_string(),
                adapters,
                s["fused"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn adapter_files() -> HashMap<String, PathBuf> {
    let cases = load_json("lora_cases.json");
    cases["adapters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                lora_file(a["file"].as_str().unwrap()),
            )
        })
        .collect()
}

struct Forward {
    model: CogVideoXTransformer3DModel,
    inputs: HashMap<String, Tensor>,
}

impl Forward {
    fn new(streamed: bool) -> Self {
        let ckpt = Checkpoint::open(tiny(VARIANT)).unwrap();
        let model = CogVideoXTransformer3DModel::from_checkpoint_with(
            &ckpt,
            DType::F32,
            &Device::Cpu,
            streamed,
        )
        .unwrap();
        let inputs = load_tensors(&format!("transformer_{VARIANT}_default.safetensors"));
        Self { model, inputs }
    }

    /// The forward pass with `adapters` (files and weights), fused or not.
    fn run(&self, adapters: &[(PathBuf, f64)], fused: bool) -> Tensor {
        let cfg = self.model.config();
        let read: Vec<LoraAdapter> = adapters
            .iter()
            .map(|(p, _)| LoraAdapter::from_file(p, cfg).unwrap())
            .collect();
        let pairs: Vec<(&LoraAdapter, f64)> = read
            .iter()
            .zip(adapters)
            .map(|(a, (_, w))| (a, *w))
            .collect();
        let mut lora =
            transformer_lora(&pairs, cfg.num_layers, DType::F32, &Device::Cpu, fused).unwrap();
        lora.fuse_kept(&self.model).unwrap();
        let hidden = &self.inputs["hidden_states"];
        let (_, f, _, h, w) = hidden.dims5().unwrap();
        let tables = self.model.rotary_tables(h, w, f).unwrap();
        let rope = self.model.prepare_rotary(tables.as_ref()).unwrap();
        let ts: Vec<f32> = self.inputs["timestep"]
            .to_dtype(DType::F64)
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let opts = ForwardOptions {
            rope: rope.as_ref(),
            lora: (!adapters.is_empty()).then_some(&lora),
            ..Default::default()
        };
        self.model
            .forward_with(hidden, &self.inputs["encoder_hidden_states"], &ts, opts)
            .unwrap()
    }
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

#[test]
fn transformer_with_lora_matches_diffusers() {
    let golden = load_tensors("lora_transformer_5b.safetensors");
    let files = adapter_files();
    for streamed in [false, true] {
        let fw = Forward::new(streamed);
        for (name, adapters, fused) in settings() {
            let with: Vec<(PathBuf, f64)> = adapters
                .iter()
                .map(|(a, w)| (files[a].clone(), *w))
                .collect();
            let out = fw.run(&with, fused);
            assert_close(
                &format!("{name} (streamed {streamed})"),
                &out,
                &golden[&name],
                1e-4,
            );
        }
    }
}

#[test]
fn every_key_spelling_loads_the_same_adapter() {
    let fw = Forward::new(false);
    let reference = bits(&fw.run(&[(lora_file("a_rank2.safetensors"), 1.0)], false));
    // without metadata lora_alpha = r, so weight alpha / r = 3 / 2 gives the same scale
    for (file, weight) in [
        ("a_rank2_noprefix.safetensors", 1.0),
        ("a_rank2_old.safetensors", 1.0),
        ("a_rank2_nometa.safetensors", 1.5),
    ] {
        let out = bits(&fw.run(&[(lora_file(file), weight)], false));
        assert!(out == reference, "{file} differs from a_rank2.safetensors");
    }
    let nometa = bits(&fw.run(&[(lora_file("a_rank2_nometa.safetensors"), 1.0)], false));
    assert!(nometa != reference, "the metadata's lora_alpha is read");
}

#[test]
fn weight_zero_is_no_lora_bit_for_bit() {
    let fw = Forward::new(false);
    let none = bits(&fw.run(&[], false));
    let files = adapter_files();
    let zero = bits(&fw.run(
        &[(files["a"].clone(), 0.0), (files["b"].clone(), 0.0)],
        false,
    ));
    assert!(zero == none, "weight 0 changed the output");
}

/// Golden `[T, H, W, 3]` u8 frames as a `[1, 3, T, H, W]` model video.
fn video_from_u8(t: &Tensor) -> Tensor {
    let (n, h, w, _) = t.dims4().unwrap();
    let bytes = t.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let frames: Vec<FrameRef> = bytes
        .chunks_exact(h * w * 3)
        .map(|b| FrameRef::packed(b, w, h, PixelFormat::Rgb8).unwrap())
        .collect();
    assert_eq!(frames.len(), n);
    frames_to_video(&frames, h, w, ResizeMode::Stretch, &Device::Cpu).unwrap()
}

/// A `[1, 3, T, H, W]` video as packed RGB bytes, frame after frame.
fn u8_frames(video: &Tensor) -> Vec<u8> {
    let (_, _, t, h, w) = video.dims5().unwrap();
    let mut bytes = vec![0u8; t * h * w * 3];
    let mut frames: Vec<FrameMut> = bytes
        .chunks_exact_mut(h * w * 3)
        .map(|b| FrameMut::packed(b, w, h, PixelFormat::Rgb8).unwrap())
        .collect();
    video_to_frames(video, &mut frames, ResizeMode::Stretch).unwrap();
    drop(frames);
    bytes
}

fn cpu_f32(residency: Residency) -> LoadOptions {
    LoadOptions {
        device: DeviceKind::Cpu,
        residency,
        ..Default::default()
    }
}

fn draws(g: &HashMap<String, Tensor>, first: &[&str]) -> NoiseOptions {
    let mut list: Vec<Tensor> = first.iter().map(|k| g[*k].clone()).collect();
    let mut i = 0;
    while let Some(t) = g.get(&format!("dpm_noise_{i}")) {
        list.push(t.clone());
        i += 1;
    }
    NoiseOptions::with_draws(0, &list).unwrap()
}

fn t2v_options() -> GenerateOptions {
    let case = &load_json("lora_cases.json")["cases"][1];
    assert_eq!(case["kind"], "t2v");
    let base = load_tensors("pipeline_t2v_5b_dpm.safetensors");
    GenerateOptions {
        sampling: SamplingOptions {
            prompt: case["prompt"].as_str().unwrap().into(),
            negative_prompt: String::new(),
            steps: case["steps"].as_u64().unwrap() as usize,
            guidance_scale: 6.0,
            dynamic_cfg: case["use_dynamic_cfg"].as_bool().unwrap(),
            scheduler: SchedulerKind::Dpm,
            noise: draws(&base, &["latents_init"]),
            ..Default::default()
        },
        height: Some(64),
        width: Some(96),
        num_frames: Some(9),
    }
}

fn set(p: &Pipeline, adapters: &[(String, f64)], fused: bool) {
    let pairs: Vec<(&str, f64)> = adapters.iter().map(|(n, w)| (n.as_str(), *w)).collect();
    p.set_adapters(&pairs).unwrap();
    if fused {
        p.fuse_lora();
    } else {
        p.unfuse_lora();
    }
}

fn load_adapters(p: &Pipeline) {
    for (name, file) in adapter_files() {
        p.load_lora(file, &name).unwrap();
    }
}

#[test]
fn text_to_video_with_lora_matches_diffusers_in_every_residency() {
    let golden = load_tensors("lora_t2v_5b.safetensors");
    let opts = t2v_options();
    for residency in [
        Residency::Resident,
        Residency::Streamed,
        Residency::PerComponent,
    ] {
        let p = Pipeline::load(tiny(VARIANT), &cpu_f32(residency)).unwrap();
        load_adapters(&p);
        for (name, adapters, fused) in settings() {
            // the other modes run the two settings that cover both paths
            if residency != Residency::Resident && name != "mix" && name != "mix_fused" {
                continue;
            }
            set(&p, &adapters, fused);
            let out = p.generate_video(&opts, &mut Progress::none()).unwrap();
            assert_close(
                &format!("t2v {name} ({residency:?})"),
                &out.latents,
                &golden[&format!("{name}.latents_final")],
                1e-4,
            );
        }
    }
}

#[test]
fn video_to_video_with_lora_matches_diffusers() {
    let golden = load_tensors("lora_v2v_5b.safetensors");
    let case = &load_json("lora_cases.json")["cases"][2];
    assert_eq!(case["kind"], "v2v");
    let base = load_tensors("pipeline_v2v_5b_dpm.safetensors");
    let opts = VideoToVideoOptions {
        sampling: SamplingOptions {
            prompt: case["prompt"].as_str().unwrap().into(),
            negative_prompt: String::new(),
            steps: case["steps"].as_u64().unwrap() as usize,
            guidance_scale: 6.0,
            dynamic_cfg: true,
            scheduler: SchedulerKind::Dpm,
            noise: draws(&base, &["posterior_noise", "noise"]),
            ..Default::default()
        },
        strength: case["strength"].as_f64().unwrap(),
    };
    let video = video_from_u8(&base["frames_u8"]);
    let p = Pipeline::load(tiny(VARIANT), &cpu_f32(Residency::Resident)).unwrap();
    load_adapters(&p);
    for (name, adapters, fused) in settings() {
        set(&p, &adapters, fused);
        let out = p
            .video_to_video(&video, &opts, &mut Progress::none())
            .unwrap();
        assert_close(
            &format!("v2v {name}"),
            &out.latents,
            &golden[&format!("{name}.latents_final")],
            1e-4,
        );
        if name == "mix" {
            let got = u8_frames(&out.video);
            let want = golden["mix.video_u8"]
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap();
            let worst = got.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max();
            assert!(worst <= Some(1), "v2v mix frames differ by {worst:?}");
        }
    }
}

/// Prompt editing (DDIM inversion, then the reconstruction with reference
/// attention) with one adapter, unfused and fused, against diffusers +
/// PEFT running the CogVideo script (lora_edit_cases.json): the adapter
/// applies to the inversion and to the reconstruction.
#[test]
fn edit_with_lora_matches_diffusers() {
    let cases = load_json("lora_edit_cases.json");
    let case = &cases["cases"][0];
    assert_eq!(case["kind"], "edit");
    let golden = load_tensors(case["file"].as_str().unwrap());
    let base = load_tensors("pipeline_edit_5b.safetensors");
    let steps = case["steps"].as_u64().unwrap() as usize;
    let video = video_from_u8(&base["frames_u8"]);
    let p = Pipeline::load(tiny(VARIANT), &cpu_f32(Residency::Resident)).unwrap();
    p.load_lora(lora_file("a_rank2.safetensors"), "a").unwrap();
    let mut names = Vec::new();
    for s in cases["settings"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        names.push(name.to_string());
        let adapters: Vec<(String, f64)> = s["adapters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_f64().unwrap()))
            .collect();
        set(&p, &adapters, s["fused"].as_bool().unwrap());
        let inv_opts = InvertOptions {
            steps,
            noise: NoiseOptions::with_draws(0, &[base["posterior_noise"].clone()]).unwrap(),
            ..Default::default()
        };
        let inversion = p
            .invert_video(&video, &inv_opts, &mut Progress::none())
            .unwrap();
        let want = &golden[&format!("{name}.inverse_trajectory")];
        for (i, got) in inversion.trajectory().iter().enumerate() {
            let w = want.get(i).unwrap();
            assert_close(&format!("edit {name} inversion step {i}"), got, &w, 1e-4);
        }
        let opts = EditOptions {
            prompt: case["prompt"].as_str().unwrap().into(),
            guidance_scale: case["guidance_scale"].as_f64().unwrap(),
            noise: NoiseOptions::with_draws(0, &[base["recon_noise"].clone()]).unwrap(),
            ..Default::default()
        };
        let mut progress = Progress::none();
        let out = p
            .edit_with_prompt(&inversion, &opts, &mut progress)
            .unwrap();
        let report = progress.lora_report().unwrap();
        assert_eq!(report.setting.adapters, adapters, "edit {name}: reported");
        assert_eq!(report.setting.fused, s["fused"].as_bool().unwrap());
        assert_eq!(report.hash, p.lora_hash());
        assert_close(
            &format!("edit {name}"),
            &out.latents,
            &golden[&format!("{name}.latents_final")],
            1e-4,
        );
    }
    assert_eq!(names, ["one", "one_fused"]);
}

/// The README's bound on LoRA memory (section "LoRA"), from the adapters'
/// ranks and modules (lora_cases.json) and the tiny model's sizes: each
/// loaded adapter in f32, `r x (in + out)` per adapted layer, the active
/// ones again in the compute dtype (f32 here), and fused into the kept
/// transformer a copy of every adapted layer's weight.
fn readme_lora_bound(fused: bool) -> u64 {
    let (dim, temb, blocks) = (32u64, 16u64, 2u64);
    let features = |module: &str| match module {
        "to_q" | "to_k" | "to_v" | "to_out.0" => (dim, dim),
        "ff.net.0.proj" => (dim, 4 * dim),
        "ff.net.2" => (4 * dim, dim),
        "norm1.linear" | "norm2.linear" => (temb, 6 * dim),
        other => panic!("{other}"),
    };
    let cases = load_json("lora_cases.json");
    let mut adapters = 0;
    let mut layers = std::collections::BTreeSet::new();
    for a in cases["adapters"].as_array().unwrap() {
        let r = a["rank"].as_u64().unwrap();
        for m in a["target_modules"].as_array().unwrap() {
            let (i, o) = features(m.as_str().unwrap());
            adapters += blocks * r * (i + o) * 4;
            layers.insert(m.as_str().unwrap().to_string());
        }
    }
    let copies: u64 = layers
        .iter()
        .map(|m| {
            let (i, o) = features(m);
            blocks * i * o * 4
        })
        .sum();
    2 * adapters + if fused { copies } else { 0 }
}

/// What the adapters hold during a call (the allocations behind the loaded
/// adapters, their compute copies and the fused layers) stays within the
/// memory estimate's share for LoRA, which is the README's bound, unfused
/// and fused, for generation and an edit.
#[test]
fn lora_memory_stays_under_the_estimate() {
    let mut opts = t2v_options();
    opts.sampling.steps = 1;
    opts.sampling.noise = NoiseOptions::default();
    let p = Pipeline::load(tiny(VARIANT), &cpu_f32(Residency::Resident)).unwrap();
    assert_eq!(p.lora_estimate_bytes(), 0);
    load_adapters(&p);
    for fused in [false, true] {
        set(&p, &[("a".into(), 0.7), ("b".into(), 0.4)], fused);
        let estimate = p.lora_estimate_bytes();
        assert_eq!(estimate, readme_lora_bound(fused), "the README's bound");
        let mut progress = Progress::none();
        p.generate_latents(&opts, &mut progress).unwrap();
        let held = progress.lora_report().unwrap().held_bytes;
        assert!(
            held <= estimate && held * 2 >= estimate,
            "fused {fused}: held {held} bytes, estimate {estimate}"
        );
        // an edit holds the same
        let video = Tensor::zeros((1, 3, 9, 64, 96), DType::F32, &Device::Cpu).unwrap();
        let inv = InvertOptions {
            steps: 1,
            ..Default::default()
        };
        let mut progress = Progress::none();
        p.invert_video(&video, &inv, &mut progress).unwrap();
        assert_eq!(progress.lora_report().unwrap().held_bytes, held);
    }
}

#[test]
fn unfuse_and_removal_restore_the_base_model_bit_for_bit() {
    let mut opts = t2v_options();
    opts.sampling.steps = 2;
    opts.sampling.noise = NoiseOptions::default();
    let p = Pipeline::load(tiny(VARIANT), &cpu_f32(Residency::Resident)).unwrap();
    let base = bits(
        &p.generate_video(&opts, &mut Progress::none())
            .unwrap()
            .latents,
    );
    assert_eq!(p.lora_hash(), 0);
    load_adapters(&p);
    set(&p, &[("a".into(), 0.7), ("b".into(), 0.4)], true);
    let fused_hash = p.lora_hash();
    let fused = bits(
        &p.generate_video(&opts, &mut Progress::none())
            .unwrap()
            .latents,
    );
    assert!(fused != base, "the fused adapters change the output");
    p.unfuse_lora();
    assert_ne!(
        p.lora_hash(),
        fused_hash,
        "fused and unfused differ in the last bits"
    );
    p.set_adapters(&[]).unwrap();
    assert_eq!(p.lora_hash(), 0);
    let after = bits(
        &p.generate_video(&opts, &mut Progress::none())
            .unwrap()
            .latents,
    );
    assert!(after == base, "unfusing did not restore the base model");
    set(&p, &[("a".into(), 0.0)], false);
    assert_eq!(p.lora_hash(), 0, "weight 0 is no LoRA");
    let zero = bits(
        &p.generate_video(&opts, &mut Progress::none())
            .unwrap()
            .latents,
    );
    assert!(zero == base, "weight 0 changed the pipeline's output");
    p.remove_lora("a").unwrap();
    p.remove_lora("b").unwrap();
    assert!(p.loaded_loras().is_empty());
    assert_eq!(p.lora_setting().adapters, vec![]);
}

#[test]
fn a_call_keeps_the_setting_it_started_with() {
    let golden = load_tensors("lora_t2v_5b.safetensors");
    let opts = t2v_options();
    let p = Pipeline::load(tiny(VARIANT), &cpu_f32(Residency::Resident)).unwrap();
    load_adapters(&p);
    set(&p, &[("a".into(), 1.0)], false);
    let mut changed = false;
    let mut cb = |stage, done, _| {
        if stage == Stage::Denoise && done == 1 && !changed {
            p.set_adapters(&[("b", 1.0)]).unwrap();
            p.fuse_lora();
            changed = true;
        }
        true
    };
    let mut progress = Progress::new(&mut cb);
    let out = p.generate_video(&opts, &mut progress).unwrap();
    let report = progress.lora_report().unwrap().clone();
    drop(progress);
    assert!(changed, "the setting was changed during the call");
    // the call reports the setting it ran with, not the one changed meanwhile
    assert_eq!(report.setting.adapters, vec![("a".to_string(), 1.0)]);
    assert!(!report.setting.fused);
    assert_ne!(report.hash, 0);
    assert_ne!(report.hash, p.lora_hash());
    assert_close(
        "t2v one, changed mid-call",
        &out.latents,
        &golden["one.latents_final"],
        1e-4,
    );
    assert_eq!(
        p.lora_setting().adapters,
        vec![("b".to_string(), 1.0)],
        "the change applies from the next call"
    );
}

#[test]
fn adapter_names_and_settings_are_checked() {
    let p = Pipeline::load(tiny(VARIANT), &cpu_f32(Residency::Resident)).unwrap();
    let a = lora_file("a_rank2.safetensors");
    p.load_lora(&a, "a").unwrap();
    assert_eq!(p.lora_setting().adapters, vec![("a".to_string(), 1.0)]);
    for (err, what) in [
        (p.load_lora(&a, "a").unwrap_err(), "a name in use"),
        (p.load_lora(&a, "").unwrap_err(), "an empty name"),
        (
            p.set_adapters(&[("x", 1.0)]).unwrap_err(),
            "an unknown name",
        ),
        (
            p.set_adapters(&[("a", 1.0), ("a", 0.5)]).unwrap_err(),
            "a name twice",
        ),
        (
            p.set_adapters(&[("a", f64::NAN)]).unwrap_err(),
            "a NaN weight",
        ),
        (p.remove_lora("x").unwrap_err(), "removing an unknown name"),
    ] {
        assert!(
            matches!(err, cogvideo::Error::InvalidArgument(_)),
            "{what}: {err}"
        );
    }
    assert_eq!(p.lora_setting().adapters, vec![("a".to_string(), 1.0)]);
}

/// A safetensors file from `(name, dtype, shape, bytes)` and metadata.
fn safetensors_bytes(tensors: &[(&str, &str, Vec<usize>, Vec<u8>)], meta: Option<&str>) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if let Some(m) = meta {
        header.insert(
            "__metadata__".into(),
            serde_json::json!({ "lora_adapter_metadata": m }),
        );
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape,
                               "data_offsets": [data.len(), data.len() + bytes.len()]}),
        );
        data.extend_from_slice(bytes);
    }
    let h = serde_json::Value::Object(header).to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data);
    out
}

fn f32s(n: usize, v: f32) -> Vec<u8> {
    (0..n).flat_map(|_| v.to_le_bytes()).collect()
}

/// A valid one-module LoRA's tensors (to_q of block 0: dim 32, rank 2).
fn good_pair(prefix: &str) -> Vec<(String, &'static str, Vec<usize>, Vec<u8>)> {
    let m = format!("{prefix}transformer_blocks.0.attn1.to_q");
    vec![
        (
            format!("{m}.lora_A.weight"),
            "F32",
            vec![2, 32],
            f32s(64, 0.1),
        ),
        (
            format!("{m}.lora_B.weight"),
            "F32",
            vec![32, 2],
            f32s(64, 0.1),
        ),
    ]
}

/// A pipeline loaded through the C API with adapter `a` at weight 0.5.
struct CPipeline(*mut cogvideo::ffi::cogvideo_pipeline);

impl CPipeline {
    fn load() -> Self {
        use cogvideo::ffi::*;
        let path = std::ffi::CString::new(tiny(VARIANT).to_str().unwrap()).unwrap();
        let mut p = std::ptr::null_mut();
        // SAFETY (here and below): valid strings and out-pointers
        let st = unsafe { cogvideo_load_pipeline(path.as_ptr(), std::ptr::null(), &mut p) };
        assert_eq!(st, cogvideo_status::COGVIDEO_OK);
        let c = Self(p);
        let (st, msg) = c.load_lora(&lora_file("a_rank2.safetensors"));
        assert_eq!(st, cogvideo_status::COGVIDEO_OK, "{msg}");
        let (names, weights) = ([c"a".as_ptr()], [0.5]);
        let st = unsafe { cogvideo_pipeline_set_adapters(p, names.as_ptr(), weights.as_ptr(), 1) };
        assert_eq!(st, cogvideo_status::COGVIDEO_OK);
        c
    }

    /// Loads `path` under the name "hostile" (or "a" for the first file):
    /// the status and the message.
    fn load_lora(&self, path: &std::path::Path) -> (cogvideo::ffi::cogvideo_status, String) {
        use cogvideo::ffi::*;
        let file = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        let name = if path.ends_with("a_rank2.safetensors") {
            c"a"
        } else {
            c"hostile"
        };
        let st = unsafe { cogvideo_pipeline_load_lora(self.0, file.as_ptr(), name.as_ptr()) };
        let msg = unsafe { std::ffi::CStr::from_ptr(cogvideo_last_error()) };
        (st, msg.to_string_lossy().into_owned())
    }

    fn lora_state(&self) -> (u64, usize, i32) {
        let (mut hash, mut active, mut fused) = (0u64, 0usize, 0i32);
        let st = unsafe {
            cogvideo::ffi::cogvideo_pipeline_lora_state(self.0, &mut hash, &mut active, &mut fused)
        };
        assert_eq!(st, cogvideo::ffi::cogvideo_status::COGVIDEO_OK);
        (hash, active, fused)
    }
}

impl Drop for CPipeline {
    fn drop(&mut self) {
        unsafe { cogvideo::ffi::cogvideo_pipeline_free(self.0) };
    }
}

#[test]
fn hostile_lora_files_are_refused_with_the_key_and_change_nothing() {
    let p = Pipeline::load(tiny(VARIANT), &cpu_f32(Residency::Resident)).unwrap();
    p.load_lora(lora_file("a_rank2.safetensors"), "a").unwrap();
    p.set_adapters(&[("a", 0.5)]).unwrap();
    let before = (p.lora_setting(), p.lora_hash(), p.loaded_loras());

    let build = |ts: Vec<(String, &'static str, Vec<usize>, Vec<u8>)>, meta: Option<&str>| {
        let refs: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = ts
            .iter()
            .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
            .collect();
        safetensors_bytes(&refs, meta)
    };
    let good = build(good_pair("transformer."), None);
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push((
        "truncated",
        good[..good.len() - 10].to_vec(),
        "to_q.lora_B.weight",
    ));
    cases.push(("empty", Vec::new(), "safetensors"));
    cases.push((
        "garbage header",
        b"\xff\xff\xff\xff\xff\xff\xff\x7fjunk".to_vec(),
        "safetensors",
    ));
    let mut t = good_pair("transformer.");
    t[1].2 = vec![1 << 40, 1 << 40];
    cases.push(("huge declared tensor", build(t, None), "lora_B"));
    let mut t = good_pair("transformer.");
    t[0].2 = vec![2, 33];
    t[0].3 = f32s(66, 0.1);
    cases.push(("shape mismatch", build(t, None), "to_q.lora_A.weight"));
    let mut t = good_pair("transformer.");
    t[0].0 = "transformer.transformer_blocks.0.attn1.to_z.lora_A.weight".into();
    t[1].0 = "transformer.transformer_blocks.0.attn1.to_z.lora_B.weight".into();
    cases.push(("unknown module", build(t, None), "attn1.to_z"));
    let mut t = good_pair("transformer.");
    t[0].0 = "transformer.transformer_blocks.7.attn1.to_q.lora_A.weight".into();
    t[1].0 = "transformer.transformer_blocks.7.attn1.to_q.lora_B.weight".into();
    cases.push(("block out of range", build(t, None), "transformer_blocks.7"));
    let mut t = good_pair("transformer.");
    t[0].2 = vec![0, 32];
    t[0].3 = Vec::new();
    t[1].2 = vec![32, 0];
    t[1].3 = Vec::new();
    cases.push(("rank 0", build(t, None), "rank 0"));
    let mut t = good_pair("transformer.");
    t[1].3[4..8].copy_from_slice(&f32::NAN.to_le_bytes());
    cases.push(("non-finite", build(t, None), "to_q.lora_B.weight"));
    let mut t = good_pair("transformer.");
    t[1].3[4..8].copy_from_slice(&f32::INFINITY.to_le_bytes());
    cases.push(("infinite", build(t, None), "to_q.lora_B.weight"));
    let mut t = good_pair("transformer.");
    t.pop();
    cases.push(("lone lora_A", build(t, None), "only one of"));
    let mut t = good_pair("transformer.");
    t.extend(
        good_pair("")
            .into_iter()
            .map(|(n, d, s, b)| (n.replace("to_q", "to_k"), d, s, b)),
    );
    cases.push((
        "mixed prefixes",
        build(t, None),
        "transformer_blocks.0.attn1.to_k",
    ));
    let mut t = good_pair("transformer.");
    t.push((
        "transformer.transformer_blocks.0.attn1.to_q.lora_B.bias".into(),
        "F32",
        vec![32],
        f32s(32, 0.0),
    ));
    cases.push(("lora bias", build(t, None), "lora_B.bias"));
    let mut t = good_pair("transformer.");
    t[0].1 = "I64";
    cases.push(("integer weights", build(t, None), "to_q.lora_A.weight"));
    cases.push((
        "rank mismatching the metadata",
        build(
            good_pair("transformer."),
            Some(r#"{"transformer.r": 4, "transformer.lora_alpha": 4}"#),
        ),
        "to_q.lora_A.weight",
    ));
    cases.push((
        "bad metadata",
        build(good_pair("transformer."), Some("{not json")),
        "lora_adapter_metadata",
    ));
    cases.push(("no tensors", build(Vec::new(), None), "no tensors"));

    let dir = std::env::temp_dir().join(format!("cogvideo-lora-hostile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // the well-formed file loads, so the others fail for their one fault
    std::fs::write(dir.join("good.safetensors"), &good).unwrap();
    p.load_lora(dir.join("good.safetensors"), "good").unwrap();
    p.remove_lora("good").unwrap();
    p.set_adapters(&[("a", 0.5)]).unwrap();
    // the same files through the C API: a status and the message
    let c = CPipeline::load();
    let c_before = c.lora_state();
    for (what, bytes, needle) in cases {
        let path = dir.join(format!("{}.safetensors", what.replace(' ', "_")));
        std::fs::write(&path, &bytes).unwrap();
        let err = p.load_lora(&path, "hostile").unwrap_err();
        let msg = err.to_string();
        println!("{what}: {msg}");
        assert!(
            matches!(err, cogvideo::Error::BadCheckpoint { .. }),
            "{what}: {msg}"
        );
        assert!(msg.contains(needle), "{what}: `{needle}` not in: {msg}");
        assert_eq!(
            (p.lora_setting(), p.lora_hash(), p.loaded_loras()),
            before,
            "{what}: the pipeline changed"
        );
        let (status, msg) = c.load_lora(&path);
        assert_eq!(
            status,
            cogvideo::ffi::cogvideo_status::COGVIDEO_ERR_BAD_CHECKPOINT,
            "{what} through C: {msg}"
        );
        assert!(
            msg.contains(needle),
            "{what} through C: `{needle}` not in: {msg}"
        );
        assert_eq!(c.lora_state(), c_before, "{what}: the C pipeline changed");
    }
    let err = p
        .load_lora(dir.join("missing.safetensors"), "m")
        .unwrap_err();
    assert!(matches!(err, cogvideo::Error::Io { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
