//! A lossless reader/writer for the protobuf wire format, with just enough
//! ONNX on top to rewrite graphs at load time (seamless tiling).
//!
//! Every field is kept as read, so fields Kiln does not know survive a
//! rewrite untouched; only the messages being edited are decoded. Large
//! initializers stay borrowed slices of the original file until written.
//! Field numbers are those of onnx.proto (ModelProto.graph = 7, GraphProto.node
//! = 1, .initializer = 5, NodeProto.input = 1, .output = 2, .name = 3,
//! .op_type = 4, .attribute = 5, AttributeProto.name = 1, .i = 3, .ints = 8,
//! .type = 20, TensorProto.dims = 1, .data_type = 2, .name = 8, .raw_data = 9).
use crate::error::{Error, Result};

/// One field's value as it appears on the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64([u8; 8]),
    /// Wire type 2: bytes, strings, nested messages, packed arrays.
    Bytes(std::borrow::Cow<'a, [u8]>),
    /// Wire type 5.
    Fixed32([u8; 4]),
}

/// A decoded message: its fields in file order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Message<'a> {
    /// (field number, value) in the order read.
    pub fields: Vec<(u32, Value<'a>)>,
}

fn bad(what: &str) -> Error {
    Error::model(format!("malformed ONNX protobuf: {what}"))
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Result<u64> {
    decode_varint(|| {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
        Ok(b)
    })
}

/// A base-128 varint from `next_byte`, whatever the bytes come from.
fn decode_varint(mut next_byte: impl FnMut() -> Result<u8>) -> Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = next_byte()?;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint longer than 10 bytes"))
}

fn write_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl<'a> Message<'a> {
    /// Parses one message from `buf`.
    pub fn parse(buf: &'a [u8]) -> Result<Self> {
        let mut fields = Vec::new();
        let mut pos = 0;
        while pos < buf.len() {
            let key = read_varint(buf, &mut pos)?;
            let number = (key >> 3) as u32;
            if number == 0 {
                return Err(bad("field number 0"));
            }
            let value = match key & 7 {
                0 => Value::Varint(read_varint(buf, &mut pos)?),
                1 => {
                    let b = buf.get(pos..pos + 8).ok_or_else(|| bad("truncated fixed64"))?;
                    pos += 8;
                    Value::Fixed64(b.try_into().unwrap())
                }
                2 => {
                    let len = read_varint(buf, &mut pos)? as usize;
                    let end = pos.checked_add(len).filter(|&e| e <= buf.len()).ok_or_else(|| bad("length past the end"))?;
                    let b = &buf[pos..end];
                    pos = end;
                    Value::Bytes(std::borrow::Cow::Borrowed(b))
                }
                5 => {
                    let b = buf.get(pos..pos + 4).ok_or_else(|| bad("truncated fixed32"))?;
                    pos += 4;
                    Value::Fixed32(b.try_into().unwrap())
                }
                w => return Err(bad(&format!("unsupported wire type {w}"))),
            };
            fields.push((number, value));
        }
        Ok(Self { fields })
    }

    /// Serializes the message.
    pub fn write(&self, out: &mut Vec<u8>) {
        for (number, value) in &self.fields {
            let n = (*number as u64) << 3;
            match value {
                Value::Varint(v) => {
                    write_varint(out, n);
                    write_varint(out, *v);
                }
                Value::Fixed64(b) => {
                    write_varint(out, n | 1);
                    out.extend_from_slice(b);
                }
                Value::Bytes(b) => {
                    write_varint(out, n | 2);
                    write_varint(out, b.len() as u64);
                    out.extend_from_slice(b);
                }
                Value::Fixed32(b) => {
                    write_varint(out, n | 5);
                    out.extend_from_slice(b);
                }
            }
        }
    }

    /// The serialized bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write(&mut out);
        out
    }

    /// Byte values of every field `number`.
    pub fn bytes_of(&self, number: u32) -> impl Iterator<Item = &[u8]> {
        self.fields.iter().filter(move |(n, _)| *n == number).filter_map(|(_, v)| match v {
            Value::Bytes(b) => Some(b.as_ref()),
            _ => None,
        })
    }

    /// The first string field `number`.
    pub fn string(&self, number: u32) -> Option<&str> {
        self.bytes_of(number).next().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// Every string field `number`, in order.
    pub fn strings(&self, number: u32) -> Vec<String> {
        self.bytes_of(number).map(|b| String::from_utf8_lossy(b).into_owned()).collect()
    }

    /// Every integer of repeated field `number`, packed or not.
    pub fn ints(&self, number: u32) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        for (n, v) in &self.fields {
            if *n != number {
                continue;
            }
            match v {
                Value::Varint(x) => out.push(*x as i64),
                Value::Bytes(b) => {
                    let mut pos = 0;
                    while pos < b.len() {
                        out.push(read_varint(b, &mut pos)? as i64);
                    }
                }
                _ => return Err(bad("integer field with a fixed-width value")),
            }
        }
        Ok(out)
    }

    /// Appends a string field.
    pub fn push_string(&mut self, number: u32, s: &str) {
        self.fields.push((number, Value::Bytes(std::borrow::Cow::Owned(s.as_bytes().to_vec()))));
    }

    /// Appends a nested message.
    pub fn push_message(&mut self, number: u32, m: &Message<'_>) {
        self.fields.push((number, Value::Bytes(std::borrow::Cow::Owned(m.to_bytes()))));
    }

    /// Appends a varint field.
    pub fn push_varint(&mut self, number: u32, v: u64) {
        self.fields.push((number, Value::Varint(v)));
    }
}

