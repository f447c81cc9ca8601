//! One job's life as the Godot node sees it, driven by polling once a
//! frame: each [`Tracker::update`] reads the Kiln job and returns the events
//! that happened since the last frame, which the node turns into signals.
//!
//! Engine-independent and unit-tested without Godot. The rules it keeps:
//! `progress` only when the step changed, `preview` only for a newer preview,
//! then exactly one of `done` / `failed`, and nothing after that. Reading a
//! job never blocks: a job that is still being prepared (model or upscaler
//! loading, a seamless view being made) is waited on through a channel, not
//! a join. Everything heavy runs in Kiln's job pool: a generation with an
//! upscaler is two Kiln jobs, the generation and then the upscale of its
//! image, queued when the generation succeeds, and the tracker follows both
//! as one job with one progress count.
use std::sync::mpsc::{Receiver, TryRecvError};

use kiln::jobs::{JobPool, JobSnapshot, JobState};
use kiln::{Error, ErrorKind, Rgba8Image};

/// What happened to a job since the last update.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Work finished out of the total. A generation counts U-Net calls; with
    /// an upscaler the upscaler's graph runs (tiles) follow in the same
    /// count (`total` = U-Net calls + tiles from the first event on, `step`
    /// goes on past the U-Net calls while the image is upscaled); an upscale
    /// alone (`upscale_image`) counts its tiles.
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
    /// Loading the model or upscaler, or making a seamless view; not yet in
    /// Kiln's queue.
    Preparing = 0,
    /// In Kiln's queue or running (generating or upscaling).
    Running = 1,
    /// Ended with an image (`done` was emitted).
    Done = 2,
    /// Ended without one (`failed` was emitted).
    Failed = 3,
}

/// The upscale that follows a generation: a Kiln job of its own, queued
/// when the generation succeeds, whose image `done` carries.
pub struct UpscaleNext {
    /// Graph runs (tiles) the upscale will take, known before the generation
    /// ends so that `progress` counts them from its first event.
    pub tiles: u32,
    /// Queues the upscale of the generated image in Kiln's pool and returns
    /// its job id, or why it cannot run (the image too big to upscale...).
    pub submit: Box<dyn FnOnce(Rgba8Image) -> Result<u64, Error> + Send>,
}

/// What a preparation thread sends: the Kiln job it submitted.
pub enum Prepared {
    /// A generation, and the upscale queued once it succeeds (None: `done`
    /// carries Kiln's image).
    Generation {
        /// The Kiln job id.
        id: u64,
        /// The upscale that follows it.
        upscale: Option<UpscaleNext>,
    },
    /// An upscale alone (`upscale_image`).
    Upscale {
        /// The Kiln job id.
        id: u64,
    },
}

impl From<u64> for Prepared {
    /// A generation with no upscale.
    fn from(id: u64) -> Self {
        Self::Generation { id, upscale: None }
    }
}

enum Stage {
    /// Invalid before it started: report this on the first update.
    Rejected(Error),
    /// A thread is preparing it and sends the Kiln job id (or why not).
    Preparing(Receiver<Result<Prepared, Error>>),
    /// Kiln generation job `id`.
    Submitted(u64),
    /// Kiln upscale job `id` (a generation's upscale, or an upscale alone).
    Upscaling(u64),
    /// Ended; nothing more to say.
    Ended(Phase),
}

/// Follows one job from `generate` (or `upscale_image`) to `done` or `failed`.
pub struct Tracker {
    stage: Stage,
    cancel_requested: bool,
    last_progress: (u32, u32),
    last_preview_step: u32,
    /// Queued when the generation succeeds.
    upscale: Option<UpscaleNext>,
    /// Steps counted before the Kiln job now followed (the generation's
    /// U-Net calls, while its image is upscaled).
    steps_before: u32,
    /// Steps still to come after it (the upscale's tiles, while generating).
    steps_after: u32,
}

