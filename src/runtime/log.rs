//! Log routing: Kiln's messages go to the runtime's callback, never to stdout.
use std::sync::Arc;

/// Severity of a log line. Values match `kiln_log_level` in the C header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[repr(u32)]
pub enum LogLevel {
    /// Step-by-step detail.
    Debug = 0,
    /// Normal events (runtime loaded, model loaded).
    #[default]
    Info = 1,
    /// Something degraded but the call goes on.
    Warning = 2,
    /// A call failed.
    Error = 3,
}

/// A log sink: called with the level and the text.
pub type LogCallback = Arc<dyn Fn(LogLevel, &str) + Send + Sync>;

/// Filters by level and forwards to the callback.
#[derive(Clone)]
pub(crate) struct Logger {
    callback: Option<LogCallback>,
    level: LogLevel,
}

impl Logger {
    pub(crate) fn new(callback: Option<LogCallback>, level: LogLevel) -> Self {
        Self { callback, level }
    }
    pub(crate) fn log(&self, level: LogLevel, text: &str) {
        if level < self.level {
            return;
        }
        if let Some(cb) = &self.callback {
            // A panicking user callback must not take the generation down with it.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(level, text)));
        }
    }
    pub(crate) fn level(&self) -> LogLevel {
        self.level
    }
    pub(crate) fn info(&self, text: &str) {
        self.log(LogLevel::Info, text)
    }
}
