//! Which attention kernel a device and dtype run, decided in one place so
//! that the hot path and what a pipeline reports at load time agree: the
//! fused f32 CPU kernel, cuDNN's fused SDPA on a GPU (bf16/f16, cuDNN >=
//! 9.13.1 found at run time), or the chunked candle ops everywhere else.

use std::collections::HashMap;
use std::sync::OnceLock;

use candle_core::{DType, Device, Tensor};

/// The environment variable that forces the chunked path on a GPU (value
/// `chunked`), for parity checks of the fused kernel against it.
pub const ATTENTION_ENV: &str = "COGVIDEO_ATTENTION";

/// The oldest cuDNN whose single-node ("unified") SDPA forward we build:
/// 9.13.1, as `cudnnGetVersion()` encodes it (major * 10000 + minor * 100 +
/// patch).
#[cfg_attr(
    not(feature = "cuda"),
    allow(dead_code, reason = "cuDNN is loaded by the cuda build")
)]
pub(super) const MIN_CUDNN_VERSION: usize = 9_13_01;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backend {
    /// The tiled f32 kernel of `flash.rs`.
    CpuFused,
    /// cuDNN's fused SDPA; the version found.
    Cudnn(String),
    /// The query-chunked candle ops, and why.
    Chunked(String),
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Backend::CpuFused => write!(f, "fused CPU kernel (f32)"),
            Backend::Cudnn(version) => write!(f, "cuDNN {version} unified SDPA"),
            Backend::Chunked(reason) => write!(f, "chunked ({reason})"),
        }
    }
}

/// `cudnnGetVersion()` as "9.13.1", or why it is too old.
#[cfg_attr(
    not(feature = "cuda"),
    allow(dead_code, reason = "cuDNN is loaded by the cuda build")
)]
pub(super) fn check_cudnn_version(version: usize) -> Result<String, String> {
    let text = format!(
        "{}.{}.{}",
        version / 10000,
        version / 100 % 100,
        version % 100
    );
    if version < MIN_CUDNN_VERSION {
        return Err(format!(
            "cuDNN {text} is older than 9.13.1, which the fused SDPA needs"
        ));
    }
    Ok(text)
}

/// The state a fused GPU backend keeps per device (cuDNN's handle and
/// plans), made by `setup` on first use and checked by `each_use` on every
/// use. A failure of either is kept: the device then runs the chunked path
/// without trying again. `Err(Some(why))` the call that failed (to report
/// it once), `Err(None)` the later ones. Here rather than in `cudnn.rs` so
/// that the CPU build tests it.
#[cfg_attr(
    not(feature = "cuda"),
    allow(dead_code, reason = "cuDNN is loaded by the cuda build")
)]
pub(super) fn device_state<S>(
    states: &mut HashMap<usize, Result<S, String>>,
    ordinal: usize,
    setup: impl FnOnce() -> Result<S, String>,
    each_use: impl FnOnce(&mut S) -> Result<(), String>,
) -> Result<&mut S, Option<String>> {
    let mut report = !states.contains_key(&ordinal);
    let entry = states.entry(ordinal).or_insert_with(setup);
    if let Ok(state) = entry
        && let Err(why) = each_use(state)
    {
        *entry = Err(why);
        report = true;
    }
    match entry {
        Ok(state) => Ok(state),
        Err(why) => Err(report.then(|| why.clone())),
    }
}

/// `t` contiguous and starting at a multiple of `alignment` bytes of its
/// buffer, as a fused kernel's descriptors promise: a view at another
/// offset is copied into a buffer of its own (`Tensor::copy` would keep
/// the offset).
#[cfg_attr(
    not(feature = "cuda"),
    allow(dead_code, reason = "cuDNN is loaded by the cuda build")
)]
pub(super) fn start_aligned(t: &Tensor, alignment: usize) -> candle_core::Result<Tensor> {
    let t = t.contiguous()?;
    let offset = t.layout().start_offset() * t.dtype().size_in_bytes();
    if offset.is_multiple_of(alignment) {
        Ok(t)
    } else {
        t.force_contiguous()
    }
}

