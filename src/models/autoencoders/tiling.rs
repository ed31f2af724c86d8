//! Spatial tiling of `AutoencoderKLCogVideoX` (diffusers `enable_tiling`,
//! `tiled_encode`, `tiled_decode`, `blend_v`, `blend_h`).

use candle_core::Tensor;

/// Largest tile side accepted, in pixels: four times the largest frame side
/// the pipelines take, so any usable tile fits and sizes stay far from
/// overflow.
pub const MAX_TILE_PIXELS: usize = 16384;

/// diffusers' default overlaps (`enable_tiling()`).
const DEFAULT_OVERLAP_HEIGHT: f64 = 1.0 / 6.0;
const DEFAULT_OVERLAP_WIDTH: f64 = 1.0 / 5.0;

/// Tiling settings, as diffusers' `enable_tiling` arguments. Inputs larger
/// than one tile in either direction are cut into overlapping tiles that are
/// encoded or decoded separately and blended; results then differ from
/// untiled runs (as in diffusers).
///
/// diffusers places the tiles of an input with one stride and assembles
/// their outputs with another, both rounded down from the overlap factor;
/// unless the two agree, its output has the wrong size with rows repeated.
/// [`Tiling::validate`] refuses such settings, and [`Tiling::at_most`] picks
/// sizes where they agree.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tiling {
    /// Tile height in pixels.
    pub tile_sample_min_height: usize,
    /// Tile width in pixels.
    pub tile_sample_min_width: usize,
    /// Fraction of a tile's height shared with the next tile, in `[0, 1)`.
    pub tile_overlap_factor_height: f64,
    /// Fraction of a tile's width shared with the next tile, in `[0, 1)`.
    pub tile_overlap_factor_width: f64,
}

/// How an input is cut into tiles and how the tile outputs are blended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TileGrid {
    /// Tile size in input units (height, width).
    pub tile: (usize, usize),
    /// Distance between tile origins in input units.
    pub stride: (usize, usize),
    /// Rows / columns of each output tile blended with its neighbour.
    pub blend: (usize, usize),
    /// Rows / columns of each output tile kept.
    pub keep: (usize, usize),
}

impl Tiling {
    /// diffusers' defaults: tiles of half the configured sample size,
    /// overlaps of 1/6 (height) and 1/5 (width).
    pub fn from_sample_size(sample_height: usize, sample_width: usize) -> Self {
        Self {
            tile_sample_min_height: sample_height / 2,
            tile_sample_min_width: sample_width / 2,
            tile_overlap_factor_height: DEFAULT_OVERLAP_HEIGHT,
            tile_overlap_factor_width: DEFAULT_OVERLAP_WIDTH,
        }
    }

    /// diffusers' default overlaps with the largest tiles of at most
    /// `height x width` pixels whose tiles line up (for 8x compression:
    /// multiples of 48 rows and 40 columns). Fails when even the smallest
    /// such tile is larger than asked, or a size is above
    /// [`MAX_TILE_PIXELS`].
    pub fn at_most(
        height: usize,
        width: usize,
        compression: usize,
    ) -> std::result::Result<Self, String> {
        let fit = |name: &str, max: usize, f: f64| {
            if max > MAX_TILE_PIXELS {
                return Err(format!(
                    "tile {name} {max} is above the largest accepted, {MAX_TILE_PIXELS} pixels"
                ));
            }
            let lines_up = |n: usize| aligned(n, f, compression);
            match (1..=max).rev().find(|&n| lines_up(n)) {
                Some(n) => Ok(n),
                None => {
                    let least = (max + 1..=MAX_TILE_PIXELS).find(|&n| lines_up(n));
                    Err(format!(
                        "tile {name} {max} is below the smallest that lines up with the default overlap, {} pixels",
                        least.map_or("none".into(), |n| n.to_string())
                    ))
                }
            }
        };
        Ok(Self {
            tile_sample_min_height: fit("height", height, DEFAULT_OVERLAP_HEIGHT)?,
            tile_sample_min_width: fit("width", width, DEFAULT_OVERLAP_WIDTH)?,
            tile_overlap_factor_height: DEFAULT_OVERLAP_HEIGHT,
            tile_overlap_factor_width: DEFAULT_OVERLAP_WIDTH,
        })
    }

    /// Tile size in latent pixels, for a VAE with the given spatial
    /// compression.
    pub(crate) fn latent_tile(&self, compression: usize) -> (usize, usize) {
        (
            self.tile_sample_min_height / compression,
            self.tile_sample_min_width / compression,
        )
    }

