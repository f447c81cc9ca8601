//! LoRA slots: a low-rank side path beside every adaptable layer, added to
//! the graph at load, whose factors are graph inputs fed at run time.
//!
//! Merging a LoRA needs new sessions (seconds, and a second copy of the
//! weights). With slots, `y = layer(x) + (x · down) · up` is part of the
//! graph, so applying or switching LoRAs only changes what is fed: no
//! session is made and no weight is copied. Each side path sits in an `If`
//! on a boolean input, on only for the layers a fed LoRA adapts: a switched
//! off slot passes the layer's output on as it is, so the plain model draws
//! the exported graph's pictures bit for bit and pays about one `If` per
//! layer, and a LoRA pays the side paths of its own layers only.
//!
//! Slots are added where the LoRA index finds a module (see `graph_index`):
//! MatMul and Gemm with a 2-D weight (attention, feed-forward, SDXL's
//! `proj_in`/`proj_out`, time embedding), and convolutions with one group
//! (SD 1.x's 1×1 `proj_in`/`proj_out`; LoCon's 3×3 resnet layers, whose
//! down factor convolves as the layer does and whose up factor is 1×1). The side path is added after the layer's bias (a
//! MatMul's following `Add`) so ONNX Runtime's MatMul+bias fusions still
//! apply to the layer itself. Inputs are named by module key, so the same
//! feeds serve another export of the same network (`unet_controlnet`).
//!
//! The rewrite runs after attention fusion (which leaves the projections
//! as they are, and does not look into `If` branches) and before int8
//! quantization (which leaves the branches' float products alone).
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use ndarray::Array2;

use super::format::{Component, LoraModule};
use super::factors::{Decomposed, Factors};
use super::{graph_index, LoadedLora, Overrides};
use crate::error::{Error, Result};
use crate::model::onnx_proto::{self, Message, Value};

/// Input name prefix of a slot's down factor: `[in, r]` (MatMul) or `[r, in, 1, 1]` (Conv).
pub(crate) const DOWN: &str = "kiln.lora_down.";
/// Input name prefix of a slot's up factor: `[r, out]` (MatMul) or `[out, r, 1, 1]` (Conv).
pub(crate) const UP: &str = "kiln.lora_up.";

/// The widest layer side a slot takes (SDXL's widest is 10,240 inputs): a
/// bound on what a graph's declaration can make Kiln allocate.
const MAX_WIDTH: i64 = 1 << 20;

/// Input name prefix of a slot's switch: a boolean scalar, true when the
/// slot's layer has factors fed (the side path runs only then).
pub(crate) const ON: &str = "kiln.lora_on.";

/// ONNX's BOOL element type.
const BOOL: u64 = 9;

/// Whether a graph input is a slot's factor or switch (fed by Kiln, not by the pipeline).
pub(crate) fn is_slot_input(name: &str) -> bool {
    name.starts_with(DOWN) || name.starts_with(UP) || name.starts_with(ON)
}

