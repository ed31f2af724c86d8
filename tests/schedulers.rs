//! Parity of the schedulers with diffusers (tests/data/golden/scheduler.json):
//! noise tables, timesteps for several step counts, multi-step sequences fed
//! with recorded model outputs (and, for DPM, the recorded noise draw that
//! each step uses), `add_noise`, and the dynamic CFG schedule; the
//! timesteps of every step count 1..=1000 (scheduler_timesteps.json); and
//! the refusal of hostile `scheduler_config.json` files at load.
//!
//! Tolerances: f64 tables 1e-12 absolute; the inverse scheduler's f32 table
//! 1e-6 absolute (a few f32 ulps); timesteps exact; sample sequences
//! 1e-5 x max(1, scale) after chaining our own outputs through every step
//! (f32 coefficients, so a couple of ulps per step).

mod common;

use candle_core::{DType, Device, Tensor};
use cogvideo::Error;
use cogvideo::schedulers::{
    CogVideoXDDIMScheduler, CogVideoXDPMScheduler, DDIMInverseScheduler, SchedulerConfig,
    dynamic_cfg_scale,
};
use common::{ScratchCheckpoint, assert_close, load_json, load_tensors};

/// A golden config: the tiny checkpoint's file with the generator's
/// overrides applied.
fn config(golden: &serde_json::Value, name: &str) -> SchedulerConfig {
    let entry = &golden["configs"][name];
    let src = entry["source"].as_str().unwrap();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(src);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    if let Some(overrides) = entry["overrides"].as_object() {
        for (k, v) in overrides {
            cfg[k] = v.clone();
        }
    }
    let cfg: SchedulerConfig = serde_json::from_value(cfg).unwrap();
    cfg.validate().unwrap();
    cfg
}

fn max_abs_f64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn alphas_cumprod_match() {
    let g = load_json("scheduler.json");
    let t = load_tensors("scheduler.safetensors");
    for cfg_name in ["snr1", "snr3"] {
        let cfg = config(&g, cfg_name);
        let ddim = CogVideoXDDIMScheduler::new(&cfg).unwrap();
        let dpm = CogVideoXDPMScheduler::new(&cfg).unwrap();
        let inv = DDIMInverseScheduler::new(&cfg).unwrap();
        let want = |k: &str| {
            t[&format!("alphas_cumprod_{k}_{cfg_name}")]
                .to_dtype(candle_core::DType::F64)
                .unwrap()
                .to_vec1::<f64>()
                .unwrap()
        };
        let e = max_abs_f64(ddim.alphas_cumprod(), &want("ddim"));
        println!("{cfg_name} ddim alphas_cumprod max err {e:e}");
        assert!(e < 1e-12);
        assert!(max_abs_f64(dpm.alphas_cumprod(), &want("dpm")) < 1e-12);
        let ours: Vec<f64> = inv.alphas_cumprod().iter().map(|&x| x as f64).collect();
        let e = max_abs_f64(&ours, &want("inverse"));
        println!("{cfg_name} inverse alphas_cumprod max err {e:e}");
        assert!(e < 1e-6);
        assert_eq!(ddim.alphas_cumprod()[999], 0.0, "zero terminal SNR");
    }
}

#[test]
fn timesteps_match() {
    let g = load_json("scheduler.json");
    let mut checked = 0;
    for (key, want) in g["timesteps"].as_object().unwrap() {
        // timesteps_<scheduler>_<config>_n<steps>; config names contain `_`
        let rest = key.strip_prefix("timesteps_").unwrap();
        let (sched, rest) = rest.split_once('_').unwrap();
        let (cfg_name, n) = rest.rsplit_once("_n").unwrap();
        let n: usize = n.parse().unwrap();
        let want: Vec<usize> = want
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let cfg = config(&g, cfg_name);
        let got = match sched {
            "ddim" => {
                let mut s = CogVideoXDDIMScheduler::new(&cfg).unwrap();
                s.set_timesteps(n).unwrap();
                s.timesteps().to_vec()
            }
            "dpm" => {
                let mut s = CogVideoXDPMScheduler::new(&cfg).unwrap();
                s.set_timesteps(n).unwrap();
                s.timesteps().to_vec()
            }
            "inverse" => {
                let mut s = DDIMInverseScheduler::new(&cfg).unwrap();
                s.set_timesteps(n).unwrap();
                s.timesteps().to_vec()
            }
            other => panic!("unknown scheduler {other}"),
        };
        assert_eq!(got, want, "{key}");
        checked += 1;
    }
    assert!(checked >= 3 * 2 * 5, "checked {checked} timestep lists");
}