impl Tracker {
    fn with(stage: Stage) -> Self {
        Self {
            stage,
            cancel_requested: false,
            last_progress: (0, 0),
            last_preview_step: 0,
            upscale: None,
            steps_before: 0,
            steps_after: 0,
        }
    }
    /// A job that failed before it started (bad options).
    pub fn rejected(error: Error) -> Self {
        Self::with(Stage::Rejected(error))
    }
    /// A job being prepared elsewhere that will send its Kiln id (and, for a
    /// generation, maybe the upscale that follows it).
    pub fn preparing(rx: Receiver<Result<Prepared, Error>>) -> Self {
        Self::with(Stage::Preparing(rx))
    }
    /// A generation already in Kiln's pool.
    pub fn submitted(id: u64) -> Self {
        Self::with(Stage::Submitted(id))
    }
    /// An upscale alone already in Kiln's pool.
    pub fn upscaling(id: u64) -> Self {
        Self::with(Stage::Upscaling(id))
    }

    /// Where the job is now (upscaling counts as running).
    pub fn phase(&self) -> Phase {
        match &self.stage {
            Stage::Rejected(_) | Stage::Preparing(_) => Phase::Preparing,
            Stage::Submitted(_) | Stage::Upscaling(_) => Phase::Running,
            Stage::Ended(p) => *p,
        }
    }

    /// Whether `done` or `failed` has been reported.
    pub fn has_ended(&self) -> bool {
        matches!(self.stage, Stage::Ended(_))
    }

    /// Whether the Kiln job now followed is an upscale (a generation's,
    /// once it succeeded, or an upscale alone).
    pub fn is_upscaling(&self) -> bool {
        matches!(self.stage, Stage::Upscaling(_))
    }

    /// Asks the job to stop; it then ends with `failed(KILN_STATUS_CANCELLED, ..)`
    /// on a later update (a job that already ended is left as it was).
    /// Returns whether there was anything to cancel. An upscale is stopped
    /// by its own Kiln job's cancel, which leaves other upscales alone.
    pub fn cancel(&mut self, source: &dyn JobSource) -> bool {
        match &self.stage {
            Stage::Preparing(_) | Stage::Rejected(_) => {
                self.cancel_requested = true;
                true
            }
            Stage::Submitted(id) | Stage::Upscaling(id) => {
                self.cancel_requested = true;
                source.cancel(*id).is_ok()
            }
            Stage::Ended(_) => false,
        }
    }

    /// Frees the Kiln job if one is still held (cancelling it if it runs);
    /// a generation's upscale is then never queued.
    pub fn release(&mut self, source: &dyn JobSource) {
        if let Stage::Submitted(id) | Stage::Upscaling(id) = self.stage {
            let _ = source.release(id);
            self.upscale = None;
            self.stage = Stage::Ended(Phase::Failed);
        }
    }

    /// Kiln's job succeeded with `image` after `steps` steps: queues the
    /// generation's upscale, or reports the image.
    fn succeeded(&mut self, events: &mut Vec<Event>, image: Rgba8Image, steps: u32) {
        if self.is_upscaling() {
            if self.cancel_requested {
                // A cancel asked for before `done` wins, even if the upscale got through.
                let e = Error::new(ErrorKind::Cancelled, "cancelled while the image was upscaled");
                return self.end_failed(events, &e);
            }
        } else if let Some(next) = self.upscale.take() {
            if self.cancel_requested {
                // The cancel came too late for the generation but before the upscale.
                let e = Error::new(ErrorKind::Cancelled, "cancelled before the image was upscaled");
                return self.end_failed(events, &e);
            }
            match (next.submit)(image) {
                Ok(id) => {
                    self.stage = Stage::Upscaling(id);
                    self.steps_before = self.steps_before.saturating_add(steps);
                    self.steps_after = 0;
                }
                Err(e) => self.end_failed(events, &e),
            }
            return;
        }
        events.push(Event::Done { image });
        self.stage = Stage::Ended(Phase::Done);
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
            let id = match rx.try_recv() {
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
                Ok(Ok(Prepared::Generation { id, upscale })) => {
                    self.stage = Stage::Submitted(id);
                    self.steps_after = upscale.as_ref().map_or(0, |u| u.tiles);
                    self.upscale = upscale;
                    id
                }
                Ok(Ok(Prepared::Upscale { id })) => {
                    self.stage = Stage::Upscaling(id);
                    id
                }
            };
            if self.cancel_requested {
                let _ = source.cancel(id);
            }
        }
        let (Stage::Submitted(id) | Stage::Upscaling(id)) = self.stage else { return events };
        let snapshot = match source.poll(id) {
            Ok(s) => s,
            Err(e) => {
                self.end_failed(&mut events, &e);
                return events;
            }
        };
        // One count over the whole job: the generation's U-Net calls, then the upscale's tiles.
        let step = self.steps_before.saturating_add(snapshot.step);
        let progress = (step, self.steps_before.saturating_add(snapshot.total_steps).saturating_add(self.steps_after));
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
                Ok(image) => self.succeeded(&mut events, image, snapshot.step),
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
        // Ended (or upscaling in a job of its own): the image was copied out, so Kiln's copy can go.
        let _ = source.release(id);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

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