/// A field value that owns its bytes, for a message built from borrowed parts.
pub fn owned(v: &Value<'_>) -> Value<'static> {
    match v {
        Value::Varint(x) => Value::Varint(*x),
        Value::Fixed64(b) => Value::Fixed64(*b),
        Value::Fixed32(b) => Value::Fixed32(*b),
        Value::Bytes(b) => Value::Bytes(std::borrow::Cow::Owned(b.to_vec())),
    }
}

/// `m` with every field owning its bytes.
pub fn to_static(m: &Message<'_>) -> Message<'static> {
    Message { fields: m.fields.iter().map(|(n, v)| (*n, owned(v))).collect() }
}

/// A node's attribute of type INTS (AttributeProto.type = 7), by name.
pub fn attribute_ints(node: &Message<'_>, name: &str) -> Result<Option<Vec<i64>>> {
    for b in node.bytes_of(5) {
        let attr = Message::parse(b)?;
        if attr.string(1) == Some(name) {
            return Ok(Some(attr.ints(8)?));
        }
    }
    Ok(None)
}

/// A node's INT attribute (AttributeProto.type = 2), by name.
pub fn attribute_int(node: &Message<'_>, name: &str) -> Result<Option<i64>> {
    for b in node.bytes_of(5) {
        let attr = Message::parse(b)?;
        if attr.string(1) == Some(name) {
            return Ok(attr.ints(3)?.first().copied());
        }
    }
    Ok(None)
}

/// The model's one `GraphProto`. Protobuf merges a message field that
/// appears twice, so a file with two `graph` fields is, to ONNX Runtime, the
/// two merged; a rewrite of the first alone would not be what runs.
pub fn only_graph<'m>(model: &'m Message<'_>) -> Result<&'m [u8]> {
    // Every field numbered 7, whatever its wire type: `with_graph` replaces them all.
    let mut graphs = model.fields.iter().filter(|(n, _)| *n == 7).map(|(_, v)| v);
    let graph = match graphs.next() {
        None => return Err(Error::model("ONNX model has no graph")),
        Some(Value::Bytes(b)) => b.as_ref(),
        Some(_) => return Err(Error::model("malformed ONNX protobuf: the model's `graph` field is not a message")),
    };
    match graphs.count() {
        0 => Ok(graph),
        more => Err(Error::model(format!("ONNX model has {} `graph` fields (protobuf merges them); Kiln rewrites only a model with one", more + 1))),
    }
}

/// `model` (a ModelProto) with its graph replaced by `graph`, serialized;
/// every other field kept as it was.
pub fn with_graph(model: &Message<'_>, graph: &Message<'_>) -> Vec<u8> {
    let mut out = Message::default();
    for (number, value) in &model.fields {
        if *number == 7 {
            out.push_message(7, graph);
        } else {
            out.fields.push((*number, value.clone()));
        }
    }
    out.to_bytes()
}

/// A node's STRING attribute, by name.
pub fn attribute_string(node: &Message<'_>, name: &str) -> Result<Option<String>> {
    for b in node.bytes_of(5) {
        let attr = Message::parse(b)?;
        if attr.string(1) == Some(name) {
            return Ok(attr.string(4).map(str::to_string));
        }
    }
    Ok(None)
}

/// Builds an INTS attribute.
pub fn ints_attribute(name: &str, values: &[i64]) -> Message<'static> {
    let mut a = Message::default();
    a.push_string(1, name);
    for &v in values {
        a.push_varint(8, v as u64);
    }
    a.push_varint(20, 7); // AttributeProto.INTS
    a
}

/// Builds an INT attribute.
pub fn int_attribute(name: &str, value: i64) -> Message<'static> {
    let mut a = Message::default();
    a.push_string(1, name);
    a.push_varint(3, value as u64);
    a.push_varint(20, 2); // AttributeProto.INT
    a
}

