//! A loaded Stable Diffusion model: its layout, configs, tokenizer and graphs.
pub mod graph;
pub mod layout;
pub mod controlnet;
pub mod matting;
pub mod upscaler;
mod clip_skip;
mod adapters;
pub mod embedding;
pub mod lora;
pub(crate) mod onnx_proto;
pub mod preview;
pub mod quantize;
pub mod attention;
pub mod seamless;
pub(crate) mod side_graph;
pub mod static_unet;
pub mod step_graph;
mod text;
mod upcast;
pub mod vae;
pub mod vae_tiles;
pub(crate) mod xl;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::value::TensorElementType;

pub use self::graph::{Graph, GraphInput, Residency, TensorSpec};
pub use self::embedding::EmbeddingSpec;
pub use self::lora::LoraSpec;
pub use self::layout::ModelLayout;
use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::tokenizer::ClipTokenizer;

/// How the U-Net wants its inputs, read from the session.
#[derive(Debug, Clone)]
pub struct UnetIo {
    /// Latent input (`sample`).
    pub sample: TensorSpec,
    /// Timestep input: rank 0 (optimum) or rank 1 `[batch]` (legacy export).
    pub timestep: TensorSpec,
    /// Text embeddings input (`encoder_hidden_states`).
    pub encoder_hidden_states: TensorSpec,
    /// Guidance embedding of LCM-distilled U-Nets.
    pub timestep_cond: Option<TensorSpec>,
    /// SDXL: pooled text embedding input (`text_embeds`).
    pub text_embeds: Option<TensorSpec>,
    /// SDXL: size and crop conditioning input (`time_ids`).
    pub time_ids: Option<TensorSpec>,
    /// Noise prediction output (`out_sample`).
    pub output: String,
    /// Largest batch one call may take (`None` = dynamic).
    pub max_batch: Option<usize>,
}

/// Text encoder inputs and outputs.
#[derive(Debug, Clone)]
pub struct TextEncoderIo {
    /// Token ids input.
    pub input_ids: TensorSpec,
    /// Per-token embeddings output (`last_hidden_state`).
    pub output: String,
    /// `hidden_states.0` … `hidden_states.N` when the export has them (SDXL
    /// exports do), by index: the token embeddings, then each layer's output.
    pub hidden_states: Vec<String>,
    /// The projected pooled embedding (`text_embeds`), for CLIP with projection.
    pub pooled: Option<String>,
}

/// VAE decoder inputs and outputs.
#[derive(Debug, Clone)]
pub struct VaeDecoderIo {
    /// Latent input.
    pub latent: TensorSpec,
    /// Image output.
    pub output: String,
}

/// A model ready to generate. Cheap to clone; safe to share between threads
/// (each graph runs one call at a time).
#[derive(Clone)]
pub struct Model {
    pub(crate) inner: Arc<ModelInner>,
}

pub(crate) struct ModelInner {
    /// Held so the ONNX Runtime environment outlives every session of the model.
    pub(crate) runtime: Runtime,
    pub(crate) layout: ModelLayout,
    // Shared between a model and its seamless variants (`Model::seamless`).
    pub(crate) tokenizer: Arc<ClipTokenizer>,
    pub(crate) text_encoder: Arc<Graph>,
    pub(crate) text_io: TextEncoderIo,
    pub(crate) unet: Arc<Graph>,
    pub(crate) unet_io: UnetIo,
    pub(crate) vae_decoder: Arc<Graph>,
    pub(crate) vae_io: VaeDecoderIo,
    /// `vae_decoder` upcast to float32, made when a decode overflows (see `vae`).
    pub(crate) vae_decoder_f32: LazyDecoder,
    /// The optional TAESD-style preview decoder and its latent input.
    pub(crate) preview_decoder: Option<Arc<(Graph, VaeDecoderIo)>>,
    /// Fitted on first use (see `preview`).
    pub(crate) preview_projection: Arc<std::sync::OnceLock<Result<preview::LatentProjection>>>,
    pub(crate) residency: Arc<graph::ResidencyGroup>,
    /// Recently used prompts and their embeddings, most recent last.
    pub(crate) embedding_cache: Arc<parking_lot::Mutex<text::EmbeddingCache>>,
    /// Which axes this model's graphs wrap around on.
    pub(crate) seamless: seamless::Seamless,
    /// Text-encoder layers skipped from the end (CLIP skip).
    pub(crate) clip_skip: u32,
    /// SDXL: the second text encoder and the U-Net's added conditioning.
    pub(crate) xl: Option<Arc<xl::XlText>>,
    /// Variants (seamless, CLIP skip) made from this base model, kept for
    /// reuse. Variants hold only a weak reference back, so there is no cycle.
    pub(crate) variants: parking_lot::Mutex<std::collections::HashMap<(seamless::Seamless, u32), Model>>,
    /// For a variant: the model it was made from.
    pub(crate) base: Option<std::sync::Weak<ModelInner>>,
    /// The VAE encoder (img2img, inpainting), loaded on first use.
    pub(crate) vae_encoder: LazyEncoder,
    /// The optional matting graph for sprites, loaded on first use.
    pub(crate) matting: Arc<matting::MattingSlot>,
    /// The LoRAs merged into this model's weights (empty for a plain model).
    pub(crate) adapters: Arc<AppliedAdapters>,
    /// Graph structure indexes for LoRA mapping, shared by every model made
    /// from the same load.
    pub(crate) lora_indexes: Arc<lora::IndexCache>,
    /// ControlNet graphs, loaded on first use (per view: they wrap around
    /// with the U-Net on seamless axes).
    pub(crate) controlnets: controlnet::ControlNetSlot,
    /// The U-Net specialised to each job shape seen (`ProviderPolicy::static_unet`).
    pub(crate) static_unets: Arc<static_unet::StaticUnets>,
    /// The scheduler step as a graph, for device-resident latents (loaded on first use).
    pub(crate) step_graphs: Arc<step_graph::StepGraphs>,
}

/// Adapters to apply with [`Model::with_adapters`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Adapters {
    /// LoRA files and their scales, applied together (deltas add up).
    pub loras: Vec<lora::LoraSpec>,
    /// Textual-inversion embeddings: tokens added to the prompt vocabulary.
    pub embeddings: Vec<EmbeddingSpec>,
    /// LoRA keys that match no layer of the model only warn (with their count)
    /// instead of failing.
    pub allow_unmatched: bool,
}

/// What is merged into a model, and the weights that carry it.
#[derive(Default)]
pub(crate) struct AppliedAdapters {
    pub(crate) spec: Adapters,
    /// One line per LoRA for model info: path, scale, layout, modules.
    pub(crate) descriptions: Vec<String>,
    pub(crate) unet: lora::Overrides,
    pub(crate) text_encoder: lora::Overrides,
    /// SDXL's second text encoder.
    pub(crate) text_encoder_2: lora::Overrides,
    /// LoRA factors fed to the slots of each graph instead of merged
    /// ([`ModelOptions::lora_slots`]); empty when merged or without slots.
    pub(crate) unet_factors: lora::slots::SlotMap,
    pub(crate) text_encoder_factors: lora::slots::SlotMap,
    pub(crate) text_encoder_2_factors: lora::slots::SlotMap,
    /// The tokenizer before any embedding was added (set when this model has
    /// embeddings, so a switch starts from the original vocabulary).
    pub(crate) base_tokenizer: Option<Arc<ClipTokenizer>>,
    /// SDXL's `tokenizer_2` before any embedding was added (set with
    /// `base_tokenizer`).
    pub(crate) base_tokenizer_2: Option<Arc<ClipTokenizer>>,
}