    /// diffusers `tiled_encode`: pixel tiles, latent blending.
    pub(crate) fn encode_grid(&self, compression: usize) -> TileGrid {
        let (fh, fw) = (
            self.tile_overlap_factor_height,
            self.tile_overlap_factor_width,
        );
        let (hs, ws) = (self.tile_sample_min_height, self.tile_sample_min_width);
        let (hl, wl) = self.latent_tile(compression);
        let blend = (scaled(hl, fh), scaled(wl, fw));
        TileGrid {
            tile: (hs, ws),
            stride: (scaled(hs, 1.0 - fh), scaled(ws, 1.0 - fw)),
            blend,
            keep: (hl - blend.0, wl - blend.1),
        }
    }

    /// diffusers `tiled_decode`: latent tiles, pixel blending.
    pub(crate) fn decode_grid(&self, compression: usize) -> TileGrid {
        let (fh, fw) = (
            self.tile_overlap_factor_height,
            self.tile_overlap_factor_width,
        );
        let (hs, ws) = (self.tile_sample_min_height, self.tile_sample_min_width);
        let (hl, wl) = self.latent_tile(compression);
        let blend = (scaled(hs, fh), scaled(ws, fw));
        TileGrid {
            tile: (hl, wl),
            stride: (scaled(hl, 1.0 - fh), scaled(wl, 1.0 - fw)),
            blend,
            keep: (hs - blend.0, ws - blend.1),
        }
    }

    /// Checks the settings give a usable grid (diffusers would fail on a zero
    /// stride, misbehave on factors outside `[0, 1)`, and assemble outputs of
    /// the wrong size from tiles that do not line up).
    pub(crate) fn validate(&self, compression: usize) -> std::result::Result<(), String> {
        for (name, f) in [
            (
                "tile_overlap_factor_height",
                self.tile_overlap_factor_height,
            ),
            ("tile_overlap_factor_width", self.tile_overlap_factor_width),
        ] {
            if !(0.0..1.0).contains(&f) {
                return Err(format!("{name} must be in [0, 1), got {f}"));
            }
        }
        let (hl, wl) = self.latent_tile(compression);
        if hl == 0 || wl == 0 {
            return Err(format!(
                "tiles of {}x{} pixels are smaller than one latent pixel ({compression}x{compression})",
                self.tile_sample_min_height, self.tile_sample_min_width
            ));
        }
        for (name, n) in [
            ("tile_sample_min_height", self.tile_sample_min_height),
            ("tile_sample_min_width", self.tile_sample_min_width),
        ] {
            if n > MAX_TILE_PIXELS {
                return Err(format!(
                    "{name} {n} is above the largest accepted, {MAX_TILE_PIXELS} pixels"
                ));
            }
        }
        let (enc, dec) = (self.encode_grid(compression), self.decode_grid(compression));
        if enc.stride.0 == 0 || enc.stride.1 == 0 || dec.stride.0 == 0 || dec.stride.1 == 0 {
            return Err(format!(
                "tiles of {}x{} pixels with overlaps {}/{} leave no stride between tiles",
                self.tile_sample_min_height,
                self.tile_sample_min_width,
                self.tile_overlap_factor_height,
                self.tile_overlap_factor_width
            ));
        }
        for (name, n, f) in [
            (
                "tile_sample_min_height",
                self.tile_sample_min_height,
                self.tile_overlap_factor_height,
            ),
            (
                "tile_sample_min_width",
                self.tile_sample_min_width,
                self.tile_overlap_factor_width,
            ),
        ] {
            if !aligned(n, f, compression) {
                let near = |mut r: Box<dyn Iterator<Item = usize>>| {
                    r.find(|&m| aligned(m, f, compression))
                        .map_or("none".into(), |m| m.to_string())
                };
                return Err(format!(
                    "{name} {n} with overlap {f} places tiles and assembles their outputs with different strides; nearest sizes that line up: {} and {} pixels",
                    near(Box::new((1..n).rev())),
                    near(Box::new(n + 1..=MAX_TILE_PIXELS))
                ));
            }
        }
        Ok(())
    }
}

/// Whether tiles of `n` pixels with overlap `f` line up along one axis: the
/// stride between tiles equals the rows kept of each tile's output, for
/// encoding (pixel stride, latent rows kept) and decoding (latent stride,
/// pixel rows kept).
fn aligned(n: usize, f: f64, compression: usize) -> bool {
    let l = n / compression;
    l > 0
        && scaled(n, 1.0 - f) == compression * (l - scaled(l, f))
        && scaled(l, 1.0 - f) * compression == n - scaled(n, f)
}

