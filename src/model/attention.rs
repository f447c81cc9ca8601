//! Attention as one fused node, written into the graph at load time.
//!
//! PyTorch exports `scaled_dot_product_attention` (what diffusers' attention
//! runs) as plain ONNX: the query and key split into heads, both scaled by
//! `sqrt(1/sqrt(head_dim))`, `MatMul`, `Softmax`, `MatMul` by the value
//! heads, heads merged. ONNX Runtime runs that literally, so every attention
//! layer materialises its whole `batch × heads × tokens × tokens` score
//! matrix: at 512² an SD 1.5 U-Net's first level has 4,096 tokens, and one
//! call held 4.5 GB of working memory on top of its weights (measured).
//!
//! ONNX Runtime has a kernel for the whole thing, `com.microsoft`'s
//! `MultiHeadAttention`, which on the CPU (and CUDA) works through the
//! scores in blocks without holding them. Kiln replaces each exported
//! attention by that node when the pattern is exactly the one above (and
//! its scale is the default `1/sqrt(head_dim)`, or constants); anything else
//! stays as exported. The nodes only the old pattern read (the head split,
//! the scale's shape arithmetic) are dropped.
//!
//! The numbers differ from the exported graph's only by summation order
//! (about 1e-6 relative on a U-Net call, checked in `tests/attention.rs`).
//! Kiln fuses the U-Net's and ControlNets' attention, not the VAE's: its one
//! block has a single 512-wide head, and fused it peaked higher (an SD 1.5
//! decoder at 1024²: 4.6 GB against 3.8 GB, measured in Python).
use std::collections::{HashMap, HashSet};

use super::onnx_proto::{int_attribute, to_static, Message, Value};
use crate::error::Result;

/// Whether attention runs as exported or fused. Values match
/// `kiln_attention` in the C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum Attention {
    /// Fused when the graphs run on the CPU provider (no GPU provider asked
    /// for is usable in this build and ONNX Runtime); as exported on a GPU
    /// provider, where the fused node's speed and numbers are not measured yet.
    #[default]
    Auto = 0,
    /// As exported.
    Exported = 1,
    /// Fused whatever the providers (one without the node leaves it to the CPU).
    Fused = 2,
}

impl Attention {
    /// From the C value.
    pub fn from_u32(v: u32) -> Option<Self> {
        [Self::Auto, Self::Exported, Self::Fused].get(v as usize).copied()
    }

    /// From the name the CLI and the bindings use: `auto`, `exported` or `fused`.
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Auto, Self::Exported, Self::Fused].into_iter().find(|a| a.name() == name)
    }

    /// The name [`Attention::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Exported => "exported",
            Self::Fused => "fused",
        }
    }

    /// Whether graphs are fused, given whether they run on the CPU provider only.
    pub(crate) fn fuses(self, cpu_only: bool) -> bool {
        match self {
            Self::Exported => false,
            Self::Fused => true,
            Self::Auto => cpu_only,
        }
    }
}

/// What [`fuse`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FuseReport {
    /// Attention layers now one `MultiHeadAttention` node.
    pub fused: usize,
    /// `Softmax` nodes in the graph before (every attention has one).
    pub softmaxes: usize,
}

