//! The U-Net specialised to one job's shapes, so that it runs wholly on the GPU
//! and can be captured in a CUDA graph.
//!
//! An optimum export leaves the batch, latent height and width and the text
//! length symbolic, and computes shapes at run time (`Shape` → `Gather` →
//! `Unsqueeze` → `Concat` → `Reshape`). Under CUDA those small integer chains
//! are placed on the CPU with copies around them, which costs launches and
//! makes ONNX Runtime refuse CUDA graph capture. Once a job's shapes are known
//! they are constants, so:
//!
//! 1. Kiln's own ONNX editing ([`fix_input_dims`]) writes the job's sizes into
//!    the graph's declared inputs and outputs (every `dim_param` becomes a
//!    `dim_value`);
//! 2. ONNX Runtime loads that graph on the CPU provider at the *basic*
//!    optimization level and saves what it made (`optimized_model_filepath`).
//!    Basic level is constant folding and redundant-node removal, defined
//!    independently of the execution provider; with every input shape known,
//!    its constant folding replaces each `Shape` node by its value and folds
//!    the integer chains behind it. No fusions or CPU layouts are applied, so
//!    the saved graph is valid for any provider.
//!
//! ONNX Runtime's folder is used rather than a folder of Kiln's own because it
//! already has shape inference for every ONNX operator and evaluates the
//! folded nodes with its own kernels, so the folded values are exactly what the
//! dynamic graph computes at run time; a hand-written folder would need shape
//! inference for every op in a U-Net to find the same constants.
//!
//! One specialised graph is made per job shape, on first use, and kept with the
//! model: a game that generates at one size pays once. With the runtime's
//! optimized-graph cache (`graph_cache_dir`) it is kept there too, so another
//! process (or a model loaded again) skips the specialisation: the entry is
//! keyed like every cached graph (see [`crate::runtime::graph_cache`]), on the
//! bytes of the graph with the job's dimensions written in (so on the source
//! graph and the shapes), the files its external data lives beside, the
//! providers the U-Net registered, ONNX Runtime's version and the CPU, and is
//! checked, written and replaced the same way. Without a cache it lives in a
//! private temporary folder removed with the model.
//!
//! **Memory.** With the static U-Net asked for, the model loads the dynamic
//! U-Net lazily (its inputs and outputs read from the file, no session): jobs
//! run their specialised graph, so the dynamic session is made only if a shape
//! cannot be specialised, and the weights are not held twice. Each specialised
//! shape kept holds its own copy of the weights (ONNX Runtime sessions share
//! none), so a game that alternates between sizes holds one U-Net per size.
//! In a ControlNet folder, where every job runs `unet_controlnet` (plain
//! ones with zero residuals), that graph is the one specialised, into
//! `unet_controlnet_static`: plain and ControlNet jobs of one shape share it,
//! and neither `unet/` nor the dynamic `unet_controlnet` is opened.
//!
//! **CUDA graphs.** With [`crate::runtime::ProviderPolicy::cuda_graph`] the
//! specialised graph's CUDA session is made with `enable_cuda_graph`: ONNX
//! Runtime captures the first run and replays it, which needs the inputs and
//! the output at the same device addresses every run. `BoundIo` holds device
//! tensors of the job's shapes bound once; each step copies the host inputs
//! into them and the output back. What breaks capture, and what Kiln does:
//! * another size or batch: another specialised graph (its own session and
//!   capture), the first kept for when that size comes back;
//! * a seamless view or a LoRA set: a different model handle with its own
//!   U-Net, so its own specialised graphs and captures;
//! * per-stage residency: the session is released between stages and its
//!   capture with it; Kiln does not ask for CUDA graphs then (the static graph
//!   still runs);
//! * a provider other than CUDA: the flag is ignored.
//!
//! If specialising fails (an export ONNX Runtime cannot fold), or a run with
//! CUDA graph replay fails (ONNX Runtime refuses the capture when a node is
//! left on the CPU), that shape runs the dynamic U-Net from then on and the
//! reason is logged once.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::{RunOptions, Session};
use ort::value::DynTensor;
use parking_lot::Mutex;

