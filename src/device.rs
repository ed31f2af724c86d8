//! Where the models run and in which precision when the caller leaves it
//! open.

use candle_core::{DType, Device};

use crate::error::{Error, Result};

/// Where the models run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// The first CUDA device when the library is built with `cuda` and one
    /// opens, else the CPU.
    #[default]
    Auto,
    Cpu,
    /// An NVIDIA GPU by ordinal; needs the `cuda` build.
    Cuda(usize),
}

impl DeviceKind {
    pub(crate) fn open(self) -> Result<Device> {
        match self {
            DeviceKind::Cpu => Ok(Device::Cpu),
            // A machine with the driver but no usable GPU falls back to the
            // CPU rather than failing: that is what "automatic" promises.
            DeviceKind::Auto => Ok(open_cuda(0).unwrap_or(Device::Cpu)),
            DeviceKind::Cuda(i) => open_cuda(i),
        }
    }
}

#[cfg(feature = "cuda")]
fn open_cuda(i: usize) -> Result<Device> {
    Device::new_cuda(i).map_err(|e| Error::Device(format!("cannot open CUDA device {i}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn open_cuda(i: usize) -> Result<Device> {
    Err(Error::Device(format!(
        "CUDA device {i} asked for, but this library was built without CUDA support (build it with `--features cuda`)"
    )))
}

/// The compute dtype when the caller leaves it open: bf16 on a GPU (what
/// CogVideoX was trained in and what diffusers runs there), f32 on the CPU
/// (exact parity, and bf16 matmuls are slow on most CPUs).
pub fn default_dtype(device: &Device) -> DType {
    if device.is_cpu() {
        DType::F32
    } else {
        DType::BF16
    }
}

/// Waits until the device has done the work this thread gave it. Every
/// public call ends so, since its results (and after `load` the pipeline
/// itself) may be used from another thread next: candle gives each host
/// thread its own CUDA stream, and nothing orders one stream's work before
/// another's. A no-op on the CPU.
pub(crate) fn end_of_call(device: &Device) -> Result<()> {
    Ok(device.synchronize()?)
}
