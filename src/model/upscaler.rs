//! Super-resolution graphs (ESRGAN, Real-ESRGAN, SwinIR, ... exported to
//! ONNX) that upscale textures 2×, 4× or 8×, tile by tile so any size fits in
//! memory, and seamless: a tileable texture stays tileable.
//!
//! Convention, as for matting graphs: a folder holding `model.onnx` and an
//! optional `config.json`, or an ONNX file whose settings, if any, are in the
//! `.json` of the same name beside it (`realesrgan-x4.onnx` →
//! `realesrgan-x4.json`). The settings (every field optional; an unknown one
//! is an error): `{"scale": 4, "multiple": 1}`.
//!
//! What Kiln does, step by step:
//! 1. **The graph.** One float (f32, f16 or f64) input `[1 or N, 3, H, W]`,
//!    RGB in 0..1 (sRGB bytes / 255, not linearized; what ESRGAN-family
//!    models are trained on); its first output `[1, 3, s·H, s·W]`. H and W
//!    may be fixed by the graph (every window is then that size) or dynamic
//!    (windows are rounded up to `multiple`, for nets that downsample
//!    inside). The scale `s` comes from the settings file, else from fixed
//!    output dimensions, else from one run on a small blank window at load;
//!    every run checks the output is exactly `s` times its window.
//! 2. **Tiles.** The image is cut into tiles of `tile` × `tile` pixels (0 =
//!    the whole image in one run; with a fixed input size the graph decides:
//!    `size − 2·context`). Each tile runs with `context` extra pixels on
//!    every side, and only the tile's own part of the output is kept, so no
//!    blending is needed. When the context reaches as far as the net's
//!    receptive field, tiled output equals one run on the whole image (up to
//!    float rounding); ESRGAN's field is far wider than any practical
//!    context, so very small tiles can show faint tile edges. At the image
//!    border, windows are shifted inwards rather than padded, so the net
//!    pads exactly as in a whole-image run; only an image smaller than a
//!    fixed input (or a rounded-up window) is extended by repeating its edge.
//! 3. **Seamless axes.** Along an axis that wraps, a window reads across the
//!    border from the other side (indices modulo the size), so the image is
//!    upscaled as the infinite tiling it stands for: the result tiles, and
//!    equals one run on the image padded circularly by the context, cropped.
//! 4. **Alpha.** An image with transparency has its alpha upscaled too: by
//!    default through the same graph (alpha replicated to three channels,
//!    the output's channel mean: crisp sprite edges, twice the work), or
//!    bilinearly (half-pixel centres as PyTorch's `F.interpolate`, wrapping
//!    on seamless axes). A fully opaque image stays opaque and costs one pass.
//! 5. **Output.** Clamped to 0..1, `round(x · 255)` with ties to even (as
//!    diffusers' `numpy_to_pil`), straight alpha.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use ort::session::RunOptions;

use super::graph::{self, Graph, GraphInput, TensorSpec};
use super::side_graph;
use super::seamless::Seamless;
use crate::error::{Error, ErrorKind, Result};
use crate::image::limits::{check_image_size, try_filled, try_with_capacity};
use crate::image::{FloatImage, Rgba8Image};
use crate::runtime::Runtime;

/// Largest scale Kiln accepts from a graph or a settings file.
pub const MAX_SCALE: u32 = 16;

/// Largest context Kiln reads around a tile (INVALID_ARGUMENT beyond): far
/// more than any net needs, small enough that a window is never absurd.
pub const MAX_CONTEXT: u32 = 1024;

/// Settings read from an upscaler's settings file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UpscalerConfig {
    /// The graph's scale; `None` = found from the graph.
    pub scale: Option<u32>,
    /// Dynamic window sizes are rounded up to a multiple of this (nets that
    /// pixel-unshuffle or window inside need it). Default 1.
    pub multiple: Option<u32>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    scale: Option<u32>,
    multiple: Option<u32>,
}