use super::graph::{self, Graph, GraphSource, SessionFlags};
use super::onnx_proto::{Message, Value};
use crate::error::{Error, ErrorKind, Result};
use crate::runtime::{LogLevel, Runtime};

/// What a specialised graph still computes at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticReport {
    /// Nodes in the graph.
    pub nodes: usize,
    /// `Shape` and `Size` nodes left (0 when every shape was folded).
    pub shape_nodes: usize,
    /// Symbolic or missing dimensions left in the declared inputs and outputs.
    pub symbolic_dims: usize,
}

/// Rewrites the declared shape of each graph input and output named in
/// `fixed` to the given dimensions (ModelProto.graph = 7, GraphProto.input =
/// 11, .output = 12). Every other field is kept as read.
pub fn fix_input_dims(model: &[u8], fixed: &[(String, Vec<i64>)]) -> Result<Vec<u8>> {
    let top = Message::parse(model)?;
    let mut graph = Message::parse(super::onnx_proto::only_graph(&top)?)?;
    let mut found = vec![false; fixed.len()];
    for (n, v) in graph.fields.iter_mut() {
        if *n != 11 && *n != 12 {
            continue;
        }
        let Value::Bytes(info_bytes) = v else { continue };
        let info = Message::parse(info_bytes)?;
        let Some(k) = info.string(1).and_then(|name| fixed.iter().position(|(f, _)| f == name)) else { continue };
        found[k] = true;
        *v = Value::Bytes(with_dims(&info, &fixed[k].1)?.to_bytes().into());
    }
    if let Some(k) = found.iter().position(|f| !f) {
        return Err(Error::model(format!("the graph declares no input or output `{}` to fix", fixed[k].0)));
    }
    Ok(super::onnx_proto::with_graph(&top, &graph))
}