#[test]
fn step_sequences_match() {
    let g = load_json("scheduler.json");
    let t = load_tensors("scheduler.safetensors");
    let seqs = g["sequences"].as_array().unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for seq in seqs {
        let sched = seq["scheduler"].as_str().unwrap();
        let cfg_name = seq["config"].as_str().unwrap();
        let n = seq["n"].as_u64().unwrap() as usize;
        let prefix = seq["prefix"].as_str().unwrap();
        let get = |name: &str, i: usize| -> Tensor { t[&format!("{prefix}{name}_{i}")].clone() };
        let cfg = config(&g, cfg_name);
        kinds.insert(sched.to_string());

        let mut ddim = CogVideoXDDIMScheduler::new(&cfg).unwrap();
        let mut dpm = CogVideoXDPMScheduler::new(&cfg).unwrap();
        let mut inv = DDIMInverseScheduler::new(&cfg).unwrap();
        ddim.set_timesteps(n).unwrap();
        dpm.set_timesteps(n).unwrap();
        inv.set_timesteps(n).unwrap();
        let timesteps: Vec<usize> = match sched {
            "inverse" => inv.timesteps().to_vec(),
            _ => ddim.timesteps().to_vec(),
        };

        let mut x = get("sample", 0);
        let mut old_x0: Option<Tensor> = None;
        for (i, &ts) in timesteps.iter().enumerate() {
            let v = get("model_output", i);
            let out = match sched {
                "ddim" => ddim.step(&v, ts, &x).unwrap(),
                "inverse" => inv.step(&v, ts, &x).unwrap(),
                "dpm" => {
                    let noise = dpm.needs_noise(ts).then(|| get("noise_used", i));
                    let back = (i > 0).then(|| timesteps[i - 1]);
                    dpm.step(&v, old_x0.as_ref(), ts, back, &x, noise.as_ref())
                        .unwrap()
                }
                other => panic!("unknown scheduler {other}"),
            };
            let label = format!("{prefix}step{i}");
            assert_close(
                &format!("{label} x0"),
                &out.pred_original_sample,
                &get("pred_original", i),
                1e-5,
            );
            assert_close(&label, &out.prev_sample, &get("sample", i + 1), 1e-5);
            old_x0 = Some(out.pred_original_sample);
            x = out.prev_sample;
        }
    }
    assert_eq!(kinds.len(), 3, "{kinds:?}");
}

#[test]
fn dpm_without_noise_is_an_internal_error() {
    let g = load_json("scheduler.json");
    let mut dpm = CogVideoXDPMScheduler::new(&config(&g, "snr1")).unwrap();
    dpm.set_timesteps(4).unwrap();
    let x = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
    let err = dpm.step(&x, None, 999, None, &x, None).unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "internal error: DPM step at timestep 999 was given no noise draw"
    );
    assert!(!dpm.needs_noise(249));
    assert!(dpm.step(&x, None, 249, Some(499), &x, None).is_ok());
}

#[test]
fn dpm_last_step_without_alpha_one_is_noised() {
    // With `set_alpha_to_one = false` the last step lands on alphas_cumprod[0]
    // < 1: diffusers adds its first draw there and skips the 2M correction.
    let g = load_json("scheduler.json");
    let mut dpm = CogVideoXDPMScheduler::new(&config(&g, "snr1_final")).unwrap();
    dpm.set_timesteps(4).unwrap();
    assert!(dpm.timesteps().iter().all(|&t| dpm.needs_noise(t)));
}

