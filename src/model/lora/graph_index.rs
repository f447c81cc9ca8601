//! Which initializer holds which module's weight, read from the graph's structure.
//!
//! Exporters rename weights (`onnx::MatMul_2382`) and transpose Linear weights
//! for MatMul, but keep the module path in node names
//! (`/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul`), and
//! may route a weight through `Identity` nodes when they deduplicate equal
//! tensors. The index follows each MatMul, Gemm and Conv weight input back to
//! its initializer and records how it is laid out, and finds each layer's bias:
//! a Conv's or Gemm's third input, or the `Add` an exporter puts after a
//! MatMul (for LyCORIS full's `diff_b`).
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::model::onnx_proto::{self, InitializerSummary, NodeSummary, TensorData};

/// How a module's weight is stored in its initializer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightLayout {
    /// `[in, out]`: a Linear exported as MatMul (PyTorch's weight transposed).
    InOut,
    /// `[out, in, ...]`: a Gemm with `transB = 1`, or a Conv `[out, in, kh, kw]`.
    OutIn,
}

/// One module's weight initializer.
#[derive(Debug, Clone)]
pub struct WeightSlot {
    /// The initializer's name (what ONNX Runtime overrides).
    pub initializer: String,
    /// Its layout.
    pub layout: WeightLayout,
    /// Its dimensions as stored.
    pub dims: Vec<usize>,
    /// TensorProto data type: 1 = float, 10 = float16, 16 = bfloat16.
    pub data_type: i32,
    /// Where its values are.
    pub data: TensorData,
    /// Module keys (`_` spelling) whose nodes read this initializer.
    pub users: Vec<String>,
}

impl WeightSlot {
    /// (out, in × kernel) of the PyTorch weight this holds.
    pub fn out_in(&self) -> (usize, usize) {
        match self.layout {
            WeightLayout::InOut => (self.dims[1], self.dims[0]),
            WeightLayout::OutIn => (self.dims[0], self.dims[1..].iter().product()),
        }
    }
}

/// The modules of one graph file and their weight initializers.
#[derive(Debug)]
pub struct GraphIndex {
    /// The ONNX file.
    pub file: PathBuf,
    /// Module key (`_` spelling) → weight.
    pub modules: HashMap<String, WeightSlot>,
    /// Module key → its bias `[out]`; `users` are the labels of every node
    /// that reads the initializer (a module key, or another node's name), so
    /// a bias the exporter shared between equal tensors shows more than one.
    pub biases: HashMap<String, WeightSlot>,
    /// The text encoder's token-embedding table `[vocab, dim]`, when this is one.
    pub token_embedding: Option<WeightSlot>,
}

/// `/down_blocks.0/attentions.0/.../to_q/MatMul` → `down_blocks_0_attentions_0_..._to_q`.
/// The legacy diffusers script exports through a wrapper, so its names start
/// with `/unet/`; that scope is dropped.
pub(crate) fn module_key(node_name: &str) -> Option<String> {
    let mut parts: Vec<&str> = node_name.split('/').filter(|p| !p.is_empty()).collect();
    if parts.len() > 2 && matches!(parts[0], "unet" | "text_encoder") {
        parts.remove(0);
    }
    if parts.len() < 2 {
        return None;
    }
    Some(parts[..parts.len() - 1].join(".").replace('.', "_"))
}

/// The initializer `name` is, following Identity aliases (a bounded number).
fn resolve_alias<'a>(inits: &'a HashMap<String, InitializerSummary>, alias: &HashMap<&str, &str>, name: &str) -> Option<&'a InitializerSummary> {
    let mut name = name.to_string();
    for _ in 0..16 {
        if let Some(i) = inits.get(&name) {
            return Some(i);
        }
        name = alias.get(name.as_str())?.to_string();
    }
    None
}