impl UpscalerConfig {
    /// Parses a settings file; unknown fields, a scale outside 1..=16 and a
    /// multiple outside 1..=256 are MODEL_INVALID.
    pub fn from_json(text: &str) -> Result<Self> {
        let f: ConfigFile = serde_json::from_str(text).map_err(|e| Error::model(format!("upscaler config: {e}")))?;
        let c = Self { scale: f.scale, multiple: f.multiple };
        if c.scale.is_some_and(|s| !(1..=MAX_SCALE).contains(&s)) || c.multiple.is_some_and(|m| !(1..=256).contains(&m)) {
            return Err(Error::model(format!("upscaler config: scale {:?} must be 1..={MAX_SCALE}, multiple {:?} 1..=256", c.scale, c.multiple)));
        }
        Ok(c)
    }
}

/// How the alpha of an image with transparency is upscaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpscaleAlpha {
    /// Through the graph, as a grey image (the channel mean of its output).
    #[default]
    Graph,
    /// Bilinear, half-pixel centres (wrapping on seamless axes).
    Bilinear,
}

/// How one image is upscaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpscaleOptions {
    /// Tile side in input pixels; 0 = the whole image in one run. Ignored
    /// for graphs with a fixed input size. Default 256.
    pub tile: u32,
    /// Extra input pixels read on each side of a tile. Default 16, at most
    /// [`MAX_CONTEXT`]. With a fixed input size at most `(size − 1) / 2` is used.
    pub context: u32,
    /// Axes along which the image tiles.
    pub seamless: Seamless,
    /// How alpha is upscaled (for images with transparency).
    pub alpha: UpscaleAlpha,
}

impl Default for UpscaleOptions {
    fn default() -> Self {
        Self { tile: 256, context: 16, seamless: Seamless::None, alpha: UpscaleAlpha::Graph }
    }
}

/// One upscale in flight, so [`Upscaler::cancel`] can stop it.
struct Call {
    cancelled: AtomicBool,
    run: Arc<RunOptions>,
}

/// Optional observers of one upscale (as [`crate::pipeline::Hooks`] are of
/// a generation): how a job runs it.
#[derive(Default)]
pub struct UpscaleHooks<'a> {
    /// Checked before each tile; when set the upscale stops with `Cancelled`.
    pub cancel: Option<&'a AtomicBool>,
    /// The run options every graph run uses, so whoever holds them can
    /// terminate a run mid-graph; [`Upscaler::cancel`] terminates them too.
    /// `None` = options of the call's own.
    pub run_options: Option<Arc<RunOptions>>,
    /// Hears `(done, total)` after each finished tile, on the calling thread.
    pub progress: Option<&'a mut dyn FnMut(usize, usize)>,
}

/// A loaded super-resolution graph.
pub struct Upscaler {
    graph: Graph,
    input: TensorSpec,
    output: String,
    scale: u32,
    multiple: usize,
    /// The job workers its runtime asked for, for upscales queued as jobs.
    job_workers: usize,
    in_flight: parking_lot::Mutex<Vec<Arc<Call>>>,
}

impl std::fmt::Debug for Upscaler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upscaler").field("input", &self.input).field("output", &self.output).field("scale", &self.scale).finish()
    }
}

/// One window along an axis: the output keeps `len` pixels from `core`,
/// computed from input pixels `start .. start + window` (indices outside
/// the image wrap or repeat the edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    core: usize,
    len: usize,
    start: isize,
    window: usize,
}

/// The windows along one axis of `n` pixels (module documentation, step 2).
fn plan_axis(n: usize, tile: usize, context: usize, fixed: Option<usize>, multiple: usize, wrap: bool) -> Vec<Span> {
    let context = match fixed {
        Some(f) => context.min((f - 1) / 2),
        None => context,
    };
    let step = match fixed {
        Some(f) => f - 2 * context,
        None if tile == 0 || tile >= n => n,
        None => tile,
    };
    let mut spans = Vec::with_capacity(n.div_ceil(step));
    let mut core = 0;
    while core < n {
        let len = step.min(n - core);
        let (start, window) = if wrap {
            (core as isize - context as isize, fixed.unwrap_or_else(|| (len + 2 * context).div_ceil(multiple) * multiple))
        } else {
            // Inside the image where possible: the net's own border padding
            // then acts where it would on the whole image.
            let lo = core.saturating_sub(context);
            let hi = (core + len + context).min(n);
            let window = fixed.unwrap_or_else(|| (hi - lo).div_ceil(multiple) * multiple);
            ((if window >= n { 0 } else { lo.min(n - window) }) as isize, window)
        };
        spans.push(Span { core, len, start, window });
        core += len;
    }
    spans
}

