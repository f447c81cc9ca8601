//! int8 weights for the matrix products, written into the graph at load time.
//!
//! Users pick sd.cpp for its quantized models; for ONNX the usual answer is
//! ONNX Runtime's `quantize_dynamic`, a Python step before shipping. Kiln
//! makes the same graph itself when a model is loaded with
//! [`Quantization::Int8`], so an engine can choose per machine (a player with
//! little memory) without a second copy of the model on disk.
//!
//! The rewrite is what `onnxruntime.quantization.quantize_dynamic(model,
//! out, op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
//! reduce_range=True)` makes
//! (ONNX Runtime 1.31's quantizer, read in `onnx_quantizer.py`,
//! `operators/matmul.py`, `quant_utils.py`), so its output can be checked
//! against that reference weight for weight:
//! * a `Gemm` with `alpha = beta = 1`, `transA = 0` and a constant `B`
//!   becomes `MatMul` (+ `Add` of `C`), `B` transposed when `transB = 1`;
//! * every `MatMul` whose `B` is a float32 initializer gets `B` as int8 in the
//!   reduced range -64..=64, one symmetric scale per tensor (`scale = 2·max|B|
//!   / 128` in float64, stored as float32; `q = round_half_even(B / scale)`,
//!   zero point 0), and its `A`
//!   quantized at run time by `DynamicQuantizeLinear` (uint8, once per
//!   tensor however many products read it), then `MatMulInteger` → `Cast` →
//!   `Mul` by both scales. ONNX Runtime fuses that chain into its
//!   `DynamicQuantizeMatMul` kernel when it optimizes the session.
//!
//! Why 7 bits (`reduce_range`): on CPUs without VNNI (AVX2, and AVX-512
//! without VNNI) ONNX Runtime multiplies uint8 activations by int8 weights with
//! `vpmaddubsw`, which adds pairs of products in int16 and saturates when both
//! are large (255·127·2 > 32767). Measured on tiny-sd's U-Net: one call
//! differs by 4.7e-2 (relative) between a VNNI CPU and an AVX2 one with full-
//! range weights, 2.4e-3 with weights in -64..=64, which never saturate
//! (255·64·2 < 32768). ONNX Runtime's quantization guide recommends
//! `reduce_range` for such CPUs; Kiln uses it everywhere, so a picture does
//! not depend on which kind of CPU drew it beyond float rounding.
//!
//! Convolutions stay float32 (ONNX Runtime's `ConvInteger` is slow on the CPU
//! and quality suffers most there), so the U-Net shrinks by its attention and
//! feed-forward weights and a CLIP text encoder by almost all of its own.
//! Weights kept in an external-data file are read from it; the int8 ones are
//! then written inline and the float ones left where they are.
use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::onnx_proto::{self, node, owned, to_static, Message, Value};
use crate::error::{Error, Result};

/// How a model's weights are stored for running. Values match
/// `kiln_quantization` in the C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum Quantization {
    /// As exported.
    #[default]
    None = 0,
    /// The text encoders' and U-Net's matrix-product weights as int8
    /// (ONNX Runtime's dynamic quantization); convolutions stay float.
    Int8 = 1,
}

impl Quantization {
    /// From `none` or `int8`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "int8" => Some(Self::Int8),
            _ => None,
        }
    }
    /// The name [`Quantization::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Int8 => "int8",
        }
    }
}

const FLOAT: u64 = 1;
const INT8: u64 = 3;
const FLOAT16: u64 = 10;

/// What a rewrite did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizeReport {
    /// `MatMul` nodes (including those made from a `Gemm`) now `MatMulInteger`.
    pub matmuls: usize,
    /// `Gemm` nodes turned into `MatMul` (+ `Add`) first.
    pub gemms: usize,
    /// Float weight bytes replaced.
    pub float_bytes: u64,
    /// The int8 bytes that replaced them.
    pub int8_bytes: u64,
    /// Each quantized weight by its float name: whether its int8 copy is
    /// transposed (a `Gemm` with `transB = 1`). LoRA-merged weights for these
    /// names are quantized the same way (`quantize_overrides`).
    pub weights: HashMap<String, bool>,
}

