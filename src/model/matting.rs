//! Optional matting graphs for sprites: any ONNX model with an image in and
//! an alpha matte out (an exported U²-Net, IS-Net, RMBG, BiRefNet, ...), run
//! through Kiln's runtime (same providers, threads and logging as the other
//! graphs).
//!
//! Convention: a model folder may hold `matting/model.onnx` and an optional
//! `matting/config.json`; a graph elsewhere can be named when the model loads
//! (`ModelOptions::matting`, `kiln_model_load_options.matting_path`): a folder
//! laid out the same way, or an ONNX file whose settings, if any, are in a
//! `.json` of the same name beside it (`rmbg.onnx` → `rmbg.json`; a
//! `config.json` next to a bare file is not read, since exported repositories
//! often keep an unrelated one there). Loaded on the first sprite that uses it.
//!
//! What Kiln does with it, step by step:
//! 1. Input: the graph's one input, float (f32, f16 or f64) `[1, 3, H, W]`.
//!    Where the graph fixes H and W, the image is resized to them; where it
//!    leaves them dynamic, `config.json` `size` is used if given, otherwise
//!    the image's own size rounded up to a multiple of `multiple` (default
//!    32, what five 2× poolings need). Resizing is bilinear with half-pixel
//!    centres and no antialiasing, exactly PyTorch's
//!    `F.interpolate(mode="bilinear", align_corners=False)` that RMBG's
//!    reference pre-processing uses.
//! 2. Normalization: RGB bytes / 255 (sRGB values, not linearized), resized,
//!    then `(x − mean) / std` per channel. Default: ImageNet's mean
//!    (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) (U²-Net, IS-Net's
//!    general use, BiRefNet / RMBG-2.0); RMBG-1.4 wants mean 0.5, std 1.0.
//!    The input's alpha is not fed to the graph.
//! 3. Output: the output named `output` in the config, else the graph's first
//!    (U²-Net's fused `d0`), shaped `[1, 1, h, w]`, `[1, h, w]` or `[h, w]`;
//!    `"sigmoid": true` for graphs that end in logits. It is resized back to
//!    the image size (bilinear as above), then `"minmax": true` stretches it
//!    to 0..1 (RMBG's and U²-Net's reference post-processing), and it is
//!    clamped to 0..1.
//! 4. The matte becomes the sprite's alpha ([`sprite_from_matte`]): times the
//!    input alpha, colour bleeding, feathering, straight or premultiplied,
//!    bounding box, as for keyed sprites.
//!
//! The settings file (every field optional; an unknown field is an error, so a
//! typo cannot silently change the matte):
//! `{"mean": [0.5, 0.5, 0.5], "std": [1, 1, 1], "size": [1024, 1024],
//! "multiple": 32, "sigmoid": false, "minmax": true, "output": "output"}`.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};

use super::graph::{self, Graph, GraphInput, TensorSpec};
use super::side_graph;
use super::Model;
use crate::error::{Error, ErrorKind, Result};
use crate::image::resize::resize_bilinear;
use crate::image::sprite::{make_sprite, sprite_from_matte, Sprite, SpriteOptions};
use crate::image::Rgba8Image;
use crate::runtime::Runtime;

/// How images go into a matting graph and its output comes back; read from
/// the graph's settings file (see the module documentation), defaults otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct MattingConfig {
    /// Per-channel mean subtracted from RGB in 0..1. Default ImageNet's
    /// (0.485, 0.456, 0.406).
    pub mean: [f32; 3],
    /// Per-channel divisor after the mean. Default ImageNet's (0.229, 0.224, 0.225).
    pub std: [f32; 3],
    /// `[H, W]` the graph gets where its input size is dynamic; `None` = the
    /// image's size rounded up to `multiple`. Must agree with a fixed size.
    pub size: Option<[usize; 2]>,
    /// Dynamic sizes are rounded up to a multiple of this. Default 32.
    pub multiple: usize,
    /// The output is logits: apply a sigmoid. Default off.
    pub sigmoid: bool,
    /// Stretch the resized matte to its own min..max (RMBG's and U²-Net's
    /// reference post-processing). Default off.
    pub minmax: bool,
    /// Which output is the matte; `None` = the first.
    pub output: Option<String>,
}

