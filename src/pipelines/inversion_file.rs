//! Inversions saved to and read back from a file, so that a caller (the
//! OpenFX plugin's disk cache) keeps one across processes: an inversion of
//! a 5B model is minutes of work.
//!
//! The format, little-endian throughout:
//! - 8 bytes `COGVXINV`, u32 format version (1), u32 zero;
//! - u64 checkpoint identity ([`super::identity`]);
//! - u32 height, width, frames of the clip, u32 inversion steps;
//! - u32 x 5, the latents' shape `[1, F, C, h, w]`, and 4 zero bytes;
//! - f32 values: the source latents, then the latent after each inversion
//!   step, each the product of the shape.
//!
//! Reading checks everything against the pipeline that reads the file
//! (same checkpoint, a size it can edit, the exact file length) before a
//! value is allocated, so a truncated, foreign or hostile file is an error.

use std::io::{Read, Write};
use std::path::Path;

use candle_core::{DType, Tensor};

use super::{Inversion, Pipeline};
use crate::error::{Error, Result};

const MAGIC: &[u8; 8] = b"COGVXINV";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 64;

fn u32_at(h: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(h[at..at + 4].try_into().unwrap_or_default())
}

impl Pipeline {
    /// Writes `inversion` (made by this pipeline) to `path`, through a
    /// temporary file beside it renamed into place, so that a failed write
    /// leaves no partial file under the name.
    pub fn save_inversion(&self, inversion: &Inversion, path: &Path) -> Result<()> {
        self.check_inversion(inversion)?;
        let (height, width, frames) = inversion.video_size();
        let source = inversion.source_latents();
        let dims = source.dims();
        let mut header = Vec::with_capacity(HEADER_BYTES);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&VERSION.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&self.identity.to_le_bytes());
        for v in [height, width, frames, inversion.steps()] {
            header.extend_from_slice(&(v as u32).to_le_bytes());
        }
        for &d in dims {
            header.extend_from_slice(&(d as u32).to_le_bytes());
        }
        header.resize(HEADER_BYTES, 0);

        // Beside the target under its whole name plus a suffix, so that
        // saves to `a.inv` and `a.bin` never share a temporary file.
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".partial");
        let tmp = std::path::PathBuf::from(tmp);
        let write = || -> Result<()> {
            let file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
            let mut out = std::io::BufWriter::new(file);
            out.write_all(&header).map_err(|e| Error::io(&tmp, e))?;
            for t in std::iter::once(source).chain(inversion.trajectory()) {
                let values = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                for v in values {
                    out.write_all(&v.to_le_bytes())
                        .map_err(|e| Error::io(&tmp, e))?;
                }
            }
            let file = out
                .into_inner()
                .map_err(|e| Error::io(&tmp, e.into_error()))?;
            file.sync_all().map_err(|e| Error::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        };
        let result = write();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Reads an inversion that [`Self::save_inversion`] wrote with a
    /// pipeline of the same checkpoint.
    pub fn load_inversion(&self, path: &Path) -> Result<Inversion> {
        self.ensure_invertible()?;
        let bad = |msg: String| Error::invalid(format!("{}: {msg}", path.display()));
        let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        let mut h = [0u8; HEADER_BYTES];
        if len < HEADER_BYTES as u64 {
            return Err(bad(format!(
                "{len} bytes is too short for an inversion file (truncated?)"
            )));
        }
        file.read_exact(&mut h).map_err(|e| Error::io(path, e))?;
        if &h[..8] != MAGIC {
            return Err(bad("not a libcogvideo inversion file".into()));
        }
        let version = u32_at(&h, 8);
        if version != VERSION {
            return Err(bad(format!(
                "inversion file format {version}; this library reads format {VERSION}"
            )));
        }
        let identity = u64::from_le_bytes(h[16..24].try_into().unwrap_or_default());
        if identity != self.identity {
            return Err(bad(format!(
                "the inversion was made with another checkpoint (identity {identity:016x}; this pipeline's is {:016x})",
                self.identity
            )));
        }
        let [height, width, frames, steps] = [24, 28, 32, 36].map(|at| u32_at(&h, at) as usize);
        self.check_size(height, width, frames)?;
        self.check_steps(steps)?;
        let (f, pad) = self.latent_frames(frames);
        if pad != 0 {
            return Err(bad(format!(
                "{frames} frames cannot be edited by this model"
            )));
        }
        let want = [1, f, self.latent_channels(), height / 8, width / 8];
        let dims = [40, 44, 48, 52, 56].map(|at| u32_at(&h, at) as usize);
        if dims != want {
            return Err(bad(format!(
                "latents of shape {dims:?}, but a {width}x{height} clip of {frames} frames has {want:?}"
            )));
        }
        let count: usize = want.iter().product();
        let expected = (steps as u64 + 1)
            .checked_mul(count as u64 * 4)
            .and_then(|b| b.checked_add(HEADER_BYTES as u64));
        if expected != Some(len) {
            return Err(bad(format!(
                "{len} bytes, but {} steps of {want:?} latents take {} (truncated or altered)",
                steps,
                expected.map_or("more than 2^64".into(), |e| e.to_string())
            )));
        }
        self.check_fits(height, width, frames, false, false)?;
        let mut reader = std::io::BufReader::new(file);
        let mut bytes = crate::memory::try_zeroed::<u8>(count * 4, "inversion file")?;
        let mut tensors = Vec::with_capacity(steps + 1);
        for _ in 0..=steps {
            reader
                .read_exact(&mut bytes)
                .map_err(|e| Error::io(path, e))?;
            let mut values = crate::memory::try_zeroed::<f32>(count, "inversion latents")?;
            for (v, b) in values.iter_mut().zip(bytes.chunks_exact(4)) {
                *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
            if values.iter().any(|v| !v.is_finite()) {
                return Err(bad("latents hold non-finite values".into()));
            }
            let t =
                Tensor::from_vec(values, want.as_slice(), &self.device)?.to_dtype(self.dtype)?;
            tensors.push(t);
        }
        let source = tensors.remove(0);
        crate::device::end_of_call(&self.device)?;
        Ok(Inversion::from_parts(
            self.id,
            source,
            tensors,
            (height, width, frames),
        ))
    }
}