/// One side path to add.
struct Plan {
    /// The node whose output (or whose bias Add's output) the side path joins.
    producer: usize,
    /// That output's name, which the sum takes over.
    target: String,
    /// The layer's input.
    x: String,
    key: String,
    /// A convolution's attributes for the down convolution, and its kernel.
    conv: Option<(Vec<Message<'static>>, [i64; 2])>,
    in_features: i64,
    out_features: i64,
    elem: u64,
}

/// `model` with a slot beside every adaptable layer, and how many were
/// added (`None` when the graph has none).
pub(crate) fn add_slots(model: &[u8]) -> Result<(Option<Vec<u8>>, usize)> {
    let model_msg = Message::parse(model)?;
    let graph_bytes = onnx_proto::only_graph(&model_msg)?;
    let graph = Message::parse(graph_bytes)?;
    let nodes: Vec<Message<'_>> = graph.bytes_of(1).map(Message::parse).collect::<Result<_>>()?;
    let op = |n: &Message<'_>| n.string(4).unwrap_or("").to_string();
    if nodes.iter().any(|n| matches!(op(n).as_str(), "If" | "Loop" | "Scan")) {
        return Ok((None, 0));
    }
    // A graph that has slots already (slotted twice, the names would clash).
    let declared = graph.bytes_of(11).map(Message::parse).collect::<Result<Vec<_>>>()?;
    if declared.iter().any(|i| i.string(1).is_some_and(is_slot_input)) {
        return Ok((None, 0));
    }
    // Initializers: name → (element type, dims).
    let mut inits: HashMap<String, (i64, Vec<i64>)> = HashMap::new();
    for b in graph.bytes_of(5) {
        let t = Message::parse(b)?;
        let Some(name) = t.string(8) else { continue };
        let elem = t.ints(2)?.first().copied().unwrap_or(0);
        inits.insert(name.to_string(), (elem, t.ints(1)?));
    }
    let alias: HashMap<String, String> = nodes
        .iter()
        .filter(|n| op(n) == "Identity")
        .filter_map(|n| Some((n.strings(2).into_iter().next()?, n.strings(1).into_iter().next()?)))
        .collect();
    let resolve = |name: &str| -> Option<&(i64, Vec<i64>)> {
        let mut name = name.to_string();
        for _ in 0..16 {
            if let Some(i) = inits.get(&name) {
                return Some(i);
            }
            name = alias.get(&name)?.clone();
        }
        None
    };
    let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for input in n.strings(1) {
            readers.entry(input).or_default().push(i);
        }
    }
    let graph_outputs: HashSet<String> =
        graph.bytes_of(12).map(Message::parse).collect::<Result<Vec<_>>>()?.iter().filter_map(|o| o.string(1).map(str::to_string)).collect();

