//! `AutoencoderKLCogVideoX` (diffusers
//! `models/autoencoders/autoencoder_kl_cogvideox.py`): the 3D causal VAE
//! shared by every CogVideoX model.
//!
//! Videos are `[B, 3, T, H, W]` in `[-1, 1]`, latents `[B, 16, F, H/8, W/8]`
//! with `F = (T - 1) / 4 + 1` for the `T = 4k + 1` clips the pipelines use.
//! As in diffusers, clips are encoded 8 pixel frames and decoded 2 latent
//! frames at a time (the remainder joins the first batch), with the causal
//! convolutions' last input frames carried from batch to batch and
//! GroupNorm statistics taken per batch; this batching is part of the
//! numerics, and it keeps memory independent of the clip length.
//!
//! In f32 on the CPU the resnets, output norms and resamplers take fused
//! kernels (the `cpu` module) that make a few full-size buffers per block
//! instead of a temporary per candle op; other dtypes and devices use the
//! candle ops, and a unit test holds the two paths to the same results.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::causal_conv3d::ConvCache;
use super::tiling::{TileGrid, Tiling, run_tiled};
use super::vae::DiagonalGaussian;
use crate::checkpoint::{self, check_field, check_positive};
use crate::error::{Error, Result};

mod blocks;
mod peak_memory;

use blocks::{Decoder3D, Encoder3D};

type CResult<T> = candle_core::Result<T>;

const DOWN_BLOCK: &str = "CogVideoXDownBlock3D";
const UP_BLOCK: &str = "CogVideoXUpBlock3D";

/// Pixel frames per encoder batch (diffusers `num_sample_frames_batch_size`).
const SAMPLE_FRAMES_PER_BATCH: usize = 8;
/// Latent frames per decoder batch (diffusers `num_latent_frames_batch_size`).
const LATENT_FRAMES_PER_BATCH: usize = 2;

/// diffusers hard-codes this epsilon for the encoder's `norm_out` and for
/// every spatial norm, whatever `norm_eps` says.
const FIXED_NORM_EPS: f64 = 1e-6;

fn default_rgb() -> usize {
    3
}
fn default_down_blocks() -> Vec<String> {
    vec![DOWN_BLOCK.into(); 4]
}
fn default_up_blocks() -> Vec<String> {
    vec![UP_BLOCK.into(); 4]
}
fn default_silu() -> String {
    "silu".into()
}
fn default_norm_eps() -> f64 {
    1e-6
}
fn default_groups() -> usize {
    32
}
fn default_temporal_compression() -> f64 {
    4.0
}
fn default_sample_height() -> usize {
    480
}
fn default_sample_width() -> usize {
    720
}
fn default_scaling_factor() -> f64 {
    1.15258426
}

/// `vae/config.json`. The channel layout is required (every published
/// config has it); the rest defaults as in diffusers.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default = "default_rgb")]
    pub in_channels: usize,
    #[serde(default = "default_rgb")]
    pub out_channels: usize,
    #[serde(default = "default_down_blocks")]
    pub down_block_types: Vec<String>,
    #[serde(default = "default_up_blocks")]
    pub up_block_types: Vec<String>,
    pub block_out_channels: Vec<usize>,
    pub latent_channels: usize,
    pub layers_per_block: usize,
    #[serde(default = "default_silu")]
    pub act_fn: String,
    #[serde(default = "default_norm_eps")]
    pub norm_eps: f64,
    #[serde(default = "default_groups")]
    pub norm_num_groups: usize,
    #[serde(default = "default_temporal_compression")]
    pub temporal_compression_ratio: f64,
    /// Only used for the default tile size.
    #[serde(default = "default_sample_height")]
    pub sample_height: usize,
    #[serde(default = "default_sample_width")]
    pub sample_width: usize,
    /// Diffusion latents are `scaling_factor * vae_latents`.
    #[serde(default = "default_scaling_factor")]
    pub scaling_factor: f64,
    /// CogVideoX 1.5 image-to-video: image latents are divided by the
    /// scaling factor instead of multiplied.
    #[serde(default)]
    pub invert_scale_latents: bool,
    #[serde(default)]
    pub use_quant_conv: bool,
    #[serde(default)]
    pub use_post_quant_conv: bool,
}