/// ValueInfoProto with TypeProto.tensor_type(1).shape(2) replaced by `dims`.
fn with_dims(info: &Message<'_>, dims: &[i64]) -> Result<Message<'static>> {
    let mut out = Message::default();
    for (n, v) in &info.fields {
        match (n, v) {
            (2, Value::Bytes(ty)) => {
                let ty = Message::parse(ty)?;
                let mut new_ty = Message::default();
                for (tn, tv) in &ty.fields {
                    match (tn, tv) {
                        (1, Value::Bytes(tensor)) => {
                            let tensor = Message::parse(tensor)?;
                            let mut new_tensor = Message::default();
                            for (f, fv) in &tensor.fields {
                                if *f != 2 {
                                    new_tensor.fields.push((*f, to_owned(fv)));
                                }
                            }
                            let mut shape = Message::default();
                            for &d in dims {
                                let mut dim = Message::default();
                                dim.push_varint(1, d as u64);
                                shape.push_message(1, &dim);
                            }
                            new_tensor.push_message(2, &shape);
                            new_ty.push_message(1, &new_tensor);
                        }
                        _ => new_ty.fields.push((*tn, to_owned(tv))),
                    }
                }
                out.push_message(2, &new_ty);
            }
            _ => out.fields.push((*n, to_owned(v))),
        }
    }
    Ok(out)
}

fn to_owned(v: &Value<'_>) -> Value<'static> {
    match v {
        Value::Varint(x) => Value::Varint(*x),
        Value::Fixed64(b) => Value::Fixed64(*b),
        Value::Fixed32(b) => Value::Fixed32(*b),
        Value::Bytes(b) => Value::Bytes(std::borrow::Cow::Owned(b.to_vec())),
    }
}

/// Counts what `path`'s graph still leaves to run time.
pub fn inspect(path: &Path) -> Result<StaticReport> {
    let open = || {
        std::fs::File::open(path).map_err(|e| Error::new(ErrorKind::Io, format!("cannot open {}: {e}", path.display())))
    };
    let (nodes, _) = super::onnx_proto::graph_summary(open()?)?;
    let (inputs, outputs) = super::onnx_proto::declared_io(open()?)?;
    let symbolic_dims = inputs.iter().chain(&outputs).flat_map(|t| &t.dims).filter(|&&d| d < 0).count();
    let shape_nodes = nodes.iter().filter(|n| n.op_type == "Shape" || n.op_type == "Size").count();
    Ok(StaticReport { nodes: nodes.len(), shape_nodes, symbolic_dims })
}

/// File name of the specialised graph in its folder (the graph cache's).
const MODEL_FILE: &str = crate::runtime::graph_cache::MODEL_FILE;

/// Specialises the graph in `model` (external data in `data_dir`) to the
/// shapes in `fixed` and writes it, with its weights beside it, into `out_dir`
/// (which must exist). Returns the written graph's path and what it leaves to
/// run time.
pub fn specialise(runtime: &Runtime, model: &[u8], data_dir: &Path, fixed: &[(String, Vec<i64>)], out_dir: &Path) -> Result<(PathBuf, StaticReport)> {
    fold(runtime, &fix_input_dims(model, fixed)?, data_dir, fixed, out_dir)
}

/// Folds the shape computations of `bytes` (a graph whose dimensions are
/// already fixed to `fixed`) and writes the result into `out_dir`.
fn fold(runtime: &Runtime, bytes: &[u8], data_dir: &Path, fixed: &[(String, Vec<i64>)], out_dir: &Path) -> Result<(PathBuf, StaticReport)> {
    let path = out_dir.join(MODEL_FILE);
    let fail = |e: ort::Error| Error::new(ErrorKind::Inference, format!("cannot specialise the U-Net to {fixed:?}: {e}"));
    // The CPU provider alone: constant folding evaluates on it, and nothing
    // provider-specific can enter the saved graph.
    let session = (|| -> std::result::Result<Session, ort::Error> {
        Session::builder(&runtime.inner.environment)?
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Level1)?
            .with_intra_threads(runtime.inner.intra_op_threads)?
            .with_optimized_model_path(&path)?
            // The graph cache's file names and threshold, so an entry can be one.
            .with_config_entry("session.optimized_model_external_initializers_file_name", crate::runtime::graph_cache::DATA_FILE)?
            .with_config_entry(
                "session.optimized_model_external_initializers_min_size_in_bytes",
                crate::runtime::graph_cache::EXTERNAL_MIN_BYTES.to_string(),
            )?
            .with_config_entry("session.model_external_initializers_file_folder_path", data_dir.to_string_lossy())?
            .commit_from_memory(bytes)
    })()
    .map_err(fail)?;
    drop(session);
    let report = inspect(&path)?;
    Ok((path, report))
}

/// A folder removed when dropped.
struct TempFolder(PathBuf);

impl TempFolder {
    fn new() -> Result<Self> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("kiln-static-unet-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::new(ErrorKind::Io, format!("cannot create {}: {e}", dir.display())))?;
        Ok(Self(dir))
    }
}

impl Drop for TempFolder {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One specialised U-Net and the temporary folder its files live in (`None`
/// when they live in the graph cache). The graph field comes first so the
/// session is dropped before the folder is removed.
pub(crate) struct Specialised {
    pub(crate) graph: Graph,
    pub(crate) report: StaticReport,
    /// Whether the graph came from the on-disk graph cache.
    pub(crate) from_cache: bool,
    _folder: Option<TempFolder>,
}

/// A model's specialised U-Nets by input shapes; `None` records a shape that
/// could not be specialised (it runs the dynamic U-Net, logged once).
#[derive(Default)]
pub(crate) struct StaticUnets {
    graphs: Mutex<HashMap<ShapeKey, Option<Arc<Specialised>>>>,
}

/// The shapes of a U-Net call's inputs, in graph-input order.
type ShapeKey = Vec<Vec<usize>>;

impl StaticUnets {
    /// The U-Net specialised to `shapes` (one per input of `unet`, by name),
    /// made on first use; `None` when it cannot be made.
    pub(crate) fn get(
        &self,
        runtime: &Runtime,
        unet: &Graph,
        shapes: &[(&str, Vec<usize>)],
        output: (&str, Vec<usize>),
    ) -> Option<Arc<Specialised>> {
        let key: Vec<Vec<usize>> = shapes.iter().map(|(_, s)| s.clone()).collect();
        let mut graphs = self.graphs.lock();
        if let Some(found) = graphs.get(&key) {
            return found.clone();
        }
        let started = std::time::Instant::now();
        let made = make(runtime, unet, shapes, output);
        let log = runtime.logger();
        let entry = match made {
            Ok(s) => {
                log.info(&format!(
                    "{}: specialised to {key:?} in {:.2} s{} ({} nodes, {} Shape nodes and {} symbolic dims left; CUDA graph {})",
                    unet.name,
                    started.elapsed().as_secs_f64(),
                    if s.from_cache { " from the graph cache" } else { "" },
                    s.report.nodes,
                    s.report.shape_nodes,
                    s.report.symbolic_dims,
                    if s.graph.uses_cuda_graph() { "on" } else { "off" }
                ));
                Some(Arc::new(s))
            }
            Err(e) => {
                log.log(LogLevel::Warning, &format!("{}: cannot specialise to {key:?}, running the dynamic graph: {}", unet.name, e.message()));
                None
            }
        };
        graphs.insert(key, entry.clone());
        entry
    }
}

impl StaticUnets {
    /// Calls and seconds inside ONNX Runtime over every specialised graph.
    pub(crate) fn run_time(&self) -> (u64, f64) {
        self.graphs.lock().values().flatten().map(|s| s.graph.run_time()).fold((0, 0.0), |(c, t), (c2, t2)| (c + c2, t + t2))
    }

    /// Calls `f` on every specialised graph made so far.
    pub(crate) fn for_each_graph(&self, f: &mut dyn FnMut(&Graph)) {
        for s in self.graphs.lock().values().flatten() {
            f(&s.graph);
        }
    }

    /// Stops using the specialised graph for `key` after `why` (its runs
    /// fail); that shape runs the dynamic U-Net from now on.
    pub(crate) fn give_up(&self, runtime: &Runtime, key: Vec<Vec<usize>>, why: &Error) {
        runtime.logger().log(
            LogLevel::Warning,
            &format!("unet: the specialised graph for {key:?} failed ({}); running the dynamic graph for this shape", why.message()),
        );
        self.graphs.lock().insert(key, None);
    }
}

/// The name of a graph specialised from `source` (a U-Net graph's name): its
/// sessions', log lines' and graph-cache entries' name.
fn specialised_name(source: &str) -> &'static str {
    match source {
        "unet_controlnet" => "unet_controlnet_static",
        _ => "unet_static",
    }
}

fn make(runtime: &Runtime, unet: &Graph, shapes: &[(&str, Vec<usize>)], output: (&str, Vec<usize>)) -> Result<Specialised> {
    let name = specialised_name(unet.name);
    let (bytes, dir) = match unet.source() {
        GraphSource::File(p) => (
            Arc::new(std::fs::read(p).map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {}: {e}", p.display())))?),
            p.parent().map(Path::to_path_buf).unwrap_or_default(),
        ),
        GraphSource::Memory { bytes, dir, .. } => (Arc::clone(bytes), dir.clone()),
        GraphSource::Released { label } => return Err(Error::internal(format!("{label}: the graph's bytes were freed; it cannot be specialised"))),
    };
    let mut fixed: Vec<(String, Vec<i64>)> =
        shapes.iter().map(|(n, s)| (n.to_string(), s.iter().map(|&d| d as i64).collect())).collect();
    fixed.push((output.0.to_string(), output.1.iter().map(|&d| d as i64).collect()));
    let bytes = fix_input_dims(&bytes, &fixed)?;
    let cached = match &runtime.inner.graph_cache {
        Some(cache) => through_cache(runtime, cache, unet, &bytes, &dir, &fixed),
        None => None,
    };
    let policy = &runtime.inner.providers;
    // `uncached`: the specialised graph is itself the cached artefact; its
    // session is made from it as from any ONNX file.
    let flags = SessionFlags { cuda_graph: policy.cuda_graph && !unet.per_stage(), uncached: true, lazy: false };
    let load = |path: PathBuf| Graph::load_flagged(runtime, name, GraphSource::File(path), unet.group(), unet.overrides().clone(), flags);
    if let Some((path, report, key)) = cached {
        match load(path) {
            Ok(graph) => return Ok(Specialised { graph, report, from_cache: key.is_some(), _folder: None }),
            // A cached entry ONNX Runtime refuses is set aside; made afresh below.
            Err(e) if key.is_some() => {
                let cache = runtime.inner.graph_cache.as_ref().expect("a hit came from the cache");
                cache.note_rejected();
                runtime.logger().log(LogLevel::Warning, &format!("{name}: cached graph refused ({}); specialising again", e.message()));
                let _ = cache.retire(key.as_ref().expect("checked"));
            }
            Err(e) => return Err(e),
        }
    }
    let folder = TempFolder::new()?;
    let (path, report) = fold(runtime, &bytes, &dir, &fixed, &folder.0)?;
    let graph = load(path)?;
    Ok(Specialised { graph, report, from_cache: false, _folder: Some(folder) })
}

/// The specialised graph from the runtime's graph cache, made and saved there
/// on a miss: its path, what it leaves to run time, and the entry's key if it
/// was a hit (`None` when it was just written).
/// `None` (after logging why) when the cache cannot serve it; the caller then
/// specialises into a temporary folder, so the cache never fails a job.
fn through_cache(
    runtime: &Runtime,
    cache: &crate::runtime::graph_cache::GraphCache,
    unet: &Graph,
    fixed_bytes: &[u8],
    data_dir: &Path,
    fixed: &[(String, Vec<i64>)],
) -> Option<(PathBuf, StaticReport, Option<crate::runtime::graph_cache::Key>)> {
    use crate::runtime::graph_cache::{self, GraphOptimization, Lookup, Settings, SourceId};
    let name = specialised_name(unet.name);
    let log = runtime.logger();
    let skip = |why: String| {
        cache.note_skipped();
        log.log(LogLevel::Warning, &format!("{name}: graph cache not used: {why}"));
        None
    };
    let available = crate::runtime::providers::available_in_runtime();
    let settings = Settings {
        graph: name,
        onnxruntime: runtime.onnxruntime_version(),
        available: &available,
        registered: &unet.provider.registered,
        level: GraphOptimization::Basic,
    };
    let digest = std::sync::OnceLock::new();
    let key = match graph_cache::key(&settings, &SourceId::Memory { bytes: fixed_bytes, dir: data_dir, digest: &digest }) {
        Ok(k) => k,
        Err(e) => return skip(format!("cannot identify the U-Net's files: {e}")),
    };
    let entry = cache.entry_dir(&key);
    match cache.lookup(&key) {
        Lookup::Hit(path) => match inspect(&path) {
            Ok(report) => {
                cache.note_hit();
                log.info(&format!("{name}: specialised graph from the cache ({})", entry.display()));
                return Some((path, report, Some(key)));
            }
            Err(e) => {
                cache.note_rejected();
                log.log(LogLevel::Warning, &format!("{name}: cached graph {} is unreadable ({}); rewriting it", entry.display(), e.message()));
                if let Err(e) = cache.retire(&key) {
                    return skip(e);
                }
            }
        },
        Lookup::Unusable(why) => {
            cache.note_rejected();
            log.log(LogLevel::Warning, &format!("{name}: cached graph {} is unusable ({why}); rewriting it", entry.display()));
            if let Err(e) = cache.retire(&key) {
                return skip(e);
            }
        }
        Lookup::Miss => {}
    }
    let pending = match cache.begin(&key) {
        Ok(p) => p,
        Err(e) => return skip(format!("cannot write in {}: {e}", cache.dir().display())),
    };
    let tmp = pending.model_path().parent().map(Path::to_path_buf).unwrap_or_default();
    // A graph ONNX Runtime cannot fold fails again in the caller, with its message.
    let (_, report) = fold(runtime, fixed_bytes, data_dir, fixed, &tmp).ok()?;
    match pending.publish() {
        Ok(written) => {
            cache.note_write();
            let by = if written.is_some() { "" } else { " by another process first" };
            log.info(&format!("{name}: specialised graph saved to the cache{by} ({})", entry.display()));
            Some((entry.join(graph_cache::MODEL_FILE), report, None))
        }
        Err(e) => skip(format!("cannot save the specialised graph: {e}")),
    }
}

/// A session's inputs and output bound at fixed device addresses (CUDA graph
/// replay needs the same addresses on every run).
pub(crate) struct BoundIo {
    inputs: Vec<(String, DynTensor)>,
    output: (String, DynTensor),
    // Dropped after the tensors: its reference keeps the session, and so the
    // allocator they came from, alive.
    binding: ort::session::IoBinding,
}

/// Runs `session` through its bound device tensors: host inputs are copied in,
/// the output copied back. The binding is made on the first call.
pub(crate) fn run_bound(
    g: &Graph,
    bound: &mut Option<BoundIo>,
    session: &mut Session,
    values: Vec<(String, DynTensor)>,
    output: &str,
    options: Option<&RunOptions>,
) -> Result<ndarray::ArrayD<f32>> {
    let fail = |what: &str, e: ort::Error| Error::new(ErrorKind::Inference, format!("{} graph: {what}: {e}", g.name));
    let same = |b: &BoundIo| {
        b.output.0 == output
            && b.inputs.len() == values.len()
            && b.inputs.iter().zip(&values).all(|((n, d), (m, h))| n == m && d.shape() == h.shape() && d.dtype() == h.dtype())
    };
    if !bound.as_ref().is_some_and(same) {
        let device = MemoryInfo::new(AllocationDevice::CUDA, g.runtime_device_id(), AllocatorType::Device, MemoryType::Default)
            .map_err(|e| fail("CUDA memory info", e))?;
        let allocator = Allocator::new(session, device).map_err(|e| fail("CUDA allocator", e))?;
        let mut binding = session.create_binding().map_err(|e| fail("I/O binding", e))?;
        let mut inputs = Vec::with_capacity(values.len());
        for (name, host) in &values {
            let ty = *host.data_type();
            let dev = DynTensor::new(&allocator, ty, host.shape().clone()).map_err(|e| fail("device input", e))?;
            binding.bind_input(name.as_str(), &dev).map_err(|e| fail("binding an input", e))?;
            inputs.push((name.clone(), dev));
        }
        let spec = g
            .outputs
            .iter()
            .find(|o| o.name == output)
            .ok_or_else(|| Error::model(format!("{} graph has no output `{output}`", g.name)))?;
        if spec.shape.iter().any(|&d| d < 0) {
            return Err(Error::model(format!("{} graph output `{output}` has a dynamic shape {:?}", g.name, spec.shape)));
        }
        let mut out = DynTensor::new(&allocator, spec.ty, spec.shape.clone()).map_err(|e| fail("device output", e))?;
        binding.bind_output(output, &mut out).map_err(|e| fail("binding the output", e))?;
        *bound = Some(BoundIo { binding, inputs, output: (output.to_string(), out) });
    }
    let b = bound.as_mut().expect("bound above");
    for ((_, dev), (_, host)) in b.inputs.iter_mut().zip(&values) {
        host.copy_into(dev).map_err(|e| fail("copying an input to the device", e))?;
    }
    let outputs = match options {
        Some(o) => session.run_binding_with_options(&b.binding, o),
        None => session.run_binding(&b.binding),
    }
    .map_err(|e| Error::inference(g.name, e))?;
    drop(outputs);
    let host = b.output.1.to(AllocationDevice::CPU, 0).map_err(|e| fail("copying the output to the host", e))?;
    graph::to_f32(g.name, output, &host)
}
