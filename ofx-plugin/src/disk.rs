//! Results on disk, so that a segment is not computed again in a later
//! process (a host restart, an export in a separate process). An entry is
//! named by a hash of everything the result depends on, the source frames'
//! content and the checkpoint's identity included (`segment::ModelKey`), so a
//! stale entry is never found. Folder: `$COGVIDEOX_OFX_CACHE`, else
//! `$XDG_CACHE_HOME/cogvideox-ofx/results` (`~/.cache/...`); it is kept
//! under `$COGVIDEOX_OFX_CACHE_GB` gigabytes (default 20) by deleting the
//! least recently used entries. Sampled latents are kept the same way
//! (`.lat` beside the frames' `.bin`), so that a change that only affects
//! decoding decodes again instead of sampling again, and so are Edit's
//! inversions (`.inv`, the library's own format), so that a new prompt in
//! a later process edits without inverting again.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::image::{Frame, bytes_per_channel};

const MAGIC: &[u8; 8] = b"COGVOFX1";
const LATENTS_MAGIC: &[u8; 8] = b"COGVLAT1";

/// Largest entry read back (a 49-frame 4K float segment is about 6.5 GB;
/// anything beyond this is not ours).
const MAX_ENTRY_BYTES: u64 = 16 << 30;

/// The disk budget in bytes.
fn budget() -> u64 {
    let gb = std::env::var("COGVIDEOX_OFX_CACHE_GB")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(20.0);
    (gb * (1u64 << 30) as f64) as u64
}

pub fn folder() -> PathBuf {
    if let Some(p) = std::env::var_os("COGVIDEOX_OFX_CACHE") {
        return PathBuf::from(p);
    }
    crate::log::cache_home()
        .join("cogvideox-ofx")
        .join("results")
}

/// Sizes and modification times of the checkpoint's files (two levels
/// deep): what identifies a checkpoint where the library is older than
/// C API 1.3 and has no identity of its own.
pub fn checkpoint_stamp(dir: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    let mut files = Vec::new();
    for top in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = top.path();
        if p.is_dir() {
            files.extend(
                std::fs::read_dir(&p)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path()),
            );
        } else {
            files.push(p);
        }
    }
    files.sort();
    for f in files {
        if let Ok(m) = std::fs::metadata(&f) {
            f.hash(&mut h);
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
    }
    h.finish()
}

/// The entry's path for a result depending on `key` (the checkpoint's
/// identity among it) and `sources` (the source frames' hashes).
pub fn entry(key: &impl Hash, sources: &[u64]) -> PathBuf {
    let mut h = DefaultHasher::new();
    MAGIC.hash(&mut h);
    key.hash(&mut h);
    sources.hash(&mut h);
    folder().join(format!("{:016x}.bin", h.finish()))
}

/// The frames stored at `path`, or `None` when there are none (or they are
/// unreadable: the result is then computed again).
pub fn read(path: &Path) -> Option<Vec<Frame>> {
    let f = std::fs::File::open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.is_file() || meta.len() > MAX_ENTRY_BYTES {
        return None;
    }
    let mut r = std::io::BufReader::new(f);
    let mut head = [0u8; 24];
    r.read_exact(&mut head).ok()?;
    if &head[..8] != MAGIC {
        return None;
    }
    let word = |i: usize| u32::from_le_bytes(head[8 + 4 * i..12 + 4 * i].try_into().unwrap());
    let (n, w, h, format) = (word(0) as u64, word(1) as u64, word(2) as u64, word(3));
    let frame_bytes = w * h * 4 * bytes_per_channel(format) as u64;
    // Decide from the header and the file's size before allocating.
    if 24 + n * frame_bytes != meta.len() {
        return None;
    }
    // Reading counts as use for the least-recently-used pruning.
    let _ = r.get_ref().set_modified(std::time::SystemTime::now());
    let mut frames = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let mut fr = Frame::new(w as usize, h as usize, format);
        r.read_exact(&mut fr.data).ok()?;
        frames.push(fr);
    }
    Some(frames)
}

/// Stores `frames` at `path` (written aside and renamed, so readers never
/// see half an entry).
pub fn write(path: &Path, frames: &[Frame]) -> std::io::Result<()> {
    let Some(first) = frames.first() else {
        return Ok(());
    };
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        for v in [frames.len(), first.width, first.height] {
            f.write_all(&(v as u32).to_le_bytes())?;
        }
        f.write_all(&first.format.to_le_bytes())?;
        for fr in frames {
            f.write_all(&fr.data)?;
        }
        f.flush()?;
    }
    std::fs::rename(&tmp, path)?;
    prune(path.parent().unwrap_or(Path::new(".")), budget());
    Ok(())
}