/// Whether `COGVIDEO_ATTENTION`'s value forces the chunked path.
fn forces_chunked(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"))
}

/// Read once: the variable is meant for a whole process (a parity run).
fn forced_chunked() -> bool {
    static FORCED: OnceLock<bool> = OnceLock::new();
    *FORCED.get_or_init(|| forces_chunked(std::env::var(ATTENTION_ENV).ok().as_deref()))
}

/// The choice on a GPU, from the dtype, the override and what loading
/// cuDNN gave (its version, or why it is unusable).
fn choose_gpu(dtype: DType, forced: bool, cudnn: Result<String, String>) -> Backend {
    if forced {
        return Backend::Chunked(format!("{ATTENTION_ENV}=chunked"));
    }
    if !matches!(dtype, DType::BF16 | DType::F16) {
        return Backend::Chunked(format!(
            "cuDNN's fused SDPA takes bf16 or f16, the model runs in {dtype:?}"
        ));
    }
    match cudnn {
        Ok(version) => Backend::Cudnn(version),
        Err(reason) => Backend::Chunked(reason),
    }
}

/// The backend a GPU tensor of `dtype` runs, given what loading cuDNN gave
/// (the caller, `attention.rs`, asks cuDNN: this module stays below it).
pub(super) fn gpu_backend(dtype: DType, cudnn: Result<String, String>) -> Backend {
    choose_gpu(dtype, forced_chunked(), cudnn)
}

