//! Soak: many jobs with random valid and invalid parameters on the tiny
//! fixture, in one process. No crash; every submitted job ends in exactly one
//! terminal state (polled, and heard once through FINISHED); resident memory
//! after the last job within 10 % of that after the first 50.
//! `KILN_SOAK_JOBS=1000 cargo test --release --test soak -- --nocapture`
//! is the long run; CI runs the default 100.
mod common;

use std::ffi::{c_void, CString};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use kiln::ffi::job::*;
use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::runtime::*;

/// Resident set size in KiB, from /proc (Linux); None elsewhere.
fn rss_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

static FINISHED: AtomicU32 = AtomicU32::new(0);

unsafe extern "C" fn count_finished(_user: *mut c_void, e: *const kiln_job_event) {
    if unsafe { (*e).kind } == kiln_job_event_kind::Finished as u32 {
        FINISHED.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn soak_random_jobs_keep_memory_flat() {
    let jobs: usize = std::env::var("KILN_SOAK_JOBS").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.job_workers = 2;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::Ok);
    let dir = CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut model) }, kiln_status::Ok);
    let prompts: Vec<CString> = ["stone", "moss", "rust \u{00e9}", "(brick:1.2)", ""].iter().map(|p| CString::new(*p).unwrap()).collect();
    let bad_json = CString::new(r#"{"steps_offset": 1e30}"#).unwrap();
    let mut seed = 0x2545_F491_u32;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 17;
        seed ^= seed << 5;
        seed
    };
    let (mut refused, mut succeeded, mut failed, mut cancelled, mut submitted) = (0, 0, 0, 0, 0u32);
    let mut rss_after_50 = None;
    let mut pixels = vec![0u8; 64 * 64 * 4];
    for i in 0..jobs {
        let mut g = unsafe { std::mem::zeroed::<kiln_generate_options>() };
        unsafe { kiln_generate_options_init(&mut g) };
        g.prompt = prompts[next() as usize % prompts.len()].as_ptr();
        g.steps = 1 + next() % 3;
        g.seed = next() as u64;
        g.scheduler = next() % 12;
        g.prompt_weighting = next() % 2;
        // One job in four is invalid in some way.
        match next() % 16 {
            0 => g.width = 60,                   // not a multiple: refused at submit
            1 => g.scheduler = 99,               // refused at submit
            2 => g.scheduler_overrides = bad_json.as_ptr(), // refused at submit
            3 => g.guidance_scale = f32::NAN,    // refused at submit
            _ => {}
        }
        let mut jo = unsafe { std::mem::zeroed::<kiln_job_options>() };
        unsafe { kiln_job_options_init(&mut jo) };
        jo.callback = Some(count_finished);
        jo.preview_interval = next() % 2;
        let mut job = 0u64;
        let s = unsafe { kiln_job_submit(model, &g, &jo, &mut job) };
        if s != kiln_status::Ok {
            assert_eq!(job, 0);
            refused += 1;
            continue;
        }
        submitted += 1;
        if next() % 8 == 0 {
            assert_eq!(kiln_job_cancel(job), kiln_status::Ok);
        }
        let mut state = 0u32;
        assert_eq!(unsafe { kiln_job_wait(job, 120_000, &mut state) }, kiln_status::Ok);
        match state {
            s if s == kiln_job_state::Succeeded as u32 => {
                succeeded += 1;
                assert_eq!(unsafe { kiln_job_copy_image(job, pixels.as_mut_ptr(), pixels.len(), 0) }, kiln_status::Ok);
            }
            s if s == kiln_job_state::Failed as u32 => failed += 1,
            s if s == kiln_job_state::Cancelled as u32 => cancelled += 1,
            other => panic!("job {i} ended in non-terminal state {other}"),
        }
        assert_eq!(kiln_job_free(job), kiln_status::Ok);
        if i + 1 == 50 {
            rss_after_50 = rss_kib();
        }
    }
    // Every submitted job's FINISHED arrives exactly once (freed jobs included).
    let start = std::time::Instant::now();
    while FINISHED.load(Ordering::SeqCst) < submitted && start.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(FINISHED.load(Ordering::SeqCst), submitted);
    assert_eq!(succeeded + failed + cancelled, submitted);
    let rss_end = rss_kib();
    println!(
        "soak: {jobs} jobs: {succeeded} succeeded, {failed} failed, {cancelled} cancelled, {refused} refused at submit; \
         RSS after 50 jobs {rss_after_50:?} KiB, after the last {rss_end:?} KiB"
    );
    if let (Some(a), Some(b)) = (rss_after_50, rss_end) {
        let drift = (b as f64 - a as f64) / a as f64;
        println!("soak: RSS drift {:+.2} % (bound +10 %)", drift * 100.0);
        assert!(drift <= 0.10, "RSS grew {:.1} % from job 50 to the end", drift * 100.0);
    }
    unsafe {
        kiln_model_free(model);
        kiln_runtime_destroy(rt);
    }
}
