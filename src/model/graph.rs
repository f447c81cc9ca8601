//! One ONNX graph in a session, described by what the session reports.
//!
//! Exports differ (optimum: rank-0 float `timestep`, int64 `input_ids`; legacy
//! diffusers script: int64 `[batch]` timestep, int32 `input_ids`; fp16 graphs), so
//! Kiln never assumes a dtype or rank: it reads them here and converts at the
//! boundary.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ndarray::{ArrayD, IxDyn};
use ort::session::{RunOptions, Session};
use ort::value::{Tensor, TensorElementType, ValueType};
use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};
use crate::runtime::{LogLevel, Runtime};

/// Name, element type and shape (-1 = dynamic) of one graph input or output.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// The tensor's name in the graph.
    pub name: String,
    /// Element type.
    pub ty: TensorElementType,
    /// Dimensions; -1 where the graph leaves it dynamic.
    pub shape: Vec<i64>,
}

/// Data handed to a graph; converted to the input's declared element type.
#[derive(Clone)]
pub enum GraphInput {
    /// Floating-point data (sent as f32, f16 or f64).
    Float(ArrayD<f32>),
    /// Integer data (sent as i64 or i32).
    Int(ArrayD<i64>),
}

/// A loaded graph. `run` is serialized per graph because ORT sessions are not
/// safe to run concurrently from several threads through `ort`.
pub struct Graph {
    /// Which component this is (`unet`, ...), for messages.
    pub name: &'static str,
    /// Inputs, in graph order.
    pub inputs: Vec<TensorSpec>,
    /// Outputs, in graph order.
    pub outputs: Vec<TensorSpec>,
    /// Execution providers this graph got, and why others were skipped.
    pub provider: crate::runtime::ProviderChoice,
    /// `None` while released (per-stage residency); reloaded on the next run.
    session: Arc<Mutex<Option<Session>>>,
    runtime: Runtime,
    source: GraphSource,
    /// Initializers replacing the file's own (merged LoRA weights); the
    /// session is made with them every time it is (re)created.
    overrides: crate::model::lora::Overrides,
    /// Hash of an in-memory source's bytes, for the optimized-graph cache
    /// (computed once, reused when per-stage residency reloads the graph).
    source_digest: std::sync::OnceLock<String>,
    group: Arc<ResidencyGroup>,
    /// Calls and nanoseconds spent inside ONNX Runtime's run, for benchmarks.
    run_calls: std::sync::atomic::AtomicU64,
    run_nanos: std::sync::atomic::AtomicU64,
    /// How this graph's sessions are made (CUDA graph capture, cache use).
    flags: SessionFlags,
    /// Inputs and output bound at fixed device addresses, for CUDA graph
    /// replay; made on the first run, dropped with the session.
    bound: Mutex<Option<crate::model::static_unet::BoundIo>>,
    /// The device loop's U-Net buffers at fixed addresses (CUDA graph replay
    /// with device-resident latents), kept between generations so a captured
    /// graph stays valid; see `pipeline::device_loop`.
    pub(crate) fixed_io: Mutex<Option<crate::pipeline::device_loop::FixedUnetIo>>,
    /// Counts the sessions opened, so buffers bound to an earlier session are
    /// recognised (they cannot be dropped on reopening: the device loop holds
    /// `fixed_io` while it opens the session).
    session_epoch: std::sync::atomic::AtomicU64,
    /// Attention layers that run as one fused node (see `model::attention`).
    pub(crate) fused_attention: usize,
    /// LoRA slot inputs (see `model::lora::slots`), kept out of `inputs`:
    /// Kiln feeds them from `feeds`, not the pipeline.
    pub(crate) slot_inputs: Vec<crate::model::lora::slots::SlotInput>,
    /// A tensor for every slot input: the factors of the LoRAs this graph
    /// applies, zeros for the other layers.
    feeds: crate::model::lora::Overrides,
}

/// How a graph's session is made, beyond the runtime's settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SessionFlags {
    /// Ask the CUDA provider to capture the graph and replay it; runs then go
    /// through [`crate::model::static_unet::BoundIo`].
    pub cuda_graph: bool,
    /// Bypass the on-disk optimized-graph cache for the session (a specialised
    /// U-Net is cached before its session is made, by `model::static_unet`).
    pub uncached: bool,
    /// Make the session on the graph's first run instead of at load (inputs
    /// and outputs are read from the file). The dynamic U-Net is loaded so
    /// when the static U-Net is asked for: it runs only for a job shape that
    /// cannot be specialised, so it usually never holds its weights at all.
    pub lazy: bool,
}

/// Where a graph's bytes come from.
#[derive(Clone)]
pub(crate) enum GraphSource {
    /// An ONNX file (external data resolved beside it).
    File(PathBuf),
    /// A graph rewritten in memory; `dir` is the original file's folder, where
    /// its external-data files live. With `release_after_open`, the bytes are
    /// freed once a session that is never reopened has been made from them.
    Memory { bytes: Arc<Vec<u8>>, dir: PathBuf, label: String, release_after_open: bool },
    /// A `Memory` source whose bytes were freed after its session was made:
    /// the graph stays loaded for the model's life (all resident, made at
    /// load), so nothing reads them again.
    Released { label: String },
}

impl GraphSource {
    /// A graph rewritten in memory whose external data lives in `dir`.
    pub(crate) fn memory(bytes: Vec<u8>, dir: PathBuf, label: String) -> Self {
        Self::Memory { bytes: Arc::new(bytes), dir, label, release_after_open: false }
    }

    /// As [`GraphSource::memory`], for bytes as large as the weights they
    /// hold (int8 weights): freed once a session that is never reopened
    /// exists, so the model does not hold its weights twice. Graphs loaded
    /// lazily or per stage keep them.
    pub(crate) fn memory_released_after_open(bytes: Vec<u8>, dir: PathBuf, label: String) -> Self {
        Self::Memory { bytes: Arc::new(bytes), dir, label, release_after_open: true }
    }