/// The backend `device` runs in `dtype`; `cudnn` is asked only on a GPU.
pub(super) fn select(
    device: &Device,
    dtype: DType,
    cudnn: impl FnOnce() -> Result<String, String>,
) -> Backend {
    if device.is_cpu() {
        // The CPU dispatch's own test, on an empty query.
        let fused = Tensor::zeros((1, 0, 1, 1), dtype, device)
            .is_ok_and(|t| super::flash::applies(&t, &[(&t, &t)]));
        return if fused {
            Backend::CpuFused
        } else {
            Backend::Chunked(format!("the fused CPU kernel takes f32, not {dtype:?}"))
        };
    }
    gpu_backend(dtype, cudnn())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_runs_the_fused_kernel_in_f32_only() {
        let never = || -> Result<String, String> { panic!("cuDNN asked on the CPU") };
        assert_eq!(select(&Device::Cpu, DType::F32, never), Backend::CpuFused);
        for dtype in [DType::BF16, DType::F16] {
            let b = select(&Device::Cpu, dtype, never);
            assert!(matches!(b, Backend::Chunked(_)), "{b}");
        }
        assert_eq!(
            super::super::backend_description(&Device::Cpu, DType::F32),
            "fused CPU kernel (f32)"
        );
    }

    /// Every way the fused GPU path can be unavailable falls back to the
    /// chunked path and says why; cuDNN runs only when all is in place.
    #[test]
    fn the_gpu_falls_back_to_chunked_and_says_why() {
        let found = || Ok("9.13.1".to_string());
        assert_eq!(
            choose_gpu(DType::BF16, false, found()),
            Backend::Cudnn("9.13.1".into())
        );
        assert_eq!(
            choose_gpu(DType::F16, false, found()),
            Backend::Cudnn("9.13.1".into())
        );
        let cases = [
            (DType::BF16, true, found(), "COGVIDEO_ATTENTION=chunked"),
            (DType::F32, false, found(), "bf16 or f16"),
            (
                DType::BF16,
                false,
                Err("cuDNN not found: libcudnn.so.9: cannot open".to_string()),
                "cuDNN not found",
            ),
            (
                DType::BF16,
                false,
                check_cudnn_version(9_10_02),
                "cuDNN 9.10.2 is older than 9.13.1",
            ),
        ];
        for (dtype, forced, cudnn, why) in cases {
            let b = choose_gpu(dtype, forced, cudnn);
            let text = b.to_string();
            assert!(
                matches!(b, Backend::Chunked(_)) && text.contains(why),
                "{text}"
            );
            assert!(text.starts_with("chunked ("), "{text}");
        }
        // Without the `cuda` feature nothing can load cuDNN.
        if !cfg!(feature = "cuda") {
            let b = gpu_backend(DType::BF16, super::super::cudnn_status());
            assert!(b.to_string().contains("without CUDA"), "{b}");
        }
    }

    /// A failed setup or use is tried once and reported once; a good state
    /// is set up once and checked on every use.
    #[test]
    fn a_device_state_that_fails_is_kept_failed() {
        let mut states: HashMap<usize, Result<u32, String>> = HashMap::new();
        let never = || -> Result<u32, String> { panic!("set up again") };
        let failed = device_state(&mut states, 0, || Err("no handle".into()), |_| Ok(()));
        assert_eq!(failed, Err(Some("no handle".into())));
        let again = device_state(&mut states, 0, never, |_| panic!("used"));
        assert_eq!(again, Err(None));

        let mut uses = 0;
        for _ in 0..3 {
            let ok = device_state(
                &mut states,
                1,
                || Ok(7),
                |s| {
                    uses += 1;
                    *s += 1;
                    Ok(())
                },
            );
            assert!(ok.is_ok());
        }
        assert_eq!((uses, states[&1].clone()), (3, Ok(10)));
        let failed = device_state(&mut states, 1, never, |_| Err("no stream".into()));
        assert_eq!(failed, Err(Some("no stream".into())));
        let again = device_state(&mut states, 1, never, |_| panic!("used"));
        assert_eq!(again, Err(None));
        assert!(device_state(&mut states, 2, || Ok(0), |_| Ok(())).is_ok());
    }

    /// A contiguous view at an odd offset gets a buffer of its own; an
    /// aligned one is passed through.
    #[test]
    fn misaligned_views_are_copied_to_the_start_of_a_buffer() {
        let t = Tensor::arange(0f32, 40.0, &Device::Cpu).unwrap();
        let view = t.narrow(0, 1, 8).unwrap();
        assert!(view.is_contiguous() && view.layout().start_offset() == 1);
        let a = start_aligned(&view, 16).unwrap();
        assert_eq!(a.layout().start_offset(), 0);
        assert_eq!(a.to_vec1::<f32>().unwrap(), view.to_vec1::<f32>().unwrap());
        let view = t.narrow(0, 4, 8).unwrap();
        let a = start_aligned(&view, 16).unwrap();
        assert_eq!(a.layout().start_offset(), 4);
        // Strided views become contiguous at offset 0.
        let m = t.reshape((5, 8)).unwrap().t().unwrap();
        let a = start_aligned(&m, 16).unwrap();
        assert!(a.is_contiguous() && a.layout().start_offset() == 0);
        assert_eq!(a.to_vec2::<f32>().unwrap(), m.to_vec2::<f32>().unwrap());
    }

    #[test]
    fn cudnn_versions_are_read_and_checked() {
        assert_eq!(check_cudnn_version(9_13_01).unwrap(), "9.13.1");
        assert_eq!(check_cudnn_version(9_28_01).unwrap(), "9.28.1");
        assert!(check_cudnn_version(9_13_00).is_err());
        assert!(check_cudnn_version(8_09_07).is_err());
    }

    #[test]
    fn only_chunked_forces_the_fallback() {
        assert!(forces_chunked(Some("chunked")));
        assert!(forces_chunked(Some(" Chunked\n")));
        for other in [None, Some(""), Some("auto"), Some("cudnn")] {
            assert!(!forces_chunked(other), "{other:?}");
        }
    }
}