/// `model` with every recognised attention fused; `None` when there is none.
pub fn fuse(model: &[u8]) -> Result<(Option<Vec<u8>>, FuseReport)> {
    let model_msg = Message::parse(model)?;
    let graph_bytes = super::onnx_proto::only_graph(&model_msg)?;
    let graph = Message::parse(graph_bytes)?;
    let nodes: Vec<Message<'_>> = graph.bytes_of(1).map(Message::parse).collect::<Result<_>>()?;
    let op = |n: &Message<'_>| n.string(4).unwrap_or("").to_string();
    let mut report = FuseReport { softmaxes: nodes.iter().filter(|n| op(n) == "Softmax" && is_default_domain(n)).count(), ..Default::default() };
    // Sub-graphs may read any tensor by name: leave such graphs alone.
    if nodes.iter().any(|n| matches!(op(n).as_str(), "If" | "Loop" | "Scan")) {
        return Ok((None, report));
    }
    let index = Index::new(&graph, &nodes)?;

    // The fused node replaces the head merge (the last node of the pattern).
    let mut replacement: HashMap<usize, Message<'static>> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        if op(n) == "Softmax" && is_default_domain(n) {
            if let Some((at, fused)) = index.match_attention(i)? {
                replacement.insert(at, fused);
            }
        }
    }
    report.fused = replacement.len();
    if replacement.is_empty() {
        return Ok((None, report));
    }

    // The new node list, then every node nothing reads any more dropped.
    let mut kept: Vec<Message<'_>> = nodes.iter().enumerate().map(|(i, n)| replacement.remove(&i).unwrap_or_else(|| n.clone())).collect();
    let graph_outputs: HashSet<String> = graph.bytes_of(12).map(Message::parse).collect::<Result<Vec<_>>>()?.iter().filter_map(|o| o.string(1).map(str::to_string)).collect();
    loop {
        let read: HashSet<String> = kept.iter().flat_map(|n| n.strings(1)).chain(graph_outputs.iter().cloned()).collect();
        let before = kept.len();
        kept.retain(|n| n.strings(2).iter().any(|o| read.contains(o)));
        if kept.len() == before {
            break;
        }
    }
    let produced: HashSet<String> = kept.iter().flat_map(|n| n.strings(2)).collect();

    let mut new_graph = Message::default();
    let mut nodes_written = false;
    for (number, value) in &graph.fields {
        match (number, value) {
            (1, _) => {
                if !nodes_written {
                    for n in &kept {
                        new_graph.push_message(1, n);
                    }
                    nodes_written = true;
                }
            }
            // Shape facts about tensors that no longer exist would only confuse.
            (13, Value::Bytes(b)) => {
                let info = Message::parse(b)?;
                if info.string(1).is_some_and(|name| produced.contains(name)) {
                    new_graph.fields.push((*number, value.clone()));
                }
            }
            _ => new_graph.fields.push((*number, value.clone())),
        }
    }
    let mut new_model = Message::default();
    let mut has_ms_domain = false;
    for (number, value) in &model_msg.fields {
        if *number == 7 {
            new_model.push_message(7, &new_graph);
            continue;
        }
        if let (8, Value::Bytes(b)) = (number, value) {
            has_ms_domain |= Message::parse(b)?.string(1) == Some(MS_DOMAIN);
        }
        new_model.fields.push((*number, value.clone()));
    }
    if !has_ms_domain {
        let mut opset = Message::default();
        opset.push_string(1, MS_DOMAIN);
        opset.push_varint(2, 1);
        new_model.push_message(8, &opset);
    }
    Ok((Some(new_model.to_bytes()), report))
}

const MS_DOMAIN: &str = "com.microsoft";

fn is_default_domain(n: &Message<'_>) -> bool {
    matches!(n.string(7), None | Some("") | Some("ai.onnx"))
}

/// Who makes and who reads each tensor, and the small constants.
struct Index<'g, 'a> {
    nodes: &'g [Message<'a>],
    producer: HashMap<String, usize>,
    readers: HashMap<String, Vec<usize>>,
    initializers: HashMap<String, Message<'static>>,
}

impl<'g, 'a> Index<'g, 'a> {
    fn new(graph: &Message<'a>, nodes: &'g [Message<'a>]) -> Result<Self> {
        let mut producer = HashMap::new();
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for o in n.strings(2) {
                producer.insert(o, i);
            }
            for input in n.strings(1) {
                readers.entry(input).or_default().push(i);
            }
        }
        let mut initializers = HashMap::new();
        for (number, value) in &graph.fields {
            if let (5, Value::Bytes(b)) = (number, value) {
                // Only small tensors can be the constants looked for; big ones stay unparsed.
                if b.len() <= 256 {
                    let t = Message::parse(b)?;
                    if let Some(name) = t.string(8) {
                        initializers.insert(name.to_string(), to_static(&t));
                    }
                }
            }
        }
        Ok(Self { nodes, producer, readers, initializers })
    }

    fn op(&self, i: usize) -> &str {
        self.nodes[i].string(4).unwrap_or("")
    }

    /// The node making `tensor` if it is a default-domain `op`.
    fn made_by(&self, tensor: &str, op: &str) -> Option<usize> {
        let &i = self.producer.get(tensor)?;
        (self.op(i) == op && is_default_domain(&self.nodes[i])).then_some(i)
    }

    /// The one node reading `tensor`, if it is the only reader, a
    /// default-domain `op`, and `tensor` is not a graph output (checked by
    /// the caller through the dead-node pass: a graph output keeps its maker).
    fn only_reader(&self, tensor: &str, op: &str) -> Option<usize> {
        match self.readers.get(tensor).map(Vec::as_slice) {
            Some(&[i]) if self.op(i) == op && is_default_domain(&self.nodes[i]) => Some(i),
            _ => None,
        }
    }