    fn label(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Memory { label, .. } | Self::Released { label } => label.clone(),
        }
    }

    /// The error for reading a released source (a bug: such a graph is never reopened).
    fn released(label: &str) -> Error {
        Error::internal(format!("{label}: the rewritten graph's bytes were freed after its session was made"))
    }
}

/// Which of a model's graphs stay loaded between uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum Residency {
    /// Every graph stays loaded: fastest, most memory.
    #[default]
    AllResident = 0,
    /// Only the graph in use is loaded: loading one releases the others, so
    /// peak memory is the largest single graph (text encoder, U-Net or VAE),
    /// at the cost of reloading each stage per generation. A ControlNet job's
    /// nets and `unet_controlnet` run in turn at every step and stay loaded
    /// together through the loop.
    PerStage = 1,
}

impl Residency {
    /// Parses a command-line name: `all` or `per-stage`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "all" => Some(Self::AllResident),
            "per-stage" => Some(Self::PerStage),
            _ => None,
        }
    }
}

/// The graphs of one model, for per-stage residency.
#[derive(Default)]
pub(crate) struct ResidencyGroup {
    per_stage: bool,
    /// The graph loaded now (names are unique within a group).
    current: Mutex<Option<&'static str>>,
    slots: Mutex<Vec<(&'static str, SessionSlot)>>,
}

/// Whether graphs `a` and `b` (different names) run in turn at every step,
/// so that per-stage residency keeps both loaded rather than reopening each
/// at every step: a ControlNet and the U-Net that takes its residuals
/// (`unet_controlnet`, or `unet_controlnet_static` specialised from it).
fn one_stage(a: &str, b: &str) -> bool {
    let residual_unet = |n: &str| n.starts_with("unet_controlnet");
    (a == "controlnet" && residual_unet(b)) || (residual_unet(a) && b == "controlnet")
}

/// A graph's session, `None` while released.
type SessionSlot = Arc<Mutex<Option<Session>>>;

impl ResidencyGroup {
    pub(crate) fn new(policy: Residency) -> Arc<Self> {
        Arc::new(Self { per_stage: policy == Residency::PerStage, ..Default::default() })
    }

    /// Names of the graphs now loaded.
    pub(crate) fn loaded(&self) -> Vec<&'static str> {
        self.slots.lock().iter().filter(|(_, s)| s.lock().is_some()).map(|(name, _)| *name).collect()
    }
}

impl Graph {
    /// Loads `path`, reads its inputs and outputs, and joins `group`; under
    /// per-stage residency the session is released again right away.
    pub(crate) fn load(runtime: &Runtime, name: &'static str, path: &Path, group: &Arc<ResidencyGroup>) -> Result<Self> {
        Self::load_from(runtime, name, GraphSource::File(path.to_path_buf()), group)
    }

    /// As [`Graph::load`], from any source.
    pub(crate) fn load_from(runtime: &Runtime, name: &'static str, source: GraphSource, group: &Arc<ResidencyGroup>) -> Result<Self> {
        Self::load_with_overrides(runtime, name, source, group, Default::default())
    }

    /// As [`Graph::load_from`], with initializers that replace the file's own.
    pub(crate) fn load_with_overrides(
        runtime: &Runtime,
        name: &'static str,
        source: GraphSource,
        group: &Arc<ResidencyGroup>,
        overrides: crate::model::lora::Overrides,
    ) -> Result<Self> {
        Self::load_flagged(runtime, name, source, group, overrides, SessionFlags::default())
    }

    /// As [`Graph::load_with_overrides`], with session flags.
    pub(crate) fn load_flagged(
        runtime: &Runtime,
        name: &'static str,
        source: GraphSource,
        group: &Arc<ResidencyGroup>,
        overrides: crate::model::lora::Overrides,
        flags: SessionFlags,
    ) -> Result<Self> {
        let source_digest = std::sync::OnceLock::new();
        let spec = |outlets: &[ort::value::Outlet]| -> Result<Vec<TensorSpec>> {
            outlets
                .iter()
                .map(|o| match o.dtype() {
                    ValueType::Tensor { ty, shape, .. } => Ok(TensorSpec {
                        name: o.name().to_string(),
                        ty: *ty,
                        shape: shape.iter().copied().collect(),
                    }),
                    other => Err(Error::model(format!(
                        "{name} graph: `{}` is {other:?}, expected a tensor",
                        o.name()
                    ))),
                })
                .collect()
        };
        let (mut inputs, outputs, provider, session) = if group.per_stage || flags.lazy {
            // Per stage, the session is made when the stage first runs: the
            // inputs and outputs come from the file, so loading the model opens
            // nothing and a one-shot generation loads each graph once.
            let (inputs, outputs) = declared_specs(name, &source)?;
            let provider = session_builder(runtime, name, &source.label(), flags.cuda_graph)?.1;
            (inputs, outputs, provider, None)
        } else {
            let (session, provider) = open_session(runtime, name, (&source, &overrides), &source_digest, flags)?;
            (spec(session.inputs())?, spec(session.outputs())?, provider, Some(session))
        };
        // A session made at load is kept for the model's life: bytes that
        // asked to be freed then are.
        let source = match source {
            GraphSource::Memory { label, release_after_open: true, .. } if session.is_some() => GraphSource::Released { label },
            other => other,
        };
        let slot_inputs: Vec<crate::model::lora::slots::SlotInput> = inputs
            .iter()
            .filter(|s| crate::model::lora::slots::is_slot_input(&s.name))
            .map(|s| crate::model::lora::slots::SlotInput { name: s.name.clone(), ty: s.ty, shape: s.shape.clone() })
            .collect();
        inputs.retain(|s| !crate::model::lora::slots::is_slot_input(&s.name));
        let feeds = crate::model::lora::slots::feeds(name, &slot_inputs, &Default::default())?;
        let slot = Arc::new(Mutex::new(session));
        group.slots.lock().push((name, Arc::clone(&slot)));
        Ok(Self {
            name,
            inputs,
            outputs,
            provider,
            session: slot,
            // A reopen later (per-stage residency) is no part of this load.
            runtime: runtime.detached(),
            source,
            overrides,
            source_digest,
            group: Arc::clone(group),
            run_calls: Default::default(),
            run_nanos: Default::default(),
            flags,
            bound: Mutex::new(None),
            fixed_io: Mutex::new(None),
            session_epoch: Default::default(),
            fused_attention: 0,
            slot_inputs,
            feeds,
        })
    }

