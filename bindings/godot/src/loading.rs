//! What a job's preparation is loading, for the node's `loading` signal.
//!
//! Each slow step of a preparation (the model, a refiner, an adapter view, a
//! seamless view, an upscaler) runs as one of Kiln's load jobs, whose
//! progress counts KiB of the graphs the load opens as their sessions are
//! made (`kiln::jobs::JobSnapshot::total_steps`). An observer copies that
//! count into the job's [`LoadMeter`], which the tracker drains once a frame.
//!
//! The load jobs run in a pool of the binding's own, not in Kiln's job
//! table: generations queue there, and a model must not wait for the images
//! in flight to load (the preparation thread loads in parallel with them).
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use kiln::jobs::{JobConfig, JobEvent, JobObserver, JobPool, JobState, JobWork};
use kiln::model::upscaler::Upscaler;
use kiln::{Error, ErrorKind, Model};

/// One load's progress: `step` of `total` KiB of its graphs opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loading {
    /// What is loading: `model`, `adapters`, `seamless`, `refiner`,
    /// `refiner_adapters`, `refiner_seamless` or `upscaler`.
    pub what: &'static str,
    /// KiB of graph files whose sessions are made.
    pub step: u32,
    /// KiB of graph files the load opens.
    pub total: u32,
}

/// The loads of one job's preparation, as they move. Written on Kiln's
/// loading threads, drained by the job's tracker on the main thread.
#[derive(Default)]
pub struct LoadMeter(Mutex<Meter>);

#[derive(Default)]
struct Meter {
    /// The load that said what it opens, until another does.
    current: Option<&'static str>,
    /// Updates not yet drained, oldest first; an update of the load the last
    /// one is about replaces it, so each load's last count is always seen.
    unread: Vec<Loading>,
}

impl LoadMeter {
    /// The updates since the last call, oldest first.
    pub fn drain(&self) -> Vec<Loading> {
        std::mem::take(&mut lock(&self.0).unread)
    }

    /// A load job's progress event. A load that opens graphs says so first,
    /// with `(0, total)`; one that opens none (a view the model already had,
    /// a model under per-stage residency) only ends at `(1, 1)`, and is not
    /// shown: nothing was loading.
    pub(crate) fn heard(&self, what: &'static str, step: u32, total: u32) {
        let mut meter = lock(&self.0);
        if step == 0 {
            meter.current = Some(what);
        } else if meter.current != Some(what) {
            return;
        }
        let now = Loading { what, step, total };
        match meter.unread.last_mut() {
            Some(last) if last.what == what => *last = now,
            _ => meter.unread.push(now),
        }
    }
}

/// A load that other jobs' preparations may wait for (the session's model,
/// which the first jobs all need): the meters of the jobs waiting for it
/// hear it too, from where it is when they start waiting.
#[derive(Default)]
pub struct SharedLoad(Mutex<Shared>);

#[derive(Default)]
struct Shared {
    /// Where the load in flight is; `None` between loads.
    now: Option<Loading>,
    /// The meters of the jobs waiting for it.
    waiting: Vec<Weak<LoadMeter>>,
}

impl SharedLoad {
    /// `meter`'s job waits for the load in flight, if any: it hears where
    /// the load is now, then each move until it ends.
    pub fn wait_with(&self, meter: &Arc<LoadMeter>) {
        let mut shared = lock(&self.0);
        shared.waiting.retain(|w| w.strong_count() > 0);
        if let Some(now) = shared.now {
            meter.heard(now.what, 0, now.total);
            if now.step > 0 {
                meter.heard(now.what, now.step, now.total);
            }
        }
        shared.waiting.push(Arc::downgrade(meter));
    }

    fn heard(&self, what: &'static str, step: u32, total: u32) {
        let mut shared = lock(&self.0);
        if step != 0 && shared.now.is_none() {
            return; // a load that opened nothing (see LoadMeter::heard)
        }
        shared.now = Some(Loading { what, step, total });
        for meter in shared.waiting.iter().filter_map(Weak::upgrade) {
            meter.heard(what, step, total);
        }
    }

    /// The load ended (all its events heard): jobs that wait from now on
    /// wait for the next one.
    fn ended(&self) {
        let mut shared = lock(&self.0);
        shared.now = None;
        shared.waiting.clear();
    }
}

/// Copies a load job's progress into its job's [`LoadMeter`], and to the
/// jobs waiting for it when the load is shared.
struct ToMeter {
    meter: Arc<LoadMeter>,
    what: &'static str,
    shared: Option<Arc<SharedLoad>>,
}

impl JobObserver for ToMeter {
    fn on_event(&self, _id: u64, event: &JobEvent<'_>) {
        if let JobEvent::Progress { step, total } = event {
            self.meter.heard(self.what, *step, *total);
            if let Some(shared) = &self.shared {
                shared.heard(self.what, *step, *total);
            }
        }
    }
}

/// The pool the binding's loads run in (see the module's comment); it grows
/// a worker for each load in flight at once, so no load waits for another.
fn loader() -> &'static JobPool {
    static LOADER: OnceLock<JobPool> = OnceLock::new();
    LOADER.get_or_init(|| JobPool::new(0))
}

