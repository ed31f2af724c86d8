//! The library's one error type. Every fallible public function returns
//! [`Result`]; the C layer maps each variant onto a status code.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller passed something the call cannot use (sizes, counts, options).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A file or folder could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A checkpoint file exists but its content is not what the model needs.
    #[error("bad checkpoint {}: {msg}", path.display())]
    BadCheckpoint { path: PathBuf, msg: String },

    /// The checkpoint is valid but this model variant cannot do what was asked.
    #[error("unsupported variant: {0}")]
    UnsupportedVariant(String),

    /// A memory allocation failed (host or device).
    #[error("out of memory: {0}")]
    OutOfMemory(String),

    /// The compute device reported an error.
    #[error("device error: {0}")]
    Device(String),

    /// The caller's progress callback asked to stop.
    #[error("cancelled")]
    Cancelled,

    /// A tensor operation failed in a way that points at a bug in this library.
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn bad_checkpoint(path: impl AsRef<Path>, msg: impl std::fmt::Display) -> Self {
        Error::BadCheckpoint {
            path: path.as_ref().to_path_buf(),
            msg: msg.to_string(),
        }
    }

    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    pub fn invalid(msg: impl std::fmt::Display) -> Self {
        Error::InvalidArgument(msg.to_string())
    }

    /// Prefixes the message with where the fault is ("input frame 3: ..."),
    /// keeping the kind, so the kind's own prefix is not repeated.
    pub fn context(self, what: &str) -> Self {
        match self {
            Error::InvalidArgument(m) => Error::InvalidArgument(format!("{what}: {m}")),
            Error::UnsupportedVariant(m) => Error::UnsupportedVariant(format!("{what}: {m}")),
            Error::OutOfMemory(m) => Error::OutOfMemory(format!("{what}: {m}")),
            Error::Device(m) => Error::Device(format!("{what}: {m}")),
            Error::Internal(m) => Error::Internal(format!("{what}: {m}")),
            other => other,
        }
    }
}

/// Errors of ours raised inside candle's callbacks (a weight read in a
/// `VarBuilder` backend), which candle carries as messages only, kept by
/// message so that converting candle's error back restores the kind. A read
/// failing mid-call (a streamed layer) surfaces far from where it was
/// raised; the few most recent are enough, the rest age out.
static RAISED: parking_lot::Mutex<Vec<(String, Error)>> = parking_lot::Mutex::new(Vec::new());
const RAISED_KEPT: usize = 8;

impl Error {
    /// `self` as a candle error with the same message, its kind restored
    /// when the error comes back through [`From<candle_core::Error>`] or
    /// [`Error::take_raised`].
    pub(crate) fn into_candle(self) -> candle_core::Error {
        let msg = self.to_string();
        let mut raised = RAISED.lock();
        if raised.len() == RAISED_KEPT {
            raised.remove(0);
        }
        raised.push((msg.clone(), self));
        candle_core::Error::Msg(msg)
    }

    /// The error raised by [`Error::into_candle`] that `e` carries, if any.
    pub(crate) fn take_raised(e: &candle_core::Error) -> Option<Error> {
        let msg = first_line(e);
        let mut raised = RAISED.lock();
        let i = raised.iter().rposition(|(m, _)| *m == msg)?;
        Some(raised.remove(i).1)
    }
}

/// candle's message: with RUST_BACKTRACE set candle appends a backtrace on
/// further lines.
fn first_line(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

impl From<candle_core::Error> for Error {
    fn from(e: candle_core::Error) -> Self {
        Error::take_raised(&e).unwrap_or_else(|| classify_candle_error(first_line(&e)))
    }
}

/// Candle reports allocation failures and CUDA faults as plain messages;
/// sort them so callers can react (retry smaller, fall back to CPU).
fn classify_candle_error(msg: String) -> Error {
    let lower = msg.to_ascii_lowercase();
    if lower.contains("out of memory") || lower.contains("alloc") && lower.contains("fail") {
        Error::OutOfMemory(msg)
    } else if lower.contains("cuda") || lower.contains("driver") {
        Error::Device(msg)
    } else {
        Error::Internal(msg)
    }
}