/// Maps a window index to an image index: modulo the size, or clamped.
fn source_index(i: isize, n: usize, wrap: bool) -> usize {
    if wrap {
        i.rem_euclid(n as isize) as usize
    } else {
        i.clamp(0, n as isize - 1) as usize
    }
}

impl Upscaler {
    /// Loads an upscaler: a folder holding `model.onnx` and optionally
    /// `config.json`, or an ONNX file configured by the `.json` of the same
    /// name beside it when there is one. Errors: MODEL_NOT_FOUND (no such
    /// file), MODEL_INVALID (not a graph Kiln can run as an upscaler, a bad
    /// settings file, a scale that is not a whole number from 1 to 16), IO,
    /// INFERENCE_FAILED (the probe run failed).
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Self> {
        let file = side_graph::existing_graph_file(path, "upscaler graph")?;
        let config = side_graph::read_settings(path, UpscalerConfig::from_json)?.unwrap_or_default();
        let group = graph::ResidencyGroup::new(graph::Residency::AllResident);
        runtime.plan_load(&[("upscaler", &file)]);
        let graph = Graph::load(runtime, "upscaler", &file, &group)?;
        let bad = |what: String| Error::model(format!("upscaler graph {}: {what}", file.display()));
        let input = side_graph::image_input(&graph, "an upscaler", &bad)?;
        let s = input.shape.clone();
        let out = graph.outputs.first().ok_or_else(|| bad("it has no outputs".into()))?;
        let o = out.shape.clone();
        if o.len() != 4 || !(o[1] == 3 || o[1] < 0) {
            return Err(bad(format!("output `{}` has shape {o:?}; expected [1, 3, sH, sW]", out.name)));
        }
        let output = out.name.clone();
        let input = input.clone();
        let multiple = config.multiple.unwrap_or(1) as usize;
        let mut upscaler = Self {
            graph,
            input,
            output,
            scale: 0,
            multiple,
            job_workers: runtime.job_workers(),
            in_flight: Default::default(),
        };
        let fixed_scale = match (s[2] > 0 && o[2] > 0, s[3] > 0 && o[3] > 0) {
            (true, true) if o[2] % s[2] == 0 && o[2] / s[2] == o[3] / s[3] && o[3] % s[3] == 0 => Some((o[2] / s[2]) as u32),
            (true, true) => return Err(bad(format!("output {o:?} is not a whole multiple of input {s:?} on both axes"))),
            _ => None,
        };
        let scale = match (config.scale, fixed_scale) {
            (Some(c), Some(f)) if c != f => return Err(bad(format!("settings scale {c} contradicts the graph's shapes ({f}x)"))),
            (Some(c), _) => c,
            (None, Some(f)) => f,
            (None, None) => upscaler.probe_scale().map_err(|e| e.context(format!("upscaler graph {}", file.display())))?,
        };
        if !(1..=MAX_SCALE).contains(&scale) {
            return Err(bad(format!("scale {scale} is outside 1..={MAX_SCALE}")));
        }
        upscaler.scale = scale;
        runtime.logger().info(&format!(
            "upscaler {} loaded: input `{}` {s:?}, output `{}`, {scale}x, multiple {multiple}",
            file.display(),
            upscaler.input.name,
            upscaler.output
        ));
        Ok(upscaler)
    }

    /// One run on a blank window of the smallest size the graph takes; the
    /// scale is the output's size over the window's.
    fn probe_scale(&self) -> Result<u32> {
        let side = |d: i64| if d > 0 { d as usize } else { 16usize.div_ceil(self.multiple) * self.multiple };
        let (h, w) = (side(self.input.shape[2]), side(self.input.shape[3]));
        let out = self.run_window(vec![0.5; 3 * h * w], h, w, None)?;
        let (oh, ow) = (out.shape()[2], out.shape()[3]);
        if oh % h != 0 || ow % w != 0 || oh / h != ow / w || oh < h {
            return Err(Error::model(format!("a {w}x{h} window gave a {ow}x{oh} output: not a whole, equal scale on both axes")));
        }
        Ok((oh / h) as u32)
    }

