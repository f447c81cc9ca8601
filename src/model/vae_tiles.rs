//! Tiled VAE passes: the geometry of overlapping tiles and their blending.
//!
//! A large decode (or encode) runs as overlapping tiles whose outputs are
//! blended with feathered weights: each tile's weight ramps linearly from
//! near 0 at its edge to 1 across the overlap, so a pixel near a tile's edge
//! (where the convolutions saw padding instead of the neighbouring content)
//! comes mostly from the tile whose interior it lies in. The blended value is
//! the weighted mean over the tiles covering the pixel. Edges of the image
//! keep full weight, since no other tile covers them.
//!
//! On a seamless axis the tiles wrap around: positions are taken modulo the
//! size, tiles crossing the edge read the opposite side, so the result still
//! tiles. An axis that fits in one tile is processed whole (and on a seamless
//! axis the wrapped graph then makes it exactly periodic).
//!
//! Positions are in latent pixels; a tile is `scale_in` input and `scale_out`
//! output pixels per latent pixel (decode: 1 and 8, encode: 8 and 1).
//! diffusers' `AutoencoderKL.tiled_decode` blends the same way in spirit
//! (linear blends over a quarter-tile overlap, no wrap); stable-diffusion.cpp
//! tiles latents with overlap and smooth blending too.
use ndarray::{ArrayD, IxDyn};

use crate::error::{Error, Result};

/// Tiles along one axis: their start positions and their common length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AxisPlan {
    /// Start of each tile, in latent pixels.
    pub starts: Vec<usize>,
    /// Length of every tile, in latent pixels.
    pub tile: usize,
    /// The axis length.
    pub len: usize,
    /// Overlap that the weights ramp over, in latent pixels.
    pub overlap: usize,
    /// Whether tiles wrap around the edge.
    pub wrap: bool,
}

impl AxisPlan {
    /// Plans `len` latent pixels as tiles of `tile` overlapping by at least
    /// `overlap` (`overlap < tile`); `wrap` for a seamless axis.
    pub fn new(len: usize, tile: usize, overlap: usize, wrap: bool) -> Self {
        if tile >= len || tile == 0 {
            return Self { starts: vec![0], tile: len, len, overlap: 0, wrap: false };
        }
        let overlap = overlap.min(tile - 1);
        let stride = tile - overlap;
        let starts = if wrap {
            // Evenly spread around the circle: gaps of at most `stride`.
            let n = len.div_ceil(stride);
            (0..n).map(|i| (i * len + n / 2) / n).collect()
        } else {
            // First tile at 0, last ending at `len`, evenly spread between.
            let n = (len - overlap).div_ceil(stride).max(2);
            (0..n).map(|i| (i * (len - tile) + (n - 1) / 2) / (n - 1)).collect()
        };
        Self { starts, tile, len, overlap, wrap }
    }

    /// The tile's weight at `k` of `tile * scale` output pixels: a linear
    /// ramp over the overlap at each end that borders another tile.
    fn weight(&self, start: usize, k: usize, scale: usize) -> f32 {
        if self.starts.len() == 1 || self.overlap == 0 {
            return 1.0;
        }
        let ramp = (self.overlap * scale) as f32;
        let n = self.tile * scale;
        let rise = if self.wrap || start > 0 { (k as f32 + 0.5) / ramp } else { 1.0 };
        let fall = if self.wrap || start + self.tile < self.len { (n as f32 - k as f32 - 0.5) / ramp } else { 1.0 };
        rise.min(fall).min(1.0)
    }
}