    fn input(&self, i: usize, k: usize) -> Option<String> {
        self.nodes[i].strings(1).into_iter().nth(k)
    }

    fn output(&self, i: usize) -> Option<String> {
        self.nodes[i].strings(2).into_iter().next()
    }

    fn perm(&self, i: usize) -> Result<Option<Vec<i64>>> {
        super::onnx_proto::attribute_ints(&self.nodes[i], "perm")
    }

    /// A `Transpose` with `perm` making `tensor`.
    fn transpose(&self, tensor: &str, perm: &[i64]) -> Result<Option<usize>> {
        Ok(match self.made_by(tensor, "Transpose") {
            Some(t) if self.perm(t)?.as_deref() == Some(perm) => Some(t),
            _ => None,
        })
    }

    /// The values of a small constant tensor (a `Constant` node or an
    /// initializer), as f64.
    fn constant(&self, tensor: &str) -> Result<Option<Vec<f64>>> {
        if let Some(t) = self.initializers.get(tensor) {
            return small_tensor_values(t);
        }
        let Some(i) = self.made_by(tensor, "Constant") else { return Ok(None) };
        for b in self.nodes[i].bytes_of(5) {
            let attr = Message::parse(b)?;
            match attr.string(1) {
                Some("value") => {
                    let Some(t) = attr.bytes_of(5).next() else { return Ok(None) };
                    return small_tensor_values(&Message::parse(t)?);
                }
                Some("value_int" | "value_ints") => return Ok(Some(attr.ints(3)?.into_iter().chain(attr.ints(8)?).map(|v| v as f64).collect())),
                Some("value_float") => return Ok(fixed32(&attr, 2).map(|f| vec![f as f64])),
                _ => {}
            }
        }
        Ok(None)
    }

    /// `tensor` with any `Cast` nodes before it looked through.
    fn through_casts(&self, tensor: &str) -> String {
        let mut t = tensor.to_string();
        while let Some(c) = self.made_by(&t, "Cast") {
            match self.input(c, 0) {
                Some(i) => t = i,
                None => break,
            }
        }
        t
    }

    /// The heads a `Reshape` of `[B, S, C]` to `[B, -1, H, D]` splits into.
    fn heads_of_reshape(&self, reshape: usize) -> Result<Option<i64>> {
        let Some(shape) = self.input(reshape, 1) else { return Ok(None) };
        if let Some(v) = self.constant(&shape)? {
            // A constant shape: [B, S, H, D] with H known.
            return Ok((v.len() == 4 && v[2] > 0.0).then(|| v[2] as i64));
        }
        let Some(concat) = self.made_by(&shape, "Concat") else { return Ok(None) };
        let parts = self.nodes[concat].strings(1);
        if parts.len() != 4 {
            return Ok(None);
        }
        let one = |k: usize| -> Result<Option<f64>> { Ok(self.constant(&parts[k])?.filter(|v| v.len() == 1).map(|v| v[0])) };
        Ok(match (one(1)?, one(2)?) {
            (Some(s), Some(h)) if s == -1.0 && h >= 1.0 => Some(h as i64),
            _ => None,
        })
    }

    /// Whether `scale` (a Mul's second input) is `sqrt(1/sqrt(D))` computed
    /// from the last dimension of one of `heads` (the split query or key,
    /// `[B, H, S, D]` or `[B, S, H, D]`), as the PyTorch exporter writes
    /// SDPA's default scale; `Some` with the `1/sqrt(D)` tensor's name if so.
    fn default_scale(&self, scale: &str, heads: &[String]) -> Result<Option<String>> {
        let Some(sqrt) = self.made_by(scale, "Sqrt") else { return Ok(None) };
        let Some(inv) = self.input(sqrt, 0) else { return Ok(None) };
        let Some(div) = self.made_by(&self.through_casts(&inv), "Div") else { return Ok(None) };
        let (Some(num), Some(den)) = (self.input(div, 0), self.input(div, 1)) else { return Ok(None) };
        if self.constant(&num)?.as_deref() != Some(&[1.0]) {
            return Ok(None);
        }
        let Some(root) = self.made_by(&self.through_casts(&den), "Sqrt") else { return Ok(None) };
        let Some(dim) = self.input(root, 0) else { return Ok(None) };
        let Some(slice) = self.made_by(&self.through_casts(&dim), "Slice") else { return Ok(None) };
        let inputs = self.nodes[slice].strings(1);
        let Some(shape) = inputs.first().and_then(|s| self.made_by(s, "Shape")) else { return Ok(None) };
        // The last dimension: starts = [-1], no axes or steps other than the defaults.
        if inputs.len() < 3 || self.constant(&inputs[1])?.as_deref() != Some(&[-1.0]) {
            return Ok(None);
        }
        if inputs.len() > 3 && self.constant(&inputs[3])?.is_none_or(|a| a != [-1.0] && a != [3.0]) {
            return Ok(None);
        }
        if inputs.len() > 4 && self.constant(&inputs[4])?.as_deref() != Some(&[1.0]) {
            return Ok(None);
        }
        let of = self.input(shape, 0).unwrap_or_default();
        Ok(heads.contains(&of).then_some(inv))
    }