impl Config {
    /// Pixels per latent pixel along H and W: 2 per downsampling block.
    pub fn spatial_compression(&self) -> usize {
        1 << self.block_out_channels.len().saturating_sub(1)
    }

    /// diffusers' `int(np.log2(temporal_compression_ratio))`: how many
    /// blocks (from the outermost) also halve / double time.
    fn temporal_levels(&self) -> usize {
        self.temporal_compression_ratio.log2() as usize
    }

    /// Checks what this port implements, and that every field feeding a
    /// size, count or division is in range, so an unusual or hostile config
    /// fails at load time with a message rather than computing something
    /// else later. The ranges hold every published config.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let n = self.block_out_channels.len();
        if !(1..=8).contains(&n) {
            return Err(format!(
                "block_out_channels has {n} entries; accepted: 1 to 8"
            ));
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return Err(format!(
                "{} down_block_types and {} up_block_types for {n} block_out_channels; accepted: {n} of each",
                self.down_block_types.len(),
                self.up_block_types.len()
            ));
        }
        if let Some(t) = self.down_block_types.iter().find(|t| *t != DOWN_BLOCK) {
            return Err(format!(
                "down block type `{t}` is not supported; accepted: {DOWN_BLOCK}"
            ));
        }
        if let Some(t) = self.up_block_types.iter().find(|t| *t != UP_BLOCK) {
            return Err(format!(
                "up block type `{t}` is not supported; accepted: {UP_BLOCK}"
            ));
        }
        if self.act_fn != "silu" && self.act_fn != "swish" {
            return Err(format!(
                "act_fn `{}` is not supported; accepted: silu, swish",
                self.act_fn
            ));
        }
        if self.use_quant_conv || self.use_post_quant_conv {
            return Err(
                "use_quant_conv / use_post_quant_conv true is not supported (no CogVideoX VAE uses them); accepted: false"
                    .into(),
            );
        }
        let g = self.norm_num_groups;
        check_field("norm_num_groups", g, 1..=1024)?;
        for &c in &self.block_out_channels {
            if !(1..=4096).contains(&c) || !c.is_multiple_of(g) {
                return Err(format!(
                    "block_out_channels entry {c} is out of range; accepted: multiples of norm_num_groups {g} up to 4096"
                ));
            }
        }
        // Frames are RGB in and out.
        check_field("in_channels", self.in_channels, 3..=3)?;
        check_field("out_channels", self.out_channels, 3..=3)?;
        check_field("latent_channels", self.latent_channels, 1..=1024)?;
        check_field("layers_per_block", self.layers_per_block, 1..=16)?;
        check_positive("norm_eps", self.norm_eps, 1.0)?;
        check_positive("scaling_factor", self.scaling_factor, 100.0)?;
        // diffusers halves time in the first log2(ratio) down blocks, and
        // only the first n - 1 have a downsampler.
        let r = self.temporal_compression_ratio;
        let max_ratio = 1usize << (n - 1);
        let power = (0..n).map(|k| (1usize << k) as f64).any(|p| p == r);
        if !power {
            return Err(format!(
                "temporal_compression_ratio {r} is out of range; accepted: a power of two from 1 to {max_ratio} ({n} blocks)"
            ));
        }
        // The default tile is half the sample; it must span two latent
        // pixels for the tiles' overlap to leave a stride.
        let c = self.spatial_compression();
        for (field, v) in [
            ("sample_height", self.sample_height),
            ("sample_width", self.sample_width),
        ] {
            check_field(field, v, 4 * c..=MAX_SAMPLE_SIDE)?;
        }
        Tiling::from_sample_size(self.sample_height, self.sample_width)
            .validate(c)
            .map_err(|e| {
                format!(
                    "sample_height {} and sample_width {} set default tiles that do not work: {e}",
                    self.sample_height, self.sample_width
                )
            })?;
        Ok(())
    }
}

/// Largest `sample_height` / `sample_width` accepted: twice the largest
/// frame the pipelines take, as the default tile is half the sample.
const MAX_SAMPLE_SIDE: usize = 8192;

