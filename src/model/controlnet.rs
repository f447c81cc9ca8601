//! ControlNet: Kiln's export layout (optimum has no ControlNet task), its
//! detection when a model loads, and the graphs, loaded on first use.
//!
//! ```text
//! unet_controlnet/model.onnx    sample, timestep, encoder_hidden_states,
//!                               [SDXL: text_embeds, time_ids,]
//!                               down_block_additional_residual_0..N-1,
//!                               mid_block_additional_residual -> out_sample
//! controlnet/<name>/model.onnx  sample, timestep, encoder_hidden_states,
//!                               [SDXL: text_embeds, time_ids,]
//!                               controlnet_cond [B, 3, H, W] in [0, 1],
//!                               conditioning_scale (rank 0 or [1]; optional)
//!                               -> down_block_res_sample_0..N-1, mid_block_res_sample
//! controlnet/<name>/config.json the diffusers ControlNetModel config (optional)
//! ```
//!
//! Names may differ (OnnxStack's and other exporters' graphs): residuals are
//! matched by position, the mid-block one by a name containing `mid` (else
//! the last), and a missing `conditioning_scale` input is applied by Kiln.
//! An SDXL ControlNet takes the U-Net's added conditioning (`text_embeds`,
//! `time_ids`, as diffusers' `added_cond_kwargs` and OnnxStack's exports name
//! them), and so does an SDXL `unet_controlnet`; a ControlNet of the other
//! family is refused as a mismatch.
//! A model without these folders opens no extra session; a model with them
//! runs its plain jobs through `unet_controlnet` too (zero residuals), so the
//! U-Net's weights are held once.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, ErrorKind, Result};
use crate::model::graph::{Graph, ResidencyGroup, SessionFlags, TensorSpec};
use crate::model::lora::{self, Overrides};
use crate::model::layout::UnetConfig;
use crate::model::{ModelInner, UnetIo};
use crate::runtime::LogLevel;

/// A ControlNet graph's inputs and outputs.
#[derive(Debug, Clone)]
pub struct ControlNetIo {
    /// Latent input.
    pub sample: TensorSpec,
    /// Timestep input (rank 0 or `[batch]`).
    pub timestep: TensorSpec,
    /// Text embeddings input.
    pub encoder_hidden_states: TensorSpec,
    /// Control image input `[B, 3, H, W]` in [0, 1].
    pub cond: TensorSpec,
    /// Conditioning scale input, when the graph takes one.
    pub scale: Option<TensorSpec>,
    /// SDXL: the pooled text embedding and time ids inputs.
    pub added: Option<(TensorSpec, TensorSpec)>,
    /// Down-block residual outputs, in U-Net order.
    pub down: Vec<TensorSpec>,
    /// Mid-block residual output.
    pub mid: TensorSpec,
}

/// A loaded ControlNet.
pub struct ControlNet {
    /// Its folder name under `controlnet/`.
    pub name: String,
    pub(crate) graph: Graph,
    /// How it takes its inputs.
    pub io: ControlNetIo,
}

/// The U-Net that takes ControlNet residuals.
pub struct ResidualUnet {
    pub(crate) graph: Graph,
    /// Its ordinary inputs.
    pub io: UnetIo,
    /// Down-block residual inputs, in order.
    pub down: Vec<TensorSpec>,
    /// Mid-block residual input.
    pub mid: TensorSpec,
    /// Its graphs specialised to each job shape seen (`ProviderPolicy::static_unet`).
    pub(crate) static_unets: crate::model::static_unet::StaticUnets,
}

/// The ControlNet graphs of one model (or seamless view), loaded on first use.
#[derive(Default)]
pub(crate) struct ControlNetSlot {
    unet: OnceLock<Result<Arc<ResidualUnet>>>,
    /// `unet_controlnet` when it also serves plain U-Net calls (decided on
    /// the first plain call: see `ModelInner::residual_unet_for_plain_calls`).
    plain: OnceLock<Option<Arc<ResidualUnet>>>,
    /// Shared with the model's LoRA views: LoRAs never change a ControlNet.
    nets: Arc<parking_lot::Mutex<HashMap<String, Arc<ControlNet>>>>,
}

