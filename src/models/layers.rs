//! A model's stack of repeated layers (transformer blocks, T5 blocks),
//! either loaded with the model or streamed: read from the checkpoint right
//! before each layer runs and dropped after it, the next layer read on a
//! background thread meanwhile, so at most two layers are in memory. Models
//! build their stack with [`Layers::load`] and run it with
//! [`Layers::try_fold`]; which of the two it is, is the caller's choice.

use std::sync::Arc;

use candle_core::{Device, Result};
use candle_nn::VarBuilder;

type LayerLoader<L> = Arc<dyn Fn(usize) -> Result<L> + Send + Sync>;

/// Layers `0..n` of a model, kept or streamed.
pub enum Layers<L> {
    Loaded(Vec<L>),
    Streamed {
        count: usize,
        load: LayerLoader<L>,
        /// Where the layers are read to.
        device: Device,
    },
}

impl<L: Clone> Clone for Layers<L> {
    fn clone(&self) -> Self {
        match self {
            Self::Loaded(v) => Self::Loaded(v.clone()),
            Self::Streamed {
                count,
                load,
                device,
            } => Self::Streamed {
                count: *count,
                load: load.clone(),
                device: device.clone(),
            },
        }
    }
}

impl<L> std::fmt::Debug for Layers<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = if self.is_streamed() {
            "streamed"
        } else {
            "loaded"
        };
        write!(f, "Layers({} {kind})", self.len())
    }
}

impl<L> Layers<L> {
    pub fn len(&self) -> usize {
        match self {
            Self::Loaded(v) => v.len(),
            Self::Streamed { count, .. } => *count,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_streamed(&self) -> bool {
        matches!(self, Self::Streamed { .. })
    }
}

impl<L: Send> Layers<L> {
    /// Layers `0..count` read by `load(i, vb.pp(i))`. Streamed layers are
    /// each read once here too, and dropped: a bad checkpoint then fails at
    /// load time rather than mid-call, and the weights' reader sees every
    /// tensor used.
    pub fn load(
        count: usize,
        vb: VarBuilder<'static>,
        streamed: bool,
        load: impl Fn(usize, VarBuilder<'static>) -> Result<L> + Send + Sync + 'static,
    ) -> Result<Self> {
        let device = vb.device().clone();
        let load = move |i: usize| load(i, vb.pp(i.to_string()));
        if !streamed {
            return Ok(Self::Loaded((0..count).map(load).collect::<Result<_>>()?));
        }
        for i in 0..count {
            drop(load(i)?);
        }
        Ok(Self::Streamed {
            count,
            load: Arc::new(load),
            device,
        })
    }

    /// Runs `f` over the layers in order, threading `acc` through. Streamed
    /// layers: layer `i + 1` is read on a scoped thread while layer `i`
    /// runs, and layer `i` is dropped before `i + 1` is waited for. The
    /// reading thread waits for its uploads before handing the layer over:
    /// candle's CUDA devices run each host thread on its own stream and
    /// nothing orders one thread's copies before another's kernels.
    pub fn try_fold<T>(&self, mut acc: T, mut f: impl FnMut(T, &L) -> Result<T>) -> Result<T> {
        let (count, load, device) = match self {
            Self::Loaded(layers) => {
                for layer in layers {
                    acc = f(acc, layer)?;
                }
                return Ok(acc);
            }
            Self::Streamed {
                count,
                load,
                device,
            } => (*count, load, device),
        };
        if count == 0 {
            return Ok(acc);
        }
        std::thread::scope(|s| {
            let mut current = load(0)?;
            for i in 0..count {
                let next = (i + 1 < count).then(|| {
                    s.spawn(move || -> Result<L> {
                        let layer = load(i + 1)?;
                        device.synchronize()?;
                        Ok(layer)
                    })
                });
                let result = f(acc, &current);
                drop(current);
                let next = match next {
                    Some(handle) => Some(handle.join().map_err(|_| {
                        candle_core::Error::Msg(format!("reading layer {} panicked", i + 1))
                    })??),
                    None => None,
                };
                acc = result?;
                match next {
                    Some(layer) => current = layer,
                    None => break,
                }
            }
            Ok(acc)
        })
    }
}