    /// This graph's session fed other LoRA slot factors (`feeds`, from
    /// `lora::slots::feeds` for this graph's slot inputs): a LoRA switch
    /// without a new session. The session, its residency and its source are
    /// shared; run statistics start at zero.
    pub(crate) fn with_feeds(&self, feeds: crate::model::lora::Overrides) -> Self {
        Self {
            name: self.name,
            inputs: self.inputs.clone(),
            outputs: self.outputs.clone(),
            provider: self.provider.clone(),
            session: Arc::clone(&self.session),
            runtime: self.runtime.clone(),
            source: self.source.clone(),
            overrides: Arc::clone(&self.overrides),
            source_digest: self.source_digest.clone(),
            group: Arc::clone(&self.group),
            run_calls: Default::default(),
            run_nanos: Default::default(),
            flags: self.flags,
            bound: Mutex::new(None),
            fixed_io: Mutex::new(None),
            session_epoch: Default::default(),
            fused_attention: self.fused_attention,
            slot_inputs: self.slot_inputs.clone(),
            feeds,
        }
    }

    /// This graph with its LoRA slots fed `factors` (a graph just loaded
    /// for a LoRA view; no factors: as it is).
    pub(crate) fn fed(mut self, factors: &crate::model::lora::slots::SlotMap) -> Result<Self> {
        if !factors.is_empty() {
            self.feeds = crate::model::lora::slots::feeds(self.name, &self.slot_inputs, factors)?;
        }
        Ok(self)
    }

    /// This graph's session fed `factors` instead (a LoRA switch on a
    /// slotted graph), or `None` when it has no LoRA slots.
    pub(crate) fn refed(&self, factors: &crate::model::lora::slots::SlotMap) -> Result<Option<Self>> {
        if self.slot_inputs.is_empty() {
            return Ok(None);
        }
        Ok(Some(self.with_feeds(crate::model::lora::slots::feeds(self.name, &self.slot_inputs, factors)?)))
    }

    /// Which session this graph runs: graphs made by [`Self::with_feeds`]
    /// share their source's, so memory counts go by this, not by graph.
    pub(crate) fn session_id(&self) -> usize {
        Arc::as_ptr(&self.session) as usize
    }

    /// How many layers have a LoRA slot.
    pub(crate) fn lora_slots(&self) -> usize {
        self.slot_inputs.iter().filter(|s| s.name.starts_with(crate::model::lora::slots::DOWN)).count()
    }

    /// Calls of ONNX Runtime's run so far and the seconds spent inside them
    /// (only the run itself: tensor conversion and waiting for the lock excluded).
    pub fn run_time(&self) -> (u64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.run_calls.load(Relaxed), self.run_nanos.load(Relaxed) as f64 * 1e-9)
    }

    /// Where the graph's bytes come from.
    pub(crate) fn source(&self) -> &GraphSource {
        &self.source
    }

    /// Whether the graph's model releases graphs between stages.
    pub(crate) fn per_stage(&self) -> bool {
        self.group.per_stage
    }

    /// The residency group the graph is in.
    pub(crate) fn group(&self) -> &Arc<ResidencyGroup> {
        &self.group
    }

    /// Initializers replacing the file's own (LoRA-merged weights).
    pub(crate) fn overrides(&self) -> &crate::model::lora::Overrides {
        &self.overrides
    }

    /// Whether runs replay a CUDA graph (asked for, and the session is on CUDA).
    pub(crate) fn uses_cuda_graph(&self) -> bool {
        self.flags.cuda_graph && self.provider.primary() == crate::runtime::Provider::Cuda
    }

    /// The GPU index the runtime's providers use.
    pub(crate) fn runtime_device_id(&self) -> i32 {
        self.runtime.inner.providers.device_id
    }

    /// Whether the session is loaded now.
    pub fn is_loaded(&self) -> bool {
        self.session.lock().is_some()
    }

    /// Locks this graph's session, loading it (and, per stage, releasing the
    /// model's other graphs first) when it is not resident.
    fn acquire(&self) -> Result<parking_lot::MutexGuard<'_, Option<Session>>> {
        if self.group.per_stage {
            let mut current = self.group.current.lock();
            if *current != Some(self.name) {
                let slots = self.group.slots.lock().clone();
                for (name, slot) in &slots {
                    if *name != self.name && !one_stage(name, self.name) {
                        *slot.lock() = None;
                    }
                }
                *current = Some(self.name);
            }
        }
        let mut guard = self.session.lock();
        if guard.is_none() {
            // Device buffers bound to a released session go with it.
            *self.bound.lock() = None;
            *guard = Some(open_session(&self.runtime, self.name, (&self.source, &self.overrides), &self.source_digest, self.flags)?.0);
            self.session_epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
        Ok(guard)
    }

    /// A binding of this graph's inputs and outputs, with the session it
    /// belongs to (see `session_epoch`); the session is opened if it is not.
    pub(crate) fn create_binding_in_session(&self) -> Result<(ort::session::IoBinding, u64)> {
        let guard = self.acquire()?;
        let session = guard.as_ref().ok_or_else(|| Error::internal("graph session missing after load"))?;
        let mut binding =
            session.create_binding().map_err(|e| Error::new(ErrorKind::Inference, format!("{} graph: I/O binding: {e}", self.name)))?;
        // LoRA slot factors, copied to the device with each run (ONNX Runtime
        // copies host inputs of a binding); zeros for a plain model.
        for (name, value) in self.feeds.iter() {
            binding
                .bind_input(name.as_str(), value.as_ref())
                .map_err(|e| Error::new(ErrorKind::Inference, format!("{} graph: binding LoRA slot `{name}`: {e}", self.name)))?;
        }
        Ok((binding, self.session_epoch.load(std::sync::atomic::Ordering::Acquire)))
    }

    /// Runs `binding` if the session it was made in (`epoch`) is still the
    /// open one; `false` when per-stage residency released and reopened the
    /// session since, so the caller binds again. Checked under the session's
    /// lock, so no release can come between the check and the run.
    pub(crate) fn run_binding_in_session(&self, binding: &ort::session::IoBinding, epoch: u64, options: Option<&RunOptions>) -> Result<bool> {
        let mut guard = self.acquire()?;
        if self.session_epoch.load(std::sync::atomic::Ordering::Acquire) != epoch {
            return Ok(false);
        }
        let session = guard.as_mut().ok_or_else(|| Error::internal("graph session missing after load"))?;
        self.run_bound(session, binding, options)?;
        Ok(true)
    }

    /// One run of `session` on `binding` (outputs stay where they are bound),
    /// counted in the graph's timings.
    fn run_bound(&self, session: &mut Session, binding: &ort::session::IoBinding, options: Option<&RunOptions>) -> Result<()> {
        let started = std::time::Instant::now();
        let outputs = match options {
            Some(o) => session.run_binding_with_options(binding, o),
            None => session.run_binding(binding),
        }
        .map_err(|e| Error::inference(self.name, e))?;
        drop(outputs);
        self.run_nanos.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        self.run_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }
}