/// The int8 name of quantized weight `w`, and its scale's and zero point's.
pub fn quantized_names(w: &str) -> (String, String, String) {
    (format!("{w}_quantized"), format!("{w}_scale"), format!("{w}_zero_point"))
}

/// `values` as int8 with one symmetric scale, as ONNX Runtime's quantizer
/// computes them (`compute_scale_zp` with `symmetric`, `quantize_nparray`).
pub fn quantize_tensor(values: &[f32]) -> (Vec<i8>, f32) {
    let (mut lo, mut hi) = (0f32, 0f32);
    for &v in values {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    let absmax = lo.abs().max(hi.abs());
    // The reduced symmetric range: qmin -64, qmax 64 (`get_qmin_qmax_for_qType`
    // with `reduce_range`); see the module docs for why.
    let scale64 = (absmax as f64 - (-absmax) as f64) / 128.0;
    // Below float32's smallest normal the quantizer gives up on a range and
    // uses scale 1 (an all-zero weight).
    let scale = if scale64 < f32::MIN_POSITIVE as f64 { 1.0 } else { scale64 as f32 };
    let q = values.iter().map(|&v| (v / scale).round_ties_even().clamp(-128.0, 127.0) as i8).collect();
    (q, scale)
}

/// The model with its `MatMul`/`Gemm` weights as int8; `dir` is the model
/// file's folder, where its external-data files are.
pub fn quantize_int8(model_bytes: &[u8], dir: &Path) -> Result<(Vec<u8>, QuantizeReport)> {
    let model = Message::parse(model_bytes)?;
    let mut report = QuantizeReport::default();
    let quantized = graph(onnx_proto::only_graph(&model)?, dir, &mut report)?;
    Ok((onnx_proto::with_graph(&model, &quantized), report))
}

/// An initializer as parsed, with its shape and element type.
struct Initializer<'a> {
    tensor: Message<'a>,
    dims: Vec<i64>,
    data_type: u64,
}