#[test]
fn dynamic_cfg_matches() {
    let g = load_json("scheduler.json");
    for case in g["dynamic_cfg"].as_array().unwrap() {
        let w = case["guidance_scale"].as_f64().unwrap();
        let n = case["n"].as_u64().unwrap() as usize;
        let ts = case["timesteps"].as_array().unwrap();
        let scales = case["scales"].as_array().unwrap();
        for (t, want) in ts.iter().zip(scales) {
            let got = dynamic_cfg_scale(w, t.as_u64().unwrap() as usize, n);
            let want = want.as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "n={n} t={t}: {got} vs {want}");
        }
    }
}

#[test]
fn bad_step_counts_are_errors() {
    let g = load_json("scheduler.json");
    let cfg = config(&g, "snr1");
    assert_eq!(cfg.max_steps(), 1000);
    // an unchecked config answers at once instead of scanning 10^18 counts
    let mut wild = cfg.clone();
    wild.num_train_timesteps = usize::MAX;
    wild.timestep_spacing = "leading".into();
    wild.steps_offset = usize::MAX;
    assert_eq!(wild.max_steps(), 0);
    let mut ddim = CogVideoXDDIMScheduler::new(&cfg).unwrap();
    let mut dpm = CogVideoXDPMScheduler::new(&cfg).unwrap();
    let mut inv = DDIMInverseScheduler::new(&cfg).unwrap();
    for n in [0, 1001, usize::MAX] {
        for err in [
            ddim.set_timesteps(n).unwrap_err(),
            dpm.set_timesteps(n).unwrap_err(),
            inv.set_timesteps(n).unwrap_err(),
        ] {
            assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
            assert_eq!(
                err.to_string(),
                format!("invalid argument: steps must be between 1 and 1000, got {n}")
            );
        }
    }
    let x = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
    let err = ddim.step(&x, 999, &x).unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert!(err.to_string().contains("set_timesteps"), "{err}");
    ddim.set_timesteps(4).unwrap();
    let err = ddim.step(&x, 1000, &x).unwrap_err();
    assert!(matches!(err, Error::Internal(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "internal error: DDIM step at timestep 1000, outside 0..=999"
    );
}

/// FNV-1a (32 bit) of the timesteps written as `999,979,...`, as the
/// generator fingerprints diffusers' lists.
fn fnv1a32(ts: &[usize]) -> String {
    let text = ts
        .iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let h = text.bytes().fold(0x811c_9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x0100_0193)
    });
    format!("{h:08x}")
}