/// How [`Model::load_with`] loads a model. `Default` is what [`Model::load`] does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelOptions {
    /// Load the U-Net and VAE decoder already rewritten to wrap around on these
    /// axes (see [`Model::seamless`]) instead of the plain ones, so a caller
    /// that only wants tileable output never holds the plain graphs. The
    /// loaded model is that seamless view; `seamless(Seamless::None)` on it
    /// loads the plain graphs then. Images are bit-identical to
    /// `Model::load(..)?.seamless(axes)`.
    pub seamless: seamless::Seamless,
    /// A matting graph for sprites: a folder holding `model.onnx` (and
    /// optionally `config.json`), or an ONNX file (settings from the `.json`
    /// of the same name beside it, if any). It must exist; it is loaded on the
    /// first sprite. `None` = the model folder's `matting/` when present (see
    /// [`matting`]).
    pub matting: Option<PathBuf>,
    /// Store the text encoders' and U-Net's matrix-product weights as int8,
    /// rewritten at load as ONNX Runtime's `quantize_dynamic` would (see
    /// [`quantize`]). Default: as exported.
    pub quantization: quantize::Quantization,
    /// Whether attention layers run as ONNX Runtime's fused
    /// `MultiHeadAttention` instead of as exported (see [`attention`]): far
    /// less memory at large sizes, and faster. Default: fused when the graphs
    /// run on the CPU provider.
    pub attention: attention::Attention,
    /// Give the U-Net and text encoders a LoRA slot beside every adaptable
    /// layer (`src/model/lora/slots.rs`): LoRAs are then fed at run time, so
    /// [`Model::with_adapters`] makes no session and copies no weight for
    /// plain low-rank LoRAs (milliseconds instead of seconds, no second copy
    /// of the U-Net). Unused slots are switched off (about 0.5 % per U-Net
    /// call); a fed LoRA runs the side paths of its layers (about 5-7 % with
    /// every layer adapted). Other adapter kinds are merged as without
    /// slots. Default: off.
    pub lora_slots: bool,
}

/// A decoder made on first use (the float32 retry of `vae_decoder`).
pub(crate) type LazyDecoder = Arc<std::sync::OnceLock<Result<Arc<(Graph, VaeDecoderIo)>>>>;

/// The VAE encoder, shared by a model and its variants, loaded on first use.
pub(crate) type LazyEncoder = Arc<std::sync::OnceLock<Result<Arc<(Graph, VaeEncoderIo)>>>>;

/// VAE encoder inputs and outputs.
#[derive(Debug, Clone)]
pub struct VaeEncoderIo {
    /// Image input `[1, 3, H, W]` in [-1, 1].
    pub image: TensorSpec,
    /// `latent_parameters` (mean and log-variance, optimum) or `latent_sample`
    /// (already sampled, older exports).
    pub output: String,
    /// Whether the output holds mean and log-variance.
    pub parameters: bool,
}


/// Facts about a loaded model that callers commonly need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelInfo {
    /// Native width and height in pixels.
    pub default_size: usize,
    /// Width and height must be multiples of this.
    pub size_multiple: usize,
    /// Latent channels.
    pub latent_channels: usize,
    /// Pixels per latent pixel.
    pub vae_downsampling: usize,
    /// Width of the text embeddings.
    pub embedding_dim: usize,
    /// Whether the export has a VAE encoder (needed for img2img).
    pub has_vae_encoder: bool,
    /// Whether sprites can use a matting graph ([`Model::has_matting`]).
    pub has_matting: bool,
    /// How the weights are stored for running ([`ModelOptions::quantization`]).
    pub quantization: quantize::Quantization,
    /// Attention layers of the U-Net that run fused ([`ModelOptions::attention`]);
    /// 0 when none do.
    pub fused_attention: usize,
    /// Layers of the U-Net with a LoRA slot ([`ModelOptions::lora_slots`]);
    /// 0 when loaded without.
    pub lora_slots: usize,
}

impl Model {
    /// Loads a model folder in the diffusers/optimum ONNX layout.
    pub fn load(runtime: &Runtime, dir: &Path) -> Result<Self> {
        Self::load_with(runtime, dir, &ModelOptions::default())
    }