    let mut plans: Vec<Plan> = Vec::new();
    let mut seen_keys: HashMap<String, usize> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        let kind = op(n);
        // NodeProto.domain: only the standard operators.
        if !matches!(kind.as_str(), "MatMul" | "Gemm" | "Conv") || n.string(7).is_some_and(|d| !d.is_empty() && d != "ai.onnx") {
            continue;
        }
        let inputs = n.strings(1);
        let (Some(x), Some(w)) = (inputs.first(), inputs.get(1)) else { continue };
        let Some(key) = graph_index::module_key(n.string(3).unwrap_or("")) else { continue };
        let Some((elem, dims)) = resolve(w) else { continue };
        // float32 and float16 weights; the factors are fed in the same type.
        if !matches!(*elem, 1 | 10) || resolve(x).is_some() {
            continue;
        }
        let (in_features, out_features, conv) = match kind.as_str() {
            "MatMul" if dims.len() == 2 => (dims[0], dims[1], None),
            "Gemm" if dims.len() == 2 => {
                if onnx_proto::attribute_int(n, "transA")?.unwrap_or(0) != 0 {
                    continue;
                }
                match onnx_proto::attribute_int(n, "transB")?.unwrap_or(0) {
                    0 => (dims[0], dims[1], None),
                    _ => (dims[1], dims[0], None),
                }
            }
            "Conv" if dims.len() == 4 => {
                if onnx_proto::attribute_int(n, "group")?.unwrap_or(1) != 1 {
                    continue;
                }
                // The down convolution strides and pads as the layer does.
                let attrs = n
                    .bytes_of(5)
                    .map(Message::parse)
                    .collect::<Result<Vec<_>>>()?
                    .iter()
                    .filter(|a| matches!(a.string(1), Some("strides" | "pads" | "dilations" | "auto_pad" | "kernel_shape")))
                    .map(onnx_proto::to_static)
                    .collect();
                (dims[1], dims[0], Some((attrs, [dims[2], dims[3]])))
            }
            _ => continue,
        };
        // Widths the feeding code takes (a zero or absurd weight dimension
        // is a graph's oddity, not a layer a LoRA adapts): no slot.
        let sane = |d: i64| (1..=MAX_WIDTH).contains(&d);
        let [kh, kw] = conv.as_ref().map_or([1, 1], |(_, k)| *k);
        if ![in_features, out_features, kh, kw].into_iter().all(sane) || !sane(in_features.saturating_mul(kh).saturating_mul(kw)) {
            continue;
        }
        let Some(mut target) = n.strings(2).into_iter().next() else { continue };
        let mut producer = i;
        // A MatMul's bias Add, when it is the only reader: the sum goes after it.
        if kind == "MatMul" && !graph_outputs.contains(&target) {
            if let Some([reader]) = readers.get(&target).map(Vec::as_slice) {
                let add = &nodes[*reader];
                let add_inputs = add.strings(1);
                let bias = add_inputs.iter().find(|t| **t != target);
                if op(add) == "Add"
                    && add_inputs.len() == 2
                    && bias.and_then(|b| resolve(b)).is_some_and(|(_, d)| d.len() == 1 && d[0] == out_features)
                {
                    if let Some(o) = add.strings(2).into_iter().next() {
                        target = o;
                        producer = *reader;
                    }
                }
            }
        }
        *seen_keys.entry(key.clone()).or_default() += 1;
        plans.push(Plan { producer, target, x: x.clone(), key, conv, in_features, out_features, elem: *elem as u64 });
    }
    // A module key two nodes share cannot name one slot.
    plans.retain(|p| seen_keys[&p.key] == 1);
    if plans.is_empty() {
        return Ok((None, 0));
    }

    let mut after: HashMap<usize, Vec<&Plan>> = HashMap::new();
    for p in &plans {
        after.entry(p.producer).or_default().push(p);
    }
    let mut new_nodes: Vec<Message<'static>> = Vec::with_capacity(nodes.len() + 3 * plans.len());
    let mut new_inputs: Vec<Message<'static>> = Vec::with_capacity(2 * plans.len());
    for (i, n) in nodes.iter().enumerate() {
        let Some(here) = after.get(&i) else {
            new_nodes.push(onnx_proto::to_static(n));
            continue;
        };
        let renamed: HashMap<&str, String> = here.iter().map(|p| (p.target.as_str(), format!("{}/kiln.lora_base", p.target))).collect();
        let mut base = onnx_proto::to_static(n);
        for (number, value) in base.fields.iter_mut() {
            if let (2, Value::Bytes(b)) = (*number, &*value) {
                if let Some(new) = std::str::from_utf8(b).ok().and_then(|s| renamed.get(s)) {
                    *value = Value::Bytes(std::borrow::Cow::Owned(new.as_bytes().to_vec()));
                }
            }
        }
        new_nodes.push(base);
        for p in here {
            let (down, up, on) = (format!("{DOWN}{}", p.key), format!("{UP}{}", p.key), format!("{ON}{}", p.key));
            let rank = format!("kiln_lora_rank.{}", p.key);
            let (t, l) = (format!("{}/kiln.lora_down", p.target), format!("{}/kiln.lora_up", p.target));
            let scope = format!("/kiln.lora/{}", p.key);
            let base_out = &renamed[p.target.as_str()];
            // The side path runs only when the slot is on: an `If` on a
            // boolean input, whose other branch passes the layer's output on.
            let mut then_branch = Message::default();
            match &p.conv {
                None => {
                    then_branch.push_message(1, &onnx_proto::node("MatMul", &format!("{scope}/down"), &[&p.x, &down], &[&t], &[]));
                    then_branch.push_message(1, &onnx_proto::node("MatMul", &format!("{scope}/up"), &[&t, &up], &[&l], &[]));
                    new_inputs.push(onnx_proto::tensor_value_info(&down, p.elem, &[Ok(p.in_features), Err(&rank)]));
                    new_inputs.push(onnx_proto::tensor_value_info(&up, p.elem, &[Err(&rank), Ok(p.out_features)]));
                }
                Some((attrs, [kh, kw])) => {
                    then_branch.push_message(1, &onnx_proto::node("Conv", &format!("{scope}/down"), &[&p.x, &down], &[&t], attrs));
                    then_branch.push_message(1, &onnx_proto::node("Conv", &format!("{scope}/up"), &[&t, &up], &[&l], &[]));
                    new_inputs.push(onnx_proto::tensor_value_info(&down, p.elem, &[Err(&rank), Ok(p.in_features), Ok(*kh), Ok(*kw)]));
                    new_inputs.push(onnx_proto::tensor_value_info(&up, p.elem, &[Ok(p.out_features), Err(&rank), Ok(1), Ok(1)]));
                }
            }
            new_inputs.push(onnx_proto::tensor_value_info(&on, BOOL, &[]));
            let (sum, pass) = (format!("{}/kiln.lora_sum", p.target), format!("{}/kiln.lora_off", p.target));
            then_branch.push_message(1, &onnx_proto::node("Add", &format!("{scope}/add"), &[base_out, &l], &[&sum], &[]));
            then_branch.push_string(2, &format!("{scope}/on"));
            then_branch.push_message(12, &onnx_proto::tensor_value_info_any_shape(&sum, p.elem));
            let mut else_branch = Message::default();
            else_branch.push_message(1, &onnx_proto::node("Identity", &format!("{scope}/off"), &[base_out], &[&pass], &[]));
            else_branch.push_string(2, &format!("{scope}/off"));
            else_branch.push_message(12, &onnx_proto::tensor_value_info_any_shape(&pass, p.elem));
            let branches = [onnx_proto::graph_attribute("then_branch", &then_branch), onnx_proto::graph_attribute("else_branch", &else_branch)];
            new_nodes.push(onnx_proto::node("If", &format!("{scope}/if"), &[&on], &[&p.target], &branches));
        }
    }

    let mut new_graph = Message::default();
    let (mut nodes_written, mut inputs_written) = (false, false);
    let last_input = graph.fields.iter().rposition(|(n, _)| *n == 11);
    for (k, (number, value)) in graph.fields.iter().enumerate() {
        match number {
            1 => {
                if !nodes_written {
                    new_nodes.iter().for_each(|n| new_graph.push_message(1, n));
                    nodes_written = true;
                }
            }
            11 => {
                new_graph.fields.push((*number, value.clone()));
                if Some(k) == last_input {
                    new_inputs.iter().for_each(|v| new_graph.push_message(11, v));
                    inputs_written = true;
                }
            }
            _ => new_graph.fields.push((*number, value.clone())),
        }
    }
    if !inputs_written {
        new_inputs.iter().for_each(|v| new_graph.push_message(11, v));
    }
    Ok((Some(onnx_proto::with_graph(&model_msg, &new_graph)), plans.len()))
}