/// Builds a node.
pub fn node(op_type: &str, name: &str, inputs: &[&str], outputs: &[&str], attributes: &[Message<'_>]) -> Message<'static> {
    let mut n = Message::default();
    for i in inputs {
        n.push_string(1, i);
    }
    for o in outputs {
        n.push_string(2, o);
    }
    n.push_string(3, name);
    n.push_string(4, op_type);
    for a in attributes {
        n.push_message(5, a);
    }
    n
}

/// Builds a GRAPH attribute (an `If` branch).
pub fn graph_attribute(name: &str, graph: &Message<'_>) -> Message<'static> {
    let mut a = Message::default();
    a.push_string(1, name);
    a.push_message(6, graph);
    a.push_varint(20, 5); // AttributeProto.GRAPH
    a
}

/// A `ValueInfoProto` of a tensor of element type `elem` and any shape (a
/// subgraph's output, whose shape its outer graph already knows).
pub fn tensor_value_info_any_shape(name: &str, elem: u64) -> Message<'static> {
    tensor_info(name, elem, None)
}

/// A `ValueInfoProto` declaring a tensor of ONNX element type `elem` (1 =
/// FLOAT, 7 = INT64, ...) whose dimensions are fixed (`Ok`) or symbolic
/// (`Err(name)`): a graph's declared input or output.
pub fn tensor_value_info(name: &str, elem: u64, dims: &[std::result::Result<i64, &str>]) -> Message<'static> {
    let mut shape = Message::default();
    for d in dims {
        let mut dim = Message::default();
        match d {
            Ok(v) => dim.push_varint(1, *v as u64),
            Err(p) => dim.push_string(2, p),
        }
        shape.push_message(1, &dim);
    }
    tensor_info(name, elem, Some(&shape))
}

/// A tensor's `ValueInfoProto`, with a `TensorShapeProto` or none.
fn tensor_info(name: &str, elem: u64, shape: Option<&Message<'_>>) -> Message<'static> {
    let mut tensor = Message::default();
    tensor.push_varint(1, elem);
    if let Some(shape) = shape {
        tensor.push_message(2, shape);
    }
    let mut ty = Message::default();
    ty.push_message(1, &tensor);
    let mut info = Message::default();
    info.push_string(1, name);
    info.push_message(2, &ty);
    info
}

/// Builds a 1-D int64 initializer.
pub fn int64_tensor(name: &str, values: &[i64]) -> Message<'static> {
    let mut t = Message::default();
    t.push_varint(1, values.len() as u64);
    t.push_varint(2, 7); // TensorProto.INT64
    t.push_string(8, name);
    let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    t.fields.push((9, Value::Bytes(std::borrow::Cow::Owned(raw))));
    t
}

/// A graph input or output as the ONNX file declares it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclaredTensor {
    /// ValueInfoProto.name.
    pub name: String,
    /// TensorProto.DataType (1 = float, 7 = int64, 10 = float16, ...); 0 when not a tensor.
    pub elem_type: i32,
    /// Dimensions; -1 for a symbolic or missing dimension.
    pub dims: Vec<i64>,
}

