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
//! with `m = u + g·(c − u)` (the CFG combine, in the host loop's order),
//! `unet_in` = `s·next_sample`, repeated B times along the batch: the next
//! U-Net call's input. For a job whose ControlNets read another sample than
//! the U-Net's (`ControlInput`), `control_row` = `s·next_sample` once
//! `[1, C, h, w]` (guess mode with CFG: the nets run on the conditional row
//! alone), or `control_in` below. ONNX Runtime computes every output of a
//! graph whether it is bound or not, so these exist only in the graphs that
//! need them.
//!
//! Inpainting (diffusers' `StableDiffusionInpaintPipeline`) adds inputs:
//!
//! * with a 9-channel inpainting U-Net (`Inpainting::Conditioned`),
//!   `conditioning` `[1, K, h, w]` (the mask, then the masked picture's
//!   latents) is appended to each batch row's `s·next_sample` along the
//!   channels, so `unet_in` is `[B, C + K, h, w]`; `control_in`
//!   `[B, C, h, w]` holds the rows without those channels, for a job's
//!   ControlNets (`ControlInput::Batched`);
//! * with an ordinary U-Net (`Inpainting::Blended`), the kept area is put
//!   back on the init picture's noise level after the step: `clean`,
//!   `start_noise`, `mask` and `keep` (= 1 − mask) `[1, C, h, w]`, and
//!   `kept_coefficients` `[2]` (p, q: the scheduler's `add_noise` at the next
//!   timestep, `p·clean + q·start_noise`; 1 and 0 after the last step) give
//!   `next_sample = keep·(p·clean + q·start_noise) + mask·x'` (the host loop's
//!   order), with `x'` the step's result above.
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
    /// 9-channel inpainting: the next U-Net input without the mask channels
    /// (what a ControlNet takes).
    pub const CONTROL_IN: &str = "control_in";
    /// One row of the next U-Net input, without inpainting channels: the
    /// ControlNets' input in guess mode with CFG.
    pub const CONTROL_ROW: &str = "control_row";
    /// Inpainting U-Net: the mask and the masked picture's latents.
    pub const CONDITIONING: &str = "conditioning";
    /// Blended inpainting: the init picture's latents.
    pub const CLEAN: &str = "clean";
    /// Blended inpainting: the noise added to `clean` at the start step.
    pub const START_NOISE: &str = "start_noise";
    /// Blended inpainting: 1 where the picture is repainted, at latent size.
    pub const MASK: &str = "mask";
    /// Blended inpainting: 1 − mask.
    pub const KEEP: &str = "keep";
    /// Blended inpainting: `add_noise`'s coefficients of `clean` and `start_noise`.
    pub const KEPT_COEFFICIENTS: &str = "kept_coefficients";
    /// ControlNet residual combine: each net's factor per residual.
    pub const FACTORS: &str = "factors";
}

/// How a step graph handles inpainting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Inpainting {
    /// No inpainting.
    None,
    /// A 9-channel inpainting U-Net: the next input carries the mask and the
    /// masked picture's latents.
    Conditioned,
    /// An ordinary U-Net: the kept area is blended back after each step.
    Blended,
}

/// Which extra output a step graph writes for the job's ControlNets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ControlInput {
    /// None: no ControlNets, or they read the U-Net's own input.
    None,
    /// `control_in`: the next U-Net input's rows without the inpainting
    /// U-Net's mask channels.
    Batched,
    /// `control_row`: one row of it (guess mode with CFG).
    Row,
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
    step_graph_bytes_for(cfg, Inpainting::None, ControlInput::None)
}