/// A graph's slot input: its name, element type and declared shape (-1 = the rank).
#[derive(Debug, Clone)]
pub(crate) struct SlotInput {
    pub name: String,
    pub ty: ort::value::TensorElementType,
    pub shape: Vec<i64>,
}

/// The factors of one slot: `down` `[r, in]`, `up` `[out, r]` (PyTorch's
/// order, strength and alpha/rank folded into `up`), ranks of several
/// modules stacked.
#[derive(Debug, Default)]
pub(crate) struct SlotFactors {
    down: Vec<Array2<f32>>,
    up: Vec<Array2<f32>>,
}

/// Slot factors by module key (empty: every slot fed zeros).
pub(crate) type SlotMap = Arc<HashMap<String, SlotFactors>>;

/// The module keys `inputs` has slots for.
pub(crate) fn slotted_keys(inputs: &[SlotInput]) -> HashSet<String> {
    inputs.iter().filter_map(|s| s.name.strip_prefix(DOWN)).map(str::to_string).collect()
}

/// The slot factors of `component` for `loras`, by module key, or `None`
/// when any module of it is not a plain low-rank pair a slot can take (LoHa,
/// LoKr, full diffs, DoRA, Tucker, bias differences, kernels over 1×1, a
/// layer without a slot): those are merged instead.
pub(crate) fn factors(component: Component, loras: &[LoadedLora], slotted: &HashSet<String>) -> Option<HashMap<String, SlotFactors>> {
    let mut out: HashMap<String, SlotFactors> = HashMap::new();
    for l in loras.iter().filter(|l| l.changes(component)) {
        let scale = l.spec.scale_for(component);
        for m in l.file.modules.iter().filter(|m| m.component == component) {
            if !slotted.contains(&m.key) {
                return None;
            }
            let (down, up) = pair(m)?;
            let mut up = up;
            up *= scale * m.alpha_scale();
            let f = out.entry(m.key.clone()).or_default();
            f.down.push(down);
            f.up.push(up);
        }
    }
    Some(out)
}

