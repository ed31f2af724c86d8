//! Parity of the schedulers with diffusers (tests/data/golden/scheduler.json):
//! noise tables, timesteps for several step counts, multi-step sequences fed
//! with recorded model outputs (and, for DPM, the recorded noise draw that
//! each step uses), and the dynamic CFG schedule.
//!
//! Tolerances: f64 tables 1e-12 absolute; the inverse scheduler's f32 table
//! 1e-6 absolute (a few f32 ulps); timesteps exact; sample sequences
//! 1e-5 x max(1, scale) after chaining our own outputs through every step
//! (f32 coefficients, so a couple of ulps per step).

mod common;

use candle_core::Tensor;
use cogvideo::schedulers::{
    CogVideoXDDIMScheduler, CogVideoXDPMScheduler, DDIMInverseScheduler, SchedulerConfig,
    dynamic_cfg_scale,
};
use common::{assert_close, load_json, load_tensors};

fn config(golden: &serde_json::Value, name: &str) -> SchedulerConfig {
    let src = golden["configs"][name]["source"].as_str().unwrap();
    SchedulerConfig::load(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(src)).unwrap()
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
        // timesteps_<scheduler>_<config>_n<steps>
        let parts: Vec<&str> = key.split('_').collect();
        let (sched, cfg_name, n) = (parts[1], parts[2], parts[3][1..].parse::<usize>().unwrap());
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
fn dpm_without_noise_is_an_error() {
    let g = load_json("scheduler.json");
    let mut dpm = CogVideoXDPMScheduler::new(&config(&g, "snr1")).unwrap();
    dpm.set_timesteps(4).unwrap();
    let x = Tensor::zeros((1, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    let err = dpm.step(&x, None, 999, None, &x, None).unwrap_err();
    assert!(err.to_string().contains("needs a noise tensor"), "{err}");
    assert!(!dpm.needs_noise(249));
    assert!(dpm.step(&x, None, 249, Some(499), &x, None).is_ok());
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
    let mut ddim = CogVideoXDDIMScheduler::new(&config(&g, "snr1")).unwrap();
    assert!(ddim.set_timesteps(0).is_err());
    assert!(ddim.set_timesteps(1001).is_err());
    let x = Tensor::zeros((1, 2), candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    assert!(
        ddim.step(&x, 999, &x)
            .unwrap_err()
            .to_string()
            .contains("set_timesteps")
    );
}
