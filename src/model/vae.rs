//! The VAE passes: latents → image (decode) and image → latents (encode),
//! whole or in tiles (see [`vae_tiles`](super::vae_tiles)), with the scaling
//! (and shift) of the model's VAE config, a float32 retry when a float16
//! decoder overflows, and the optional fast decode through the tiny preview
//! decoder.
use std::sync::Arc;

use ndarray::ArrayD;

use super::vae_tiles::{run_tiled, AxisPlan};
use super::{graph, Graph, GraphInput, ModelInner, VaeDecoderIo};
use crate::error::{Error, ErrorKind, Result};
use crate::image::FloatImage;

/// How the VAE is tiled. All zero (the default) = one pass over the whole
/// image. Sizes are in image pixels and are rounded down to multiples of the
/// VAE's downsampling (8 for SD).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VaeTiling {
    /// Tile width and height in pixels; 0 = from `memory_budget`.
    pub tile_size: usize,
    /// Overlap between neighbouring tiles in pixels; 0 = a quarter of the tile.
    pub overlap: usize,
    /// When `tile_size` is 0: bytes one VAE pass may use. The image is tiled
    /// only when a whole pass would need more (see [`estimate_decode_bytes`]),
    /// with the largest square tile that fits. 0 = no budget.
    pub memory_budget: u64,
}

/// Smallest explicit tile, in pixels (crate-private: not a C constant).
pub(crate) const MIN_TILE_SIZE: usize = 32;

impl VaeTiling {
    /// Checks the sizes: a tile of at least 32 pixels (or 0)
    /// and an overlap smaller than the tile.
    pub fn validate(&self) -> Result<()> {
        if self.tile_size != 0 && self.tile_size < MIN_TILE_SIZE {
            return Err(Error::invalid(format!(
                "VAE tile size {} is too small: use 0 (no tiling or from the memory budget) or at least {MIN_TILE_SIZE} pixels",
                self.tile_size
            )));
        }
        if self.tile_size != 0 && self.overlap >= self.tile_size {
            return Err(Error::invalid(format!("VAE tile overlap {} must be smaller than the tile size {}", self.overlap, self.tile_size)));
        }
        Ok(())
    }
}

/// Which decoder turns the final latents into the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
#[repr(u32)]
pub enum FinalDecoder {
    /// The model's VAE decoder: full quality.
    #[default]
    Vae = 0,
    /// The tiny preview decoder (`preview_decoder/`, TAESD-shaped): many
    /// times faster, softer and less accurate in fine detail and colour.
    Preview = 1,
}

/// Smallest tile a memory budget may choose, in latent pixels.
const MIN_BUDGET_TILE: usize = 16;

/// Estimated peak bytes of one VAE decode pass over `width`×`height` pixels
/// on the CPU: activations at full resolution (`block_out_channels[0]`
/// channels, a few live float32 tensors) plus the mid-block attention over the
/// latent pixels (float32, one head), whose scores and their softmax are
/// alive together and grow with the square of the pixel count. Weights are not
/// included. Calibrated on the SD 1.5 VAE (docs/benchmarks.md, "VAE memory":
/// at 2048² the softmax asked for a second 16 GiB buffer while the scores
/// held the first); a guide for choosing tiles that errs high, not a bound.
pub fn estimate_decode_bytes(width: usize, height: usize, full_res_channels: usize, downsampling: usize) -> u64 {
    const LIVE_TENSORS: u64 = 5;
    const ATTENTION_BUFFERS: u64 = 2;
    let pixels = (width * height) as u64;
    let tokens = pixels / (downsampling * downsampling).max(1) as u64;
    pixels * full_res_channels as u64 * 4 * LIVE_TENSORS + ATTENTION_BUFFERS * tokens * tokens * 4
}

impl ModelInner {
    /// Tiles along rows and columns for a pass over `h`×`w` latent pixels.
    pub(crate) fn vae_plan(&self, h: usize, w: usize, tiling: &VaeTiling) -> (AxisPlan, AxisPlan) {
        let f = self.layout.vae_config.downsampling.max(1);
        let tile = if tiling.tile_size > 0 {
            (tiling.tile_size / f).max(1)
        } else if tiling.memory_budget > 0 {
            let c = self.layout.vae_config.full_res_channels;
            let fits = |t: usize| estimate_decode_bytes(t.min(w) * f, t.min(h) * f, c, f) <= tiling.memory_budget;
            if fits(h.max(w)) {
                0
            } else {
                // The largest multiple of 8 latent pixels that fits.
                let mut t = MIN_BUDGET_TILE;
                while t + 8 < h.max(w) && fits(t + 8) {
                    t += 8;
                }
                t
            }
        } else {
            0
        };
        let overlap = if tiling.overlap > 0 { tiling.overlap / f } else { tile / 4 };
        let axes = self.seamless;
        (AxisPlan::new(h, tile, overlap, axes.wraps_y()), AxisPlan::new(w, tile, overlap, axes.wraps_x()))
    }