/// A module's `(down [r, in·kh·kw], up [out, r])` when it is a plain
/// low-rank pair (the up side 1×1).
pub(crate) fn pair(m: &LoraModule) -> Option<(Array2<f32>, Array2<f32>)> {
    if m.magnitude.is_some() || m.bias.is_some() {
        return None;
    }
    let Factors::LowRank(Decomposed::Product { a, b }) = &m.factors else { return None };
    let one_by_one = |shape: &[usize]| shape.len() == 2 || (shape.len() == 4 && shape[2] == 1 && shape[3] == 1);
    if !one_by_one(&a.shape) || !matches!(b.shape.len(), 2 | 4) {
        return None;
    }
    let (out, r, inn) = (a.shape[0], b.shape[0], b.shape[1..].iter().product::<usize>());
    if a.shape[1] != r || a.data.len() != out * r || b.data.len() != r * inn {
        return None;
    }
    Some((Array2::from_shape_vec((r, inn), b.data.clone()).ok()?, Array2::from_shape_vec((out, r), a.data.clone()).ok()?))
}

/// Every slot input of a graph fed: the factors given for its module, zeros
/// of rank 1 for the rest. A factor whose layer this graph has no slot for, or whose
/// widths differ from the layer's, is an error.
pub(crate) fn feeds(graph: &str, inputs: &[SlotInput], factors: &HashMap<String, SlotFactors>) -> Result<Overrides> {
    let arrays = feed_arrays(graph, inputs, factors)?;
    let tensors = arrays
        .into_iter()
        .zip(inputs)
        .map(|((name, shape, data), s)| Ok((name, Arc::new(tensor(graph, &s.name, s.ty, shape, data)?))))
        .collect::<Result<Vec<_>>>()?;
    Ok(Arc::new(tensors))
}

