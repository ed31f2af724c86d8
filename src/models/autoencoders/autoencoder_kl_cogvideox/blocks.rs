//! The VAE's blocks as diffusers defines them in
//! `autoencoder_kl_cogvideox.py`: the spatial norm, the resnet block, the
//! down and up blocks and the encoder and decoder built from them.

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;

use super::{CResult, Config, FIXED_NORM_EPS};
use crate::error::{Error, Result};
use crate::models::autoencoders::causal_conv3d::{
    CausalConv3d, ConvCache, GroupNorm, Pointwise, Residual, SlotCounter, gather, nearest_indices,
};
use crate::models::autoencoders::cpu::{self, Fill, Modulation, NormSilu};
use crate::models::autoencoders::downsampling::CogVideoXDownsample3D;
use crate::models::autoencoders::upsampling::CogVideoXUpsample3D;

/// The latent chunk a decoder batch is conditioned on (the spatial norms'
/// `zq`), with its resizes to each feature size memoised: every spatial norm
/// at one resolution resizes it the same way.
pub(super) struct Condition {
    pub(super) zq: Tensor,
    pub(super) resized: Vec<((usize, usize, usize), Tensor)>,
}

impl Condition {
    pub(super) fn new(zq: Tensor) -> Self {
        Self {
            zq,
            resized: Vec::new(),
        }
    }

    /// Latent frame of each of `t` feature frames (nearest): for odd
    /// `t > 1` the first latent frame maps to the first frame alone and the
    /// rest to the rest.
    pub(super) fn frame_map(&self, t: usize) -> CResult<Vec<u32>> {
        let tz = self.zq.dim(2)?;
        if t > 1 && t % 2 == 1 {
            if tz < 2 {
                candle_core::bail!("cannot split a {tz}-frame latent over {t} frames");
            }
            Ok(std::iter::once(0)
                .chain(nearest_indices(tz - 1, t - 1).into_iter().map(|i| i + 1))
                .collect())
        } else {
            Ok(nearest_indices(tz, t))
        }
    }

    /// `zq` resized (nearest) to `t x h x w`, frames as [`Self::frame_map`].
    pub(super) fn at(&mut self, (t, h, w): (usize, usize, usize)) -> CResult<Tensor> {
        if let Some((_, z)) = self.resized.iter().find(|(k, _)| *k == (t, h, w)) {
            return Ok(z.clone());
        }
        let (_, _, _, hz, wz) = self.zq.dims5()?;
        let dev = self.zq.device();
        let z = gather(&self.zq, 4, &nearest_indices(wz, w), dev)?;
        let z = gather(&z, 3, &nearest_indices(hz, h), dev)?;
        let z = gather(&z, 2, &self.frame_map(t)?, dev)?;
        self.resized.push(((t, h, w), z.clone()));
        Ok(z)
    }

    /// CPU f32: `conv_yb(zq)` for features of size `t x h x w`, computed at
    /// the latent's size with the resize of [`Self::at`] as index maps.
    pub(super) fn modulation(
        &self,
        conv_yb: &Pointwise,
        (t, h, w): (usize, usize, usize),
    ) -> CResult<Modulation> {
        let (_, _, tz, hz, wz) = self.zq.dims5()?;
        let widen = |v: Vec<u32>| v.into_iter().map(|i| i as usize).collect::<Vec<_>>();
        let frames = widen(self.frame_map(t)?);
        Ok(Modulation {
            yb: conv_yb.forward(&self.zq)?.flatten_all()?.to_vec1::<f32>()?,
            size: (tz, hz, wz),
            frames,
            rows: widen(nearest_indices(hz, h)),
            cols: widen(nearest_indices(wz, w)),
        })
    }
}

/// `CogVideoXSpatialNorm3D`: GroupNorm of the features, then
/// `norm * conv_y(zq) + conv_b(zq)` with `zq` resized to the features.
#[derive(Debug, Clone)]
pub(super) struct SpatialNorm3D {
    pub(super) norm: GroupNorm,
    /// `conv_y` and `conv_b` stacked: `[2C, zq_channels]`.
    pub(super) conv_yb: Pointwise,
    pub(super) channels: usize,
}

