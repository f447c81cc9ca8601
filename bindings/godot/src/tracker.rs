//! One job's life as the Godot node sees it, driven by polling once a
//! frame: each [`Tracker::update`] reads the Kiln job and returns the events
//! that happened since the last frame, which the node turns into signals.
//!
//! Engine-independent and unit-tested without Godot. The rules it keeps:
//! `progress` only when the step changed, `preview` only for a newer preview,
//! then exactly one of `done` / `prepared` / `failed`, and nothing after that; a cancel
//! asked for before `done` wins. Reading a job never blocks: a job that is
//! still being prepared (model or upscaler loading, a seamless view being
//! made) is waited on through a channel, not a join, and its loads' progress
//! comes through a [`LoadMeter`] as `loading` events. A cancel during the
//! preparation ends the job on the next update; what it was loading goes on
//! loading for the jobs after it. Every node job is one
//! Kiln job in Kiln's pool (a generation, a generation and its upscale as
//! `JobWork::GenerateUpscaled`, or an upscale alone), so the tracker passes
//! on that job's own progress count, previews, image and status.
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;

use kiln::jobs::{JobPool, JobSnapshot, JobState};
use kiln::{Error, ErrorKind, Rgba8Image};

use crate::loading::LoadMeter;

/// What happened to a job since the last update.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The job's preparation is loading `what` (`model`, `adapters`,
    /// `seamless`, `refiner`, `refiner_adapters`, `refiner_seamless`,
    /// `upscaler`, in that order as the job needs them): `step` of `total`
    /// KiB of its graph files are open. Each load starts at 0 and its last
    /// event has `step == total`. None when the model and views are loaded
    /// already; the session's model load is reported by every job waiting
    /// for it, other loads by the job that makes them only.
    Loading {
        /// What is loading.
        what: &'static str,
        /// KiB of its graph files opened.
        step: u32,
        /// KiB of graph files it opens.
        total: u32,
    },
    /// Work finished out of the total: the Kiln job's own count. A
    /// generation counts U-Net calls; with an upscaler the upscaler's graph
    /// runs (tiles) follow in the same count (`total` = U-Net calls + tiles
    /// from the first event on, `step` goes on past the U-Net calls while
    /// the image is upscaled); an upscale alone (`upscale_image`) counts its
    /// tiles.
    Progress {
        /// Work finished.
        step: u32,
        /// Work in total.
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
        /// The finished image (upscaled, with an upscaler).
        image: Rgba8Image,
    },
    /// A `prepare` job: everything its options need is loaded; it ends here.
    Prepared,
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
    /// Loading the model or upscaler, or making a seamless view; not yet in
    /// Kiln's queue.
    Preparing = 0,
    /// In Kiln's queue or running (generating or upscaling).
    Running = 1,
    /// Ended with an image (`done` was emitted), or prepared (`prepared`).
    Done = 2,
    /// Ended without one (`failed` was emitted).
    Failed = 3,
}

/// What a preparation thread sends its tracker when it is done.
#[derive(Debug, PartialEq, Eq)]
pub enum Prepared {
    /// The Kiln job it submitted.
    Job(u64),
    /// What the job's options need is loaded, and there is nothing to run
    /// (`KilnGenerator.prepare`).
    Ready,
}

enum Stage {
    /// Invalid before it started: report this on the first update.
    Rejected(Error),
    /// A thread is preparing it and sends the Kiln job id (or why not).
    Preparing(Receiver<Result<Prepared, Error>>),
    /// Kiln job `id`: a generation (maybe with its upscale) or an upscale alone.
    Submitted(u64),
    /// Ended; nothing more to say.
    Ended(Phase),
}

/// Follows one job from `generate`, `upscale_image` or `prepare` to `done`,
/// `prepared` or `failed`.
pub struct Tracker {
    stage: Stage,
    /// The preparation's loads, until the job is in Kiln's pool.
    loads: Option<Arc<LoadMeter>>,
    cancel_requested: bool,
    last_progress: (u32, u32),
    last_preview_step: u32,
}

