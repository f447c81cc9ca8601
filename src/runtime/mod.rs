//! ONNX Runtime loading and the process-wide environment.
//!
//! `ort`'s implicit loader panics when the library is missing, so Kiln loads it
//! explicitly and fallibly with `ort::init_from`. ONNX Runtime allows one loaded
//! library and one environment per process: the first [`Runtime`] loads it, later
//! runtimes share it, and asking for a different library afterwards is an error
//! rather than a silent mismatch.
pub mod graph_cache;
mod load_control;
mod loader;
pub mod log;
pub mod providers;

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

pub use self::graph_cache::{GraphCacheStats, GraphOptimization};
pub(crate) use self::load_control::{LoadControl, ProgressReport};
pub use self::loader::{LoadedLibrary, ONNXRUNTIME_NEWEST_TESTED, ONNXRUNTIME_OLDEST_SUPPORTED};
pub use self::log::{LogCallback, LogLevel};
pub use self::providers::{GpuMath, Provider, ProviderChoice, ProviderPolicy};
use crate::error::{Error, ErrorKind, Result};

/// How to create a [`Runtime`]. `Default` gives engine-friendly settings.
#[derive(Clone, Default)]
pub struct RuntimeOptions {
    /// Path of the ONNX Runtime library: that library or an error. `None`: the
    /// library named by `ORT_DYLIB_PATH` (again that one or an error), else a
    /// search of the folder holding libkiln, then the copy the project's setup
    /// fetched. Releases older than 1.23 are refused before any session exists.
    pub onnxruntime_path: Option<PathBuf>,
    /// Threads one graph may use (ORT intra-op). 0 = all cores but one, at least one,
    /// so the game keeps a core.
    pub intra_op_threads: usize,
    /// Threads running independent graph branches (ORT inter-op). 0 = 1.
    pub inter_op_threads: usize,
    /// Let ORT's thread pool spin while waiting for work. Off by default: spinning
    /// threads steal cycles from the host (and collide when several models run).
    pub allow_spinning: bool,
    /// Where log lines go; `None` drops them.
    pub log: Option<LogCallback>,
    /// The least severe level that reaches `log`.
    pub log_level: LogLevel,
    /// Worker threads running asynchronous jobs; 0 = 1. The pool is shared by
    /// the whole process and sized by the first runtime that submits a job.
    pub job_workers: usize,
    /// Execution providers for the graphs of models loaded from this runtime.
    pub providers: ProviderPolicy,
    /// Which graphs of a model stay loaded between uses.
    pub residency: crate::model::Residency,
    /// Prompts whose embeddings each model keeps (LRU); `None` = 32, 0 = off.
    pub embedding_cache_entries: Option<usize>,
    /// Folder where ONNX Runtime's optimized graphs are kept between processes,
    /// so later loads skip graph optimization (see [`graph_cache`]). `None`
    /// (the default): no cache, and Kiln writes nothing to disk. Created when
    /// first needed; a folder that cannot be used is logged and never fails a load.
    pub graph_cache_dir: Option<PathBuf>,
    /// How much ONNX Runtime optimizes each graph when a session is created
    /// (default: everything, ONNX Runtime's own default).
    pub graph_optimization: GraphOptimization,
    /// Load a model's graphs one after another. By default (`false`) the text
    /// encoder, U-Net and VAE decoder load at once on three threads, which
    /// shortens loading when the machine has a spare core; sequential loading
    /// keeps loading to one core.
    pub sequential_load: bool,
}

/// A loaded ONNX Runtime plus Kiln's settings for it. Cheap to clone; thread-safe.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RuntimeInner>,
    /// The cancel switch and progress meter of the load this clone runs (a
    /// model-load or LoRA-switch job); `None` for the runtime itself and for
    /// what a load keeps ([`Runtime::detached`]).
    pub(crate) load_control: Option<LoadControl>,
}

pub(crate) struct RuntimeInner {
    pub(crate) environment: ort::environment::Environment,
    pub(crate) library: LoadedLibrary,
    pub(crate) intra_op_threads: usize,
    pub(crate) inter_op_threads: usize,
    pub(crate) allow_spinning: bool,
    pub(crate) logger: log::Logger,
    pub(crate) job_workers: usize,
    pub(crate) providers: ProviderPolicy,
    pub(crate) residency: crate::model::Residency,
    pub(crate) embedding_cache_entries: usize,
    pub(crate) graph_cache: Option<graph_cache::GraphCache>,
    pub(crate) graph_optimization: GraphOptimization,
    pub(crate) sequential_load: bool,
}

/// The one environment of this process, kept while any runtime holds it.
static ENVIRONMENT: Mutex<Option<std::sync::Weak<ort::environment::Environment>>> = Mutex::new(None);