/// The inputs and outputs `source` declares, read from the ONNX file without
/// making a session (what ONNX Runtime reports for the same graph).
fn declared_specs(name: &str, source: &GraphSource) -> Result<(Vec<TensorSpec>, Vec<TensorSpec>)> {
    use crate::model::onnx_proto::{declared_io, DeclaredTensor};
    let declared = match source {
        GraphSource::File(p) => {
            let file = std::fs::File::open(p).map_err(|e| {
                let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::ModelNotFound } else { ErrorKind::Io };
                Error::new(kind, format!("cannot open {name} graph {}: {e}", p.display()))
            })?;
            declared_io(file)
        }
        GraphSource::Memory { bytes, .. } => declared_io(std::io::Cursor::new(bytes.as_slice())),
        GraphSource::Released { label } => return Err(GraphSource::released(label)),
    }
    .map_err(|e| Error::model(format!("{name} graph {}: {}", source.label(), e.message())))?;
    let convert = |list: Vec<DeclaredTensor>| -> Vec<TensorSpec> {
        list.into_iter()
            .map(|t| TensorSpec { name: t.name, ty: element_type(t.elem_type), shape: t.dims })
            .collect()
    };
    Ok((convert(declared.0), convert(declared.1)))
}

/// ONNX's TensorProto.DataType number as ONNX Runtime's element type.
pub(crate) fn element_type(onnx: i32) -> TensorElementType {
    use TensorElementType as T;
    match onnx {
        1 => T::Float32,
        2 => T::Uint8,
        3 => T::Int8,
        4 => T::Uint16,
        5 => T::Int16,
        6 => T::Int32,
        7 => T::Int64,
        8 => T::String,
        9 => T::Bool,
        10 => T::Float16,
        11 => T::Float64,
        12 => T::Uint32,
        13 => T::Uint64,
        16 => T::Bfloat16,
        _ => T::Undefined,
    }
}

/// Creates a session for `source` with the runtime's settings, through the
/// runtime's optimized-graph cache when it has one.
fn open_session(
    runtime: &Runtime,
    name: &'static str,
    (source, overrides): (&GraphSource, &crate::model::lora::Overrides),
    digest: &std::sync::OnceLock<String>,
    flags: SessionFlags,
) -> Result<(Session, crate::runtime::ProviderChoice)> {
    let label = source.label();
    let (builder, provider) = session_builder(runtime, name, &label, flags.cuda_graph)?;
    let line = format!("{name}: execution provider {}", provider.describe());
    if provider.skipped.is_empty() {
        runtime.logger().info(&line);
    } else {
        runtime.logger().log(LogLevel::Warning, &line);
    }
    let opened = match &runtime.inner.graph_cache {
        // Merged weights bypass the cache: an optimized graph bakes its
        // initializers in (folded, fused, renamed), so it can neither take
        // overrides nor be shared between LoRA sets.
        Some(cache) if overrides.is_empty() && !flags.uncached => open_through_cache(runtime, cache, name, (source, digest), &label, builder, &provider),
        cache => {
            if let Some(cache) = cache {
                cache.note_skipped();
                let why = if flags.uncached { "a graph Kiln made at run time (a scheduler step graph, or a specialised U-Net, which the cache keeps as such: see model::static_unet)" } else { "the graph has LoRA-merged weights" };
                runtime.logger().info(&format!("{name}: optimized-graph cache not used: {why}"));
            }
            let level = runtime.inner.graph_optimization.ort();
            let mut builder = builder.with_optimization_level(level).map_err(|e| load_error(name, &label, e.into()))?;
            // ONNX Runtime's NCHWc transformer (level "all", x86) reorders Conv
            // weights from the file's own initializer and ignores the override
            // (measured on 1.31.1: a zeroed conv_in.weight had no effect), so
            // it is turned off for graphs whose convolutions are overridden.
            let conv_override = overrides.iter().any(|(_, v)| matches!(v.dtype(), ValueType::Tensor { shape, .. } if shape.len() == 4));
            if conv_override {
                builder = builder
                    .with_config_entry("optimization.disable_specified_optimizers", "NchwcTransformer")
                    .map_err(|e| load_error(name, &label, e.into()))?;
            }
            for (init, value) in overrides.iter() {
                builder = builder.with_initializer(init, Arc::clone(value)).map_err(|e| load_error(name, &label, e.into()))?;
            }
            commit(builder, source).map_err(|e| external_data_problem(name, source).unwrap_or_else(|| load_error(name, &label, e)))
        }
    };
    // ONNX Runtime words a cancelled creation as a failure.
    let session = opened.map_err(|e| match e.kind() {
        ErrorKind::Cancelled => e,
        _ => runtime.load_cancelled(name, e.message()).unwrap_or(e),
    })?;
    if let Some(control) = &runtime.load_control {
        control.opened(name);
    }
    Ok((session, provider))
}

