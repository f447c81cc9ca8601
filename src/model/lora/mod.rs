//! LoRA adapters merged into a model's weights when its sessions are created.
//!
//! For every adapted layer W' = W + Σ scale · (alpha / rank) · delta, where
//! delta is up · down (LoRA), a Hadamard (LoHa) or Kronecker (LoKr) product,
//! or LyCORIS full's stored difference (whose `diff_b` also gives
//! b' = b + Σ scale · diff_b), computed on the CPU in f32 from the base weights in the ONNX file (read
//! straight from their offsets) and converted back to the initializer's type.
//! The merged tensors are handed to ONNX Runtime as initializer overrides
//! (`AddInitializer`): no model file is written, unchanged weights come from
//! the original file, and only the graphs that change get new sessions.
pub mod factors;
pub mod format;
pub mod graph_index;
pub mod sgm;
pub(crate) mod slots;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::value::DynValue;

pub use self::format::{Component, DoraAxis, DoraStrength, LoraFile, LoraModule};
pub use self::graph_index::{GraphIndex, WeightLayout, WeightSlot};
use crate::error::{Error, Result};

/// `model` (a U-Net or text-encoder ONNX file's bytes) with the LoRA slots
/// a load with [`crate::ModelOptions::lora_slots`] gives it, and how many
/// (`None`: no layer takes one). For tools that profile or inspect the
/// slotted graph (`examples/lora_slots_graph.rs`); not needed to use slots.
#[doc(hidden)]
pub fn slotted_graph(model: &[u8]) -> Result<(Option<Vec<u8>>, usize)> {
    slots::add_slots(model)
}

/// Initializers that replace a graph's own: (name, tensor).
pub(crate) type Overrides = Arc<Vec<(String, Arc<DynValue>)>>;

/// One LoRA file and the strength it is applied with.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSpec {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// Multiplies the delta; 1.0 = as trained, 0 = off, negative = inverted.
    pub scale: f32,
    /// The strength of its text-encoder modules (both encoders on SDXL),
    /// when it differs from `scale`: ComfyUI's `strength_clip` beside
    /// `strength_model`, diffusers' `set_adapters(..., {"unet": s, "text_encoder": t})`.
    /// `None` = `scale`.
    pub text_encoder_scale: Option<f32>,
}

impl LoraSpec {
    /// `path` at `scale` for every part it adapts.
    pub fn new(path: impl Into<PathBuf>, scale: f32) -> Self {
        Self { path: path.into(), scale, text_encoder_scale: None }
    }

    /// The strength its modules of `component` are merged with.
    pub fn scale_for(&self, component: Component) -> f32 {
        match component {
            Component::Unet => self.scale,
            Component::TextEncoder | Component::TextEncoder2 => self.text_encoder_scale.unwrap_or(self.scale),
        }
    }
}