impl SpatialNorm3D {
    pub(super) fn load(
        vb: VarBuilder,
        channels: usize,
        zq_channels: usize,
        groups: usize,
    ) -> CResult<Self> {
        let conv_y = Pointwise::load(vb.pp("conv_y").pp("conv"), zq_channels, channels)?;
        let conv_b = Pointwise::load(vb.pp("conv_b").pp("conv"), zq_channels, channels)?;
        Ok(Self {
            norm: GroupNorm::load(vb.pp("norm_layer"), groups, channels, FIXED_NORM_EPS)?,
            conv_yb: conv_y.concat(&conv_b)?,
            channels,
        })
    }

    /// CPU f32: the GroupNorm affine and the modulation, for [`Fill::NormSilu`].
    pub(super) fn norm_silu(&self, f: &Tensor, cond: &Condition) -> Result<NormSilu> {
        let (_, _, t, h, w) = f.dims5()?;
        let mut n = self.norm.norm_silu(f)?;
        n.modulation = Some(cond.modulation(&self.conv_yb, (t, h, w))?);
        Ok(n)
    }

    pub(super) fn forward(&self, f: &Tensor, cond: &mut Condition) -> CResult<Tensor> {
        let (_, _, t, h, w) = f.dims5()?;
        let yb = self.conv_yb.forward(&cond.at((t, h, w))?)?;
        let c = self.channels;
        let y = yb.narrow(1, 0, c)?;
        let b = yb.narrow(1, c, c)?;
        self.norm.forward(f)?.mul(&y)?.add(&b)
    }
}

#[derive(Debug, Clone)]
pub(super) enum Norm {
    Group(GroupNorm),
    Spatial(SpatialNorm3D),
}

impl Norm {
    pub(super) fn forward(&self, x: &Tensor, cond: Option<&mut Condition>) -> CResult<Tensor> {
        match (self, cond) {
            (Norm::Group(n), _) => n.forward(x),
            (Norm::Spatial(n), Some(c)) => n.forward(x, c),
            (Norm::Spatial(_), None) => candle_core::bail!("spatial norm without a latent"),
        }
    }

    /// CPU f32: this norm of `x` for [`Fill::NormSilu`].
    pub(super) fn norm_silu(&self, x: &Tensor, cond: Option<&Condition>) -> Result<NormSilu> {
        match (self, cond) {
            (Norm::Group(n), _) => n.norm_silu(x),
            (Norm::Spatial(n), Some(c)) => n.norm_silu(x, c),
            (Norm::Spatial(_), None) => {
                Err(Error::Internal("spatial norm without a latent".into()))
            }
        }
    }
}

/// Per-block construction settings shared by encoder and decoder.
#[derive(Debug, Clone, Copy)]
pub(super) struct NormKind {
    pub(super) groups: usize,
    pub(super) eps: f64,
    /// `Some(zq channels)` for the decoder's spatial norms.
    pub(super) spatial: Option<usize>,
}

impl NormKind {
    pub(super) fn load(&self, vb: VarBuilder, channels: usize) -> CResult<Norm> {
        Ok(match self.spatial {
            None => Norm::Group(GroupNorm::load(vb, self.groups, channels, self.eps)?),
            Some(zq) => Norm::Spatial(SpatialNorm3D::load(vb, channels, zq, self.groups)?),
        })
    }
}

/// `CogVideoXResnetBlock3D` (no time embedding, dropout 0).
#[derive(Debug, Clone)]
pub(super) struct ResnetBlock3D {
    norm1: Norm,
    conv1: CausalConv3d,
    norm2: Norm,
    conv2: CausalConv3d,
    pub(super) shortcut: Option<Pointwise>,
}

impl ResnetBlock3D {
    pub(super) fn load(
        vb: VarBuilder,
        in_c: usize,
        out_c: usize,
        norm: NormKind,
        slots: &mut SlotCounter,
    ) -> CResult<Self> {
        Ok(Self {
            norm1: norm.load(vb.pp("norm1"), in_c)?,
            conv1: CausalConv3d::load(vb.pp("conv1"), in_c, out_c, slots)?,
            norm2: norm.load(vb.pp("norm2"), out_c)?,
            conv2: CausalConv3d::load(vb.pp("conv2"), out_c, out_c, slots)?,
            shortcut: if in_c != out_c {
                Some(Pointwise::load(vb.pp("conv_shortcut"), in_c, out_c)?)
            } else {
                None
            },
        })
    }