impl Runtime {
    /// Loads ONNX Runtime (once per process) and makes a runtime.
    pub fn new(options: &RuntimeOptions) -> Result<Self> {
        let logger = log::Logger::new(options.log.clone(), options.log_level);
        let library = loader::load(options.onnxruntime_path.as_deref())?;
        let (min_major, min_minor) = ONNXRUNTIME_OLDEST_SUPPORTED;
        logger.info(&format!(
            "ONNX Runtime {} loaded from {} (Kiln supports {min_major}.{min_minor} and later; newest tested {ONNXRUNTIME_NEWEST_TESTED})",
            library.version,
            library.path.display()
        ));
        let environment = shared_environment()?;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let intra = if options.intra_op_threads == 0 { cores.saturating_sub(1).max(1) } else { options.intra_op_threads };
        let inter = options.inter_op_threads.max(1);
        let graph_cache = options.graph_cache_dir.as_deref().map(graph_cache::GraphCache::new);
        if let Some(cache) = &graph_cache {
            logger.info(&format!("optimized-graph cache: {}", cache.dir().display()));
        }
        Ok(Self {
            inner: Arc::new(RuntimeInner {
                environment: (*environment).clone(),
                library,
                intra_op_threads: intra,
                inter_op_threads: inter,
                allow_spinning: options.allow_spinning,
                logger,
                job_workers: options.job_workers.max(1),
                providers: options.providers.clone(),
                residency: options.residency,
                embedding_cache_entries: options.embedding_cache_entries.unwrap_or(32),
                graph_cache,
                graph_optimization: options.graph_optimization,
                sequential_load: options.sequential_load,
            }),
            load_control: None,
        })
    }

    /// A clone whose sessions, and Kiln's steps between them, answer to
    /// `control` and report to it (what a job's model load runs with);
    /// `None`: to nothing.
    pub(crate) fn loading_under(&self, control: Option<&LoadControl>) -> Runtime {
        Runtime { inner: Arc::clone(&self.inner), load_control: control.cloned() }
    }

    /// Tells the job this load runs for, if any, which graphs (name, file) it
    /// will open now, so its progress counts them as their sessions are made.
    pub(crate) fn plan_load(&self, graphs: &[(&'static str, &std::path::Path)]) {
        if let Some(control) = &self.load_control {
            control.plan(graphs);
        }
    }

    /// This runtime without a load's control: what a loaded model and
    /// its graphs keep, so a later reload never answers to a finished job.
    pub(crate) fn detached(&self) -> Runtime {
        Runtime { inner: Arc::clone(&self.inner), load_control: None }
    }

    /// CANCELLED when the load this runtime runs was cancelled; `what` names
    /// the step that is then not taken.
    pub(crate) fn check_load_cancel(&self, what: &str) -> Result<()> {
        self.load_control.as_ref().map_or(Ok(()), |c| c.check(what))
    }

    /// The error for a session creation that failed (`failure`, ONNX
    /// Runtime's words) because its load was cancelled; `None` otherwise.
    pub(crate) fn load_cancelled(&self, graph: &str, failure: &str) -> Option<Error> {
        self.load_control.as_ref().filter(|c| c.is_cancelled()).map(|_| {
            Error::new(ErrorKind::Cancelled, format!("the load was cancelled while the {graph} session was being created ({failure})"))
        })
    }

    /// The ONNX Runtime version in use, e.g. `1.31.1`.
    pub fn onnxruntime_version(&self) -> &str {
        &self.inner.library.version
    }

    /// The path the ONNX Runtime library was loaded from.
    pub fn onnxruntime_path(&self) -> &std::path::Path {
        &self.inner.library.path
    }

    /// Threads one graph uses.
    pub fn intra_op_threads(&self) -> usize {
        self.inner.intra_op_threads
    }

    /// The optimized-graph cache folder, if this runtime has one (absolute).
    pub fn graph_cache_dir(&self) -> Option<&std::path::Path> {
        self.inner.graph_cache.as_ref().map(|c| c.dir())
    }

    /// What the optimized-graph cache has done so far (all zero without one).
    pub fn graph_cache_stats(&self) -> GraphCacheStats {
        self.inner.graph_cache.as_ref().map(|c| c.stats()).unwrap_or_default()
    }

    /// Worker threads this runtime asks of the process-wide job pool
    /// (`kiln::jobs::pool_for`), at least 1.
    pub fn job_workers(&self) -> usize {
        self.inner.job_workers
    }

    pub(crate) fn logger(&self) -> &log::Logger {
        &self.inner.logger
    }
}

fn shared_environment() -> Result<Arc<ort::environment::Environment>> {
    // Keeping an Arc in a static would release the environment at process exit,
    // after ORT's own statics (ort #609/#614 crash there); a Weak avoids that.
    let mut slot = ENVIRONMENT.lock();
    if let Some(env) = slot.as_ref().and_then(|w| w.upgrade()) {
        return Ok(env);
    }
    let env = ort::init()
        .with_name("kiln")
        .with_telemetry(false)
        .build()
        .map_err(|e| Error::new(ErrorKind::RuntimeLoad, format!("could not create the ONNX Runtime environment: {e}")))?;
    let env = Arc::new(env);
    *slot = Some(Arc::downgrade(&env));
    // Leak one strong count: ORT forbids re-creating the environment after it is
    // released, and an engine may create and destroy runtimes many times.
    std::mem::forget(Arc::clone(&env));
    Ok(env)
}
