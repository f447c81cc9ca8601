//! Seamless (tileable) output by rewriting the graphs at load time.
//!
//! Every 2-D `Conv` with spatial padding in the U-Net and VAE decoder gets, on
//! each wrapped axis, its zero padding replaced by a wrap: the input is
//! extended with `Slice`+`Concat` (the last `p` columns in front, the first
//! `p` behind) and the conv's own padding on that axis set to 0. With every
//! convolution circular, and attention, normalization and nearest upsampling
//! indifferent to where the image starts, the whole network becomes shift
//! equivariant along the axis, so the output tiles. `Slice`+`Concat` is used
//! rather than `Pad(mode="wrap")` because it runs on every execution provider
//! and opset ≥ 10 (wrap padding needs opset 19 and lacked CUDA kernels).
use std::collections::HashMap;

use super::onnx_proto::{attribute_ints, attribute_string, int64_tensor, ints_attribute, node, Message, Value};
use crate::error::{Error, Result};

/// Which axes wrap. Values match `kiln_seamless` in the C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u32)]
pub enum Seamless {
    /// Ordinary (zero) padding.
    #[default]
    None = 0,
    /// Tiles left-right.
    X = 1,
    /// Tiles top-bottom.
    Y = 2,
    /// Tiles both ways.
    Xy = 3,
}

impl Seamless {
    /// From `x`, `y`, `xy` or `none`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "x" => Some(Self::X),
            "y" => Some(Self::Y),
            "xy" | "yx" => Some(Self::Xy),
            _ => None,
        }
    }
    /// Whether images tile left-right.
    pub fn wraps_x(self) -> bool {
        matches!(self, Self::X | Self::Xy)
    }
    /// Whether images tile top-bottom.
    pub fn wraps_y(self) -> bool {
        matches!(self, Self::Y | Self::Xy)
    }
}

/// What a rewrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RewriteReport {
    /// Convolutions whose padding became a wrap.
    pub convs_rewritten: usize,
}

struct Builder {
    nodes: Vec<Message<'static>>,
    constants: HashMap<Vec<i64>, String>,
    new_initializers: Vec<Message<'static>>,
    counter: usize,
}

impl Builder {
    fn constant(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.constants.get(values) {
            return name.clone();
        }
        let name = format!("kiln_wrap/const_{}", self.constants.len());
        self.new_initializers.push(int64_tensor(&name, values));
        self.constants.insert(values.to_vec(), name.clone());
        name
    }

    /// `concat(x[..., -before:], x, x[..., :after])` along `axis`; returns the new tensor name.
    fn wrap(&mut self, x: &str, axis: i64, before: i64, after: i64) -> String {
        self.counter += 1;
        let id = self.counter;
        let axes = self.constant(&[axis]);
        let mut parts = Vec::new();
        if before > 0 {
            let (starts, ends) = (self.constant(&[-before]), self.constant(&[i64::MAX]));
            let out = format!("kiln_wrap/{id}/tail");
            self.nodes.push(node("Slice", &out, &[x, &starts, &ends, &axes], &[&out], &[]));
            parts.push(out);
        }
        parts.push(x.to_string());
        if after > 0 {
            let (starts, ends) = (self.constant(&[0]), self.constant(&[after]));
            let out = format!("kiln_wrap/{id}/head");
            self.nodes.push(node("Slice", &out, &[x, &starts, &ends, &axes], &[&out], &[]));
            parts.push(out);
        }
        let out = format!("kiln_wrap/{id}/wrapped");
        let inputs: Vec<&str> = parts.iter().map(String::as_str).collect();
        self.nodes.push(node("Concat", &out, &inputs, &[&out], &[super::onnx_proto::int_attribute("axis", axis)]));
        out
    }
}

/// Rewrites an ONNX model so its convolutions wrap around on `axes`.
pub fn make_seamless(model_bytes: &[u8], axes: Seamless) -> Result<(Vec<u8>, RewriteReport)> {
    let model = Message::parse(model_bytes)?;
    check_opset(&model)?;
    let graph_bytes = super::onnx_proto::only_graph(&model)?;
    let graph = Message::parse(graph_bytes)?;
    let mut b = Builder { nodes: Vec::new(), constants: HashMap::new(), new_initializers: Vec::new(), counter: 0 };
    let mut rewritten = 0;
    let mut new_graph = Message::default();
    for (number, value) in &graph.fields {
        let bytes = match (number, value) {
            (1, Value::Bytes(bytes)) => bytes,
            _ => {
                new_graph.fields.push((*number, value.clone()));
                continue;
            }
        };
        let n = Message::parse(bytes)?;
        let is_conv = n.string(4) == Some("Conv") && matches!(n.string(7), None | Some("") | Some("ai.onnx"));
        let pads = if is_conv { attribute_ints(&n, "pads")? } else { None };
        let pads = match pads {
            Some(p) if p.len() == 4 && p.iter().any(|&v| v != 0) => p,
            _ => {
                new_graph.fields.push((1, value.clone()));
                continue;
            }
        };
        if let Some(mode) = attribute_string(&n, "auto_pad")? {
            if mode != "NOTSET" {
                return Err(Error::unsupported(format!("seamless: Conv with auto_pad {mode} is not supported")));
            }
        }
        // pads = [h_begin, w_begin, h_end, w_end]
        let (mut hb, mut wb, mut he, mut we) = (pads[0], pads[1], pads[2], pads[3]);
        let mut x = n.strings(1).first().cloned().ok_or_else(|| Error::model("Conv without an input"))?;
        let before = b.nodes.len();
        if axes.wraps_x() && (wb > 0 || we > 0) {
            x = b.wrap(&x, 3, wb, we);
            wb = 0;
            we = 0;
        }
        if axes.wraps_y() && (hb > 0 || he > 0) {
            x = b.wrap(&x, 2, hb, he);
            hb = 0;
            he = 0;
        }
        if b.nodes.len() == before {
            new_graph.fields.push((1, value.clone()));
            continue;
        }
        for wrap_node in b.nodes.drain(before..).collect::<Vec<_>>() {
            new_graph.push_message(1, &wrap_node);
        }
        // The conv itself: first input renamed, pads updated, all else kept.
        let mut conv = Message::default();
        let mut first_input = true;
        for (fnum, fval) in &n.fields {
            match (fnum, fval) {
                (1, Value::Bytes(_)) if first_input => {
                    first_input = false;
                    conv.push_string(1, &x);
                }
                (5, Value::Bytes(a)) if Message::parse(a)?.string(1) == Some("pads") => {
                    conv.push_message(5, &ints_attribute("pads", &[hb, wb, he, we]));
                }
                _ => conv.fields.push((*fnum, fval.clone())),
            }
        }
        new_graph.push_message(1, &conv);
        rewritten += 1;
    }
    for init in &b.new_initializers {
        new_graph.push_message(5, init);
    }
    Ok((super::onnx_proto::with_graph(&model, &new_graph), RewriteReport { convs_rewritten: rewritten }))
}

fn check_opset(model: &Message<'_>) -> Result<()> {
    for b in model.bytes_of(8) {
        let opset = Message::parse(b)?;
        let domain = opset.string(1).unwrap_or("");
        if domain.is_empty() || domain == "ai.onnx" {
            let version = opset.ints(2)?.first().copied().unwrap_or(0);
            if version < 10 {
                return Err(Error::unsupported(format!("seamless tiling needs opset 10 or newer; this graph is opset {version}")));
            }
        }
    }
    Ok(())
}
