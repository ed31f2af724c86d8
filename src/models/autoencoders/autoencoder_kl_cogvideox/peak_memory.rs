//! The VAE's model of its own peak memory, computed from the shapes alone
//! ([`AutoencoderKLCogVideoX::estimate_peak_bytes`]), so that a call that
//! cannot fit is refused before it starts. It follows the network's buffers
//! block by block, so it changes with the blocks in the parent module.

use super::{
    AutoencoderKLCogVideoX, Config, LATENT_FRAMES_PER_BATCH, SAMPLE_FRAMES_PER_BATCH, VaeOp,
    frame_batches,
};
use crate::models::autoencoders::causal_conv3d::{IM2COL_BUDGET_CPU, IM2COL_BUDGET_GPU};
use crate::models::autoencoders::cpu::{self, ConvShape};
use crate::models::autoencoders::tiling::Tiling;

impl AutoencoderKLCogVideoX {
    /// Estimated peak of the memory one sample's [`Self::encode_with`]
    /// (`Encode`: `frames x height x width` pixels) or [`Self::decode_with`]
    /// (`Decode`: latent frames, height and width) allocates on the VAE's
    /// device, weights and the caller's input excluded, with `tiling` as
    /// [`Self::resolve_tiling`] gives it. Computed from the shapes alone
    /// (saturating, allocating nothing) by following the network's buffers,
    /// so that a caller can refuse a call that cannot fit before starting it.
    ///
    /// It grows with height and width, and with the frames except where a
    /// longer clip is cut into more, smaller frame batches, as the real peak
    /// does (16 pixel frames run as two batches of 8 and need less than 15).
    /// Measured in f32 on the CPU it was 0.9x to 1.1x of the peak, full-size
    /// VAE included; the candle-op path (other dtypes, GPUs) is modelled with
    /// its extra temporaries and came out 1.3x to 1.4x of the peak in f64 on
    /// the CPU (unmeasured on GPUs). Leave some margin.
    pub fn estimate_peak_bytes(
        &self,
        op: VaeOp,
        frames: usize,
        height: usize,
        width: usize,
        tiling: Option<&Tiling>,
    ) -> u64 {
        let size = match op {
            VaeOp::Encode => SAMPLE_FRAMES_PER_BATCH,
            VaeOp::Decode => LATENT_FRAMES_PER_BATCH,
        };
        let grid = self.tile_grid(op, (height, width), tiling);
        let (th, tw) = grid.map_or((height, width), |g| {
            (g.tile.0.min(height), g.tile.1.min(width))
        });
        let batches = frame_batches(frames, size);
        let first = frames.saturating_sub((batches - 1) * size);
        let mut m = PeakModel::new(self);
        let first_out = m.batch(self, op, (first, th, tw));
        let mut peak = m.peak;
        let mut tile_out = first_out;
        if batches > 1 {
            // A later batch runs with every convolution's carried frames
            // and the earlier batches' outputs held.
            m.peak = 0;
            let out = m.batch(self, op, (size, th, tw));
            tile_out = first_out.saturating_add(out.saturating_mul(batches as u64 - 1));
            peak = peak.max(m.peak.saturating_add(tile_out - out));
            // The batches' outputs and their concatenation.
            peak = peak.max(tile_out.saturating_mul(2));
        }
        if let Some(g) = grid {
            // The assembled output so far, the row of tiles above and the
            // current row; then the rows and their concatenation.
            let area = |h: usize, w: usize| (h as u64).saturating_mul(w as u64).max(1);
            let whole = tile_out.saturating_mul(area(height, width)) / area(th, tw);
            let row = tile_out.saturating_mul(width.div_ceil(g.stride.1) as u64);
            peak = peak
                .saturating_add(whole)
                .saturating_add(row.saturating_mul(2))
                .max(whole.saturating_mul(3));
        }
        // The posterior's mean and log-variance beside the moments.
        peak.max(tile_out.saturating_mul(2))
    }
}