impl Default for MattingConfig {
    fn default() -> Self {
        Self {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
            size: None,
            multiple: 32,
            sigmoid: false,
            minmax: false,
            output: None,
        }
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    mean: Option<[f32; 3]>,
    std: Option<[f32; 3]>,
    size: Option<[usize; 2]>,
    multiple: Option<usize>,
    sigmoid: Option<bool>,
    minmax: Option<bool>,
    output: Option<String>,
}

impl MattingConfig {
    /// Parses a `config.json`; every field is optional, unknown ones are an
    /// error (`ModelInvalid`), and so are a zero `std`, size or multiple.
    pub fn from_json(text: &str) -> Result<Self> {
        let f: ConfigFile = serde_json::from_str(text).map_err(|e| Error::model(format!("matting config: {e}")))?;
        let d = Self::default();
        let c = Self {
            mean: f.mean.unwrap_or(d.mean),
            std: f.std.unwrap_or(d.std),
            size: f.size,
            multiple: f.multiple.unwrap_or(d.multiple),
            sigmoid: f.sigmoid.unwrap_or(false),
            minmax: f.minmax.unwrap_or(false),
            output: f.output,
        };
        c.check()?;
        Ok(c)
    }

    fn check(&self) -> Result<()> {
        if !self.mean.iter().all(|m| m.is_finite()) || !self.std.iter().all(|s| s.is_finite() && *s != 0.0) {
            return Err(Error::model(format!(
                "matting config: mean {:?} and std {:?} must be finite and std non-zero",
                self.mean, self.std
            )));
        }
        if self.multiple == 0 || self.size.is_some_and(|s| s.contains(&0)) {
            return Err(Error::model(format!("matting config: size {:?} and multiple {} must be positive", self.size, self.multiple)));
        }
        Ok(())
    }
}

/// A loaded matting graph.
pub struct Matting {
    graph: Graph,
    input: TensorSpec,
    output: String,
    config: MattingConfig,
}

impl std::fmt::Debug for Matting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matting").field("input", &self.input).field("output", &self.output).field("config", &self.config).finish()
    }
}

impl Matting {
    /// Loads a matting graph: a folder holding `model.onnx` and optionally
    /// `config.json`, or an ONNX file configured by the `.json` of the same
    /// name beside it when there is one.
    /// Errors: MODEL_NOT_FOUND (no such file), MODEL_INVALID (not a graph
    /// Kiln can run as a matting graph, or a bad config), IO.
    pub fn load(runtime: &Runtime, path: &Path) -> Result<Self> {
        let group = graph::ResidencyGroup::new(graph::Residency::AllResident);
        Self::load_in(runtime, path, None, &group)
    }

    /// As [`Matting::load`] with a given configuration instead of `config.json`.
    pub fn load_with_config(runtime: &Runtime, path: &Path, config: MattingConfig) -> Result<Self> {
        let group = graph::ResidencyGroup::new(graph::Residency::AllResident);
        Self::load_in(runtime, path, Some(config), &group)
    }

    pub(crate) fn load_in(
        runtime: &Runtime,
        path: &Path,
        config: Option<MattingConfig>,
        group: &Arc<graph::ResidencyGroup>,
    ) -> Result<Self> {
        let file = side_graph::existing_graph_file(path, "matting graph")?;
        let config = match config {
            Some(c) => {
                c.check()?;
                c
            }
            None => side_graph::read_settings(path, MattingConfig::from_json)?.unwrap_or_default(),
        };
        let graph = Graph::load(runtime, "matting", &file, group)?;
        let bad = |what: String| Error::model(format!("matting graph {}: {what}", file.display()));
        let input = side_graph::image_input(&graph, "a matting graph", &bad)?;
        let s = &input.shape;
        if let Some([h, w]) = config.size {
            if (s[2] > 0 && s[2] as usize != h) || (s[3] > 0 && s[3] as usize != w) {
                return Err(bad(format!("config size [{h}, {w}] contradicts the input shape {s:?}")));
            }
        }
        let out = match &config.output {
            Some(name) => graph
                .outputs
                .iter()
                .find(|o| &o.name == name)
                .ok_or_else(|| bad(format!("it has no output `{name}` (config `output`)")))?,
            None => graph.outputs.first().ok_or_else(|| bad("it has no outputs".into()))?,
        };
        let rank_ok = (2..=4).contains(&out.shape.len());
        let channel_ok = out.shape.len() != 4 || out.shape[1] == 1 || out.shape[1] < 0;
        if !rank_ok || !channel_ok {
            return Err(bad(format!("output `{}` has shape {:?}; expected [1, 1, h, w], [1, h, w] or [h, w]", out.name, out.shape)));
        }
        let output = out.name.clone();
        let input = input.clone();
        runtime.logger().info(&format!(
            "matting graph {} loaded: input `{}` {:?}, output `{output}`, {:?}",
            file.display(),
            input.name,
            input.shape,
            config
        ));
        Ok(Self { graph, input, output, config })
    }