/// Frame batches of a `frames`-frame clip in batches of `size` (at least one).
fn frame_batches(frames: usize, size: usize) -> usize {
    (frames / size).max(1)
}

/// The progress of one encode or decode call, in units of one frame batch of
/// one tile of one sample run: counts the units done and reports
/// `(done, total)` to the caller's callback, whose error stops the call.
struct Tally<'a> {
    done: usize,
    total: usize,
    report: &'a mut dyn FnMut(usize, usize) -> Result<()>,
}

impl<'a> Tally<'a> {
    /// Reports `(0, total)`.
    fn start(total: usize, report: &'a mut dyn FnMut(usize, usize) -> Result<()>) -> Result<Self> {
        report(0, total)?;
        Ok(Self {
            done: 0,
            total,
            report,
        })
    }

    fn step(&mut self) -> Result<()> {
        self.done += 1;
        (self.report)(self.done, self.total)
    }
}

/// Runs `f` over frame batches of `size` frames along axis 2, the remainder
/// joining the first batch (diffusers `_encode` / `_decode`), with one conv
/// cache flowing through, and concatenates the outputs in time. Each batch
/// is one unit of `tally`.
fn in_frame_batches(
    x: &Tensor,
    size: usize,
    slots: usize,
    tally: &mut Tally,
    mut f: impl FnMut(&Tensor, &mut ConvCache) -> Result<Tensor>,
) -> Result<Tensor> {
    let frames = x.dim(2)?;
    let batches = frame_batches(frames, size);
    let first = frames - (batches - 1) * size;
    let mut cache: ConvCache = vec![None; slots];
    let mut outs = Vec::with_capacity(batches);
    let mut start = 0;
    for k in 0..batches {
        let len = if k == 0 { first } else { size };
        outs.push(f(&x.narrow(2, start, len)?, &mut cache)?);
        start += len;
        tally.step()?;
    }
    drop(cache);
    Ok(Tensor::cat(&outs, 2)?)
}

/// Per-call tiling for [`AutoencoderKLCogVideoX::encode_with`] and
/// [`AutoencoderKLCogVideoX::decode_with`]. Tiles apply only to inputs larger
/// than one tile; tiled results differ slightly from untiled ones (as in
/// diffusers) and take less memory.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum VaeTiling {
    /// What [`AutoencoderKLCogVideoX::set_tiling`] chose (off unless set).
    #[default]
    Model,
    /// No tiling.
    Off,
    /// diffusers' `enable_tiling()` for this VAE's config: tiles of half the
    /// config's sample size, overlaps 1/6 (height) and 1/5 (width).
    Default,
    /// The default overlaps with the largest tiles of at most this many
    /// pixels that line up ([`Tiling::at_most`]; for the CogVideoX VAEs,
    /// multiples of 48 rows and 40 columns).
    Pixels { height: usize, width: usize },
    /// As `Pixels`, in latent pixels (pixels / the spatial compression, 8):
    /// multiples of 6 rows and 5 columns for the CogVideoX VAEs.
    Latents { height: usize, width: usize },
    /// These settings, which must line up ([`Tiling`]).
    Custom(Tiling),
}

/// Per-call settings of [`AutoencoderKLCogVideoX::encode_with`] and
/// [`AutoencoderKLCogVideoX::decode_with`]; the default follows the model's
/// own settings.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct VaeRunOptions {
    pub tiling: VaeTiling,
}

/// The two directions of the VAE, for
/// [`AutoencoderKLCogVideoX::estimate_peak_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VaeOp {
    Encode,
    Decode,
}

/// The CogVideoX VAE.
#[derive(Debug, Clone)]
pub struct AutoencoderKLCogVideoX {
    encoder: Encoder3D,
    decoder: Decoder3D,
    cfg: Config,
    tiling: Option<Tiling>,
    slicing: bool,
    dtype: DType,
    device: Device,
}

