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
//! It runs on the CUDA provider (device memory) and on the CPU provider (host
//! memory, the same code; this is how CI tests it). A request it cannot run
//! goes through the host loop, and the reason is logged once per generation:
//! schedulers whose step is not linear or keeps host state (PNDM, LMS, Heun,
//! UniPC; DDIM and LCM with clipping or thresholding), guidance rescale,
//! inpainting, ControlNet, U-Nets run as two batch-1 calls for CFG, float16
//! U-Net inputs or outputs, per-stage residency, CUDA graph replay, and other
//! execution providers.
use ndarray::{ArrayD, IxDyn};
use ort::memory::Allocator;
use ort::session::{IoBinding, RunOptions};
use ort::value::{DynTensor, Tensor, TensorElementType};

use super::{specialised_unet, unet_inputs, unet_timestep, StepLatents, StepProgress};
use crate::error::{Error, ErrorKind, Result};
use crate::model::graph::{self, Graph, GraphInput, TensorSpec};
use crate::model::step_graph::{names, COEFFICIENT_COUNT};
use crate::model::ModelInner;
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
}

/// The U-Net graph the device loop would run, or why it cannot run.
pub(crate) fn plan(m: &ModelInner, scheduler: &dyn Scheduler, r: &DeviceRequest<'_>) -> std::result::Result<UnetChoice, String> {
    let float32 = |s: &TensorSpec| s.ty == TensorElementType::Float32;
    if !float32(&m.unet_io.sample) {
        return Err(format!("the U-Net's sample input is {:?}, not float32", m.unet_io.sample.ty));
    }
    match m.unet.outputs.iter().find(|o| o.name == m.unet_io.output) {
        Some(o) if float32(o) => {}
        Some(o) => return Err(format!("the U-Net's output is {:?}, not float32", o.ty)),
        None => return Err("the U-Net's output is not declared".into()),
    }
    if m.unet.per_stage() {
        return Err("per-stage residency releases the U-Net between stages".into());
    }
    for k in 0..r.timesteps.len() {
        if scheduler.linear_step(r.start + k, k).is_none() {
            return Err("this scheduler's step (with these settings) is not a linear map".into());
        }
    }
    let t0 = r.timesteps.first().copied().unwrap_or(0.0);
    let batch = if r.cfg { 2 } else { 1 };
    let probe = ArrayD::zeros(IxDyn(&[batch, r.latents.shape()[1], r.latents.shape()[2], r.latents.shape()[3]]));
    let inputs = unet_inputs(m, probe, t0, r.embeds.clone(), r.added, r.w).map_err(|e| e.message().to_string())?;
    let choice = match specialised_unet(m, &inputs) {
        Some((s, _)) if s.graph.uses_cuda_graph() => {
            return Err("CUDA graph replay binds its own device buffers (use the static U-Net without --cuda-graph)".into())
        }
        Some((s, _)) => UnetChoice::Static(s),
        None => UnetChoice::Dynamic,
    };
    let unet = choice.graph(m);
    match unet.provider.primary() {
        crate::runtime::Provider::Cpu | crate::runtime::Provider::Cuda => Ok(choice),
        other => Err(format!("device-resident latents are not implemented for {}", other.ort_name())),
    }
}

/// Which U-Net graph runs.
pub(crate) enum UnetChoice {
    /// The model's own U-Net.
    Dynamic,
    /// The U-Net specialised to this job's shapes (`ProviderPolicy::static_unet`).
    Static(std::sync::Arc<crate::model::static_unet::Specialised>),
}