/// The step graph's ONNX bytes for `cfg`, an inpainting mode and the
/// ControlNets' input.
pub(crate) fn step_graph_bytes_for(cfg: bool, inpainting: Inpainting, control: ControlInput) -> Vec<u8> {
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
    if inpainting == Inpainting::Blended {
        bin(&mut nodes, "Add", "t2", "dz", "stepped");
        nodes.push(node("Slice", "coef_p", &[KEPT_COEFFICIENTS, "i0", "i1", "axis0"], &["p"], &[]));
        nodes.push(node("Slice", "coef_q", &[KEPT_COEFFICIENTS, "i1", "i2", "axis0"], &["q"], &[]));
        // kept = p·clean + q·start_noise (the scheduler's add_noise), then
        // (1 − mask)·kept + mask·stepped, as the host loop blends.
        bin(&mut nodes, "Mul", "p", CLEAN, "p_clean");
        bin(&mut nodes, "Mul", "q", START_NOISE, "q_noise");
        bin(&mut nodes, "Add", "p_clean", "q_noise", "kept");
        bin(&mut nodes, "Mul", KEEP, "kept", "keep_kept");
        bin(&mut nodes, "Mul", MASK, "stepped", "mask_stepped");
        bin(&mut nodes, "Add", "keep_kept", "mask_stepped", NEXT_SAMPLE);
    } else {
        bin(&mut nodes, "Add", "t2", "dz", NEXT_SAMPLE);
    }
    bin(&mut nodes, "Mul", "e", SAMPLE, "ex");
    bin(&mut nodes, "Mul", "f", "m", "fm");
    bin(&mut nodes, "Add", "ex", "fm", NEXT_HISTORY);
    bin(&mut nodes, "Mul", "s", NEXT_SAMPLE, "scaled");
    let row = if inpainting == Inpainting::Conditioned {
        // diffusers concatenates the mask channels after scale_model_input.
        nodes.push(node("Concat", "condition", &["scaled", CONDITIONING], &["row"], &[int_attribute("axis", 1)]));
        "row"
    } else {
        "scaled"
    };
    let batch = |nodes: &mut Vec<Message<'static>>, name: &str, row: &str, out: &str| {
        if cfg {
            nodes.push(node("Concat", name, &[row, row], &[out], &[int_attribute("axis", 0)]));
        } else {
            nodes.push(node("Identity", name, &[row], &[out], &[]));
        }
    };
    batch(&mut nodes, "batch", row, UNET_IN);
    match control {
        ControlInput::None => {}
        ControlInput::Batched => batch(&mut nodes, "control_batch", "scaled", CONTROL_IN),
        ControlInput::Row => nodes.push(node("Identity", "control_row", &["scaled"], &[CONTROL_ROW], &[])),
    }

    let latent = [Ok(1), Err("channels"), Err("height"), Err("width")];
    let batched = [Ok(if cfg { 2 } else { 1 }), Err("channels"), Err("height"), Err("width")];
    let unet_in_channels = if inpainting == Inpainting::Conditioned { "unet_channels" } else { "channels" };
    let batched_in = [Ok(if cfg { 2 } else { 1 }), Err(unet_in_channels), Err("height"), Err("width")];
    let mut graph = Message::default();
    for n in &nodes {
        graph.push_message(1, n);
    }
    graph.push_string(2, graph_name(cfg, inpainting));
    for t in &inits {
        graph.push_message(5, t);
    }
    graph.push_message(11, &value_info(UNET_OUT, &batched));
    for name in [SAMPLE, HISTORY, NOISE] {
        graph.push_message(11, &value_info(name, &latent));
    }
    graph.push_message(11, &value_info(COEFFICIENTS, &[Ok(COEFFICIENT_COUNT as i64)]));
    match inpainting {
        Inpainting::None => {}
        Inpainting::Conditioned => {
            graph.push_message(11, &value_info(CONDITIONING, &[Ok(1), Err("conditioning_channels"), Err("height"), Err("width")]));
        }
        Inpainting::Blended => {
            for name in [CLEAN, START_NOISE, MASK, KEEP] {
                graph.push_message(11, &value_info(name, &latent));
            }
            graph.push_message(11, &value_info(KEPT_COEFFICIENTS, &[Ok(2)]));
        }
    }
    graph.push_message(12, &value_info(NEXT_SAMPLE, &latent));
    graph.push_message(12, &value_info(NEXT_HISTORY, &latent));
    graph.push_message(12, &value_info(UNET_IN, &batched_in));
    match control {
        ControlInput::None => {}
        ControlInput::Batched => graph.push_message(12, &value_info(CONTROL_IN, &batched)),
        ControlInput::Row => graph.push_message(12, &value_info(CONTROL_ROW, &latent)),
    }
    model_bytes(&graph)
}

