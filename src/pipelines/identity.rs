//! A checkpoint's identity: a stable 64-bit hash of what decides its
//! outputs, cheap enough to compute at every load, for callers to key
//! result caches on (and for saved inversions to name their checkpoint).
//!
//! Hashed, in a fixed order (relative paths sorted): the bytes of every
//! `.json` file (configs, indexes, tokenizer files), the tokenizer's
//! SentencePiece models, and the header of every `.safetensors` file (tensor
//! names, dtypes, shapes and offsets; the weights themselves are not read,
//! so a file whose values change in place with the same header keeps its
//! identity). FNV-1a ([`crate::checkpoint::Fnv`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::checkpoint::{Fnv, MAX_CONFIG_BYTES, read_regular_file};
use crate::error::{Error, Result};

/// More files than a checkpoint has; a folder with more is not one.
const MAX_FILES: usize = 10_000;
/// Folders deeper than this are not walked (a checkpoint is two deep).
const MAX_DEPTH: usize = 4;
/// The largest safetensors header read (diffusers' files stay far below).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// The files under `root` that the identity covers, sorted by relative path.
fn files(root: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![(root.to_path_buf(), 0usize)];
    while let Some((dir, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            // Follows links: hub caches link files to blobs.
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            if meta.is_dir() {
                if depth < MAX_DEPTH {
                    stack.push((path, depth + 1));
                }
                continue;
            }
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let covered = name.ends_with(".json")
                || name.ends_with(".safetensors")
                || name.ends_with(".model");
            if meta.is_file() && covered {
                let rel = path.strip_prefix(root).unwrap_or(&path);
                out.push((rel.to_string_lossy().replace('\\', "/"), path));
                if out.len() > MAX_FILES {
                    return Err(Error::bad_checkpoint(
                        root,
                        format!("more than {MAX_FILES} files: not a checkpoint folder"),
                    ));
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The header of a safetensors file: its 8-byte length and the JSON after it.
fn safetensors_header(path: &Path) -> Result<Vec<u8>> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|e| Error::io(path, e))?;
    let n = u64::from_le_bytes(len);
    if n > MAX_HEADER_BYTES {
        return Err(Error::bad_checkpoint(
            path,
            format!("safetensors header of {n} bytes is larger than {MAX_HEADER_BYTES}"),
        ));
    }
    let mut header = len.to_vec();
    file.take(n)
        .read_to_end(&mut header)
        .map_err(|e| Error::io(path, e))?;
    if header.len() as u64 != n + 8 {
        return Err(Error::bad_checkpoint(path, "truncated safetensors header"));
    }
    Ok(header)
}

/// The identity of the checkpoint folder at `root`.
pub fn checkpoint_identity(root: &Path) -> Result<u64> {
    let mut h = Fnv::new();
    for (rel, path) in files(root)? {
        h.field(rel.as_bytes());
        let bytes = if rel.ends_with(".safetensors") {
            safetensors_header(&path)?
        } else {
            read_regular_file(&path, MAX_CONFIG_BYTES)?
        };
        h.field(&bytes);
    }
    Ok(h.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_published_vectors() {
        // FNV-1a 64 test vectors (Fowler, Noll, Vo).
        for (input, want) in [
            (&b""[..], 0xcbf2_9ce4_8422_2325_u64),
            (b"a", 0xaf63_dc4c_8601_ec8c),
            (b"foobar", 0x8594_4171_f739_67e8),
        ] {
            let mut h = Fnv::new();
            h.write(input);
            assert_eq!(h.0, want, "{input:?}");
        }
    }
}