    /// The scale: output pixels per input pixel along each axis.
    pub fn scale(&self) -> u32 {
        self.scale
    }

    /// Worker threads the job pool should have for this upscaler's jobs
    /// (its runtime's `job_workers`).
    pub fn job_workers(&self) -> usize {
        self.job_workers
    }

    /// Which execution providers the graph got.
    pub fn provider(&self) -> &crate::runtime::ProviderChoice {
        &self.graph.provider
    }

    /// The graph's fixed input `(height, width)`, where it fixes them.
    fn fixed(&self) -> (Option<usize>, Option<usize>) {
        let f = |d: i64| (d > 0).then_some(d as usize);
        (f(self.input.shape[2]), f(self.input.shape[3]))
    }

    fn plans(&self, width: usize, height: usize, options: &UpscaleOptions) -> (Vec<Span>, Vec<Span>) {
        let (fh, fw) = self.fixed();
        let (tile, context) = (options.tile as usize, options.context as usize);
        (
            plan_axis(height, tile, context, fh, self.multiple, options.seamless.wraps_y()),
            plan_axis(width, tile, context, fw, self.multiple, options.seamless.wraps_x()),
        )
    }

    /// Graph runs one pass over a `width × height` image takes (an image
    /// with transparency upscaled through the graph takes two passes).
    pub fn tiles(&self, width: usize, height: usize, options: &UpscaleOptions) -> usize {
        let (ys, xs) = self.plans(width, height, options);
        ys.len() * xs.len()
    }

    /// Graph runs an upscale of `image` takes in all: [`Upscaler::tiles`],
    /// twice when its transparency goes through the graph too.
    pub fn runs(&self, image: &Rgba8Image, options: &UpscaleOptions) -> usize {
        let passes = if options.alpha == UpscaleAlpha::Graph && !is_opaque(image) { 2 } else { 1 };
        self.tiles(image.width, image.height, options) * passes
    }

    /// Runs one `[1, 3, h, w]` window; checks the output is `[1, 3, s·h, s·w]`
    /// once the scale is known.
    fn run_window(&self, data: Vec<f32>, h: usize, w: usize, run: Option<&RunOptions>) -> Result<ArrayD<f32>> {
        let x = ArrayD::from_shape_vec(IxDyn(&[1, 3, h, w]), data).map_err(|e| Error::internal(format!("upscaler input: {e}")))?;
        let out = self.graph.run(vec![(&self.input, GraphInput::Float(x))], &self.output, run)?;
        let s = self.scale as usize;
        let ok = match out.shape() {
            [1, 3, oh, ow] => s == 0 || (*oh == s * h && *ow == s * w),
            _ => false,
        };
        if !ok {
            return Err(Error::model(format!(
                "upscaler output `{}` has shape {:?} for a {w}x{h} window; expected [1, 3, {}, {}]",
                self.output,
                out.shape(),
                s * h,
                s * w
            )));
        }
        if out.iter().any(|v| v.is_nan()) {
            return Err(Error::model(format!("upscaler output `{}` holds NaN", self.output)));
        }
        Ok(out)
    }

    /// Upscales three planes of `width × height` floats (planar, row-major,
    /// 0..1) and returns three planes of `s·width × s·height`, unclamped:
    /// steps 2 and 3 of the module documentation. `progress` hears each
    /// finished tile.
    pub fn upscale_planes(
        &self,
        planes: &[f32],
        width: usize,
        height: usize,
        options: &UpscaleOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        self.check(width, height, options)?;
        let call = self.begin(None)?;
        let total = self.tiles(width, height, options);
        let result = self.planes_in(&call, None, planes, width, height, options, (0, total), progress);
        self.end(&call);
        result
    }

    fn begin(&self, run: Option<Arc<RunOptions>>) -> Result<Arc<Call>> {
        let run = match run {
            Some(run) => run,
            None => Arc::new(
                RunOptions::new().map_err(|e| Error::new(ErrorKind::Inference, format!("cannot create ONNX Runtime run options: {e}")))?,
            ),
        };
        let call = Arc::new(Call { cancelled: AtomicBool::new(false), run });
        self.in_flight.lock().push(Arc::clone(&call));
        Ok(call)
    }

