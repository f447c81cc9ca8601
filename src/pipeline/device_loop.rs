//! The denoising loop with the latents kept where the U-Net runs
//! (`ProviderPolicy::device_latents`).
//!
//! The host loop copies the U-Net's input to the device and its output back
//! at every step, and does the guidance combine and the scheduler step on the
//! host. Here the U-Net's input and output, the latents and the scheduler's
//! history are tensors allocated on the U-Net's device and bound once (ONNX
//! Runtime I/O binding); after each U-Net call the step graph
//! ([`crate::model::step_graph`]) combines the guidance, steps the scheduler
//! and writes the next U-Net input, all on the device. What crosses per step
//! is a few bytes: the timestep, eight coefficients computed on the host by
//! [`Scheduler::linear_step`], and, for stochastic schedulers, the step's
//! noise (drawn on the host from the same seeded stream as the host loop, so
//! the images are the same). The final latents come back once for the VAE,
//! and a step's latents come back only when a preview of it was asked for
//! ([`super::StepLatents`]).
//!
//! Inpainting runs here too: a 9-channel inpainting U-Net gets the mask and
//! the masked picture's latents appended to each input by the step graph, and
//! with an ordinary U-Net the step graph blends the kept area back on the init
//! latents noised to the next timestep, from two `add_noise` coefficients per
//! step ([`DeviceInpainting`]).
//!
//! Under per-stage residency the U-Net's session can be released during the
//! loop (a job's preview decoded with the VAE, another generation on the
//! model): the loop's tensors then come from the step graph's session (which
//! stays loaded), each U-Net and ControlNet run checks it is still in the
//! session its binding was made in, and binds the same tensors again in the
//! reopened one if not.
//!
//! With CUDA graph replay (`ProviderPolicy::cuda_graph`, the specialised
//! U-Net's session captured by ONNX Runtime) every U-Net input and its output
//! live in device buffers bound once at fixed addresses ([`FixedUnetIo`], kept
//! on the graph between generations): the step graph writes the next sample
//! into the bound sample buffer, the timestep is copied into its buffer each
//! step, and the run names its own captured graph (`gpu_graph_id`), apart
//! from the host loop's. The internal test switch
//! `ProviderPolicy::fixed_unet_buffers` takes that path on any provider, so
//! CI runs it on the CPU (without a capture).
//!
//! In a ControlNet folder the loop runs `unet_controlnet` (or the graph
//! specialised from it), as plain host-loop calls do, so `unet/` is never
//! opened: its zero residuals are bound among the inputs that stay the same
//! through the loop ([`UnetChoice::Residual`]). A ControlNet job runs its
//! nets on the device too ([`DeviceControls`]): they read the U-Net's bound
//! sample and write their residuals into the tensors `unet_controlnet`
//! reads, so neither the latents nor the residuals leave the device.
//!
//! It runs on the CUDA provider (device memory) and on the CPU provider (host
//! memory, the same code; this is how CI tests it). A request it cannot run
//! goes through the host loop, and the reason is logged once per generation:
//! schedulers whose step is not linear or keeps host state (PNDM, LMS, Heun,
//! UniPC; DDIM and LCM with clipping or thresholding), guidance rescale,
//! U-Nets run as two batch-1 calls for CFG, float16
//! U-Net inputs or outputs, and other execution providers; also a CUDA graph capture ONNX Runtime refuses on the first
//! step (that shape then runs the dynamic U-Net).
use ndarray::{ArrayD, IxDyn};
use ort::memory::Allocator;
use ort::session::{IoBinding, RunOptions};
use ort::value::{DynTensor, Tensor, TensorElementType};

use std::sync::Arc;

use super::control::{self, ActiveControls};
use super::{specialised_graph, specialised_unet, unet_inputs, StepLatents, StepProgress};
use crate::error::{Error, ErrorKind, Result};
use crate::model::controlnet::ResidualUnet;
use crate::model::graph::{self, Graph, GraphInput, TensorSpec};
use crate::model::static_unet::Specialised;
use crate::model::step_graph::{names, ControlInput, Inpainting, COEFFICIENT_COUNT};
use crate::model::{ModelInner, UnetIo};
use crate::scheduler::{NoiseSource, Scheduler};

/// What a generation hands to the device loop.
pub(crate) struct DeviceRequest<'a> {
    /// The latents at the first step, `[1, C, h, w]`.
    pub latents: ArrayD<f32>,
    /// Index of the first step in the scheduler's schedule.
    pub start: usize,
    /// Timesteps of the steps to run.
    pub timesteps: &'a [f64],
    /// Text embeddings: `[2, L, D]` (unconditional, conditional) with CFG, else `[1, L, D]`.
    pub embeds: &'a ArrayD<f32>,
    /// SDXL's added conditioning, batched as `embeds`.
    pub added: Option<&'a ArrayD<f32>>,
    /// The LCM guidance embedding.
    pub w: Option<&'a Vec<f32>>,
    /// Guidance scale (used when `cfg`).
    pub guidance: f32,
    /// Whether the U-Net runs a CFG batch of 2.
    pub cfg: bool,
    /// Inpainting, as the host loop does it.
    pub inpainting: DeviceInpainting<'a>,
    /// The generation's ControlNets, run on the device before each U-Net call.
    pub controls: Option<&'a ActiveControls>,
    /// U-Net calls the ControlNets' start/end window is a fraction of.
    pub control_total: usize,
}

/// Inpainting in the device loop (diffusers' `StableDiffusionInpaintPipeline`).
#[derive(Clone, Copy)]
pub(crate) enum DeviceInpainting<'a> {
    /// No inpainting.
    None,
    /// A 9-channel inpainting U-Net: `[1, 1 + C, h, w]`, the mask then the
    /// masked picture's latents, appended to each U-Net input row.
    Conditioned(&'a ArrayD<f32>),
    /// An ordinary U-Net: after each step the kept area is put back on the
    /// init picture's latents (`clean`) noised to the next timestep with the
    /// start noise; `mask` is 1 where the picture is repainted, `[1, C, h, w]`.
    Blended { clean: &'a ArrayD<f32>, start_noise: &'a ArrayD<f32>, mask: &'a ArrayD<f32> },
}

impl DeviceInpainting<'_> {
    fn mode(&self) -> Inpainting {
        match self {
            Self::None => Inpainting::None,
            Self::Conditioned(_) => Inpainting::Conditioned,
            Self::Blended { .. } => Inpainting::Blended,
        }
    }

    /// Channels the U-Net's input has beyond the latents'.
    fn extra_channels(&self) -> usize {
        match self {
            Self::Conditioned(c) => c.shape()[1],
            _ => 0,
        }
    }
}

