//! A load that a job runs (a model load, LoRA switch, seamless view or
//! upscaler load), as the job sees it:
//! - its cancel switch: a session that ONNX Runtime is creating is told to
//!   give up (its load-cancellation flag), and Kiln's own steps between
//!   sessions check the same token;
//! - its progress: the load says which graphs it will open, weighted by
//!   their files' sizes, and each opened session moves the job's progress on.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};

/// One load's cancel switch and progress meter. A job holds it and lends it
/// to the runtime its load runs with ([`super::Runtime::loading_under`]):
/// every session built under it registers ONNX Runtime's canceler here, so
/// [`LoadControl::cancel`] reaches the sessions being created on every
/// loading thread at once, and tells it when it is made ([`LoadControl::opened`]).
#[derive(Clone, Default)]
pub(crate) struct LoadControl(Arc<State>);

#[derive(Default)]
struct State {
    cancelled: AtomicBool,
    /// The load is over: later cancels and registrations do nothing, so a
    /// token a finished model still holds (through its runtime) is inert.
    over: AtomicBool,
    sessions: Mutex<Vec<ort::session::builder::LoadCanceler>>,
    progress: Mutex<Progress>,
}

/// Who hears of a load's progress: `(done, total)` in KiB of graph files.
pub(crate) type ProgressReport = Arc<dyn Fn(u32, u32) + Send + Sync>;

#[derive(Default)]
struct Progress {
    /// The graphs the load opens: name, KiB of its files, opened yet.
    planned: Vec<(&'static str, u64, bool)>,
    report: Option<ProgressReport>,
}

impl LoadControl {
    /// Stops the load: sessions being created give up at ONNX Runtime's next
    /// check, and the next step of Kiln's own fails with CANCELLED.
    pub(crate) fn cancel(&self) {
        // Under the lock, so a session registering now either sees the flag
        // or is in the list when it is walked.
        let sessions = self.0.sessions.lock();
        if self.0.over.load(Ordering::Acquire) {
            return;
        }
        self.0.cancelled.store(true, Ordering::Release);
        for s in sessions.iter() {
            let _ = s.cancel();
        }
    }

    /// Ends the token's use: it no longer cancels anything.
    pub(crate) fn finish(&self) {
        let mut sessions = self.0.sessions.lock();
        self.0.over.store(true, Ordering::Release);
        sessions.clear();
        self.0.progress.lock().report = None;
    }

    /// Sends the load's progress to `report` from now on.
    pub(crate) fn report_to(&self, report: ProgressReport) {
        self.0.progress.lock().report = Some(report);
    }