/// The inputs (initializers left out, as ONNX Runtime reports them) and
/// outputs a model file declares, read without loading it: large fields
/// (weights, nodes) are skipped with seeks, so a 2 GB graph costs a few reads.
pub fn declared_io<R: std::io::Read + std::io::Seek>(r: R) -> Result<(Vec<DeclaredTensor>, Vec<DeclaredTensor>)> {
    let mut s = Stream { r: std::io::BufReader::with_capacity(1 << 16, r), pos: 0 };
    let end = std::io::Seek::seek(&mut s.r, std::io::SeekFrom::End(0)).map_err(io)?;
    std::io::Seek::seek(&mut s.r, std::io::SeekFrom::Start(0)).map_err(io)?;
    let (mut inputs, mut outputs, mut initializers) = (Vec::new(), Vec::new(), std::collections::HashSet::new());
    let mut found_graph = false;
    while s.pos < end {
        match s.field(end)? {
            (7, Some(len)) => {
                // ModelProto.graph
                found_graph = true;
                let graph_end = s.pos + len;
                while s.pos < graph_end {
                    match s.field(graph_end)? {
                        (11, Some(len)) => inputs.push(value_info(&s.take(len)?)?),
                        (12, Some(len)) => outputs.push(value_info(&s.take(len)?)?),
                        (5, Some(len)) => {
                            // GraphProto.initializer: only its name (field 8) is read.
                            let tensor_end = s.pos + len;
                            while s.pos < tensor_end {
                                match s.field(tensor_end)? {
                                    (8, Some(len)) => {
                                        initializers.insert(String::from_utf8_lossy(&s.take(len)?).into_owned());
                                    }
                                    (_, Some(len)) => s.skip(len)?,
                                    (_, None) => {}
                                }
                            }
                        }
                        (_, Some(len)) => s.skip(len)?,
                        (_, None) => {}
                    }
                }
            }
            (_, Some(len)) => s.skip(len)?,
            (_, None) => {}
        }
    }
    if !found_graph {
        return Err(bad("no graph in the model"));
    }
    inputs.retain(|t: &DeclaredTensor| !initializers.contains(&t.name));
    Ok((inputs, outputs))
}

/// A weight-consuming node as the graph lists it (for LoRA mapping).
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    /// NodeProto.name: exporters put the module path here (`/down_blocks.0/.../to_q/MatMul`).
    pub name: String,
    /// NodeProto.op_type.
    pub op_type: String,
    /// NodeProto.input.
    pub inputs: Vec<String>,
    /// NodeProto.output.
    pub outputs: Vec<String>,
    /// Gemm's `transB` (0 when absent or not a Gemm).
    pub trans_b: i64,
}

/// Where an initializer's bytes are.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `raw_data` inside the ONNX file: byte offset and length.
    Inline { offset: u64, len: u64 },
    /// External data: file name relative to the model's folder, offset and length
    /// (`None` = to the end of the file).
    External { location: String, offset: u64, len: Option<u64> },
    /// Values in a typed field (`float_data` and friends), which Kiln does not read.
    Typed,
}

/// An initializer's name, element type, shape and where its data lives.
#[derive(Debug, Clone, PartialEq)]
pub struct InitializerSummary {
    /// TensorProto.name.
    pub name: String,
    /// TensorProto.data_type (1 = float, 10 = float16).
    pub data_type: i32,
    /// TensorProto.dims.
    pub dims: Vec<i64>,
    /// Where the values are.
    pub data: TensorData,
}