/// Merges module `m` at strength `scale` into `weight`, laid out as `slot`
/// says: adds `scale · alpha/rank · delta`, or for DoRA rescales each output
/// row or input channel ([`DoraAxis`]) as [`DoraStrength`] says, with norms taken against `original` (the
/// weight before any module of the set was merged, as PEFT does; read only
/// for DoRA). Shapes are
/// checked against the slot; a mismatch names the module and both shapes.
pub fn add_delta(weight: &mut [f32], original: &[f32], slot: &WeightSlot, m: &LoraModule, scale: f32) -> Result<()> {
    let (out, inn) = slot.out_in();
    let f = &m.factors;
    let kernel_differs = slot.dims.len() == 4 && f.kernel().is_some_and(|k| k != &slot.dims[2..]);
    if f.out_features() != out || f.in_features() != inn || kernel_differs {
        return Err(Error::adapter_mismatch(format!(
            "{} `{}`: the {} is {}x{} ({}) but the model's weight `{}` is {}x{} ({:?}): a LoRA for another architecture? (SD 1.x text embeddings are 768 wide, SD 2.x 1024, SDXL 2048)",
            m.component.name(),
            m.key,
            f.kind(),
            f.out_features(),
            f.in_features(),
            f.describe(),
            slot.initializer,
            out,
            inn,
            slot.dims
        )));
    }
    if weight.len() != out * inn || (m.magnitude.is_some() && original.len() != out * inn) {
        return Err(Error::internal(format!("weight `{}` has {} values, expected {out}x{inn}", slot.initializer, weight.len())));
    }
    let mut delta = f.delta();
    delta *= m.alpha_scale();
    // Row o, column i of the PyTorch weight, wherever the export keeps it.
    let at = |o: usize, i: usize| match slot.layout {
        WeightLayout::OutIn => o * inn + i,
        WeightLayout::InOut => i * out + o,
    };
    let Some(magnitude) = &m.magnitude else {
        // In the weight's memory order (a switch merges every adapted layer).
        match slot.layout {
            WeightLayout::OutIn => weight.iter_mut().zip(delta.iter()).for_each(|(w, d)| *w += scale * d),
            WeightLayout::InOut => {
                for i in 0..inn {
                    for o in 0..out {
                        weight[i * out + o] += scale * delta[[o, i]];
                    }
                }
            }
        }
        return Ok(());
    };
    let in_norm = magnitude.strength == DoraStrength::InNorm;
    // The delta the norm is taken with: the strength inside it (diffusers) or full (A1111/ComfyUI).
    let s_norm = if in_norm { scale } else { 1.0 };
    // Which norm each weight belongs to: its output row, or its input channel
    // (a convolution's kernel positions share their channel's).
    let kernel: usize = if slot.dims.len() == 4 { slot.dims[2..].iter().product() } else { 1 };
    let (groups, per_output) = match magnitude.axis {
        DoraAxis::Output => (out, true),
        DoraAxis::Input => (inn / kernel.max(1), false),
    };
    let group = |o: usize, i: usize| if per_output { o } else { i / kernel };
    if magnitude.values.len() != groups {
        return Err(Error::adapter_mismatch(format!(
            "{} `{}`: {} DoRA magnitudes but the weight `{}` ({:?}) has {groups} {}",
            m.component.name(),
            m.key,
            magnitude.values.len(),
            slot.initializer,
            slot.dims,
            if per_output { "outputs" } else { "input channels" }
        )));
    }
    let mut squares = vec![0f64; groups];
    for o in 0..out {
        for i in 0..inn {
            let v = (original[at(o, i)] + s_norm * delta[[o, i]]) as f64;
            squares[group(o, i)] += v * v;
        }
    }
    let mut factors = Vec::with_capacity(groups);
    for (g, sq) in squares.into_iter().enumerate() {
        let norm = sq.sqrt();
        if norm == 0.0 || !norm.is_finite() {
            let what = if per_output { "row" } else { "input channel" };
            return Err(Error::adapter_mismatch(format!(
                "{} `{}`: DoRA {what} {g} of the merged weight `{}` has norm {norm}",
                m.component.name(),
                m.key,
                slot.initializer
            )));
        }
        factors.push((magnitude.values[g] as f64 / norm) as f32);
    }
    for o in 0..out {
        for i in 0..inn {
            let (k, factor) = (at(o, i), factors[group(o, i)]);
            weight[k] = if in_norm {
                factor * (weight[k] + scale * delta[[o, i]])
            } else {
                weight[k] + scale * (factor * (original[k] + delta[[o, i]]) - original[k])
            };
        }
    }
    Ok(())
}

/// A LoRA file read and checked, with its scale.
pub(crate) struct LoadedLora {
    pub(crate) spec: LoraSpec,
    pub(crate) file: LoraFile,
}

impl LoadedLora {
    pub(crate) fn read(spec: &LoraSpec) -> Result<Self> {
        if !spec.scale.is_finite() {
            return Err(Error::invalid(format!("LoRA {}: scale {} is not finite", spec.path.display(), spec.scale)));
        }
        if let Some(t) = spec.text_encoder_scale.filter(|t| !t.is_finite()) {
            return Err(Error::invalid(format!("LoRA {}: text-encoder scale {t} is not finite", spec.path.display())));
        }
        Ok(Self { spec: spec.clone(), file: LoraFile::read(&spec.path)? })
    }