/// Latents as a sampling call returned them: f32 values in `shape`
/// (`[1, F, 16, h, w]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Latents {
    pub shape: [i64; 5],
    pub values: Vec<f32>,
}

/// The entry's path for latents depending on `key` (everything sampling
/// depends on, and nothing only decoding does).
pub fn latents_entry(key: &impl Hash) -> PathBuf {
    entry(key, &[]).with_extension("lat")
}

/// The path of an inversion depending on `key` and `sources`, for
/// `InversionHandle::save` and `load` (the library writes it aside and
/// renames it, and refuses one of another checkpoint or a damaged one).
pub fn inversion_entry(key: &impl Hash, sources: &[u64]) -> PathBuf {
    entry(&("inversion", key), sources).with_extension("inv")
}

/// Counts a file written by someone else (the library) against the budget.
pub fn written(path: &Path) {
    prune(path.parent().unwrap_or(Path::new(".")), budget());
}

pub fn read_latents(path: &Path) -> Option<Latents> {
    let bytes = {
        let f = std::fs::File::open(path).ok()?;
        if f.metadata().ok()?.len() > MAX_ENTRY_BYTES {
            return None;
        }
        let mut v = Vec::new();
        std::io::BufReader::new(f).read_to_end(&mut v).ok()?;
        v
    };
    if bytes.len() < 48 || &bytes[..8] != LATENTS_MAGIC {
        return None;
    }
    let mut shape = [0i64; 5];
    for (i, d) in shape.iter_mut().enumerate() {
        *d = i64::from_le_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().ok()?);
    }
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?))?;
    if bytes.len() != 48 + 4 * n {
        return None;
    }
    let values = bytes[48..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let _ = std::fs::File::open(path).and_then(|f| f.set_modified(std::time::SystemTime::now()));
    Some(Latents { shape, values })
}

pub fn write_latents(path: &Path, l: &Latents) -> std::io::Result<()> {
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(LATENTS_MAGIC)?;
        for d in l.shape {
            f.write_all(&d.to_le_bytes())?;
        }
        for v in &l.values {
            f.write_all(&v.to_le_bytes())?;
        }
        f.flush()?;
    }
    std::fs::rename(&tmp, path)?;
    prune(path.parent().unwrap_or(Path::new(".")), budget());
    Ok(())
}

/// Deletes the least recently used entries in `dir` until they take at most
/// `max_bytes`.
fn prune(dir: &Path, max_bytes: u64) {
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|x| x == "bin" || x == "lat" || x == "inv")
        })
        .filter_map(|p| {
            let m = std::fs::metadata(&p).ok()?;
            Some((m.modified().ok()?, m.len(), p))
        })
        .collect();
    entries.sort();
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    for (_, len, p) in entries {
        if total <= max_bytes {
            break;
        }
        if std::fs::remove_file(&p).is_ok() {
            total -= len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    #[test]
    fn prune_deletes_the_least_recently_used_entries_beyond_the_budget() {
        let dir = std::env::temp_dir().join(format!("cogvideox-ofx-prune-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let now = SystemTime::now();
        for (i, name) in ["old.bin", "mid.bin", "new.bin"].iter().enumerate() {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            f.set_len(100).unwrap();
            f.set_modified(now - Duration::from_secs(100 * (3 - i as u64)))
                .unwrap();
        }
        std::fs::write(dir.join("other.txt"), [0u8; 500]).unwrap();
        prune(&dir, 250);
        let left = |n: &str| dir.join(n).exists();
        assert!(!left("old.bin") && left("mid.bin") && left("new.bin") && left("other.txt"));
        prune(&dir, 0);
        assert!(!left("mid.bin") && !left("new.bin") && left("other.txt"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn latents_read_back_and_a_truncated_entry_is_ignored() {
        let dir = std::env::temp_dir().join(format!("cogvideox-ofx-lat-{}", std::process::id()));
        let path = dir.join("e.lat");
        let l = Latents {
            shape: [1, 2, 16, 3, 2],
            values: (0..192).map(|i| i as f32 * 0.5 - 7.0).collect(),
        };
        write_latents(&path, &l).unwrap();
        assert_eq!(read_latents(&path), Some(l));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 4]).unwrap();
        assert_eq!(read_latents(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_entry_reads_back_and_a_truncated_one_is_ignored() {
        let dir = std::env::temp_dir().join(format!("cogvideox-ofx-entry-{}", std::process::id()));
        let path = dir.join("e.bin");
        let mut f = Frame::new(3, 2, crate::capi::FORMAT_RGBA16);
        f.data
            .iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = i as u8);
        write(&path, &[f.clone(), f.clone()]).unwrap();
        assert_eq!(read(&path), Some(vec![f.clone(), f]));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(read(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