/// ONNX bytes of the graph that combines ControlNets' residuals on the
/// device: `nets` sets of `residuals` tensors (each residual its own
/// symbolic shape), inputs `in{j}_{i}` (net j, residual i) and `factors`
/// `[nets · residuals]` (net j's factor for residual i at `j · residuals + i`),
/// outputs `out_{i}` = `Σ_j in_j_i · f_ji` (each net's residuals scaled, then
/// added net by net, as the host loop does). With `last_row_only` (guess mode
/// in a CFG batch of 2, the nets run on the conditional row) each input's
/// last row is taken and the output is that sum after a row of zeros (the
/// unconditional half gets no residuals).
pub(crate) fn residual_combine_bytes(nets: usize, residuals: usize, last_row_only: bool) -> Vec<u8> {
    let mut graph = Message::default();
    // The last row, whatever the batch: rows -1 to the end.
    let mut inits = vec![int64_tensor("axis0", &[0]), int64_tensor("last", &[-1]), int64_tensor("end", &[i64::MAX])];
    for k in 0..=(nets * residuals) as i64 {
        inits.push(int64_tensor(&format!("k{k}"), &[k]));
    }
    for i in 0..residuals {
        let mut terms = Vec::with_capacity(nets);
        for j in 0..nets {
            let k = j * residuals + i;
            let f = format!("f{j}_{i}");
            graph.push_message(1, &node("Slice", &f, &[names::FACTORS, &format!("k{k}"), &format!("k{}", k + 1), "axis0"], &[&f], &[]));
            let input = format!("in{j}_{i}");
            let x = if last_row_only {
                let row = format!("row{j}_{i}");
                graph.push_message(1, &node("Slice", &row, &[&input, "last", "end", "axis0"], &[&row], &[]));
                row
            } else {
                input
            };
            let term = format!("scaled{j}_{i}");
            graph.push_message(1, &node("Mul", &term, &[&x, &f], &[&term], &[]));
            terms.push(term);
        }
        let out = format!("out_{i}");
        let sum = if last_row_only { format!("sum_{i}") } else { out.clone() };
        let refs: Vec<&str> = terms.iter().map(String::as_str).collect();
        graph.push_message(1, &node("Sum", &format!("sum_{i}"), &refs, &[&sum], &[]));
        if last_row_only {
            let (shape, zeros) = (format!("shape_{i}"), format!("zeros_{i}"));
            graph.push_message(1, &node("Shape", &shape, &[&sum], &[&shape], &[]));
            graph.push_message(1, &node("ConstantOfShape", &zeros, &[&shape], &[&zeros], &[]));
            graph.push_message(1, &node("Concat", &out, &[&zeros, &sum], &[&out], &[int_attribute("axis", 0)]));
        }
    }
    graph.push_string(2, "kiln_residual_combine");
    for t in &inits {
        graph.push_message(5, t);
    }
    let dims: Vec<[String; 4]> = (0..residuals).map(|i| ["batch".to_string(), format!("c{i}"), format!("h{i}"), format!("w{i}")]).collect();
    let shape = |i: usize| -> Vec<Result<i64, &str>> { dims[i].iter().map(|d| Err(d.as_str())).collect() };
    for j in 0..nets {
        for i in 0..residuals {
            graph.push_message(11, &value_info(&format!("in{j}_{i}"), &shape(i)));
        }
    }
    graph.push_message(11, &value_info(names::FACTORS, &[Ok((nets * residuals) as i64)]));
    for i in 0..residuals {
        let mut out = shape(i);
        if last_row_only {
            out[0] = Err("out_batch"); // the inputs' rows (1 or 2) after a row of zeros
        }
        graph.push_message(12, &value_info(&format!("out_{i}"), &out));
    }
    model_bytes(&graph)
}

