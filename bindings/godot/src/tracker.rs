//! One generation's life as the Godot node sees it, driven by polling once a
//! frame: each [`Tracker::update`] reads the Kiln job and returns the events
//! that happened since the last frame, which the node turns into signals.
//!
//! Engine-independent and unit-tested without Godot. The rules it keeps:
//! `progress` only when the step changed, `preview` only for a newer preview,
//! then exactly one of `done` / `failed`, and nothing after that. Reading a
//! job never blocks: a job that is still being prepared (model loading, a
//! seamless view being made) is waited on through a channel, not a join.
use std::sync::mpsc::{Receiver, TryRecvError};

use kiln::jobs::{JobPool, JobSnapshot, JobState};
use kiln::{Error, ErrorKind, Rgba8Image};

/// What happened to a job since the last update.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// U-Net calls finished out of the total.
    Progress {
        /// Calls finished.
        step: u32,
        /// Calls in total.
        total: u32,
    },
    /// A newer low-resolution preview.
    Preview {
        /// The step it shows.
        step: u32,
        /// The preview (latent resolution).
        image: Rgba8Image,
    },
    /// The job finished with this image.
    Done {
        /// The generated image.
        image: Rgba8Image,
    },
    /// The job failed or was cancelled.
    Failed {
        /// The `kiln_status` value, as the C header numbers it.
        status: u32,
        /// What went wrong, for a person.
        message: String,
    },
}

/// The `kiln_status` number of an error kind (the same numbers as `kiln.h`).
pub fn status_of(kind: ErrorKind) -> u32 {
    kiln::ffi::kiln_status::from(kind) as u32
}

/// Where the tracker reads a job from: Kiln's job pool, or a script in tests.
pub trait JobSource {
    /// State and progress.
    fn poll(&self, id: u64) -> Result<JobSnapshot, Error>;
    /// The newest preview and its step.
    fn preview(&self, id: u64) -> Result<(u32, Rgba8Image), Error>;
    /// The finished image.
    fn image(&self, id: u64) -> Result<Rgba8Image, Error>;
    /// Why the job failed: its error kind and message.
    fn failure(&self, id: u64) -> Result<(Option<ErrorKind>, String), Error>;
    /// Asks the job to stop.
    fn cancel(&self, id: u64) -> Result<(), Error>;
    /// Frees the job; its id goes stale.
    fn release(&self, id: u64) -> Result<(), Error>;
}

impl JobSource for JobPool {
    fn poll(&self, id: u64) -> Result<JobSnapshot, Error> {
        JobPool::poll(self, id)
    }
    fn preview(&self, id: u64) -> Result<(u32, Rgba8Image), Error> {
        self.with_preview(id, |step, image| Ok((step, image.clone())))
    }
    fn image(&self, id: u64) -> Result<Rgba8Image, Error> {
        self.with_image(id, |image| Ok(image.clone()))
    }
    fn failure(&self, id: u64) -> Result<(Option<ErrorKind>, String), Error> {
        Ok((self.error_kind(id)?, self.error_message(id)?))
    }
    fn cancel(&self, id: u64) -> Result<(), Error> {
        JobPool::cancel(self, id)
    }
    fn release(&self, id: u64) -> Result<(), Error> {
        JobPool::release(self, id)
    }
}

/// Where a job is, as the binding sees it. Values are what GDScript reads
/// from `KilnGenerator.job_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Phase {
    /// Loading the model or making its seamless view; not yet in Kiln's queue.
    Preparing = 0,
    /// In Kiln's queue or running.
    Running = 1,
    /// Ended with an image (`done` was emitted).
    Done = 2,
    /// Ended without one (`failed` was emitted).
    Failed = 3,
}

enum Stage {
    /// Invalid before it started: report this on the first update.
    Rejected(Error),
    /// A thread is preparing it and sends the Kiln job id (or why not).
    Preparing(Receiver<Result<u64, Error>>),
    /// Kiln job `id`.
    Submitted(u64),
    /// Ended; nothing more to say.
    Ended(Phase),
}