    /// Loads a model folder with options: a seamless view without the plain
    /// graphs, a matting graph from elsewhere.
    ///
    /// A load job (`JobWork::LoadModel`) runs this with its cancel switch
    /// lent to the runtime: each session being created then gives up when
    /// the job is cancelled.
    pub fn load_with(runtime: &Runtime, dir: &Path, options: &ModelOptions) -> Result<Self> {
        let mut layout = ModelLayout::open(dir)?;
        layout.quantization = options.quantization;
        layout.attention = options.attention;
        layout.lora_slots = options.lora_slots;
        let policy = &runtime.inner.providers;
        if options.lora_slots && (policy.static_unet || policy.cuda_graph) {
            return Err(Error::unsupported(
                "LoRA slots cannot be combined with the static U-Net or CUDA graphs (their specialised graphs fix every input's shape, and a slot's rank changes with the LoRA): load without `lora_slots`, or without `static_unet`/`cuda_graph`",
            ));
        }
        let matting_source = match &options.matting {
            Some(p) => {
                let file = side_graph::graph_file(p);
                if !file.is_file() {
                    return Err(Error::new(
                        crate::error::ErrorKind::ModelNotFound,
                        format!("matting graph {} does not exist", file.display()),
                    ));
                }
                Some(p.clone())
            }
            // A `matting/` folder counts even without model.onnx: a sprite then
            // fails with MODEL_NOT_FOUND instead of silently keying.
            None => Some(layout.root.join("matting")).filter(|p| p.is_dir()),
        };
        let tokenizer = ClipTokenizer::from_dir(&layout.tokenizer_dir, layout.text_config.max_position_embeddings)?;
        let second = layout.text_encoder_2.as_deref().filter(|_| layout.tokenizer_2_dir.is_some()).map(|p| ("text_encoder_2", p));
        let core = [("text_encoder", layout.text_encoder.as_path()), ("unet", &layout.unet), ("vae_decoder", &layout.vae_decoder)];
        let mut plan = opened_at_load(runtime, &layout, &core.into_iter().chain(second).collect::<Vec<_>>());
        // The preview decoder stays resident under either residency (below).
        plan.extend(layout.preview_decoder.as_deref().map(|p| ("preview_decoder", p)));
        runtime.plan_load(&plan);
        let group = graph::ResidencyGroup::new(runtime.inner.residency);
        let axes = options.seamless;
        let no_adapters = AppliedAdapters::default();
        let (text_encoder, unet, vae_decoder) = load_core_graphs(runtime, &layout, axes, &group, &no_adapters)?;
        let text_io = text_encoder_io(&text_encoder)?;
        let unet_io = unet_io(&unet)?;
        let vae_io = vae_decoder_io(&vae_decoder)?;
        // The preview decoder runs between U-Net calls, so it never takes part
        // in per-stage residency (that would reload the U-Net every step).
        let preview_decoder = match &layout.preview_decoder {
            Some(path) => {
                let own_group = graph::ResidencyGroup::new(Residency::AllResident);
                let g = Graph::load(runtime, "preview_decoder", path, &own_group)?;
                let io = vae_decoder_io(&g).map_err(|e| e.context("preview_decoder"))?;
                Some(Arc::new((g, io)))
            }
            None => None,
        };
        fill_from_graphs(&mut layout, &unet_io, &vae_io);
        let xl = load_xl(runtime, &layout, &unet_io, &text_io, &group)?;
        check_consistency(&layout, &unet_io)?;
        if !layout.missing_configs.is_empty() {
            runtime.logger().log(
                crate::runtime::LogLevel::Warning,
                &format!(
                    "{}: no {}; using SD 1.x defaults (native size {}px, VAE scaling {}) and the graphs' own shapes",
                    layout.root.display(),
                    layout.missing_configs.join(", "),
                    layout.default_size(),
                    layout.vae_config.scaling_factor
                ),
            );
        }
        runtime.logger().info(&format!(
            "model {} loaded: {}px native, unet timestep {:?} rank {}, batch {}",
            layout.root.display(),
            layout.default_size(),
            unet_io.timestep.ty,
            unet_io.timestep.shape.len(),
            unet_io.max_batch.map_or("dynamic".to_string(), |b| b.to_string()),
        ));
        Ok(Self {
            inner: Arc::new(ModelInner {
                // What the model keeps outlives the load (and a job's cancel).
                runtime: runtime.detached(),
                layout,
                tokenizer: Arc::new(tokenizer),
                text_encoder: Arc::new(text_encoder),
                text_io,
                unet: Arc::new(unet),
                unet_io,
                vae_decoder: Arc::new(vae_decoder),
                vae_io,
                vae_decoder_f32: Default::default(),
                preview_decoder,
                preview_projection: Arc::new(std::sync::OnceLock::new()),
                residency: group,
                embedding_cache: Arc::new(parking_lot::Mutex::new(text::EmbeddingCache::new(runtime.inner.embedding_cache_entries))),
                seamless: axes,
                clip_skip: 0,
                xl,
                variants: Default::default(),
                base: None,
                vae_encoder: Default::default(),
                matting: Arc::new(matting::MattingSlot::new(matting_source)),
                adapters: Arc::new(no_adapters),
                lora_indexes: Default::default(),
                controlnets: Default::default(),
                static_unets: Default::default(),
                step_graphs: Default::default(),
            }),
        })
    }

    /// Sizes and channel counts of this model.
    pub fn info(&self) -> ModelInfo {
        let l = &self.inner.layout;
        ModelInfo {
            default_size: l.default_size(),
            size_multiple: l.size_multiple(),
            latent_channels: l.vae_config.latent_channels,
            vae_downsampling: l.vae_config.downsampling,
            embedding_dim: l.text_config.hidden_size + l.text_config_2.as_ref().map_or(0, |c| c.hidden_size),
            has_vae_encoder: l.vae_encoder.is_some(),
            has_matting: self.has_matting(),
            quantization: l.quantization,
            fused_attention: self.inner.unet.fused_attention,
            lora_slots: self.inner.unet.lora_slots(),
        }
    }

    /// `None` for a model without SDXL conditioning; for SDXL, whether its
    /// U-Net's time ids hold an aesthetic score (refiner-style) instead of
    /// the target size.
    pub(crate) fn sdxl_aesthetic(&self) -> Option<bool> {
        self.inner.xl.as_ref().map(|xl| xl.aesthetic)
    }