    pub(super) fn forward(
        &self,
        x: &Tensor,
        cache: &mut ConvCache,
        mut cond: Option<&mut Condition>,
    ) -> Result<Tensor> {
        if cpu::applies(x) {
            let n1 = self.norm1.norm_silu(x, cond.as_deref())?;
            let h =
                self.conv1
                    .forward_cpu(x.clone(), &Fill::NormSilu(&n1), Residual::None, cache)?;
            let n2 = self.norm2.norm_silu(&h, cond.as_deref())?;
            let residual = match &self.shortcut {
                Some(s) => Residual::Pointwise(s, x),
                None => Residual::Identity(x),
            };
            return self
                .conv2
                .forward_cpu(h, &Fill::NormSilu(&n2), residual, cache);
        }
        let mut h = self.norm1.forward(x, cond.as_deref_mut())?.silu()?;
        h = self.conv1.forward(&h, cache)?;
        h = self.norm2.forward(&h, cond)?.silu()?;
        h = self.conv2.forward(&h, cache)?;
        Ok(match &self.shortcut {
            Some(s) => (h + s.forward(x)?)?,
            None => (h + x)?,
        })
    }
}

/// The resnets of one down, mid or up block, then its resampler.
#[derive(Debug, Clone)]
pub(super) struct Block {
    pub(super) resnets: Vec<ResnetBlock3D>,
    pub(super) resample: Resample,
}

#[derive(Debug, Clone)]
pub(super) enum Resample {
    None,
    Down(CogVideoXDownsample3D),
    Up(CogVideoXUpsample3D),
}

impl Block {
    pub(super) fn load(
        vb: &VarBuilder,
        (in_c, out_c): (usize, usize),
        layers: usize,
        norm: NormKind,
        slots: &mut SlotCounter,
    ) -> CResult<Vec<ResnetBlock3D>> {
        (0..layers)
            .map(|i| {
                let c = if i == 0 { in_c } else { out_c };
                ResnetBlock3D::load(vb.pp(format!("resnets.{i}")), c, out_c, norm, slots)
            })
            .collect()
    }

    pub(super) fn forward(
        &self,
        x: &Tensor,
        cache: &mut ConvCache,
        mut cond: Option<&mut Condition>,
    ) -> Result<Tensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(&h, cache, cond.as_deref_mut())?;
        }
        match &self.resample {
            Resample::None => Ok(h),
            Resample::Down(d) => d.forward(&h),
            Resample::Up(u) => u.forward(&h),
        }
    }
}

/// `CogVideoXEncoder3D`: video frames to `[mean | logvar]` moments.
#[derive(Debug, Clone)]
pub(super) struct Encoder3D {
    pub(super) conv_in: CausalConv3d,
    pub(super) blocks: Vec<Block>,
    pub(super) norm_out: GroupNorm,
    pub(super) conv_out: CausalConv3d,
    pub(super) cache_slots: usize,
}