/// GraphProto: node 1, initializer 5.
fn graph(bytes: &[u8], dir: &Path, report: &mut QuantizeReport) -> Result<Message<'static>> {
    let g = Message::parse(bytes)?;
    let mut initializers: HashMap<String, Initializer<'_>> = HashMap::new();
    for b in g.bytes_of(5) {
        let tensor = Message::parse(b)?;
        let name = tensor.string(8).unwrap_or_default().to_string();
        let dims = tensor.ints(1)?;
        let data_type = tensor.ints(2)?.first().copied().unwrap_or(0) as u64;
        initializers.insert(name, Initializer { tensor, dims, data_type });
    }
    let nodes: Vec<Message<'_>> = g.bytes_of(1).map(Message::parse).collect::<Result<_>>()?;
    let float_b = |n: &Message<'_>| {
        let inputs = n.strings(1);
        inputs.get(1).and_then(|b| initializers.get(b)).is_some_and(|i| i.data_type == FLOAT)
    };
    let float16_b = |n: &Message<'_>| n.strings(1).get(1).and_then(|b| initializers.get(b)).is_some_and(|i| i.data_type == FLOAT16);
    if nodes.iter().any(|n| matches!(n.string(4), Some("MatMul" | "Gemm")) && float16_b(n)) {
        return Err(Error::unsupported("int8 quantization needs a float32 graph; this one keeps its matrix weights in float16"));
    }

    // 1. Gemm → MatMul (+ Add), as the quantizer's `replace_gemm_with_matmul`.
    let mut matmuls: Vec<(Message<'static>, bool)> = Vec::with_capacity(nodes.len());
    for n in &nodes {
        if n.string(4) == Some("Gemm") && float_b(n) {
            if let Some(split) = gemm_as_matmul(n)? {
                report.gemms += 1;
                matmuls.extend(split);
                continue;
            }
        }
        matmuls.push((to_static(n), false));
    }

    // Inputs still read as float by nodes left as they are (a weight used
    // elsewhere keeps its float copy too).
    let is_target = |n: &Message<'_>| n.string(4) == Some("MatMul") && float_b(n);
    let mut still_read: HashSet<String> = HashSet::new();
    for (n, _) in &matmuls {
        let inputs = n.strings(1);
        let skip = if is_target(n) { 1 } else { usize::MAX };
        for (k, i) in inputs.into_iter().enumerate() {
            if k != skip {
                still_read.insert(i);
            }
        }
        for a in n.bytes_of(5) {
            // Subgraphs read outer names; keep every initializer they could use.
            if Message::parse(a)?.fields.iter().any(|(f, _)| matches!(f, 6 | 11)) {
                still_read.extend(initializers.keys().cloned());
            }
        }
    }
    for b in g.bytes_of(12) {
        still_read.extend(Message::parse(b)?.string(1).map(str::to_string));
    }

    // 2. MatMul with a float32 initializer B → DynamicQuantizeLinear(A) +
    // MatMulInteger + Cast + Mul, as the quantizer's `MatMulInteger` operator.
    let mut new_nodes: Vec<Message<'static>> = Vec::with_capacity(matmuls.len() + 4 * report.gemms);
    let mut quantized_activations: HashSet<String> = HashSet::new();
    let mut new_initializers: Vec<Message<'static>> = Vec::new();
    for (n, transposed) in matmuls {
        if !is_target(&n) {
            new_nodes.push(n);
            continue;
        }
        let inputs = n.strings(1);
        let output = n.strings(2).into_iter().next().ok_or_else(|| Error::model("a MatMul node has no output"))?;
        let name = n.string(3).unwrap_or_default().to_string();
        let (a, w) = (&inputs[0], &inputs[1]);
        let (aq, a_scale, a_zp) = quantized_names(a);
        if quantized_activations.insert(a.clone()) {
            new_nodes.push(node("DynamicQuantizeLinear", &format!("{a}_QuantizeLinear"), &[a], &[&aq, &a_scale, &a_zp], &[]));
        }
        let (wq, w_scale, w_zp) = quantized_names(w);
        if !report.weights.contains_key(w) {
            let init = &initializers[w];
            let values = float_values(&init.tensor, w, &init.dims, dir)?;
            let (values, dims) = if transposed { transpose(&values, &init.dims)? } else { (values, init.dims.clone()) };
            let (q, scale) = quantize_tensor(&values);
            report.float_bytes += 4 * values.len() as u64;
            report.int8_bytes += q.len() as u64;
            new_initializers.push(tensor(&w_scale, FLOAT, &[], scale.to_le_bytes().to_vec()));
            new_initializers.push(tensor(&w_zp, INT8, &[], vec![0]));
            new_initializers.push(tensor(&wq, INT8, &dims, q.into_iter().map(|v| v as u8).collect()));
            report.weights.insert(w.clone(), transposed);
        }
        let mi_name = if name.is_empty() { String::new() } else { format!("{name}_quant") };
        let mi_out = format!("{output}_output_quantized");
        new_nodes.push(node("MatMulInteger", &mi_name, &[&aq, &wq, &a_zp, &w_zp], &[&mi_out], &[]));
        let cast_out = format!("{mi_out}_cast_output");
        new_nodes.push(node("Cast", &format!("{mi_out}_cast"), &[&mi_out], &[&cast_out], &[super::onnx_proto::int_attribute("to", FLOAT as i64)]));
        let scales_mul = if mi_name.is_empty() { format!("{a_scale}_{w_scale}_mul") } else { format!("{mi_name}_scales_mul") };
        let scales_out = format!("{scales_mul}:0");
        new_nodes.push(node("Mul", &scales_mul, &[&a_scale, &w_scale], &[&scales_out], &[]));
        let out_mul = if mi_name.is_empty() { String::new() } else { format!("{mi_name}_output_scale_mul") };
        new_nodes.push(node("Mul", &out_mul, &[&cast_out, &scales_out], &[&output], &[]));
        report.matmuls += 1;
    }
    // Every name the rewrite gives a new tensor must be new to the graph: one
    // that a node already reads (even one nothing produced) would silently
    // become the new tensor.
    let mut original: HashSet<String> = initializers.keys().cloned().collect();
    let mut original_outputs: HashSet<String> = HashSet::new();
    for n in &nodes {
        original.extend(n.strings(1));
        original_outputs.extend(n.strings(2));
    }
    original.extend(original_outputs.iter().cloned());
    for field in [11, 12] {
        for b in g.bytes_of(field) {
            original.extend(Message::parse(b)?.string(1).map(str::to_string));
        }
    }
    let generated = new_initializers
        .iter()
        .filter_map(|t| t.string(8).map(str::to_string))
        .chain(new_nodes.iter().flat_map(|n| n.strings(2)).filter(|o| !original_outputs.contains(o)));
    for name in generated {
        if original.contains(&name) {
            return Err(Error::model(format!("the graph already has a tensor named `{name}`, a name Kiln's int8 rewrite gives a new tensor")));
        }
    }

    // Float weights nothing reads any more: dropped from the initializers,
    // and from the graph inputs where old exporters list weights too (they
    // would become required inputs).
    let removed: HashSet<&str> = report.weights.keys().map(String::as_str).filter(|w| !still_read.contains(*w)).collect();
    let mut out = Message::default();
    let mut nodes_written = false;
    for (number, value) in &g.fields {
        match (number, value) {
            (1, _) => {
                if !nodes_written {
                    for n in &new_nodes {
                        out.push_message(1, n);
                    }
                    nodes_written = true;
                }
            }
            // TensorProto.name = 8, ValueInfoProto.name = 1 (an input that
            // does not parse is kept for ONNX Runtime to judge).
            (5 | 11, Value::Bytes(b)) => {
                let name_field = if *number == 5 { 8 } else { 1 };
                let keep = match Message::parse(b) {
                    Ok(m) => !m.string(name_field).is_some_and(|n| removed.contains(n)),
                    Err(e) if *number == 5 => return Err(e),
                    Err(_) => true,
                };
                if keep {
                    out.fields.push((*number, owned(value)));
                }
            }
            _ => out.fields.push((*number, owned(value))),
        }
    }
    if !nodes_written {
        for n in &new_nodes {
            out.push_message(1, n);
        }
    }
    for t in &new_initializers {
        out.push_message(5, t);
    }
    Ok(out)
}