/// The coefficients `(p, q)` of the scheduler's `add_noise` at step `index`:
/// `add_noise(x, n) = p·x + q·n` for every scheduler (a linear map, probed
/// with unit inputs, so the values are the scheduler's own float32 ones).
fn add_noise_coefficients(scheduler: &dyn Scheduler, index: usize) -> Result<(f32, f32)> {
    let (one, zero) = (ArrayD::from_elem(IxDyn(&[1]), 1.0f32), ArrayD::from_elem(IxDyn(&[1]), 0.0f32));
    let p = scheduler.add_noise(&one, &zero, index)?;
    let q = scheduler.add_noise(&zero, &one, index)?;
    Ok((p[0], q[0]))
}

/// The U-Net graph the device loop would run, or why it cannot run.
pub(crate) fn plan(m: &ModelInner, scheduler: &dyn Scheduler, r: &DeviceRequest<'_>) -> std::result::Result<UnetChoice, String> {
    for k in 0..r.timesteps.len() {
        if scheduler.linear_step(r.start + k, k).is_none() {
            return Err("this scheduler's step (with these settings) is not a linear map".into());
        }
    }
    let t0 = r.timesteps.first().copied().unwrap_or(0.0);
    let batch = if r.cfg { 2 } else { 1 };
    let channels = r.latents.shape()[1] + r.inpainting.extra_channels();
    let probe = ArrayD::zeros(IxDyn(&[batch, channels, r.latents.shape()[2], r.latents.shape()[3]]));
    let inputs = unet_inputs(m, probe, t0, r.embeds.clone(), r.added, r.w).map_err(|e| e.message().to_string())?;
    // ControlNet jobs run `unet_controlnet`, their residuals written into
    // its bound inputs on the device. In a ControlNet folder plain calls run
    // it too (one copy of the weights), with zero residuals bound once.
    let residual = match r.controls {
        Some(c) => {
            if let Some(why) = c.device_refusal() {
                return Err(why);
            }
            Some(Arc::clone(&c.unet))
        }
        None if m.unet.is_loaded() => None,
        None => m.residual_unet_for_plain_calls(),
    };
    let choice = match residual {
        Some(residual) => {
            let specialised = {
                let mapped = control::zero_residual_inputs(m, &residual, inputs).map_err(|e| e.message().to_string())?;
                specialised_graph(m, &residual.graph, &residual.static_unets, &residual.io.output, &mapped)
            };
            UnetChoice::Residual(residual, specialised)
        }
        None => match specialised_unet(m, &inputs) {
            Some((s, key)) => UnetChoice::Static(s, key),
            None => UnetChoice::Dynamic,
        },
    };
    let (unet, io) = (choice.graph(m), choice.io(m));
    let float32 = |s: &TensorSpec| s.ty == TensorElementType::Float32;
    if !float32(&io.sample) {
        return Err(format!("the U-Net's sample input is {:?}, not float32", io.sample.ty));
    }
    match unet.outputs.iter().find(|o| o.name == io.output) {
        Some(o) if float32(o) => {}
        Some(o) => return Err(format!("the U-Net's output is {:?}, not float32", o.ty)),
        None => return Err("the U-Net's output is not declared".into()),
    }
    if let Some(c) = r.controls {
        if let Some(j) = (0..c.len()).find(|&j| c.net(j).graph.provider.primary() != unet.provider.primary()) {
            return Err(format!("ControlNet {:?} runs on another provider than the U-Net", c.net(j).name));
        }
    }
    match unet.provider.primary() {
        crate::runtime::Provider::Cpu | crate::runtime::Provider::Cuda => Ok(choice),
        other => Err(format!("device-resident latents are not implemented for {}", other.ort_name())),
    }
}

/// Which U-Net graph runs.
pub(crate) enum UnetChoice {
    /// The model's own U-Net.
    Dynamic,
    /// The U-Net specialised to this job's shapes (`ProviderPolicy::static_unet`),
    /// with the key it is kept under.
    Static(Arc<Specialised>, Vec<Vec<usize>>),
    /// `unet_controlnet`, specialised to this job's shapes when the runtime
    /// asks for the static U-Net: for ControlNet jobs (their residuals
    /// written in by [`DeviceControls`]) and for plain ones in a ControlNet
    /// folder (zero residuals; see `ModelInner::residual_unet_for_plain_calls`).
    Residual(Arc<ResidualUnet>, Option<(Arc<Specialised>, Vec<Vec<usize>>)>),
}

impl UnetChoice {
    fn graph<'a>(&'a self, m: &'a ModelInner) -> &'a Graph {
        match self {
            Self::Dynamic => &m.unet,
            Self::Static(s, _) | Self::Residual(_, Some((s, _))) => &s.graph,
            Self::Residual(r, None) => &r.graph,
        }
    }

    /// How the graph takes its ordinary inputs.
    fn io<'a>(&'a self, m: &'a ModelInner) -> &'a UnetIo {
        match self {
            Self::Residual(r, _) => &r.io,
            _ => &m.unet_io,
        }
    }