impl ControlNetSlot {
    /// A slot for a LoRA view of this model: its own residual U-Net (the
    /// view's weights), this model's ControlNets (loaded once for both).
    pub(crate) fn for_lora_view(&self) -> Self {
        Self { unet: OnceLock::new(), plain: OnceLock::new(), nets: Arc::clone(&self.nets) }
    }

    /// A slot for a view whose U-Net LoRAs are fed to slots (`factors`):
    /// this model's residual U-Net session with the view's feeds, and the
    /// same decision about plain calls. `None` when this model has not
    /// loaded its residual U-Net or it has no slots.
    pub(crate) fn for_fed_view(&self, factors: &crate::model::lora::slots::SlotMap) -> Result<Option<Self>> {
        let Some(Ok(unet)) = self.unet.get() else { return Ok(None) };
        let Some(graph) = unet.graph.refed(factors)? else { return Ok(None) };
        let fed = Arc::new(ResidualUnet {
            graph,
            io: unet.io.clone(),
            down: unet.down.clone(),
            mid: unet.mid.clone(),
            static_unets: Default::default(),
        });
        let slot = Self { unet: OnceLock::new(), plain: OnceLock::new(), nets: Arc::clone(&self.nets) };
        let _ = slot.unet.set(Ok(Arc::clone(&fed)));
        if let Some(plain) = self.plain.get() {
            let _ = slot.plain.set(plain.as_ref().map(|_| fed));
        }
        Ok(Some(slot))
    }

    /// Calls and seconds inside ONNX Runtime of `unet_controlnet` and the
    /// graphs specialised from it.
    pub(crate) fn residual_unet_run_time(&self) -> (u64, f64) {
        match self.unet.get() {
            Some(Ok(u)) => {
                let (c, t) = u.graph.run_time();
                let (sc, st) = u.static_unets.run_time();
                (c + sc, t + st)
            }
            _ => (0, 0.0),
        }
    }

    /// Calls `f` on every graph loaded in this slot (`Model::loaded_sessions`).
    pub(crate) fn for_each_graph(&self, f: &mut dyn FnMut(&Graph)) {
        if let Some(Ok(u)) = self.unet.get() {
            f(&u.graph);
            u.static_unets.for_each_graph(f);
        }
        for n in self.nets.lock().values() {
            f(&n.graph);
        }
    }
}