/// A `Gemm` as `MatMul` (+ `Add`); `None` when its attributes are not the
/// plain product the quantizer converts (alpha, beta 1; transA 0). The bool
/// says whether B is to be transposed.
fn gemm_as_matmul(n: &Message<'_>) -> Result<Option<Vec<(Message<'static>, bool)>>> {
    let (mut alpha, mut beta, mut trans_a, mut trans_b) = (1f32, 1f32, 0i64, 0i64);
    for b in n.bytes_of(5) {
        let a = Message::parse(b)?;
        let f = || a.fields.iter().find_map(|(k, v)| match (k, v) {
            (2, Value::Fixed32(b)) => Some(f32::from_le_bytes(*b)),
            _ => None,
        });
        let i = || a.ints(3).ok().and_then(|v| v.first().copied());
        match a.string(1) {
            Some("alpha") => alpha = f().unwrap_or(1.0),
            Some("beta") => beta = f().unwrap_or(1.0),
            Some("transA") => trans_a = i().unwrap_or(0),
            Some("transB") => trans_b = i().unwrap_or(0),
            _ => {}
        }
    }
    if alpha != 1.0 || beta != 1.0 || trans_a != 0 {
        return Ok(None);
    }
    let inputs = n.strings(1);
    let output = n.strings(2).into_iter().next().ok_or_else(|| Error::model("a Gemm node has no output"))?;
    let name = n.string(3).unwrap_or_default();
    let suffixed = |s: &str| if name.is_empty() { String::new() } else { format!("{name}{s}") };
    let transposed = trans_b == 1;
    if inputs.len() > 2 && !inputs[2].is_empty() {
        let mm_out = format!("{output}_MatMul");
        Ok(Some(vec![
            (node("MatMul", &suffixed("_MatMul"), &[&inputs[0], &inputs[1]], &[&mm_out], &[]), transposed),
            (node("Add", &suffixed("_Add"), &[&mm_out, &inputs[2]], &[&output], &[]), false),
        ]))
    } else {
        Ok(Some(vec![(node("MatMul", &suffixed("_MatMul"), &[&inputs[0], &inputs[1]], &[&output], &[]), transposed)]))
    }
}