    /// The latent→RGB projection used for step previews, fitted on first use.
    pub fn preview_projection(&self) -> Result<&preview::LatentProjection> {
        self.inner
            .preview_projection
            .get_or_init(|| preview::LatentProjection::fit(&self.inner))
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A cheap RGBA8 preview of `[1, C, h, w]` latents: the model's preview
    /// decoder at full resolution when the folder has `preview_decoder/`,
    /// otherwise the linear projection at latent resolution.
    pub fn preview(&self, latents: &ndarray::ArrayD<f32>) -> Result<crate::image::Rgba8Image> {
        match &self.inner.preview_decoder {
            Some(decoder) => {
                let (graph, io) = &**decoder;
                let scale = 1.0 / self.inner.layout.preview_scaling_factor;
                let input = latents.mapv(|x| x * scale);
                let out = graph.run(vec![(&io.latent, GraphInput::Float(input))], &io.output, None)?;
                preview::image_from_decoder_output(&out)
            }
            None => self.preview_projection()?.apply(latents),
        }
    }

    /// Decodes U-Net-scale latents `[1, C, h, w]` (as [`Generation::latents`](crate::pipeline::Generation))
    /// to an image, as a generation's last step does: divided by the VAE's
    /// `scaling_factor` (plus its `shift_factor`), whole or in tiles, retried
    /// in float32 when a float16 decoder overflows; or with the preview decoder.
    pub fn decode_latents(&self, latents: &ndarray::ArrayD<f32>, tiling: &vae::VaeTiling, decoder: vae::FinalDecoder) -> Result<crate::image::FloatImage> {
        let s = latents.shape();
        if s.len() != 4 || s[0] != 1 || s[1] != self.inner.layout.vae_config.latent_channels || s[2] == 0 || s[3] == 0 {
            return Err(Error::new(
                crate::error::ErrorKind::InvalidSize,
                format!("latents of shape {s:?}; this model decodes [1, {}, h, w]", self.inner.layout.vae_config.latent_channels),
            ));
        }
        tiling.validate()?;
        self.inner.decode_latents(latents, tiling, decoder, None)
    }

    /// A view of this model whose U-Net and VAE decoder wrap around on `axes`,
    /// so images tile seamlessly (see [`seamless`]). The rewritten graphs are
    /// made once per setting and kept while this model lives; tokenizer,
    /// text encoder and prompt cache are shared. The view holds its own
    /// U-Net and decoder next to the plain ones: to hold only the rewritten
    /// ones, load with [`ModelOptions::seamless`] (then `Seamless::None`
    /// here loads the plain graphs on demand).
    pub fn seamless(&self, axes: seamless::Seamless) -> Result<Model> {
        self.variant(axes, self.inner.clip_skip)
    }

    /// [`Model::seamless`] as a job runs it: `cancel` stops the rewrite and
    /// the creation of the view's sessions.
    pub(crate) fn seamless_under(&self, axes: seamless::Seamless, cancel: &crate::runtime::LoadControl) -> Result<Model> {
        self.variant_under(axes, self.inner.clip_skip, Some(cancel))
    }

    /// A view of this model that takes its text embeddings `skip` layers
    /// before the end of the text encoder (diffusers' `clip_skip`); 0 = off.
    pub fn clip_skip(&self, skip: u32) -> Result<Model> {
        self.variant(self.inner.seamless, skip)
    }

    fn variant(&self, axes: seamless::Seamless, skip: u32) -> Result<Model> {
        self.variant_under(axes, skip, None)
    }

    fn variant_under(&self, axes: seamless::Seamless, skip: u32, cancel: Option<&crate::runtime::LoadControl>) -> Result<Model> {
        if let Some(base) = self.inner.base.as_ref().and_then(std::sync::Weak::upgrade) {
            return Model { inner: base }.variant_under(axes, skip, cancel);
        }
        if (axes, skip) == (self.inner.seamless, self.inner.clip_skip) {
            return Ok(self.clone());
        }
        let mut variants = self.inner.variants.lock();
        if let Some(m) = variants.get(&(axes, skip)) {
            return Ok(m.clone());
        }
        let m = &self.inner;
        // The new sessions answer to the cancel switch; the view keeps m.runtime.
        let runtime = m.runtime.loading_under(cancel);
        let new_unet = axes != m.seamless;
        let new_text = skip != m.clip_skip && m.xl.is_none();
        let graphs = [("unet", new_unet, &m.layout.unet), ("vae_decoder", new_unet, &m.layout.vae_decoder), ("text_encoder", new_text, &m.layout.text_encoder)];
        let reopened: Vec<_> = graphs.iter().filter(|g| g.1).map(|&(name, _, file)| (name, file.as_path())).collect();
        runtime.plan_load(&opened_at_load(&runtime, &m.layout, &reopened));
        let group = graph::ResidencyGroup::new(m.runtime.inner.residency);
        // `m` is the root (its U-Net and decoder are plain or, when loaded with
        // `ModelOptions::seamless`, already rewritten) or a view that outlived
        // its root: either way its own graphs serve only its own setting.
        let (unet, vae_decoder, vae_decoder_f32) = if !new_unet {
            (Arc::clone(&m.unet), Arc::clone(&m.vae_decoder), Arc::clone(&m.vae_decoder_f32))
        } else {
            if axes == seamless::Seamless::None {
                m.runtime.logger().info("loading the plain U-Net and VAE decoder for a view without seamless tiling");
            }
            (
                Arc::new(load_unet(&runtime, &m.layout, axes, &group, &m.adapters.unet)?.fed(&m.adapters.unet_factors)?),
                Arc::new(load_vae_decoder(&runtime, &m.layout, axes, &group)?),
                Default::default(),
            )
        };
        // As for the U-Net: `m` is the root, or a view whose root is gone, so
        // its own text encoder is only reused for its own setting.
        let (text_encoder, embedding_cache) = if skip == m.clip_skip {
            (Arc::clone(&m.text_encoder), Arc::clone(&m.embedding_cache))
        } else if !new_text {
            // SDXL exports output every hidden state: CLIP skip picks one, no
            // rewrite. The cache is keyed by layer, so it can be shared.
            (Arc::clone(&m.text_encoder), Arc::clone(&m.embedding_cache))
        } else {
            let g = load_text_encoder(&runtime, &m.layout, skip, &group, &m.adapters.text_encoder)?.fed(&m.adapters.text_encoder_factors)?;
            // Different embeddings for the same prompt: a cache of its own.
            let cache = text::EmbeddingCache::new(m.runtime.inner.embedding_cache_entries);
            (Arc::new(g), Arc::new(parking_lot::Mutex::new(cache)))
        };
        let variant = Model {
            inner: Arc::new(ModelInner {
                runtime: m.runtime.clone(),
                layout: m.layout.clone(),
                tokenizer: Arc::clone(&m.tokenizer),
                text_io: text_encoder_io(&text_encoder)?,
                text_encoder,
                unet_io: unet_io(&unet)?,
                unet,
                vae_io: vae_decoder_io(&vae_decoder)?,
                vae_decoder,
                vae_decoder_f32,
                preview_decoder: m.preview_decoder.clone(),
                preview_projection: Arc::clone(&m.preview_projection),
                residency: group,
                embedding_cache,
                seamless: axes,
                clip_skip: skip,
                xl: m.xl.clone(),
                variants: Default::default(),
                base: Some(Arc::downgrade(&self.inner)),
                vae_encoder: Arc::clone(&m.vae_encoder),
                matting: Arc::clone(&m.matting),
                adapters: Arc::clone(&m.adapters),
                lora_indexes: Arc::clone(&m.lora_indexes),
                controlnets: Default::default(),
                static_unets: Default::default(),
                step_graphs: Default::default(),
            }),
        };
        variants.insert((axes, skip), variant.clone());
        Ok(variant)
    }

    /// The axes this model's output tiles along.
    pub fn seamless_axes(&self) -> seamless::Seamless {
        self.inner.seamless
    }

    /// Whether previews come from a preview decoder graph.
    pub fn has_preview_decoder(&self) -> bool {
        self.inner.preview_decoder.is_some()
    }

    /// Which execution providers each graph got: text encoder, U-Net, VAE decoder.
    pub fn graph_providers(&self) -> [(&'static str, &crate::runtime::ProviderChoice); 3] {
        let i = &self.inner;
        [
            (i.text_encoder.name, &i.text_encoder.provider),
            (i.unet.name, &i.unet.provider),
            (i.vae_decoder.name, &i.vae_decoder.provider),
        ]
    }

    /// Inputs and outputs of the text encoder, U-Net and VAE decoder, as their
    /// sessions report them (under per-stage residency, as the files declare
    /// them: the same names, element types and shapes, -1 where dynamic).
    pub fn graph_io(&self) -> [(&'static str, &[TensorSpec], &[TensorSpec]); 3] {
        let i = &self.inner;
        fn io(g: &Graph) -> (&'static str, &[TensorSpec], &[TensorSpec]) {
            (g.name, g.inputs.as_slice(), g.outputs.as_slice())
        }
        [io(&i.text_encoder), io(&i.unet), io(&i.vae_decoder)]
    }

    /// Per graph: ONNX Runtime run calls so far and seconds inside them.
    pub fn graph_run_times(&self) -> [(&'static str, u64, f64); 3] {
        let i = &self.inner;
        let t = |g: &Graph| {
            let (calls, secs) = g.run_time();
            (g.name, calls, secs)
        };
        // The U-Net's figures include its specialised graphs (static U-Net)
        // and, in a ControlNet folder, `unet_controlnet`'s, which serves its calls.
        let (unet_name, calls, secs) = t(&i.unet);
        let (s_calls, s_secs) = i.static_unets.run_time();
        let (r_calls, r_secs) = i.controlnets.residual_unet_run_time();
        [t(&i.text_encoder), (unet_name, calls + s_calls + r_calls, secs + s_secs + r_secs), t(&i.vae_decoder)]
    }

    /// Names of the U-Net and its encoders' and decoder's graphs loaded right
    /// now (all of them unless the runtime asked for per-stage residency;
    /// `unet` opens lazily in a ControlNet folder, where `unet_controlnet`
    /// serves every job once a job has run; with the static U-Net on, jobs
    /// run `unet_static` or, in a ControlNet folder, `unet_controlnet_static`,
    /// the graphs specialised from them).
    pub fn resident_graphs(&self) -> Vec<&'static str> {
        let names = ["text_encoder", "text_encoder_2", "unet", "unet_static", "unet_controlnet", "unet_controlnet_static", "vae_decoder"];
        let loaded = self.inner.residency.loaded();
        names.into_iter().filter(|n| loaded.contains(n)).collect()
    }

    /// How many ONNX Runtime sessions are loaded right now for this model:
    /// its graphs, those of the views made from it (seamless, CLIP skip) that
    /// are still alive, and the optional ones once loaded (VAE encoder,
    /// preview decoder, matting, ControlNets, specialised U-Nets); each
    /// shared session counted once (a LoRA-fed view adds none). Under
    /// per-stage residency only the resident ones count. A measure of the
    /// memory the model holds, for tests and tools.
    pub fn loaded_sessions(&self) -> usize {
        let root = self.inner.base.as_ref().and_then(std::sync::Weak::upgrade).unwrap_or_else(|| Arc::clone(&self.inner));
        let mut models = vec![Arc::clone(&root)];
        models.extend(root.variants.lock().values().map(|v| Arc::clone(&v.inner)));
        if !models.iter().any(|m| Arc::ptr_eq(m, &self.inner)) {
            models.push(Arc::clone(&self.inner)); // a view whose root is gone
        }
        // By session: a LoRA-fed view's graphs run the base's sessions.
        let mut seen: Vec<usize> = Vec::new();
        let mut add = |g: &Graph| {
            let p = g.session_id();
            if g.is_loaded() && !seen.contains(&p) {
                seen.push(p);
            }
        };
        for m in &models {
            add(&m.text_encoder);
            if let Some((g, _, _)) = m.xl.as_ref().and_then(|x| x.second.as_ref()) {
                add(g);
            }
            add(&m.unet);
            m.static_unets.for_each_graph(&mut add);
            add(&m.vae_decoder);
            if let Some(p) = &m.preview_decoder {
                add(&p.0);
            }
            if let Some(Ok(e)) = m.vae_encoder.get() {
                add(&e.0);
            }
            if let Some(g) = &*m.matting.loaded.lock() {
                add(g.graph());
            }
            m.controlnets.for_each_graph(&mut add);
        }
        seen.len()
    }

    /// Prompt-embedding cache hits and misses so far.
    pub fn embedding_cache_stats(&self) -> (u64, u64) {
        self.inner.embedding_cache.lock().stats()
    }

    /// The runtime this model was loaded with.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.runtime
    }

    /// The parsed folder layout and configs.
    pub fn layout(&self) -> &ModelLayout {
        &self.inner.layout
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &ClipTokenizer {
        &self.inner.tokenizer
    }

    /// SDXL's second tokenizer (`tokenizer_2`, for `text_encoder_2`); `None`
    /// for SD 1.x/2.x and refiner-style exports with one encoder.
    pub fn tokenizer_2(&self) -> Option<&ClipTokenizer> {
        self.inner.xl.as_ref()?.second.as_ref().map(|(_, _, t)| t.as_ref())
    }

    /// How the U-Net takes its inputs.
    pub fn unet_io(&self) -> &UnetIo {
        &self.inner.unet_io
    }
}

/// Loads the text encoder, U-Net and VAE decoder (the latter two rewritten for
/// `axes` unless `None`). Unless the runtime asks for sequential loading they
/// load on three threads at once: creating a session (reading the weights,
/// optimizing the graph) is mostly single-threaded, so the small graphs load
/// while the U-Net does. Per-stage residency opens no session here, so there
/// is nothing to overlap.
fn load_core_graphs(
    runtime: &Runtime,
    layout: &ModelLayout,
    axes: seamless::Seamless,
    group: &Arc<graph::ResidencyGroup>,
    adapters: &AppliedAdapters,
) -> Result<(Graph, Graph, Graph)> {
    let text = || load_text_encoder(runtime, layout, 0, group, &adapters.text_encoder);
    let unet = || load_unet(runtime, layout, axes, group, &adapters.unet);
    let vae = || load_vae_decoder(runtime, layout, axes, group);
    if runtime.inner.sequential_load || runtime.inner.residency == Residency::PerStage {
        return Ok((text()?, unet()?, vae()?));
    }
    std::thread::scope(|scope| {
        // The U-Net, the longest, starts first; a panicking loader becomes an error.
        let unet_thread = std::thread::Builder::new().name("kiln-load-unet".into()).spawn_scoped(scope, unet);
        let vae_thread = std::thread::Builder::new().name("kiln-load-vae".into()).spawn_scoped(scope, vae);
        let join = |what: &str, handle: std::io::Result<std::thread::ScopedJoinHandle<'_, Result<Graph>>>, inline: &dyn Fn() -> Result<Graph>| {
            match handle {
                Ok(h) => h.join().unwrap_or_else(|_| Err(Error::internal(format!("loading the {what} graph panicked")))),
                // No thread to be had: load it on this one.
                Err(_) => inline(),
            }
        };
        let text = text();
        let unet = join("unet", unet_thread, &unet);
        let vae = join("vae_decoder", vae_thread, &vae);
        // The first failure in pipeline order is the one reported.
        Ok((text?, unet?, vae?))
    })
}

/// A rewrite of a graph's bytes (seamless tiling, CLIP skip) and what it is for.
type Rewrite<'a> = (&'a str, &'a dyn Fn(&[u8]) -> Result<Vec<u8>>);

/// How a graph's bytes are prepared at load beyond a view's rewrite: its
/// matrix weights' storage and whether its attention is fused.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Preparation {
    pub quantization: quantize::Quantization,
    pub fuse_attention: bool,
    /// LoRA slots beside the adaptable layers ([`ModelOptions::lora_slots`]).
    pub lora_slots: bool,
}

impl Preparation {
    /// For a U-Net or ControlNet of `layout`: both, as the load options say.
    pub(crate) fn denoiser(runtime: &Runtime, layout: &ModelLayout) -> Self {
        let cpu_only = crate::runtime::providers::cpu_only(&runtime.inner.providers);
        Self { quantization: layout.quantization, fuse_attention: layout.attention.fuses(cpu_only), lora_slots: layout.lora_slots }
    }