/// Every node and initializer of a model file, weights left on disk: raw
/// tensor data is skipped with seeks and only its position recorded, so a
/// 2 GB graph costs reading its nodes.
pub fn graph_summary<R: std::io::Read + std::io::Seek>(r: R) -> Result<(Vec<NodeSummary>, Vec<InitializerSummary>)> {
    let mut s = Stream { r: std::io::BufReader::with_capacity(1 << 16, r), pos: 0 };
    let end = std::io::Seek::seek(&mut s.r, std::io::SeekFrom::End(0)).map_err(io)?;
    std::io::Seek::seek(&mut s.r, std::io::SeekFrom::Start(0)).map_err(io)?;
    let (mut nodes, mut initializers) = (Vec::new(), Vec::new());
    let mut found_graph = false;
    while s.pos < end {
        match s.field(end)? {
            (7, Some(len)) => {
                found_graph = true;
                let graph_end = s.pos + len;
                while s.pos < graph_end {
                    match s.field(graph_end)? {
                        (1, Some(len)) => nodes.push(node_summary(&s.take(len)?)?),
                        (5, Some(len)) => {
                            let tensor_end = s.pos + len;
                            initializers.push(initializer_summary(&mut s, tensor_end)?);
                        }
                        (_, Some(len)) => s.skip(len)?,
                        (_, None) => {}
                    }
                }
            }
            (_, Some(len)) => s.skip(len)?,
            (_, None) => {}
        }
    }
    if !found_graph {
        return Err(bad("no graph in the model"));
    }
    Ok((nodes, initializers))
}

fn node_summary(bytes: &[u8]) -> Result<NodeSummary> {
    let n = Message::parse(bytes)?;
    let op_type = n.string(4).unwrap_or_default().to_string();
    let mut trans_b = 0;
    if op_type == "Gemm" {
        for b in n.bytes_of(5) {
            let attr = Message::parse(b)?;
            if attr.string(1) == Some("transB") {
                trans_b = attr.ints(3)?.first().copied().unwrap_or(0);
            }
        }
    }
    Ok(NodeSummary { name: n.string(3).unwrap_or_default().to_string(), op_type, inputs: n.strings(1), outputs: n.strings(2), trans_b })
}

/// TensorProto: dims = 1, data_type = 2, name = 8, raw_data = 9,
/// external_data = 13 (StringStringEntryProto key = 1, value = 2),
/// data_location = 14; typed values in 4-7, 10, 11.
fn initializer_summary<R: std::io::Read + std::io::Seek>(s: &mut Stream<R>, end: u64) -> Result<InitializerSummary> {
    let mut t = InitializerSummary { name: String::new(), data_type: 0, dims: Vec::new(), data: TensorData::Typed };
    let mut external: Vec<(String, String)> = Vec::new();
    let mut raw = None;
    while s.pos < end {
        let key = s.varint()?;
        let (number, wire) = ((key >> 3) as u32, key & 7);
        match (number, wire) {
            (1, 0) => t.dims.push(s.varint()? as i64),
            (2, 0) => t.data_type = s.varint()? as i32,
            (14, 0) => {
                s.varint()?;
            }
            (_, 0) => {
                s.varint()?;
            }
            (_, 1) => s.skip(8)?,
            (_, 5) => s.skip(4)?,
            (_, 2) => {
                let len = s.varint()?;
                if s.pos.checked_add(len).is_none_or(|e| e > end) {
                    return Err(bad("length past the end"));
                }
                match number {
                    1 => {
                        let b = s.take(len)?;
                        let mut pos = 0;
                        while pos < b.len() {
                            t.dims.push(read_varint(&b, &mut pos)? as i64);
                        }
                    }
                    8 => t.name = String::from_utf8_lossy(&s.take(len)?).into_owned(),
                    9 => {
                        raw = Some((s.pos, len));
                        s.skip(len)?;
                    }
                    13 => {
                        let bytes = s.take(len)?;
                        let entry = Message::parse(&bytes)?;
                        let k = entry.string(1).unwrap_or_default().to_string();
                        let v = entry.string(2).unwrap_or_default().to_string();
                        external.push((k, v));
                    }
                    _ => s.skip(len)?,
                }
            }
            (_, w) => return Err(bad(&format!("unsupported wire type {w}"))),
        }
    }
    if let Some((offset, len)) = raw {
        t.data = TensorData::Inline { offset, len };
    } else if let Some((_, location)) = external.iter().find(|(k, _)| k == "location") {
        let number = |key: &str| -> Result<Option<u64>> {
            external
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.parse::<u64>().map_err(|_| bad(&format!("external_data {key} {v:?} is not a number"))))
                .transpose()
        };
        t.data = TensorData::External { location: location.clone(), offset: number("offset")?.unwrap_or(0), len: number("length")? };
    }
    Ok(t)
}

