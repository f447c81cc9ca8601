//! One generation's life as the Godot node sees it, driven by polling once a
//! frame: each [`Tracker::update`] reads the Kiln job and returns the events
//! that happened since the last frame, which the node turns into signals.
//!
//! Engine-independent and unit-tested without Godot. The rules it keeps:
//! `progress` only when the step changed, `preview` only for a newer preview,
//! then exactly one of `done` / `failed`, and nothing after that. Reading a
//! job never blocks: a job that is still being prepared (model loading, a
//! seamless view being made) or whose image is being finished (upscaled) on
//! its own thread is waited on through a channel, not a join.
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::sync::Arc;

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

/// What is done to a job's image after Kiln made it and before `done`
/// carries it (the node's upscale), on a thread of its own so no frame waits.
pub struct Finisher {
    /// Turns the generated image into the one `done` carries.
    pub work: Box<dyn FnOnce(Rgba8Image) -> Result<Rgba8Image, Error> + Send>,
    /// Stops `work` from another thread; `work` then returns CANCELLED.
    pub cancel: Canceller,
}

/// Stops a [`Finisher`]'s work (or a standalone upscale) in flight; safe to
/// call from any thread, any number of times.
pub type Canceller = Arc<dyn Fn() + Send + Sync>;

/// What a preparation thread sends: the Kiln job it submitted and what to do
/// with its image once it succeeds.
pub struct Prepared {
    /// The Kiln job id.
    pub id: u64,
    /// Work on the image before `done` (None: `done` carries Kiln's image).
    pub finisher: Option<Finisher>,
}

impl From<u64> for Prepared {
    fn from(id: u64) -> Self {
        Self { id, finisher: None }
    }
}

enum Stage {
    /// Invalid before it started: report this on the first update.
    Rejected(Error),
    /// A thread is preparing it and sends the Kiln job id (or why not).
    Preparing(Receiver<Result<Prepared, Error>>),
    /// Kiln job `id`.
    Submitted(u64),
    /// A thread is finishing (upscaling) the image and sends the result.
    Finishing(Receiver<Result<Rgba8Image, Error>>),
    /// Ended; nothing more to say.
    Ended(Phase),
}

/// Follows one generation from `generate` to `done` or `failed`.
pub struct Tracker {
    stage: Stage,
    cancel_requested: bool,
    last_progress: (u32, u32),
    last_preview_step: u32,
    /// Run on the image when the Kiln job succeeds.
    finisher: Option<Finisher>,
    /// Stops the finishing thread's work while in [`Stage::Finishing`].
    finishing_cancel: Option<Canceller>,
}

impl Tracker {
    fn with(stage: Stage) -> Self {
        Self { stage, cancel_requested: false, last_progress: (0, 0), last_preview_step: 0, finisher: None, finishing_cancel: None }
    }
    /// A job that failed before it started (bad options).
    pub fn rejected(error: Error) -> Self {
        Self::with(Stage::Rejected(error))
    }
    /// A job being prepared elsewhere that will send its Kiln id (and maybe
    /// a [`Finisher`] for its image).
    pub fn preparing(rx: Receiver<Result<Prepared, Error>>) -> Self {
        Self::with(Stage::Preparing(rx))
    }
    /// A job already in Kiln's pool.
    pub fn submitted(id: u64) -> Self {
        Self::with(Stage::Submitted(id))
    }
    /// A job with no Kiln generation: another thread makes its image (a
    /// standalone upscale) and sends it on `rx`; `cancel` stops that work.
    pub fn finishing(rx: Receiver<Result<Rgba8Image, Error>>, cancel: Canceller) -> Self {
        Self { finishing_cancel: Some(cancel), ..Self::with(Stage::Finishing(rx)) }
    }

    /// Where the job is now (finishing the image counts as running).
    pub fn phase(&self) -> Phase {
        match &self.stage {
            Stage::Rejected(_) | Stage::Preparing(_) => Phase::Preparing,
            Stage::Submitted(_) | Stage::Finishing(_) => Phase::Running,
            Stage::Ended(p) => *p,
        }
    }

    /// Whether `done` or `failed` has been reported.
    pub fn has_ended(&self) -> bool {
        matches!(self.stage, Stage::Ended(_))
    }