/// A float32 tensor's values: `raw_data`, packed `float_data` or an external file.
fn float_values(t: &Message<'_>, name: &str, dims: &[i64], dir: &Path) -> Result<Vec<f32>> {
    let count = dims.iter().try_fold(1usize, |n, &d| usize::try_from(d).ok().and_then(|d| n.checked_mul(d)));
    let size = count.and_then(|c| c.checked_mul(4));
    let (count, size) = count.zip(size).ok_or_else(|| Error::model(format!("initializer `{name}` has dimensions {dims:?}")))?;
    let external = t.fields.iter().any(|(n, v)| *n == 14 && *v == Value::Varint(1));
    let bytes: Cow<'_, [u8]> = if external {
        Cow::Owned(external_bytes(t, name, size as u64, dir)?)
    } else if let Some(raw) = t.bytes_of(9).next() {
        Cow::Borrowed(raw)
    } else {
        // float_data (4): packed fixed32, or one Fixed32 per value. Not
        // reserved from `dims`: a damaged file can claim any size.
        let mut v = Vec::new();
        for (n, value) in &t.fields {
            match (n, value) {
                (4, Value::Bytes(b)) => v.extend_from_slice(b),
                (4, Value::Fixed32(b)) => v.extend_from_slice(b),
                _ => {}
            }
        }
        Cow::Owned(v)
    };
    if bytes.len() != size {
        return Err(Error::model(format!("initializer `{name}` holds {} bytes for {count} float32 values", bytes.len())));
    }
    Ok(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// An external initializer's bytes, from the file its `location` names
/// beside the model (never outside that folder).
fn external_bytes(t: &Message<'_>, name: &str, expected: u64, dir: &Path) -> Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut location = None;
    let (mut offset, mut length) = (0u64, None);
    for b in t.bytes_of(13) {
        let entry = Message::parse(b)?;
        let value = entry.string(2).unwrap_or_default();
        let number = || value.parse::<u64>().map_err(|_| Error::model(format!("initializer `{name}`: external_data {value:?} is not a number")));
        match entry.string(1) {
            Some("location") => location = Some(value.to_string()),
            Some("offset") => offset = number()?,
            Some("length") => length = Some(number()?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| Error::model(format!("initializer `{name}` is external but names no file")))?;
    let rel = Path::new(&location);
    if rel.is_absolute() || rel.components().any(|c| !matches!(c, std::path::Component::Normal(_))) {
        return Err(Error::model(format!("initializer `{name}`: external data location {location:?} is outside the model's folder")));
    }
    let path = dir.join(rel);
    let len = length.unwrap_or(expected);
    if len != expected {
        return Err(Error::model(format!("initializer `{name}`: {len} external bytes for a float32 tensor of {expected}")));
    }
    let mut file = std::fs::File::open(&path)
        .map_err(|e| Error::new(crate::error::ErrorKind::ModelNotFound, format!("initializer `{name}`: cannot open {}: {e}", path.display())))?;
    // The file must hold the bytes before they are allocated: a damaged
    // graph can claim any size.
    let file_len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if offset.checked_add(len).is_none_or(|end| end > file_len) {
        return Err(Error::model(format!(
            "initializer `{name}`: {} is {file_len} bytes, but the tensor is stored at bytes {offset}..+{len} of it (truncated, or not this graph's)",
            path.display()
        )));
    }
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(offset))
        .and_then(|_| file.read_exact(&mut buf))
        .map_err(|e| Error::model(format!("initializer `{name}`: cannot read {len} bytes at {offset} of {}: {e}", path.display())))?;
    Ok(buf)
}

fn transpose(values: &[f32], dims: &[i64]) -> Result<(Vec<f32>, Vec<i64>)> {
    let [rows, cols] = dims else {
        return Err(Error::model(format!("a Gemm weight with transB has dimensions {dims:?}, not two")));
    };
    let (r, c) = (*rows as usize, *cols as usize);
    let mut t = vec![0f32; values.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = values[i * c + j];
        }
    }
    Ok((t, vec![*cols, *rows]))
}

/// A tensor with raw data.
fn tensor(name: &str, data_type: u64, dims: &[i64], raw: Vec<u8>) -> Message<'static> {
    let mut t = Message::default();
    for &d in dims {
        t.push_varint(1, d as u64);
    }
    t.push_varint(2, data_type);
    t.push_string(8, name);
    t.fields.push((9, Value::Bytes(Cow::Owned(raw))));
    t
}