/// Follows one generation from `generate` to `done` or `failed`.
pub struct Tracker {
    stage: Stage,
    cancel_requested: bool,
    last_progress: (u32, u32),
    last_preview_step: u32,
}

impl Tracker {
    fn with(stage: Stage) -> Self {
        Self { stage, cancel_requested: false, last_progress: (0, 0), last_preview_step: 0 }
    }
    /// A job that failed before it started (bad options).
    pub fn rejected(error: Error) -> Self {
        Self::with(Stage::Rejected(error))
    }
    /// A job being prepared elsewhere that will send its Kiln id.
    pub fn preparing(rx: Receiver<Result<u64, Error>>) -> Self {
        Self::with(Stage::Preparing(rx))
    }
    /// A job already in Kiln's pool.
    pub fn submitted(id: u64) -> Self {
        Self::with(Stage::Submitted(id))
    }

    /// Where the job is now.
    pub fn phase(&self) -> Phase {
        match &self.stage {
            Stage::Rejected(_) | Stage::Preparing(_) => Phase::Preparing,
            Stage::Submitted(_) => Phase::Running,
            Stage::Ended(p) => *p,
        }
    }

    /// Whether `done` or `failed` has been reported.
    pub fn has_ended(&self) -> bool {
        matches!(self.stage, Stage::Ended(_))
    }

    /// Asks the job to stop; it then ends with `failed(KILN_STATUS_CANCELLED, ..)`
    /// on a later update (a job that already ended is left as it was).
    /// Returns whether there was anything to cancel.
    pub fn cancel(&mut self, source: &dyn JobSource) -> bool {
        match &self.stage {
            Stage::Preparing(_) | Stage::Rejected(_) => {
                self.cancel_requested = true;
                true
            }
            Stage::Submitted(id) => {
                self.cancel_requested = true;
                source.cancel(*id).is_ok()
            }
            Stage::Ended(_) => false,
        }
    }

    /// Frees the Kiln job if one is still held (cancelling it if it runs).
    pub fn release(&mut self, source: &dyn JobSource) {
        if let Stage::Submitted(id) = self.stage {
            let _ = source.release(id);
            self.stage = Stage::Ended(Phase::Failed);
        }
    }

    fn end_failed(&mut self, events: &mut Vec<Event>, error: &Error) {
        events.push(Event::Failed { status: status_of(error.kind()), message: error.message().to_string() });
        self.stage = Stage::Ended(Phase::Failed);
    }

    /// Reads the job and returns what happened since the last call. Never blocks.
    pub fn update(&mut self, source: &dyn JobSource) -> Vec<Event> {
        let mut events = Vec::new();
        if let Stage::Rejected(e) = &self.stage {
            let e = e.clone();
            self.end_failed(&mut events, &e);
            return events;
        }
        if let Stage::Preparing(rx) = &self.stage {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => return events,
                Err(TryRecvError::Disconnected) => {
                    let e = Error::new(ErrorKind::Internal, "the thread preparing the job ended without a result");
                    self.end_failed(&mut events, &e);
                    return events;
                }
                Ok(Err(e)) => {
                    self.end_failed(&mut events, &e);
                    return events;
                }
                Ok(Ok(id)) => {
                    self.stage = Stage::Submitted(id);
                    if self.cancel_requested {
                        let _ = source.cancel(id);
                    }
                }
            }
        }
        let Stage::Submitted(id) = self.stage else { return events };
        let snapshot = match source.poll(id) {
            Ok(s) => s,
            Err(e) => {
                self.end_failed(&mut events, &e);
                return events;
            }
        };
        let progress = (snapshot.step, snapshot.total_steps);
        if progress != self.last_progress && progress.0 > 0 {
            self.last_progress = progress;
            events.push(Event::Progress { step: progress.0, total: progress.1 });
        }
        if snapshot.preview_step > self.last_preview_step {
            // The newest preview may be newer than the snapshot by now; take it whole.
            if let Ok((step, image)) = source.preview(id) {
                self.last_preview_step = step;
                events.push(Event::Preview { step, image });
            }
        }
        match snapshot.state {
            JobState::Queued | JobState::Running => return events,
            JobState::Succeeded => match source.image(id) {
                Ok(image) => {
                    events.push(Event::Done { image });
                    self.stage = Stage::Ended(Phase::Done);
                }
                Err(e) => self.end_failed(&mut events, &e),
            },
            JobState::Failed | JobState::Cancelled => {
                let cancelled = snapshot.state == JobState::Cancelled;
                let e = match source.failure(id) {
                    Ok((kind, message)) => {
                        let kind = if cancelled { ErrorKind::Cancelled } else { kind.unwrap_or(ErrorKind::Internal) };
                        Error::new(kind, message)
                    }
                    Err(e) => e,
                };
                self.end_failed(&mut events, &e);
            }
        }
        // Ended: the image was copied out, so Kiln's copy can go.
        let _ = source.release(id);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    /// A job whose snapshots are scripted: each poll returns the next one.
    struct Scripted {
        snapshots: RefCell<Vec<JobSnapshot>>,
        /// What the last poll returned (previews are read after a poll).
        last: RefCell<Option<JobSnapshot>>,
        failure: (Option<ErrorKind>, String),
        calls: RefCell<Vec<String>>,
    }