impl AutoencoderKLCogVideoX {
    /// Builds the VAE from `vb` (the `vae/` weights); checks the config
    /// first. Returns candle's error type so it can be passed to
    /// [`checkpoint::load_weights`]; see [`Self::from_dir`].
    pub fn load(vb: VarBuilder, cfg: &Config) -> CResult<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        Ok(Self {
            encoder: Encoder3D::load(vb.pp("encoder"), cfg)?,
            decoder: Decoder3D::load(vb.pp("decoder"), cfg)?,
            cfg: cfg.clone(),
            tiling: None,
            slicing: false,
            dtype: vb.dtype(),
            device: vb.device().clone(),
        })
    }

    /// Loads the VAE from a diffusers `vae/` folder (`config.json` and
    /// `diffusion_pytorch_model.safetensors`, possibly sharded).
    pub fn from_dir(dir: impl AsRef<Path>, dtype: DType, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let cfg: Config = checkpoint::read_component_config(dir, Config::validate)?;
        checkpoint::load_weights(dir, "diffusion_pytorch_model", dtype, device, |vb| {
            Self::load(vb, &cfg)
        })
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// diffusers' default tiling for this config (what `enable_tiling()`
    /// with no arguments uses).
    pub fn default_tiling(&self) -> Tiling {
        Tiling::from_sample_size(self.cfg.sample_height, self.cfg.sample_width)
    }

    /// Enables (`Some`) or disables (`None`) spatial tiling.
    pub fn set_tiling(&mut self, tiling: Option<Tiling>) -> Result<()> {
        if let Some(t) = &tiling {
            t.validate(self.cfg.spatial_compression())
                .map_err(Error::InvalidArgument)?;
        }
        self.tiling = tiling;
        Ok(())
    }

    pub fn tiling(&self) -> Option<Tiling> {
        self.tiling
    }

    /// With slicing, a batch is encoded / decoded one sample at a time
    /// (less memory, same numbers).
    pub fn set_slicing(&mut self, slicing: bool) {
        self.slicing = slicing;
    }

    pub fn slicing(&self) -> bool {
        self.slicing
    }

    /// The tiling `choice` stands for with this VAE, checked
    /// (`InvalidArgument` naming the size and the accepted range); `None` for
    /// no tiling.
    pub fn resolve_tiling(&self, choice: &VaeTiling) -> Result<Option<Tiling>> {
        let s = self.cfg.spatial_compression();
        let tiling = match *choice {
            VaeTiling::Model => return Ok(self.tiling),
            VaeTiling::Off => return Ok(None),
            VaeTiling::Default => {
                let t = self.default_tiling();
                t.validate(s).map_err(|e| {
                    Error::invalid(format!(
                        "the default tiles of this VAE (half of sample_height x sample_width in vae/config.json) are unusable: {e}"
                    ))
                })?;
                return Ok(Some(t));
            }
            VaeTiling::Pixels { height, width } => {
                Tiling::at_most(height, width, s).map_err(Error::InvalidArgument)?
            }
            VaeTiling::Latents { height, width } => {
                let bad = |e: String| {
                    Error::invalid(format!(
                        "tiles of {height}x{width} latent pixels ({s} pixels each): {e}"
                    ))
                };
                let px = |n: usize| n.saturating_mul(s);
                Tiling::at_most(px(height), px(width), s).map_err(bad)?
            }
            VaeTiling::Custom(t) => t,
        };
        tiling.validate(s).map_err(Error::InvalidArgument)?;
        Ok(Some(tiling))
    }

    /// Encodes a video `[B, in_channels, T, H, W]` (values in `[-1, 1]`, `H`
    /// and `W` multiples of the spatial compression, 8) into the posterior
    /// over latents `[B, latent_channels, F, H/8, W/8]`, with the model's
    /// settings; see [`Self::encode_with`].
    pub fn encode(&self, video: &Tensor) -> Result<DiagonalGaussian> {
        self.encode_with(video, &VaeRunOptions::default(), &mut |_, _| Ok(()))
    }

    /// [`Self::encode`] with per-call options and progress: `progress` is
    /// called with `(0, total)` before any work and with `(done, total)`
    /// after each unit, one frame batch (8 frames, the remainder joining the
    /// first) of one tile of one sample run; `total` is known up front. An
    /// error from `progress` stops the call at once and is returned as is.
    pub fn encode_with(
        &self,
        video: &Tensor,
        opts: &VaeRunOptions,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<DiagonalGaussian> {
        let (b, c, t, h, w) = dims5(video, "video")?;
        let s = self.cfg.spatial_compression();
        if c != self.cfg.in_channels {
            return Err(Error::invalid(format!(
                "video has {c} channels, the VAE takes {}",
                self.cfg.in_channels
            )));
        }
        if b == 0 || t == 0 {
            return Err(Error::invalid(format!(
                "video has {b} samples of {t} frames; both must be positive"
            )));
        }
        if h == 0 || w == 0 || h % s != 0 || w % s != 0 {
            return Err(Error::invalid(format!(
                "video frames are {h}x{w}; height and width must be positive multiples of {s}"
            )));
        }
        let tiling = self.resolve_tiling(&opts.tiling)?;
        let grid = self.tile_grid(VaeOp::Encode, (h, w), tiling.as_ref());
        let units = grid.map_or(1, |g| g.count(h, w)) * frame_batches(t, SAMPLE_FRAMES_PER_BATCH);
        let mut tally = Tally::start(self.runs(b) * units, progress)?;
        let x = video.to_device(&self.device)?.to_dtype(self.dtype)?;
        let moments = self.per_sample(&x, |x| match &grid {
            Some(g) => run_tiled(x, g, |tile| self.encode_frames(tile, &mut tally)),
            None => self.encode_frames(x, &mut tally),
        })?;
        Ok(DiagonalGaussian::from_moments(&moments)?)
    }

    /// Decodes latents `[B, latent_channels, F, h, w]` (unscaled: divide
    /// diffusion latents by `scaling_factor` first) into a video
    /// `[B, out_channels, T, 8h, 8w]`, roughly in `[-1, 1]`, with the model's
    /// settings; see [`Self::decode_with`].
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_with(z, &VaeRunOptions::default(), &mut |_, _| Ok(()))
    }

    /// [`Self::decode`] with per-call options and progress, as
    /// [`Self::encode_with`]; a unit is one frame batch (2 latent frames, the
    /// remainder joining the first) of one tile of one sample run.
    pub fn decode_with(
        &self,
        z: &Tensor,
        opts: &VaeRunOptions,
        progress: &mut dyn FnMut(usize, usize) -> Result<()>,
    ) -> Result<Tensor> {
        let (b, c, f, h, w) = dims5(z, "latents")?;
        if c != self.cfg.latent_channels {
            return Err(Error::invalid(format!(
                "latents have {c} channels, the VAE takes {}",
                self.cfg.latent_channels
            )));
        }
        if b == 0 || f == 0 || h == 0 || w == 0 {
            return Err(Error::invalid(format!(
                "latents of shape {:?} are empty",
                z.dims()
            )));
        }
        let tiling = self.resolve_tiling(&opts.tiling)?;
        let grid = self.tile_grid(VaeOp::Decode, (h, w), tiling.as_ref());
        let units = grid.map_or(1, |g| g.count(h, w)) * frame_batches(f, LATENT_FRAMES_PER_BATCH);
        let mut tally = Tally::start(self.runs(b) * units, progress)?;
        let z = z.to_device(&self.device)?.to_dtype(self.dtype)?;
        self.per_sample(&z, |z| match &grid {
            Some(g) => run_tiled(z, g, |tile| self.decode_frames(tile, &mut tally)),
            None => self.decode_frames(z, &mut tally),
        })
    }

    /// The tiles of an `h x w` input (pixels to encode, latents to decode),
    /// if tiled: as in diffusers' `_encode` and `_decode`, only inputs larger
    /// than one tile are.
    fn tile_grid(
        &self,
        op: VaeOp,
        (h, w): (usize, usize),
        tiling: Option<&Tiling>,
    ) -> Option<TileGrid> {
        let s = self.cfg.spatial_compression();
        let t = tiling?;
        match op {
            VaeOp::Encode => (h > t.tile_sample_min_height || w > t.tile_sample_min_width)
                .then(|| t.encode_grid(s)),
            VaeOp::Decode => {
                let (th, tw) = t.latent_tile(s);
                (h > th || w > tw).then(|| t.decode_grid(s))
            }
        }
    }

    /// How many times a batch of `b` samples runs through the network.
    fn runs(&self, b: usize) -> usize {
        if self.slicing { b } else { 1 }
    }

    /// Runs `f` on the whole batch, or per sample when slicing.
    fn per_sample(
        &self,
        x: &Tensor,
        mut f: impl FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let b = x.dim(0)?;
        if self.slicing && b > 1 {
            let outs = (0..b)
                .map(|i| f(&x.narrow(0, i, 1)?))
                .collect::<Result<Vec<_>>>()?;
            Ok(Tensor::cat(&outs, 0)?)
        } else {
            f(x)
        }
    }

    fn encode_frames(&self, x: &Tensor, tally: &mut Tally) -> Result<Tensor> {
        in_frame_batches(
            x,
            SAMPLE_FRAMES_PER_BATCH,
            self.encoder.cache_slots,
            tally,
            |x, cache| self.encoder.forward(x, cache),
        )
    }

    fn decode_frames(&self, z: &Tensor, tally: &mut Tally) -> Result<Tensor> {
        in_frame_batches(
            z,
            LATENT_FRAMES_PER_BATCH,
            self.decoder.cache_slots,
            tally,
            |z, cache| self.decoder.forward(z, cache),
        )
    }
}