    fn end(&self, call: &Arc<Call>) {
        self.in_flight.lock().retain(|c| !Arc::ptr_eq(c, call));
    }

    /// One pass over three planes; the caller has run [`Upscaler::check`].
    #[allow(clippy::too_many_arguments)]
    fn planes_in(
        &self,
        call: &Call,
        cancel: Option<&AtomicBool>,
        planes: &[f32],
        width: usize,
        height: usize,
        options: &UpscaleOptions,
        (done_before, total): (usize, usize),
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<f32>> {
        if planes.len() != 3 * width * height {
            return Err(Error::invalid(format!("{} values are not three {width}x{height} planes", planes.len())));
        }
        let s = self.scale as usize;
        let (ow, oh) = (width * s, height * s);
        let (ys, xs) = self.plans(width, height, options);
        let mut out = try_filled(3 * ow * oh, 0f32, "the upscaled image")?;
        let (wrap_x, wrap_y) = (options.seamless.wraps_x(), options.seamless.wraps_y());
        let mut done = done_before;
        for y in &ys {
            for x in &xs {
                if call.cancelled.load(Ordering::Acquire) || cancel.is_some_and(|c| c.load(Ordering::Acquire)) {
                    return Err(Error::new(ErrorKind::Cancelled, format!("upscale cancelled after {done} of {total} tiles")));
                }
                let (wh, ww) = (y.window, x.window);
                let mut window = try_with_capacity(3 * wh * ww, "an upscaler window")?;
                for c in 0..3 {
                    let plane = &planes[c * width * height..(c + 1) * width * height];
                    for j in 0..wh {
                        let row = source_index(y.start + j as isize, height, wrap_y) * width;
                        window.extend((0..ww).map(|i| plane[row + source_index(x.start + i as isize, width, wrap_x)]));
                    }
                }
                let result = self.run_window(window, wh, ww, Some(&call.run))?;
                let result = result.as_slice().ok_or_else(|| Error::internal("upscaler output is not contiguous"))?;
                // The core's offset inside the window, in output pixels.
                let (dy, dx) = ((y.core as isize - y.start) as usize * s, (x.core as isize - x.start) as usize * s);
                let (rw, rh) = (ww * s, wh * s);
                for c in 0..3 {
                    for j in 0..y.len * s {
                        let src = c * rw * rh + (dy + j) * rw + dx;
                        let dst = c * ow * oh + (y.core * s + j) * ow + x.core * s;
                        out[dst..dst + x.len * s].copy_from_slice(&result[src..src + x.len * s]);
                    }
                }
                done += 1;
                progress(done, total);
            }
        }
        Ok(out)
    }

    /// Upscales `image` (steps 2 to 5 of the module documentation).
    /// Thread-safe: calls may come from several threads (the graph runs one
    /// window at a time). Errors: INVALID_SIZE (an empty image, or a result
    /// over 16384 pixels a side), INVALID_ARGUMENT (a context over
    /// [`MAX_CONTEXT`]), CANCELLED ([`Upscaler::cancel`]),
    /// MODEL_INVALID (an output of the wrong size, or NaN), INFERENCE_FAILED,
    /// OUT_OF_MEMORY.
    pub fn upscale(&self, image: &Rgba8Image, options: &UpscaleOptions) -> Result<Rgba8Image> {
        self.upscale_with_progress(image, options, &mut |_, _| {})
    }

    /// As [`Upscaler::upscale`]; `progress(done, total)` hears each finished
    /// tile on the calling thread.
    pub fn upscale_with_progress(
        &self,
        image: &Rgba8Image,
        options: &UpscaleOptions,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Rgba8Image> {
        self.upscale_with(image, options, UpscaleHooks { progress: Some(progress), ..Default::default() })
    }

    /// Checks, before any work, that a `width × height` image can be
    /// upscaled with `options`: not empty, a context of at most
    /// [`MAX_CONTEXT`], a result of at most 16384 pixels a side.
    pub fn check(&self, width: usize, height: usize, options: &UpscaleOptions) -> Result<()> {
        check_image_size(width, height, "the image to upscale")?;
        if options.context > MAX_CONTEXT {
            return Err(Error::invalid(format!("context {} is over {MAX_CONTEXT}", options.context)));
        }
        let s = self.scale as usize;
        check_image_size(width * s, height * s, &format!("the {s}x upscale of {width}x{height}"))
    }

    /// As [`Upscaler::upscale`], observed by `hooks` (cancel flag, run
    /// options, progress).
    pub fn upscale_with(&self, image: &Rgba8Image, options: &UpscaleOptions, hooks: UpscaleHooks<'_>) -> Result<Rgba8Image> {
        let UpscaleHooks { cancel, run_options, progress } = hooks;
        let mut silent = |_: usize, _: usize| {};
        let progress: &mut dyn FnMut(usize, usize) = match progress {
            Some(p) => p,
            None => &mut silent,
        };
        let (w, h) = (image.width, image.height);
        self.check(w, h, options)?;
        let opaque = is_opaque(image);
        let alpha_pass = !opaque && options.alpha == UpscaleAlpha::Graph;
        let per_pass = self.tiles(w, h, options);
        // As `runs` counts them; the opacity is already known.
        let total = per_pass * if alpha_pass { 2 } else { 1 };
        let call = self.begin(run_options)?;
        let result = (|| {
            let rgb = planes(image, |p| [p[0], p[1], p[2]])?;
            let colour = self.planes_in(&call, cancel, &rgb, w, h, options, (0, total), progress)?;
            let s = self.scale as usize;
            let (ow, oh) = (w * s, h * s);
            let alpha = if opaque {
                None
            } else if alpha_pass {
                let a = planes(image, |p| [p[3]; 3])?;
                let up = self.planes_in(&call, cancel, &a, w, h, options, (per_pass, total), progress)?;
                let n = ow * oh;
                Some((0..n).map(|i| (up[i] + up[n + i] + up[2 * n + i]) / 3.0).collect())
            } else {
                let a: Vec<f32> = image.pixels.chunks_exact(4).map(|p| p[3] as f32 / 255.0).collect();
                Some(upsample_bilinear(&a, w, h, s, options.seamless))
            };
            let mut hwc = try_filled(3 * ow * oh, 0f32, "the upscaled image")?;
            let n = ow * oh;
            for i in 0..n {
                for c in 0..3 {
                    hwc[3 * i + c] = colour[c * n + i].clamp(0.0, 1.0);
                }
            }
            let mut out = FloatImage { width: ow, height: oh, data: hwc }.to_rgba8();
            if let Some(a) = alpha {
                let a = FloatImage { width: ow, height: oh, data: a.iter().flat_map(|&v| [v.clamp(0.0, 1.0); 3]).collect() }.to_rgba8();
                for (p, q) in out.pixels.chunks_exact_mut(4).zip(a.pixels.chunks_exact(4)) {
                    p[3] = q[0];
                }
            }
            Ok(out)
        })();
        self.end(&call);
        result
    }

    /// Stops every upscale of this graph in flight (the graph run under way
    /// is terminated; the call returns CANCELLED). Calls that start later
    /// run normally. Returns how many calls it stopped.
    pub fn cancel(&self) -> usize {
        let calls = self.in_flight.lock();
        for c in calls.iter() {
            c.cancelled.store(true, Ordering::Release);
            let _ = c.run.terminate();
        }
        calls.len()
    }
}

/// Whether every pixel of `image` is fully opaque.
fn is_opaque(image: &Rgba8Image) -> bool {
    image.pixels.chunks_exact(4).all(|p| p[3] == 255)
}

/// Three planes of floats in 0..1 from an image's bytes, picked by `pick`.
fn planes(image: &Rgba8Image, pick: impl Fn(&[u8]) -> [u8; 3]) -> Result<Vec<f32>> {
    let n = image.width * image.height;
    let mut out = try_filled(3 * n, 0f32, "the image planes")?;
    for (i, p) in image.pixels.chunks_exact(4).enumerate() {
        for (c, v) in pick(p).into_iter().enumerate() {
            out[c * n + i] = v as f32 / 255.0;
        }
    }
    Ok(out)
}

/// Bilinear `scale`× upsampling of one plane with half-pixel centres
/// (PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`), reading
/// across the border on seamless axes instead of clamping.
pub fn upsample_bilinear(plane: &[f32], width: usize, height: usize, scale: usize, seamless: Seamless) -> Vec<f32> {
    let taps = |n: usize, wrap: bool| -> Vec<(usize, usize, f32)> {
        (0..n * scale)
            .map(|o| {
                let src = (o as f32 + 0.5) / scale as f32 - 0.5;
                if wrap {
                    let i0 = src.floor();
                    let t = src - i0;
                    (source_index(i0 as isize, n, true), source_index(i0 as isize + 1, n, true), t)
                } else {
                    let src = src.max(0.0);
                    let i0 = (src as usize).min(n - 1);
                    (i0, (i0 + 1).min(n - 1), src - i0 as f32)
                }
            })
            .collect()
    };
    let xs = taps(width, seamless.wraps_x());
    let ys = taps(height, seamless.wraps_y());
    let mut out = Vec::with_capacity(xs.len() * ys.len());
    for &(y0, y1, ty) in &ys {
        for &(x0, x1, tx) in &xs {
            let at = |y: usize, x: usize| plane[y * width + x];
            let top = at(y0, x0) + (at(y0, x1) - at(y0, x0)) * tx;
            let bottom = at(y1, x0) + (at(y1, x1) - at(y1, x0)) * tx;
            out.push(top + (bottom - top) * ty);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cover(spans: &[Span], n: usize) {
        let mut next = 0;
        for s in spans {
            assert_eq!(s.core, next, "{spans:?}");
            assert!(s.start <= s.core as isize && s.core as isize + s.len as isize <= s.start + s.window as isize, "{s:?}");
            next += s.len;
        }
        assert_eq!(next, n);
    }

    #[test]
    fn windows_cover_the_axis_and_stay_inside_it_unless_it_wraps() {
        for n in [1, 5, 16, 17, 40, 257] {
            for (tile, context, fixed, multiple) in [(0, 16, None, 1), (8, 3, None, 1), (16, 20, None, 8), (7, 0, None, 1), (0, 4, Some(16), 1), (0, 40, Some(16), 1)] {
                for wrap in [false, true] {
                    let spans = plan_axis(n, tile, context, fixed, multiple, wrap);
                    cover(&spans, n);
                    for s in &spans {
                        assert_eq!(s.window % multiple, 0);
                        if let Some(f) = fixed {
                            assert_eq!(s.window, f);
                        }
                        if !wrap && s.window <= n {
                            assert!(s.start >= 0 && s.start as usize + s.window <= n, "{n} {s:?}");
                        }
                        if !wrap && s.window > n {
                            assert_eq!(s.start, 0, "an image smaller than its window starts at 0 and repeats its last pixel");
                        }
                    }
                }
            }
        }
        // Whole image, no wrap: one window, exactly the image.
        assert_eq!(plan_axis(40, 0, 16, None, 1, false), vec![Span { core: 0, len: 40, start: 0, window: 40 }]);
        // Wrapping: the context is read across the border.
        assert_eq!(plan_axis(40, 0, 16, None, 1, true), vec![Span { core: 0, len: 40, start: -16, window: 72 }]);
    }

    #[test]
    fn bilinear_upsampling_matches_the_resize_module_and_wraps_on_seamless_axes() {
        let (w, h) = (5, 3);
        let plane: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32 / 10.0).collect();
        let ours = upsample_bilinear(&plane, w, h, 4, Seamless::None);
        let theirs = crate::image::resize::resize_bilinear(&plane, 1, w, h, 4 * w, 4 * h);
        let worst = ours.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-6, "{worst}");
        // On a wrapping axis the first output column blends the last input column in.
        let wrapped = upsample_bilinear(&plane, w, h, 4, Seamless::X);
        let expected = plane[w - 1] + (plane[0] - plane[w - 1]) * 0.625;
        assert!((wrapped[0] - expected).abs() < 1e-6, "{} vs {expected}", wrapped[0]);
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(UpscalerConfig::from_json(r#"{"scale": 4}"#).unwrap().scale, Some(4));
        for bad in [r#"{"scale": 0}"#, r#"{"scale": 17}"#, r#"{"multiple": 0}"#, r#"{"scales": 4}"#, "["] {
            assert_eq!(UpscalerConfig::from_json(bad).unwrap_err().kind(), ErrorKind::ModelInvalid, "{bad}");
        }
    }
}