impl Tracker {
    fn with(stage: Stage) -> Self {
        Self { stage, loads: None, cancel_requested: false, last_progress: (0, 0), last_preview_step: 0 }
    }
    /// A job that failed before it started (bad options).
    pub fn rejected(error: Error) -> Self {
        Self::with(Stage::Rejected(error))
    }
    /// A job being prepared elsewhere that will send its Kiln job id, or why
    /// it could not be submitted, and whose loads report to `loads`.
    pub fn preparing(rx: Receiver<Result<Prepared, Error>>, loads: Arc<LoadMeter>) -> Self {
        Self { loads: Some(loads), ..Self::with(Stage::Preparing(rx)) }
    }
    /// A job already in Kiln's pool.
    pub fn submitted(id: u64) -> Self {
        Self::with(Stage::Submitted(id))
    }

    /// Where the job is now (upscaling counts as running).
    pub fn phase(&self) -> Phase {
        match &self.stage {
            Stage::Rejected(_) | Stage::Preparing(_) => Phase::Preparing,
            Stage::Submitted(_) => Phase::Running,
            Stage::Ended(p) => *p,
        }
    }

    /// Whether `done`, `prepared` or `failed` has been reported.
    pub fn has_ended(&self) -> bool {
        matches!(self.stage, Stage::Ended(_))
    }