    /// For a text encoder: int8 when asked; its attention is causal (never fused).
    fn text(layout: &ModelLayout) -> Self {
        Self { quantization: layout.quantization, fuse_attention: false, lora_slots: layout.lora_slots }
    }
}

/// A graph's source as the model runs it, and how many attention layers in it run fused.
pub(crate) struct Prepared {
    source: graph::GraphSource,
    overrides: lora::Overrides,
    fused_attention: usize,
}

/// `path` as the model runs it: the file itself, or rewritten in memory by
/// `rewrite`, then with its attention fused and its matrix weights made int8
/// as `prep` says; external-data weights are still read from the original
/// folder. `overrides` (LoRA-merged weights) come back in the form the graph
/// holds them (int8 and a scale for a quantized weight).
fn prepared_source(
    runtime: &Runtime,
    name: &str,
    path: &Path,
    prep: Preparation,
    rewrite: Option<Rewrite<'_>>,
    overrides: &lora::Overrides,
) -> Result<Prepared> {
    let int8 = prep.quantization == quantize::Quantization::Int8;
    if rewrite.is_none() && !int8 && !prep.fuse_attention && !prep.lora_slots {
        return Ok(Prepared { source: graph::GraphSource::File(path.to_path_buf()), overrides: Arc::clone(overrides), fused_attention: 0 });
    }
    let mut what: Vec<&str> = rewrite.iter().map(|(w, _)| *w).collect();
    runtime.check_load_cancel(&format!("preparing the {name} graph"))?;
    let mut bytes = std::fs::read(path)
        .map_err(|e| Error::new(crate::error::ErrorKind::Io, format!("cannot read {}: {e}", path.display())))?;
    let in_context = |e: Error| e.context(format!("{name} ({})", path.display()));
    if let Some((_, f)) = rewrite {
        bytes = f(&bytes).map_err(in_context)?;
    }
    let mut fused_attention = 0;
    if prep.fuse_attention {
        let (fused, report) = attention::fuse(&bytes).map_err(in_context)?;
        if let Some(fused) = fused {
            bytes = fused;
            fused_attention = report.fused;
            what.push("fused attention");
            runtime.logger().info(&format!("{name}: {} of {} attention layers fused", report.fused, report.softmaxes));
        }
    }
    // Slots after the fusion (it reads no `If` branch; the projections it
    // feeds keep their names) and before int8 (their branches stay float).
    let mut slots = 0;
    if prep.lora_slots {
        let (slotted, count) = lora::slots::add_slots(&bytes).map_err(in_context)?;
        if let Some(slotted) = slotted {
            bytes = slotted;
            slots = count;
            what.push("LoRA slots");
            runtime.logger().info(&format!("{name}: {count} layers with a LoRA slot"));
        }
    }
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut overrides = Arc::clone(overrides);
    if int8 {
        runtime.check_load_cancel(&format!("quantizing the {name} graph"))?;
        let (quantized, report) = quantize::quantize_int8(&bytes, &dir).map_err(in_context)?;
        bytes = quantized;
        overrides = quantize::quantize_overrides(&report, &overrides).map_err(in_context)?;
        what.push("int8 weights");
        runtime.logger().info(&format!(
            "{name}: {} matrix products with int8 weights ({:.1} MB of float32 weights now {:.1} MB)",
            report.matmuls,
            report.float_bytes as f64 / 1e6,
            report.int8_bytes as f64 / 1e6
        ));
    }
    if what.is_empty() {
        // Nothing to fuse: the file as it is.
        return Ok(Prepared { source: graph::GraphSource::File(path.to_path_buf()), overrides, fused_attention });
    }
    let what = what.join(", ");
    runtime.logger().info(&format!("{name}: rewritten for {what}"));
    let label = format!("{} ({what})", path.display());
    // int8 and fused U-Nets are read only to make their session: their bytes
    // (every weight stored inline in the file) are not kept once it exists
    // (graphs loaded lazily or per stage keep them to reopen).
    let source = if int8 || fused_attention > 0 || slots > 0 {
        graph::GraphSource::memory_released_after_open(bytes, dir, label)
    } else {
        graph::GraphSource::memory(bytes, dir, label)
    };
    Ok(Prepared { source, overrides, fused_attention })
}

/// Loads `path` with its padded convolutions wrapping around on `axes`
/// (none: as it is), prepared as `prep` says.
pub(crate) fn load_seamless(
    runtime: &Runtime,
    name: &'static str,
    path: &Path,
    (axes, prep): (seamless::Seamless, Preparation),
    group: &Arc<graph::ResidencyGroup>,
    overrides: &lora::Overrides,
    flags: graph::SessionFlags,
) -> Result<Graph> {
    let wrap = |b: &[u8]| seamless::make_seamless(b, axes).map(|(out, _)| out);
    let what = format!("seamless {axes:?}");
    let rewrite = (axes != seamless::Seamless::None).then_some((what.as_str(), &wrap as &dyn Fn(&[u8]) -> Result<Vec<u8>>));
    let prepared = prepared_source(runtime, name, path, prep, rewrite, overrides)?;
    load_prepared(runtime, name, prepared, group, flags)
}

/// Makes the graph of a prepared source.
fn load_prepared(runtime: &Runtime, name: &'static str, prepared: Prepared, group: &Arc<graph::ResidencyGroup>, flags: graph::SessionFlags) -> Result<Graph> {
    let mut graph = Graph::load_flagged(runtime, name, prepared.source, group, prepared.overrides, flags)?;
    graph.fused_attention = prepared.fused_attention;
    Ok(graph)
}

/// The U-Net, wrapping around on `axes`, with LoRA-merged weights when given.
/// Its session is made on first use instead of at load when something else
/// may serve every U-Net call, so that its weights are not held twice:
/// - with the static U-Net asked for, jobs run the graph specialised to their
///   shape, and the dynamic session is made only if a shape cannot be;
/// - in a model folder with `unet_controlnet/` (the same weights taking
///   ControlNet residuals), every job runs that graph, plain ones with zero
///   residuals (`ModelInner::residual_unet_for_plain_calls`), so `unet/`
///   opens only when that cannot serve them.
fn load_unet(runtime: &Runtime, layout: &ModelLayout, axes: seamless::Seamless, group: &Arc<graph::ResidencyGroup>, overrides: &lora::Overrides) -> Result<Graph> {
    let flags = graph::SessionFlags { lazy: !unet_opens_at_load(runtime, layout), ..Default::default() };
    load_seamless(runtime, "unet", &layout.unet, (axes, Preparation::denoiser(runtime, layout)), group, overrides, flags)
}

/// Whether `unet/`'s session is made when the model loads (see [`load_unet`]).
fn unet_opens_at_load(runtime: &Runtime, layout: &ModelLayout) -> bool {
    let policy = &runtime.inner.providers;
    !(policy.static_unet || policy.cuda_graph || layout.unet_controlnet.is_some())
}

/// Which of `graphs` (name, file) a load opens sessions for now, for the
/// job's progress: none under per-stage residency (each opens when its stage
/// first runs), and the U-Net only when [`unet_opens_at_load`].
fn opened_at_load<'a>(runtime: &Runtime, layout: &ModelLayout, graphs: &[(&'static str, &'a Path)]) -> Vec<(&'static str, &'a Path)> {
    if runtime.inner.residency == Residency::PerStage {
        return Vec::new();
    }
    graphs.iter().copied().filter(|(name, _)| *name != "unet" || unet_opens_at_load(runtime, layout)).collect()
}