    /// The attention around `softmax`, if it is the exported SDPA pattern:
    /// the index of its head-merging `Reshape` and the fused node for it.
    fn match_attention(&self, softmax: usize) -> Result<Option<(usize, Message<'static>)>> {
        // The last axis, said outright (the default changed in opset 13).
        if !matches!(softmax_axis(&self.nodes[softmax])?, Some(-1 | 3)) {
            return Ok(None);
        }
        macro_rules! want {
            ($e:expr) => {
                match $e {
                    Some(v) => v,
                    None => return Ok(None),
                }
            };
        }
        let scores = want!(self.input(softmax, 0));
        let probs = want!(self.output(softmax));
        let qk = want!(self.made_by(&scores, "MatMul"));
        let pv = want!(self.only_reader(&probs, "MatMul"));
        if self.input(pv, 0).as_deref() != Some(probs.as_str()) {
            return Ok(None);
        }
        // Query: Reshape → Transpose(0,2,1,3) → Mul(scale); key: → Transpose(0,2,3,1) → Mul(scale).
        let mul_q = want!(self.made_by(&want!(self.input(qk, 0)), "Mul"));
        let mul_k = want!(self.made_by(&want!(self.input(qk, 1)), "Mul"));
        let t_q = want!(self.transpose(&want!(self.input(mul_q, 0)), &[0, 2, 1, 3])?);
        let t_k = want!(self.transpose(&want!(self.input(mul_k, 0)), &[0, 2, 3, 1])?);
        let r_q = want!(self.made_by(&want!(self.input(t_q, 0)), "Reshape"));
        let r_k = want!(self.made_by(&want!(self.input(t_k, 0)), "Reshape"));
        // Value: Reshape → Transpose(0,2,1,3), read by the second MatMul.
        let t_v = want!(self.transpose(&want!(self.input(pv, 1)), &[0, 2, 1, 3])?);
        let r_v = want!(self.made_by(&want!(self.input(t_v, 0)), "Reshape"));
        // Out: Transpose(0,2,1,3) → Reshape to [B, -1, C].
        let t_o = want!(self.only_reader(&want!(self.output(pv)), "Transpose"));
        if self.perm(t_o)?.as_deref() != Some(&[0, 2, 1, 3]) {
            return Ok(None);
        }
        let r_o = want!(self.only_reader(&want!(self.output(t_o)), "Reshape"));
        if !self.merges_heads(r_o)? {
            return Ok(None);
        }
        let heads = want!(self.heads_of_reshape(r_q)?);
        if self.heads_of_reshape(r_k)? != Some(heads) || self.heads_of_reshape(r_v)? != Some(heads) {
            return Ok(None);
        }
        // The scale: the exporter's default from the query's head size, or constants.
        let (scale_q, scale_k) = (want!(self.input(mul_q, 1)), want!(self.input(mul_k, 1)));
        let scale = match (self.constant(&scale_q)?, self.constant(&scale_k)?) {
            (Some(a), Some(b)) if a.len() == 1 && b.len() == 1 => Some((a[0] * b[0]) as f32),
            _ => {
                // Both halves of the exporter's default scale, from either split's head size.
                let split = [want!(self.output(t_q)), want!(self.output(r_q)), want!(self.output(t_k)), want!(self.output(r_k))];
                want!(self.default_scale(&scale_q, &split)?);
                want!(self.default_scale(&scale_k, &split)?);
                None
            }
        };
        let (q, k, v) = (want!(self.input(r_q, 0)), want!(self.input(r_k, 0)), want!(self.input(r_v, 0)));
        // The fused node takes `[B, S, C]`: the projections' outputs (a MatMul,
        // or its bias Add), never a tensor that is already split.
        for t in [&q, &k, &v] {
            if self.made_by(t, "MatMul").or_else(|| self.made_by(t, "Add")).is_none() {
                return Ok(None);
            }
        }
        let out = want!(self.output(r_o));
        let softmax_name = self.nodes[softmax].string(3).unwrap_or("attention");
        let name = match softmax_name.rsplit_once('/') {
            Some((prefix, _)) => format!("{prefix}/MultiHeadAttention"),
            None => format!("{softmax_name}/MultiHeadAttention"),
        };
        let mut attributes = vec![int_attribute("num_heads", heads)];
        if let Some(s) = scale {
            attributes.push(float_attribute("scale", s));
        }
        let mut fused = super::onnx_proto::node("MultiHeadAttention", &name, &[&q, &k, &v], &[&out], &attributes);
        fused.push_string(7, MS_DOMAIN);
        Ok(Some((r_o, fused)))
    }