    /// Records the graphs the load will open (name and file) and reports
    /// 0 of their total size. A load that opens none (per-stage residency
    /// makes sessions when a stage first runs) plans nothing and reports
    /// nothing, so its job keeps its 0 of 1.
    pub(crate) fn plan(&self, graphs: &[(&'static str, &Path)]) {
        if graphs.is_empty() {
            return;
        }
        let planned: Vec<_> = graphs.iter().map(|(name, file)| (*name, graph_kib(file), false)).collect();
        let total = planned.iter().map(|g| g.1).sum();
        let mut progress = self.0.progress.lock();
        progress.planned = planned;
        if let Some(report) = &progress.report {
            report(0, kib(total));
        }
    }

    /// A session of graph `name` was made: its share of the plan is done
    /// (graphs outside the plan, and a second session of the same name,
    /// count nothing).
    ///
    /// Reports are made under the lock: graphs open on several threads, and
    /// the job's observer then hears of them one at a time and in order.
    pub(crate) fn opened(&self, name: &str) {
        let mut progress = self.0.progress.lock();
        let Some(graph) = progress.planned.iter_mut().find(|g| g.0 == name && !g.2) else { return };
        graph.2 = true;
        let done = progress.planned.iter().filter(|g| g.2).map(|g| g.1).sum::<u64>();
        let total = progress.planned.iter().map(|g| g.1).sum::<u64>();
        if let Some(report) = &progress.report {
            report(kib(done), kib(total));
        }
    }

    /// Whether the load was cancelled (and the token is still in use).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.0.cancelled.load(Ordering::Acquire) && !self.0.over.load(Ordering::Acquire)
    }

    /// CANCELLED if the load was cancelled; `what` names the step not taken.
    pub(crate) fn check(&self, what: &str) -> Result<()> {
        if self.is_cancelled() {
            return Err(cancelled(what));
        }
        Ok(())
    }

    /// Lets [`LoadControl::cancel`] reach the session `builder` will create;
    /// CANCELLED when the load was cancelled already.
    pub(crate) fn watch(&self, builder: &ort::session::builder::SessionBuilder, graph: &str) -> Result<()> {
        let mut sessions = self.0.sessions.lock();
        if self.0.over.load(Ordering::Acquire) {
            return Ok(());
        }
        if self.0.cancelled.load(Ordering::Acquire) {
            return Err(cancelled(&format!("creating the {graph} session")));
        }
        sessions.push(builder.canceler());
        Ok(())
    }
}

/// KiB of a graph's files: the graph and the external weights stored beside
/// it under its own name (`model.onnx_data`, `model.onnx.data`) or as
/// `weights.pb`; at least 1, so every planned graph moves the progress.
fn graph_kib(file: &Path) -> u64 {
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let beside = file.parent().and_then(|dir| std::fs::read_dir(dir).ok()).into_iter().flatten().flatten().filter(|e| {
        let other = e.file_name().to_string_lossy().into_owned();
        other != name && (other.starts_with(&name) || other == "weights.pb")
    });
    let bytes = size(file) + beside.map(|e| size(&e.path())).sum::<u64>();
    bytes.div_ceil(1024).max(1)
}

/// A KiB count as the job's u32 (4 TiB at most).
fn kib(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn cancelled(what: &str) -> Error {
    Error::new(ErrorKind::Cancelled, format!("the load was cancelled before {what}"))
}

#[cfg(test)]
mod tests {
    use super::LoadControl;
    use crate::error::ErrorKind;
    use std::sync::Arc;

    #[test]
    fn a_cancel_counts_until_the_load_is_over_and_not_after() {
        let during = LoadControl::default();
        assert!(during.check("merging").is_ok());
        during.cancel();
        let e = during.check("merging the U-Net's weights").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert!(e.message().contains("before merging the U-Net's weights"), "{}", e.message());
        // What a finished load left behind (a model's runtime) answers to nothing.
        during.finish();
        assert!(!during.is_cancelled() && during.check("reloading").is_ok());
        let after = LoadControl::default();
        after.finish();
        after.cancel();
        assert!(!after.is_cancelled(), "a cancel after the end is a no-op");
    }

    #[test]
    fn progress_weighs_each_planned_graph_by_its_files_and_ignores_the_rest() {
        let dir = std::env::temp_dir().join(format!("kiln-load-progress-{}", std::process::id()));
        let (a, b) = (dir.join("a"), dir.join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("model.onnx"), vec![0u8; 3 * 1024]).unwrap();
        std::fs::write(a.join("model.onnx_data"), vec![0u8; 5 * 1024]).unwrap();
        std::fs::write(a.join("config.json"), vec![0u8; 64 * 1024]).unwrap();
        std::fs::write(b.join("model.onnx"), vec![0u8; 10]).unwrap();
        let heard = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let control = LoadControl::default();
        let sink = Arc::clone(&heard);
        control.report_to(Arc::new(move |done, total| sink.lock().push((done, total))));
        control.plan(&[("unet", &a.join("model.onnx")), ("vae_decoder", &b.join("model.onnx"))]);
        control.opened("controlnet");
        control.opened("vae_decoder");
        control.opened("vae_decoder");
        control.opened("unet");
        // The config is not weights; 10 bytes still count as 1 KiB.
        assert_eq!(*heard.lock(), vec![(0, 9), (1, 9), (9, 9)]);
        // What a finished load left behind reports nothing.
        let over = LoadControl::default();
        let sink = Arc::clone(&heard);
        over.report_to(Arc::new(move |done, total| sink.lock().push((done, total))));
        over.plan(&[("unet", &a.join("model.onnx"))]);
        over.finish();
        over.opened("unet");
        assert_eq!(heard.lock()[3..], [(0, 8)], "nothing is reported after the load is over");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