/// The VAE decoder, wrapping around on `axes`.
fn load_vae_decoder(runtime: &Runtime, layout: &ModelLayout, axes: seamless::Seamless, group: &Arc<graph::ResidencyGroup>) -> Result<Graph> {
    // The decoder is convolutions but for one attention block: it stays float,
    // and as exported (one 512-wide head: fused, it took more memory at 1024²,
    // and its float32 retry re-reads the bytes its session was made from).
    let prep = Preparation::default();
    load_seamless(runtime, "vae_decoder", &layout.vae_decoder, (axes, prep), group, &Default::default(), Default::default())
}

/// The text encoder, `skip` layers cut from the end, with LoRA-merged weights when given.
fn load_text_encoder(runtime: &Runtime, layout: &ModelLayout, skip: u32, group: &Arc<graph::ResidencyGroup>, overrides: &lora::Overrides) -> Result<Graph> {
    let prep = Preparation::text(layout);
    // SDXL exports output every hidden state: CLIP skip picks one instead.
    if skip == 0 || layout.xl.is_some() {
        let prepared = prepared_source(runtime, "text_encoder", &layout.text_encoder, prep, None, overrides)?;
        return load_prepared(runtime, "text_encoder", prepared, group, Default::default());
    }
    let cut = |b: &[u8]| clip_skip::rewrite(b, skip);
    let what = format!("CLIP skip {skip}");
    let prepared = prepared_source(runtime, "text_encoder", &layout.text_encoder, prep, Some((&what, &cut)), overrides)?;
    load_prepared(runtime, "text_encoder", prepared, group, Default::default())
}