fn dims5(x: &Tensor, what: &str) -> Result<(usize, usize, usize, usize, usize)> {
    x.dims5().map_err(|_| {
        Error::invalid(format!(
            "{what} must have 5 dimensions [B, C, T, H, W], got shape {:?}",
            x.dims()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 CPU path (fused kernels) against the generic candle-op path,
    /// which f64 takes, on the tiny 5b VAE: encode and decode with two frame
    /// batches and two samples.
    #[test]
    fn cpu_path_matches_generic_path() -> Result<()> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/tiny/cogvideox-5b/vae");
        let dev = Device::Cpu;
        let fast = AutoencoderKLCogVideoX::from_dir(&dir, DType::F32, &dev)?;
        let generic = AutoencoderKLCogVideoX::from_dir(&dir, DType::F64, &dev)?;
        let close = |a: &Tensor, b: &Tensor| -> Result<()> {
            let b = b.to_dtype(DType::F32)?;
            let diff = (a - &b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(diff <= 1e-4 * scale.max(1.0), "{diff} at scale {scale}");
            Ok(())
        };
        let video = Tensor::rand(-1f32, 1.0, (2, 3, 17, 16, 24), &dev)?;
        close(fast.encode(&video)?.mean(), generic.encode(&video)?.mean())?;
        let z = Tensor::randn(0f32, 1.0, (2, 16, 5, 2, 3), &dev)?;
        close(&fast.decode(&z)?, &generic.decode(&z)?)
    }

    #[test]
    fn frame_batches_put_the_remainder_first() -> Result<()> {
        let dev = Device::Cpu;
        let spans = |frames: usize, size: usize| -> Result<Vec<usize>> {
            let x = Tensor::zeros((1, 1, frames, 1, 1), DType::F32, &dev)?;
            let mut lens = Vec::new();
            let mut steps = 0;
            let mut count = |_, _| {
                steps += 1;
                Ok(())
            };
            let mut tally = Tally::start(frame_batches(frames, size), &mut count)?;
            in_frame_batches(&x, size, 0, &mut tally, |x, _| {
                lens.push(x.dim(2)?);
                Ok(x.clone())
            })?;
            assert_eq!(steps, lens.len() + 1, "one report per batch and one before");
            Ok(lens)
        };
        assert_eq!(spans(49, 8)?, vec![9, 8, 8, 8, 8, 8]);
        assert_eq!(spans(13, 8)?, vec![13]);
        assert_eq!(spans(17, 8)?, vec![9, 8]);
        assert_eq!(spans(5, 8)?, vec![5]);
        assert_eq!(spans(13, 2)?, vec![3, 2, 2, 2, 2, 2]);
        assert_eq!(spans(4, 2)?, vec![2, 2]);
        assert_eq!(spans(1, 2)?, vec![1]);
        Ok(())
    }
}