/// Why a session could not be made, when the cause is an external weights
/// file (`model.onnx_data`) that is missing or shorter than an initializer
/// stored in it: ONNX Runtime words both vaguely, so Kiln names the file and
/// the initializer, MODEL_NOT_FOUND when the file is missing and
/// MODEL_INVALID when it is short. `None` when the external data is whole
/// (or the graph cannot be read here either; ONNX Runtime's message stands).
fn external_data_problem(name: &str, source: &GraphSource) -> Option<Error> {
    use crate::model::onnx_proto::{graph_summary, TensorData};
    let (dir, (_, initializers)) = match source {
        GraphSource::File(p) => (p.parent()?.to_path_buf(), graph_summary(std::fs::File::open(p).ok()?).ok()?),
        GraphSource::Memory { bytes, dir, .. } => (dir.clone(), graph_summary(std::io::Cursor::new(bytes.as_slice())).ok()?),
        GraphSource::Released { .. } => return None,
    };
    for init in &initializers {
        let TensorData::External { location, offset, len } = &init.data else { continue };
        let file = dir.join(location);
        let size = match std::fs::metadata(&file) {
            Ok(m) => m.len(),
            Err(e) => {
                let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::ModelNotFound } else { ErrorKind::Io };
                return Some(Error::new(
                    kind,
                    format!("{name} graph {}: external weights file {} (initializer `{}`) cannot be read: {e}", source.label(), file.display(), init.name),
                ));
            }
        };
        let end = offset.checked_add(len.unwrap_or(0));
        if end.is_none_or(|end| end > size) || *offset > size {
            return Some(Error::model(format!(
                "{name} graph {}: external weights file {} is {size} bytes, but initializer `{}` is stored at bytes {offset}..{} of it (the file is truncated or not this graph's)",
                source.label(),
                file.display(),
                init.name,
                end.map_or("past 2^64".to_string(), |e| e.to_string())
            )));
        }
    }
    None
}

/// The error for a session that could not be created.
pub(crate) fn load_error(name: &str, path: &str, e: ort::Error) -> Error {
    let text = e.to_string();
    let kind = if text.contains("Protobuf parsing failed") || text.contains("INVALID_PROTOBUF") || text.contains("Load model") {
        ErrorKind::ModelInvalid
    } else if crate::error::is_allocation_failure(&text) {
        // A GPU memory cap (`gpu_mem_limit`) too small for the weights.
        ErrorKind::OutOfMemory
    } else if text.contains("does not exist") || text.contains("NO_SUCHFILE") {
        // A per-stage graph reloaded after its folder was deleted or moved.
        ErrorKind::ModelNotFound
    } else {
        ErrorKind::Inference
    };
    Error::new(kind, format!("cannot load {name} graph {path}: {text}"))
}

/// A session builder with the runtime's providers, threads and logging
/// (optimization level not set yet).
pub(crate) fn session_builder(
    runtime: &Runtime,
    name: &'static str,
    path: &str,
    cuda_graph: bool,
) -> Result<(ort::session::builder::SessionBuilder, crate::runtime::ProviderChoice)> {
    let rt = &runtime.inner;
    let fail = |e: ort::Error| load_error(name, path, e);
    let logger = runtime.logger().clone();
    let ort_logger: ort::logging::LoggerFunction = std::sync::Arc::new(move |level, _category, _id, _loc, msg| {
        let level = match level {
            ort::logging::LogLevel::Verbose | ort::logging::LogLevel::Info => LogLevel::Debug,
            // Said whenever a graph optimized for this CPU is saved, which the
            // graph cache does knowingly (its key holds the CPU's features).
            ort::logging::LogLevel::Warning if msg.contains("may contain hardware specific optimizations") => LogLevel::Debug,
            ort::logging::LogLevel::Warning => LogLevel::Warning,
            _ => LogLevel::Error,
        };
        logger.log(level, &format!("onnxruntime: {msg}"));
    });
    let mut builder = Session::builder(&rt.environment).map_err(fail)?;
    if let Some(cancel) = &runtime.load_control {
        cancel.watch(&builder, name)?;
    }
    let provider = crate::runtime::providers::register(&mut builder, &rt.providers, name, cuda_graph)?;
    let builder = builder
        .with_intra_threads(rt.intra_op_threads)
        .map_err(|e| fail(e.into()))?
        .with_inter_threads(rt.inter_op_threads)
        .map_err(|e| fail(e.into()))?
        .with_intra_op_spinning(rt.allow_spinning)
        .map_err(|e| fail(e.into()))?
        .with_inter_op_spinning(rt.allow_spinning)
        .map_err(|e| fail(e.into()))?
        .with_logger(ort_logger)
        .map_err(|e| fail(e.into()))?
        // ONNX Runtime's informational lines only when the host asked for debug logs.
        .with_log_level(if runtime.logger().level() <= LogLevel::Debug {
            ort::logging::LogLevel::Info
        } else {
            ort::logging::LogLevel::Warning
        })
        .map_err(|e| fail(e.into()))?;
    Ok((builder, provider))
}