    fn snap(state: JobState, step: u32, total: u32, preview_step: u32) -> JobSnapshot {
        JobSnapshot { state, step, total_steps: total, preview_step, preview_size: if preview_step > 0 { (1, 1) } else { (0, 0) } }
    }

    fn tiny(v: u8) -> Rgba8Image {
        Rgba8Image { width: 1, height: 1, pixels: vec![v, v, v, 255] }
    }

    impl Scripted {
        fn new(snapshots: Vec<JobSnapshot>) -> Self {
            Self { snapshots: RefCell::new(snapshots), last: RefCell::new(None), failure: (None, String::new()), calls: RefCell::new(vec![]) }
        }
    }

    impl JobSource for Scripted {
        fn poll(&self, id: u64) -> Result<JobSnapshot, Error> {
            assert_eq!(id, 7);
            let mut s = self.snapshots.borrow_mut();
            let now = s[0];
            if s.len() > 1 {
                s.remove(0);
            }
            *self.last.borrow_mut() = Some(now);
            Ok(now)
        }
        fn preview(&self, _: u64) -> Result<(u32, Rgba8Image), Error> {
            let s = self.last.borrow().expect("preview read after a poll");
            Ok((s.preview_step, tiny(s.preview_step as u8)))
        }
        fn image(&self, _: u64) -> Result<Rgba8Image, Error> {
            Ok(tiny(200))
        }
        fn failure(&self, _: u64) -> Result<(Option<ErrorKind>, String), Error> {
            Ok(self.failure.clone())
        }
        fn cancel(&self, id: u64) -> Result<(), Error> {
            self.calls.borrow_mut().push(format!("cancel {id}"));
            Ok(())
        }
        fn release(&self, id: u64) -> Result<(), Error> {
            self.calls.borrow_mut().push(format!("release {id}"));
            Ok(())
        }
    }

    #[test]
    fn progress_and_previews_once_each_then_done_once() {
        use JobState::*;
        let src = Scripted::new(vec![
            snap(Queued, 0, 0, 0),
            snap(Running, 1, 4, 0),
            snap(Running, 1, 4, 0), // nothing new this frame
            snap(Running, 2, 4, 2),
            snap(Running, 4, 4, 4),
            snap(Succeeded, 4, 4, 4),
        ]);
        let mut t = Tracker::submitted(7);
        let frames: Vec<Vec<Event>> = (0..7).map(|_| t.update(&src)).collect();
        assert_eq!(frames[0], vec![]);
        assert_eq!(frames[1], vec![Event::Progress { step: 1, total: 4 }]);
        assert_eq!(frames[2], vec![]);
        assert_eq!(frames[3], vec![Event::Progress { step: 2, total: 4 }, Event::Preview { step: 2, image: tiny(2) }]);
        assert_eq!(frames[4], vec![Event::Progress { step: 4, total: 4 }, Event::Preview { step: 4, image: tiny(4) }]);
        assert_eq!(frames[5], vec![Event::Done { image: tiny(200) }]);
        assert_eq!(frames[6], vec![], "nothing after done");
        assert_eq!(t.phase(), Phase::Done);
        assert_eq!(*src.calls.borrow(), vec!["release 7"], "the Kiln job is freed once it ended");
    }

