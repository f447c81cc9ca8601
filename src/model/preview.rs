//! Cheap step previews: a linear map from latent channels to RGB.
//!
//! How it is fitted (per model, once, on first use): Kiln decodes a few
//! latents drawn from its seeded noise (`[1, C, 8, 8]`, U-Net scale, at
//! standard deviations 0.5, 1, 2 and 4 to cover early and late steps) with the
//! model's own VAE decoder, averages each decoded `f × f` pixel block (f = the
//! VAE's downsampling) to one RGB value, and solves least squares for
//! `rgb = W · latent + b` over all latent pixels. This needs no hand-made
//! coefficients, so it works for any export, and costs a few VAE decodes of a
//! 64-pixel image. Applying it is one small matrix product per latent pixel,
//! so previews cost microseconds; they are at latent resolution (1/8 size).
//!
//! A model folder may instead carry `preview_decoder/model.onnx`, a small
//! decoder such as TAESD (diffusers `AutoencoderTiny`) exported like the VAE
//! decoder (latents divided by its `scaling_factor` in, [-1, 1] image out);
//! previews then come from it at full resolution.
use ndarray::{ArrayD, IxDyn};

use super::{GraphInput, ModelInner};
use crate::error::{Error, Result};
use crate::image::Rgba8Image;
use crate::pipeline::noise::NoiseRng;

/// `rgb = weights · latent + bias`, per latent pixel.
#[derive(Debug, Clone)]
pub struct LatentProjection {
    /// One row per RGB channel, one column per latent channel.
    pub weights: Vec<[f64; 3]>,
    /// Added per RGB channel.
    pub bias: [f64; 3],
    /// Fraction of the decoded colour variance the fit explains on its samples.
    pub r_squared: f64,
}

const FIT_SIDE: usize = 8;
const FIT_SAMPLES: usize = 4;

impl LatentProjection {
    /// Fits the projection with the model's VAE decoder (see the module docs).
    pub(crate) fn fit(m: &ModelInner) -> Result<Self> {
        let c = m.layout.vae_config.latent_channels;
        let f = m.layout.vae_config.downsampling;
        let scale = 1.0 / m.layout.vae_config.scaling_factor;
        let mut rng = NoiseRng::new(0x0070_7265_7669_6577); // "preview"
        let mut rows: Vec<Vec<f64>> = Vec::new();
        let mut targets: Vec<[f64; 3]> = Vec::new();
        for sample in 0..FIT_SAMPLES {
            let sigma = 0.5 * (1 << sample) as f32;
            let z: Vec<f32> = rng.normals(c * FIT_SIDE * FIT_SIDE).into_iter().map(|v| v * sigma).collect();
            let latents = ArrayD::from_shape_vec(IxDyn(&[1, c, FIT_SIDE, FIT_SIDE]), z).map_err(|e| Error::internal(e.to_string()))?;
            let shift = m.layout.vae_config.shift_factor;
            let input = latents.mapv(|x| x * scale + shift);
            let image = m.vae_decoder.run(vec![(&m.vae_io.latent, GraphInput::Float(input))], &m.vae_io.output, None)?;
            let shape = image.shape().to_vec();
            if shape.len() != 4 || shape[1] != 3 || shape[2] != FIT_SIDE * f || shape[3] != FIT_SIDE * f {
                return Err(Error::model(format!("vae_decoder returned shape {shape:?} while fitting previews")));
            }
            for y in 0..FIT_SIDE {
                for x in 0..FIT_SIDE {
                    let mut rgb = [0.0f64; 3];
                    for (ch, v) in rgb.iter_mut().enumerate() {
                        let mut sum = 0.0;
                        for dy in 0..f {
                            for dx in 0..f {
                                sum += (image[[0, ch, y * f + dy, x * f + dx]] as f64 / 2.0 + 0.5).clamp(0.0, 1.0);
                            }
                        }
                        *v = sum / (f * f) as f64;
                    }
                    let mut row: Vec<f64> = (0..c).map(|k| latents[[0, k, y, x]] as f64).collect();
                    row.push(1.0);
                    rows.push(row);
                    targets.push(rgb);
                }
            }
        }
        let n = c + 1;
        // Normal equations with a tiny ridge for stability.
        let mut ata = vec![vec![0.0f64; n]; n];
        let mut aty = vec![[0.0f64; 3]; n];
        for (row, t) in rows.iter().zip(&targets) {
            for i in 0..n {
                for j in 0..n {
                    ata[i][j] += row[i] * row[j];
                }
                for ch in 0..3 {
                    aty[i][ch] += row[i] * t[ch];
                }
            }
        }
        for (i, r) in ata.iter_mut().enumerate() {
            r[i] += 1e-6;
        }
        let solution = solve(ata, aty).ok_or_else(|| Error::internal("preview fit: singular system"))?;
        let weights: Vec<[f64; 3]> = solution[..c].to_vec();
        let bias = solution[c];
        let proj = Self { weights, bias, r_squared: 0.0 };
        // Report how much of the colour variance the fit explains.
        let mut mean = [0.0f64; 3];
        for t in &targets {
            for ch in 0..3 {
                mean[ch] += t[ch] / targets.len() as f64;
            }
        }
        let (mut ss_res, mut ss_tot) = (0.0, 0.0);
        for (row, t) in rows.iter().zip(&targets) {
            let p = proj.project(&row[..c]);
            for ch in 0..3 {
                ss_res += (p[ch] - t[ch]).powi(2);
                ss_tot += (t[ch] - mean[ch]).powi(2);
            }
        }
        let r_squared = if ss_tot > 0.0 { 1.0 - ss_res / ss_tot } else { 0.0 };
        Ok(Self { r_squared, ..proj })
    }