    /// One call's inputs for the graph (`pipeline::unet_inputs`'s, with zero
    /// residuals for `unet_controlnet`): the sample, the timestep, then the
    /// inputs that stay the same through the loop.
    fn inputs<'a>(
        &'a self,
        m: &'a ModelInner,
        sample: ArrayD<f32>,
        t: f64,
        embeds: ArrayD<f32>,
        added: Option<&ArrayD<f32>>,
        w: Option<&Vec<f32>>,
    ) -> Result<Vec<(&'a TensorSpec, GraphInput)>> {
        let plain = unet_inputs(m, sample, t, embeds, added, w)?;
        match self {
            Self::Residual(r, _) => control::zero_residual_inputs(m, r, plain),
            _ => Ok(plain),
        }
    }

    /// The timestep input of one call, as the graph declares it.
    fn timestep(&self, m: &ModelInner, t: f64, batch: usize) -> ArrayD<f32> {
        control::timestep(&self.io(m).timestep, t, batch)
    }

    /// Stops using a specialised graph whose CUDA graph capture was refused;
    /// false for a dynamic graph (nothing to give up).
    fn give_up(&self, m: &ModelInner, e: &Error) -> bool {
        match self {
            Self::Static(_, key) => m.static_unets.give_up(&m.runtime, key.clone(), e),
            Self::Residual(r, Some((_, key))) => r.static_unets.give_up(&m.runtime, key.clone(), e),
            _ => return false,
        }
        true
    }
}

/// Observers of the loop.
pub(crate) struct DeviceHooks<'a, 'f> {
    pub cancelled: &'a (dyn Fn() -> bool + 'a),
    pub on_step: Option<&'a mut (dyn FnMut(&StepProgress<'_>) + 'f)>,
    pub step_latents: StepLatents,
    pub run_options: Option<&'a RunOptions>,
}

fn fail(what: &str) -> impl Fn(ort::Error) -> Error + '_ {
    move |e| Error::new(ErrorKind::Inference, format!("device-resident latents: {what}: {e}"))
}

/// A float32 tensor on the device holding `host`'s values.
fn upload(allocator: &Allocator, host: &ArrayD<f32>) -> Result<DynTensor> {
    let mut dev = device_tensor(allocator, host.shape())?;
    host_tensor(host.iter().copied().collect(), host.shape())?.copy_into(&mut dev).map_err(fail("copying to the device"))?;
    Ok(dev)
}

/// An uninitialised float32 device tensor (written by a graph before it is read).
fn device_tensor(allocator: &Allocator, shape: &[usize]) -> Result<DynTensor> {
    DynTensor::new(allocator, TensorElementType::Float32, shape.iter().map(|&d| d as i64).collect::<Vec<_>>())
        .map_err(fail("allocating a device tensor"))
}

/// A host float32 tensor for binding (ONNX Runtime copies it to the device).
fn host_tensor(data: Vec<f32>, shape: &[usize]) -> Result<DynTensor> {
    let shape: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_array((shape, data)).map_err(fail("making a host tensor"))?.upcast())
}

/// Copies a device tensor back to the host.
fn download(graph_name: &str, dev: &DynTensor) -> Result<ArrayD<f32>> {
    let host = dev.to(ort::memory::AllocationDevice::CPU, 0).map_err(fail("copying latents to the host"))?;
    graph::to_f32(graph_name, "latents", &host)
}

/// The U-Net's bindings for one generation's loop.
///
/// Without fixed buffers (the default) the sample and output are device
/// tensors made for this generation, the constant inputs are bound as host
/// tensors (ONNX Runtime copies them to the device when they are bound), and
/// the timestep is bound again each step. With fixed buffers every input and
/// the output is a device tensor bound once and written by copy, at addresses
/// that stay the same for as long as the U-Net's session: what ONNX Runtime's
/// CUDA graph replay needs (it replays the kernels it captured, on the
/// addresses it captured). Those are kept on the graph (`Graph::fixed_io`)
/// for the next generation of the same shapes.
pub(crate) struct FixedUnetIo {
    /// Names, element types and shapes of the inputs (sample, timestep, then
    /// the constant ones), then the output's: a generation with another
    /// layout makes new buffers.
    layout: Vec<(String, TensorElementType, Vec<i64>)>,
    /// The U-Net session the binding belongs to (`Graph::session_epoch`).
    epoch: u64,
    // Fields drop in order: the tensors before the binding, whose reference
    // keeps the session (and so the allocator they came from) alive.
    sample: DynTensor,
    /// The timestep's device buffer (fixed buffers only).
    timestep: Option<DynTensor>,
    /// The constant inputs' device buffers (fixed buffers only).
    constants: Vec<DynTensor>,
    output: DynTensor,
    /// Run options naming the captured graph (`gpu_graph_id`), for a session
    /// with CUDA graph replay: its default graph is the host loop's, whose
    /// buffers (`static_unet::BoundIo`) are at other addresses.
    graph_options: Option<RunOptions>,
    binding: IoBinding,
}

/// ONNX Runtime's graph annotation id for the device loop's capture (0, the
/// default, is the host loop's; -1 turns capture off; see ONNX Runtime's
/// `kOrtRunOptionsConfigCudaGraphAnnotation`).
const DEVICE_LOOP_GRAPH_ID: &str = "1";

fn layout_of(values: &[(String, DynTensor)], output: &str, output_shape: &[usize]) -> Vec<(String, TensorElementType, Vec<i64>)> {
    let mut layout: Vec<_> = values.iter().map(|(n, v)| (n.clone(), *v.data_type(), v.shape().to_vec())).collect();
    layout.push((output.to_string(), TensorElementType::Float32, output_shape.iter().map(|&d| d as i64).collect()));
    layout
}