/// A ModelProto around `graph`: IR version 8, the default domain at opset 17.
fn model_bytes(graph: &Message<'_>) -> Vec<u8> {
    let mut opset = Message::default();
    opset.push_string(1, "");
    opset.push_varint(2, 17);
    let mut model = Message::default();
    model.push_varint(1, 8); // ir_version
    model.push_string(2, "kiln");
    model.push_message(8, &opset);
    model.push_message(7, graph);
    model.to_bytes()
}

/// The ONNX graph's name for `cfg` and `inpainting`.
fn graph_name(cfg: bool, inpainting: Inpainting) -> &'static str {
    match (cfg, inpainting) {
        (true, Inpainting::None) => "kiln_latent_step_cfg",
        (false, Inpainting::None) => "kiln_latent_step",
        (true, Inpainting::Conditioned) => "kiln_latent_step_cfg_inpaint_unet",
        (false, Inpainting::Conditioned) => "kiln_latent_step_inpaint_unet",
        (true, Inpainting::Blended) => "kiln_latent_step_cfg_inpaint_blend",
        (false, Inpainting::Blended) => "kiln_latent_step_inpaint_blend",
    }
}

/// A model's step graphs (with and without CFG, per inpainting mode and
/// ControlNet input), loaded on first use on the runtime's providers, as the
/// U-Net.
#[derive(Default)]
pub(crate) struct StepGraphs {
    graphs: Mutex<std::collections::HashMap<(bool, Inpainting, ControlInput), Arc<Graph>>>,
    /// ControlNet residual combines by (nets, residuals, last row only).
    combines: Mutex<std::collections::HashMap<(usize, usize, bool), Arc<Graph>>>,
}

impl StepGraphs {
    /// The step graph for `cfg`, `inpainting` and `control`, loading it the first time.
    pub(crate) fn get(&self, runtime: &Runtime, cfg: bool, inpainting: Inpainting, control: ControlInput) -> Result<Arc<Graph>> {
        let key = (cfg, inpainting, control);
        let mut graphs = self.graphs.lock();
        if let Some(g) = graphs.get(&key) {
            return Ok(Arc::clone(g));
        }
        // Graph names are &'static str (strip the "kiln_" of the ONNX name).
        let name = &graph_name(cfg, inpainting)["kiln_".len()..];
        let bytes = step_graph_bytes_for(cfg, inpainting, control);
        let source = GraphSource::memory(bytes, std::env::temp_dir(), format!("Kiln's {name} graph"));
        // Its own group: the step graph stays loaded beside the U-Net.
        let group = ResidencyGroup::new(Residency::AllResident);
        let flags = SessionFlags { cuda_graph: false, uncached: true, lazy: false };
        let graph = Arc::new(Graph::load_flagged(runtime, name, source, &group, Default::default(), flags)?);
        graphs.insert(key, Arc::clone(&graph));
        Ok(graph)
    }

    /// The graph combining `nets` ControlNets' `residuals` residuals
    /// ([`residual_combine_bytes`]), loading it the first time.
    pub(crate) fn residual_combine(&self, runtime: &Runtime, nets: usize, residuals: usize, last_row_only: bool) -> Result<Arc<Graph>> {
        let mut combines = self.combines.lock();
        let key = (nets, residuals, last_row_only);
        if let Some(g) = combines.get(&key) {
            return Ok(Arc::clone(g));
        }
        let bytes = residual_combine_bytes(nets, residuals, last_row_only);
        let source = GraphSource::memory(bytes, std::env::temp_dir(), "Kiln's ControlNet residual combine graph".to_string());
        let group = ResidencyGroup::new(Residency::AllResident);
        let flags = SessionFlags { cuda_graph: false, uncached: true, lazy: false };
        let graph = Arc::new(Graph::load_flagged(runtime, "residual_combine", source, &group, Default::default(), flags)?);
        combines.insert(key, Arc::clone(&graph));
        Ok(graph)
    }
}