    /// Whether merging its modules of `component` changes any weight: they
    /// exist and their strength is not 0 (a PEFT DoRA module changes its
    /// weight at strength 0 too: the magnitude still applies).
    pub(crate) fn changes(&self, component: Component) -> bool {
        let scale = self.spec.scale_for(component);
        self.file.modules.iter().filter(|m| m.component == component).any(|m| {
            scale != 0.0 || m.magnitude.as_ref().is_some_and(|g| g.strength == DoraStrength::InNorm)
        })
    }
}

/// The LoRA keys of `component` that match no layer of `index`, as written in their files.
pub(crate) fn unmatched(index: &GraphIndex, component: Component, loras: &[LoadedLora]) -> Vec<String> {
    loras
        .iter()
        .flat_map(|l| l.file.modules.iter().map(move |m| (l, m)))
        .filter(|(_, m)| m.component == component && !index.modules.contains_key(&m.key))
        .map(|(l, m)| format!("{} in {}", m.file_key, l.spec.path.file_name().map_or_else(|| l.spec.path.display().to_string(), |n| n.to_string_lossy().into_owned())))
        .collect()
}

/// The nodes that read a shared initializer, for messages: the first few and a count.
fn readers(users: &[String]) -> String {
    const LISTED: usize = 4;
    let named = users.iter().take(LISTED).map(|u| format!("`{u}`")).collect::<Vec<_>>().join(", ");
    match users.len().checked_sub(LISTED) {
        Some(more) if more > 0 => format!("{named} and {more} more"),
        _ => named,
    }
}

/// Adds `scale · diff_b` to `bias`, checking its length against the slot.
pub fn add_bias(bias: &mut [f32], slot: &WeightSlot, m: &LoraModule, scale: f32) -> Result<()> {
    let Some(diff) = &m.bias else { return Ok(()) };
    if diff.len() != bias.len() || slot.dims != [bias.len()] {
        return Err(Error::adapter_mismatch(format!(
            "{} `{}`: its bias difference has {} values but the model's bias `{}` is {:?}",
            m.component.name(),
            m.key,
            diff.len(),
            slot.initializer,
            slot.dims
        )));
    }
    bias.iter_mut().zip(diff).for_each(|(b, d)| *b += scale * d);
    Ok(())
}