/// [`feeds`]' values before they become tensors: (name, shape, row-major
/// data) for each of `inputs`, in order.
pub(crate) fn feed_arrays(graph: &str, inputs: &[SlotInput], factors: &HashMap<String, SlotFactors>) -> Result<Vec<(String, Vec<i64>, Vec<f32>)>> {
    let by_name: HashMap<&str, &SlotInput> = inputs.iter().map(|s| (s.name.as_str(), s)).collect();
    if let Some(key) = factors.keys().find(|k| !by_name.contains_key(format!("{DOWN}{k}").as_str())) {
        // A graph of another network than the one the factors were matched
        // against (an unet_controlnet exported from another U-Net).
        return Err(Error::model(format!("{graph}: no layer `{key}` with a LoRA slot, which the U-Net has: an export of another network?")));
    }
    let mut out = Vec::with_capacity(inputs.len());
    for s in inputs {
        if let Some(key) = s.name.strip_prefix(ON) {
            if !s.shape.is_empty() || s.ty != ort::value::TensorElementType::Bool {
                return Err(Error::model(format!("{graph}: input `{}` is named as a LoRA slot's switch but declared {:?} {:?}", s.name, s.ty, s.shape)));
            }
            out.push((s.name.clone(), Vec::new(), vec![if factors.contains_key(key) { 1.0 } else { 0.0 }]));
            continue;
        }
        let (key, is_down) = match (s.name.strip_prefix(DOWN), s.name.strip_prefix(UP)) {
            (Some(k), _) => (k, true),
            (_, Some(k)) => (k, false),
            _ => return Err(Error::internal(format!("{graph}: `{}` is not a LoRA slot input", s.name))),
        };
        // The rank is the one free dimension, where the rewrite put it; any
        // other declaration (a graph of someone else's naming its inputs so)
        // is refused before its sizes are trusted.
        let rank_at = match (s.shape.len(), is_down) {
            (2, true) => 1,
            (2, false) | (4, true) => 0,
            (4, false) => 1,
            _ => usize::MAX,
        };
        let fixed_ok = s.shape.iter().enumerate().all(|(i, &d)| if i == rank_at { d < 0 } else { (1..=MAX_WIDTH).contains(&d) });
        if rank_at == usize::MAX || !fixed_ok || (s.shape.len() == 4 && !is_down && s.shape[2..] != [1, 1]) {
            return Err(Error::model(format!("{graph}: input `{}` is named as a LoRA slot but declared {:?}", s.name, s.shape)));
        }
        let conv = s.shape.len() == 4;
        // The layer's width on this factor's fixed side (a convolution's
        // input side times its kernel; each dimension at most MAX_WIDTH, so
        // the product fits).
        let width = match (conv, is_down) {
            (false, true) => s.shape[0],
            (false, false) => s.shape[1],
            (true, true) => s.shape[1..].iter().product(),
            (true, false) => s.shape[0],
        };
        if width > MAX_WIDTH {
            return Err(Error::model(format!("{graph}: LoRA slot `{}` is {width} wide", s.name)));
        }
        let (rank, data): (usize, Vec<f32>) = match factors.get(key) {
            // An unfed slot is switched off, so these are never read; one
            // zero column, not rank 0, all the same: ONNX Runtime's Conv
            // leaves its output unwritten when it has no input channels
            // (seen in 1.31), while x · 0 is exactly 0.
            None => (1, vec![0.0; width as usize]),
            Some(f) => {
                let parts = if is_down { &f.down } else { &f.up };
                let rank: usize = parts.iter().map(|p| if is_down { p.nrows() } else { p.ncols() }).sum();
                let wide = parts.iter().map(|p| if is_down { p.ncols() } else { p.nrows() }).find(|&w| w as i64 != width);
                if let Some(w) = wide {
                    return Err(Error::adapter_mismatch(format!(
                        "{graph} layer `{key}`: the LoRA's {} side is {w} wide but the layer's is {width}: a LoRA for another architecture?",
                        if is_down { "input" } else { "output" }
                    )));
                }
                // Stacked along the rank, in the layout the input declares.
                let stacked: Vec<f32> = match (conv, is_down) {
                    // down [r, in] → MatMul [in, r]: column blocks of the transpose.
                    (false, true) => {
                        let mut m = Array2::<f32>::zeros((width as usize, rank));
                        let mut at = 0;
                        for p in parts {
                            m.slice_mut(ndarray::s![.., at..at + p.nrows()]).assign(&p.t());
                            at += p.nrows();
                        }
                        m.into_iter().collect()
                    }
                    // up [out, r] → MatMul [r, out].
                    (false, false) => parts.iter().flat_map(|p| p.t().to_owned().into_iter()).collect(),
                    // down [r, in·kh·kw] → Conv [r, in, kh, kw]: rows stacked.
                    (true, true) => parts.iter().flat_map(|p| p.iter().copied()).collect(),
                    // up [out, r] → Conv [out, r, 1, 1]: column blocks.
                    (true, false) => {
                        let mut m = Array2::<f32>::zeros((width as usize, rank));
                        let mut at = 0;
                        for p in parts {
                            m.slice_mut(ndarray::s![.., at..at + p.ncols()]).assign(p);
                            at += p.ncols();
                        }
                        m.into_iter().collect()
                    }
                };
                (rank, stacked)
            }
        };
        let shape: Vec<i64> = s.shape.iter().map(|&d| if d < 0 { rank as i64 } else { d }).collect();
        out.push((s.name.clone(), shape, data));
    }
    Ok(out)
}