impl TileGrid {
    /// Number of tiles for an input of `h x w` (in input units).
    pub(crate) fn count(&self, h: usize, w: usize) -> usize {
        h.div_ceil(self.stride.0) * w.div_ceil(self.stride.1)
    }
}

/// Python's `int(n * f)` for the non-negative values used here.
fn scaled(n: usize, f: f64) -> usize {
    (n as f64 * f) as usize
}

/// Runs `f` on every tile of `x` `[B, C, T, H, W]` (row-major order) and
/// assembles the blended outputs. Each tile is blended with the already
/// blended tiles above and to its left, as diffusers does in place; only the
/// previous row of tiles is kept. `f`'s error (a cancellation, say) is
/// returned as is.
pub(crate) fn run_tiled<E: From<candle_core::Error>>(
    x: &Tensor,
    grid: &TileGrid,
    mut f: impl FnMut(&Tensor) -> Result<Tensor, E>,
) -> Result<Tensor, E> {
    let (_, _, _, h, w) = x.dims5()?;
    let mut above: Vec<Tensor> = Vec::new();
    let mut rows = Vec::new();
    for i in (0..h).step_by(grid.stride.0) {
        let mut row: Vec<Tensor> = Vec::new();
        let mut kept = Vec::new();
        for (jx, j) in (0..w).step_by(grid.stride.1).enumerate() {
            let input =
                x.narrow(3, i, grid.tile.0.min(h - i))?
                    .narrow(4, j, grid.tile.1.min(w - j))?;
            let mut tile = f(&input)?;
            if i > 0 {
                tile = blend(&above[jx], &tile, grid.blend.0, 3)?;
            }
            if jx > 0 {
                tile = blend(&row[jx - 1], &tile, grid.blend.1, 4)?;
            }
            let (th, tw) = (tile.dim(3)?, tile.dim(4)?);
            kept.push(
                tile.narrow(3, 0, grid.keep.0.min(th))?
                    .narrow(4, 0, grid.keep.1.min(tw))?,
            );
            row.push(tile);
        }
        rows.push(Tensor::cat(&kept, 4)?);
        above = row;
    }
    Ok(Tensor::cat(&rows, 3)?)
}

/// diffusers `blend_v` (`dim` 3) / `blend_h` (`dim` 4): the first `e` rows of
/// `b` become `a[-e + y] * (1 - y/e) + b[y] * (y/e)`, with
/// `e = min(a.size, b.size, extent)`. The weights are computed in f64 and
/// rounded to the tensor's dtype, as torch does for Python scalars.
fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> candle_core::Result<Tensor> {
    let (na, nb) = (a.dim(dim)?, b.dim(dim)?);
    let e = extent.min(na).min(nb);
    if e == 0 {
        return Ok(b.clone());
    }
    let mut shape = vec![1usize; 5];
    shape[dim] = e;
    let weights = |f: &dyn Fn(f64) -> f64| -> candle_core::Result<Tensor> {
        let v: Vec<f32> = (0..e).map(|y| f(y as f64 / e as f64) as f32).collect();
        Tensor::from_vec(v, shape.clone(), b.device())?.to_dtype(b.dtype())
    };
    let head = (a
        .narrow(dim, na - e, e)?
        .broadcast_mul(&weights(&|r| 1.0 - r)?)?
        + b.narrow(dim, 0, e)?.broadcast_mul(&weights(&|r| r)?)?)?;
    if e == nb {
        Ok(head)
    } else {
        Tensor::cat(&[&head, &b.narrow(dim, e, nb - e)?], dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grids_match_diffusers() {
        // 480x720 VAE config, 8x spatial compression (reference section 3.9).
        let t = Tiling::from_sample_size(480, 720);
        assert_eq!(
            t.decode_grid(8),
            TileGrid {
                tile: (30, 45),
                stride: (25, 36),
                blend: (40, 72),
                keep: (200, 288)
            }
        );
        assert_eq!(
            t.encode_grid(8),
            TileGrid {
                tile: (240, 360),
                stride: (200, 288),
                blend: (5, 9),
                keep: (25, 36)
            }
        );
        assert!(t.validate(8).is_ok());
    }

    #[test]
    fn blend_follows_the_row_formula() -> candle_core::Result<()> {
        let dev = candle_core::Device::Cpu;
        let a = Tensor::ones((1, 1, 1, 4, 1), candle_core::DType::F32, &dev)?;
        let b = Tensor::zeros((1, 1, 1, 3, 1), candle_core::DType::F32, &dev)?;
        let got = blend(&a, &b, 2, 3)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(got, vec![1.0, 0.5, 0.0]);
        Ok(())
    }
}
