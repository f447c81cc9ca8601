//! The engine-independent half of `KilnGenerator`: one model folder, loaded
//! on first use off the main thread, and `start`, which turns a prompt and
//! its options into a [`Tracker`] at once.
//!
//! Everything slow (loading ONNX Runtime and the model, rewriting the graphs
//! for a seamless view) happens on a short-lived preparation thread that ends
//! by submitting the job to Kiln's pool, so `generate` never blocks a frame.
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use kiln::jobs::{JobConfig, JobPool};
use kiln::model::seamless::Seamless;
use kiln::{Error, ErrorKind, Model, Runtime, RuntimeOptions};

use crate::options::{self, OptionValue};
use crate::tracker::Tracker;

/// Where the model and ONNX Runtime come from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionConfig {
    /// The model folder (diffusers/optimum ONNX layout), as a file-system path.
    pub model_dir: PathBuf,
    /// ONNX Runtime to load; `None` searches (`ORT_DYLIB_PATH`, then beside
    /// the extension's library, where the addon ships it).
    pub onnxruntime_path: Option<PathBuf>,
}

/// A model folder and the jobs generated from it.
pub struct Session {
    config: SessionConfig,
    /// Loaded on the first job; a failed load is not kept, so the next job retries.
    model: Arc<Mutex<Option<Model>>>,
}

impl Session {
    /// A session for `config`; nothing is loaded yet.
    pub fn new(config: SessionConfig) -> Self {
        Self { config, model: Arc::new(Mutex::new(None)) }
    }

    /// Where this session loads from.
    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Kiln's job pool, which every session's jobs run in.
    pub fn pool() -> &'static JobPool {
        // The process-wide job table; each submit grows its workers to the
        // submitting runtime's `job_workers` (kiln::jobs::pool_for).
        kiln::jobs::job_table()
    }

    /// Starts a generation: bad options give a tracker that fails on its
    /// first update; good ones a tracker that follows a preparation thread.
    pub fn start(&self, prompt: &str, entries: &[(String, OptionValue)]) -> Tracker {
        let parsed = match options::parse(prompt, entries) {
            Ok(o) => o,
            Err(e) => return Tracker::rejected(e),
        };
        let (tx, rx) = mpsc::channel();
        let config = self.config.clone();
        let slot = Arc::clone(&self.model);
        let spawned = std::thread::Builder::new().name("kiln-godot-prepare".into()).spawn(move || {
            let submitted = (|| {
                let model = loaded(&slot, &config)?;
                let model = if parsed.seamless == Seamless::None { model } else { model.seamless(parsed.seamless)? };
                let job = JobConfig { priority: parsed.priority, preview_interval: parsed.preview_interval, observer: None };
                Ok(kiln::jobs::pool_for(model.runtime())?.submit(&model, parsed.request, job))
            })();
            // The receiver is gone only when the node was freed; nothing to tell then.
            let _ = tx.send(submitted);
        });
        match spawned {
            Ok(_) => Tracker::preparing(rx),
            Err(e) => Tracker::rejected(Error::new(ErrorKind::Internal, format!("cannot start a thread: {e}"))),
        }
    }
}

/// The session's model, loading it (and ONNX Runtime) if this is the first use.
/// Concurrent first jobs wait on the lock and share one load.
fn loaded(slot: &Mutex<Option<Model>>, config: &SessionConfig) -> Result<Model, Error> {
    let mut guard = slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(m) = guard.as_ref() {
        return Ok(m.clone());
    }
    if config.model_dir.as_os_str().is_empty() {
        return Err(Error::new(ErrorKind::InvalidArgument, "model_path is empty; set it to a Kiln model folder"));
    }
    let runtime = Runtime::new(&RuntimeOptions { onnxruntime_path: config.onnxruntime_path.clone(), ..Default::default() })?;
    let model = Model::load(&runtime, &config.model_dir)?;
    *guard = Some(model.clone());
    Ok(model)
}
