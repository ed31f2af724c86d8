//! Residency modes on the tiny checkpoints: every mode gives the frames of
//! `Resident` bit for bit in every pipeline that runs the transformer, and
//! `Auto` picks the mode a memory budget allows.

mod common;

use candle_core::{Device, Tensor};
use cogvideo::pipelines::{
    AnimateOptions, DecodeOptions, EditOptions, GenerateOptions, InvertOptions, LoadOptions,
    Pipeline, Progress, Residency, SamplingOptions, VaeTiling,
};
use common::tiny;

fn load(variant: &str, residency: Residency, memory_budget: Option<u64>) -> Pipeline {
    let opts = LoadOptions {
        residency,
        memory_budget,
        ..Default::default()
    };
    Pipeline::load(tiny(variant), &opts).unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    common::max_abs_diff(a, b).0
}

fn sampling(steps: usize) -> SamplingOptions {
    SamplingOptions {
        prompt: "a fox".into(),
        steps,
        ..Default::default()
    }
}

/// Text-to-video of 9 frames at 96x64 in `steps` steps.
fn small_clip(steps: usize) -> GenerateOptions {
    GenerateOptions {
        sampling: sampling(steps),
        height: Some(64),
        width: Some(96),
        num_frames: Some(9),
    }
}

const MODES: [Residency; 3] = [
    Residency::Resident,
    Residency::PerComponent,
    Residency::Streamed,
];

#[test]
fn every_mode_gives_the_frames_of_resident() {
    let pipelines = MODES.map(|m| load("cogvideox-5b", m, None));
    for (p, m) in pipelines.iter().zip(MODES) {
        assert_eq!(p.residency(), m);
        assert_eq!(p.weight_bytes(), pipelines[0].weight_bytes());
    }
    let generate = small_clip(2);
    let inv_opts = InvertOptions {
        steps: 2,
        ..Default::default()
    };
    let edit = EditOptions {
        prompt: "a wolf".into(),
        ..Default::default()
    };
    let mut want = None;
    for p in &pipelines {
        let video = p
            .generate_video(&generate, &mut Progress::none())
            .unwrap()
            .video;
        let inv = p
            .invert_video(&video, &inv_opts, &mut Progress::none())
            .unwrap();
        let edited = p
            .edit_with_prompt(&inv, &edit, &mut Progress::none())
            .unwrap()
            .video;
        let (video0, edited0) = want.get_or_insert((video.clone(), edited.clone()));
        assert_eq!(max_diff(&video, video0), 0.0, "{:?}", p.residency());
        assert_eq!(max_diff(&edited, edited0), 0.0, "{:?}", p.residency());
    }

    let pipelines = MODES.map(|m| load("cogvideox-5b-i2v", m, None));
    let (h, w, _) = pipelines[0].default_video_size();
    let image = Tensor::randn(0f32, 0.5, (1, 3, h, w), &Device::Cpu).unwrap();
    let animate = AnimateOptions {
        sampling: sampling(2),
        num_frames: 9,
    };
    let videos: Vec<Tensor> = pipelines
        .iter()
        .map(|p| {
            p.animate_image(&image, &animate, &mut Progress::none())
                .unwrap()
                .video
        })
        .collect();
    for (v, m) in videos.iter().zip(MODES) {
        assert_eq!(max_diff(v, &videos[0]), 0.0, "{m:?}");
    }
}