    /// Whether `reshape` makes `[B, -1, C]` (heads merged back).
    fn merges_heads(&self, reshape: usize) -> Result<bool> {
        let Some(shape) = self.input(reshape, 1) else { return Ok(false) };
        if let Some(v) = self.constant(&shape)? {
            return Ok(v.len() == 3);
        }
        let Some(concat) = self.made_by(&shape, "Concat") else { return Ok(false) };
        let parts = self.nodes[concat].strings(1);
        Ok(parts.len() == 3 && self.constant(&parts[1])?.as_deref() == Some(&[-1.0]))
    }
}

/// Softmax's `axis` attribute, when the node has one.
fn softmax_axis(n: &Message<'_>) -> Result<Option<i64>> {
    for b in n.bytes_of(5) {
        let attr = Message::parse(b)?;
        if attr.string(1) == Some("axis") {
            return Ok(attr.ints(3)?.first().copied());
        }
    }
    Ok(None)
}

fn fixed32(m: &Message<'_>, number: u32) -> Option<f32> {
    m.fields.iter().find_map(|(n, v)| match v {
        Value::Fixed32(b) if *n == number => Some(f32::from_le_bytes(*b)),
        _ => None,
    })
}

/// A FLOAT attribute.
fn float_attribute(name: &str, value: f32) -> Message<'static> {
    let mut a = Message::default();
    a.push_string(1, name);
    a.fields.push((2, Value::Fixed32(value.to_le_bytes())));
    a.push_varint(20, 1); // AttributeProto.FLOAT
    a
}