impl FixedUnetIo {
    /// Binds `values` (sample, timestep, then the constant inputs, as host
    /// tensors) and a float32 output of `output_shape`; `fixed`: every input on
    /// a device buffer of its own (see the type).
    fn new(
        unet: &Graph,
        allocator: &Allocator,
        values: &[(String, DynTensor)],
        (output, output_shape): (&str, &[usize]),
        fixed: bool,
    ) -> Result<Self> {
        let (mut binding, epoch) = unet.create_binding_in_session()?;
        let layout = layout_of(values, output, output_shape);
        let [(sample_name, sample_host), (timestep_name, timestep_host), constant_values @ ..] = values else {
            return Err(Error::internal("the U-Net's inputs lack the sample or the timestep"));
        };
        let sample = device_tensor(allocator, &sample_host.shape().iter().map(|&d| d as usize).collect::<Vec<_>>())?;
        binding.bind_input(sample_name.as_str(), &sample).map_err(fail("binding the U-Net's sample"))?;
        let mut timestep = None;
        let mut constants = Vec::new();
        if fixed {
            let dev = DynTensor::new(allocator, *timestep_host.data_type(), timestep_host.shape().to_vec())
                .map_err(fail("allocating the timestep's device buffer"))?;
            binding.bind_input(timestep_name.as_str(), &dev).map_err(fail("binding the timestep"))?;
            timestep = Some(dev);
        }
        for (name, host) in constant_values {
            if fixed {
                let dev = DynTensor::new(allocator, *host.data_type(), host.shape().to_vec()).map_err(fail("allocating a U-Net input"))?;
                binding.bind_input(name.as_str(), &dev).map_err(fail("binding a U-Net input"))?;
                constants.push(dev);
            } else {
                binding.bind_input(name.as_str(), host).map_err(fail("binding a U-Net input"))?;
            }
        }
        let mut out = device_tensor(allocator, output_shape)?;
        binding.bind_output(output, &mut out).map_err(fail("binding the U-Net's output"))?;
        let graph_options = if fixed && unet.uses_cuda_graph() {
            let mut o = RunOptions::new().map_err(fail("making run options"))?;
            o.set("gpu_graph_id", DEVICE_LOOP_GRAPH_ID).map_err(fail("naming the CUDA graph"))?;
            Some(o)
        } else {
            None
        };
        Ok(Self { layout, epoch, binding, sample, timestep, constants, output: out, graph_options })
    }

    /// Binds the same tensors again in the U-Net's current session, after
    /// per-stage residency released the one the binding was made in (a preview
    /// decoded with the VAE, or another job on the model, ran in between). The
    /// tensors do not come from the released session's allocator (see `run`),
    /// so they are still valid; `values` as for `new`.
    fn rebind(&mut self, unet: &Graph, values: &[(String, DynTensor)], output: &str) -> Result<()> {
        let (mut binding, epoch) = unet.create_binding_in_session()?;
        let [(sample_name, _), (timestep_name, _), constant_values @ ..] = values else {
            return Err(Error::internal("the U-Net's inputs lack the sample or the timestep"));
        };
        binding.bind_input(sample_name.as_str(), &self.sample).map_err(fail("binding the U-Net's sample"))?;
        if let Some(t) = &self.timestep {
            binding.bind_input(timestep_name.as_str(), t).map_err(fail("binding the timestep"))?;
        }
        if self.timestep.is_some() {
            for ((name, _), dev) in constant_values.iter().zip(&self.constants) {
                binding.bind_input(name.as_str(), dev).map_err(fail("binding a U-Net input"))?;
            }
        } else {
            for (name, host) in constant_values {
                binding.bind_input(name.as_str(), host).map_err(fail("binding a U-Net input"))?;
            }
        }
        binding.bind_output(output, &mut self.output).map_err(fail("binding the U-Net's output"))?;
        (self.binding, self.epoch) = (binding, epoch);
        Ok(())
    }

    /// Fixed buffers: writes this generation's constant inputs into them.
    fn load_constants(&mut self, values: &[(String, DynTensor)]) -> Result<()> {
        for (dev, (_, host)) in self.constants.iter_mut().zip(values.iter().skip(2)) {
            host.copy_into(&mut *dev).map_err(fail("copying a U-Net input to the device"))?;
        }
        Ok(())
    }
}

/// How a loop ended.
pub(crate) enum DeviceOutcome {
    /// Every step ran: the final latents and the number of steps.
    Done(ArrayD<f32>, usize),
    /// ONNX Runtime refused the U-Net's CUDA graph capture on the first call,
    /// before anything was drawn or reported: the caller runs the host loop
    /// (the shape now runs the dynamic U-Net, logged). Holds the reason.
    CaptureRefused(String),
}

/// Marks, per thread, the graphs whose fixed U-Net buffers that thread's
/// job holds, so a nested generation on the same thread (from a step hook)
/// is refused instead of waiting for its own caller.
struct HeldFixedBuffers(usize);

thread_local! {
    static HELD_FIXED_BUFFERS: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl HeldFixedBuffers {
    fn key(unet: &Graph) -> usize {
        unet as *const Graph as usize
    }

    fn held_here(unet: &Graph) -> bool {
        HELD_FIXED_BUFFERS.with(|h| h.borrow().contains(&Self::key(unet)))
    }

    fn mark(unet: &Graph) -> Self {
        HELD_FIXED_BUFFERS.with(|h| h.borrow_mut().push(Self::key(unet)));
        HeldFixedBuffers(Self::key(unet))
    }
}

impl Drop for HeldFixedBuffers {
    fn drop(&mut self) {
        HELD_FIXED_BUFFERS.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|&k| k == self.0) {
                h.swap_remove(i);
            }
        });
    }
}