/// A tensor shape `(channels, frames, height, width)` of one sample.
type Shape = (usize, usize, usize, usize);

/// The buffers of one frame batch, followed through the network for
/// [`AutoencoderKLCogVideoX::estimate_peak_bytes`]: at every convolution
/// what is held around it (block inputs, residuals), its padded input, its
/// im2col band and its output, plus the frames every causal convolution
/// carries to the next batch.
struct PeakModel {
    elem: u64,
    /// The candle-op path (GPU, or not f32), with more temporaries than the
    /// CPU kernels: the norm and SiLU outputs, the padding copies, the band
    /// products and their concatenations.
    generic: bool,
    im2col_budget: u64,
    /// Carried frames per causal convolution, in call order.
    carried: Vec<u64>,
    slot: usize,
    peak: u64,
}

impl PeakModel {
    fn new(vae: &AutoencoderKLCogVideoX) -> Self {
        let cpu = vae.device.is_cpu();
        Self {
            elem: vae.dtype.size_in_bytes() as u64,
            generic: !crate::models::cpu::applies_to(&vae.device, vae.dtype),
            im2col_budget: if cpu {
                IM2COL_BUDGET_CPU
            } else {
                IM2COL_BUDGET_GPU
            } as u64,
            carried: Vec::new(),
            slot: 0,
            peak: 0,
        }
    }

    fn bytes(&self, (c, t, h, w): Shape) -> u64 {
        [c, t, h, w]
            .iter()
            .fold(self.elem, |a, &d| a.saturating_mul(d as u64))
    }

    fn note(&mut self, live: u64) {
        let carried = self.carried.iter().fold(0u64, |a, &b| a.saturating_add(b));
        self.peak = self.peak.max(live.saturating_add(carried));
    }

    /// A 3x3 convolution of `x` to `out_c` channels with `taps` temporal taps
    /// (3: causal, carrying two frames) and spatial `stride`, with `held`
    /// bytes live around it; returns the output's shape.
    fn conv(&mut self, held: u64, x: Shape, out_c: usize, taps: usize, stride: usize) -> Shape {
        let (c, t, h, w) = x;
        let tp = t.saturating_add(taps - 1);
        let padded = self.bytes((c, tp, h.saturating_add(2), w.saturating_add(2)));
        let out_shape = (out_c, t, h.div_ceil(stride), w.div_ceil(stride));
        let out = self.bytes(out_shape);
        let row = self.bytes((9usize.saturating_mul(c), tp, 1, out_shape.3));
        let cols = row
            .saturating_mul(out_shape.2 as u64)
            .min(self.im2col_budget.max(row));
        let context = if taps > 1 {
            self.bytes((c, taps - 1, h, w))
        } else {
            0
        };
        let live = if self.generic {
            let input = self.bytes(x);
            held.saturating_add(input).saturating_add(
                (padded.saturating_mul(3)).max(
                    padded
                        .saturating_add(cols.saturating_mul(2))
                        .saturating_add(out.saturating_mul(3)),
                ),
            )
        } else {
            let scratch = if cpu::takes_channels_last(c, out_c, stride) {
                let shape = ConvShape {
                    input: [1, c, tp, h.saturating_add(2), w.saturating_add(2)],
                    kernel: (taps, 3, 3),
                    stride,
                    // A first frame batch's, the larger.
                    replicated: taps - 1,
                };
                let budget = (self.im2col_budget / self.elem) as usize;
                (cpu::channels_last_scratch(shape, out_c, budget) as u64).saturating_mul(self.elem)
            } else {
                cols
            };
            held.saturating_add(padded)
                .saturating_add(scratch)
                .saturating_add(out)
        };
        self.note(live.saturating_add(context));
        if taps > 1 {
            if self.slot == self.carried.len() {
                self.carried.push(0);
            }
            self.carried[self.slot] = context;
            self.slot += 1;
        }
        out_shape
    }

