//! Memory checks made before large allocations. On the CPU an allocation
//! failure aborts the process (Rust's allocator, and candle through it, has
//! no way to report it), which would take the host application and its
//! unsaved work down; so sizes that cannot fit are refused beforehand with
//! [`Error::OutOfMemory`], and the buffers the library fills itself are
//! reserved fallibly.

use std::alloc::{Layout, alloc_zeroed};

use crate::error::{Error, Result};

/// Bytes that can be allocated now without swapping (Linux `MemAvailable`),
/// or `None` where the system does not say.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Bytes `device` can allocate now: [`available_bytes`] on the CPU, the
/// driver's free memory on a CUDA device (other processes' use, such as the
/// host application's own GPU work, already taken off). `None` where
/// neither says.
pub fn device_available_bytes(device: &candle_core::Device) -> Option<u64> {
    match device {
        candle_core::Device::Cpu => available_bytes(),
        #[cfg(feature = "cuda")]
        candle_core::Device::Cuda(dev) => {
            let (free, _total) = dev.cuda_stream().context().mem_get_info().ok()?;
            Some(free as u64)
        }
        _ => None,
    }
}

/// The process's peak resident memory so far (`ru_maxrss`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    // Linux reports KiB.
    Some((usage.ru_maxrss.max(0) as u64) * 1024)
}

/// The process's peak and current resident memory (Linux `VmHWM` and
/// `VmRSS`), in bytes.
pub fn rss_bytes() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(key))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib.saturating_mul(1024))
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

/// What may be planned for out of `bytes` of memory: nine tenths. Linux
/// overcommits, so a process that runs out mid-call is killed rather than
/// told; the host application, the rest of the system and the estimates'
/// errors need the other tenth.
pub fn plannable(bytes: u64) -> u64 {
    bytes / 10 * 9
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// Refuses work estimated to need `need` bytes when it would take more than
/// the [`plannable`] part of what is available.
pub fn ensure_fits(need: u64, what: &str) -> Result<()> {
    match available_bytes() {
        Some(available) if need > plannable(available) => Err(Error::OutOfMemory(format!(
            "{what} needs about {} but only {} is available",
            gib(need),
            gib(available)
        ))),
        _ => Ok(()),
    }
}

/// Element types whose all-zero bit pattern is the value zero, so that
/// [`try_zeroed`] can take zeroed memory from the allocator.
pub trait Zeroed: Copy {}
impl Zeroed for f32 {}
impl Zeroed for u8 {}

/// `vec![0; len]`, but a failed allocation is an [`Error::OutOfMemory`]
/// naming `what` and the byte count instead of an abort of the host
/// process. Zeroed memory from the allocator, as `vec!` uses, so fresh pages
/// are not written twice.
pub fn try_zeroed<T: Zeroed>(len: usize, what: &str) -> Result<Vec<T>> {
    let oom = || {
        Error::OutOfMemory(format!(
            "cannot allocate {} bytes for {what}",
            (len as u128) * std::mem::size_of::<T>() as u128
        ))
    };
    if len == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<T>(len).map_err(|_| oom())?;
    // SAFETY: the layout has a non-zero size (len > 0, and `Zeroed` types
    // are not zero-sized: f32, u8).
    let ptr = unsafe { alloc_zeroed(layout) }.cast::<T>();
    if ptr.is_null() {
        return Err(oom());
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of
    // `len` values of `T` (the size and alignment a `Vec<T>` of capacity
    // `len` uses), and all of them are initialised: zero bits are zero
    // (`Zeroed`).
    Ok(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Bytes of the allocations behind `tensors`, each allocation once: a view
/// keeps all of its allocation alive. Off the CPU, a tensor's own elements.
pub(crate) fn held_bytes<'a>(tensors: impl IntoIterator<Item = &'a candle_core::Tensor>) -> u64 {
    use candle_core::{CpuStorage, Storage};
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for t in tensors {
        let (storage, _) = t.storage_and_layout();
        if !seen.insert(std::ptr::from_ref(&*storage).addr()) {
            continue;
        }
        total += match &*storage {
            Storage::Cpu(CpuStorage::F32(v)) => v.len() as u64 * 4,
            Storage::Cpu(CpuStorage::BF16(v)) => v.len() as u64 * 2,
            Storage::Cpu(CpuStorage::F16(v)) => v.len() as u64 * 2,
            _ => (t.elem_count() * t.dtype().size_in_bytes()) as u64,
        };
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_sizes_are_refused_not_aborted() {
        let err = ensure_fits(u64::MAX, "this call").unwrap_err();
        assert!(matches!(err, Error::OutOfMemory(_)), "{err}");
        assert!(err.to_string().contains("this call needs about"), "{err}");
        ensure_fits(1, "a byte").unwrap();
    }

    #[test]
    fn failed_allocations_are_errors() {
        // Beyond `isize::MAX` bytes, and beyond any address space. The
        // buffer escapes through `black_box`: an optimised build may
        // otherwise drop an allocation that is never used, failure included.
        for n in [usize::MAX, usize::MAX / 2, 1 << 58] {
            match try_zeroed::<f32>(n, "a test buffer").map(std::hint::black_box) {
                Err(Error::OutOfMemory(msg)) => {
                    let bytes = n as u128 * 4;
                    assert_eq!(
                        msg,
                        format!("cannot allocate {bytes} bytes for a test buffer")
                    );
                }
                other => panic!("{n} values: {:?}", other.map(|v| v.len())),
            }
        }
        assert_eq!(try_zeroed::<f32>(3, "a test buffer").unwrap(), [0.0; 3]);
        assert!(try_zeroed::<f32>(0, "a test buffer").unwrap().is_empty());
    }

    #[test]
    fn the_cpu_device_reports_host_memory() {
        let dev = candle_core::Device::Cpu;
        assert_eq!(
            device_available_bytes(&dev).is_some(),
            available_bytes().is_some()
        );
    }
}
