//! The scheduler step as a small ONNX graph, so that latents stay where the
//! U-Net runs (device-resident latents, `ProviderPolicy::device_latents`).
//!
//! One graph per CFG setting, with symbolic shapes (any size, any channel
//! count), built with Kiln's own protobuf writer and run on the U-Net's
//! execution provider. Inputs, all float32:
//!
//! * `unet_out` `[B, C, h, w]`: the U-Net's output, B = 2 with classifier-free
//!   guidance (unconditional row first, as Kiln batches it), else 1;
//! * `sample` `[1, C, h, w]`, `history` `[1, C, h, w]`, `noise` `[1, C, h, w]`;
//! * `coefficients` `[8]`: guidance g, then the [`LinearStep`] coefficients
//!   (sample, model, history, noise, next history's sample and model), then
//!   the next U-Net call's input scale s.
//!
//! Outputs: `next_sample = a·x + b·m + c·h + d·z`, `next_history = e·x + f·m`
//! with `m = u + g·(c − u)` (the CFG combine, in the host loop's order), and
//! `unet_in` = `s·next_sample`, repeated B times along the batch: the next
//! U-Net call's input.
//!
//! [`LinearStep`]: crate::scheduler::LinearStep
use std::sync::Arc;

use parking_lot::Mutex;

use super::graph::{Graph, GraphSource, ResidencyGroup, Residency, SessionFlags};
use super::onnx_proto::{int64_tensor, int_attribute, node, tensor_value_info, Message};
use crate::error::Result;
use crate::runtime::Runtime;

/// Input and output names of the step graph.
pub(crate) mod names {
    /// The U-Net's output.
    pub const UNET_OUT: &str = "unet_out";
    /// The latents before the step.
    pub const SAMPLE: &str = "sample";
    /// The multistep history (previous data prediction).
    pub const HISTORY: &str = "history";
    /// The step noise.
    pub const NOISE: &str = "noise";
    /// Guidance, the step's coefficients and the next input scale.
    pub const COEFFICIENTS: &str = "coefficients";
    /// The latents after the step.
    pub const NEXT_SAMPLE: &str = "next_sample";
    /// The history after the step.
    pub const NEXT_HISTORY: &str = "next_history";
    /// The next U-Net call's input.
    pub const UNET_IN: &str = "unet_in";
}

/// Number of values in the `coefficients` input.
pub const COEFFICIENT_COUNT: usize = 8;

/// A float32 tensor declaration with symbolic dimensions (or fixed ones).
fn value_info(name: &str, dims: &[Result<i64, &str>]) -> Message<'static> {
    tensor_value_info(name, 1, dims) // 1 = FLOAT
}