/// Every step count 1..=num_train_timesteps, all three schedulers, against
/// diffusers' own `set_timesteps`. Trailing spacing used to emit an extra
/// timestep (then wrap below zero) for 132 of these counts.
#[test]
fn every_step_count_matches_diffusers() {
    let g = load_json("scheduler_timesteps.json");
    let mut checked = 0;
    for (key, entry) in g["lists"].as_object().unwrap() {
        let cfg = config(&g, entry["config"].as_str().unwrap());
        let kind = entry["kind"].as_str().unwrap();
        let hashes = entry["hashes"].as_array().unwrap();
        let out_of_range: Vec<u64> = entry["out_of_range"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        // The valid counts are a prefix: the first count diffusers schedules
        // past the table ends it.
        let max = out_of_range
            .first()
            .map_or(hashes.len(), |&n| n as usize - 1);
        assert_eq!(cfg.max_steps(), max, "{key}");
        // diffusers' only extra entries are the trailing residue, timestep -1.
        for dropped in entry["dropped"].as_object().unwrap().values() {
            assert_eq!(dropped, &serde_json::json!([-1]), "{key}");
        }
        let mut ddim = CogVideoXDDIMScheduler::new(&cfg).unwrap();
        let mut dpm = CogVideoXDPMScheduler::new(&cfg).unwrap();
        // (`linspace` has no inverse list: the inverse scheduler refuses it)
        let mut inv = DDIMInverseScheduler::new(&cfg);
        for (i, want) in hashes.iter().enumerate() {
            let n = i + 1;
            let lists = match kind {
                "forward" => vec![
                    ddim.set_timesteps(n).map(|_| ddim.timesteps().to_vec()),
                    dpm.set_timesteps(n).map(|_| dpm.timesteps().to_vec()),
                ],
                "inverse" => {
                    let inv = inv.as_mut().unwrap();
                    vec![inv.set_timesteps(n).map(|_| inv.timesteps().to_vec())]
                }
                other => panic!("unknown kind {other}"),
            };
            for got in lists {
                match want.as_str() {
                    Some(want) if n <= max => {
                        let got = got.unwrap_or_else(|e| panic!("{key} n={n}: {e}"));
                        assert_eq!(got.len(), n, "{key} n={n}");
                        assert_eq!(fnv1a32(&got), want, "{key} n={n}: {got:?}");
                    }
                    _ => {
                        let err = got.unwrap_err();
                        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
                        assert!(
                            err.to_string()
                                .contains(&format!("between 1 and {max}, got {n}")),
                            "{err}"
                        );
                    }
                }
                checked += 1;
            }
        }
    }
    assert!(checked >= 6 * 1000, "checked {checked} step counts");
}

/// Full denoising schedules (random model outputs) for counts that failed:
/// each scheduler runs exactly `n` steps and stays finite.
#[test]
fn full_schedules_at_formerly_failing_counts() {
    let g = load_json("scheduler.json");
    let cfg = config(&g, "snr1");
    let dev = Device::Cpu;
    for n in [19, 38, 61, 76, 87, 93, 99, 103, 1000] {
        let mut ddim = CogVideoXDDIMScheduler::new(&cfg).unwrap();
        let mut dpm = CogVideoXDPMScheduler::new(&cfg).unwrap();
        let mut inv = DDIMInverseScheduler::new(&cfg).unwrap();
        ddim.set_timesteps(n).unwrap();
        dpm.set_timesteps(n).unwrap();
        inv.set_timesteps(n).unwrap();
        for ts in [ddim.timesteps(), dpm.timesteps(), inv.timesteps()] {
            assert_eq!(ts.len(), n, "n={n}");
        }
        let mut x_ddim = Tensor::randn(0f32, 1.0, (1, 2, 3), &dev).unwrap();
        let mut x_inv = x_ddim.clone();
        let mut x_dpm = x_ddim.clone();
        let mut old_x0: Option<Tensor> = None;
        let mut draws = 0;
        for (i, (&t, &ti)) in ddim.timesteps().iter().zip(inv.timesteps()).enumerate() {
            let v = Tensor::randn(0f32, 1.0, (1, 2, 3), &dev).unwrap();
            x_ddim = ddim.step(&v, t, &x_ddim).unwrap().prev_sample;
            x_inv = inv.step(&v, ti, &x_inv).unwrap().prev_sample;
            let noise = dpm
                .needs_noise(t)
                .then(|| Tensor::randn(0f32, 1.0, (1, 2, 3), &dev).unwrap());
            draws += noise.is_some() as usize;
            let back = i.checked_sub(1).map(|j| dpm.timesteps()[j]);
            let out = dpm
                .step(&v, old_x0.as_ref(), t, back, &x_dpm, noise.as_ref())
                .unwrap();
            old_x0 = Some(out.pred_original_sample);
            x_dpm = out.prev_sample;
        }
        // The last step lands on the clean level, or (19 steps: 52 - 1000 / 19
        // = 0) on timestep 0, which diffusers noises too.
        assert!(draws == n - 1 || draws == n, "n={n}: {draws} noised steps");
        for x in [x_ddim, x_inv, x_dpm] {
            let v = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(v.iter().all(|x| x.is_finite()), "n={n}");
        }
    }
}

#[test]
fn add_noise_matches() {
    let g = load_json("scheduler.json");
    let t = load_tensors("scheduler.safetensors");
    let cases = g["add_noise"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let cfg = config(&g, case["config"].as_str().unwrap());
        let dtype = match case["dtype"].as_str().unwrap() {
            "f32" => DType::F32,
            "bf16" => DType::BF16,
            other => panic!("dtype {other}"),
        };
        let ts = case["timestep"].as_u64().unwrap() as usize;
        let x = t[case["original"].as_str().unwrap()]
            .to_dtype(dtype)
            .unwrap();
        let noise = t[case["noise"].as_str().unwrap()].to_dtype(dtype).unwrap();
        let want = &t[case["tensor"].as_str().unwrap()];
        let ddim = CogVideoXDDIMScheduler::new(&cfg).unwrap();
        let dpm = CogVideoXDPMScheduler::new(&cfg).unwrap();
        for got in [
            ddim.add_noise(&x, &noise, ts).unwrap(),
            dpm.add_noise(&x, &noise, ts).unwrap(),
        ] {
            assert_eq!(got.dtype(), dtype);
            let (err, _) = common::max_abs_diff(&got, want);
            // the same rounded operations as torch: bit-exact
            assert_eq!(err, 0.0, "{}", case["tensor"]);
        }
    }
    let ddim = CogVideoXDDIMScheduler::new(&config(&g, "snr1")).unwrap();
    let x = Tensor::zeros((1, 2), DType::F32, &Device::Cpu).unwrap();
    let err = ddim.add_noise(&x, &x, 1000).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
    assert!(err.to_string().contains("0..=999"), "{err}");
    let short = Tensor::zeros((1, 3), DType::F32, &Device::Cpu).unwrap();
    assert!(ddim.add_noise(&x, &short, 10).is_err());
}

/// Loads a copy of the tiny 5b checkpoint whose scheduler_config.json has
/// `edit` applied; returns the load error.
fn load_with_scheduler(tag: &str, edit: impl FnOnce(&mut serde_json::Value)) -> Error {
    let s = ScratchCheckpoint::copy_of("cogvideox-5b", &format!("sched-{tag}"));
    let path = s.root.join("scheduler/scheduler_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&path, cfg.to_string()).unwrap();
    match cogvideo::pipelines::Pipeline::load(&s.root, &Default::default()) {
        Ok(_) => panic!("{tag}: a hostile scheduler_config.json loaded"),
        Err(e) => e,
    }
}

#[test]
fn hostile_scheduler_configs_are_refused_at_load() {
    use serde_json::json;
    let betas = |v: f64| json!(vec![v; 1000]);
    let mut outlier = vec![0.01; 1000];
    outlier[7] = 1.5;
    let cases: Vec<(&str, &str, serde_json::Value)> = vec![
        ("train-huge", "num_train_timesteps", json!(1_000_000_000u64)),
        ("train-one", "num_train_timesteps", json!(1)),
        ("betas-empty", "trained_betas", json!([])),
        ("betas-short", "trained_betas", json!(vec![0.01; 999])),
        ("betas-zero", "trained_betas[0]", betas(0.0)),
        ("betas-one", "trained_betas[0]", betas(1.0)),
        ("betas-outlier", "trained_betas[7]", json!(outlier)),
        ("beta-start-neg", "beta_start", json!(-0.1)),
        ("beta-end-two", "beta_end", json!(2.0)),
        ("beta-tiny", "degenerate forward noise table", json!(1e-20)),
        // fine in f64, but 1 - beta rounds to 1 in the inverse's f32 table
        (
            "beta-tiny-f32",
            "degenerate inversion noise table",
            json!(1e-9),
        ),
        ("snr-zero", "snr_shift_scale", json!(0.0)),
        ("snr-neg", "snr_shift_scale", json!(-3.0)),
        ("snr-huge", "snr_shift_scale", json!(1e300)),
        ("offset", "steps_offset", json!(5000)),
        ("clip-range", "clip_sample_range", json!(0.0)),
        ("spacing", "timestep_spacing", json!("karras")),
        ("schedule", "beta_schedule", json!("squaredcos_cap_v2")),
        ("prediction", "prediction_type", json!("epsilon")),
    ];
    for (tag, field, value) in cases {
        let err = load_with_scheduler(tag, |cfg| match tag {
            "beta-tiny" | "beta-tiny-f32" => {
                cfg["beta_start"] = value.clone();
                cfg["beta_end"] = value;
            }
            "clip-range" => {
                cfg["clip_sample"] = json!(true);
                cfg["clip_sample_range"] = value;
            }
            _ => cfg[field.split('[').next().unwrap()] = value,
        });
        let msg = err.to_string();
        println!("{tag}: {msg}");
        match &err {
            Error::BadCheckpoint { path, .. } => {
                assert!(path.ends_with("scheduler/scheduler_config.json"), "{msg}")
            }
            other => panic!("{tag}: {other:?}"),
        }
        assert!(msg.contains(field), "{tag}: {msg}");
        assert!(!msg.contains('\n'), "{tag}: {msg}");
    }
}