/// The merged weights (and, for `diff_b`, biases) of `component` for
/// `loras` (unmatched modules skipped: check them with [`unmatched`] first).
pub(crate) fn merge(index: &GraphIndex, component: Component, loras: &[LoadedLora]) -> Result<Vec<(String, Arc<DynValue>)>> {
    // initializer → the modules and scales adding to it, in file order.
    type Adds<'a> = (&'a WeightSlot, Vec<(&'a LoraModule, f32)>);
    let mut plan: BTreeMap<&str, Adds<'_>> = BTreeMap::new();
    let mut bias_plan: BTreeMap<&str, Adds<'_>> = BTreeMap::new();
    let shared = |what: &str, m: &LoraModule, slot: &WeightSlot| {
        Error::unsupported(format!(
            "{} `{}`: its {what} `{}` is shared by {} in this export (the exporter deduplicated equal tensors), so it cannot be changed for one of them",
            component.name(),
            m.key,
            slot.initializer,
            readers(&slot.users)
        ))
    };
    for l in loras.iter().filter(|l| l.changes(component)) {
        let scale = l.spec.scale_for(component);
        for m in l.file.modules.iter().filter(|m| m.component == component) {
            let Some(slot) = index.modules.get(&m.key) else { continue };
            if slot.users.len() > 1 {
                return Err(shared("weight", m, slot));
            }
            plan.entry(slot.initializer.as_str()).or_insert_with(|| (slot, Vec::new())).1.push((m, scale));
            if m.bias.is_none() {
                continue;
            }
            let bias = index.biases.get(&m.key).ok_or_else(|| {
                Error::adapter_mismatch(format!(
                    "{} `{}` ({}) has a bias difference (`diff_b`) but the model's layer has no bias this export adds where Kiln can find it (a Conv's or Gemm's bias input, or an Add after the MatMul)",
                    component.name(),
                    m.key,
                    m.file_key
                ))
            })?;
            if bias.users.len() > 1 {
                return Err(shared("bias", m, bias));
            }
            bias_plan.entry(bias.initializer.as_str()).or_insert_with(|| (bias, Vec::new())).1.push((m, scale));
        }
    }
    let mut out = Vec::with_capacity(plan.len() + bias_plan.len());
    for (name, (slot, adds)) in bias_plan {
        let mut b = index.read_f32(slot)?;
        for (m, scale) in adds {
            add_bias(&mut b, slot, m, scale).map_err(|e| e.context(format!("LoRA module {}", m.file_key)))?;
        }
        out.push((name.to_string(), Arc::new(tensor(slot, b)?)));
    }
    for (name, (slot, adds)) in plan {
        let mut w = index.read_f32(slot)?;
        let original = if adds.iter().any(|(m, _)| m.magnitude.is_some()) { w.clone() } else { Vec::new() };
        for (m, scale) in adds {
            add_delta(&mut w, &original, slot, m, scale).map_err(|e| e.context(format!("LoRA module {}", m.file_key)))?;
        }
        out.push((name.to_string(), Arc::new(tensor(slot, w)?)));
    }
    Ok(out)
}

/// The merged weights `overrides` of the graph indexed by `from`, renamed
/// to the initializers of the same modules in `to`: another export of the
/// same network (the ControlNet layout's `unet_controlnet` names its weights
/// `unet.*`). The tensors are shared, not copied: ONNX Runtime keeps a
/// reference to an added initializer, so both sessions read one buffer.
/// A module `to` lacks, or holds with another shape or type, is an error.
/// (Generic over the tensor type so that it is testable without ONNX Runtime.)
pub(crate) fn same_weights_in<V>(from: &GraphIndex, to: &GraphIndex, overrides: &[(String, Arc<V>)]) -> Result<Vec<(String, Arc<V>)>> {
    // initializer of `from` → one module key that reads it, and whether it is the bias.
    let mut key_of: std::collections::HashMap<&str, (&str, bool)> = std::collections::HashMap::new();
    for (key, slot) in &from.modules {
        key_of.entry(slot.initializer.as_str()).or_insert((key.as_str(), false));
    }
    for (key, slot) in &from.biases {
        key_of.entry(slot.initializer.as_str()).or_insert((key.as_str(), true));
    }
    let mut out: Vec<(String, Arc<V>)> = Vec::with_capacity(overrides.len());
    for (name, value) in overrides.iter() {
        let (key, is_bias) = key_of.get(name.as_str()).ok_or_else(|| {
            Error::internal(format!("merged weight `{name}` belongs to no module of {}", from.file.display()))
        })?;
        let (from_slots, to_slots) = if *is_bias { (&from.biases, &to.biases) } else { (&from.modules, &to.modules) };
        let (mine, theirs) = (&from_slots[*key], to_slots.get(*key));
        let what = if *is_bias { "bias" } else { "weight" };
        let theirs = theirs.ok_or_else(|| {
            Error::model(format!(
                "{} has no layer `{key}` ({what} `{name}` in {}), so the LoRA cannot be applied to it: an export of another U-Net?",
                to.file.display(),
                from.file.display()
            ))
        })?;
        if theirs.dims != mine.dims || theirs.data_type != mine.data_type || theirs.layout != mine.layout {
            return Err(Error::model(format!(
                "layer `{key}`: {} holds `{}` as {:?} (type {}) and {} holds `{}` as {:?} (type {}): not the same U-Net",
                from.file.display(),
                mine.initializer,
                mine.dims,
                mine.data_type,
                to.file.display(),
                theirs.initializer,
                theirs.dims,
                theirs.data_type
            )));
        }
        if theirs.users.len() > 1 {
            return Err(Error::unsupported(format!(
                "`{key}`: its {what} `{}` in {} is shared by {} (the exporter deduplicated equal tensors), so it cannot be changed for one of them",
                theirs.initializer,
                to.file.display(),
                readers(&theirs.users)
            )));
        }
        if !out.iter().any(|(n, _)| n == &theirs.initializer) {
            out.push((theirs.initializer.clone(), Arc::clone(value)));
        }
    }
    Ok(out)
}

/// `values` as a tensor of the slot's type and shape.
pub(crate) fn tensor(slot: &WeightSlot, values: Vec<f32>) -> Result<DynValue> {
    let shape: Vec<i64> = slot.dims.iter().map(|&d| d as i64).collect();
    let made = match slot.data_type {
        1 => ort::value::Tensor::from_array((shape, values)).map(|t| t.into_dyn()),
        10 => ort::value::Tensor::from_array((shape, values.into_iter().map(half::f16::from_f32).collect::<Vec<_>>())).map(|t| t.into_dyn()),
        16 => ort::value::Tensor::from_array((shape, values.into_iter().map(half::bf16::from_f32).collect::<Vec<_>>())).map(|t| t.into_dyn()),
        t => return Err(Error::unsupported(format!("initializer `{}` has data type {t}", slot.initializer))),
    };
    made.map_err(|e| Error::internal(format!("cannot make the merged tensor `{}`: {e}", slot.initializer)))
}

/// Graph indexes of a model's files, read once and shared by every LoRA view.
#[derive(Default)]
pub(crate) struct IndexCache {
    indexes: parking_lot::Mutex<Vec<(PathBuf, Arc<GraphIndex>)>>,
}

impl IndexCache {
    pub(crate) fn get(&self, file: &Path) -> Result<Arc<GraphIndex>> {
        if let Some((_, i)) = self.indexes.lock().iter().find(|(p, _)| p == file) {
            return Ok(Arc::clone(i));
        }
        let index = Arc::new(GraphIndex::read(file)?);
        self.indexes.lock().push((file.to_path_buf(), Arc::clone(&index)));
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::format::{Decomposed, F32Tensor, Factors, Magnitude};
    use super::*;
    use crate::error::ErrorKind;

    fn lcg(n: usize, seed: &mut u64) -> Vec<f32> {
        (0..n)
            .map(|_| {
                *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect()
    }

    /// A U-Net module `m` with factors `up · down` of the given shapes.
    fn low_rank(up: (&[usize], &[f32]), down: (&[usize], &[f32]), alpha: Option<f32>, magnitude: Option<Magnitude>) -> LoraModule {
        LoraModule {
            component: Component::Unet,
            key: "m".into(),
            file_key: "m".into(),
            factors: Factors::LowRank(Decomposed::Product {
                a: F32Tensor { shape: up.0.to_vec(), data: up.1.to_vec() },
                b: F32Tensor { shape: down.0.to_vec(), data: down.1.to_vec() },
            }),
            alpha,
            magnitude,
            bias: None,
        }
    }

    fn slot(layout: WeightLayout, dims: &[usize]) -> WeightSlot {
        WeightSlot {
            initializer: "w".into(),
            layout,
            dims: dims.to_vec(),
            data_type: 1,
            data: crate::model::onnx_proto::TensorData::Typed,
            users: vec!["m".into()],
        }
    }

    /// The U-Net's merged weights reach another export of it (the ControlNet
    /// layout's `unet_controlnet`, weights named `unet.*`) as the same
    /// tensors under that export's names (a full diff's bias too); a layer
    /// it lacks or holds with another shape is refused.
    #[test]
    fn merged_weights_are_shared_under_another_exports_names() {
        use crate::model::onnx_proto::{InitializerSummary, NodeSummary, TensorData};
        let node = |name: &str, w: &str| NodeSummary { name: name.into(), op_type: "MatMul".into(), inputs: vec!["x".into(), w.into()], outputs: vec!["y".into()], trans_b: 0 };
        let init = |name: &str, dims: &[i64]| InitializerSummary { name: name.into(), data_type: 1, dims: dims.to_vec(), data: TensorData::Inline { offset: 0, len: 0 } };
        let conv = |name: &str, w: &str, b: &str| NodeSummary { op_type: "Conv".into(), inputs: vec!["x".into(), w.into(), b.into()], ..node(name, w) };
        let unet = GraphIndex::build(
            Path::new("unet.onnx"),
            &[node("/mid_block/attn1/to_q/MatMul", "onnx::MatMul_1"), node("/mid_block/attn1/to_k/MatMul", "onnx::MatMul_2"), conv("/conv_in/Conv", "conv_in.weight", "conv_in.bias")],
            vec![init("onnx::MatMul_1", &[4, 4]), init("onnx::MatMul_2", &[4, 4]), init("conv_in.weight", &[4, 4, 3, 3]), init("conv_in.bias", &[4])],
        );
        let residual = GraphIndex::build(
            Path::new("unet_controlnet.onnx"),
            &[
                node("/unet/mid_block/attn1/to_q/MatMul", "onnx::MatMul_9"),
                node("/unet/mid_block/attn1/to_k/MatMul", "onnx::MatMul_8"),
                conv("/unet/conv_in/Conv", "unet.conv_in.weight", "unet.conv_in.bias"),
            ],
            vec![init("onnx::MatMul_9", &[4, 4]), init("onnx::MatMul_8", &[4, 4]), init("unet.conv_in.weight", &[4, 4, 3, 3]), init("unet.conv_in.bias", &[4])],
        );
        let merged = vec![
            ("onnx::MatMul_1".to_string(), Arc::new(1.0f32)),
            ("onnx::MatMul_2".to_string(), Arc::new(2.0f32)),
            ("conv_in.bias".to_string(), Arc::new(3.0f32)),
        ];
        let shared = same_weights_in(&unet, &residual, &merged).unwrap();
        let names: Vec<&str> = shared.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["onnx::MatMul_9", "onnx::MatMul_8", "unet.conv_in.bias"]);
        for ((_, a), (_, b)) in merged.iter().zip(shared.iter()) {
            assert!(Arc::ptr_eq(a, b), "the same tensor, not a copy");
        }
        // Another shape, or a missing layer: not the same U-Net.
        let other = GraphIndex::build(Path::new("o.onnx"), &[node("/unet/mid_block/attn1/to_q/MatMul", "w")], vec![init("w", &[4, 8])]);
        let e = same_weights_in(&unet, &other, &merged).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid, "{e}");
        assert!(e.message().contains("not the same U-Net"), "{e}");
        let fewer = GraphIndex::build(Path::new("o.onnx"), &[node("/unet/mid_block/attn1/to_q/MatMul", "w")], vec![init("w", &[4, 4])]);
        let e = same_weights_in(&unet, &fewer, &merged[..2]).unwrap_err();
        assert!(e.message().contains("no layer `mid_block_attn1_to_k`"), "{e}");
        let e = same_weights_in(&unet, &fewer, &merged[2..]).unwrap_err();
        assert!(e.message().contains("no layer `conv_in` (bias `conv_in.bias`"), "{e}");
        assert!(same_weights_in::<f32>(&unet, &fewer, &[]).unwrap().is_empty());
    }

    /// DoRA against its definition written out, per output row: diffusers'
    /// strength inside the norm (PEFT files), and A1111/ComfyUI's
    /// interpolation (kohya files), after a plain LoRA merged into the same
    /// weight first (norms against the original weight, as PEFT), in the
    /// MatMul `[in, out]` layout.
    #[test]
    fn dora_rescales_each_output_row_as_each_ecosystem_does() {
        let (out, inn, rank) = (3usize, 4usize, 2usize);
        let mut seed = 11;
        let (up, down) = (lcg(out * rank, &mut seed), lcg(rank * inn, &mut seed));
        let (up2, down2) = (lcg(out * rank, &mut seed), lcg(rank * inn, &mut seed));
        let magnitude: Vec<f32> = (0..out).map(|o| 0.5 + o as f32).collect();
        let lora = |up: &[f32], down: &[f32], magnitude: Option<Magnitude>| low_rank((&[out, rank], up), (&[rank, inn], down), Some(1.0), magnitude);
        let delta = |up: &[f32], down: &[f32], o: usize, i: usize| -> f32 { (0..rank).map(|r| up[o * rank + r] * down[r * inn + i]).sum::<f32>() / rank as f32 };
        let w0: Vec<f32> = lcg(out * inn, &mut seed).iter().map(|v| v + 1.0).collect(); // [in, out]
        let s = slot(WeightLayout::InOut, &[inn, out]);
        let (s_lora, s_dora) = (0.7f32, 0.6f32);
        for strength in [DoraStrength::InNorm, DoraStrength::Interpolate] {
            let mut w = w0.clone();
            add_delta(&mut w, &w0, &s, &lora(&up2, &down2, None), s_lora).unwrap();
            let dora = lora(&up, &down, Some(Magnitude { values: magnitude.clone(), strength, axis: DoraAxis::Output }));
            add_delta(&mut w, &w0, &s, &dora, s_dora).unwrap();
            let mut worst = 0f32;
            for o in 0..out {
                let base = |i: usize| w0[i * out + o];
                let so_far = |i: usize| base(i) + s_lora * delta(&up2, &down2, o, i);
                let want: Vec<f32> = match strength {
                    DoraStrength::InNorm => {
                        let n = (0..inn).map(|i| (base(i) + s_dora * delta(&up, &down, o, i)).powi(2)).sum::<f32>().sqrt();
                        (0..inn).map(|i| magnitude[o] / n * (so_far(i) + s_dora * delta(&up, &down, o, i))).collect()
                    }
                    DoraStrength::Interpolate => {
                        let n = (0..inn).map(|i| (base(i) + delta(&up, &down, o, i)).powi(2)).sum::<f32>().sqrt();
                        (0..inn).map(|i| so_far(i) + s_dora * (magnitude[o] / n * (base(i) + delta(&up, &down, o, i)) - base(i))).collect()
                    }
                };
                for i in 0..inn {
                    worst = worst.max((w[i * out + o] - want[i]).abs());
                }
            }
            println!("{strength:?}: worst |merged - definition| = {worst:e} (bound 1e-5)");
            assert!(worst < 1e-5);
        }
        // At strength 1 both give the same weight; at 0 the interpolation is off.
        let at = |strength, scale| {
            let mut w = w0.clone();
            add_delta(&mut w, &w0, &s, &lora(&up, &down, Some(Magnitude { values: magnitude.clone(), strength, axis: DoraAxis::Output })), scale).unwrap();
            w
        };
        let (a, b) = (at(DoraStrength::InNorm, 1.0), at(DoraStrength::Interpolate, 1.0));
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-6));
        assert_eq!(at(DoraStrength::Interpolate, 0.0), w0);
    }

    /// DoRA with a magnitude per input channel (LyCORIS `wd_on_out = False`)
    /// on a 3x3 conv, against its definition written out: each input
    /// channel's norm runs over every output and kernel position.
    #[test]
    fn dora_per_input_channel_rescales_each_channel_of_a_conv() {
        let (out, inn, k, rank) = (3usize, 2usize, 3usize, 2usize);
        let cols = inn * k * k;
        let mut seed = 5;
        let (up, down) = (lcg(out * rank, &mut seed), lcg(rank * cols, &mut seed));
        let w0: Vec<f32> = lcg(out * cols, &mut seed).iter().map(|v| v + 0.5).collect();
        let magnitude = vec![0.8f32, 2.5];
        let s = slot(WeightLayout::OutIn, &[out, inn, k, k]);
        let per_input = Magnitude { values: magnitude.clone(), strength: DoraStrength::Interpolate, axis: DoraAxis::Input };
        let m = low_rank((&[out, rank, 1, 1], &up), (&[rank, inn, k, k], &down), None, Some(per_input));
        let delta = |o: usize, i: usize| -> f32 { (0..rank).map(|r| up[o * rank + r] * down[r * cols + i]).sum() };
        for scale in [1.0f32, 0.4] {
            let mut w = w0.clone();
            add_delta(&mut w, &w0, &s, &m, scale).unwrap();
            let norm = |c: usize| -> f32 {
                (0..out).flat_map(|o| (c * k * k..(c + 1) * k * k).map(move |i| (o, i))).map(|(o, i)| (w0[o * cols + i] + delta(o, i)).powi(2)).sum::<f32>().sqrt()
            };
            let mut worst = 0f32;
            for o in 0..out {
                for i in 0..cols {
                    let (v0, c) = (w0[o * cols + i], i / (k * k));
                    let want = v0 + scale * (magnitude[c] / norm(c) * (v0 + delta(o, i)) - v0);
                    worst = worst.max((w[o * cols + i] - want).abs());
                }
            }
            println!("per-input DoRA at {scale}: worst |merged - definition| = {worst:e} (bound 1e-5)");
            assert!(worst < 1e-5);
        }
        // The magnitude must have one value per input channel.
        let wrong = LoraModule { magnitude: Some(Magnitude { values: vec![1.0; 3], ..m.magnitude.clone().unwrap() }), ..m.clone() };
        let e = add_delta(&mut w0.clone(), &w0, &s, &wrong, 1.0).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("2 input channels"), "{e}");
    }

    /// The merge against a direct triple loop, for MatMul ([in, out]) and conv layouts.
    #[test]
    fn delta_matches_a_direct_computation_in_both_layouts() {
        let (out, inn, rank, k) = (5usize, 3usize, 2usize, 3usize);
        let mut seed = 7;
        let up = lcg(out * rank, &mut seed);
        let down = lcg(rank * inn * k * k, &mut seed);
        let (alpha, scale) = (3.0f32, 0.7f32);
        let direct = |o: usize, i: usize| -> f32 { (0..rank).map(|r| up[o * rank + r] * down[r * inn * k * k + i]).sum::<f32>() * scale * alpha / rank as f32 };
        // Conv [out, in, k, k] (LoCon).
        let m = low_rank((&[out, rank, 1, 1], &up), (&[rank, inn, k, k], &down), Some(alpha), None);
        let s = slot(WeightLayout::OutIn, &[out, inn, k, k]);
        let base = lcg(out * inn * k * k, &mut seed);
        let mut w = base.clone();
        add_delta(&mut w, &base, &s, &m, scale).unwrap();
        let mut worst = 0f32;
        for o in 0..out {
            for i in 0..inn * k * k {
                worst = worst.max((w[o * inn * k * k + i] - base[o * inn * k * k + i] - direct(o, i)).abs());
            }
        }
        println!("conv: worst |merged - direct| = {worst:e} (bound 1e-6)");
        assert!(worst < 1e-6);
        // Linear as MatMul [in, out].
        let lin = low_rank((&[out, rank], &up), (&[rank, inn * k * k], &down), Some(alpha), None);
        let s = slot(WeightLayout::InOut, &[inn * k * k, out]);
        let mut w = base.clone();
        add_delta(&mut w, &base, &s, &lin, scale).unwrap();
        let mut worst = 0f32;
        for o in 0..out {
            for i in 0..inn * k * k {
                worst = worst.max((w[i * out + o] - base[i * out + o] - direct(o, i)).abs());
            }
        }
        println!("matmul: worst |merged - direct| = {worst:e} (bound 1e-6)");
        assert!(worst < 1e-6);
        // Wrong width: a LoRA for another architecture.
        let s = slot(WeightLayout::InOut, &[inn * k * k + 1, out]);
        let mut w = vec![0.0; (inn * k * k + 1) * out];
        let e = add_delta(&mut w, &[], &s, &lin, scale).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("another architecture"), "{}", e.message());
    }
}