#[test]
fn auto_picks_each_mode_from_the_budget_and_reports_it() {
    let resident = load("cogvideox-5b", Residency::Resident, None);
    let report = resident.memory_report();
    let w = report.weights;
    assert_eq!(report.kept_weight_bytes, w.total());
    assert!(w.text_encoder_block > 0 && w.transformer_block > 0 && w.vae > 0);
    assert!(w.text_encoder_rest + w.text_encoder_block < w.text_encoder);
    assert!(w.transformer_rest + w.transformer_block < w.transformer);
    let peak = |m| w.peak(m);
    assert!(peak(Residency::PerComponent) < peak(Residency::Resident));

    // Nine tenths of a budget must hold a mode's weights and the
    // default-size call: the smallest such budget picks the mode, one 10
    // bytes below it the next, and one of 1 byte the leanest.
    let call = report.default_call_bytes;
    assert!(call > 0);
    let fits = |m| Some((peak(m) + call).div_ceil(9) * 10);
    let short = |m| fits(m).map(|b| b - 10);
    for (budget, want) in [
        (fits(Residency::Resident), Residency::Resident),
        (short(Residency::Resident), Residency::PerComponent),
        (fits(Residency::PerComponent), Residency::PerComponent),
        (short(Residency::PerComponent), Residency::Streamed),
        (Some(1), Residency::Streamed),
    ] {
        let p = load("cogvideox-5b", Residency::Auto, budget);
        assert_eq!(p.residency(), want, "budget {budget:?}");
        let r = p.memory_report();
        assert_eq!(r.kept_weight_bytes, w.kept(want));
        assert_eq!(r.estimated_peak_bytes, 0, "no call yet");
    }

    // A call records its estimate, weights it holds included.
    let p = load("cogvideox-5b", Residency::Streamed, None);
    let latents = p
        .generate_latents(&small_clip(1), &mut Progress::none())
        .unwrap();
    let r = p.memory_report();
    assert!(
        r.estimated_peak_bytes > w.peak(Residency::Streamed),
        "{r:?}"
    );
    let (peak_rss, current_rss) = (r.peak_rss_bytes.unwrap(), r.current_rss_bytes.unwrap());
    assert!(peak_rss >= current_rss && current_rss > 0, "{r:?}");

    // A call that ends in a decode keeps the estimate of its peak (here the
    // transformer's weights, held while sampling), not the decode's alone;
    // a decode on its own records its own.
    let p = load("cogvideox-5b", Residency::PerComponent, None);
    let out = p
        .generate_video(&small_clip(1), &mut Progress::none())
        .unwrap();
    let call_peak = p.memory_report().estimated_peak_bytes;
    assert!(call_peak > w.peak(Residency::PerComponent), "{call_peak}");
    p.decode_latents(
        &out.latents,
        &DecodeOptions::default(),
        &mut Progress::none(),
    )
    .unwrap();
    let decode_peak = p.memory_report().estimated_peak_bytes;
    assert!(
        decode_peak > w.kept(Residency::PerComponent) && decode_peak < call_peak,
        "{decode_peak} vs {call_peak}"
    );

    // A budget the untiled decode does not fit turns tiling on; the same
    // frames as an explicitly tiled decode, unlike the untiled ones.
    let decode = |p: &Pipeline, tiling| {
        p.decode_latents(&latents, &DecodeOptions { tiling }, &mut Progress::none())
            .unwrap()
    };
    let untiled = decode(&p, VaeTiling::Off);
    let tiled = decode(&p, VaeTiling::Default);
    assert!(max_diff(&untiled, &tiled) > 0.0);
    let budgeted = load(
        "cogvideox-5b",
        Residency::Streamed,
        Some(w.kept(Residency::Streamed) / 9 * 10 + 1),
    );
    assert_eq!(max_diff(&decode(&budgeted, VaeTiling::Model), &tiled), 0.0);
    let roomy = load("cogvideox-5b", Residency::Streamed, Some(1 << 40));
    assert_eq!(max_diff(&decode(&roomy, VaeTiling::Model), &untiled), 0.0);
}

/// A streamed layer whose file breaks after loading fails the call with the
/// read's own error (the file named, the kind kept), not an internal error,
/// and the pipeline stays usable for a call that does not need the file.
#[test]
fn a_streamed_read_failing_mid_call_keeps_its_kind() {
    let scratch = common::ScratchCheckpoint::copy_of("cogvideox-5b", "streamed-broken");
    let opts = LoadOptions {
        residency: Residency::Streamed,
        ..Default::default()
    };
    let p = Pipeline::load(&scratch.root, &opts).unwrap();
    let generate = small_clip(1);
    let latents = p
        .generate_latents(&generate, &mut Progress::none())
        .unwrap();
    let dir = scratch.root.join("transformer");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(64).unwrap();
        }
    }
    let err = p
        .generate_latents(&generate, &mut Progress::none())
        .unwrap_err();
    assert!(
        matches!(
            err,
            cogvideo::Error::Io { .. } | cogvideo::Error::BadCheckpoint { .. }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("transformer"), "{err}");
    p.decode_latents(&latents, &DecodeOptions::default(), &mut Progress::none())
        .unwrap();
}