/// Runs `run` over the tiles of `input` (`[1, C, h·scale_in, w·scale_in]`)
/// and blends its outputs (`[1, C', tile·scale_out, …]`) into one
/// `[1, C', h·scale_out, w·scale_out]` array.
pub fn run_tiled(
    input: &ArrayD<f32>,
    rows: &AxisPlan,
    cols: &AxisPlan,
    scale_in: usize,
    scale_out: usize,
    run: &mut dyn FnMut(ArrayD<f32>) -> Result<ArrayD<f32>>,
) -> Result<ArrayD<f32>> {
    let shape = input.shape();
    if shape.len() != 4 || shape[0] != 1 || shape[2] != rows.len * scale_in || shape[3] != cols.len * scale_in {
        return Err(Error::internal(format!("tiled VAE input {shape:?} does not match the plan")));
    }
    let channels = shape[1];
    let (out_h, out_w) = (rows.len * scale_out, cols.len * scale_out);
    let mut sum: Option<ArrayD<f32>> = None;
    let mut weight_sum = vec![0f32; out_h * out_w];
    let (th_in, tw_in) = (rows.tile * scale_in, cols.tile * scale_in);
    let (th_out, tw_out) = (rows.tile * scale_out, cols.tile * scale_out);
    let (in_h, in_w) = (shape[2], shape[3]);
    for &ys in &rows.starts {
        for &xs in &cols.starts {
            let mut tile = ArrayD::zeros(IxDyn(&[1, channels, th_in, tw_in]));
            for c in 0..channels {
                for y in 0..th_in {
                    let sy = (ys * scale_in + y) % in_h;
                    for x in 0..tw_in {
                        tile[[0, c, y, x]] = input[[0, c, sy, (xs * scale_in + x) % in_w]];
                    }
                }
            }
            let out = run(tile)?;
            let os = out.shape();
            if os.len() != 4 || os[0] != 1 || os[2] != th_out || os[3] != tw_out {
                return Err(Error::model(format!(
                    "a VAE tile of {}x{} gave shape {os:?}; expected [1, C, {th_out}, {tw_out}]",
                    tw_in, th_in
                )));
            }
            let out_c = os[1];
            let acc = sum.get_or_insert_with(|| ArrayD::zeros(IxDyn(&[1, out_c, out_h, out_w])));
            if acc.shape()[1] != out_c {
                return Err(Error::model("VAE tiles gave different channel counts"));
            }
            let wy: Vec<f32> = (0..th_out).map(|k| rows.weight(ys, k, scale_out)).collect();
            let wx: Vec<f32> = (0..tw_out).map(|k| cols.weight(xs, k, scale_out)).collect();
            for y in 0..th_out {
                let oy = (ys * scale_out + y) % out_h;
                for x in 0..tw_out {
                    let ox = (xs * scale_out + x) % out_w;
                    let w = wy[y] * wx[x];
                    weight_sum[oy * out_w + ox] += w;
                    for c in 0..out_c {
                        acc[[0, c, oy, ox]] += w * out[[0, c, y, x]];
                    }
                }
            }
        }
    }
    let mut acc = sum.ok_or_else(|| Error::internal("tiled VAE pass with no tiles"))?;
    let out_c = acc.shape()[1];
    for c in 0..out_c {
        for y in 0..out_h {
            for x in 0..out_w {
                let w = weight_sum[y * out_w + x];
                if w <= 0.0 {
                    return Err(Error::internal(format!("tiled VAE pass left pixel ({x}, {y}) uncovered")));
                }
                acc[[0, c, y, x]] /= w;
            }
        }
    }
    Ok(acc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covered(p: &AxisPlan) -> Vec<usize> {
        let mut n = vec![0; p.len];
        for &s in &p.starts {
            for k in 0..p.tile {
                n[(s + k) % p.len] += 1;
            }
        }
        n
    }

    #[test]
    fn plans_cover_every_pixel_with_the_overlap() {
        for len in [8, 17, 32, 64, 100, 256] {
            for (tile, overlap) in [(8, 2), (16, 4), (32, 8), (24, 12)] {
                for wrap in [false, true] {
                    let p = AxisPlan::new(len, tile, overlap, wrap);
                    assert!(covered(&p).iter().all(|&c| c >= 1), "{p:?}");
                    if p.starts.len() > 1 {
                        assert!(p.starts.iter().all(|&s| wrap || s + p.tile <= len), "{p:?}");
                        // Neighbours overlap by at least the requested overlap.
                        for w in p.starts.windows(2) {
                            assert!(w[0] + p.tile >= w[1] + overlap, "{p:?}");
                        }
                        if wrap {
                            let last = *p.starts.last().unwrap();
                            assert!(last + p.tile >= len + overlap, "{p:?}");
                        }
                    } else {
                        assert_eq!(p.tile, len);
                    }
                }
            }
        }
    }

    #[test]
    fn identity_tiles_reproduce_the_input() {
        // A "network" that is the identity (with scaling 1 → 2 by repetition)
        // must give back the input whatever the tiling: the weights sum right.
        let (h, w) = (12, 20);
        let input = ArrayD::from_shape_fn(IxDyn(&[1, 2, h, w]), |i| (i[1] * 1000 + i[2] * 37 + i[3]) as f32);
        for wrap in [false, true] {
            let rows = AxisPlan::new(h, 6, 2, wrap);
            let cols = AxisPlan::new(w, 8, 3, wrap);
            let out = run_tiled(&input, &rows, &cols, 1, 2, &mut |t| {
                let s = t.shape().to_vec();
                Ok(ArrayD::from_shape_fn(IxDyn(&[1, s[1], s[2] * 2, s[3] * 2]), |i| t[[0, i[1], i[2] / 2, i[3] / 2]]))
            })
            .unwrap();
            for c in 0..2 {
                for y in 0..2 * h {
                    for x in 0..2 * w {
                        let want = input[[0, c, y / 2, x / 2]];
                        assert!((out[[0, c, y, x]] - want).abs() <= want.abs() * 1e-6, "wrap {wrap} ({c},{y},{x})");
                    }
                }
            }
        }
    }
}