impl UnetChoice {
    fn graph<'a>(&'a self, m: &'a ModelInner) -> &'a Graph {
        match self {
            Self::Dynamic => &m.unet,
            Self::Static(s) => &s.graph,
        }
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

/// Runs the denoising loop on the device; returns the final latents and the
/// number of steps run there.
pub(crate) fn run(
    m: &ModelInner,
    unet_choice: &UnetChoice,
    scheduler: &dyn Scheduler,
    r: DeviceRequest<'_>,
    noise: &mut dyn NoiseSource,
    hooks: DeviceHooks<'_, '_>,
) -> Result<(ArrayD<f32>, usize)> {
    let unet = unet_choice.graph(m);
    let step_graph = m.step_graphs.get(&m.runtime, r.cfg)?;
    let allocator = unet
        .device_allocator()?
        .ok_or_else(|| Error::internal("device-resident latents planned for a provider without a device allocator"))?;
    let latent_shape = r.latents.shape().to_vec();
    let batch = if r.cfg { 2 } else { 1 };
    let mut batched_shape = latent_shape.clone();
    batched_shape[0] = batch;
    let total = r.timesteps.len();

    // The first U-Net input is made on the host; every later one by the step graph.
    let scale0 = scheduler.input_scale(r.start);
    let scaled = r.latents.mapv(|x| x * scale0);
    let first_in = if r.cfg {
        ndarray::concatenate(ndarray::Axis(0), &[scaled.view(), scaled.view()]).map_err(|e| Error::internal(e.to_string()))?
    } else {
        scaled
    };
    let unet_in = upload(&allocator, &first_in)?;
    let mut unet_out = device_tensor(&allocator, &batched_shape)?;
    let zeros = ArrayD::<f32>::zeros(IxDyn(&latent_shape));
    let mut samples = [upload(&allocator, &r.latents)?, device_tensor(&allocator, &latent_shape)?];
    let mut histories = [upload(&allocator, &zeros)?, device_tensor(&allocator, &latent_shape)?];
    let no_noise = upload(&allocator, &zeros)?;

    // The U-Net's binding: everything but the timestep is bound once.
    let io = &m.unet_io;
    let mut unet_binding: IoBinding = unet.create_binding()?;
    let t0 = r.timesteps.first().copied().unwrap_or(0.0);
    let constants = unet_inputs(m, ArrayD::zeros(IxDyn(&batched_shape)), t0, r.embeds.clone(), r.added, r.w)?;
    for (spec, data) in constants.into_iter().skip(2) {
        let value = unet.to_value(spec, data)?;
        unet_binding.bind_input(spec.name.as_str(), &value).map_err(fail("binding a U-Net input"))?;
    }
    unet_binding.bind_output(io.output.as_str(), &mut unet_out).map_err(fail("binding the U-Net's output"))?;

    let mut step_binding: IoBinding = step_graph.create_binding()?;
    let mut unet_in = unet_in;
    step_binding.bind_output(names::UNET_IN, &mut unet_in).map_err(fail("binding the next U-Net input"))?;

    let run_options = hooks.run_options;
    let mut on_step = hooks.on_step;
    for (k, &t) in r.timesteps.iter().enumerate() {
        let i = r.start + k;
        if (hooks.cancelled)() {
            return Err(Error::new(ErrorKind::Cancelled, format!("generation cancelled before step {}", k + 1)));
        }
        let timestep = unet.to_value(&io.timestep, GraphInput::Float(unet_timestep(m, t, batch)))?;
        unet_binding.bind_input(io.timestep.name.as_str(), &timestep).map_err(fail("binding the timestep"))?;
        // Device tensors are bound again before every run: ONNX Runtime
        // copies a bound input at binding time when the session wants it on
        // another device (an input placed on the CPU), so a binding made once
        // could hold a stale copy. On the input's own device it only stores
        // the pointer.
        unet_binding.bind_input(io.sample.name.as_str(), &unet_in).map_err(fail("binding the U-Net's sample"))?;
        unet.run_binding(&unet_binding, run_options)?;

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
        step_binding.bind_input(names::UNET_OUT, &unet_out).map_err(fail("binding the step's model output"))?;
        step_binding.bind_input(names::SAMPLE, &samples[from]).map_err(fail("binding the latents"))?;
        step_binding.bind_input(names::HISTORY, &histories[from]).map_err(fail("binding the history"))?;
        step_binding.bind_input(names::NOISE, noise_value).map_err(fail("binding the noise"))?;
        step_binding.bind_input(names::COEFFICIENTS, &coefficients).map_err(fail("binding the coefficients"))?;
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
    Ok((last, total))
}