    /// A resnet of `x` to `out_c` channels, `held` bytes live around it;
    /// `spatial` for the decoder's latent-conditioned norms.
    fn resnet(&mut self, held: u64, x: Shape, out_c: usize, spatial: bool) -> Shape {
        let input = self.bytes(x);
        // The generic spatial norm makes `conv_y` and `conv_b` of the latent
        // at the feature size, then scales and shifts.
        let norm = |m: &Self, s: Shape| {
            if m.generic && spatial {
                m.bytes(s).saturating_mul(3)
            } else {
                0
            }
        };
        let held = held.saturating_add(input);
        let h = self.conv(held.saturating_add(norm(self, x)), x, out_c, 3, 1);
        let extra = if self.generic { self.bytes(h) } else { 0 };
        let held = held.saturating_add(extra).saturating_add(norm(self, h));
        self.conv(held, h, out_c, 3, 1)
    }

    /// The resnets of a block, its input held throughout.
    fn resnets(&mut self, x: Shape, out_c: usize, layers: usize, spatial: bool) -> Shape {
        let input = self.bytes(x);
        let mut h = self.resnet(0, x, out_c, spatial);
        for _ in 1..layers {
            h = self.resnet(input, h, out_c, spatial);
        }
        h
    }

    /// One encoder frame batch of `(frames, height, width)` pixels; returns
    /// the bytes of its output.
    fn encode_batch(&mut self, cfg: &Config, (t, h, w): (usize, usize, usize)) -> u64 {
        let ch = &cfg.block_out_channels;
        let mut x = self.conv(0, (cfg.in_channels, t, h, w), ch[0], 3, 1);
        for (i, &c) in ch.iter().enumerate() {
            let input = self.bytes(x);
            let y = self.resnets(x, c, cfg.layers_per_block, false);
            x = if i + 1 < ch.len() {
                let held = input.saturating_add(self.bytes(y));
                let (c, mut t, h, w) = y;
                if i < cfg.temporal_levels() && t > 1 {
                    // Frame halving: a contiguous copy of the frame pairs,
                    // their average and the result.
                    self.note(held.saturating_add(self.bytes(y).saturating_mul(2)));
                    t = t.div_ceil(2);
                }
                let halved = (c, t, h, w);
                self.conv(held.saturating_add(self.bytes(halved)), halved, c, 1, 2)
            } else {
                y
            };
        }
        let c = x.0;
        x = self.resnets(x, c, 2, false);
        let moments = cfg.latent_channels.saturating_mul(2);
        let out = self.conv(self.bytes(x), x, moments, 3, 1);
        self.bytes(out)
    }

    /// One decoder frame batch of `(frames, height, width)` latents; returns
    /// the bytes of its output.
    fn decode_batch(&mut self, cfg: &Config, (t, h, w): (usize, usize, usize)) -> u64 {
        let ch: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let mut x = self.conv(0, (cfg.latent_channels, t, h, w), ch[0], 3, 1);
        x = self.resnets(x, ch[0], 2, true);
        for (i, &c) in ch.iter().enumerate() {
            let input = self.bytes(x);
            let y = self.resnets(x, c, cfg.layers_per_block + 1, true);
            x = if i + 1 < ch.len() {
                let (c, t, h, w) = y;
                let t = if i < cfg.temporal_levels() && t > 1 {
                    t.saturating_mul(2) - t % 2
                } else {
                    t
                };
                let held = input.saturating_add(self.bytes(y));
                let (h, w) = (h.saturating_mul(2), w.saturating_mul(2));
                self.conv(held, (c, t, h, w), c, 1, 1)
            } else {
                y
            };
        }
        let out = self.conv(self.bytes(x), x, cfg.out_channels, 3, 1);
        self.bytes(out)
    }

    fn batch(
        &mut self,
        vae: &AutoencoderKLCogVideoX,
        op: VaeOp,
        dims: (usize, usize, usize),
    ) -> u64 {
        self.slot = 0;
        match op {
            VaeOp::Encode => self.encode_batch(&vae.cfg, dims),
            VaeOp::Decode => self.decode_batch(&vae.cfg, dims),
        }
    }
}