    #[test]
    fn a_job_that_ends_between_frames_still_reports_its_last_progress_first() {
        let src = Scripted::new(vec![snap(JobState::Succeeded, 3, 3, 0)]);
        let mut t = Tracker::submitted(7);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 3, total: 3 }, Event::Done { image: tiny(200) }]);
    }

    #[test]
    fn failure_carries_the_kind_as_kiln_status() {
        let mut src = Scripted::new(vec![snap(JobState::Failed, 0, 0, 0)]);
        src.failure = (Some(ErrorKind::InvalidSize), "width 65 is not a multiple of 8".into());
        let mut t = Tracker::submitted(7);
        assert_eq!(t.update(&src), vec![Event::Failed { status: 104, message: "width 65 is not a multiple of 8".into() }]);
        assert_eq!(t.phase(), Phase::Failed);
        assert_eq!(t.update(&src), vec![]);
    }

    #[test]
    fn cancel_before_the_id_arrives_cancels_it_on_arrival() {
        let (tx, rx) = std::sync::mpsc::channel();
        let src = Scripted::new(vec![snap(JobState::Running, 0, 4, 0), snap(JobState::Cancelled, 1, 4, 0)]);
        let mut t = Tracker::preparing(rx);
        assert_eq!(t.update(&src), vec![]);
        assert_eq!(t.phase(), Phase::Preparing);
        assert!(t.cancel(&src));
        tx.send(Ok(7)).unwrap();
        assert_eq!(t.update(&src), vec![]);
        assert_eq!(src.calls.borrow()[0], "cancel 7");
        let ev = t.update(&src);
        assert_eq!(ev.last(), Some(&Event::Failed { status: 400, message: String::new() }));
        assert!(!t.cancel(&src), "nothing left to cancel");
    }

    #[test]
    fn rejected_and_lost_preparations_fail_once() {
        let src = Scripted::new(vec![snap(JobState::Queued, 0, 0, 0)]);
        let mut t = Tracker::rejected(Error::new(ErrorKind::InvalidArgument, "options[\"steps\"]: bad"));
        assert_eq!(t.update(&src), vec![Event::Failed { status: 101, message: "options[\"steps\"]: bad".into() }]);
        assert_eq!(t.update(&src), vec![]);

        let (tx, rx) = std::sync::mpsc::channel::<Result<u64, Error>>();
        let mut t = Tracker::preparing(rx);
        drop(tx);
        let ev = t.update(&src);
        assert!(matches!(&ev[..], [Event::Failed { status: 900, .. }]), "{ev:?}");

        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Tracker::preparing(rx);
        tx.send(Err(Error::new(ErrorKind::ModelNotFound, "no such folder"))).unwrap();
        assert_eq!(t.update(&src), vec![Event::Failed { status: 200, message: "no such folder".into() }]);
    }

    #[test]
    fn a_stale_id_is_a_failure_not_a_panic() {
        struct Gone;
        impl JobSource for Gone {
            fn poll(&self, id: u64) -> Result<JobSnapshot, Error> {
                Err(Error::new(ErrorKind::InvalidHandle, format!("job {id:#x} is unknown or was already freed")))
            }
            fn preview(&self, _: u64) -> Result<(u32, Rgba8Image), Error> {
                unreachable!()
            }
            fn image(&self, _: u64) -> Result<Rgba8Image, Error> {
                unreachable!()
            }
            fn failure(&self, _: u64) -> Result<(Option<ErrorKind>, String), Error> {
                unreachable!()
            }
            fn cancel(&self, _: u64) -> Result<(), Error> {
                Ok(())
            }
            fn release(&self, _: u64) -> Result<(), Error> {
                Ok(())
            }
        }
        let mut t = Tracker::submitted(9);
        assert_eq!(t.update(&Gone), vec![Event::Failed { status: 106, message: "job 0x9 is unknown or was already freed".into() }]);
    }
}
