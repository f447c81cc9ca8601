//! Float16 → float32 graph upcast, for retrying a VAE decode that overflowed.
//!
//! An fp16 VAE (SDXL's above all) can produce activations above 65504, which
//! become infinities and then NaN after a normalization: the decoded image is
//! black. The same graph with every float16 tensor widened to float32 computes
//! the network the weights describe without that overflow. The rewrite widens
//! initializers and `Constant`/`ConstantOfShape` tensors (their values are
//! exact in f32), graph inputs, outputs and value infos, and `Cast`s to float16
//! (`to`/`dtype` attributes); subgraphs are rewritten too. Everything else is
//! kept byte for byte (see `onnx_proto`).
use std::borrow::Cow;

use super::onnx_proto::{self, owned, to_static, Message, Value};
use crate::error::{Error, Result};

const FLOAT: u64 = 1;
const FLOAT16: u64 = 10;

/// What an upcast changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpcastReport {
    /// Float16 tensors (initializers, constants) widened to float32.
    pub tensors: usize,
    /// Type declarations and cast targets changed from float16 to float32.
    pub types: usize,
}

impl UpcastReport {
    /// Whether the graph had anything in float16 at all.
    pub fn changed(&self) -> bool {
        self.tensors + self.types > 0
    }
}

/// Returns the model with every float16 tensor and type made float32.
pub fn upcast_to_f32(model_bytes: &[u8]) -> Result<(Vec<u8>, UpcastReport)> {
    let model = Message::parse(model_bytes)?;
    let mut report = UpcastReport::default();
    let upcast = graph(onnx_proto::only_graph(&model)?, &mut report)?;
    Ok((onnx_proto::with_graph(&model, &upcast), report))
}

/// GraphProto: node 1, initializer 5, input 11, output 12, value_info 13.
fn graph(bytes: &[u8], report: &mut UpcastReport) -> Result<Message<'static>> {
    let g = Message::parse(bytes)?;
    let mut out = Message::default();
    for (number, value) in &g.fields {
        match (number, value) {
            (1, Value::Bytes(b)) => out.push_message(1, &node(b, report)?),
            (5, Value::Bytes(b)) => out.push_message(5, &tensor(b, report)?),
            (11..=13, Value::Bytes(b)) => out.push_message(*number, &value_info(b, report)?),
            _ => out.fields.push((*number, owned(value))),
        }
    }
    Ok(out)
}

/// NodeProto: attribute 5.
fn node(bytes: &[u8], report: &mut UpcastReport) -> Result<Message<'static>> {
    let n = Message::parse(bytes)?;
    let mut out = Message::default();
    for (number, value) in &n.fields {
        match (number, value) {
            (5, Value::Bytes(b)) => out.push_message(5, &attribute(b, report)?),
            _ => out.fields.push((*number, owned(value))),
        }
    }
    Ok(out)
}

/// AttributeProto: name 1, i 3, t 5, g 6, tensors 10, graphs 11.
fn attribute(bytes: &[u8], report: &mut UpcastReport) -> Result<Message<'static>> {
    let a = Message::parse(bytes)?;
    let is_type = matches!(a.string(1), Some("to" | "dtype"));
    let mut out = Message::default();
    for (number, value) in &a.fields {
        match (number, value) {
            (3, Value::Varint(FLOAT16)) if is_type => {
                report.types += 1;
                out.push_varint(3, FLOAT);
            }
            (5 | 10, Value::Bytes(b)) => out.push_message(*number, &tensor(b, report)?),
            (6 | 11, Value::Bytes(b)) => out.push_message(*number, &graph(b, report)?),
            _ => out.fields.push((*number, owned(value))),
        }
    }
    Ok(out)
}

/// TensorProto: data_type 2, int32_data 5 (float16 bit patterns), name 8,
/// raw_data 9, data_location 14 (1 = external).
fn tensor(bytes: &[u8], report: &mut UpcastReport) -> Result<Message<'static>> {
    let t = Message::parse(bytes)?;
    let is_f16 = t.fields.iter().any(|(n, v)| *n == 2 && *v == Value::Varint(FLOAT16));
    if !is_f16 {
        return Ok(to_static(&t));
    }
    let name = t.string(8).unwrap_or("").to_string();
    if t.fields.iter().any(|(n, v)| *n == 14 && *v == Value::Varint(1)) {
        return Err(Error::unsupported(format!(
            "float16 tensor `{name}` keeps its data in an external file; Kiln upcasts only graphs whose float16 weights are inside model.onnx"
        )));
    }
    let mut bits: Vec<u16> = Vec::new();
    for (number, value) in &t.fields {
        match (number, value) {
            (9, Value::Bytes(b)) => {
                if b.len() % 2 != 0 {
                    return Err(Error::model(format!("float16 tensor `{name}` has {} raw bytes", b.len())));
                }
                bits.extend(b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])));
            }
            (5, _) => bits.extend(Message { fields: vec![(5, value.clone())] }.ints(5)?.into_iter().map(|v| v as u16)),
            _ => {}
        }
    }
    let raw: Vec<u8> = bits.iter().flat_map(|&b| half::f16::from_bits(b).to_f32().to_le_bytes()).collect();
    let mut out = Message::default();
    for (number, value) in &t.fields {
        match number {
            2 => out.push_varint(2, FLOAT),
            5 | 9 => {}
            _ => out.fields.push((*number, owned(value))),
        }
    }
    out.fields.push((9, Value::Bytes(Cow::Owned(raw))));
    report.tensors += 1;
    Ok(out)
}

/// ValueInfoProto type 2 → TypeProto tensor_type 1 → elem_type 1.
fn value_info(bytes: &[u8], report: &mut UpcastReport) -> Result<Message<'static>> {
    let v = Message::parse(bytes)?;
    let mut out = Message::default();
    for (number, value) in &v.fields {
        match (number, value) {
            (2, Value::Bytes(b)) => {
                let ty = Message::parse(b)?;
                let mut new_ty = Message::default();
                for (tn, tv) in &ty.fields {
                    match (tn, tv) {
                        (1, Value::Bytes(tb)) => {
                            let tensor_type = Message::parse(tb)?;
                            let mut new_tt = Message::default();
                            for (en, ev) in &tensor_type.fields {
                                if *en == 1 && *ev == Value::Varint(FLOAT16) {
                                    report.types += 1;
                                    new_tt.push_varint(1, FLOAT);
                                } else {
                                    new_tt.fields.push((*en, owned(ev)));
                                }
                            }
                            new_ty.push_message(1, &new_tt);
                        }
                        _ => new_ty.fields.push((*tn, owned(tv))),
                    }
                }
                out.push_message(2, &new_ty);
            }
            _ => out.fields.push((*number, owned(value))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float16_initializer_becomes_float32_with_the_same_values() {
        let mut t = Message::default();
        t.push_varint(1, 3);
        t.push_varint(2, FLOAT16);
        t.push_string(8, "w");
        let vals = [1.5f32, -65504.0, 0.000061035156];
        let raw: Vec<u8> = vals.iter().flat_map(|&v| half::f16::from_f32(v).to_bits().to_le_bytes()).collect();
        t.fields.push((9, Value::Bytes(Cow::Owned(raw))));
        let mut report = UpcastReport::default();
        let out = tensor(&t.to_bytes(), &mut report).unwrap();
        assert_eq!(report.tensors, 1);
        assert_eq!(out.ints(2).unwrap(), vec![FLOAT as i64]);
        let raw = out.bytes_of(9).next().unwrap();
        let got: Vec<f32> = raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(got, vals.to_vec());
    }
}
