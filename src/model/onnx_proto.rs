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
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(|| bad("truncated varint"))?;
        *pos += 1;
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
}