    pub(crate) fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The configuration in use.
    pub fn config(&self) -> &MattingConfig {
        &self.config
    }

    /// Which execution providers the graph got.
    pub fn provider(&self) -> &crate::runtime::ProviderChoice {
        &self.graph.provider
    }

    /// `(height, width)` of the tensor the graph gets for a `width × height` image.
    pub fn input_size(&self, width: usize, height: usize) -> (usize, usize) {
        let round = |v: usize| v.div_ceil(self.config.multiple) * self.config.multiple;
        let pick = |fixed: i64, configured: Option<usize>, own: usize| {
            if fixed > 0 {
                fixed as usize
            } else {
                configured.unwrap_or_else(|| round(own))
            }
        };
        let s = &self.input.shape;
        (pick(s[2], self.config.size.map(|c| c[0]), height), pick(s[3], self.config.size.map(|c| c[1]), width))
    }

    /// The graph's input for `image`: `[1, 3, H, W]`, resized and normalized
    /// (steps 1 and 2 of the module documentation). Errors: INVALID_ARGUMENT
    /// for an empty image.
    pub fn preprocess(&self, image: &Rgba8Image) -> Result<ArrayD<f32>> {
        let (w, h) = (image.width, image.height);
        if w == 0 || h == 0 {
            return Err(Error::invalid("cannot matte an empty image"));
        }
        let mut planes = vec![0f32; 3 * w * h];
        for (i, p) in image.pixels.chunks_exact(4).enumerate() {
            for c in 0..3 {
                planes[c * w * h + i] = p[c] as f32 / 255.0;
            }
        }
        let (ih, iw) = self.input_size(w, h);
        let mut data = resize_bilinear(&planes, 3, w, h, iw, ih);
        for (c, plane) in data.chunks_exact_mut(iw * ih).enumerate() {
            let (m, s) = (self.config.mean[c], self.config.std[c]);
            plane.iter_mut().for_each(|v| *v = (*v - m) / s);
        }
        ArrayD::from_shape_vec(IxDyn(&[1, 3, ih, iw]), data).map_err(|e| Error::internal(format!("matting input: {e}")))
    }

    /// Runs the graph on a prepared input; returns its matte output as it is.
    pub fn run(&self, input: ArrayD<f32>) -> Result<ArrayD<f32>> {
        self.graph.run(vec![(&self.input, GraphInput::Float(input))], &self.output, None)
    }

    /// Step 3: the graph's output as a matte of `width × height` values in 0..1.
    /// Errors: MODEL_INVALID for an output of another shape, or with NaNs.
    pub fn matte_from_output(&self, output: &ArrayD<f32>, width: usize, height: usize) -> Result<Vec<f32>> {
        let shape = output.shape();
        let (oh, ow) = match *shape {
            [1, 1, h, w] | [1, h, w] | [h, w] if h > 0 && w > 0 => (h, w),
            _ => {
                return Err(Error::model(format!(
                    "matting graph output `{}` has shape {shape:?}; expected [1, 1, h, w], [1, h, w] or [h, w]",
                    self.output
                )))
            }
        };
        let mut m: Vec<f32> = output.iter().copied().collect();
        if m.iter().any(|v| v.is_nan()) {
            return Err(Error::model(format!("matting graph output `{}` holds NaN", self.output)));
        }
        if self.config.sigmoid {
            m.iter_mut().for_each(|v| *v = 1.0 / (1.0 + (-*v).exp()));
        }
        let mut m = resize_bilinear(&m, 1, ow, oh, width, height);
        if self.config.minmax {
            let lo = m.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if hi > lo {
                m.iter_mut().for_each(|v| *v = (*v - lo) / (hi - lo));
            }
        }
        m.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        Ok(m)
    }

