//! The OpenFX C declarations, from the `openfx` crate's bindings (the same
//! ones the plugin uses).

pub use openfx::sys::generic::core::*;
pub use openfx::sys::generic::property::*;
pub use openfx::sys::image_effect_v1::image_effect::*;
pub use openfx::sys::image_effect_v1::memory::*;
pub use openfx::sys::image_effect_v1::message::*;
pub use openfx::sys::image_effect_v1::multi_thread::*;
pub use openfx::sys::image_effect_v1::param::*;
pub use openfx::sys::image_effect_v1::progress::*;
