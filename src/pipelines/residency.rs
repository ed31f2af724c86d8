//! What stays loaded between calls. `Resident` keeps every model in memory
//! for the pipeline's life; `PerComponent` keeps the small VAE and loads the
//! T5 encoder and the transformer from the checkpoint for each use, so a
//! call's peak holds the larger of the two instead of both (the files stay
//! in the page cache, so reloading costs seconds against minutes of
//! sampling). `Auto` picks from the weights' size and the memory available.

use std::sync::Arc;

use crate::error::Result;

/// Residency of a loaded pipeline's models.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Residency {
    /// `Resident` when the weights and a default-size call fit in the memory
    /// budget, else `PerComponent`.
    #[default]
    Auto,
    /// Every model stays loaded.
    Resident,
    /// The T5 encoder and the transformer are loaded for each use.
    PerComponent,
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