impl Encoder3D {
    pub(super) fn load(vb: VarBuilder, cfg: &Config) -> CResult<Self> {
        let mut slots = SlotCounter::default();
        let ch = &cfg.block_out_channels;
        let norm = NormKind {
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            spatial: None,
        };
        let conv_in = CausalConv3d::load(vb.pp("conv_in"), cfg.in_channels, ch[0], &mut slots)?;
        let mut blocks = Vec::with_capacity(ch.len() + 1);
        let mut out_c = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let in_c = out_c;
            out_c = c;
            let vb = vb.pp(format!("down_blocks.{i}"));
            let resnets = Block::load(&vb, (in_c, out_c), cfg.layers_per_block, norm, &mut slots)?;
            let resample = if i + 1 < ch.len() {
                let compress_time = i < cfg.temporal_levels();
                Resample::Down(CogVideoXDownsample3D::load(
                    vb.pp("downsamplers.0"),
                    out_c,
                    compress_time,
                )?)
            } else {
                Resample::None
            };
            blocks.push(Block { resnets, resample });
        }
        let mid = vb.pp("mid_block");
        blocks.push(Block {
            resnets: Block::load(&mid, (out_c, out_c), 2, norm, &mut slots)?,
            resample: Resample::None,
        });
        let norm_out = GroupNorm::load(
            vb.pp("norm_out"),
            cfg.norm_num_groups,
            out_c,
            FIXED_NORM_EPS,
        )?;
        let conv_out = CausalConv3d::load(
            vb.pp("conv_out"),
            out_c,
            2 * cfg.latent_channels,
            &mut slots,
        )?;
        Ok(Self {
            conv_in,
            blocks,
            norm_out,
            conv_out,
            cache_slots: slots.count(),
        })
    }

    pub(super) fn forward(&self, x: &Tensor, cache: &mut ConvCache) -> Result<Tensor> {
        let mut h = self.conv_in.forward(x, cache)?;
        for b in &self.blocks {
            h = b.forward(&h, cache, None)?;
        }
        if cpu::applies(&h) {
            let n = self.norm_out.norm_silu(&h)?;
            return self
                .conv_out
                .forward_cpu(h, &Fill::NormSilu(&n), Residual::None, cache);
        }
        h = self.norm_out.forward(&h)?.silu()?;
        self.conv_out.forward(&h, cache)
    }
}

/// `CogVideoXDecoder3D`: latents to video frames, every norm conditioned on
/// the batch's own latents.
#[derive(Debug, Clone)]
pub(super) struct Decoder3D {
    pub(super) conv_in: CausalConv3d,
    pub(super) blocks: Vec<Block>,
    pub(super) norm_out: SpatialNorm3D,
    pub(super) conv_out: CausalConv3d,
    pub(super) cache_slots: usize,
}

impl Decoder3D {
    pub(super) fn load(vb: VarBuilder, cfg: &Config) -> CResult<Self> {
        let mut slots = SlotCounter::default();
        let ch: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let zq = cfg.latent_channels;
        let norm = NormKind {
            groups: cfg.norm_num_groups,
            eps: FIXED_NORM_EPS,
            spatial: Some(zq),
        };
        let conv_in = CausalConv3d::load(vb.pp("conv_in"), zq, ch[0], &mut slots)?;
        let mid = vb.pp("mid_block");
        let mut blocks = vec![Block {
            resnets: Block::load(&mid, (ch[0], ch[0]), 2, norm, &mut slots)?,
            resample: Resample::None,
        }];
        let mut out_c = ch[0];
        for (i, &c) in ch.iter().enumerate() {
            let in_c = out_c;
            out_c = c;
            let vb = vb.pp(format!("up_blocks.{i}"));
            let layers = cfg.layers_per_block + 1;
            let resnets = Block::load(&vb, (in_c, out_c), layers, norm, &mut slots)?;
            let resample = if i + 1 < ch.len() {
                let compress_time = i < cfg.temporal_levels();
                Resample::Up(CogVideoXUpsample3D::load(
                    vb.pp("upsamplers.0"),
                    out_c,
                    compress_time,
                )?)
            } else {
                Resample::None
            };
            blocks.push(Block { resnets, resample });
        }
        let norm_out = SpatialNorm3D::load(vb.pp("norm_out"), out_c, zq, cfg.norm_num_groups)?;
        let conv_out = CausalConv3d::load(vb.pp("conv_out"), out_c, cfg.out_channels, &mut slots)?;
        Ok(Self {
            conv_in,
            blocks,
            norm_out,
            conv_out,
            cache_slots: slots.count(),
        })
    }

    pub(super) fn forward(&self, z: &Tensor, cache: &mut ConvCache) -> Result<Tensor> {
        let mut cond = Condition::new(z.clone());
        let mut h = self.conv_in.forward(z, cache)?;
        for b in &self.blocks {
            h = b.forward(&h, cache, Some(&mut cond))?;
        }
        if cpu::applies(&h) {
            let n = self.norm_out.norm_silu(&h, &cond)?;
            drop(cond);
            return self
                .conv_out
                .forward_cpu(h, &Fill::NormSilu(&n), Residual::None, cache);
        }
        h = self.norm_out.forward(&h, &mut cond)?.silu()?;
        drop(cond);
        self.conv_out.forward(&h, cache)
    }
}
