//! Stopping a model load or LoRA switch part-way: a session that ONNX Runtime
//! is creating is told to give up (its load-cancellation flag), and Kiln's
//! own steps between sessions check the same token.
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};

/// One load's cancel switch. A job holds it and lends it to the runtime its
/// load runs with ([`super::Runtime::loading_under`]); every session built
/// under it registers ONNX Runtime's canceler here, so [`LoadCancel::cancel`]
/// reaches the sessions being created on every loading thread at once.
#[derive(Clone, Default)]
pub(crate) struct LoadCancel(Arc<State>);

#[derive(Default)]
struct State {
    cancelled: AtomicBool,
    /// The load is over: later cancels and registrations do nothing, so a
    /// token a finished model still holds (through its runtime) is inert.
    over: AtomicBool,
    sessions: Mutex<Vec<ort::session::builder::LoadCanceler>>,
}

impl LoadCancel {
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

    /// Lets [`LoadCancel::cancel`] reach the session `builder` will create;
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

fn cancelled(what: &str) -> Error {
    Error::new(ErrorKind::Cancelled, format!("the load was cancelled before {what}"))
}

#[cfg(test)]
mod tests {
    use super::LoadCancel;
    use crate::error::ErrorKind;

    #[test]
    fn a_cancel_counts_until_the_load_is_over_and_not_after() {
        let during = LoadCancel::default();
        assert!(during.check("merging").is_ok());
        during.cancel();
        let e = during.check("merging the U-Net's weights").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled);
        assert!(e.message().contains("before merging the U-Net's weights"), "{}", e.message());
        // What a finished load left behind (a model's runtime) answers to nothing.
        during.finish();
        assert!(!during.is_cancelled() && during.check("reloading").is_ok());
        let after = LoadCancel::default();
        after.finish();
        after.cancel();
        assert!(!after.is_cancelled(), "a cancel after the end is a no-op");
    }
}