/// Creates the session from the source's bytes.
fn commit(mut builder: ort::session::builder::SessionBuilder, source: &GraphSource) -> std::result::Result<Session, ort::Error> {
    match source {
        GraphSource::File(p) => builder.commit_from_file(p),
        GraphSource::Memory { bytes, dir, .. } => builder
            // External-data files of a graph loaded from memory are looked up here.
            .with_config_entry("session.model_external_initializers_file_folder_path", dir.to_string_lossy())
            .map_err(ort::Error::<()>::from)?
            .commit_from_memory(bytes),
        GraphSource::Released { label } => Err(ort::Error::new(GraphSource::released(label).message())),
    }
}

/// Opens a session from the cached optimized graph when a valid one exists;
/// otherwise from the source, saving the optimized graph for next time. The
/// cache never fails a load: whatever goes wrong with it is logged and the
/// graph is loaded as without a cache.
fn open_through_cache(
    runtime: &Runtime,
    cache: &crate::runtime::graph_cache::GraphCache,
    name: &'static str,
    (source, digest): (&GraphSource, &std::sync::OnceLock<String>),
    label: &str,
    builder: ort::session::builder::SessionBuilder,
    provider: &crate::runtime::ProviderChoice,
) -> Result<Session> {
    use crate::runtime::graph_cache::{self, GraphOptimization, Lookup};
    let log = runtime.logger();
    let level = runtime.inner.graph_optimization;
    let plain = |builder: ort::session::builder::SessionBuilder| -> Result<Session> {
        let builder = builder.with_optimization_level(level.ort()).map_err(|e| load_error(name, label, e.into()))?;
        commit(builder, source).map_err(|e| external_data_problem(name, source).unwrap_or_else(|| load_error(name, label, e)))
    };
    let skip = |why: String| {
        cache.note_skipped();
        log.log(LogLevel::Warning, &format!("{name}: optimized-graph cache not used: {why}"));
    };
    if !provider.registered.is_empty() {
        // GPU providers: TensorRT, CoreML and DirectML compile nodes that ONNX
        // Runtime cannot save, and CUDA graphs carry copy nodes; not verified yet.
        skip(format!("only CPU sessions are cached, and this graph runs on {}", provider.primary().ort_name()));
        return plain(builder);
    }
    if level == GraphOptimization::Disabled {
        cache.note_skipped();
        log.info(&format!("{name}: optimized-graph cache not used: graph optimization is off"));
        return plain(builder);
    }
    let available = crate::runtime::providers::available_in_runtime();
    let settings = graph_cache::Settings {
        graph: name,
        onnxruntime: runtime.onnxruntime_version(),
        available: &available,
        registered: &provider.registered,
        level,
    };
    let id = match source {
        GraphSource::File(p) => graph_cache::SourceId::File(p),
        GraphSource::Memory { bytes, dir, .. } => graph_cache::SourceId::Memory { bytes, dir, digest },
        GraphSource::Released { .. } => return plain(builder),
    };
    let key = match graph_cache::key(&settings, &id) {
        Ok(k) => k,
        Err(e) => {
            skip(format!("cannot identify {label}: {e}"));
            return plain(builder);
        }
    };
    let entry = cache.entry_dir(&key);
    let mut builder = Some(builder);
    let rejected = match cache.lookup(&key) {
        Lookup::Miss => None,
        Lookup::Unusable(why) => Some(why),
        Lookup::Hit(model) => {
            let started = std::time::Instant::now();
            let b = builder.take().expect("builder unused so far");
            let opened = b
                .with_optimization_level(GraphOptimization::Disabled.ort())
                .map_err(ort::Error::<()>::from)
                .and_then(|mut b| b.commit_from_file(&model));
            match opened {
                Ok(session) => {
                    cache.note_hit();
                    log.info(&format!(
                        "{name}: optimized graph from the cache ({}, {:.2} s)",
                        entry.display(),
                        started.elapsed().as_secs_f64()
                    ));
                    return Ok(session);
                }
                Err(e) => match runtime.load_cancelled(name, &e.to_string()) {
                    // A cancelled load is no fault of the cached graph: keep it.
                    Some(cancelled) => return Err(cancelled),
                    None => Some(format!("ONNX Runtime refused it: {e}")),
                },
            }
        }
    };
    if let Some(why) = rejected {
        cache.note_rejected();
        log.log(
            LogLevel::Warning,
            &format!("{name}: cached optimized graph {} is unusable ({why}); loading {label} and rewriting it", entry.display()),
        );
        if let Err(e) = cache.retire(&key) {
            // Still in use elsewhere (Windows): load without the cache this time.
            skip(e);
            return plain(match builder {
                Some(b) => b,
                None => session_builder(runtime, name, label, false)?.0,
            });
        }
    }
    let builder = match builder {
        Some(b) => b,
        None => session_builder(runtime, name, label, false)?.0,
    };
    let pending = match cache.begin(&key) {
        Ok(p) => p,
        Err(e) => {
            skip(format!("cannot write in {}: {e}", cache.dir().display()));
            return plain(builder);
        }
    };
    let started = std::time::Instant::now();
    let saving = (|| -> std::result::Result<Session, ort::Error> {
        let b = builder
            .with_optimization_level(level.ort())?
            .with_optimized_model_path(pending.model_path())?
            .with_config_entry("session.optimized_model_external_initializers_file_name", graph_cache::DATA_FILE)?
            .with_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes",
                graph_cache::EXTERNAL_MIN_BYTES.to_string(),
            )?;
        commit(b, source)
    })();
    match saving {
        Ok(session) => {
            match pending.publish() {
                Ok(Some(bytes)) => {
                    cache.note_write();
                    log.info(&format!(
                        "{name}: optimized graph saved to the cache ({}, {:.1} MiB, {:.2} s)",
                        entry.display(),
                        bytes as f64 / (1 << 20) as f64,
                        started.elapsed().as_secs_f64()
                    ));
                }
                Ok(None) => {
                    cache.note_write();
                    log.info(&format!("{name}: optimized graph saved to the cache by another process first ({})", entry.display()));
                }
                Err(e) => skip(format!("cannot save the optimized graph: {e}")),
            }
            Ok(session)
        }
        Err(e) => {
            drop(pending);
            if let Some(cancelled) = runtime.load_cancelled(name, &e.to_string()) {
                return Err(cancelled);
            }
            // Saving may be what failed (a full disk, a graph ONNX Runtime
            // cannot serialize); a broken model fails again just below.
            skip(format!("creating the session while saving its optimized graph failed ({e}); loading without it"));
            plain(session_builder(runtime, name, label, false)?.0)
        }
    }
}