    /// Asks the job to stop; it then ends with `failed(KILN_STATUS_CANCELLED, ..)`
    /// on a later update (a job that already ended is left as it was), even
    /// if Kiln's job gets through first. Returns whether there was anything
    /// to cancel. Kiln stops the job's graph run in flight (a U-Net call or
    /// an upscale tile), which leaves other jobs on the same graphs alone.
    /// A job still being prepared ends on the next update, without waiting
    /// for its loads: they go on, and the model or view they make is kept
    /// for the next job (another job may be waiting for it already).
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
        self.loads = None;
    }

    /// Reads the job and returns what happened since the last call. Never blocks.
    pub fn update(&mut self, source: &dyn JobSource) -> Vec<Event> {
        let mut events = Vec::new();
        if let Stage::Rejected(e) = &self.stage {
            let e = e.clone();
            self.end_failed(&mut events, &e);
            return events;
        }
        if let Some(loads) = &self.loads {
            events.extend(loads.drain().into_iter().map(|l| Event::Loading { what: l.what, step: l.step, total: l.total }));
        }
        if let Stage::Preparing(rx) = &self.stage {
            let id = match rx.try_recv() {
                Err(TryRecvError::Empty) if self.cancel_requested => {
                    // The preparation thread finds nobody to send its job to and frees it.
                    let e = Error::new(ErrorKind::Cancelled, "cancelled while the job was being prepared, before it was queued");
                    self.end_failed(&mut events, &e);
                    return events;
                }
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
                Ok(Ok(Prepared::Ready)) if self.cancel_requested => {
                    let e = Error::new(ErrorKind::Cancelled, "cancelled; what it prepared stays loaded");
                    self.end_failed(&mut events, &e);
                    return events;
                }
                Ok(Ok(Prepared::Ready)) => {
                    events.push(Event::Prepared);
                    self.stage = Stage::Ended(Phase::Done);
                    self.loads = None;
                    return events;
                }
                Ok(Ok(Prepared::Job(id))) => id,
            };
            self.loads = None;
            self.stage = Stage::Submitted(id);
            if self.cancel_requested {
                let _ = source.cancel(id);
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
        // Kiln's one count over the whole job (a generation's upscale tiles follow its U-Net calls).
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
            JobState::Succeeded if self.cancel_requested => {
                // A cancel asked for before `done` wins, even if Kiln's job got through.
                let e = Error::new(ErrorKind::Cancelled, "cancelled; the job finished before the cancel reached it, and its image was dropped");
                self.end_failed(&mut events, &e);
            }
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
    use std::collections::BTreeMap;

    /// Jobs whose snapshots are scripted: each poll of a job returns its
    /// next one. Job 7 is the one most tests follow.
    struct Scripted {
        snapshots: RefCell<BTreeMap<u64, Vec<JobSnapshot>>>,
        /// What the last poll of each job returned (previews are read after a poll).
        last: RefCell<BTreeMap<u64, JobSnapshot>>,
        /// Each job's image once it succeeded (tiny(200) unless set).
        images: BTreeMap<u64, Rgba8Image>,
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
            Self {
                snapshots: RefCell::new(BTreeMap::from([(7, snapshots)])),
                last: RefCell::new(BTreeMap::new()),
                images: BTreeMap::new(),
                failure: (None, String::new()),
                calls: RefCell::new(vec![]),
            }
        }
        /// Adds job `id` with its snapshots and the image it ends with.
        fn and_job(mut self, id: u64, snapshots: Vec<JobSnapshot>, image: Rgba8Image) -> Self {
            self.snapshots.get_mut().insert(id, snapshots);
            self.images.insert(id, image);
            self
        }
    }

    impl JobSource for Scripted {
        fn poll(&self, id: u64) -> Result<JobSnapshot, Error> {
            let mut all = self.snapshots.borrow_mut();
            let s = all.get_mut(&id).unwrap_or_else(|| panic!("job {id} was never submitted"));
            let now = s[0];
            if s.len() > 1 {
                s.remove(0);
            }
            self.last.borrow_mut().insert(id, now);
            Ok(now)
        }
        fn preview(&self, id: u64) -> Result<(u32, Rgba8Image), Error> {
            let s = *self.last.borrow().get(&id).expect("preview read after a poll");
            Ok((s.preview_step, tiny(s.preview_step as u8)))
        }
        fn image(&self, id: u64) -> Result<Rgba8Image, Error> {
            Ok(self.images.get(&id).cloned().unwrap_or_else(|| tiny(200)))
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
        let mut t = Tracker::preparing(rx, Default::default());
        assert_eq!(t.update(&src), vec![]);
        assert_eq!(t.phase(), Phase::Preparing);
        assert!(t.cancel(&src));
        tx.send(Ok(Prepared::Job(7))).unwrap();
        assert_eq!(t.update(&src), vec![]);
        assert_eq!(src.calls.borrow()[0], "cancel 7");
        let ev = t.update(&src);
        assert_eq!(ev.last(), Some(&Event::Failed { status: 400, message: String::new() }));
        assert!(!t.cancel(&src), "nothing left to cancel");
    }

    #[test]
    fn a_cancel_while_preparing_ends_the_job_at_once_and_frees_what_arrives_later() {
        let (tx, rx) = std::sync::mpsc::channel();
        let loads = Arc::new(LoadMeter::default());
        let src = Scripted::new(vec![snap(JobState::Running, 0, 4, 0)]);
        let mut t = Tracker::preparing(rx, Arc::clone(&loads));
        loads.heard("model", 0, 10);
        assert!(t.cancel(&src));
        assert_eq!(
            t.update(&src),
            vec![
                Event::Loading { what: "model", step: 0, total: 10 },
                Event::Failed { status: 400, message: "cancelled while the job was being prepared, before it was queued".into() }
            ]
        );
        assert_eq!(t.phase(), Phase::Failed);
        // The load goes on, but the ended job says nothing more of it.
        loads.heard("model", 10, 10);
        assert_eq!(t.update(&src), vec![]);
        assert!(tx.send(Ok(Prepared::Job(7))).is_err(), "the preparation thread learns nobody waits, and frees its job");
        assert!(src.calls.borrow().is_empty(), "nothing of Kiln's was touched: {:?}", src.calls.borrow());
        assert!(!t.cancel(&src));
    }

    #[test]
    fn loads_are_reported_while_preparing_and_their_last_count_before_the_job_runs() {
        let (tx, rx) = std::sync::mpsc::channel();
        let loads = Arc::new(LoadMeter::default());
        let src = Scripted::new(vec![snap(JobState::Running, 1, 4, 0), snap(JobState::Succeeded, 4, 4, 0)]);
        let mut t = Tracker::preparing(rx, Arc::clone(&loads));
        assert_eq!(t.update(&src), vec![]);
        loads.heard("model", 0, 300);
        loads.heard("model", 120, 300);
        assert_eq!(t.update(&src), vec![Event::Loading { what: "model", step: 120, total: 300 }]);
        assert_eq!(t.update(&src), vec![], "nothing new, nothing said");
        // The load ends and the job is queued between two frames: the end still comes first.
        loads.heard("model", 300, 300);
        loads.heard("seamless", 1, 1);
        tx.send(Ok(Prepared::Job(7))).unwrap();
        assert_eq!(
            t.update(&src),
            vec![Event::Loading { what: "model", step: 300, total: 300 }, Event::Progress { step: 1, total: 4 }]
        );
        loads.heard("upscaler", 0, 9);
        let ev = t.update(&src);
        assert!(ev.iter().all(|e| !matches!(e, Event::Loading { .. })), "a queued job has no loads: {ev:?}");
        assert!(matches!(ev.last(), Some(Event::Done { .. })), "{ev:?}");
    }

    #[test]
    fn a_preparation_with_nothing_to_run_ends_prepared_unless_cancelled_first() {
        let src = Scripted::new(vec![snap(JobState::Running, 0, 4, 0)]);
        let (tx, rx) = std::sync::mpsc::channel();
        let loads = Arc::new(LoadMeter::default());
        let mut t = Tracker::preparing(rx, Arc::clone(&loads));
        loads.heard("model", 0, 8);
        loads.heard("model", 8, 8);
        tx.send(Ok(Prepared::Ready)).unwrap();
        assert_eq!(t.update(&src), vec![Event::Loading { what: "model", step: 8, total: 8 }, Event::Prepared]);
        assert_eq!((t.phase(), t.has_ended()), (Phase::Done, true));
        assert_eq!(t.update(&src), vec![]);
        assert!(!t.cancel(&src));

        // Cancelled while the last load ended: the cancel wins, as over a job that got through.
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Tracker::preparing(rx, Default::default());
        assert!(t.cancel(&src));
        tx.send(Ok(Prepared::Ready)).unwrap();
        assert_eq!(t.update(&src), vec![Event::Failed { status: 400, message: "cancelled; what it prepared stays loaded".into() }]);
        assert!(src.calls.borrow().is_empty(), "no Kiln job was involved: {:?}", src.calls.borrow());
    }

    #[test]
    fn rejected_and_lost_preparations_fail_once() {
        let src = Scripted::new(vec![snap(JobState::Queued, 0, 0, 0)]);
        let mut t = Tracker::rejected(Error::new(ErrorKind::InvalidArgument, "options[\"steps\"]: bad"));
        assert_eq!(t.update(&src), vec![Event::Failed { status: 101, message: "options[\"steps\"]: bad".into() }]);
        assert_eq!(t.update(&src), vec![]);

        let (tx, rx) = std::sync::mpsc::channel::<Result<Prepared, Error>>();
        let mut t = Tracker::preparing(rx, Default::default());
        drop(tx);
        let ev = t.update(&src);
        assert!(matches!(&ev[..], [Event::Failed { status: 900, .. }]), "{ev:?}");

        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Tracker::preparing(rx, Default::default());
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

    /// A generation with an upscaler (`JobWork::GenerateUpscaled`): 2 U-Net
    /// calls, then 4 tiles, as Kiln's one job reports them.
    fn generate_upscaled(end: JobSnapshot) -> Vec<JobSnapshot> {
        use JobState::*;
        vec![snap(Queued, 0, 6, 0), snap(Running, 1, 6, 1), snap(Running, 2, 6, 2), snap(Running, 3, 6, 2), snap(Running, 5, 6, 2), end]
    }

    #[test]
    fn a_generation_and_its_upscale_are_one_job_with_one_count_and_done_carries_the_upscaled_image() {
        use JobState::*;
        let mut src = Scripted::new(generate_upscaled(snap(Succeeded, 6, 6, 2)));
        src.images.insert(7, tiny(201));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Tracker::preparing(rx, Default::default());
        assert_eq!((t.phase(), t.update(&src)), (Phase::Preparing, vec![]), "the model and upscaler are loading");
        tx.send(Ok(Prepared::Job(7))).unwrap();
        assert_eq!(t.update(&src), vec![], "queued: nothing yet");
        assert_eq!(t.phase(), Phase::Running);
        let frames: Vec<Vec<Event>> = (0..4).map(|_| t.update(&src)).collect();
        assert_eq!(frames[0], vec![Event::Progress { step: 1, total: 6 }, Event::Preview { step: 1, image: tiny(1) }], "the total counts the tiles from the start");
        assert_eq!(frames[1], vec![Event::Progress { step: 2, total: 6 }, Event::Preview { step: 2, image: tiny(2) }]);
        assert_eq!(frames[2], vec![Event::Progress { step: 3, total: 6 }], "the tiles go on in the same count; no new preview");
        assert_eq!(frames[3], vec![Event::Progress { step: 5, total: 6 }]);
        assert_eq!(t.phase(), Phase::Running, "still running while upscaling");
        assert_eq!(t.update(&src), vec![Event::Progress { step: 6, total: 6 }, Event::Done { image: tiny(201) }], "done carries the job's (upscaled) image");
        assert_eq!(t.phase(), Phase::Done);
        assert_eq!(t.update(&src), vec![]);
        assert_eq!(*src.calls.borrow(), vec!["release 7"], "one Kiln job, freed once");
    }

    #[test]
    fn a_failure_of_either_part_fails_the_job_with_its_status() {
        use JobState::*;
        // The upscale part failed (after 2 U-Net calls and 1 tile).
        let mut src = Scripted::new(vec![snap(Running, 2, 6, 0), snap(Failed, 3, 6, 0)]);
        src.failure = (Some(ErrorKind::Inference), "upscaler graph failed".into());
        let mut t = Tracker::submitted(7);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 2, total: 6 }]);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 3, total: 6 }, Event::Failed { status: 302, message: "upscaler graph failed".into() }]);
        assert_eq!((t.phase(), t.update(&src)), (Phase::Failed, vec![]));
        assert_eq!(*src.calls.borrow(), vec!["release 7"]);

        // The generation part failed: nothing of the upscale ran.
        let mut src = Scripted::new(vec![snap(Failed, 1, 6, 0)]);
        src.failure = (Some(ErrorKind::OutOfMemory), "the U-Net ran out of memory".into());
        let mut t = Tracker::submitted(7);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 1, total: 6 }, Event::Failed { status: 500, message: "the U-Net ran out of memory".into() }]);

        // An upscale that cannot run (the result too big) fails while the job is prepared, with its status.
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Tracker::preparing(rx, Default::default());
        tx.send(Err(Error::new(ErrorKind::InvalidSize, "the 4x upscale of 8192x64 would be 32768x256 pixels"))).unwrap();
        assert_eq!(t.update(&src), vec![Event::Failed { status: 104, message: "the 4x upscale of 8192x64 would be 32768x256 pixels".into() }]);
        assert_eq!(t.phase(), Phase::Failed);
    }

    #[test]
    fn cancel_while_generating_or_while_upscaling_cancels_the_one_job() {
        use JobState::*;
        for (at, part) in [(1, "generating"), (4, "upscaling")] {
            let mut src = Scripted::new(vec![snap(Running, at, 6, 0), snap(Cancelled, at + 1, 6, 0)]);
            src.failure = (None, format!("cancelled while {part}"));
            let mut t = Tracker::submitted(7);
            assert_eq!(t.update(&src), vec![Event::Progress { step: at, total: 6 }]);
            assert!(t.cancel(&src), "{part}: a running job can be cancelled");
            assert_eq!(*src.calls.borrow(), vec!["cancel 7"], "{part}: Kiln's job itself");
            let ev = t.update(&src);
            assert_eq!(ev, vec![Event::Progress { step: at + 1, total: 6 }, Event::Failed { status: 400, message: format!("cancelled while {part}") }]);
            assert!(!t.cancel(&src), "{part}: nothing left to cancel");
            assert_eq!(*src.calls.borrow(), vec!["cancel 7", "release 7"]);
        }
    }

    #[test]
    fn a_cancel_before_done_wins_over_a_job_that_got_through() {
        use JobState::*;
        // Asked while upscaling, but Kiln finished the last tile before the cancel reached it.
        let src = Scripted::new(generate_upscaled(snap(Succeeded, 6, 6, 2)));
        let mut t = Tracker::submitted(7);
        let _ = t.update(&src);
        let _ = t.update(&src);
        assert!(t.cancel(&src));
        let ev: Vec<Event> = (0..4).flat_map(|_| t.update(&src)).collect();
        assert!(!ev.iter().any(|e| matches!(e, Event::Done { .. })), "no done after a cancel: {ev:?}");
        assert!(matches!(ev.last(), Some(Event::Failed { status: 400, .. })), "{ev:?}");
        assert_eq!(t.phase(), Phase::Failed);
        assert_eq!(*src.calls.borrow(), vec!["cancel 7", "release 7"], "the job is freed, its image with it");

        // Asked while preparing; the job was submitted and succeeded before the cancel landed.
        let (tx, rx) = std::sync::mpsc::channel();
        let src = Scripted::new(vec![snap(Succeeded, 6, 6, 0)]);
        let mut t = Tracker::preparing(rx, Default::default());
        assert!(t.cancel(&src));
        tx.send(Ok(Prepared::Job(7))).unwrap();
        let ev = t.update(&src);
        assert_eq!(ev.last().map(|e| matches!(e, Event::Failed { status: 400, .. })), Some(true), "{ev:?}");
        assert_eq!(*src.calls.borrow(), vec!["cancel 7", "release 7"]);
    }

    #[test]
    fn an_upscale_alone_counts_its_tiles_and_release_frees_it() {
        use JobState::*;
        let src = Scripted::new(vec![]).and_job(8, vec![snap(Queued, 0, 3, 0), snap(Running, 2, 3, 0), snap(Succeeded, 3, 3, 0)], tiny(9));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Tracker::preparing(rx, Default::default());
        assert_eq!((t.phase(), t.update(&src)), (Phase::Preparing, vec![]), "the upscaler is loading");
        tx.send(Ok(Prepared::Job(8))).unwrap();
        assert_eq!(t.update(&src), vec![]);
        assert_eq!(t.phase(), Phase::Running);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 2, total: 3 }]);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 3, total: 3 }, Event::Done { image: tiny(9) }]);
        assert_eq!(*src.calls.borrow(), vec!["release 8"]);

        let src = Scripted::new(vec![]).and_job(8, vec![snap(Running, 1, 3, 0)], tiny(9));
        let mut t = Tracker::submitted(8);
        let _ = t.update(&src);
        t.release(&src);
        assert!(t.has_ended());
        assert_eq!(*src.calls.borrow(), vec!["release 8"], "the Kiln job is freed (and so cancelled)");
        assert_eq!(t.update(&src), vec![]);
    }
}