/// SDXL's second text encoder, with LoRA-merged weights when given.
fn load_text_encoder_2(runtime: &Runtime, layout: &ModelLayout, path: &Path, group: &Arc<graph::ResidencyGroup>, overrides: &lora::Overrides) -> Result<Graph> {
    let prepared = prepared_source(runtime, "text_encoder_2", path, Preparation::text(layout), None, overrides)?;
    load_prepared(runtime, "text_encoder_2", prepared, group, Default::default())
}

fn text_encoder_io(g: &Graph) -> Result<TextEncoderIo> {
    let input_ids = g
        .find_input(&["input_ids"], Some(2))
        .cloned()
        .ok_or_else(|| Error::model("text_encoder graph has no `input_ids` input"))?;
    if !matches!(input_ids.ty, TensorElementType::Int32 | TensorElementType::Int64) {
        return Err(Error::model(format!("text_encoder `input_ids` is {:?}; expected int32 or int64", input_ids.ty)));
    }
    let output = g
        .find_output(&["last_hidden_state"])
        .ok_or_else(|| Error::model("text_encoder graph has no outputs"))?
        .name
        .clone();
    let mut hidden_states: Vec<(usize, String)> = g
        .outputs
        .iter()
        .filter_map(|o| Some((o.name.strip_prefix("hidden_states.")?.parse().ok()?, o.name.clone())))
        .collect();
    hidden_states.sort();
    if hidden_states.iter().enumerate().any(|(i, (k, _))| i != *k) {
        return Err(Error::model("text encoder `hidden_states.N` outputs are not numbered 0..N"));
    }
    let hidden_states = hidden_states.into_iter().map(|(_, n)| n).collect();
    let pooled = g.outputs.iter().find(|o| o.name == "text_embeds").map(|o| o.name.clone());
    Ok(TextEncoderIo { input_ids, output, hidden_states, pooled })
}

/// SDXL's extra parts when the U-Net takes `text_embeds` and `time_ids`:
/// `text_encoder_2` and `tokenizer_2` (beside `text_encoder`), and checks
/// that the encoders give what the U-Net takes.
fn load_xl(
    runtime: &Runtime,
    layout: &ModelLayout,
    unet: &UnetIo,
    text_io: &TextEncoderIo,
    group: &Arc<graph::ResidencyGroup>,
) -> Result<Option<Arc<xl::XlText>>> {
    let (Some(text_embeds), Some(time_ids)) = (unet.text_embeds.clone(), unet.time_ids.clone()) else {
        if layout.text_encoder_2.is_some() || layout.xl.is_some() {
            return Err(Error::model(
                "the export has SDXL parts (text_encoder_2 or unet `addition_embed_type: text_time`) but the U-Net graph takes no `text_embeds`/`time_ids`",
            ));
        }
        return Ok(None);
    };
    let second = match (&layout.text_encoder_2, &layout.tokenizer_2_dir) {
        (Some(path), Some(dir)) => {
            let g = load_text_encoder_2(runtime, layout, path, group, &Default::default())?;
            let io = text_encoder_io(&g).map_err(|e| e.context("text_encoder_2"))?;
            let max = layout.text_config_2.as_ref().map_or(77, |c| c.max_position_embeddings);
            let tok = ClipTokenizer::from_dir(dir, max)?;
            Some((Arc::new(g), io, Arc::new(tok)))
        }
        _ => None,
    };
    let last = second.as_ref().map_or(text_io, |(_, io, _)| io);
    for (name, io) in std::iter::once(("text_encoder", text_io)).chain(second.as_ref().map(|(_, io, _)| ("text_encoder_2", io))) {
        if io.hidden_states.len() < 2 {
            return Err(Error::model(format!(
                "{name} has no `hidden_states.N` outputs; SDXL needs them (export with optimum, which adds them for SDXL)"
            )));
        }
    }
    if last.pooled.is_none() {
        return Err(Error::model("the last SDXL text encoder has no `text_embeds` output (CLIPTextModelWithProjection)"));
    }
    let cfg = layout.xl.clone();
    let n = time_ids.shape.get(1).copied().filter(|&d| d > 0).map(|d| d as usize);
    let aesthetic = match n {
        Some(5) => true,
        Some(6) => false,
        Some(other) => return Err(Error::model(format!("the U-Net's `time_ids` has {other} values; SDXL uses 6 (or 5 with an aesthetic score)"))),
        None => cfg.as_ref().is_some_and(|c| c.requires_aesthetics_score),
    };
    Ok(Some(Arc::new(xl::XlText {
        second,
        text_embeds,
        time_ids,
        aesthetic,
        force_zeros: cfg.as_ref().is_none_or(|c| c.force_zeros_for_empty_prompt),
    })))
}