fn tensor(graph: &str, name: &str, ty: ort::value::TensorElementType, shape: Vec<i64>, data: Vec<f32>) -> Result<ort::value::DynValue> {
    use ort::value::TensorElementType as T;
    use ort::value::Tensor;
    let made = match ty {
        T::Float32 => Tensor::from_array((shape, data)).map(|t| t.into_dyn()),
        T::Float16 => Tensor::from_array((shape, data.into_iter().map(half::f16::from_f32).collect::<Vec<_>>())).map(|t| t.into_dyn()),
        // A switch ([`feed_arrays`] checked that only switches are boolean).
        T::Bool if name.starts_with(ON) => Tensor::from_array((shape, data.into_iter().map(|v| v != 0.0).collect::<Vec<_>>())).map(|t| t.into_dyn()),
        other => return Err(Error::model(format!("{graph}: LoRA slot `{name}` has element type {other:?}"))),
    };
    made.map_err(|e| Error::internal(format!("{graph}: cannot make the tensor for `{name}`: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ort::value::TensorElementType as T;

    fn inputs() -> Vec<SlotInput> {
        vec![
            SlotInput { name: format!("{DOWN}lin"), ty: T::Float32, shape: vec![3, -1] },
            SlotInput { name: format!("{UP}lin"), ty: T::Float32, shape: vec![-1, 2] },
            SlotInput { name: format!("{DOWN}conv"), ty: T::Float32, shape: vec![-1, 2, 3, 3] },
            SlotInput { name: format!("{UP}conv"), ty: T::Float32, shape: vec![4, -1, 1, 1] },
            SlotInput { name: format!("{ON}lin"), ty: T::Bool, shape: vec![] },
            SlotInput { name: format!("{ON}conv"), ty: T::Bool, shape: vec![] },
        ]
    }

    type Arrays = Vec<(String, Vec<i64>, Vec<f32>)>;

    fn shape_of(feeds: &Arrays, name: &str) -> Vec<i64> {
        feeds.iter().find(|(n, ..)| n == name).unwrap().1.clone()
    }

    #[test]
    fn stacked_factors_take_the_declared_layouts_and_unfed_slots_get_zero_rank_one() {
        let m = |r: usize, c: usize| Array2::from_shape_fn((r, c), |(i, j)| (i * c + j) as f32);
        // Two LoRAs on `lin` (ranks 1 and 2), none on `conv`.
        let f = SlotFactors { down: vec![m(1, 3), m(2, 3)], up: vec![m(2, 1), m(2, 2)] };
        let feeds = feed_arrays("unet", &inputs(), &HashMap::from([("lin".to_string(), f)])).unwrap();
        assert_eq!(shape_of(&feeds, &format!("{DOWN}lin")), [3, 3]);
        assert_eq!(shape_of(&feeds, &format!("{UP}lin")), [3, 2]);
        assert_eq!(shape_of(&feeds, &format!("{DOWN}conv")), [1, 2, 3, 3]);
        assert_eq!(shape_of(&feeds, &format!("{UP}conv")), [4, 1, 1, 1]);
        let values = |name: &str| -> Vec<f32> { feeds.iter().find(|(n, ..)| n == name).unwrap().2.clone() };
        // down [in, r]: column 0 is the first LoRA's row, columns 1-2 the second's rows.
        assert_eq!(values(&format!("{DOWN}lin")), [0., 0., 3., 1., 1., 4., 2., 2., 5.]);
        // up [r, out]: the transposes stacked along the rank.
        assert_eq!(values(&format!("{UP}lin")), [0., 1., 0., 2., 1., 3.]);
        assert!(values(&format!("{DOWN}conv")).iter().chain(&values(&format!("{UP}conv"))).all(|&x| x == 0.0));
        // The fed slot is switched on, the other off.
        assert_eq!((values(&format!("{ON}lin")), values(&format!("{ON}conv"))), (vec![1.0], vec![0.0]));
        assert_eq!(shape_of(&feeds, &format!("{ON}lin")), Vec::<i64>::new());
    }

    #[test]
    fn inputs_named_as_slots_with_other_shapes_are_refused_before_allocating() {
        for shape in [vec![-1, -1], vec![1 << 40, -1], vec![0, -1], vec![3, 2], vec![3, -1, 1], vec![-1, 1 << 20, 1 << 20, 4]] {
            let odd = [SlotInput { name: format!("{DOWN}x"), ty: T::Float32, shape: shape.clone() }];
            let e = feed_arrays("unet", &odd, &HashMap::new()).unwrap_err();
            assert_eq!(e.kind(), crate::error::ErrorKind::ModelInvalid, "{shape:?}: {e}");
        }
        let up_kernel = [SlotInput { name: format!("{UP}x"), ty: T::Float32, shape: vec![4, -1, 3, 3] }];
        assert!(feed_arrays("unet", &up_kernel, &HashMap::new()).is_err(), "the up factor is 1x1");
        // A switch is a boolean scalar.
        for (ty, shape) in [(T::Float32, vec![]), (T::Bool, vec![1])] {
            let odd = [SlotInput { name: format!("{ON}x"), ty, shape }];
            assert_eq!(feed_arrays("unet", &odd, &HashMap::new()).unwrap_err().kind(), crate::error::ErrorKind::ModelInvalid);
        }
    }

    #[test]
    fn factors_for_a_missing_or_narrower_layer_are_errors() {
        let one = |a: usize, b: usize| SlotFactors { down: vec![Array2::zeros((1, a))], up: vec![Array2::zeros((b, 1))] };
        let e = feed_arrays("unet_controlnet", &inputs(), &HashMap::from([("other".to_string(), one(3, 2))])).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::ModelInvalid, "{e}");
        assert!(e.message().contains("`other`"), "{e}");
        let e = feed_arrays("unet", &inputs(), &HashMap::from([("lin".to_string(), one(5, 2))])).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::AdapterMismatch, "{e}");
        assert!(e.message().contains("input side is 5 wide but the layer's is 3"), "{e}");
    }

    #[test]
    fn every_adaptable_layer_of_the_tiny_unet_gets_a_slot_once() {
        let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-sd/unet/model.onnx")).unwrap();
        let (slotted, count) = add_slots(&bytes).unwrap();
        assert_eq!(count, 121);
        let slotted = slotted.unwrap();
        let (inputs, _) = crate::model::onnx_proto::declared_io(std::io::Cursor::new(&slotted)).unwrap();
        assert_eq!(inputs.iter().filter(|i| is_slot_input(&i.name)).count(), 3 * 121);
        // A slotted graph is left as it is (a second set of slots would clash by name).
        assert_eq!(add_slots(&slotted).unwrap(), (None, 0));
    }

    #[test]
    fn weights_with_a_zero_or_absurd_width_get_no_slot() {
        use crate::model::onnx_proto::{node, tensor_value_info};
        // A float weight initializer with these dims and no data (only its shape is read).
        let weight = |name: &str, dims: &[i64]| {
            let mut t = Message::default();
            dims.iter().for_each(|&d| t.push_varint(1, d as u64));
            t.push_varint(2, 1);
            t.push_string(8, name);
            t
        };
        let slots_for = |dims: &[i64]| {
            let mut graph = Message::default();
            graph.push_message(1, &node("MatMul", "/blocks.0/proj/MatMul", &["x", "w"], &["y"], &[]));
            graph.push_message(5, &weight("w", dims));
            graph.push_message(11, &tensor_value_info("x", 1, &[Err("n"), Ok(dims[0])]));
            graph.push_message(12, &tensor_value_info("y", 1, &[Err("n"), Ok(dims[1])]));
            let mut model = Message::default();
            model.push_varint(1, 8);
            model.push_message(7, &graph);
            add_slots(&model.to_bytes()).unwrap().1
        };
        assert_eq!(slots_for(&[3, 4]), 1);
        for dims in [[0, 4], [3, 0], [-2, 4], [MAX_WIDTH + 1, 4]] {
            assert_eq!(slots_for(&dims), 0, "{dims:?}");
        }
    }
}