fn io(e: std::io::Error) -> Error {
    bad(&format!("cannot read: {e}"))
}

/// Reads protobuf fields from a seekable stream, tracking the position.
struct Stream<R> {
    r: std::io::BufReader<R>,
    pos: u64,
}

impl<R: std::io::Read + std::io::Seek> Stream<R> {
    fn byte(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        std::io::Read::read_exact(&mut self.r, &mut b).map_err(|_| bad("truncated field"))?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self) -> Result<u64> {
        decode_varint(|| self.byte())
    }

    /// The next field's number, and its length when it is length-delimited
    /// (other wire types are consumed here). Lengths past `limit` are errors.
    fn field(&mut self, limit: u64) -> Result<(u32, Option<u64>)> {
        let key = self.varint()?;
        let number = (key >> 3) as u32;
        if number == 0 {
            return Err(bad("field number 0"));
        }
        match key & 7 {
            0 => {
                self.varint()?;
                Ok((number, None))
            }
            1 => self.skip(8).map(|_| (number, None)),
            5 => self.skip(4).map(|_| (number, None)),
            2 => {
                let len = self.varint()?;
                if self.pos.checked_add(len).is_none_or(|e| e > limit) {
                    return Err(bad("length past the end"));
                }
                Ok((number, Some(len)))
            }
            w => Err(bad(&format!("unsupported wire type {w}"))),
        }
    }

    fn skip(&mut self, len: u64) -> Result<()> {
        let offset = i64::try_from(len).map_err(|_| bad("length too large"))?;
        self.r.seek_relative(offset).map_err(io)?;
        self.pos += len;
        Ok(())
    }

    fn take(&mut self, len: u64) -> Result<Vec<u8>> {
        if len > 1 << 24 {
            return Err(bad("graph input or output description over 16 MiB"));
        }
        let mut b = vec![0u8; len as usize];
        std::io::Read::read_exact(&mut self.r, &mut b).map_err(|_| bad("truncated field"))?;
        self.pos += len;
        Ok(b)
    }
}