    /// Whether Kiln's part is over and the image is being finished
    /// (upscaled) on its own thread.
    pub fn is_finishing(&self) -> bool {
        matches!(self.stage, Stage::Finishing(_))
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
            Stage::Finishing(_) => {
                self.cancel_requested = true;
                if let Some(cancel) = &self.finishing_cancel {
                    cancel();
                }
                true
            }
            Stage::Ended(_) => false,
        }
    }

    /// Frees the Kiln job if one is still held (cancelling it if it runs),
    /// and stops the finishing work if it runs.
    pub fn release(&mut self, source: &dyn JobSource) {
        match self.stage {
            Stage::Submitted(id) => {
                let _ = source.release(id);
                self.stage = Stage::Ended(Phase::Failed);
            }
            Stage::Finishing(_) => {
                if let Some(cancel) = self.finishing_cancel.take() {
                    cancel();
                }
                self.stage = Stage::Ended(Phase::Failed);
            }
            _ => {}
        }
    }

    /// Hands the generated image to the finisher's thread, or reports it.
    fn finish(&mut self, events: &mut Vec<Event>, image: Rgba8Image) {
        let Some(finisher) = self.finisher.take() else {
            events.push(Event::Done { image });
            self.stage = Stage::Ended(Phase::Done);
            return;
        };
        if self.cancel_requested {
            // The cancel came too late for the generation but before the upscale.
            let e = Error::new(ErrorKind::Cancelled, "cancelled before the image was upscaled");
            return self.end_failed(events, &e);
        }
        let (tx, rx) = mpsc::channel();
        let Finisher { work, cancel } = finisher;
        let spawned = std::thread::Builder::new().name("kiln-godot-finish".into()).spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(image)))
                .unwrap_or_else(|_| Err(Error::new(ErrorKind::Internal, "internal error: finishing the image panicked")));
            // The receiver is gone only when the node was freed; nothing to tell then.
            let _ = tx.send(result);
        });
        match spawned {
            Ok(_) => {
                self.stage = Stage::Finishing(rx);
                self.finishing_cancel = Some(cancel);
            }
            Err(e) => self.end_failed(events, &Error::new(ErrorKind::Internal, format!("cannot start a thread: {e}"))),
        }
    }

    /// Reads the finishing thread's result, if it has one.
    fn update_finishing(&mut self, events: &mut Vec<Event>) {
        let Stage::Finishing(rx) = &self.stage else { return };
        let result = match rx.try_recv() {
            Err(TryRecvError::Empty) => return,
            Err(TryRecvError::Disconnected) => Err(Error::new(ErrorKind::Internal, "the thread finishing the image ended without a result")),
            Ok(r) => r,
        };
        self.finishing_cancel = None;
        match result {
            // A cancel asked for before `done` wins, even if the work got through.
            Ok(_) if self.cancel_requested => {
                self.end_failed(events, &Error::new(ErrorKind::Cancelled, "cancelled while the image was upscaled"))
            }
            Ok(image) => {
                events.push(Event::Done { image });
                self.stage = Stage::Ended(Phase::Done);
            }
            Err(e) => self.end_failed(events, &e),
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
        if let Stage::Finishing(_) = &self.stage {
            self.update_finishing(&mut events);
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
                Ok(Ok(Prepared { id, finisher })) => {
                    self.stage = Stage::Submitted(id);
                    self.finisher = finisher;
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
                Ok(image) => self.finish(&mut events, image),
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
        // Ended (or finishing on a copy): the image was copied out, so Kiln's copy can go.
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
        tx.send(Ok(7.into())).unwrap();
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

        let (tx, rx) = std::sync::mpsc::channel::<Result<Prepared, Error>>();
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

    /// A tracker whose job (id 7) hands its image to `work`.
    fn with_finisher(work: impl FnOnce(Rgba8Image) -> Result<Rgba8Image, Error> + Send + 'static, cancel: Canceller) -> Tracker {
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(Ok(Prepared { id: 7, finisher: Some(Finisher { work: Box::new(work), cancel }) })).unwrap();
        Tracker::preparing(rx)
    }

    /// Updates until the tracker ends (the finisher runs on its own thread).
    fn until_ended(t: &mut Tracker, src: &dyn JobSource) -> Vec<Event> {
        let start = std::time::Instant::now();
        let mut events = Vec::new();
        while !t.has_ended() {
            events.extend(t.update(src));
            assert!(start.elapsed() < std::time::Duration::from_secs(60), "tracker did not end: {events:?}");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        events
    }

    fn no_cancel() -> Canceller {
        Arc::new(|| {})
    }

    #[test]
    fn a_finisher_runs_on_its_own_thread_after_success_and_done_carries_its_image() {
        let src = Scripted::new(vec![snap(JobState::Running, 1, 2, 0), snap(JobState::Succeeded, 2, 2, 0)]);
        let main = std::thread::current().id();
        let mut t = with_finisher(
            move |image| {
                assert_ne!(std::thread::current().id(), main, "the finisher must not run on the polling thread");
                Ok(tiny(image.pixels[0] + 1))
            },
            no_cancel(),
        );
        assert_eq!(t.update(&src), vec![Event::Progress { step: 1, total: 2 }]);
        let ev = t.update(&src);
        assert_eq!(ev, vec![Event::Progress { step: 2, total: 2 }], "no done before the finisher's result");
        assert!(t.is_finishing() && t.phase() == Phase::Running);
        assert_eq!(*src.calls.borrow(), vec!["release 7"], "Kiln's job is freed once its image is copied out");
        assert_eq!(until_ended(&mut t, &src), vec![Event::Done { image: tiny(201) }]);
        assert_eq!(t.phase(), Phase::Done);
        assert_eq!(t.update(&src), vec![]);
    }

    #[test]
    fn a_failing_or_panicking_finisher_fails_the_job_with_its_status() {
        let src = Scripted::new(vec![snap(JobState::Succeeded, 2, 2, 0)]);
        let mut t = with_finisher(|_| Err(Error::new(ErrorKind::InvalidSize, "too big")), no_cancel());
        let ev = until_ended(&mut t, &src);
        assert_eq!(ev.last(), Some(&Event::Failed { status: 104, message: "too big".into() }));
        assert_eq!(t.phase(), Phase::Failed);

        let src = Scripted::new(vec![snap(JobState::Succeeded, 2, 2, 0)]);
        let mut t = with_finisher(|_| panic!("a bug"), no_cancel());
        let ev = until_ended(&mut t, &src);
        assert!(matches!(ev.last(), Some(Event::Failed { status: 900, .. })), "{ev:?}");
    }

    #[test]
    fn cancel_while_finishing_stops_the_work_and_ends_cancelled() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = Arc::new(AtomicBool::new(false));
        let cancel: Canceller = {
            let stop = Arc::clone(&stop);
            Arc::new(move || stop.store(true, Ordering::Release))
        };
        let seen = Arc::clone(&stop);
        let mut t = with_finisher(
            move |_| {
                while !seen.load(Ordering::Acquire) {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(Error::new(ErrorKind::Cancelled, "upscale cancelled after 3 of 9 tiles"))
            },
            cancel,
        );
        let src = Scripted::new(vec![snap(JobState::Succeeded, 2, 2, 0)]);
        let _ = t.update(&src);
        assert!(t.is_finishing());
        assert!(t.cancel(&src), "a finishing job can be cancelled");
        assert!(stop.load(Ordering::Acquire), "cancel reached the finisher");
        let ev = until_ended(&mut t, &src);
        assert_eq!(ev, vec![Event::Failed { status: 400, message: "upscale cancelled after 3 of 9 tiles".into() }]);
        assert!(!t.cancel(&src));
    }

    #[test]
    fn a_cancel_before_done_wins_over_a_finisher_that_got_through() {
        // Asked while Kiln's job ran, which succeeded anyway: the finisher never runs.
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&ran);
        let mut t = with_finisher(
            move |i| {
                flag.store(true, std::sync::atomic::Ordering::Release);
                Ok(i)
            },
            no_cancel(),
        );
        let src = Scripted::new(vec![snap(JobState::Running, 1, 2, 0), snap(JobState::Succeeded, 2, 2, 0)]);
        let _ = t.update(&src);
        assert!(t.cancel(&src));
        let ev = until_ended(&mut t, &src);
        assert_eq!(ev.last(), Some(&Event::Failed { status: 400, message: "cancelled before the image was upscaled".into() }));
        assert!(!ran.load(std::sync::atomic::Ordering::Acquire));

        // Asked while finishing, but the work ignored it and succeeded: still cancelled.
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let mut t = with_finisher(
            move |i| {
                let _ = wait.recv();
                Ok(i)
            },
            no_cancel(),
        );
        let src = Scripted::new(vec![snap(JobState::Succeeded, 2, 2, 0)]);
        let _ = t.update(&src);
        assert!(t.cancel(&src));
        go.send(()).unwrap();
        let ev = until_ended(&mut t, &src);
        assert_eq!(ev, vec![Event::Failed { status: 400, message: "cancelled while the image was upscaled".into() }]);
    }

    #[test]
    fn a_standalone_finishing_job_reports_its_image_or_failure_and_release_stops_it() {
        let src = Scripted::new(vec![snap(JobState::Queued, 0, 0, 0)]);
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Tracker::finishing(rx, no_cancel());
        assert_eq!((t.phase(), t.update(&src)), (Phase::Running, vec![]));
        tx.send(Ok(tiny(9))).unwrap();
        assert_eq!(t.update(&src), vec![Event::Done { image: tiny(9) }]);

        let (tx, rx) = std::sync::mpsc::channel::<Result<Rgba8Image, Error>>();
        let mut t = Tracker::finishing(rx, no_cancel());
        drop(tx);
        assert!(matches!(&t.update(&src)[..], [Event::Failed { status: 900, .. }]));

        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stopped);
        let (_tx, rx) = std::sync::mpsc::channel::<Result<Rgba8Image, Error>>();
        let mut t = Tracker::finishing(rx, Arc::new(move || flag.store(true, std::sync::atomic::Ordering::Release)));
        t.release(&src);
        assert!(stopped.load(std::sync::atomic::Ordering::Acquire) && t.has_ended());
        assert!(src.calls.borrow().is_empty(), "no Kiln job to free");
    }
}