/// The values of a tensor of at most 16 float or integer elements stored in
/// the file (TensorProto: dims 1, data_type 2, float_data 4, int32_data 5,
/// int64_data 7, raw_data 9, double_data 10, data_location 14).
fn small_tensor_values(t: &Message<'_>) -> Result<Option<Vec<f64>>> {
    if t.ints(14)?.first() == Some(&1) {
        return Ok(None);
    }
    // Dimensions from the file: checked, so a damaged one cannot overflow.
    let count = t.ints(1)?.iter().try_fold(1i64, |n, &d| n.checked_mul(d));
    let Some(count) = count.filter(|c| (0..=16).contains(c)) else { return Ok(None) };
    let data_type = t.ints(2)?.first().copied().unwrap_or(0);
    let values: Vec<f64> = if let Some(raw) = t.bytes_of(9).next() {
        match data_type {
            1 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            11 => raw.chunks_exact(8).map(|c| f64::from_le_bytes(c.try_into().unwrap())).collect(),
            6 => raw.chunks_exact(4).map(|c| i32::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            7 => raw.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64).collect(),
            _ => return Ok(None),
        }
    } else {
        match data_type {
            1 => {
                let mut out = Vec::new();
                for (n, v) in &t.fields {
                    match (n, v) {
                        (4, Value::Fixed32(b)) => out.push(f32::from_le_bytes(*b) as f64),
                        (4, Value::Bytes(b)) => out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)),
                        _ => {}
                    }
                }
                out
            }
            6 => t.ints(5)?.into_iter().map(|v| v as i32 as f64).collect(),
            7 => t.ints(7)?.into_iter().map(|v| v as f64).collect(),
            _ => return Ok(None),
        }
    };
    Ok((values.len() as i64 == count).then_some(values))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(rel: &str) -> Vec<u8> {
        std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)).unwrap()
    }

    fn ops(model: &[u8]) -> Vec<String> {
        let m = Message::parse(model).unwrap();
        let g = Message::parse(m.bytes_of(7).next().unwrap()).unwrap();
        g.bytes_of(1).map(|b| Message::parse(b).unwrap().string(4).unwrap_or("").to_string()).collect()
    }

    #[test]
    fn every_unet_attention_is_fused_and_nothing_else() {
        for (rel, expect) in [
            ("tests/fixtures/tiny-sd/unet/model.onnx", 12),
            ("tests/fixtures/tiny-sdxl/unet/model.onnx", 16),
            ("tests/fixtures/controlnet/unet_controlnet/model.onnx", 12),
            ("tests/fixtures/variants/legacy-int64/unet/model.onnx", 8),
            ("tests/fixtures/tiny-sd/vae_decoder/model.onnx", 1),
        ] {
            let before = fixture(rel);
            let (after, report) = fuse(&before).unwrap();
            let after = after.unwrap_or_else(|| panic!("{rel}: nothing fused"));
            assert_eq!(report, FuseReport { fused: expect, softmaxes: expect }, "{rel}");
            let (old, new) = (ops(&before), ops(&after));
            let count = |v: &[String], op: &str| v.iter().filter(|o| *o == op).count();
            assert_eq!(count(&new, "MultiHeadAttention"), expect, "{rel}");
            assert_eq!(count(&new, "Softmax"), 0, "{rel}");
            // Per attention: two MatMuls (scores and values) gone; the projections stay.
            assert_eq!(count(&old, "MatMul") - count(&new, "MatMul"), 2 * expect, "{rel}");
            for keep in ["Conv", "LayerNormalization", "Gemm"] {
                assert_eq!(count(&old, keep), count(&new, keep), "{rel}: {keep}");
            }
            // Fusing again finds nothing left.
            assert_eq!(fuse(&after).unwrap().1.fused, 0, "{rel}");
        }
    }

    #[test]
    fn the_fuzz_seed_is_the_exported_pattern() {
        // tools/make_fuzz_seeds.py: one attention exported by torch.onnx.export
        // (first byte: the fuzz target's axes), so fuzzing starts from a graph
        // the rewrite fuses, with 2 heads and the projections' own names.
        let seed = fixture("fuzz/seeds/onnx/attention-sdpa");
        let (fused, report) = fuse(&seed[1..]).unwrap();
        assert_eq!(report, FuseReport { fused: 1, softmaxes: 1 });
        let fused = fused.unwrap();
        let m = Message::parse(&fused).unwrap();
        let g = Message::parse(m.bytes_of(7).next().unwrap()).unwrap();
        let mha = g.bytes_of(1).map(|b| Message::parse(b).unwrap()).find(|n| n.string(4) == Some("MultiHeadAttention")).unwrap();
        assert_eq!(mha.string(7), Some(MS_DOMAIN));
        let heads = mha.bytes_of(5).map(|b| Message::parse(b).unwrap()).find(|a| a.string(1) == Some("num_heads")).unwrap();
        assert_eq!(heads.ints(3).unwrap(), [2]);
        assert!(m.bytes_of(8).any(|b| Message::parse(b).unwrap().string(1) == Some(MS_DOMAIN)), "opset import added");
    }

    #[test]
    fn a_causal_text_encoder_is_left_alone() {
        // CLIP adds its causal mask before the softmax: not the pattern.
        let te = fixture("tests/fixtures/tiny-sd/text_encoder/model.onnx");
        let (out, report) = fuse(&te).unwrap();
        assert!(out.is_none());
        assert_eq!(report.fused, 0);
        assert!(report.softmaxes > 0);
    }

    #[test]
    fn names_and_values_round_trip() {
        for a in [Attention::Auto, Attention::Exported, Attention::Fused] {
            assert_eq!(Attention::from_name(a.name()), Some(a));
            assert_eq!(Attention::from_u32(a as u32), Some(a));
        }
        assert_eq!(Attention::from_u32(3), None);
        assert!(Attention::Auto.fuses(true));
        assert!(!Attention::Auto.fuses(false));
        assert!(Attention::Fused.fuses(false));
        assert!(!Attention::Exported.fuses(true));
    }
}