/// Runs the denoising loop on the device.
pub(crate) fn run(
    m: &ModelInner,
    unet_choice: &UnetChoice,
    scheduler: &dyn Scheduler,
    r: DeviceRequest<'_>,
    noise: &mut dyn NoiseSource,
    hooks: DeviceHooks<'_, '_>,
) -> Result<DeviceOutcome> {
    let unet = unet_choice.graph(m);
    // Where the ControlNets read their sample, when not from the U-Net's:
    // in guess mode with CFG they run on the conditional row alone, as
    // diffusers does (`control_row`), and a 9-channel inpainting U-Net's
    // nets take its input without the mask channels (`control_in`); the step
    // graph writes either after each step.
    let guess_row = r.cfg && r.controls.is_some_and(|c| c.guess_mode());
    let control_input = match (r.controls, r.inpainting) {
        (None, _) => ControlInput::None,
        (Some(_), _) if guess_row => ControlInput::Row,
        (Some(_), DeviceInpainting::Conditioned(_)) => ControlInput::Batched,
        (Some(_), _) => ControlInput::None,
    };
    let step_graph = m.step_graphs.get(&m.runtime, r.cfg, r.inpainting.mode(), control_input)?;
    // Per-stage residency may release the U-Net's session during the loop
    // (a preview decoded with the VAE, another job on the model): the tensors
    // then come from the step graph's session, which stays loaded (an
    // allocator made from a session is valid only while that session lives).
    // `step_graph` is declared before them, so it outlives them.
    let per_stage = unet.per_stage();
    let allocator_graph = if per_stage { &*step_graph } else { unet };
    if allocator_graph.provider.primary() != unet.provider.primary() {
        return Err(Error::internal(format!(
            "the step graph runs on {} but the U-Net on {}",
            step_graph.provider.primary().ort_name(),
            unet.provider.primary().ort_name()
        )));
    }
    let allocator = allocator_graph
        .device_allocator()?
        .ok_or_else(|| Error::internal("device-resident latents planned for a provider without a device allocator"))?;
    let latent_shape = r.latents.shape().to_vec();
    let batch = if r.cfg { 2 } else { 1 };
    let mut batched_shape = latent_shape.clone();
    batched_shape[0] = batch;
    let total = r.timesteps.len();
    // CUDA graph replay reads the addresses it captured: bind everything once.
    let fixed = unet.uses_cuda_graph() || m.runtime.inner.providers.fixed_unet_buffers;
    // Buffers kept on the graph must not outlive their allocator's session:
    // under per-stage residency they live for this loop only.
    let keep = fixed && !per_stage;

    // The first U-Net input is made on the host; every later one by the step graph.
    let scale0 = scheduler.input_scale(r.start);
    let batched = |row: &ArrayD<f32>| -> Result<ArrayD<f32>> {
        match r.cfg {
            true => ndarray::concatenate(ndarray::Axis(0), &[row.view(), row.view()]).map_err(|e| Error::internal(e.to_string())),
            false => Ok(row.clone()),
        }
    };
    let scaled = r.latents.mapv(|x| x * scale0);
    let control_sample = match control_input {
        ControlInput::None => None,
        ControlInput::Row => Some((names::CONTROL_ROW, upload(&allocator, &scaled)?)),
        ControlInput::Batched => Some((names::CONTROL_IN, upload(&allocator, &batched(&scaled)?)?)),
    };
    let first_in = match r.inpainting {
        DeviceInpainting::Conditioned(c) => {
            batched(&ndarray::concatenate(ndarray::Axis(1), &[scaled.view(), c.view()]).map_err(|e| Error::internal(e.to_string()))?)?
        }
        _ => batched(&scaled)?,
    };
    let zeros = ArrayD::<f32>::zeros(IxDyn(&latent_shape));
    let mut samples = [upload(&allocator, &r.latents)?, device_tensor(&allocator, &latent_shape)?];
    let mut histories = [upload(&allocator, &zeros)?, device_tensor(&allocator, &latent_shape)?];
    let no_noise = upload(&allocator, &zeros)?;

    // The U-Net's inputs as host tensors: sample, timestep, then the constants.
    let io = unet_choice.io(m);
    let t0 = r.timesteps.first().copied().unwrap_or(0.0);
    let mut values = Vec::new();
    for (spec, data) in unet_choice.inputs(m, first_in.clone(), t0, r.embeds.clone(), r.added, r.w)? {
        values.push((spec.name.clone(), unet.to_value(spec, data)?));
    }
    let mut own;
    let mut kept;
    // Declared after `kept`, so dropped before the buffers' lock is released.
    let mut _held = None;
    let buffers: &mut FixedUnetIo = if keep {
        // This thread's own outer job holds them (a generation started from
        // its step hook): waiting would wait for itself, forever.
        if HeldFixedBuffers::held_here(unet) {
            return Err(Error::new(
                ErrorKind::Busy,
                "this thread's running job holds the U-Net's fixed buffers (CUDA graph replay); \
                 a generation started from its step hook or callback on the same model would wait for itself: \
                 start it from another thread or submit it as a job",
            ));
        }
        // Another job on this model holds the buffers for its whole loop:
        // wait in slices so that this one's cancel is still honoured.
        kept = loop {
            if let Some(guard) = unet.fixed_io.try_lock_for(std::time::Duration::from_millis(20)) {
                break guard;
            }
            if (hooks.cancelled)() {
                return Err(Error::new(ErrorKind::Cancelled, "generation cancelled while waiting for the U-Net's fixed buffers"));
            }
        };
        _held = Some(HeldFixedBuffers::mark(unet));
        let layout = layout_of(&values, &io.output, &batched_shape);
        if !kept.as_ref().is_some_and(|b| b.layout == layout) {
            *kept = None;
            *kept = Some(FixedUnetIo::new(unet, &allocator, &values, (&io.output, &batched_shape), true)?);
            m.runtime.logger().info(&format!(
                "latents: U-Net buffers bound at fixed addresses for {:?}{}",
                batched_shape,
                if unet.uses_cuda_graph() { " (CUDA graph replay)" } else { "" }
            ));
        }
        let b = kept.as_mut().ok_or_else(|| Error::internal("fixed U-Net buffers missing after they were made"))?;
        b.load_constants(&values)?;
        b
    } else {
        own = FixedUnetIo::new(unet, &allocator, &values, (&io.output, &batched_shape), fixed)?;
        if fixed {
            own.load_constants(&values)?;
        }
        &mut own
    };
    host_tensor(first_in.iter().copied().collect(), first_in.shape())?
        .copy_into(&mut buffers.sample)
        .map_err(fail("copying to the device"))?;

    let mut step_binding: IoBinding = step_graph.create_binding()?;
    step_binding.bind_output(names::UNET_IN, &mut buffers.sample).map_err(fail("binding the next U-Net input"))?;
    let mut control_sample = control_sample;
    if let Some((output, c)) = control_sample.as_mut() {
        step_binding.bind_output(*output, c).map_err(fail("binding the next ControlNet input"))?;
    }
    // Inpainting's inputs are the same at every step: on the device once.
    let mut inpainting_inputs = Vec::new();
    match r.inpainting {
        DeviceInpainting::None => {}
        DeviceInpainting::Conditioned(c) => inpainting_inputs.push((names::CONDITIONING, upload(&allocator, c)?)),
        DeviceInpainting::Blended { clean, start_noise, mask } => {
            inpainting_inputs.push((names::CLEAN, upload(&allocator, clean)?));
            inpainting_inputs.push((names::START_NOISE, upload(&allocator, start_noise)?));
            inpainting_inputs.push((names::MASK, upload(&allocator, mask)?));
            // 1 − mask in float32, as the host loop's blend computes it.
            inpainting_inputs.push((names::KEEP, upload(&allocator, &mask.mapv(|w| 1.0 - w))?));
        }
    }

    let mut controls = match r.controls {
        Some(c) => Some(DeviceControls::new(c, r.control_total, &allocator, buffers, &values, r.embeds, r.added, guess_row)?),
        None => None,
    };

    let run_options = hooks.run_options;
    let mut on_step = hooks.on_step;
    for (k, &t) in r.timesteps.iter().enumerate() {
        let i = r.start + k;
        if (hooks.cancelled)() {
            return Err(Error::new(ErrorKind::Cancelled, format!("generation cancelled before step {}", k + 1)));
        }
        let timestep = unet.to_value(&io.timestep, GraphInput::Float(unet_choice.timestep(m, t, batch)))?;
        match buffers.timestep.as_mut() {
            // Fixed buffers: the bound timestep is written, not rebound.
            Some(dev) => timestep.copy_into(&mut *dev).map_err(fail("copying the timestep to the device"))?,
            None => {
                buffers.binding.bind_input(io.timestep.name.as_str(), &timestep).map_err(fail("binding the timestep"))?;
                // Device tensors are bound again before every run: ONNX
                // Runtime copies a bound input at binding time when the
                // session wants it on another device (an input placed on the
                // CPU), so a binding made once could hold a stale copy. On
                // the input's own device it only stores the pointer. (With
                // fixed buffers nothing may be placed elsewhere: a CUDA graph
                // capture refuses it.)
                buffers.binding.bind_input(io.sample.name.as_str(), &buffers.sample).map_err(fail("binding the U-Net's sample"))?;
            }
        }
        if let Some(c) = controls.as_mut() {
            c.step(m, k, t, batch, control_sample.as_ref().map(|(_, c)| c), buffers, run_options)?;
        }
        let unet_run = loop {
            match unet.run_binding_in_session(&buffers.binding, buffers.epoch, buffers.graph_options.as_ref().or(run_options)) {
                Ok(false) => {
                    m.runtime.logger().info(&format!("latents: the U-Net's session was reloaded before step {}; bound again", k + 1));
                    buffers.rebind(unet, &values, &io.output)?;
                    if buffers.timestep.is_none() {
                        buffers.binding.bind_input(io.timestep.name.as_str(), &timestep).map_err(fail("binding the timestep"))?;
                    }
                    if let Some(c) = controls.as_ref() {
                        c.bind_residuals(buffers)?;
                    }
                }
                Ok(true) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        match unet_run {
            // Nothing was drawn or reported yet: the host loop takes over.
            // The buffers go with the specialised graph, which is dropped.
            Err(e) if k == 0 && buffers.graph_options.is_some() && e.kind() == ErrorKind::Inference && unet_choice.give_up(m, &e) => {
                return Ok(DeviceOutcome::CaptureRefused(e.message().to_string()));
            }
            result => result?,
        }

        let step = scheduler
            .linear_step(i, k)
            .ok_or_else(|| Error::internal(format!("scheduler step {i} is not linear (checked before the loop)")))?;
        let next_scale = if k + 1 < total { scheduler.input_scale(i + 1) } else { 1.0 };
        let coefficients = [
            r.guidance as f64,
            step.sample,
            step.model,
            step.history,
            step.noise,
            step.next_history_sample,
            step.next_history_model,
            next_scale as f64,
        ];
        debug_assert_eq!(coefficients.len(), COEFFICIENT_COUNT);
        let coefficients = host_tensor(coefficients.iter().map(|&c| c as f32).collect(), &[COEFFICIENT_COUNT])?;
        let drawn;
        let noise_value = if step.draws_noise {
            let mut z = vec![0.0f32; zeros.len()];
            noise.fill_normals(&mut z)?;
            drawn = host_tensor(z, &latent_shape)?;
            &drawn
        } else {
            &no_noise
        };
        let (from, to) = (k % 2, (k + 1) % 2);
        step_binding.bind_input(names::UNET_OUT, &buffers.output).map_err(fail("binding the step's model output"))?;
        step_binding.bind_input(names::SAMPLE, &samples[from]).map_err(fail("binding the latents"))?;
        step_binding.bind_input(names::HISTORY, &histories[from]).map_err(fail("binding the history"))?;
        step_binding.bind_input(names::NOISE, noise_value).map_err(fail("binding the noise"))?;
        step_binding.bind_input(names::COEFFICIENTS, &coefficients).map_err(fail("binding the coefficients"))?;
        for (name, value) in &inpainting_inputs {
            step_binding.bind_input(*name, value).map_err(fail("binding an inpainting input"))?;
        }
        let kept_coefficients;
        if let DeviceInpainting::Blended { .. } = r.inpainting {
            // The kept area at the next timestep's noise level; clean after the last step.
            let (p, q) = if k + 1 < total { add_noise_coefficients(scheduler, i + 1)? } else { (1.0, 0.0) };
            kept_coefficients = host_tensor(vec![p, q], &[2])?;
            step_binding.bind_input(names::KEPT_COEFFICIENTS, &kept_coefficients).map_err(fail("binding the blend's coefficients"))?;
        }
        step_binding.bind_output(names::NEXT_SAMPLE, &mut samples[to]).map_err(fail("binding the next latents"))?;
        step_binding.bind_output(names::NEXT_HISTORY, &mut histories[to]).map_err(fail("binding the next history"))?;
        step_graph.run_binding(&step_binding, run_options)?;

        if let Some(cb) = on_step.as_mut() {
            let latents = if hooks.step_latents.wants(k + 1, total) {
                download(step_graph.name, &samples[to])?
            } else {
                ArrayD::zeros(IxDyn(&[0]))
            };
            cb(&StepProgress { step: k + 1, total, latents: &latents });
        }
    }
    let last = download(step_graph.name, &samples[total % 2])?;
    Ok(DeviceOutcome::Done(last, total))
}

/// A generation's ControlNets in the device loop. Before each U-Net call the
/// nets in their window run on the U-Net's bound sample (the same tensor: a
/// ControlNet takes the latents as the U-Net does; with a 9-channel
/// inpainting U-Net, on the step graph's `control_in`, the same rows without
/// the mask channels; in guess mode with CFG, on its `control_row`, the
/// conditional row alone, with the conditional text) and write their
/// residuals straight into the tensors `unet_controlnet` reads. With several
/// nets at one step, or residuals scaled after the graph (guess mode's
/// per-block scales, a net without a `conditioning_scale` input), each net
/// writes its own and a small combine graph
/// ([`crate::model::step_graph::residual_combine_bytes`]) scales and adds
/// them there; in guess mode with CFG it puts them after a row of zeros. With
/// none in its window, zeros are copied in (once, after a step that had
/// residuals). The text embeddings, control images, SDXL's added
/// conditioning and scales are bound once per generation; per step only the
/// timestep (and the combine's factors) cross.
struct DeviceControls<'c> {
    controls: &'c ActiveControls,
    /// U-Net calls the window's fractions are of.
    total: usize,
    /// Each net's binding, its steady inputs bound.
    bindings: Vec<NetBinding>,
    /// The U-Net's residual inputs, in the nets' output order.
    names: Vec<String>,
    /// With fixed buffers: each residual's index among the U-Net's constant
    /// buffers (the residuals are written there, at the addresses a CUDA
    /// graph captured); else `own` holds this generation's residual tensors.
    fixed: Option<Vec<usize>>,
    own: Vec<DynTensor>,
    /// Zeros of each residual's shape.
    zeros: Vec<DynTensor>,
    /// Per net, its own residual tensors, for steps that combine (made when
    /// some step does).
    scratch: Vec<Option<Vec<DynTensor>>>,
    /// Whether the U-Net's residual tensors hold residuals (not zeros).
    dirty: bool,
    /// Whether the nets run on the conditional row alone (guess mode with CFG).
    guess_row: bool,
}

impl<'c> DeviceControls<'c> {
    /// Binds the nets' steady inputs and the U-Net's residual tensors;
    /// `values` are the U-Net's inputs as `FixedUnetIo::new` took them (the
    /// residuals among them, zeros of their shapes); `guess_row`: the nets
    /// run on the conditional row of the CFG batch alone.
    #[allow(clippy::too_many_arguments)]
    fn new(
        controls: &'c ActiveControls,
        total: usize,
        allocator: &Allocator,
        buffers: &mut FixedUnetIo,
        values: &[(String, DynTensor)],
        embeds: &ArrayD<f32>,
        added: Option<&ArrayD<f32>>,
        guess_row: bool,
    ) -> Result<Self> {
        let unet = &controls.unet;
        let names: Vec<String> = unet.down.iter().chain(std::iter::once(&unet.mid)).map(|s| s.name.clone()).collect();
        let mut shapes = Vec::with_capacity(names.len());
        let mut constant_index = Vec::with_capacity(names.len());
        for name in &names {
            let at = values
                .iter()
                .position(|(n, _)| n == name)
                .filter(|&at| at >= 2)
                .ok_or_else(|| Error::internal(format!("unet_controlnet's residual input `{name}` is not among the loop's inputs")))?;
            shapes.push(values[at].1.shape().iter().map(|&d| d as usize).collect::<Vec<_>>());
            constant_index.push(at - 2);
        }
        let zeros = shapes.iter().map(|s| upload(allocator, &ArrayD::zeros(IxDyn(s)))).collect::<Result<Vec<_>>>()?;
        let (fixed, own) = if buffers.timestep.is_some() {
            (Some(constant_index), Vec::new())
        } else {
            let own = shapes.iter().map(|s| upload(allocator, &ArrayD::zeros(IxDyn(s)))).collect::<Result<Vec<_>>>()?;
            for (name, t) in names.iter().zip(&own) {
                buffers.binding.bind_input(name.as_str(), t).map_err(fail("binding a ControlNet residual"))?;
            }
            (None, own)
        };
        // In guess mode with CFG the nets see the conditional text only.
        let (embeds, added) = match guess_row {
            true => (&control::last_row(embeds), added.map(control::last_row)),
            false => (embeds, added.cloned()),
        };
        let mut bindings = Vec::with_capacity(controls.len());
        for j in 0..controls.len() {
            let net = controls.net(j);
            let mut steady = Vec::new();
            for (spec, data) in controls.steady_inputs_of(j, embeds, added.as_ref())? {
                steady.push((spec.name.clone(), net.graph.to_value(spec, data)?));
            }
            bindings.push(NetBinding::new(net, steady)?);
        }
        // Steps that combine (several nets, or residuals scaled after the
        // graph): each net writes its own residuals first.
        // (Guess mode scales on the host, so its row-1 residuals always go
        // through the combine, which puts them after a row of zeros.)
        let combines = controls.scales_on_host() || (0..total).any(|k| controls.active_at(k, total).len() > 1);
        let net_shape = |s: &Vec<usize>| -> Vec<usize> {
            let mut s = s.clone();
            if guess_row {
                s[0] = 1;
            }
            s
        };
        let scratch = (0..controls.len())
            .map(|_| match combines {
                true => shapes.iter().map(|s| upload(allocator, &ArrayD::zeros(IxDyn(&net_shape(s))))).collect::<Result<Vec<_>>>().map(Some),
                false => Ok(None),
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { controls, total, bindings, names, fixed, own, zeros, scratch, dirty: false, guess_row })
    }

    /// The U-Net's residual tensors (`constants`: the U-Net's fixed input buffers).
    fn targets<'b>(fixed: &Option<Vec<usize>>, own: &'b mut [DynTensor], constants: &'b mut [DynTensor]) -> Vec<&'b mut DynTensor> {
        match fixed {
            Some(index) => {
                let mut slots: Vec<Option<&mut DynTensor>> = constants.iter_mut().map(Some).collect();
                index.iter().filter_map(|&k| slots.get_mut(k).and_then(Option::take)).collect()
            }
            None => own.iter_mut().collect(),
        }
    }

    /// Runs the nets of U-Net call `k` (timestep `t`, batch `batch`) and
    /// leaves their summed residuals, or zeros, in the U-Net's inputs. The
    /// nets read the U-Net's bound sample, or `own_sample` (a 9-channel
    /// inpainting U-Net's input without its mask channels).
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        m: &ModelInner,
        k: usize,
        t: f64,
        batch: usize,
        own_sample: Option<&DynTensor>,
        buffers: &mut FixedUnetIo,
        options: Option<&RunOptions>,
    ) -> Result<()> {
        let active = self.controls.active_at(k, self.total);
        let count = self.names.len();
        let net_batch = if self.guess_row { 1 } else { batch };
        match active.len() {
            0 if self.dirty => {
                let targets = Self::targets(&self.fixed, &mut self.own, &mut buffers.constants);
                for (zero, target) in self.zeros.iter().zip(targets) {
                    zero.copy_into(target).map_err(fail("zeroing a ControlNet residual"))?;
                }
                self.dirty = false;
            }
            0 => {}
            1 if !self.controls.scales_on_host() => {
                let j = active[0];
                let sample = own_sample.unwrap_or(&buffers.sample);
                let (binding, net) = (&mut self.bindings[j], self.controls.net(j));
                let targets = Self::targets(&self.fixed, &mut self.own, &mut buffers.constants);
                binding.run(net, sample, t, net_batch, targets, options)?;
                self.dirty = true;
            }
            _ => {
                for &j in &active {
                    let net = self.controls.net(j);
                    let outputs = self.scratch[j].as_mut().ok_or_else(|| Error::internal("ControlNet scratch residuals missing"))?.iter_mut().collect();
                    self.bindings[j].run(net, own_sample.unwrap_or(&buffers.sample), t, net_batch, outputs, options)?;
                }
                // Guess mode in a CFG batch: the nets ran on the conditional
                // row; its residuals go after a row of zeros.
                let last_row_only = self.guess_row;
                let combine = m.step_graphs.residual_combine(&m.runtime, active.len(), count, last_row_only)?;
                let mut binding = combine.create_binding()?;
                let mut factors = Vec::with_capacity(active.len() * count);
                for (a, &j) in active.iter().enumerate() {
                    let set = self.scratch[j].as_ref().ok_or_else(|| Error::internal("ControlNet scratch residuals missing"))?;
                    for (i, r) in set.iter().enumerate() {
                        binding.bind_input(format!("in{a}_{i}"), r).map_err(fail("binding a residual to combine"))?;
                    }
                    factors.extend(self.controls.factors_of(j, count));
                }
                let factors = host_tensor(factors, &[active.len() * count])?;
                binding.bind_input(names::FACTORS, &factors).map_err(fail("binding the residual factors"))?;
                for (i, target) in Self::targets(&self.fixed, &mut self.own, &mut buffers.constants).into_iter().enumerate() {
                    binding.bind_output(format!("out_{i}"), target).map_err(fail("binding a combined residual"))?;
                }
                combine.run_binding(&binding, options)?;
                self.dirty = true;
            }
        }
        // Bound again before every run, as the sample is (see `run`).
        self.bind_residuals(buffers)
    }

    /// Binds this generation's residual tensors as the U-Net's residual
    /// inputs: before every run, and after the U-Net's binding was made again
    /// in a reopened session (`FixedUnetIo::rebind` binds the zeros of
    /// `values` there). Fixed buffers are bound with the U-Net's own.
    fn bind_residuals(&self, buffers: &mut FixedUnetIo) -> Result<()> {
        if self.fixed.is_none() {
            for (name, t) in self.names.iter().zip(&self.own) {
                buffers.binding.bind_input(name.as_str(), t).map_err(fail("binding a ControlNet residual"))?;
            }
        }
        Ok(())
    }
}

/// One ControlNet's binding in the device loop, with the inputs that stay
/// the same through it (text, control image, scale...). Under per-stage
/// residency the net's session can be released during the loop (a preview
/// decoded with the VAE): a run then finds its binding's session gone, and
/// everything is bound again in the reopened one, as the U-Net's binding is
/// (`FixedUnetIo::rebind`).
struct NetBinding {
    binding: IoBinding,
    /// The session the binding belongs to (`Graph::session_epoch`).
    epoch: u64,
    steady: Vec<(String, DynTensor)>,
}

impl NetBinding {
    fn new(net: &crate::model::controlnet::ControlNet, steady: Vec<(String, DynTensor)>) -> Result<Self> {
        let (mut binding, epoch) = net.graph.create_binding_in_session()?;
        for (name, value) in &steady {
            binding.bind_input(name.as_str(), value).map_err(fail("binding a ControlNet input"))?;
        }
        Ok(Self { binding, epoch, steady })
    }

    /// Runs the net on `sample` (a device tensor) at timestep `t` with its
    /// residuals written into `outputs` (down blocks, then mid).
    fn run(
        &mut self,
        net: &crate::model::controlnet::ControlNet,
        sample: &DynTensor,
        t: f64,
        batch: usize,
        mut outputs: Vec<&mut DynTensor>,
        options: Option<&RunOptions>,
    ) -> Result<()> {
        let io = &net.io;
        let timestep = net.graph.to_value(&io.timestep, GraphInput::Float(control::timestep(&io.timestep, t, batch)))?;
        loop {
            let binding = &mut self.binding;
            binding.bind_input(io.timestep.name.as_str(), &timestep).map_err(fail("binding the ControlNet's timestep"))?;
            binding.bind_input(io.sample.name.as_str(), sample).map_err(fail("binding the ControlNet's sample"))?;
            for (spec, out) in io.down.iter().chain(std::iter::once(&io.mid)).zip(outputs.iter_mut()) {
                binding.bind_output(spec.name.as_str(), &mut **out).map_err(fail("binding a ControlNet residual"))?;
            }
            match net.graph.run_binding_in_session(binding, self.epoch, options) {
                Ok(true) => return Ok(()),
                Ok(false) => *self = Self::new(net, std::mem::take(&mut self.steady))?,
                Err(e) => return Err(e.context(format!("controlnet {}", net.name))),
            }
        }
    }
}
