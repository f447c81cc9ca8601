//! CLIP skip by rewriting the text encoder at load time.
//!
//! diffusers computes `final_layer_norm(hidden_states[-(k + 1)])`: the output
//! of the k-th encoder layer from the end, normalized by the final LayerNorm.
//! Standard exports only output `last_hidden_state`, so Kiln rewires the
//! graph: the final LayerNorm's input (the last layer's output) is replaced by
//! the output of layer `N - 1 - k`. Layers are found by the module names the
//! PyTorch exporter gives nodes (`/text_model/encoder/layers.{i}/…`,
//! `/text_model/final_layer_norm/…`); a graph without them is refused.
use std::collections::{BTreeMap, HashMap, HashSet};

use super::onnx_proto::{Message, Value};
use crate::error::{Error, Result};

const LAYER: &str = "/text_model/encoder/layers.";
const FINAL_NORM: &str = "/text_model/final_layer_norm/";

fn layer_of(node_name: &str) -> Option<usize> {
    node_name.strip_prefix(LAYER)?.split('/').next()?.parse().ok()
}

/// Rewrites `model_bytes` so the final LayerNorm reads layer `N - 1 - skip`.
pub fn rewrite(model_bytes: &[u8], skip: u32) -> Result<Vec<u8>> {
    let model = Message::parse(model_bytes)?;
    let graph_bytes = super::onnx_proto::only_graph(&model)?;
    let graph = Message::parse(graph_bytes)?;
    let nodes: Vec<Message<'_>> = graph.bytes_of(1).map(Message::parse).collect::<Result<_>>()?;
    let name = |n: &Message<'_>| n.string(3).unwrap_or("").to_string();

    // Tensors produced inside each layer and consumed outside it: the layer's output.
    let mut produced_by: HashMap<String, usize> = HashMap::new();
    for n in &nodes {
        if let Some(l) = layer_of(&name(n)) {
            for o in n.strings(2) {
                produced_by.insert(o, l);
            }
        }
    }
    let mut outputs: BTreeMap<usize, HashSet<String>> = BTreeMap::new();
    for n in &nodes {
        let here = layer_of(&name(n));
        for i in n.strings(1) {
            if let Some(&l) = produced_by.get(&i) {
                if here != Some(l) {
                    outputs.entry(l).or_default().insert(i);
                }
            }
        }
    }
    let unsupported = |why: &str| Error::unsupported(format!("CLIP skip: {why}"));
    let layers = outputs.len();
    if layers == 0 || outputs.keys().copied().ne(0..layers) {
        return Err(unsupported("the text encoder's layers are not recognizable (expected /text_model/encoder/layers.N/ node names)"));
    }
    if skip as usize >= layers {
        return Err(Error::invalid(format!("clip_skip {skip} must be smaller than the text encoder's {layers} layers")));
    }
    let last = single(&outputs[&(layers - 1)]).ok_or_else(|| unsupported("the last layer has several outputs"))?;
    let target = single(&outputs[&(layers - 1 - skip as usize)]).ok_or_else(|| unsupported("the chosen layer has several outputs"))?;
    let mut rewired = 0;
    let mut new_graph = Message::default();
    for (number, value) in &graph.fields {
        if let (1, Value::Bytes(b)) = (number, value) {
            let n = Message::parse(b)?;
            if name(&n).starts_with(FINAL_NORM) && n.strings(1).iter().any(|i| i == &last) {
                let mut edited = Message::default();
                for (f, v) in &n.fields {
                    match (f, v) {
                        (1, Value::Bytes(i)) if i.as_ref() == last.as_bytes() => {
                            edited.push_string(1, &target);
                            rewired += 1;
                        }
                        _ => edited.fields.push((*f, v.clone())),
                    }
                }
                new_graph.push_message(1, &edited);
                continue;
            }
        }
        new_graph.fields.push((*number, value.clone()));
    }
    if rewired == 0 {
        return Err(unsupported("no final_layer_norm node reads the last layer's output"));
    }
    Ok(super::onnx_proto::with_graph(&model, &new_graph))
}

fn single(set: &HashSet<String>) -> Option<String> {
    (set.len() == 1).then(|| set.iter().next().cloned()).flatten()
}
