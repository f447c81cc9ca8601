//! The process-wide job pool: its size and the FINISHED promise. One test in
//! its own process, because the pool belongs to the process and the order of
//! events matters (a poll before any submit, then two runtimes).
mod common;

use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kiln::ffi::job::*;
use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::runtime::*;

fn runtime_with_workers(workers: u32) -> *mut kiln_runtime {
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.job_workers = workers;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::Ok);
    rt
}

fn load(rt: *mut kiln_runtime) -> *mut kiln_model {
    let dir = CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut model) }, kiln_status::Ok);
    model
}

/// What one job's callback heard: FINISHED events and their states.
#[derive(Default)]
struct Heard {
    finished: AtomicU32,
    states: Mutex<Vec<u32>>,
}

unsafe extern "C" fn on_event(user: *mut c_void, e: *const kiln_job_event) {
    let heard = unsafe { &*(user as *const Heard) };
    let e = unsafe { &*e };
    if e.kind == kiln_job_event_kind::Finished as u32 {
        heard.finished.fetch_add(1, Ordering::SeqCst);
        heard.states.lock().unwrap().push(e.state);
    }
}

fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(120), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn pool_size_and_finished_events_are_defined() {
    // 1. Looking up a job before any submit starts no worker, so it cannot
    //    freeze the pool's size.
    let mut p = kiln_job_progress { struct_size: std::mem::size_of::<kiln_job_progress>() as u32, ..Default::default() };
    assert_eq!(unsafe { kiln_job_poll(42, &mut p) }, kiln_status::InvalidHandle);
    assert_eq!(kiln_job_cancel(42), kiln_status::InvalidHandle);
    assert_eq!(kiln::jobs::job_table().worker_count(), 0);

    // 2. A runtime with one worker: a long job A holds it while B waits.
    let rt1 = runtime_with_workers(1);
    let m1 = load(rt1);
    let prompt = CString::new("stone").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.scheduler = kiln_scheduler::Ddim as u32;
    o.steps = 200;
    let heard_a = Box::new(Heard::default());
    let heard_b = Box::new(Heard::default());
    let mut jo = unsafe { std::mem::zeroed::<kiln_job_options>() };
    unsafe { kiln_job_options_init(&mut jo) };
    jo.callback = Some(on_event);
    let (mut a, mut b) = (0u64, 0u64);
    jo.user_data = &*heard_a as *const Heard as *mut c_void;
    assert_eq!(unsafe { kiln_job_submit(m1, &o, &jo, &mut a) }, kiln_status::Ok);
    assert_eq!(kiln::jobs::job_table().worker_count(), 1);
    // Wait until A runs, so B surely stays queued behind it.
    wait_until("job A to start", || {
        let mut p = kiln_job_progress { struct_size: std::mem::size_of::<kiln_job_progress>() as u32, ..Default::default() };
        unsafe { kiln_job_poll(a, &mut p) };
        p.state == kiln_job_state::Running as u32
    });
    jo.user_data = &*heard_b as *const Heard as *mut c_void;
    o.steps = 2;
    assert_eq!(unsafe { kiln_job_submit(m1, &o, &jo, &mut b) }, kiln_status::Ok);
    let mut p = kiln_job_progress { struct_size: std::mem::size_of::<kiln_job_progress>() as u32, ..Default::default() };
    assert_eq!(unsafe { kiln_job_poll(b, &mut p) }, kiln_status::Ok);
    assert_eq!(p.state, kiln_job_state::Queued as u32, "B must still be queued for this test to mean anything");

    // 3. Freeing queued B reports FINISHED (cancelled) to its callback, once.
    //    The single worker is busy with A: the event comes when it next looks
    //    for work, before it takes any new job. Cancel A so that is soon.
    assert_eq!(kiln_job_free(b), kiln_status::Ok);
    assert_eq!(kiln_job_cancel(a), kiln_status::Ok);
    wait_until("FINISHED for freed queued job B", || heard_b.finished.load(Ordering::SeqCst) == 1);
    assert_eq!(*heard_b.states.lock().unwrap(), [kiln_job_state::Cancelled as u32]);
    let mut state = 0u32;
    assert_eq!(unsafe { kiln_job_wait(a, 60_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Cancelled as u32);
    wait_until("FINISHED for job A", || heard_a.finished.load(Ordering::SeqCst) == 1);
    assert_eq!(kiln_job_free(a), kiln_status::Ok);

    // 4. A second runtime asking for two workers grows the pool on its first submit.
    let rt2 = runtime_with_workers(2);
    let m2 = load(rt2);
    let mut c = 0u64;
    assert_eq!(unsafe { kiln_job_submit(m2, &o, ptr::null(), &mut c) }, kiln_status::Ok);
    assert_eq!(kiln::jobs::job_table().worker_count(), 2);
    assert_eq!(unsafe { kiln_job_wait(c, 120_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Succeeded as u32);
    assert_eq!(kiln_job_free(c), kiln_status::Ok);
    // A one-worker runtime submitting again never shrinks it.
    let mut d = 0u64;
    assert_eq!(unsafe { kiln_job_submit(m1, &o, ptr::null(), &mut d) }, kiln_status::Ok);
    assert_eq!(kiln::jobs::job_table().worker_count(), 2);
    assert_eq!(unsafe { kiln_job_wait(d, 120_000, &mut state) }, kiln_status::Ok);
    assert_eq!(kiln_job_free(d), kiln_status::Ok);

    // Every FINISHED was heard exactly once; the boxes may now be released.
    assert_eq!(heard_a.finished.load(Ordering::SeqCst), 1);
    assert_eq!(heard_b.finished.load(Ordering::SeqCst), 1);
    unsafe {
        kiln_model_free(m1);
        kiln_model_free(m2);
        kiln_runtime_destroy(rt1);
        kiln_runtime_destroy(rt2);
    }
}
