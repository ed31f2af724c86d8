//! What stays loaded between calls. `Resident` keeps every model in memory
//! for the pipeline's life; `PerComponent` keeps the small VAE and loads the
//! T5 encoder and the transformer from the checkpoint for each use, so a
//! call's peak holds the larger of the two instead of both (the files stay
//! in the page cache, so reloading costs seconds against minutes of
//! sampling); `Streamed` keeps the models without their blocks and reads
//! each block right before it runs (see [`crate::models::layers`]), so a
//! call holds two blocks of either model. `Auto` picks the first of the three
//! whose peak fits the memory budget.

use std::sync::Arc;

use crate::error::Result;
use crate::memory::plannable;

/// Residency of a loaded pipeline's models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Residency {
    /// The first of `Resident`, `PerComponent` and `Streamed` whose weights
    /// and a default-size call fit in nine tenths of the memory budget
    /// (`Streamed` when none does).
    #[default]
    Auto,
    /// Every model stays loaded.
    Resident,
    /// The T5 encoder and the transformer are loaded for each use.
    PerComponent,
    /// The blocks of the T5 encoder and of the transformer are read from the
    /// checkpoint for each use, one at a time with the next one prefetched;
    /// the rest of the models stays loaded.
    Streamed,
}

/// Bytes of each model's weights in its compute dtype, counted from the
/// checkpoint's headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WeightBytes {
    pub text_encoder: u64,
    /// Of `text_encoder`: the largest block.
    pub text_encoder_block: u64,
    pub transformer: u64,
    /// Of `transformer`: the largest block.
    pub transformer_block: u64,
    /// Of `text_encoder` and `transformer`: what is outside their blocks.
    pub text_encoder_rest: u64,
    pub transformer_rest: u64,
    pub vae: u64,
}

impl WeightBytes {
    pub fn total(&self) -> u64 {
        self.text_encoder + self.transformer + self.vae
    }

    /// Weights held between calls in `mode` (never `Auto`).
    pub fn kept(&self, mode: Residency) -> u64 {
        match mode {
            Residency::Auto | Residency::Resident => self.total(),
            Residency::PerComponent => self.vae,
            Residency::Streamed => self.vae + self.text_encoder_rest + self.transformer_rest,
        }
    }

    /// Weights held at a call's peak in `mode`: streaming holds the block
    /// running and the one being read.
    pub fn peak(&self, mode: Residency) -> u64 {
        match mode {
            Residency::Auto | Residency::Resident => self.total(),
            Residency::PerComponent => self.vae + self.text_encoder.max(self.transformer),
            Residency::Streamed => {
                self.kept(mode) + 2 * self.text_encoder_block.max(self.transformer_block)
            }
        }
    }
}

/// `Auto`'s choice for a call needing `call` bytes of working memory: the
/// first mode whose peak fits the [`plannable`] part of `budget`, else the
/// leanest.
pub fn choose(weights: &WeightBytes, call: u64, budget: u64) -> Residency {
    [Residency::Resident, Residency::PerComponent]
        .into_iter()
        .find(|&m| weights.peak(m).saturating_add(call) <= plannable(budget))
        .unwrap_or(Residency::Streamed)
}

pub(crate) type Loader<T> = Box<dyn Fn() -> Result<T> + Send + Sync>;

/// A model that is either kept or loaded again for every use.
pub(crate) enum Component<T> {
    Kept(Arc<T>),
    PerUse(Loader<T>),
}

impl<T> Component<T> {
    /// The model, for the duration of one use.
    pub fn get(&self) -> Result<Arc<T>> {
        match self {
            Component::Kept(m) => Ok(m.clone()),
            Component::PerUse(load) => Ok(Arc::new(load()?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_picks_the_first_mode_that_fits() {
        let w = WeightBytes {
            text_encoder: 900,
            text_encoder_block: 30,
            text_encoder_rest: 180,
            transformer: 1000,
            transformer_block: 20,
            transformer_rest: 160,
            vae: 40,
        };
        assert_eq!(w.peak(Residency::Resident), 1940);
        assert_eq!(w.peak(Residency::PerComponent), 1040);
        assert_eq!(w.peak(Residency::Streamed), 40 + 180 + 160 + 60);
        // Nine tenths of 2270 is 2043, of 2260 2034, of 1260 1134.
        assert_eq!(choose(&w, 100, 2270), Residency::Resident);
        assert_eq!(choose(&w, 100, 2260), Residency::PerComponent);
        assert_eq!(choose(&w, 100, 1270), Residency::PerComponent);
        assert_eq!(choose(&w, 100, 1260), Residency::Streamed);
        assert_eq!(choose(&w, 100, 0), Residency::Streamed);
    }
}