impl Graph {
    /// The graph's ONNX bytes, the folder its external data lives in, and a
    /// label for messages (for rewriting a loaded graph again, e.g. upcasting).
    pub(crate) fn source_bytes(&self) -> Result<(Vec<u8>, PathBuf, String)> {
        match &self.source {
            GraphSource::File(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|e| Error::new(crate::error::ErrorKind::Io, format!("cannot read {}: {e}", p.display())))?;
                Ok((bytes, p.parent().map(Path::to_path_buf).unwrap_or_default(), p.display().to_string()))
            }
            GraphSource::Memory { bytes, dir, label, .. } => Ok((bytes.to_vec(), dir.clone(), label.clone())),
            GraphSource::Released { label } => Err(GraphSource::released(label)),
        }
    }

    /// Finds an input by any of `names`, or by rank when `rank` is given.
    pub fn find_input(&self, names: &[&str], rank: Option<usize>) -> Option<&TensorSpec> {
        self.inputs
            .iter()
            .find(|s| names.contains(&s.name.as_str()))
            .or_else(|| rank.and_then(|r| self.inputs.iter().find(|s| s.shape.len() == r)))
    }

    /// Finds an output by any of `names`, else the first output.
    pub fn find_output(&self, names: &[&str]) -> Option<&TensorSpec> {
        self.outputs
            .iter()
            .find(|s| names.contains(&s.name.as_str()))
            .or_else(|| self.outputs.first())
    }

    /// Runs the graph. Inputs are converted to the declared element types; the
    /// named output comes back as f32.
    pub fn run(&self, inputs: Vec<(&TensorSpec, GraphInput)>, output: &str, options: Option<&RunOptions>) -> Result<ArrayD<f32>> {
        let mut out = self.run_many(inputs, &[output], options)?;
        out.pop().ok_or_else(|| Error::internal("graph run returned no output"))
    }

    /// Runs the graph once and returns several of its outputs, in the order asked.
    pub fn run_many(&self, inputs: Vec<(&TensorSpec, GraphInput)>, wanted: &[&str], options: Option<&RunOptions>) -> Result<Vec<ArrayD<f32>>> {
        let mut values: Vec<(String, ort::value::DynTensor)> = Vec::with_capacity(inputs.len());
        for (spec, data) in inputs {
            values.push((spec.name.clone(), self.to_value(spec, data)?));
        }
        let mut guard = self.acquire()?;
        let session = guard.as_mut().ok_or_else(|| Error::internal("graph session missing after load"))?;
        if self.uses_cuda_graph() {
            // Graph replay binds exactly one output (the U-Net's).
            let [output] = wanted else {
                return Err(Error::internal(format!("{}: a CUDA-graph session returns one output, {} were asked for", self.name, wanted.len())));
            };
            let started = std::time::Instant::now();
            let mut bound = self.bound.lock();
            let out = vec![crate::model::static_unet::run_bound(self, &mut bound, session, values, output, options)?];
            self.run_nanos.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            self.run_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(out);
        }
        let started = std::time::Instant::now();
        let values: Vec<(String, ort::session::SessionInputValue<'_>)> = values
            .into_iter()
            .map(|(n, v)| (n, v.into_dyn().into()))
            .chain(self.feeds.iter().map(|(n, v)| (n.clone(), v.as_ref().into())))
            .collect();
        let outputs = match options {
            Some(o) => session.run_with_options(values, o),
            None => session.run(values),
        }
        .map_err(|e| Error::inference(self.name, e))?;
        self.run_nanos.fetch_add(started.elapsed().as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
        self.run_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        wanted
            .iter()
            .map(|&output| {
                let value = outputs
                    .get(output)
                    .ok_or_else(|| Error::model(format!("{} graph produced no output `{output}`", self.name)))?;
                to_f32(self.name, output, value)
            })
            .collect()
    }

    /// A binding of this graph's inputs and outputs to tensors (for
    /// device-resident latents; the session is loaded if it is not).
    pub(crate) fn create_binding(&self) -> Result<ort::session::IoBinding> {
        let guard = self.acquire()?;
        let session = guard.as_ref().ok_or_else(|| Error::internal("graph session missing after load"))?;
        session.create_binding().map_err(|e| Error::new(ErrorKind::Inference, format!("{} graph: I/O binding: {e}", self.name)))
    }

    /// An allocator for tensors where this graph runs: the GPU's memory for a
    /// CUDA session, the host's for the CPU provider; `None` for providers
    /// whose memory Kiln does not bind yet.
    pub(crate) fn device_allocator(&self) -> Result<Option<ort::memory::Allocator>> {
        use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
        let fail = |e: ort::Error| Error::new(ErrorKind::Inference, format!("{} graph: device allocator: {e}", self.name));
        match self.provider.primary() {
            crate::runtime::Provider::Cpu => Ok(Some(Allocator::default())),
            crate::runtime::Provider::Cuda => {
                let guard = self.acquire()?;
                let session = guard.as_ref().ok_or_else(|| Error::internal("graph session missing after load"))?;
                let info = MemoryInfo::new(AllocationDevice::CUDA, self.runtime_device_id(), AllocatorType::Device, MemoryType::Default)
                    .map_err(fail)?;
                Allocator::new(session, info).map(Some).map_err(fail)
            }
            _ => Ok(None),
        }
    }

    /// Runs the graph on `binding`'s tensors (outputs stay where they are bound).
    pub(crate) fn run_binding(&self, binding: &ort::session::IoBinding, options: Option<&RunOptions>) -> Result<()> {
        let mut guard = self.acquire()?;
        let session = guard.as_mut().ok_or_else(|| Error::internal("graph session missing after load"))?;
        self.run_bound(session, binding, options)
    }

    /// `data` as a tensor of `spec`'s element type (on the host).
    pub(crate) fn to_value(&self, spec: &TensorSpec, data: GraphInput) -> Result<ort::value::DynTensor> {
        let wrong = |what: &str| {
            Error::model(format!(
                "{} graph input `{}` has element type {:?}; Kiln cannot feed it {what}",
                self.name, spec.name, spec.ty
            ))
        };
        let value: ort::value::DynTensor = match data {
            GraphInput::Float(a) => {
                let shape = shape_of(&a);
                let data = contiguous(a);
                match spec.ty {
                    TensorElementType::Float32 => Tensor::from_array((shape, data)).map(|t| t.upcast()),
                    TensorElementType::Float16 => {
                        let data: Vec<half::f16> = data.into_iter().map(half::f16::from_f32).collect();
                        Tensor::from_array((shape, data)).map(|t| t.upcast())
                    }
                    TensorElementType::Float64 => {
                        let data: Vec<f64> = data.into_iter().map(f64::from).collect();
                        Tensor::from_array((shape, data)).map(|t| t.upcast())
                    }
                    // Legacy exports take an integer timestep; diffusers casts with numpy (truncation).
                    TensorElementType::Int64 => {
                        let data: Vec<i64> = data.into_iter().map(|x| x as i64).collect();
                        Tensor::from_array((shape, data)).map(|t| t.upcast())
                    }
                    TensorElementType::Int32 => {
                        let data: Vec<i32> = data.into_iter().map(|x| x as i32).collect();
                        Tensor::from_array((shape, data)).map(|t| t.upcast())
                    }
                    _ => return Err(wrong("floating-point data")),
                }
            }
            GraphInput::Int(a) => {
                let shape = shape_of(&a);
                let data = contiguous(a);
                match spec.ty {
                    TensorElementType::Int64 => Tensor::from_array((shape, data)).map(|t| t.upcast()),
                    TensorElementType::Int32 => {
                        let data: Vec<i32> = data.into_iter().map(|x| x as i32).collect();
                        Tensor::from_array((shape, data)).map(|t| t.upcast())
                    }
                    _ => return Err(wrong("integer data")),
                }
            }
        }
        .map_err(|e| Error::internal(format!("cannot make a tensor for {}: {e}", spec.name)))?;
        Ok(value)
    }
}

/// The array's elements in row-major order: one memcpy when the array is
/// contiguous (the usual case) instead of an element-by-element walk.
fn contiguous<T: Clone>(a: ArrayD<T>) -> Vec<T> {
    match a.as_slice() {
        Some(s) => s.to_vec(),
        None => a.iter().cloned().collect(),
    }
}

fn shape_of<T>(a: &ArrayD<T>) -> Vec<i64> {
    a.shape().iter().map(|&d| d as i64).collect()
}

pub(crate) fn to_f32<T: ort::value::TensorValueTypeMarker + ?Sized>(graph: &str, name: &str, value: &ort::value::Value<T>) -> Result<ArrayD<f32>> {
    let bad = |e: ort::Error| Error::model(format!("{graph} graph output `{name}`: {e}"));
    let ty = match value.dtype() {
        ValueType::Tensor { ty, .. } => *ty,
        other => return Err(Error::model(format!("{graph} graph output `{name}` is {other:?}, not a tensor"))),
    };
    let (shape, data): (Vec<usize>, Vec<f32>) = match ty {
        TensorElementType::Float32 => {
            let (s, d) = value.try_extract_tensor::<f32>().map_err(bad)?;
            (s.iter().map(|&x| x as usize).collect(), d.to_vec())
        }
        TensorElementType::Float16 => {
            let (s, d) = value.try_extract_tensor::<half::f16>().map_err(bad)?;
            (s.iter().map(|&x| x as usize).collect(), d.iter().map(|x| x.to_f32()).collect())
        }
        TensorElementType::Float64 => {
            let (s, d) = value.try_extract_tensor::<f64>().map_err(bad)?;
            (s.iter().map(|&x| x as usize).collect(), d.iter().map(|&x| x as f32).collect())
        }
        other => return Err(Error::model(format!("{graph} graph output `{name}` has element type {other:?}"))),
    };
    ArrayD::from_shape_vec(IxDyn(&shape), data).map_err(|e| Error::internal(format!("{graph}: {e}")))
}