/// `controlnet/` names that hold a `model.onnx`, sorted.
pub(crate) fn available(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root.join("controlnet"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("model.onnx").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

fn load_graph(m: &ModelInner, name: &'static str, path: &Path, group: &Arc<ResidencyGroup>, overrides: &Overrides, flags: SessionFlags) -> Result<Graph> {
    let mut prep = super::Preparation::denoiser(&m.runtime, &m.layout);
    // LoRAs adapt the U-Net (`unet_controlnet` too), never the ControlNet itself.
    prep.lora_slots &= name != "controlnet";
    super::load_seamless(&m.runtime, name, path, (m.seamless, prep), group, overrides, flags)
}

impl ModelInner {
    /// The residual-taking U-Net (`unet_controlnet/`), loaded on first use.
    pub(crate) fn residual_unet(&self) -> Result<Arc<ResidualUnet>> {
        self.controlnets
            .unet
            .get_or_init(|| {
                let path = self.layout.unet_controlnet.clone().ok_or_else(|| {
                    Error::new(
                        ErrorKind::ModelNotFound,
                        format!(
                            "{} has no unet_controlnet/model.onnx, the U-Net that takes ControlNet residuals \
                             (export it with tools/make_controlnet_fixture.py --diffusers)",
                            self.layout.root.display()
                        ),
                    )
                })?;
                let overrides = self.residual_unet_overrides(&path)?;
                // With the static U-Net on, its jobs run graphs specialised
                // from this one (as `unet/`'s do), so its own session is made
                // only if a shape cannot be specialised.
                let policy = &self.runtime.inner.providers;
                let flags = SessionFlags { lazy: policy.static_unet || policy.cuda_graph, ..Default::default() };
                let graph = load_graph(self, "unet_controlnet", &path, &self.residency, &overrides, flags)?.fed(&self.adapters.unet_factors)?;
                let io = super::unet_io(&graph).map_err(|e| e.context("unet_controlnet"))?;
                let ordinary = [&io.sample.name, &io.timestep.name, &io.encoder_hidden_states.name];
                let extra: Vec<TensorSpec> = graph
                    .inputs
                    .iter()
                    .filter(|s| {
                        let conditioning = [&io.timestep_cond, &io.text_embeds, &io.time_ids];
                        !ordinary.contains(&&s.name) && !conditioning.iter().any(|c| c.as_ref().is_some_and(|c| c.name == s.name))
                    })
                    .cloned()
                    .collect();
                let (down, mid) = split_mid(extra).ok_or_else(|| {
                    Error::model(format!("{}: unet_controlnet takes no residual inputs", path.display()))
                })?;
                // unet_controlnet must be the U-Net's family: SDXL's takes the added conditioning.
                match (self.xl.is_some(), io.text_embeds.is_some()) {
                    (true, false) => {
                        return Err(Error::adapter_mismatch(format!(
                            "{}: this is an SDXL model and unet_controlnet takes no `text_embeds`/`time_ids` \
                             (an SD 1.x/2.x residual U-Net): export it from this model's U-Net",
                            path.display()
                        )))
                    }
                    (false, true) => {
                        return Err(Error::adapter_mismatch(format!(
                            "{}: unet_controlnet takes SDXL's `text_embeds`/`time_ids` and this model is SD 1.x/2.x: \
                             export it from this model's U-Net",
                            path.display()
                        )))
                    }
                    _ => {}
                }
                Ok(Arc::new(ResidualUnet { graph, io, down, mid, static_unets: Default::default() }))
            })
            .clone()
    }

    /// `unet_controlnet`, when plain U-Net calls (jobs without ControlNets)
    /// may run through it with zero residuals instead of opening `unet/`, so
    /// that a game mixing plain and ControlNet jobs holds the U-Net's weights
    /// once (+3.3 GiB otherwise on SD 1.5). Adding a zero residual leaves
    /// every value as it is, so the output is the plain U-Net's, bit for bit
    /// (`tests/controlnet.rs` checks it). Decided once, on the first plain
    /// call: the two files must hold the same layers with the same shapes and
    /// a sample of them the same values (an `unet_controlnet/` exported from
    /// another fine-tune would otherwise change plain jobs' pictures), it must
    /// take what `unet/` takes (optional inputs, batch), and its residual
    /// inputs must follow the U-Net config's levels. `None` (plain calls open
    /// `unet/`, said in the log) when any of that fails.
    pub(crate) fn residual_unet_for_plain_calls(&self) -> Option<Arc<ResidualUnet>> {
        let path = self.layout.unet_controlnet.as_ref()?;
        self.controlnets
            .plain
            .get_or_init(|| {
                let log = self.runtime.logger();
                let indexes = |p: &Path| self.lora_indexes.get(p);
                let decided = indexes(&self.layout.unet)
                    .and_then(|unet| same_unet_weights(&unet, &*indexes(path)?))
                    .and_then(|()| self.residual_unet())
                    .and_then(|unet| same_ordinary_inputs(&self.unet_io, &unet.io).map(|()| unet))
                    .and_then(|unet| match zero_residual_shapes(&self.layout.unet_config, &unet, [1, 4, 8, 8]) {
                        Some(_) => Ok(unet),
                        None => Err(Error::unsupported(format!(
                            "its {} residual inputs do not follow the U-Net config's {} levels of {} resnets",
                            unet.down.len() + 1,
                            self.layout.unet_config.levels,
                            self.layout.unet_config.layers_per_block
                        ))),
                    });
                match decided {
                    Ok(unet) => {
                        log.info("unet: plain U-Net calls run through unet_controlnet with zero residuals (the same weights; unet/ stays unopened)");
                        Some(unet)
                    }
                    Err(e) => {
                        log.log(LogLevel::Warning, &format!("unet: plain U-Net calls open unet/ beside unet_controlnet (two copies of the weights): {}", e.message()));
                        None
                    }
                }
            })
            .clone()
    }

    /// A LoRA view's merged U-Net weights, named as `unet_controlnet` (at
    /// `path`) names them: the same tensors the view's U-Net session holds,
    /// so the LoRA costs the residual U-Net no memory of its own.
    fn residual_unet_overrides(&self, path: &Path) -> Result<Overrides> {
        if self.adapters.unet.is_empty() {
            return Ok(Default::default());
        }
        let unet = self.lora_indexes.get(&self.layout.unet)?;
        let residual = self.lora_indexes.get(path)?;
        let shared = lora::same_weights_in(&unet, &residual, &self.adapters.unet).map_err(|e| e.context("unet_controlnet with LoRA"))?;
        let shared: Overrides = Arc::new(shared);
        self.runtime.logger().info(&format!("unet_controlnet: {} LoRA-merged weights shared with the U-Net", shared.len()));
        Ok(shared)
    }

    /// The ControlNet `controlnet/<name>/`, loaded on first use and checked
    /// against the residual U-Net and the text encoder.
    pub(crate) fn controlnet(&self, name: &str) -> Result<Arc<ControlNet>> {
        if let Some(n) = self.controlnets.nets.lock().get(name) {
            return Ok(Arc::clone(n));
        }
        if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
            return Err(Error::invalid(format!("controlnet name {name:?} must be a folder name under controlnet/")));
        }
        let dir = self.layout.root.join("controlnet").join(name);
        let path = dir.join("model.onnx");
        if !path.is_file() {
            let have = available(&self.layout.root);
            return Err(Error::new(
                ErrorKind::ModelNotFound,
                format!(
                    "no ControlNet {name:?}: {} is missing (this model has {})",
                    path.display(),
                    if have.is_empty() { "none".to_string() } else { have.join(", ") }
                ),
            ));
        }
        let unet = self.residual_unet()?;
        // diffusers applies LoRAs to the U-Net and text encoder, never to the ControlNet.
        let graph = load_graph(self, "controlnet", &path, &self.residency, &Default::default(), Default::default())?;
        let io = controlnet_io(&graph).map_err(|e| e.context(format!("controlnet {name}")))?;
        self.check_fits(name, &dir, &io, &unet)?;
        let net = Arc::new(ControlNet { name: name.to_string(), graph, io });
        self.controlnets.nets.lock().insert(name.to_string(), Arc::clone(&net));
        Ok(net)
    }

    /// A ControlNet made for another base model, or for a U-Net with other
    /// residuals, is the caller's mismatch, said before anything runs.
    fn check_fits(&self, name: &str, dir: &Path, io: &ControlNetIo, unet: &ResidualUnet) -> Result<()> {
        let mismatch = |what: String| Error::adapter_mismatch(format!("ControlNet {name:?} does not fit this model: {what}"));
        // The family first: SDXL ControlNets take the added conditioning.
        match (self.xl.is_some(), io.added.is_some()) {
            (true, false) => {
                return Err(mismatch(
                    "it takes no `text_embeds`/`time_ids` (an SD 1.x/2.x ControlNet, another base architecture) \
                     and this is an SDXL model"
                        .to_string(),
                ))
            }
            (false, true) => {
                return Err(mismatch(
                    "it takes `text_embeds`/`time_ids` (an SDXL ControlNet, another base architecture) \
                     and this is an SD 1.x/2.x model"
                        .to_string(),
                ))
            }
            _ => {}
        }
        if let (Some(xl), Some((text_embeds, time_ids))) = (&self.xl, &io.added) {
            let ours = [(&xl.text_embeds, text_embeds), (&xl.time_ids, time_ids)];
            for (u, c) in ours {
                let (a, b) = (u.shape.get(1).copied().unwrap_or(-1), c.shape.get(1).copied().unwrap_or(-1));
                if a > 0 && b > 0 && a != b {
                    return Err(mismatch(format!("its `{}` is {b} wide and the U-Net's `{}` {a}", c.name, u.name)));
                }
            }
        }
        // The text encoders' widths joined (SDXL concatenates both).
        let hidden = self.layout.text_config.hidden_size + self.layout.text_config_2.as_ref().map_or(0, |c| c.hidden_size);
        let graph_dim = io.encoder_hidden_states.shape.get(2).copied().filter(|&d| d > 0).map(|d| d as usize);
        let config_dim = read_cross_attention_dim(&dir.join("config.json"));
        if let Some(d) = graph_dim.or(config_dim) {
            if d != hidden {
                return Err(mismatch(format!(
                    "it takes {d}-wide text embeddings and this model's text encoder gives {hidden} \
                     (a ControlNet for another base architecture)"
                )));
            }
        }
        let latent = self.layout.vae_config.latent_channels as i64;
        if let Some(&c) = io.sample.shape.get(1).filter(|&&c| c > 0) {
            if c != latent {
                return Err(mismatch(format!("it takes {c} latent channels; this model has {latent}")));
            }
        }
        if io.down.len() != unet.down.len() {
            return Err(mismatch(format!(
                "it returns {} down-block residuals and unet_controlnet takes {}",
                io.down.len(),
                unet.down.len()
            )));
        }
        let pairs = io.down.iter().zip(&unet.down).chain(std::iter::once((&io.mid, &unet.mid)));
        for (out, inp) in pairs {
            let (a, b) = (out.shape.get(1).copied().unwrap_or(-1), inp.shape.get(1).copied().unwrap_or(-1));
            if out.shape.len() != 4 || inp.shape.len() != 4 || (a > 0 && b > 0 && a != b) {
                return Err(mismatch(format!(
                    "its output `{}` has shape {:?} and unet_controlnet's input `{}` has {:?}",
                    out.name, out.shape, inp.name, inp.shape
                )));
            }
        }
        Ok(())
    }
}

fn read_cross_attention_dim(config: &Path) -> Option<usize> {
    let v = super::layout::read_json(config).ok()?;
    v.get("cross_attention_dim")?.as_u64().map(|d| d as usize)
}

/// Splits residual tensors into the down-block ones (in order) and the mid one.
fn split_mid(mut all: Vec<TensorSpec>) -> Option<(Vec<TensorSpec>, TensorSpec)> {
    let i = all.iter().position(|s| s.name.to_ascii_lowercase().contains("mid")).or(all.len().checked_sub(1))?;
    let mid = all.remove(i);
    Some((all, mid))
}

fn controlnet_io(g: &Graph) -> Result<ControlNetIo> {
    let sample = g.find_input(&["sample"], None).cloned().ok_or_else(|| Error::model("no `sample` input"))?;
    let timestep = g
        .find_input(&["timestep", "t", "timesteps"], None)
        .cloned()
        .ok_or_else(|| Error::model("no `timestep` input"))?;
    let encoder_hidden_states = g
        .find_input(&["encoder_hidden_states"], Some(3))
        .cloned()
        .ok_or_else(|| Error::model("no `encoder_hidden_states` input"))?;
    let cond = g
        .inputs
        .iter()
        .find(|s| ["controlnet_cond", "cond", "image", "control_image"].contains(&s.name.as_str()))
        .or_else(|| g.inputs.iter().find(|s| s.shape.len() == 4 && s.name != sample.name))
        .cloned()
        .ok_or_else(|| Error::model("no `controlnet_cond` (control image) input"))?;
    let scale = g.inputs.iter().find(|s| s.name.contains("scale")).cloned();
    let text_embeds = g.inputs.iter().find(|s| s.name == "text_embeds").cloned();
    let time_ids = g.inputs.iter().find(|s| s.name == "time_ids").cloned();
    let added = match (text_embeds, time_ids) {
        (Some(a), Some(b)) => Some((a, b)),
        (None, None) => None,
        _ => return Err(Error::model("the graph takes only one of SDXL's `text_embeds` and `time_ids`; it needs both")),
    };
    if let Some(s) = &scale {
        if s.shape.len() > 1 || s.shape.first().is_some_and(|&d| d > 1) {
            return Err(Error::model(format!("`{}` has shape {:?}; expected a scalar or [1]", s.name, s.shape)));
        }
    }
    if timestep.shape.len() > 1 {
        return Err(Error::model(format!("`timestep` has rank {}; expected 0 or 1", timestep.shape.len())));
    }
    let (down, mid) = split_mid(g.outputs.clone()).ok_or_else(|| Error::model("the graph has no outputs"))?;
    if down.is_empty() {
        return Err(Error::model("the graph returns no down-block residuals"));
    }
    Ok(ControlNetIo { sample, timestep, encoder_hidden_states, cond, scale, added, down, mid })
}

/// Where the ControlNet parts of a model folder are.
pub(crate) fn unet_path(root: &Path) -> Option<PathBuf> {
    Some(root.join("unet_controlnet").join("model.onnx")).filter(|p| p.is_file())
}

/// Whether `residual` takes every call `unet` takes: the same optional inputs
/// (LCM's `timestep_cond`, SDXL's added conditioning) and a batch at least as large.
fn same_ordinary_inputs(unet: &UnetIo, residual: &UnetIo) -> Result<()> {
    let optional = |io: &UnetIo| [io.timestep_cond.is_some(), io.text_embeds.is_some(), io.time_ids.is_some()];
    if optional(unet) != optional(residual) {
        return Err(Error::unsupported("its optional inputs (timestep_cond, text_embeds, time_ids) are not unet/'s"));
    }
    match (unet.max_batch, residual.max_batch) {
        (_, None) => Ok(()),
        (Some(a), Some(b)) if a <= b => Ok(()),
        (a, Some(b)) => Err(Error::unsupported(format!("it takes batches of {b} at most and unet/ {}", a.map_or("any".to_string(), |a| a.to_string())))),
    }
}

/// How many of the U-Nets' layers `same_unet_weights` compares value by value.
const COMPARED_LAYERS: usize = 8;

/// Whether `unet` and `residual` (two exports' indexes) hold the same
/// network: the same layers with the same shapes and types, the same
/// values in `COMPARED_LAYERS` of them spread over the sorted layer names
/// (a whole comparison would read both files, gigabytes at full size), and
/// the same bias values in every layer both show one for (about 1 MB at
/// SD 1.5 size, and a fine-tune moves them all).
fn same_unet_weights(unet: &lora::GraphIndex, residual: &lora::GraphIndex) -> Result<()> {
    let differ = |what: String| Error::adapter_mismatch(format!("{} and {} are not the same U-Net: {what}", unet.file.display(), residual.file.display()));
    let mut keys: Vec<&String> = unet.modules.keys().collect();
    keys.sort();
    if keys.is_empty() {
        // Nothing to compare by name (an export whose nodes carry no module paths).
        return Err(differ(format!("{} names no layers in its nodes", unet.file.display())));
    }
    if keys.len() != residual.modules.len() {
        return Err(differ(format!("{} layers against {}", keys.len(), residual.modules.len())));
    }
    for key in &keys {
        let (a, b) = (&unet.modules[*key], residual.modules.get(*key).ok_or_else(|| differ(format!("layer `{key}` is missing from the second")))?);
        if a.dims != b.dims || a.data_type != b.data_type {
            return Err(differ(format!("layer `{key}` is {:?} (type {}) against {:?} (type {})", a.dims, a.data_type, b.dims, b.data_type)));
        }
    }
    let same = |a: Vec<f32>, b: Vec<f32>| a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
    let step = keys.len().div_ceil(COMPARED_LAYERS).max(1);
    for key in keys.iter().step_by(step) {
        if !same(unet.read_f32(&unet.modules[*key])?, residual.read_f32(&residual.modules[*key])?) {
            return Err(differ(format!("layer `{key}` holds other values")));
        }
    }
    let mut biased: Vec<&String> = unet.biases.keys().filter(|k| residual.biases.contains_key(*k)).collect();
    biased.sort();
    for key in biased {
        let (a, b) = (&unet.biases[key], &residual.biases[key]);
        if a.dims != b.dims || a.data_type != b.data_type || !same(unet.read_f32(a)?, residual.read_f32(b)?) {
            return Err(differ(format!("the bias of layer `{key}` holds other values")));
        }
    }
    Ok(())
}

/// The shapes of zero residuals for a plain call on a `sample` of shape
/// `[batch, channels, h, w]`: diffusers' down-block residuals are `conv_in`'s
/// output, then each level's resnets and (but the last level) its
/// downsampler, whose stride-2 convolution takes a side `s` to `ceil(s / 2)`;
/// the mid block's is at the last level. Channels are the graph's declared
/// ones. `None` when the graph's inputs do not follow that (another
/// architecture): plain calls then use `unet/`.
pub(crate) fn zero_residual_shapes(config: &UnetConfig, unet: &ResidualUnet, sample: [usize; 4]) -> Option<Vec<Vec<usize>>> {
    let specs: Vec<&TensorSpec> = unet.down.iter().chain(std::iter::once(&unet.mid)).collect();
    shapes_at_levels(config, &specs, sample)
}

/// `zero_residual_shapes` for the residual inputs `specs` (down blocks, then mid).
fn shapes_at_levels(config: &UnetConfig, specs: &[&TensorSpec], sample: [usize; 4]) -> Option<Vec<Vec<usize>>> {
    let levels = config.levels.max(1);
    let mut level_of = vec![0];
    for level in 0..levels {
        level_of.extend(std::iter::repeat_n(level, config.layers_per_block));
        if level + 1 < levels {
            level_of.push(level + 1);
        }
    }
    level_of.push(levels - 1);
    if specs.len() != level_of.len() {
        return None;
    }
    let side = |s: usize, level: usize| (0..level).fold(s, |s, _| s.div_ceil(2));
    specs
        .iter()
        .zip(level_of)
        .map(|(spec, level)| {
            let channels = *spec.shape.get(1).filter(|&&c| c > 0 && spec.shape.len() == 4)?;
            Some(vec![sample[0], channels as usize, side(sample[2], level), side(sample[3], level)])
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ort::value::TensorElementType;

    fn spec(channels: i64) -> TensorSpec {
        TensorSpec { name: "r".into(), ty: TensorElementType::Float32, shape: vec![-1, channels, -1, -1] }
    }

    fn config(levels: usize, layers_per_block: usize) -> UnetConfig {
        UnetConfig { sample_size: 64, in_channels: 4, levels, time_cond_proj_dim: None, layers_per_block }
    }

    /// SD 1.5's 12 down residuals and mid at 512² (latents 64²), as
    /// diffusers' ControlNetModel returns them; a batch of 2.
    #[test]
    fn zero_residuals_take_sd15s_shapes() {
        let channels = [320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280, 1280];
        let specs: Vec<TensorSpec> = channels.iter().map(|&c| spec(c)).collect();
        let refs: Vec<&TensorSpec> = specs.iter().collect();
        let got = shapes_at_levels(&config(4, 2), &refs, [2, 4, 64, 64]).unwrap();
        let sides = [64, 64, 64, 32, 32, 32, 16, 16, 16, 8, 8, 8, 8];
        let want: Vec<Vec<usize>> = channels.iter().zip(sides).map(|(&c, s)| vec![2, c as usize, s, s]).collect();
        assert_eq!(got, want);
        // Each axis on its own (a wide texture), a side halved upwards.
        let wide = shapes_at_levels(&config(4, 2), &refs, [1, 4, 40, 96]).unwrap();
        assert_eq!((wide[12][2], wide[12][3]), (5, 12));
        // Another count than the config's levels, or undeclared channels: no shapes.
        assert!(shapes_at_levels(&config(3, 2), &refs, [1, 4, 64, 64]).is_none());
        let two_levels = [&specs[0], &specs[1], &specs[2], &specs[3], &specs[4], &specs[5], &specs[6]];
        assert!(shapes_at_levels(&config(2, 2), &two_levels, [1, 4, 8, 8]).is_some());
        let undeclared = TensorSpec { shape: vec![-1, -1, -1, -1], ..spec(0) };
        let mut with_undeclared = two_levels.to_vec();
        with_undeclared[6] = &undeclared;
        assert!(shapes_at_levels(&config(2, 2), &with_undeclared, [1, 4, 8, 8]).is_none());
    }

    #[test]
    fn residual_unet_must_take_what_unet_takes() {
        let io = |cond: bool, batch: Option<usize>| UnetIo {
            sample: spec(4),
            timestep: spec(1),
            encoder_hidden_states: spec(1),
            timestep_cond: cond.then(|| spec(1)),
            text_embeds: None,
            time_ids: None,
            output: "out_sample".into(),
            max_batch: batch,
        };
        assert!(same_ordinary_inputs(&io(false, None), &io(false, None)).is_ok());
        assert!(same_ordinary_inputs(&io(false, Some(1)), &io(false, None)).is_ok());
        assert!(same_ordinary_inputs(&io(true, None), &io(false, None)).is_err(), "no timestep_cond for an LCM U-Net");
        assert!(same_ordinary_inputs(&io(false, None), &io(false, Some(1))).is_err(), "batch 1 cannot take CFG's batch of 2");
    }

    #[test]
    fn exports_without_layer_names_are_not_called_the_same() {
        let empty = lora::GraphIndex::build(Path::new("unet.onnx"), &[], Vec::new());
        let e = same_unet_weights(&empty, &empty).unwrap_err();
        assert!(e.message().contains("names no layers"), "{e}");
    }
}
