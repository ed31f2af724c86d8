//! Which published CogVideoX model a checkpoint is, derived from its
//! transformer config (the only component whose shape differs), and what
//! each variant can do.

use crate::error::{Error, Result};
use crate::models::transformers::TransformerConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// CogVideoX-2b: sincos positions, no RoPE.
    CogVideoX2b,
    /// CogVideoX-5b: 3D RoPE.
    CogVideoX5b,
    /// CogVideoX-5b-I2V: RoPE, learned positions, image-conditioned input.
    CogVideoX5bI2V,
    /// CogVideoX1.5-5B: temporal patches of two latent frames.
    CogVideoX15_5b,
    /// CogVideoX1.5-5B-I2V: temporal patches, image conditioning, `ofs`.
    CogVideoX15_5bI2V,
}

impl Variant {
    /// Classifies a transformer config. Image-to-video models take twice the
    /// latent channels (noise plus image latents).
    pub fn detect(cfg: &TransformerConfig) -> Self {
        let i2v = cfg.in_channels == 2 * cfg.out_channels();
        match (
            cfg.patch_size_t.is_some(),
            i2v,
            cfg.use_rotary_positional_embeddings,
        ) {
            (true, true, _) => Variant::CogVideoX15_5bI2V,
            (true, false, _) => Variant::CogVideoX15_5b,
            (false, true, _) => Variant::CogVideoX5bI2V,
            (false, false, true) => Variant::CogVideoX5b,
            (false, false, false) => Variant::CogVideoX2b,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Variant::CogVideoX2b => "CogVideoX-2b",
            Variant::CogVideoX5b => "CogVideoX-5b",
            Variant::CogVideoX5bI2V => "CogVideoX-5b-I2V",
            Variant::CogVideoX15_5b => "CogVideoX1.5-5B",
            Variant::CogVideoX15_5bI2V => "CogVideoX1.5-5B-I2V",
        }
    }

    pub fn is_image_to_video(self) -> bool {
        matches!(self, Variant::CogVideoX5bI2V | Variant::CogVideoX15_5bI2V)
    }

    /// The pipeline classes `model_index.json` may name for this variant:
    /// video-to-video runs a text-to-video transformer.
    pub fn pipeline_classes(self) -> &'static [&'static str] {
        if self.is_image_to_video() {
            &["CogVideoXImageToVideoPipeline"]
        } else {
            &["CogVideoXPipeline", "CogVideoXVideoToVideoPipeline"]
        }
    }

    /// Frames per second of the published results (model cards).
    pub fn fps(self) -> u32 {
        match self {
            Variant::CogVideoX15_5b | Variant::CogVideoX15_5bI2V => 16,
            _ => 8,
        }
    }

    /// Image-to-video needs an image-conditioned transformer.
    pub fn ensure_image_to_video(self) -> Result<()> {
        if self.is_image_to_video() {
            Ok(())
        } else {
            Err(Error::UnsupportedVariant(format!(
                "{} is a text-to-video checkpoint; animating an image needs CogVideoX-5b-I2V or CogVideoX1.5-5B-I2V",
                self.name()
            )))
        }
    }

    /// Text-to-video and editing need a transformer without image input.
    pub fn ensure_text_to_video(self) -> Result<()> {
        if self.is_image_to_video() {
            Err(Error::UnsupportedVariant(format!(
                "{} is an image-to-video checkpoint; it needs an input image",
                self.name()
            )))
        } else {
            Ok(())
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