    fn project(&self, latent: &[f64]) -> [f64; 3] {
        let mut rgb = self.bias;
        for (k, w) in self.weights.iter().enumerate() {
            for ch in 0..3 {
                rgb[ch] += w[ch] * latent[k];
            }
        }
        rgb
    }

    /// Projects `[1, C, h, w]` latents to an `h × w` RGBA8 image.
    pub fn apply(&self, latents: &ArrayD<f32>) -> Result<Rgba8Image> {
        let shape = latents.shape();
        if shape.len() != 4 || shape[1] != self.weights.len() {
            return Err(Error::internal(format!("preview of latents shaped {shape:?}")));
        }
        let (h, w) = (shape[2], shape[3]);
        let mut pixels = Vec::with_capacity(h * w * 4);
        let mut z = vec![0.0f64; self.weights.len()];
        for y in 0..h {
            for x in 0..w {
                for (k, v) in z.iter_mut().enumerate() {
                    *v = latents[[0, k, y, x]] as f64;
                }
                for c in self.project(&z) {
                    pixels.push((c.clamp(0.0, 1.0) * 255.0).round() as u8);
                }
                pixels.push(255);
            }
        }
        Ok(Rgba8Image { width: w, height: h, pixels })
    }
}

/// RGBA8 from a decoder's `[1, 3, H, W]` output in [-1, 1].
pub(crate) fn image_from_decoder_output(out: &ArrayD<f32>) -> Result<Rgba8Image> {
    let shape = out.shape();
    if shape.len() != 4 || shape[0] != 1 || shape[1] != 3 {
        return Err(Error::model(format!("preview decoder returned shape {shape:?}; expected [1, 3, H, W]")));
    }
    let (h, w) = (shape[2], shape[3]);
    let mut pixels = Vec::with_capacity(h * w * 4);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v = (out[[0, c, y, x]] / 2.0 + 0.5).clamp(0.0, 1.0);
                pixels.push((v * 255.0).round_ties_even() as u8);
            }
            pixels.push(255);
        }
    }
    Ok(Rgba8Image { width: w, height: h, pixels })
}

/// Solves `a · x = b` for three right-hand sides by Gaussian elimination with
/// partial pivoting.
#[allow(clippy::needless_range_loop)] // index loops read clearest for elimination
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<[f64; 3]>) -> Option<Vec<[f64; 3]>> {
    let n = a.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let factor = a[row][col] / a[col][col];
            for k in col..n {
                a[row][k] -= factor * a[col][k];
            }
            for ch in 0..3 {
                b[row][ch] -= factor * b[col][ch];
            }
        }
    }
    let mut x = vec![[0.0f64; 3]; n];
    for row in (0..n).rev() {
        for ch in 0..3 {
            let mut s = b[row][ch];
            for k in row + 1..n {
                s -= a[row][k] * x[k][ch];
            }
            x[row][ch] = s / a[row][row];
        }
    }
    Some(x)
}

#[cfg(test)]
mod tests {
    #[test]
    fn solve_recovers_a_known_system() {
        let a = vec![vec![2.0, 1.0], vec![1.0, 3.0]];
        let b = vec![[3.0, 5.0, 1.0], [5.0, 10.0, 2.0]];
        let x = super::solve(a, b).unwrap();
        assert!((x[0][0] - 0.8).abs() < 1e-12 && (x[1][0] - 1.4).abs() < 1e-12);
        assert!((x[0][1] - 1.0).abs() < 1e-12 && (x[1][1] - 3.0).abs() < 1e-12);
    }
}