    /// Decodes U-Net-scale latents `[1, C, h, w]` to an image with `decoder`.
    pub(crate) fn decode_latents(
        &self,
        latents: &ArrayD<f32>,
        tiling: &VaeTiling,
        decoder: FinalDecoder,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<FloatImage> {
        if decoder == FinalDecoder::Preview {
            let (graph, io) = &**self.preview_decoder.as_ref().ok_or_else(|| {
                Error::unsupported(format!(
                    "the fast final decode needs a preview decoder (preview_decoder/model.onnx); {} has none",
                    self.layout.root.display()
                ))
            })?;
            let z = latents.mapv(|x| x * (1.0 / self.layout.preview_scaling_factor));
            let out = self.run_decoder(graph, io, &z, tiling, options)?;
            return image_from_output(&out, "preview_decoder");
        }
        let vae = &self.layout.vae_config;
        let (scale, shift) = (1.0 / vae.scaling_factor, vae.shift_factor);
        let z = latents.mapv(|x| x * scale + shift);
        let out = self.run_decoder(&self.vae_decoder, &self.vae_io, &z, tiling, options)?;
        let bad = out.iter().filter(|v| !v.is_finite()).count();
        if bad == 0 {
            return image_from_output(&out, "vae_decoder");
        }
        let retry = self.vae_decoder_f32().map_err(|e| {
            e.context(format!("the VAE decoder gave {bad} non-finite values of {} and cannot be retried in float32", out.len()))
        })?;
        self.runtime.logger().log(
            crate::runtime::LogLevel::Warning,
            &format!("vae_decoder: {bad} of {} output values were not finite (float16 overflow); decoded again in float32", out.len()),
        );
        let (graph, io) = &*retry;
        let out = self.run_decoder(graph, io, &z, tiling, options)?;
        let bad = out.iter().filter(|v| !v.is_finite()).count();
        if bad > 0 {
            return Err(Error::new(
                ErrorKind::Inference,
                format!("the VAE decoder gave {bad} non-finite values even in float32; refusing to return a black image"),
            ));
        }
        image_from_output(&out, "vae_decoder (float32)")
    }

    fn run_decoder(
        &self,
        graph: &Graph,
        io: &VaeDecoderIo,
        z: &ArrayD<f32>,
        tiling: &VaeTiling,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<ArrayD<f32>> {
        let (h, w) = (z.shape()[2], z.shape()[3]);
        let (rows, cols) = self.vae_plan(h, w, tiling);
        let f = self.layout.vae_config.downsampling;
        let mut run = |tile: ArrayD<f32>| graph.run(vec![(&io.latent, GraphInput::Float(tile))], &io.output, options);
        if rows.starts.len() == 1 && cols.starts.len() == 1 {
            return run(z.clone());
        }
        run_tiled(z, &rows, &cols, 1, f, &mut run)
    }

    /// Runs the VAE encoder over `[1, 3, H, W]`, whole or tiled; returns its raw output.
    pub(crate) fn run_encoder(
        &self,
        graph: &Graph,
        input: &super::TensorSpec,
        output: &str,
        image: ArrayD<f32>,
        tiling: &VaeTiling,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<ArrayD<f32>> {
        let f = self.layout.vae_config.downsampling.max(1);
        let (h, w) = (image.shape()[2] / f, image.shape()[3] / f);
        let (rows, cols) = self.vae_plan(h, w, tiling);
        let mut run = |tile: ArrayD<f32>| graph.run(vec![(input, GraphInput::Float(tile))], output, options);
        if rows.starts.len() == 1 && cols.starts.len() == 1 {
            return run(image);
        }
        run_tiled(&image, &rows, &cols, f, 1, &mut run)
    }

    /// The VAE decoder upcast to float32, made on first use from this model's
    /// own decoder graph (so a seamless view's stays seamless).
    fn vae_decoder_f32(&self) -> Result<Arc<(Graph, VaeDecoderIo)>> {
        self.vae_decoder_f32
            .get_or_init(|| {
                let (bytes, dir, label) = self.vae_decoder.source_bytes()?;
                let (upcast, report) = super::upcast::upcast_to_f32(&bytes)?;
                if !report.changed() {
                    return Err(Error::new(ErrorKind::Inference, "the decoder is already float32"));
                }
                self.runtime.logger().info(&format!(
                    "vae_decoder: upcast to float32 ({} tensors, {} types)",
                    report.tensors, report.types
                ));
                let source = graph::GraphSource::memory(upcast, dir, format!("{label} (float32)"));
                let own_group = graph::ResidencyGroup::new(graph::Residency::AllResident);
                let g = Graph::load_from(&self.runtime, "vae_decoder", source, &own_group)?;
                let io = super::vae_decoder_io(&g)?;
                Ok(Arc::new((g, io)))
            })
            .clone()
    }
}

/// `[1, 3, H, W]` in [-1, 1] → an image in [0, 1].
fn image_from_output(out: &ArrayD<f32>, what: &str) -> Result<FloatImage> {
    let shape = out.shape().to_vec();
    if shape.len() != 4 || shape[0] != 1 || shape[1] != 3 {
        return Err(Error::model(format!("{what} returned shape {shape:?}; expected [1, 3, H, W]")));
    }
    let (h, w) = (shape[2], shape[3]);
    let mut data = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                data.push((out[[0, c, y, x]] / 2.0 + 0.5).clamp(0.0, 1.0));
            }
        }
    }
    Ok(FloatImage { width: w, height: h, data })
}