    /// The matte of `image`: one value in 0..1 per pixel, row-major.
    pub fn matte(&self, image: &Rgba8Image) -> Result<Vec<f32>> {
        let out = self.run(self.preprocess(image)?)?;
        self.matte_from_output(&out, image.width, image.height)
    }

    /// A sprite of `image` with this graph's matte as alpha (see [`sprite_from_matte`]).
    pub fn make_sprite(&self, image: &Rgba8Image, options: &SpriteOptions) -> Result<Sprite> {
        if options.feather_radius > 64 {
            return Err(Error::invalid(format!("feather radius {} is over 64", options.feather_radius)));
        }
        sprite_from_matte(image, &self.matte(image)?, options)
    }
}

/// Where a sprite's alpha comes from in [`Model::make_sprite`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Matte {
    /// The model's matting graph when it has one, else the chroma key.
    #[default]
    Auto,
    /// Always the chroma key ([`make_sprite`]).
    Key,
    /// The model's matting graph; MODEL_NOT_FOUND when it has none.
    Graph,
}

/// A model's matting graph: where it is, and the graph once loaded. Shared by
/// a model and its views; a failed load is not kept, so it is tried again
/// on the next sprite.
#[derive(Default)]
pub(crate) struct MattingSlot {
    pub(crate) source: Option<PathBuf>,
    pub(crate) loaded: parking_lot::Mutex<Option<Arc<Matting>>>,
}

impl MattingSlot {
    pub(crate) fn new(source: Option<PathBuf>) -> Self {
        Self { source, loaded: Default::default() }
    }
}

impl Model {
    /// Whether sprites can use a matting graph: the model folder has
    /// `matting/`, or one was named when the model loaded.
    pub fn has_matting(&self) -> bool {
        self.inner.matting.source.is_some()
    }

    /// The matting graph, loaded on first use; `None` when the model has none.
    /// Under per-stage residency it is one more stage of the model.
    pub fn matting(&self) -> Result<Option<Arc<Matting>>> {
        let slot = &self.inner.matting;
        let Some(source) = &slot.source else { return Ok(None) };
        let mut loaded = slot.loaded.lock();
        if let Some(m) = &*loaded {
            return Ok(Some(Arc::clone(m)));
        }
        let m = Arc::new(Matting::load_in(&self.inner.runtime, source, None, &self.inner.residency)?);
        *loaded = Some(Arc::clone(&m));
        Ok(Some(m))
    }

    /// Cuts a sprite out of `image` (e.g. one this model generated) with the
    /// model's matting graph or the chroma key, as `matte` says. Errors: as
    /// [`make_sprite`] / [`Matting::make_sprite`]; MODEL_NOT_FOUND when
    /// `Matte::Graph` is asked of a model without one, or its file is gone;
    /// MODEL_INVALID for a graph or config Kiln cannot use (the model stays
    /// usable, and the graph is loaded again on the next call).
    pub fn make_sprite(&self, image: &Rgba8Image, options: &SpriteOptions, matte: Matte) -> Result<Sprite> {
        let graph = match matte {
            Matte::Key => None,
            Matte::Auto => self.matting()?,
            Matte::Graph => Some(self.matting()?.ok_or_else(|| {
                Error::new(
                    ErrorKind::ModelNotFound,
                    format!(
                        "{} has no matting/model.onnx and no matting graph was named when it loaded",
                        self.inner.layout.root.display()
                    ),
                )
            })?),
        };
        match graph {
            Some(g) => g.make_sprite(image, options),
            None => make_sprite(image, options),
        }
    }
}