impl GraphIndex {
    /// Reads the structure of `file` (weights stay on disk).
    pub fn read(file: &Path) -> Result<Self> {
        let f = std::fs::File::open(file).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::ModelNotFound } else { ErrorKind::Io };
            Error::new(kind, format!("cannot open {}: {e}", file.display()))
        })?;
        let (nodes, initializers) = onnx_proto::graph_summary(f).map_err(|e| e.context(file.display()))?;
        Ok(Self::build(file, &nodes, initializers))
    }

    pub(crate) fn build(file: &Path, nodes: &[NodeSummary], initializers: Vec<InitializerSummary>) -> Self {
        let inits: HashMap<String, InitializerSummary> = initializers.into_iter().map(|i| (i.name.clone(), i)).collect();
        // Identity outputs that forward an initializer (exporter deduplication).
        let alias: HashMap<&str, &str> = nodes
            .iter()
            .filter(|n| n.op_type == "Identity" && n.inputs.len() == 1 && n.outputs.len() == 1)
            .map(|n| (n.outputs[0].as_str(), n.inputs[0].as_str()))
            .collect();
        let resolve = |name: &str| resolve_alias(&inits, &alias, name);
        let slot = |init: &InitializerSummary, layout: WeightLayout| -> Option<WeightSlot> {
            let dims: Vec<usize> = init.dims.iter().map(|&d| usize::try_from(d).ok()).collect::<Option<_>>()?;
            Some(WeightSlot { initializer: init.name.clone(), layout, dims, data_type: init.data_type, data: init.data.clone(), users: Vec::new() })
        };
        let mut modules: HashMap<String, WeightSlot> = HashMap::new();
        let mut users: HashMap<String, Vec<String>> = HashMap::new();
        let mut token_embedding = None;
        // A MatMul's output → its module key (where an `Add` may add the bias).
        let mut matmul_outputs: HashMap<&str, String> = HashMap::new();
        // Module key → the name of the initializer its node adds as a bias.
        let mut bias_names: Vec<(String, &InitializerSummary)> = Vec::new();
        for n in nodes {
            let layout = match (n.op_type.as_str(), n.trans_b) {
                ("MatMul", _) => WeightLayout::InOut,
                ("Gemm", 0) => WeightLayout::InOut,
                ("Gemm", _) | ("Conv", _) => WeightLayout::OutIn,
                ("Gather", _) if n.name.ends_with("token_embedding/Gather") => {
                    if let Some(s) = n.inputs.first().and_then(|w| resolve(w)).and_then(|i| slot(i, WeightLayout::OutIn)) {
                        token_embedding = Some(s);
                    }
                    continue;
                }
                _ => continue,
            };
            let (Some(key), Some(init)) = (module_key(&n.name), n.inputs.get(1).and_then(|w| resolve(w))) else { continue };
            let expected_rank = if n.op_type == "Conv" { 4 } else { 2 };
            if init.dims.len() != expected_rank {
                continue;
            }
            let Some(s) = slot(init, layout) else { continue };
            if n.op_type == "MatMul" {
                if let Some(o) = n.outputs.first() {
                    matmul_outputs.insert(o.as_str(), key.clone());
                }
            } else if let Some(b) = n.inputs.get(2).and_then(|b| resolve(b)) {
                bias_names.push((key.clone(), b));
            }
            users.entry(s.initializer.clone()).or_default().push(key.clone());
            modules.insert(key, s);
        }
        for s in modules.values_mut() {
            s.users = users.get(&s.initializer).cloned().unwrap_or_default();
        }
        // `Add(bias, MatMul output)` in either order: the Linear's bias.
        for n in nodes.iter().filter(|n| n.op_type == "Add" && n.inputs.len() == 2) {
            for (mine, other) in [(0, 1), (1, 0)] {
                if let (Some(key), Some(b)) = (matmul_outputs.get(n.inputs[mine].as_str()), resolve(&n.inputs[other])) {
                    bias_names.push((key.clone(), b));
                }
            }
        }
        // Every reader of each initializer, through aliases (Identity nodes themselves aside).
        let mut readers: HashMap<&str, Vec<String>> = HashMap::new();
        for n in nodes.iter().filter(|n| n.op_type != "Identity") {
            for i in &n.inputs {
                if let Some(init) = resolve(i) {
                    readers.entry(init.name.as_str()).or_default().push(module_key(&n.name).unwrap_or_else(|| n.name.clone()));
                }
            }
        }
        let mut biases = HashMap::new();
        for (key, b) in bias_names {
            let out = modules[&key].out_in().0;
            if b.dims.len() != 1 || usize::try_from(b.dims[0]).ok() != Some(out) {
                continue;
            }
            if let Some(mut s) = slot(b, WeightLayout::OutIn) {
                s.users = readers.get(b.name.as_str()).cloned().unwrap_or_default();
                biases.insert(key, s);
            }
        }
        Self { file: file.to_path_buf(), modules, biases, token_embedding }
    }

    /// The values of `slot` as f32, in its stored layout.
    pub fn read_f32(&self, slot: &WeightSlot) -> Result<Vec<f32>> {
        let count: usize = slot.dims.iter().product();
        let width = match slot.data_type {
            1 => 4,
            10 | 16 => 2,
            t => return Err(Error::unsupported(format!("initializer `{}` has data type {t}; LoRA merges into float, float16 or bfloat16 weights", slot.initializer))),
        };
        let (path, offset, len) = match &slot.data {
            TensorData::Inline { offset, len } => (self.file.clone(), *offset, *len),
            TensorData::External { location, offset, len } => {
                let dir = self.file.parent().unwrap_or(Path::new("."));
                (dir.join(location), *offset, len.unwrap_or((count * width) as u64))
            }
            TensorData::Typed => {
                return Err(Error::unsupported(format!(
                    "initializer `{}` stores its values in a typed field, not raw data; Kiln merges LoRA into raw or external-data weights",
                    slot.initializer
                )))
            }
        };
        if len != (count * width) as u64 {
            return Err(Error::model(format!("initializer `{}` has {len} bytes for {count} values of {width} bytes", slot.initializer)));
        }
        let io = |e: std::io::Error| Error::new(ErrorKind::Io, format!("cannot read `{}` from {}: {e}", slot.initializer, path.display()));
        let mut f = std::fs::File::open(&path).map_err(io)?;
        f.seek(SeekFrom::Start(offset)).map_err(io)?;
        let mut bytes = vec![0u8; len as usize];
        f.read_exact(&mut bytes).map_err(io)?;
        Ok(match slot.data_type {
            1 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
            10 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
            _ => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, name: &str, inputs: &[&str]) -> NodeSummary {
        NodeSummary { name: name.into(), op_type: op.into(), inputs: inputs.iter().map(|s| s.to_string()).collect(), outputs: vec![format!("{name}_out")], trans_b: 0 }
    }

    fn init(name: &str, dims: &[i64]) -> InitializerSummary {
        InitializerSummary { name: name.into(), data_type: 1, dims: dims.to_vec(), data: TensorData::Inline { offset: 0, len: 0 } }
    }

    #[test]
    fn modules_map_through_node_names_and_identity_aliases() {
        let mut alias = node("Identity", "Identity_1", &["onnx::MatMul_7"]);
        alias.outputs = vec!["dup".into()];
        let mut gemm = node("Gemm", "/time_embedding/linear_1/Gemm", &["x", "time_embedding.linear_1.weight"]);
        gemm.trans_b = 1;
        let nodes = vec![
            node("MatMul", "/down_blocks.0/attentions.0/transformer_blocks.0/attn1/to_q/MatMul", &["x", "onnx::MatMul_7"]),
            alias,
            node("MatMul", "/mid_block/attentions.0/transformer_blocks.0/attn1/to_k/MatMul", &["x", "dup"]),
            gemm,
            node("Conv", "/conv_in/Conv", &["x", "conv_in.weight", "conv_in.bias"]),
            node("Gather", "/text_model/embeddings/token_embedding/Gather", &["tok", "ids"]),
            node("MatMul", "/down_blocks.0/attentions.0/transformer_blocks.0/attn1/MatMul", &["a", "b"]),
        ];
        let inits = vec![
            init("onnx::MatMul_7", &[32, 64]),
            init("time_embedding.linear_1.weight", &[128, 32]),
            init("conv_in.weight", &[32, 4, 3, 3]),
            init("conv_in.bias", &[32]),
            init("tok", &[100, 32]),
        ];
        let idx = GraphIndex::build(Path::new("x.onnx"), &nodes, inits);
        assert_eq!(idx.biases.len(), 1, "{:?}", idx.biases.keys().collect::<Vec<_>>());
        assert_eq!((idx.biases["conv_in"].initializer.as_str(), idx.biases["conv_in"].users.as_slice()), ("conv_in.bias", &["conv_in".to_string()][..]));
        let q = &idx.modules["down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"];
        assert_eq!((q.initializer.as_str(), q.layout, q.out_in()), ("onnx::MatMul_7", WeightLayout::InOut, (64, 32)));
        assert_eq!(q.users.len(), 2, "shared through Identity: {:?}", q.users);
        assert_eq!(idx.modules["time_embedding_linear_1"].out_in(), (128, 32));
        assert_eq!(idx.modules["conv_in"].out_in(), (32, 36));
        assert_eq!(idx.token_embedding.as_ref().unwrap().initializer, "tok");
        assert_eq!(idx.modules.len(), 4, "{:?}", idx.modules.keys().collect::<Vec<_>>());
    }

    /// Biases: a Gemm's and a Conv's third input, the `Add` after a MatMul
    /// (either operand order, through an alias), one of the wrong length
    /// skipped, and a bias the exporter shared with another layer and a
    /// LayerNorm listing every reader.
    #[test]
    fn biases_map_from_gemm_conv_and_the_add_after_a_matmul() {
        let mut gemm = node("Gemm", "/time_embedding/linear_1/Gemm", &["x", "tw", "tb"]);
        gemm.trans_b = 1;
        let mut alias = node("Identity", "Identity_3", &["zero"]);
        alias.outputs = vec!["k_proj.bias".into()];
        let nodes = vec![
            gemm,
            node("Conv", "/conv_in/Conv", &["x", "cw", "cb"]),
            node("MatMul", "/a/to_out.0/MatMul", &["x", "ow"]),
            node("Add", "/a/to_out.0/Add", &["ob", "/a/to_out.0/MatMul_out"]),
            node("MatMul", "/a/ff/net.2/MatMul", &["x", "fw"]),
            node("Add", "/a/ff/net.2/Add", &["/a/ff/net.2/MatMul_out", "fb"]),
            node("MatMul", "/t/q_proj/MatMul", &["x", "qw"]),
            node("Add", "/t/q_proj/Add", &["zero", "/t/q_proj/MatMul_out"]),
            alias,
            node("MatMul", "/t/k_proj/MatMul", &["x", "kw"]),
            node("Add", "/t/k_proj/Add", &["k_proj.bias", "/t/k_proj/MatMul_out"]),
            node("LayerNormalization", "/t/layer_norm/LayerNormalization", &["x", "ln_w", "zero"]),
            node("MatMul", "/a/proj_out/MatMul", &["x", "pw"]),
            node("Add", "/a/proj_out/Add", &["/a/proj_out/MatMul_out", "short"]),
        ];
        let inits = vec![
            init("tw", &[16, 8]),
            init("tb", &[16]),
            init("cw", &[8, 4, 3, 3]),
            init("cb", &[8]),
            init("ow", &[8, 6]),
            init("ob", &[6]),
            init("fw", &[8, 5]),
            init("fb", &[5]),
            init("qw", &[8, 8]),
            init("kw", &[8, 8]),
            init("zero", &[8]),
            init("ln_w", &[8]),
            init("pw", &[8, 4]),
            init("short", &[3]),
        ];
        let idx = GraphIndex::build(Path::new("x.onnx"), &nodes, inits);
        let bias = |k: &str| (idx.biases[k].initializer.as_str(), idx.biases[k].dims.clone(), idx.biases[k].users.len());
        assert_eq!(bias("time_embedding_linear_1"), ("tb", vec![16], 1));
        assert_eq!(bias("conv_in"), ("cb", vec![8], 1));
        assert_eq!(bias("a_to_out_0"), ("ob", vec![6], 1));
        assert_eq!(bias("a_ff_net_2"), ("fb", vec![5], 1));
        let shared = &idx.biases["t_k_proj"];
        assert_eq!(shared.initializer, "zero");
        assert_eq!(shared.users, ["t_q_proj", "t_k_proj", "t_layer_norm"], "every reader of the shared zero tensor");
        assert!(!idx.biases.contains_key("a_proj_out"), "a 3-value bias for 4 outputs is not this layer's");
        assert_eq!(idx.biases.len(), 6);
    }

    /// A real file: one weight inline (raw_data), one in an external-data
    /// file at an offset; both read back from their recorded positions.
    #[test]
    fn reads_inline_and_external_weights_from_their_offsets() {
        use crate::model::onnx_proto::{node, Message, Value};
        let dir = std::env::temp_dir().join(format!("kiln-graph-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values: Vec<f32> = (0..6).map(|i| i as f32 * 0.5 - 1.0).collect();
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = |name: &str| {
            let mut t = Message::default();
            t.push_varint(1, 2);
            t.push_varint(1, 3);
            t.push_varint(2, 1);
            t.push_string(8, name);
            t
        };
        let mut inline = tensor("inline_w");
        inline.fields.push((9, Value::Bytes(std::borrow::Cow::Owned(raw.clone()))));
        let mut external = tensor("external_w");
        for (k, v) in [("location", "weights.bin"), ("offset", "8"), ("length", "24")] {
            let mut entry = Message::default();
            entry.push_string(1, k);
            entry.push_string(2, v);
            external.push_message(13, &entry);
        }
        external.push_varint(14, 1);
        let mut graph = Message::default();
        graph.push_message(1, &node("MatMul", "/a/to_q/MatMul", &["x", "inline_w"], &["y"], &[]));
        graph.push_message(1, &node("MatMul", "/b/to_k/MatMul", &["y", "external_w"], &["z"], &[]));
        graph.push_message(5, &inline);
        graph.push_message(5, &external);
        let mut model = Message::default();
        model.push_varint(1, 8);
        model.push_message(7, &graph);
        let file = dir.join("model.onnx");
        std::fs::write(&file, model.to_bytes()).unwrap();
        let mut data = vec![0xAAu8; 8];
        data.extend_from_slice(&raw);
        std::fs::write(dir.join("weights.bin"), data).unwrap();
        let idx = GraphIndex::read(&file).unwrap();
        for key in ["a_to_q", "b_to_k"] {
            let slot = &idx.modules[key];
            assert_eq!((slot.dims.as_slice(), slot.out_in()), (&[2usize, 3][..], (3, 2)), "{key}");
            assert_eq!(idx.read_f32(slot).unwrap(), values, "{key}: {:?}", slot.data);
        }
        assert!(matches!(idx.modules["b_to_k"].data, TensorData::External { offset: 8, len: Some(24), .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