pub(crate) fn unet_io(g: &Graph) -> Result<UnetIo> {
    if g.inputs.iter().any(|s| s.name == "added_cond_kwargs") {
        return Err(Error::unsupported("the U-Net takes `added_cond_kwargs` as one input; Kiln reads SDXL's `text_embeds` and `time_ids`"));
    }
    let text_embeds = g.find_input(&["text_embeds"], Some(2)).filter(|s| s.name == "text_embeds").cloned();
    let time_ids = g.find_input(&["time_ids"], Some(2)).filter(|s| s.name == "time_ids").cloned();
    if text_embeds.is_some() != time_ids.is_some() {
        return Err(Error::model("the U-Net takes only one of SDXL's `text_embeds` and `time_ids` (rank 2); it needs both"));
    }
    let sample = g
        .find_input(&["sample"], Some(4))
        .cloned()
        .ok_or_else(|| Error::model("unet graph has no rank-4 `sample` input"))?;
    let timestep = g
        .find_input(&["timestep", "t", "timesteps"], None)
        .cloned()
        .ok_or_else(|| Error::model("unet graph has no `timestep` input"))?;
    if timestep.shape.len() > 1 {
        return Err(Error::model(format!("unet `timestep` has rank {}; expected 0 or 1", timestep.shape.len())));
    }
    let encoder_hidden_states = g
        .find_input(&["encoder_hidden_states"], Some(3))
        .cloned()
        .ok_or_else(|| Error::model("unet graph has no `encoder_hidden_states` input"))?;
    let timestep_cond = g.find_input(&["timestep_cond"], None).cloned();
    let output = g
        .find_output(&["out_sample"])
        .ok_or_else(|| Error::model("unet graph has no outputs"))?
        .name
        .clone();
    let max_batch = match sample.shape.first() {
        Some(&d) if d > 0 => Some(d as usize),
        _ => None,
    };
    Ok(UnetIo { sample, timestep, encoder_hidden_states, timestep_cond, text_embeds, time_ids, output, max_batch })
}

fn vae_decoder_io(g: &Graph) -> Result<VaeDecoderIo> {
    let latent = g
        .find_input(&["latent_sample", "latents", "z"], Some(4))
        .cloned()
        .ok_or_else(|| Error::model("vae_decoder graph has no rank-4 latent input"))?;
    let output = g
        .find_output(&["sample"])
        .ok_or_else(|| Error::model("vae_decoder graph has no outputs"))?
        .name
        .clone();
    Ok(VaeDecoderIo { latent, output })
}

/// Where a per-graph config is missing, takes what the graphs state instead.
fn fill_from_graphs(layout: &mut ModelLayout, unet: &UnetIo, vae: &VaeDecoderIo) {
    let dim = |spec: &TensorSpec, i: usize| spec.shape.get(i).copied().filter(|&d| d > 0).map(|d| d as usize);
    let missing = |rel: &str| layout.missing_configs.iter().any(|m| m == rel);
    if missing("unet/config.json") {
        if let Some(c) = dim(&unet.sample, 1) {
            layout.unet_config.in_channels = c;
        }
        if let Some(s) = dim(&unet.sample, 2) {
            layout.unet_config.sample_size = s;
        }
    }
    if missing("text_encoder/config.json") {
        if let Some(d) = dim(&unet.encoder_hidden_states, 2) {
            layout.text_config.hidden_size = d;
        }
    }
    if missing("vae_decoder/config.json") {
        if let Some(c) = dim(&vae.latent, 1) {
            layout.vae_config.latent_channels = c;
        }
    }
}

impl ModelInner {
    /// The VAE encoder, loaded on first use.
    pub(crate) fn vae_encoder(&self) -> Result<Arc<(Graph, VaeEncoderIo)>> {
        self.vae_encoder
            .get_or_init(|| {
                let path = self.layout.vae_encoder.as_ref().ok_or_else(|| {
                    crate::error::Error::unsupported(format!(
                        "{} has no vae_encoder/model.onnx, which img2img and inpainting need",
                        self.layout.root.display()
                    ))
                })?;
                let g = Graph::load(&self.runtime, "vae_encoder", path, &self.residency)?;
                let image = g
                    .find_input(&["sample"], Some(4))
                    .cloned()
                    .ok_or_else(|| Error::model("vae_encoder graph has no rank-4 `sample` input"))?;
                let (output, parameters) = if g.outputs.iter().any(|o| o.name == "latent_parameters") {
                    ("latent_parameters".to_string(), true)
                } else {
                    let o = g.find_output(&["latent_sample"]).ok_or_else(|| Error::model("vae_encoder graph has no outputs"))?;
                    (o.name.clone(), false)
                };
                Ok(Arc::new((g, VaeEncoderIo { image, output, parameters })))
            })
            .clone()
    }

    /// Encodes an image `[1, 3, H, W]` in [-1, 1] to U-Net-scale latents. A
    /// posterior given as mean and log-variance is sampled with `noise`
    /// (diffusers' `DiagonalGaussianDistribution.sample`) unless `use_mean`.
    pub(crate) fn encode_image(
        &self,
        image: ndarray::ArrayD<f32>,
        noise: &mut dyn crate::scheduler::NoiseSource,
        use_mean: bool,
        tiling: &vae::VaeTiling,
        options: Option<&ort::session::RunOptions>,
    ) -> Result<ndarray::ArrayD<f32>> {
        let enc = self.vae_encoder()?;
        let (graph, io) = &*enc;
        // Tiles blend the posterior's mean and log-variance, as diffusers' tiled_encode blends its moments.
        let out = self.run_encoder(graph, &io.image, &io.output, image, tiling, options)?;
        let scale = self.layout.vae_config.scaling_factor;
        let shift = self.layout.vae_config.shift_factor;
        if !io.parameters {
            return Ok(out.mapv(|x| (x - shift) * scale));
        }
        let shape = out.shape().to_vec();
        if shape.len() != 4 || shape[1] % 2 != 0 {
            return Err(Error::model(format!("vae_encoder latent_parameters has shape {shape:?}")));
        }
        let c = shape[1] / 2;
        let mean = out.slice(ndarray::s![.., 0..c, .., ..]).to_owned().into_dyn();
        if use_mean {
            return Ok(mean.mapv(|x| (x - shift) * scale));
        }
        let logvar = out.slice(ndarray::s![.., c.., .., ..]).to_owned().into_dyn();
        let eps = noise.draw(mean.shape())?;
        Ok(ndarray::Zip::from(&mean).and(&logvar).and(&eps).map_collect(|&m, &lv, &e| {
            let std = (0.5 * lv.clamp(-30.0, 20.0)).exp();
            (m + std * e - shift) * scale
        }))
    }
}

fn check_consistency(layout: &ModelLayout, unet: &UnetIo) -> Result<()> {
    let channels = unet.sample.shape.get(1).copied().unwrap_or(-1);
    if channels > 0 && channels as usize != layout.unet_config.in_channels {
        return Err(Error::model(format!(
            "unet/config.json says in_channels = {} but the graph's `sample` has {channels} channels",
            layout.unet_config.in_channels
        )));
    }
    let dim = unet.encoder_hidden_states.shape.get(2).copied().unwrap_or(-1);
    let width = layout.text_config.hidden_size + layout.text_config_2.as_ref().map_or(0, |c| c.hidden_size);
    if dim > 0 && dim as usize != width {
        return Err(Error::model(format!(
            "the U-Net expects {dim}-wide text embeddings but the text encoders' configs give hidden_size {width}"
        )));
    }
    Ok(())
}