    /// A tracker whose generation (job 7) is followed by an upscale of
    /// `tiles` tiles that `submit` queues (returning its id); the images
    /// handed to `submit` are kept in the returned list.
    fn with_upscale(tiles: u32, submit: Result<u64, Error>) -> (Tracker, Arc<Mutex<Vec<Rgba8Image>>>) {
        let handed = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&handed);
        let submit = Box::new(move |image| {
            seen.lock().unwrap().push(image);
            submit
        });
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(Ok(Prepared::Generation { id: 7, upscale: Some(UpscaleNext { tiles, submit }) })).unwrap();
        (Tracker::preparing(rx), handed)
    }

    #[test]
    fn an_upscale_is_queued_when_the_generation_succeeds_and_counted_after_its_steps() {
        use JobState::*;
        let src = Scripted::new(vec![snap(Running, 1, 2, 0), snap(Succeeded, 2, 2, 0)]).and_job(
            8,
            vec![snap(Queued, 0, 4, 0), snap(Running, 1, 4, 0), snap(Running, 3, 4, 0), snap(Succeeded, 4, 4, 0)],
            tiny(201),
        );
        let (mut t, handed) = with_upscale(4, Ok(8));
        assert_eq!(t.update(&src), vec![Event::Progress { step: 1, total: 6 }], "the total counts the upscale's tiles from the start");
        assert!(!t.is_upscaling());
        assert_eq!(t.update(&src), vec![Event::Progress { step: 2, total: 6 }], "no done before the upscale");
        assert!(t.is_upscaling() && t.phase() == Phase::Running);
        assert_eq!(*handed.lock().unwrap(), vec![tiny(200)], "the upscale got the generated image");
        assert_eq!(*src.calls.borrow(), vec!["release 7"], "the generation is freed once its image is copied out");
        assert_eq!(t.update(&src), vec![], "queued: nothing new");
        assert_eq!(t.update(&src), vec![Event::Progress { step: 3, total: 6 }]);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 5, total: 6 }]);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 6, total: 6 }, Event::Done { image: tiny(201) }]);
        assert_eq!(t.phase(), Phase::Done);
        assert_eq!(t.update(&src), vec![]);
        assert_eq!(*src.calls.borrow(), vec!["release 7", "release 8"]);
    }

    #[test]
    fn an_upscale_that_cannot_be_queued_or_fails_fails_the_job_with_its_status() {
        let src = Scripted::new(vec![snap(JobState::Succeeded, 2, 2, 0)]);
        let (mut t, _) = with_upscale(4, Err(Error::new(ErrorKind::InvalidSize, "too big")));
        assert_eq!(t.update(&src), vec![Event::Progress { step: 2, total: 6 }, Event::Failed { status: 104, message: "too big".into() }]);
        assert_eq!(t.phase(), Phase::Failed);
        assert_eq!(*src.calls.borrow(), vec!["release 7"]);

        let mut src = Scripted::new(vec![snap(JobState::Succeeded, 2, 2, 0)]).and_job(8, vec![snap(JobState::Failed, 1, 4, 0)], tiny(0));
        src.failure = (Some(ErrorKind::Inference), "upscaler graph failed".into());
        let (mut t, _) = with_upscale(4, Ok(8));
        let _ = t.update(&src);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 3, total: 6 }, Event::Failed { status: 302, message: "upscaler graph failed".into() }]);
        assert_eq!(*src.calls.borrow(), vec!["release 7", "release 8"]);
    }

    #[test]
    fn cancel_while_upscaling_cancels_the_upscale_job_alone() {
        use JobState::*;
        let mut src = Scripted::new(vec![snap(Succeeded, 2, 2, 0)])
            .and_job(8, vec![snap(Running, 1, 9, 0), snap(Cancelled, 3, 9, 0)], tiny(0));
        src.failure = (None, "upscale cancelled after 3 of 9 tiles".into());
        let (mut t, _) = with_upscale(9, Ok(8));
        let _ = t.update(&src);
        assert!(t.is_upscaling());
        assert_eq!(t.update(&src), vec![Event::Progress { step: 3, total: 11 }]);
        assert!(t.cancel(&src), "an upscaling job can be cancelled");
        assert_eq!(src.calls.borrow().last().map(String::as_str), Some("cancel 8"), "the upscale's job, not the generation's");
        let ev = t.update(&src);
        assert_eq!(ev, vec![Event::Progress { step: 5, total: 11 }, Event::Failed { status: 400, message: "upscale cancelled after 3 of 9 tiles".into() }]);
        assert!(!t.cancel(&src));
        assert_eq!(*src.calls.borrow(), vec!["release 7", "cancel 8", "release 8"]);
    }

    #[test]
    fn a_cancel_before_done_wins_over_an_upscale_that_got_through() {
        use JobState::*;
        // Asked while Kiln's generation ran, which succeeded anyway: no upscale is queued.
        let src = Scripted::new(vec![snap(Running, 1, 2, 0), snap(Succeeded, 2, 2, 0)]);
        let (mut t, handed) = with_upscale(4, Ok(8));
        let _ = t.update(&src);
        assert!(t.cancel(&src));
        let ev = t.update(&src);
        assert_eq!(ev.last(), Some(&Event::Failed { status: 400, message: "cancelled before the image was upscaled".into() }));
        assert!(handed.lock().unwrap().is_empty(), "the upscale was never queued");

        // Asked while upscaling, but the upscale job finished first: still cancelled.
        let src = Scripted::new(vec![snap(Succeeded, 2, 2, 0)]).and_job(8, vec![snap(Running, 1, 4, 0), snap(Succeeded, 4, 4, 0)], tiny(9));
        let (mut t, _) = with_upscale(4, Ok(8));
        let _ = t.update(&src);
        let _ = t.update(&src);
        assert!(t.cancel(&src));
        let ev = t.update(&src);
        assert_eq!(ev.last(), Some(&Event::Failed { status: 400, message: "cancelled while the image was upscaled".into() }));
    }

    #[test]
    fn an_upscale_alone_counts_its_tiles_and_release_frees_it() {
        use JobState::*;
        let src = Scripted::new(vec![]).and_job(8, vec![snap(Queued, 0, 3, 0), snap(Running, 2, 3, 0), snap(Succeeded, 3, 3, 0)], tiny(9));
        let (tx, rx) = std::sync::mpsc::channel();
        let mut t = Tracker::preparing(rx);
        assert_eq!((t.phase(), t.update(&src)), (Phase::Preparing, vec![]), "the upscaler is loading");
        tx.send(Ok(Prepared::Upscale { id: 8 })).unwrap();
        assert_eq!(t.update(&src), vec![]);
        assert!(t.is_upscaling() && t.phase() == Phase::Running);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 2, total: 3 }]);
        assert_eq!(t.update(&src), vec![Event::Progress { step: 3, total: 3 }, Event::Done { image: tiny(9) }]);
        assert_eq!(*src.calls.borrow(), vec!["release 8"]);

        let src = Scripted::new(vec![]).and_job(8, vec![snap(Running, 1, 3, 0)], tiny(9));
        let mut t = Tracker::upscaling(8);
        let _ = t.update(&src);
        t.release(&src);
        assert!(t.has_ended());
        assert_eq!(*src.calls.borrow(), vec!["release 8"], "the Kiln job is freed (and so cancelled)");
        assert_eq!(t.update(&src), vec![]);
    }
}
