//! Results on disk, so that a segment is not computed again in a later
//! process (a host restart, an export in a separate process). An entry is
//! named by a hash of everything the result depends on, the source frames'
//! content and the checkpoint files' sizes and times included, so a stale
//! entry is never found. Folder: `$COGVIDEOX_OFX_CACHE`, else
//! `$XDG_CACHE_HOME/cogvideox-ofx/results` (`~/.cache/...`).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::image::{Frame, bytes_per_channel};

const MAGIC: &[u8; 8] = b"COGVOFX1";

/// Largest entry read back (a 49-frame 4K float segment is about 6.5 GB;
/// anything beyond this is not ours).
const MAX_ENTRY_BYTES: u64 = 16 << 30;

pub fn folder() -> PathBuf {
    if let Some(p) = std::env::var_os("COGVIDEOX_OFX_CACHE") {
        return PathBuf::from(p);
    }
    crate::log::cache_home()
        .join("cogvideox-ofx")
        .join("results")
}

/// Sizes and modification times of the checkpoint's files (two levels
/// deep), so that replacing the weights under the same path misses.
fn checkpoint_stamp(dir: &Path, h: &mut DefaultHasher) {
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
            f.hash(h);
            m.len().hash(h);
            m.modified().ok().hash(h);
        }
    }
}

/// The entry's path for a result depending on `key` (everything but the
/// checkpoint's files) and `sources` (the source frames' hashes).
pub fn entry(checkpoint: &str, key: &impl Hash, sources: &[u64]) -> PathBuf {
    let mut h = DefaultHasher::new();
    MAGIC.hash(&mut h);
    key.hash(&mut h);
    sources.hash(&mut h);
    checkpoint_stamp(Path::new(checkpoint), &mut h);
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
    std::fs::rename(&tmp, path)
}