/// Loads in flight in [`loader`].
static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);

/// Runs `work` (a Kiln load: `LoadModel`, `WithAdapters`, `Seamless`) as a
/// job, reporting to `meter` as `what`, and returns the model it made, or
/// the error the call itself (`Model::load_with`...) would have returned.
pub fn model(meter: &Arc<LoadMeter>, what: &'static str, work: JobWork) -> Result<Model, Error> {
    run(meter, None, what, work, |pool, id| pool.model(id))
}

/// [`model`] for a load other jobs may wait for: they hear it through `shared`.
pub fn shared_model(meter: &Arc<LoadMeter>, shared: &Arc<SharedLoad>, what: &'static str, work: JobWork) -> Result<Model, Error> {
    let made = run(meter, Some(shared), what, work, |pool, id| pool.model(id));
    shared.ended();
    made
}

/// [`model`] for a `LoadUpscaler` job.
pub fn upscaler(meter: &Arc<LoadMeter>, what: &'static str, work: JobWork) -> Result<Arc<Upscaler>, Error> {
    run(meter, None, what, work, |pool, id| pool.upscaler(id))
}

fn run<T>(
    meter: &Arc<LoadMeter>,
    shared: Option<&Arc<SharedLoad>>,
    what: &'static str,
    work: JobWork,
    take: impl FnOnce(&JobPool, u64) -> Result<T, Error>,
) -> Result<T, Error> {
    let pool = loader();
    let in_flight = IN_FLIGHT.fetch_add(1, Ordering::AcqRel) + 1;
    let result = pool.ensure_workers(in_flight).and_then(|()| {
        let observer: Arc<dyn JobObserver> = Arc::new(ToMeter { meter: Arc::clone(meter), what, shared: shared.cloned() });
        let id = pool.submit_work(work, JobConfig { observer: Some(observer), ..Default::default() });
        let ended = wait(pool, id).and_then(|state| match state {
            JobState::Succeeded => take(pool, id),
            _ => Err(Error::new(pool.error_kind(id)?.unwrap_or(ErrorKind::Internal), pool.error_message(id)?)),
        });
        let _ = pool.release(id);
        ended
    });
    IN_FLIGHT.fetch_sub(1, Ordering::AcqRel);
    result
}

/// Waits for job `id` to end (the preparation thread may block; only the
/// main thread must not).
fn wait(pool: &JobPool, id: u64) -> Result<JobState, Error> {
    loop {
        let state = pool.wait(id, Duration::from_secs(3600))?;
        if state.is_terminal() {
            return Ok(state);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_shows_from_its_plan_to_its_end_and_the_last_count_of_each_survives() {
        let m = LoadMeter::default();
        assert_eq!(m.drain(), vec![]);
        // A seamless view the model already had: no plan, just the end.
        m.heard("seamless", 1, 1);
        assert_eq!(m.drain(), vec![], "a load that opened nothing is not shown");
        m.heard("model", 0, 100);
        m.heard("model", 40, 100);
        assert_eq!(m.drain(), vec![Loading { what: "model", step: 40, total: 100 }], "a frame sees the newest count");
        m.heard("model", 90, 100);
        m.heard("model", 100, 100);
        m.heard("adapters", 0, 30);
        m.heard("adapters", 30, 30);
        m.heard("seamless", 1, 1);
        assert_eq!(
            m.drain(),
            vec![Loading { what: "model", step: 100, total: 100 }, Loading { what: "adapters", step: 30, total: 30 }],
            "each load's last count is kept, in order"
        );
        assert_eq!(m.drain(), vec![]);
        m.heard("upscaler", 0, 5);
        assert_eq!(m.drain(), vec![Loading { what: "upscaler", step: 0, total: 5 }], "the plan alone is news");
    }

    #[test]
    fn a_job_waiting_for_a_shared_load_hears_it_from_where_it_is_until_it_ends() {
        let shared = SharedLoad::default();
        let early = Arc::new(LoadMeter::default());
        shared.wait_with(&early);
        shared.heard("model", 1, 1);
        assert_eq!(early.drain(), vec![], "an unplanned end is not a load");
        shared.heard("model", 0, 100);
        shared.heard("model", 40, 100);
        let late = Arc::new(LoadMeter::default());
        shared.wait_with(&late);
        assert_eq!(late.drain(), vec![Loading { what: "model", step: 40, total: 100 }], "where the load is when it starts waiting");
        {
            let gone = Arc::new(LoadMeter::default());
            shared.wait_with(&gone);
        }
        shared.heard("model", 100, 100);
        shared.ended();
        for m in [&early, &late] {
            assert_eq!(m.drain(), vec![Loading { what: "model", step: 100, total: 100 }]);
        }
        assert_eq!(lock(&shared.0).waiting.len(), 0, "the load's waiters go when it ends");
        let next = Arc::new(LoadMeter::default());
        shared.wait_with(&next);
        assert_eq!(next.drain(), vec![], "nothing is loading now");
    }
}