/// LoRA-merged float weights for a quantized graph: each override of a weight
/// the rewrite quantized becomes its int8 copy and scale, computed as the
/// rewrite computes them; other overrides (convolutions, biases) pass as they are.
pub(crate) fn quantize_overrides(
    report: &QuantizeReport,
    overrides: &crate::model::lora::Overrides,
) -> Result<crate::model::lora::Overrides> {
    use ort::value::Tensor;
    if overrides.is_empty() || report.weights.is_empty() {
        return Ok(std::sync::Arc::clone(overrides));
    }
    let mut out = Vec::with_capacity(overrides.len() + 4);
    for (name, value) in overrides.iter() {
        let Some(&transposed) = report.weights.get(name) else {
            out.push((name.clone(), std::sync::Arc::clone(value)));
            continue;
        };
        let (shape, data) = value
            .try_extract_tensor::<f32>()
            .map_err(|e| Error::internal(format!("merged weight `{name}` is not float32: {e}")))?;
        let dims: Vec<i64> = shape.iter().copied().collect();
        let (values, dims) = if transposed { transpose(data, &dims)? } else { (data.to_vec(), dims) };
        let (q, scale) = quantize_tensor(&values);
        let (wq, w_scale, _) = quantized_names(name);
        let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let q = Tensor::from_array((shape, q)).map_err(|e| Error::internal(format!("int8 weight `{wq}`: {e}")))?;
        let s = Tensor::from_array((Vec::<usize>::new(), vec![scale])).map_err(|e| Error::internal(format!("scale `{w_scale}`: {e}")))?;
        out.push((wq, std::sync::Arc::new(q.into_dyn())));
        out.push((w_scale, std::sync::Arc::new(s.into_dyn())));
    }
    Ok(std::sync::Arc::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_is_twice_the_largest_magnitude_over_128_and_ties_round_to_even() {
        let (q, scale) = quantize_tensor(&[0.5, -1.28, 0.01, 0.03, 1.0]);
        assert_eq!(scale, ((1.28f32 as f64 * 2.0) / 128.0) as f32);
        assert_eq!(q[1], -64);
        assert_eq!(q[0], (0.5f32 / scale).round_ties_even() as i8);
        // 0.01 / 0.02 = 0.5 and 0.03 / 0.02 = 1.5 (in float32 just under or
        // over, as numpy divides), each rounded half to even.
        assert_eq!(q[2], (0.01f32 / scale).round_ties_even() as i8);
        assert_eq!(q[3], (0.03f32 / scale).round_ties_even() as i8);
    }

    #[test]
    fn an_all_zero_weight_gets_scale_one() {
        assert_eq!(quantize_tensor(&[0.0, 0.0]), (vec![0, 0], 1.0));
    }

    #[test]
    fn a_positive_only_weight_is_still_symmetric() {
        let (q, scale) = quantize_tensor(&[2.0, 1.0]);
        assert_eq!(q, vec![64, 32]);
        assert_eq!(scale, (4.0f64 / 128.0) as f32);
    }

    fn fnv1a64(bytes: &[u8]) -> String {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
        }
        format!("{h:016x}")
    }

    /// The graphs Kiln writes for the fixtures' text encoders and U-Nets are
    /// the graphs ONNX Runtime's `quantize_dynamic` wrote
    /// (tools/make_quantize_golden.py, `weights.json`): the same nodes (op
    /// type, name, inputs, outputs, attribute bytes; the quantizer reorders
    /// them, so as a sorted list) and every int8 weight and scale byte for
    /// byte. Being the same graph, it computes the same numbers on any CPU.
    #[test]
    fn int8_weights_are_onnx_runtime_quantizers_bytes() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("golden/quantize/weights.json")).unwrap()).unwrap();
        let golden = golden.as_object().unwrap();
        assert_eq!(golden.len(), 5, "tiny-sd's two graphs and tiny-sdxl's three");
        for (graph_name, want) in golden {
            let path = root.join(graph_name).join("model.onnx");
            let (bytes, report) = quantize_int8(&std::fs::read(&path).unwrap(), path.parent().unwrap()).unwrap();
            let model = Message::parse(&bytes).unwrap();
            let g = Message::parse(model.bytes_of(7).next().unwrap()).unwrap();
            let nodes: Vec<Message<'_>> = g.bytes_of(1).map(|b| Message::parse(b).unwrap()).collect();
            let count = nodes.iter().filter(|n| n.string(4) == Some("MatMulInteger")).count();
            let mut keys: Vec<String> = nodes
                .iter()
                .map(|n| {
                    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
                    let attributes: Vec<String> = n.bytes_of(5).map(hex).collect();
                    [n.string(4).unwrap_or(""), n.string(3).unwrap_or(""), &n.strings(1).join(","), &n.strings(2).join(","), &attributes.join(",")].join("|")
                })
                .collect();
            keys.sort();
            assert_eq!(keys.len() as u64, want["nodes"].as_u64().unwrap(), "{graph_name}: node count");
            assert_eq!(fnv1a64(keys.join("\n").as_bytes()), want["nodes_fnv1a64"].as_str().unwrap(), "{graph_name}: the nodes");
            assert_eq!(count as u64, want["matmul_integer"].as_u64().unwrap(), "{graph_name}: MatMulInteger nodes");
            assert_eq!(report.matmuls, count);
            let want = want["initializers"].as_object().unwrap();
            let mut seen = 0;
            for b in g.bytes_of(5) {
                let t = Message::parse(b).unwrap();
                let name = t.string(8).unwrap();
                let Some(w) = want.get(name) else {
                    assert!(!name.ends_with("_quantized"), "{graph_name}: `{name}` is not in the reference");
                    continue;
                };
                let raw = t.bytes_of(9).next().unwrap();
                if let Some(hash) = w.get("fnv1a64") {
                    let dims: Vec<i64> = t.ints(1).unwrap();
                    let want_dims: Vec<i64> = w["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
                    assert_eq!(dims, want_dims, "{graph_name}: `{name}` shape");
                    assert_eq!(fnv1a64(raw), hash.as_str().unwrap(), "{graph_name}: `{name}` int8 bytes");
                } else {
                    let bits: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                    assert_eq!(bits, w["f32_bits"].as_str().unwrap(), "{graph_name}: `{name}` scale");
                }
                seen += 1;
            }
            assert_eq!(seen, want.len(), "{graph_name}: every reference weight and scale is written");
            eprintln!("{graph_name}: {} nodes, {count} MatMulInteger, {seen} int8 weights and scales equal to ONNX Runtime's quantizer's", keys.len());
        }
    }

    /// A model of one `MatMul` of input `x` by initializer `w`.
    fn one_matmul_model(w: &Message<'_>) -> Vec<u8> {
        let mut g = Message::default();
        g.push_message(1, &node("MatMul", "m", &["x", "w"], &["y"], &[]));
        g.push_message(5, w);
        let mut m = Message::default();
        m.push_message(7, &g);
        m.to_bytes()
    }

    #[test]
    fn a_float16_graph_is_refused() {
        let mut w = Message::default();
        w.push_varint(1, 2);
        w.push_varint(1, 2);
        w.push_varint(2, FLOAT16);
        w.push_string(8, "w");
        w.fields.push((9, Value::Bytes(Cow::Owned(vec![0; 8]))));
        let e = quantize_int8(&one_matmul_model(&w), Path::new(".")).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Unsupported, "{}", e.message());
    }

    #[test]
    fn an_external_weight_outside_the_model_folder_is_refused() {
        let mut w = Message::default();
        w.push_varint(1, 1);
        w.push_varint(2, FLOAT);
        w.push_string(8, "w");
        let mut entry = Message::default();
        entry.push_string(1, "location");
        entry.push_string(2, "../secret.bin");
        w.push_message(13, &entry);
        w.push_varint(14, 1);
        let e = quantize_int8(&one_matmul_model(&w), Path::new(".")).unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::ModelInvalid);
        assert!(e.message().contains("outside the model's folder"), "{}", e.message());
    }

    #[test]
    fn transposing_swaps_rows_and_columns() {
        let (t, dims) = transpose(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
        assert_eq!(dims, vec![3, 2]);
        assert_eq!(t, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }
}