/// The step graph's ONNX bytes; `cfg` = the U-Net output holds the
/// unconditional and conditional rows.
pub fn step_graph_bytes(cfg: bool) -> Vec<u8> {
    use names::*;
    let mut nodes: Vec<Message<'static>> = Vec::new();
    let mut inits = Vec::new();
    for k in 0..=COEFFICIENT_COUNT as i64 {
        inits.push(int64_tensor(&format!("i{k}"), &[k]));
    }
    inits.push(int64_tensor("axis0", &[0]));
    let coefficient = ["g", "a", "b", "c", "d", "e", "f", "s"];
    for (k, name) in coefficient.iter().enumerate() {
        let (lo, hi) = (format!("i{k}"), format!("i{}", k + 1));
        nodes.push(node("Slice", &format!("coef_{name}"), &[COEFFICIENTS, &lo, &hi, "axis0"], &[name], &[]));
    }
    let bin = |nodes: &mut Vec<Message<'static>>, op: &str, a: &str, b: &str, out: &str| {
        nodes.push(node(op, out, &[a, b], &[out], &[]));
    };
    if cfg {
        nodes.push(node("Slice", "uncond", &[UNET_OUT, "i0", "i1", "axis0"], &["u"], &[]));
        nodes.push(node("Slice", "cond", &[UNET_OUT, "i1", "i2", "axis0"], &["cd"], &[]));
        // u + g·(c − u), the host loop's `guide` order.
        bin(&mut nodes, "Sub", "cd", "u", "diff");
        bin(&mut nodes, "Mul", "g", "diff", "g_diff");
        bin(&mut nodes, "Add", "u", "g_diff", "m");
    } else {
        nodes.push(node("Identity", "model", &[UNET_OUT], &["m"], &[]));
    }
    bin(&mut nodes, "Mul", "a", SAMPLE, "ax");
    bin(&mut nodes, "Mul", "b", "m", "bm");
    bin(&mut nodes, "Mul", "c", HISTORY, "ch");
    bin(&mut nodes, "Mul", "d", NOISE, "dz");
    bin(&mut nodes, "Add", "ax", "bm", "t1");
    bin(&mut nodes, "Add", "t1", "ch", "t2");
    bin(&mut nodes, "Add", "t2", "dz", NEXT_SAMPLE);
    bin(&mut nodes, "Mul", "e", SAMPLE, "ex");
    bin(&mut nodes, "Mul", "f", "m", "fm");
    bin(&mut nodes, "Add", "ex", "fm", NEXT_HISTORY);
    bin(&mut nodes, "Mul", "s", NEXT_SAMPLE, "scaled");
    if cfg {
        nodes.push(node("Concat", "batch", &["scaled", "scaled"], &[UNET_IN], &[int_attribute("axis", 0)]));
    } else {
        nodes.push(node("Identity", "batch", &["scaled"], &[UNET_IN], &[]));
    }

    let latent = [Ok(1), Err("channels"), Err("height"), Err("width")];
    let batched = [Ok(if cfg { 2 } else { 1 }), Err("channels"), Err("height"), Err("width")];
    let mut graph = Message::default();
    for n in &nodes {
        graph.push_message(1, n);
    }
    graph.push_string(2, if cfg { "kiln_latent_step_cfg" } else { "kiln_latent_step" });
    for t in &inits {
        graph.push_message(5, t);
    }
    graph.push_message(11, &value_info(UNET_OUT, &batched));
    for name in [SAMPLE, HISTORY, NOISE] {
        graph.push_message(11, &value_info(name, &latent));
    }
    graph.push_message(11, &value_info(COEFFICIENTS, &[Ok(COEFFICIENT_COUNT as i64)]));
    graph.push_message(12, &value_info(NEXT_SAMPLE, &latent));
    graph.push_message(12, &value_info(NEXT_HISTORY, &latent));
    graph.push_message(12, &value_info(UNET_IN, &batched));
    let mut opset = Message::default();
    opset.push_string(1, "");
    opset.push_varint(2, 17);
    let mut model = Message::default();
    model.push_varint(1, 8); // ir_version
    model.push_string(2, "kiln");
    model.push_message(8, &opset);
    model.push_message(7, &graph);
    model.to_bytes()
}

/// A model's step graphs (with and without CFG), loaded on first use on the
/// runtime's providers, as the U-Net.
#[derive(Default)]
pub(crate) struct StepGraphs {
    graphs: Mutex<[Option<Arc<Graph>>; 2]>,
}

impl StepGraphs {
    /// The step graph for `cfg`, loading it the first time.
    pub(crate) fn get(&self, runtime: &Runtime, cfg: bool) -> Result<Arc<Graph>> {
        let mut graphs = self.graphs.lock();
        if let Some(g) = &graphs[cfg as usize] {
            return Ok(Arc::clone(g));
        }
        let name = if cfg { "latent_step_cfg" } else { "latent_step" };
        let source = GraphSource::memory(step_graph_bytes(cfg), std::env::temp_dir(), format!("Kiln's {name} graph"));
        // Its own group: the step graph stays loaded beside the U-Net.
        let group = ResidencyGroup::new(Residency::AllResident);
        let flags = SessionFlags { cuda_graph: false, uncached: true, lazy: false };
        let graph = Arc::new(Graph::load_flagged(runtime, name, source, &group, Default::default(), flags)?);
        graphs[cfg as usize] = Some(Arc::clone(&graph));
        Ok(graph)
    }
}