/// ValueInfoProto (name = 1, type = 2) → TypeProto.tensor_type (1) →
/// elem_type (1), shape (2) → dim (1) → dim_value (1) | dim_param (2).
fn value_info(bytes: &[u8]) -> Result<DeclaredTensor> {
    let info = Message::parse(bytes)?;
    let name = info.string(1).ok_or_else(|| bad("graph input or output without a name"))?.to_string();
    let mut out = DeclaredTensor { name, elem_type: 0, dims: Vec::new() };
    let Some(ty) = info.bytes_of(2).next() else { return Ok(out) };
    let ty = Message::parse(ty)?;
    let Some(tensor) = ty.bytes_of(1).next().map(Message::parse).transpose()? else { return Ok(out) };
    out.elem_type = tensor.ints(1)?.first().copied().unwrap_or(0) as i32;
    if let Some(shape) = tensor.bytes_of(2).next() {
        for dim in Message::parse(shape)?.bytes_of(1) {
            let dim = Message::parse(dim)?;
            out.dims.push(dim.ints(1)?.first().copied().unwrap_or(-1));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_lossless_and_errors_are_reported() {
        let n = node("Conv", "c", &["x", "w"], &["y"], &[ints_attribute("pads", &[1, 1, 1, 1]), int_attribute("group", 1)]);
        let bytes = n.to_bytes();
        let parsed = Message::parse(&bytes).unwrap();
        assert_eq!(parsed.to_bytes(), bytes);
        assert_eq!(parsed.strings(1), vec!["x", "w"]);
        assert_eq!(parsed.string(4), Some("Conv"));
        assert_eq!(attribute_ints(&parsed, "pads").unwrap(), Some(vec![1, 1, 1, 1]));
        assert_eq!(attribute_ints(&parsed, "strides").unwrap(), None);
        // Packed ints read the same as unpacked.
        let mut packed = Message::default();
        packed.fields.push((8, Value::Bytes(std::borrow::Cow::Owned(vec![1, 2, 0x96, 0x01]))));
        assert_eq!(packed.ints(8).unwrap(), vec![1, 2, 150]);
        // Negative int64s are 10-byte varints.
        let t = int64_tensor("k", &[-3, i64::MAX]);
        assert_eq!(Message::parse(&t.to_bytes()).unwrap(), t);
        for junk in [&[0x0a, 0x05, 1][..], &[0xff; 11][..], &[0x0b][..], &[0x00, 0x01][..]] {
            assert!(Message::parse(junk).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn a_model_with_two_graph_fields_is_refused_by_the_rewrites() {
        let mut graph = Message::default();
        graph.push_message(1, &node("Relu", "r", &["x"], &["y"], &[]));
        let mut model = Message::default();
        model.push_varint(1, 8);
        model.push_message(7, &graph);
        assert!(only_graph(&model).is_ok());
        model.push_message(7, &graph);
        let e = only_graph(&model).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::ModelInvalid);
        assert!(e.message().contains("2 `graph` fields"), "{}", e.message());
        assert!(only_graph(&Message::default()).is_err(), "no graph");
        // A field 7 of another wire type counts too: `with_graph` would replace it.
        let mut odd = Message::default();
        odd.push_varint(7, 1);
        assert!(only_graph(&odd).unwrap_err().message().contains("not a message"));
        let mut after = Message::default();
        after.push_message(7, &graph);
        after.push_varint(7, 1);
        assert!(only_graph(&after).unwrap_err().message().contains("2 `graph` fields"));
        // Every rewrite of a model's bytes refuses it the same way, not just
        // those that call `only_graph` by name.
        let two = { let mut m = Message::default(); m.push_message(7, &graph); m.push_message(7, &graph); m.to_bytes() };
        use crate::model::{attention, clip_skip, lora, quantize, seamless, static_unet, upcast};
        let refusals: [(&str, crate::Result<()>); 7] = [
            ("seamless", seamless::make_seamless(&two, seamless::Seamless::Xy).map(drop)),
            ("clip skip", clip_skip::rewrite(&two, 1).map(drop)),
            ("attention", attention::fuse(&two).map(drop)),
            ("slots", lora::slots::add_slots(&two).map(drop)),
            ("int8", quantize::quantize_int8(&two, std::path::Path::new(".")).map(drop)),
            ("upcast", upcast::upcast_to_f32(&two).map(drop)),
            ("static dims", static_unet::fix_input_dims(&two, &[("y".into(), vec![1])]).map(drop)),
        ];
        for (what, result) in refusals {
            let e = result.expect_err(what);
            assert_eq!(e.kind(), crate::ErrorKind::ModelInvalid, "{what}: {}", e.message());
            assert!(e.message().contains("2 `graph` fields"), "{what}: {}", e.message());
        }
    }

    #[test]
    fn declared_io_skips_weights_and_initializer_inputs() {
        let mut graph = Message::default();
        graph.push_message(1, &node("Add", "a", &["x", "w"], &["y"], &[]));
        graph.push_message(5, &int64_tensor("w", &[1, 2, 3]));
        graph.push_message(11, &tensor_value_info("x", 1, &[Err("batch"), Ok(4), Ok(8)]));
        // IR < 4 exports list initializers among the inputs; ONNX Runtime does not report them.
        graph.push_message(11, &tensor_value_info("w", 7, &[Ok(3)]));
        graph.push_message(12, &tensor_value_info("y", 10, &[Err("batch"), Ok(4), Ok(8)]));
        let mut model = Message::default();
        model.push_varint(1, 8); // ir_version
        model.push_message(7, &graph);
        let bytes = model.to_bytes();
        let (inputs, outputs) = declared_io(std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(inputs, vec![DeclaredTensor { name: "x".into(), elem_type: 1, dims: vec![-1, 4, 8] }]);
        assert_eq!(outputs, vec![DeclaredTensor { name: "y".into(), elem_type: 10, dims: vec![-1, 4, 8] }]);
        // Every truncation is an error, never a panic or a partial answer.
        for cut in 1..bytes.len() {
            assert!(declared_io(std::io::Cursor::new(&bytes[..cut])).is_err(), "cut at {cut}");
        }
        assert!(declared_io(std::io::Cursor::new(&[0x08, 0x07][..])).is_err(), "no graph");
    }
}
