//! Every heavy call has a job form: the texture helpers and upscales queued
//! through the C API give exactly the direct call's bytes, report progress in
//! their own units (U-Net calls; graph runs for an upscale), cancel within one
//! graph run, keep their model or upscaler alive after it is freed, and check
//! their arguments at submit so a bad call is reported before anything queues.
mod common;

use std::ffi::CString;
use std::ptr;
use std::time::{Duration, Instant};

use kiln::ffi::image::*;
use kiln::ffi::job::*;
use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::postprocess::kiln_image_create;
use kiln::ffi::runtime::*;
use kiln::ffi::texture::*;
use kiln::ffi::upscale::*;
use kiln::model::seamless::Seamless;
use kiln::model::upscaler::{UpscaleAlpha, UpscaleOptions, Upscaler};
use kiln::Rgba8Image;

fn poll(job: u64) -> kiln_job_progress {
    common::ffi_poll_job(job)
}

fn wait_for(job: u64, pred: impl Fn(&kiln_job_progress) -> bool, what: &str) -> kiln_job_progress {
    common::ffi_wait_for_job(job, pred, what, 120)
}

/// Waits for a job, asserts it succeeded and returns its image's size and bytes.
fn result_of(job: u64) -> (u32, u32, Vec<u8>) {
    let mut state = 0u32;
    assert_eq!(unsafe { kiln_job_wait(job, 120_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Succeeded as u32, "{}", job_error(job));
    let (mut w, mut h) = (0u32, 0u32);
    assert_eq!(unsafe { kiln_job_image_size(job, &mut w, &mut h) }, kiln_status::Ok);
    let mut bytes = vec![0u8; (w * h * 4) as usize];
    assert_eq!(unsafe { kiln_job_copy_image(job, bytes.as_mut_ptr(), bytes.len(), 0) }, kiln_status::Ok);
    (w, h, bytes)
}

fn job_error(job: u64) -> String {
    let mut buf = vec![0u8; 1024];
    let mut len = 0usize;
    unsafe { kiln_job_error_message(job, buf.as_mut_ptr().cast(), buf.len(), &mut len) };
    String::from_utf8_lossy(&buf[..len.min(buf.len())]).into_owned()
}

fn image_bytes(img: *const kiln_image) -> (u32, u32, Vec<u8>) {
    let (w, h) = unsafe { (kiln_image_width(img), kiln_image_height(img)) };
    let mut bytes = vec![0u8; (w * h * 4) as usize];
    assert_eq!(unsafe { kiln_image_copy(img, bytes.as_mut_ptr(), bytes.len(), 0) }, kiln_status::Ok);
    (w, h, bytes)
}

/// A diagonal colour ramp with hard wrap seams (as tests/texture.rs).
fn ramp() -> Vec<u8> {
    (0..64).flat_map(|y| (0..64).flat_map(move |x| [(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8])).collect()
}

#[test]
fn texture_jobs_give_the_direct_calls_bytes_with_progress_and_previews() {
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let model = common::ffi_load_model(rt, &common::fixture());
    let picture = ramp();
    let prompt = CString::new("sandstone").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 3;
    o.strength = 1.0;
    o.scheduler = kiln_scheduler::Ddim as u32; // one U-Net call per step
    let mut jo = unsafe { std::mem::zeroed::<kiln_job_options>() };
    unsafe { kiln_job_options_init(&mut jo) };
    jo.preview_interval = 1;

    // Checked at submit: no picture, a size off the model's multiple, a band
    // too wide, NULL out-parameter. Nothing is queued and the id stays 0.
    let mut job = 7u64;
    assert_eq!(unsafe { kiln_job_submit_make_tileable(model, &o, 16, &jo, &mut job) }, kiln_status::InvalidArgument);
    assert_eq!(job, 0);
    assert!(common::ffi_last_error().contains("init_image"), "{}", common::ffi_last_error());
    o.init_image = picture.as_ptr();
    o.init_image_len = picture.len();
    o.init_image_width = 64;
    o.init_image_height = 64;
    o.init_image_channels = 3;
    job = 7;
    assert_eq!(unsafe { kiln_job_submit_extend_texture(model, &o, 5, 0, 0, 0, &jo, &mut job) }, kiln_status::InvalidSize);
    assert_eq!(job, 0);
    assert_eq!(unsafe { kiln_job_submit_make_tileable(model, &o, 32, &jo, &mut job) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_job_submit_make_tileable(model, &o, 0, &jo, &mut job) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_job_submit_make_tileable(ptr::null(), &o, 16, &jo, &mut job) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_job_submit_make_tileable(model, &o, 16, &jo, ptr::null_mut()) }, kiln_status::NullArgument);
    let mut bad = jo;
    bad.struct_size = 3;
    assert_eq!(unsafe { kiln_job_submit_extend_texture(model, &o, 0, 0, 64, 0, &bad, &mut job) }, kiln_status::StructSizeMismatch);

    // Queued, then the model handle freed at once: each job holds its model.
    let (mut tile_job, mut extend_job) = (0u64, 0u64);
    assert_eq!(unsafe { kiln_job_submit_make_tileable(model, &o, 16, &jo, &mut tile_job) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_submit_extend_texture(model, &o, 0, 0, 64, 0, &jo, &mut extend_job) }, kiln_status::Ok);
    let direct_model = common::ffi_load_model(rt, &common::fixture());
    unsafe { kiln_model_free(model) };
    let tiled = result_of(tile_job);
    let extended = result_of(extend_job);
    for (job, steps) in [(tile_job, 3), (extend_job, 3)] {
        let p = poll(job);
        assert_eq!((p.step, p.total_steps), (steps, steps), "U-Net calls, as a generation job counts them");
        assert_eq!((p.preview_step, p.preview_width, p.preview_height), (steps, 8, if job == tile_job { 8 } else { 16 }));
    }

    // The direct calls on another load of the same model give the same bytes.
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_make_tileable(direct_model, &o, 16, &mut img) }, kiln_status::Ok);
    assert!(image_bytes(img) == tiled, "the tileable job gives kiln_model_make_tileable's bytes");
    unsafe { kiln_image_free(img) };
    assert_eq!(unsafe { kiln_model_extend_texture(direct_model, &o, 0, 0, 64, 0, &mut img) }, kiln_status::Ok);
    assert!(image_bytes(img) == extended, "the extend job gives kiln_model_extend_texture's bytes");
    assert_eq!((extended.0, extended.1), (64, 128));
    unsafe { kiln_image_free(img) };
    assert_eq!(kiln_job_free(tile_job), kiln_status::Ok);
    assert_eq!(kiln_job_free(extend_job), kiln_status::Ok);
    unsafe { kiln_model_free(direct_model) };
    unsafe { kiln_runtime_destroy(rt) };
}

fn upscaler_dir() -> CString {
    CString::new(common::root().join("tests/fixtures/upscaler/x4").to_str().unwrap()).unwrap()
}

/// A 24×20 sprite-like image: a gradient with a transparent corner.
fn sprite() -> Rgba8Image {
    let pixels = (0..20usize)
        .flat_map(|y| (0..24usize).flat_map(move |x| [(x * 10) as u8, (y * 12) as u8, 128, if x + y < 8 { 0 } else { 255 }]))
        .collect();
    Rgba8Image { width: 24, height: 20, pixels }
}

fn c_image(img: &Rgba8Image) -> *mut kiln_image {
    let mut out = ptr::null_mut();
    let s = unsafe { kiln_image_create(img.width as u32, img.height as u32, img.pixels.as_ptr(), img.pixels.len(), 0, &mut out) };
    assert_eq!(s, kiln_status::Ok);
    out
}

/// Events seen by the C callback: (kind, step, total, state).
#[derive(Default)]
struct Recorder {
    events: std::sync::Mutex<Vec<(u32, u32, u32, u32)>>,
}

impl Recorder {
    /// The events so far, once FINISHED has come (it follows the state
    /// change a waiter sees, so give it a moment).
    fn until_finished(&self) -> Vec<(u32, u32, u32, u32)> {
        let start = Instant::now();
        while !self.events.lock().unwrap().iter().any(|e| e.0 == kiln_job_event_kind::Finished as u32) {
            assert!(start.elapsed() < Duration::from_secs(10), "no FINISHED event");
            std::thread::sleep(Duration::from_millis(1));
        }
        self.events.lock().unwrap().clone()
    }
}

unsafe extern "C" fn record(user: *mut std::ffi::c_void, e: *const kiln_job_event) {
    let r = unsafe { &*(user as *const Recorder) };
    let e = unsafe { &*e };
    r.events.lock().unwrap().push((e.kind, e.step, e.total_steps, e.state));
}

#[test]
fn upscale_jobs_give_the_direct_calls_bytes_and_count_graph_runs() {
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let mut up = ptr::null_mut();
    assert_eq!(unsafe { kiln_upscaler_load(rt, upscaler_dir().as_ptr(), &mut up) }, kiln_status::Ok, "{}", common::ffi_last_error());
    let src = sprite();
    let input = c_image(&src);
    let mut o = unsafe { std::mem::zeroed::<kiln_upscale_options>() };
    unsafe { kiln_upscale_options_init(&mut o) };
    o.tile = 8;
    o.context = 20;
    o.seamless = 3;

    // Checked at submit, nothing queued: each bad input its own status.
    let mut jo = unsafe { std::mem::zeroed::<kiln_job_options>() };
    unsafe { kiln_job_options_init(&mut jo) };
    let mut job = 7u64;
    let mut bad = o;
    bad.context = 1025;
    assert_eq!(unsafe { kiln_job_submit_upscale(up, input, &bad, &jo, &mut job) }, kiln_status::InvalidArgument);
    assert_eq!(job, 0);
    bad = o;
    bad.alpha = 9;
    assert_eq!(unsafe { kiln_job_submit_upscale(up, input, &bad, &jo, &mut job) }, kiln_status::InvalidArgument);
    bad.struct_size = 8;
    assert_eq!(unsafe { kiln_job_submit_upscale(up, input, &bad, &jo, &mut job) }, kiln_status::StructSizeMismatch);
    assert_eq!(unsafe { kiln_job_submit_upscale(ptr::null(), input, &o, &jo, &mut job) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_job_submit_upscale(up, ptr::null(), &o, &jo, &mut job) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_job_submit_upscale(up, input, &o, &jo, ptr::null_mut()) }, kiln_status::NullArgument);
    let huge = c_image(&Rgba8Image { width: 4097, height: 1, pixels: vec![255; 4097 * 4] });
    assert_eq!(unsafe { kiln_job_submit_upscale(up, huge, &o, &jo, &mut job) }, kiln_status::InvalidSize);
    assert!(common::ffi_last_error().contains("16384"), "{}", common::ffi_last_error());
    unsafe { kiln_image_free(huge) };

    // With a callback and a preview interval (ignored: an upscale has none).
    let recorder = Box::new(Recorder::default());
    jo.callback = Some(record);
    jo.user_data = &*recorder as *const Recorder as *mut _;
    jo.preview_interval = 1;
    assert_eq!(unsafe { kiln_job_submit_upscale(up, input, &o, &jo, &mut job) }, kiln_status::Ok);
    // The image and the upscaler handle may go at once: the job copied one and holds the other.
    unsafe { kiln_image_free(input) };
    unsafe { kiln_upscaler_free(up) };
    unsafe { kiln_runtime_destroy(rt) };
    let graph = Upscaler::load(common::runtime(), &common::root().join("tests/fixtures/upscaler/x4")).unwrap();
    let rust_options = UpscaleOptions { tile: 8, context: 20, seamless: Seamless::Xy, alpha: UpscaleAlpha::Graph };
    let runs = graph.runs(&src, &rust_options) as u32;
    assert_eq!(runs, 3 * 3 * 2, "3x3 tiles, twice for the alpha through the graph");
    assert_eq!(poll(job).total_steps, runs, "the total is known from submission on");
    let (w, h, bytes) = result_of(job);
    assert_eq!((w, h), (96, 80));
    let expected = graph.upscale(&src, &rust_options).unwrap();
    let differ = bytes.iter().zip(&expected.pixels).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "the job gives kiln_upscaler_upscale's (the Rust API's) bytes");
    let p = poll(job);
    assert_eq!((p.step, p.total_steps, p.preview_step), (runs, runs, 0));
    let mut buf = vec![0u8; 16];
    assert_eq!(unsafe { kiln_job_copy_preview(job, buf.as_mut_ptr(), buf.len(), 0, ptr::null_mut()) }, kiln_status::Busy);
    let events = recorder.until_finished();
    let progress: Vec<(u32, u32)> = events.iter().filter(|e| e.0 == kiln_job_event_kind::Progress as u32).map(|e| (e.1, e.2)).collect();
    assert_eq!(progress, (1..=runs).map(|s| (s, runs)).collect::<Vec<_>>(), "one progress event per graph run");
    assert!(!events.iter().any(|e| e.0 == kiln_job_event_kind::Preview as u32), "no previews");
    assert_eq!(events.last().copied(), Some((kiln_job_event_kind::Finished as u32, 0, 0, kiln_job_state::Succeeded as u32)));
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
}

#[test]
fn upscale_jobs_cancel_within_one_graph_run_by_job_or_by_upscaler() {
    // One job worker, so the second job is surely queued behind the first.
    let mut ro = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut ro) };
    ro.job_workers = 1;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&ro, &mut rt) }, kiln_status::Ok);
    let mut up = ptr::null_mut();
    assert_eq!(unsafe { kiln_upscaler_load(rt, upscaler_dir().as_ptr(), &mut up) }, kiln_status::Ok);
    let big = c_image(&Rgba8Image { width: 256, height: 256, pixels: (0..256 * 256 * 4).map(|i| if i % 4 == 3 { 255 } else { (i % 251) as u8 }).collect() });
    let small = c_image(&sprite());
    let mut o = unsafe { std::mem::zeroed::<kiln_upscale_options>() };
    unsafe { kiln_upscale_options_init(&mut o) };
    o.tile = 8;
    o.context = 20;

    for by_upscaler in [false, true] {
        let (mut long, mut after) = (0u64, 0u64);
        assert_eq!(unsafe { kiln_job_submit_upscale(up, big, &o, ptr::null(), &mut long) }, kiln_status::Ok);
        assert_eq!(unsafe { kiln_job_submit_upscale(up, small, &o, ptr::null(), &mut after) }, kiln_status::Ok);
        let running = wait_for(long, |p| p.state == kiln_job_state::Running as u32 && p.step >= 1, "the long upscale to run");
        assert_eq!(running.total_steps, 32 * 32);
        if by_upscaler {
            assert_eq!(unsafe { kiln_upscaler_cancel(up) }, kiln_status::Ok);
        } else {
            assert_eq!(kiln_job_cancel(long), kiln_status::Ok);
        }
        let mut state = 0u32;
        assert_eq!(unsafe { kiln_job_wait(long, 60_000, &mut state) }, kiln_status::Ok);
        assert_eq!(state, kiln_job_state::Cancelled as u32, "{}", job_error(long));
        let p = poll(long);
        assert!(p.step < p.total_steps, "stopped before the end: {p:?}");
        assert!(job_error(long).contains("cancel"), "{}", job_error(long));
        // The queued job was not touched, and runs with its own run options.
        let (w, h, _) = result_of(after);
        assert_eq!((w, h), (96, 80), "cancelled by upscaler: {by_upscaler}");
        assert_eq!(kiln_job_free(long), kiln_status::Ok);
        assert_eq!(kiln_job_free(after), kiln_status::Ok);
    }
    unsafe { kiln_image_free(big) };
    unsafe { kiln_image_free(small) };
    unsafe { kiln_upscaler_free(up) };
    unsafe { kiln_runtime_destroy(rt) };
}

/// A generation and its upscale as one job: the bytes of a generation on the
/// seamless view followed by `Upscaler::upscale` wrapping on its axes (the
/// options' own `seamless` is ignored), one progress count over U-Net calls
/// then tiles, the total known at submit, previews from the generation,
/// cancel inside the upscale, and the size checked at submit.
#[test]
fn a_generation_and_its_upscale_run_as_one_job() {
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let plain = common::ffi_load_model(rt, &common::fixture());
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln::ffi::seamless::kiln_model_seamless(plain, 3, &mut model) }, kiln_status::Ok);
    let mut up = ptr::null_mut();
    assert_eq!(unsafe { kiln_upscaler_load(rt, upscaler_dir().as_ptr(), &mut up) }, kiln_status::Ok);
    let prompt = CString::new("mossy cobblestone").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 5;
    o.seed = 5;
    o.scheduler = kiln_scheduler::Ddim as u32;
    let mut uo = unsafe { std::mem::zeroed::<kiln_upscale_options>() };
    unsafe { kiln_upscale_options_init(&mut uo) };
    uo.tile = 32;
    uo.seamless = 0; // ignored: the view tiles along x and y
    let mut jo = unsafe { std::mem::zeroed::<kiln_job_options>() };
    unsafe { kiln_job_options_init(&mut jo) };
    jo.preview_interval = 2;
    let recorder = Box::new(Recorder::default());
    jo.callback = Some(record);
    jo.user_data = &*recorder as *const Recorder as *mut _;

    // Checked at submit: a size the model cannot make, a result too large,
    // a bad upscale option, NULL handles. Nothing is queued.
    let mut job = 7u64;
    let mut bad = o;
    bad.width = 72;
    assert_eq!(unsafe { kiln_job_submit_upscaled(model, &bad, up, &uo, &jo, &mut job) }, kiln_status::InvalidSize);
    assert_eq!(job, 0);
    bad.width = 8192;
    assert_eq!(unsafe { kiln_job_submit_upscaled(model, &bad, up, &uo, &jo, &mut job) }, kiln_status::InvalidSize);
    assert!(common::ffi_last_error().contains("16384"), "{}", common::ffi_last_error());
    let mut bad_uo = uo;
    bad_uo.context = 1025;
    assert_eq!(unsafe { kiln_job_submit_upscaled(model, &o, up, &bad_uo, &jo, &mut job) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_job_submit_upscaled(model, &o, ptr::null(), &uo, &jo, &mut job) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_job_submit_upscaled(ptr::null(), &o, up, &uo, &jo, &mut job) }, kiln_status::NullArgument);
    assert_eq!(job, 0);

    assert_eq!(unsafe { kiln_job_submit_upscaled(model, &o, up, &uo, &jo, &mut job) }, kiln_status::Ok);
    // Every handle may go now: the job holds what it needs.
    unsafe { kiln_model_free(model) };
    unsafe { kiln_upscaler_free(up) };
    let total = 5 + 2 * 2; // five DDIM U-Net calls, then 2x2 tiles of 32 px
    assert_eq!(poll(job).total_steps, total, "the total is known from submission on");
    let (w, h, bytes) = result_of(job);
    assert_eq!((w, h), (256, 256));
    let request = kiln::GenerateRequest { prompt: "mossy cobblestone".into(), steps: 5, seed: 5, scheduler: kiln::SchedulerKind::Ddim, ..Default::default() };
    let generated = common::tiny_model().seamless(Seamless::Xy).unwrap().generate(&request).unwrap().to_rgba8();
    let graph = Upscaler::load(common::runtime(), &common::root().join("tests/fixtures/upscaler/x4")).unwrap();
    let expected = graph.upscale(&generated, &UpscaleOptions { tile: 32, seamless: Seamless::Xy, ..Default::default() }).unwrap();
    let differ = bytes.iter().zip(&expected.pixels).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "the generation on the seamless view, upscaled wrapping on x and y");
    let p = poll(job);
    assert_eq!((p.step, p.total_steps, p.preview_step), (total, total, 5), "previews from the generation");
    let events = recorder.until_finished();
    let previews: Vec<u32> = events.iter().filter(|e| e.0 == kiln_job_event_kind::Preview as u32).map(|e| e.1).collect();
    assert_eq!(previews, vec![2, 4, 5], "every second U-Net call and the last, though the total counts tiles after it");
    let progress: Vec<(u32, u32)> = events.iter().filter(|e| e.0 == kiln_job_event_kind::Progress as u32).map(|e| (e.1, e.2)).collect();
    assert_eq!(progress, (1..=total).map(|s| (s, total)).collect::<Vec<_>>(), "one count: U-Net calls, then tiles");
    assert_eq!(kiln_job_free(job), kiln_status::Ok);

    // Cancelled inside the upscale (small tiles: many graph runs).
    let mut up = ptr::null_mut();
    assert_eq!(unsafe { kiln_upscaler_load(rt, upscaler_dir().as_ptr(), &mut up) }, kiln_status::Ok);
    uo.tile = 2;
    uo.context = 28;
    assert_eq!(unsafe { kiln_job_submit_upscaled(plain, &o, up, &uo, ptr::null(), &mut job) }, kiln_status::Ok);
    let p = wait_for(job, |p| p.step > 5, "the upscale to start");
    assert_eq!(p.total_steps, 5 + 32 * 32);
    assert_eq!(kiln_job_cancel(job), kiln_status::Ok);
    let mut state = 0u32;
    assert_eq!(unsafe { kiln_job_wait(job, 60_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Cancelled as u32, "{}", job_error(job));
    assert!(poll(job).step < 5 + 32 * 32);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    unsafe { kiln_upscaler_free(up) };
    unsafe { kiln_model_free(plain) };
    unsafe { kiln_runtime_destroy(rt) };
}

/// Generates 64x64 RGBA with `model` through the C API (DDIM, 3 steps).
fn generate_bytes(model: *const kiln_model, prompt: &CString) -> Vec<u8> {
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 3;
    o.seed = 9;
    o.scheduler = kiln_scheduler::Ddim as u32;
    let mut bytes = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(model, &o, bytes.as_mut_ptr(), bytes.len(), 0) }, kiln_status::Ok, "{}", common::ffi_last_error());
    bytes
}

/// Model loads and LoRA switches as jobs: the model a job makes generates
/// exactly what the blocking call's model does, is taken as handles of its
/// own, outlives the job, and is refused where an image is asked for (and the
/// reverse); arguments are checked at submit, file problems fail the job, a
/// queued load cancelled never runs, a running one ends CANCELLED.
#[test]
fn model_loads_and_lora_switches_run_as_jobs() {
    use kiln::ffi::lora::*;
    // One job worker, so a job queued behind a long one is surely queued.
    let mut ro = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut ro) };
    ro.job_workers = 1;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&ro, &mut rt) }, kiln_status::Ok);
    let dir = CString::new(common::fixture().to_str().unwrap()).unwrap();
    let prompt = CString::new("brick wall").unwrap();

    // Checked at submit; nothing queued.
    let mut job = 7u64;
    let missing = CString::new("/nonexistent/model").unwrap();
    assert_eq!(unsafe { kiln_job_submit_model_load(rt, missing.as_ptr(), ptr::null(), ptr::null(), &mut job) }, kiln_status::ModelNotFound);
    assert_eq!(job, 0);
    assert!(common::ffi_last_error().contains("/nonexistent/model"), "{}", common::ffi_last_error());
    let bad_utf8 = [0xffu8, 0];
    assert_eq!(unsafe { kiln_job_submit_model_load(rt, bad_utf8.as_ptr().cast(), ptr::null(), ptr::null(), &mut job) }, kiln_status::InvalidUtf8);
    let mut lo = unsafe { std::mem::zeroed::<kiln_model_load_options>() };
    unsafe { kiln_model_load_options_init(&mut lo) };
    lo.seamless = 9;
    assert_eq!(unsafe { kiln_job_submit_model_load(rt, dir.as_ptr(), &lo, ptr::null(), &mut job) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_job_submit_model_load(ptr::null(), dir.as_ptr(), ptr::null(), ptr::null(), &mut job) }, kiln_status::NullArgument);
    assert_eq!(job, 0);

    // A load job's model generates the blocking load's bytes.
    let recorder = Box::new(Recorder::default());
    let mut jo = unsafe { std::mem::zeroed::<kiln_job_options>() };
    unsafe { kiln_job_options_init(&mut jo) };
    jo.callback = Some(record);
    jo.user_data = &*recorder as *const Recorder as *mut _;
    assert_eq!(unsafe { kiln_job_submit_model_load(rt, dir.as_ptr(), ptr::null(), &jo, &mut job) }, kiln_status::Ok);
    // Progress counts KiB of the graphs whose sessions the load makes: the
    // text encoder, U-Net and VAE decoder here (the VAE encoder opens on first use).
    let fixture_graph = |g: &str| common::graph_kib(&common::fixture().join(g));
    let graphs = [fixture_graph("text_encoder"), fixture_graph("unet"), fixture_graph("vae_decoder")];
    let total: u32 = graphs.iter().sum();
    let first = poll(job).total_steps;
    assert!(first == 1 || first == total, "1 until the load plans its graphs, then {total} KiB: {first}");
    let mut state = 0u32;
    assert_eq!(unsafe { kiln_job_wait(job, 120_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Succeeded as u32, "{}", job_error(job));
    assert_eq!((poll(job).step, poll(job).total_steps), (total, total));
    let events = recorder.until_finished();
    let progress = kiln_job_event_kind::Progress as u32;
    let finished = (kiln_job_event_kind::Finished as u32, 0, 0, kiln_job_state::Succeeded as u32);
    // The graphs load at once on three threads, so in any order; each is told once.
    let steps: Vec<u32> = events.iter().filter(|e| e.0 == progress).map(|e| e.1).collect();
    assert!(events.iter().filter(|e| e.0 == progress).all(|e| e.2 == total), "{events:?}");
    assert_eq!((steps.len(), steps.first(), steps.last()), (4, Some(&0), Some(&total)), "0, a step per graph, then FINISHED: {events:?}");
    assert!(steps.windows(2).all(|w| graphs.contains(&(w[1] - w[0]))), "each step is one graph's KiB: {steps:?} {graphs:?}");
    assert_eq!(events.last(), Some(&finished));
    println!("model load progress (KiB of {graphs:?}): {steps:?}");
    let (mut a, mut b) = (ptr::null_mut(), ptr::null_mut());
    assert_eq!(unsafe { kiln_job_model(job, &mut a) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_model(job, &mut b) }, kiln_status::Ok);
    assert!(!a.is_null() && a != b, "a handle of its own per call");
    let (mut w, mut h) = (0u32, 0u32);
    assert_eq!(unsafe { kiln_job_image_size(job, &mut w, &mut h) }, kiln_status::InvalidArgument);
    assert!(common::ffi_last_error().contains("made a model"), "{}", common::ffi_last_error());
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    unsafe { kiln_model_free(b) };
    let direct = common::ffi_load_model(rt, &common::fixture());
    let from_job = generate_bytes(a, &prompt);
    assert!(from_job == generate_bytes(direct, &prompt), "the job's model generates the blocking load's bytes");

    // A LoRA switch as a job gives kiln_model_with_loras' model.
    let lora_path = CString::new(common::root().join("tests/fixtures/lora/detail.kohya.safetensors").to_str().unwrap()).unwrap();
    let mut l = unsafe { std::mem::zeroed::<kiln_lora>() };
    unsafe { kiln_lora_init(&mut l) };
    l.path = lora_path.as_ptr();
    l.scale = 0.8;
    assert_eq!(unsafe { kiln_job_submit_with_adapters(a, &l, 1, ptr::null(), 0, ptr::null(), &mut job) }, kiln_status::Ok);
    let mut styled = ptr::null_mut();
    assert_eq!(unsafe { kiln_job_wait(job, 120_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Succeeded as u32, "{}", job_error(job));
    // The LoRA has U-Net and text-encoder modules: those two sessions are remade.
    let remade = graphs[0] + graphs[1];
    assert_eq!((poll(job).step, poll(job).total_steps), (remade, remade), "the switch counts the graphs it remakes");
    assert_eq!(unsafe { kiln_job_model(job, &mut styled) }, kiln_status::Ok);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    let mut blocking = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_loras(direct, &l, 1, &mut blocking) }, kiln_status::Ok);
    let styled_bytes = generate_bytes(styled, &prompt);
    assert!(styled_bytes == generate_bytes(blocking, &prompt), "the job's LoRA model is kiln_model_with_loras'");
    assert!(styled_bytes != from_job, "and the LoRA changed the image");
    unsafe { kiln_model_free(styled) };
    unsafe { kiln_model_free(blocking) };
    // Its arguments are checked at submit; its files by the job.
    let mut bad = l;
    bad.scale = f32::NAN;
    assert_eq!(unsafe { kiln_job_submit_with_adapters(a, &bad, 1, ptr::null(), 0, ptr::null(), &mut job) }, kiln_status::InvalidArgument);
    bad = l;
    bad.struct_size = 3;
    assert_eq!(unsafe { kiln_job_submit_with_adapters(a, &bad, 1, ptr::null(), 0, ptr::null(), &mut job) }, kiln_status::StructSizeMismatch);
    assert_eq!(job, 0);
    let gone = CString::new("/nonexistent/style.safetensors").unwrap();
    bad = l;
    bad.path = gone.as_ptr();
    assert_eq!(unsafe { kiln_job_submit_with_adapters(a, &bad, 1, ptr::null(), 0, ptr::null(), &mut job) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_wait(job, 60_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Failed as u32);
    assert!(job_error(job).contains("/nonexistent/style.safetensors"), "{}", job_error(job));
    let mut none = ptr::dangling_mut();
    assert_eq!(unsafe { kiln_job_model(job, &mut none) }, kiln_status::InvalidArgument);
    assert!(none.is_null());
    assert_eq!(kiln_job_free(job), kiln_status::Ok);

    // A folder that is not a model fails in the job.
    let not_model = CString::new(common::root().join("tests/fixtures/upscaler").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { kiln_job_submit_model_load(rt, not_model.as_ptr(), ptr::null(), ptr::null(), &mut job) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_wait(job, 60_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Failed as u32);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);

    // Queued behind a long generation: BUSY, and cancelled it never runs.
    let mut long = 0u64;
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 900;
    o.scheduler = kiln_scheduler::Ddim as u32;
    assert_eq!(unsafe { kiln_job_submit(a, &o, ptr::null(), &mut long) }, kiln_status::Ok);
    wait_for(long, |p| p.step >= 1, "the long job to run");
    assert_eq!(unsafe { kiln_job_submit_model_load(rt, dir.as_ptr(), ptr::null(), ptr::null(), &mut job) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_model(job, &mut none) }, kiln_status::Busy);
    assert_eq!(kiln_job_cancel(job), kiln_status::Ok);
    assert_eq!(kiln_job_cancel(long), kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_wait(job, 60_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Cancelled as u32);
    assert_eq!(poll(job).step, 0, "a cancelled queued load never runs");
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    assert_eq!(kiln_job_free(long), kiln_status::Ok);

    // Cancelled while it loads: it ends CANCELLED without a model, stopped in
    // a session's creation or, when the cancel came after the last one, with
    // the model dropped (tests/jobs.rs lands it inside a creation every time).
    assert_eq!(unsafe { kiln_job_submit_model_load(rt, dir.as_ptr(), ptr::null(), ptr::null(), &mut job) }, kiln_status::Ok);
    wait_for(job, |p| p.state == kiln_job_state::Running as u32, "the load to start");
    assert_eq!(kiln_job_cancel(job), kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_wait(job, 60_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Cancelled as u32);
    let why = job_error(job);
    assert!(why.contains("dropped") || why.contains("session was being created") || why.contains("before creating"), "{why}");
    assert_eq!(unsafe { kiln_job_model(job, &mut none) }, kiln_status::InvalidArgument);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);

    // The other way round: an image job has no model.
    assert_eq!(unsafe { kiln_job_submit(a, &o, ptr::null(), &mut job) }, kiln_status::Ok);
    o.steps = 2;
    let mut quick = 0u64;
    assert_eq!(unsafe { kiln_job_submit(a, &o, ptr::null(), &mut quick) }, kiln_status::Ok);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_wait(quick, 60_000, &mut state) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_model(quick, &mut none) }, kiln_status::InvalidArgument);
    assert!(common::ffi_last_error().contains("made an image"), "{}", common::ffi_last_error());
    assert_eq!(unsafe { kiln_job_model(quick, ptr::null_mut()) }, kiln_status::NullArgument);
    assert_eq!(kiln_job_free(quick), kiln_status::Ok);
    unsafe { kiln_model_free(a) };
    unsafe { kiln_model_free(direct) };
    unsafe { kiln_runtime_destroy(rt) };
}

/// A seamless view as a job: the view it makes generates exactly what
/// `kiln_model_seamless`' view does (not what the plain model makes), the
/// job holds its model, and a bad `axes` is refused at submit.
#[test]
fn a_seamless_view_is_made_as_a_job() {
    use kiln::ffi::seamless::*;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let prompt = CString::new("mossy stone").unwrap();
    let model = common::ffi_load_model(rt, &common::fixture());
    let mut job = 7u64;
    assert_eq!(unsafe { kiln_job_submit_seamless(model, 9, ptr::null(), &mut job) }, kiln_status::InvalidArgument);
    assert_eq!(job, 0);
    assert!(common::ffi_last_error().contains("axes"), "{}", common::ffi_last_error());
    assert_eq!(unsafe { kiln_job_submit_seamless(ptr::null(), 3, ptr::null(), &mut job) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_job_submit_seamless(model, 3, ptr::null(), ptr::null_mut()) }, kiln_status::NullArgument);

    // Submitted from a handle freed right after: the job holds the model.
    let own = common::ffi_load_model(rt, &common::fixture());
    assert_eq!(unsafe { kiln_job_submit_seamless(own, kiln_seamless::Xy as u32, ptr::null(), &mut job) }, kiln_status::Ok);
    unsafe { kiln_model_free(own) };
    let graph_kib = |g: &str| common::graph_kib(&common::fixture().join(g));
    let remade = graph_kib("unet") + graph_kib("vae_decoder");
    assert!([1, remade].contains(&poll(job).total_steps), "1 until the view plans, then the KiB of the U-Net and decoder it remakes");
    let mut state = 0u32;
    assert_eq!(unsafe { kiln_job_wait(job, 120_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Succeeded as u32, "{}", job_error(job));
    assert_eq!((poll(job).step, poll(job).total_steps), (remade, remade));
    let mut view = ptr::null_mut();
    assert_eq!(unsafe { kiln_job_model(job, &mut view) }, kiln_status::Ok);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    let mut blocking = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_seamless(model, kiln_seamless::Xy as u32, &mut blocking) }, kiln_status::Ok);
    let tiled = generate_bytes(view, &prompt);
    assert!(tiled == generate_bytes(blocking, &prompt), "the job's view is kiln_model_seamless'");
    assert!(tiled != generate_bytes(model, &prompt), "and its image differs from the plain model's");
    unsafe {
        kiln_model_free(view);
        kiln_model_free(blocking);
        kiln_model_free(model);
        kiln_runtime_destroy(rt);
    }
}

/// An upscaler loaded as a job upscales exactly as one loaded by the
/// blocking call, outlives the runtime it was submitted on, and is taken
/// only with `kiln_job_upscaler`; a missing graph is refused at submit.
#[test]
fn an_upscaler_is_loaded_as_a_job() {
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let mut job = 7u64;
    let missing = CString::new("/nonexistent/esrgan").unwrap();
    assert_eq!(unsafe { kiln_job_submit_upscaler_load(rt, missing.as_ptr(), ptr::null(), &mut job) }, kiln_status::ModelNotFound);
    assert_eq!(job, 0);
    assert!(common::ffi_last_error().contains("/nonexistent/esrgan"), "{}", common::ffi_last_error());
    assert_eq!(unsafe { kiln_job_submit_upscaler_load(rt, ptr::null(), ptr::null(), &mut job) }, kiln_status::NullArgument);
    let bad_utf8 = [0xffu8, 0];
    assert_eq!(unsafe { kiln_job_submit_upscaler_load(rt, bad_utf8.as_ptr().cast(), ptr::null(), &mut job) }, kiln_status::InvalidUtf8);
    assert_eq!(job, 0);

    let mut direct = ptr::null_mut();
    assert_eq!(unsafe { kiln_upscaler_load(rt, upscaler_dir().as_ptr(), &mut direct) }, kiln_status::Ok);
    // The job keeps what it needs of the runtime.
    let mut own_rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut own_rt) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_submit_upscaler_load(own_rt, upscaler_dir().as_ptr(), ptr::null(), &mut job) }, kiln_status::Ok);
    unsafe { kiln_runtime_destroy(own_rt) };
    let kib = common::graph_kib(&common::root().join("tests/fixtures/upscaler/x4"));
    assert!([1, kib].contains(&poll(job).total_steps), "1 until the load plans its graph, then its KiB");
    let mut state = 0u32;
    assert_eq!(unsafe { kiln_job_wait(job, 60_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Succeeded as u32, "{}", job_error(job));
    assert_eq!((poll(job).step, poll(job).total_steps), (kib, kib));
    let mut none = ptr::dangling_mut();
    assert_eq!(unsafe { kiln_job_model(job, &mut none) }, kiln_status::InvalidArgument);
    assert!(none.is_null());
    assert!(common::ffi_last_error().contains("kiln_job_upscaler"), "{}", common::ffi_last_error());
    let (mut w, mut h) = (0u32, 0u32);
    assert_eq!(unsafe { kiln_job_image_size(job, &mut w, &mut h) }, kiln_status::InvalidArgument);
    let mut loaded = ptr::null_mut();
    assert_eq!(unsafe { kiln_job_upscaler(job, &mut loaded) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_upscaler(job, ptr::null_mut()) }, kiln_status::NullArgument);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);

    let input = c_image(&sprite());
    let upscaled = |u: *const kiln_upscaler| {
        let mut out = ptr::null_mut();
        assert_eq!(unsafe { kiln_upscaler_upscale(u, input, ptr::null(), &mut out) }, kiln_status::Ok, "{}", common::ffi_last_error());
        let bytes = image_bytes(out);
        unsafe { kiln_image_free(out) };
        bytes
    };
    let (w, h, bytes) = upscaled(loaded);
    assert_eq!((w, h), (96, 80));
    assert!(bytes == upscaled(direct).2, "the job's upscaler is kiln_upscaler_load's");

    // An image job has no upscaler.
    assert_eq!(unsafe { kiln_job_submit_upscale(loaded, input, ptr::null(), ptr::null(), &mut job) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_job_wait(job, 60_000, &mut state) }, kiln_status::Ok);
    let mut other = ptr::dangling_mut();
    assert_eq!(unsafe { kiln_job_upscaler(job, &mut other) }, kiln_status::InvalidArgument);
    assert!(other.is_null());
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    unsafe {
        kiln_image_free(input);
        kiln_upscaler_free(loaded);
        kiln_upscaler_free(direct);
        kiln_runtime_destroy(rt);
    }
}

/// What a model-load job's progress counts: KiB of the graphs whose sessions
/// the load makes, told as each is made. Loaded one after another, the steps
/// are the text encoder, then the U-Net, then the VAE decoder; in a ControlNet
/// folder the U-Net opens on first use, so it is not counted; under per-stage
/// residency the load makes no session, and reports 0 of 1, then 1 of 1.
#[test]
fn a_model_loads_progress_counts_the_graphs_it_opens() {
    use kiln::jobs::{JobConfig, JobEvent, JobObserver, JobPool, JobState, JobWork};
    use kiln::model::Residency;
    use kiln::runtime::{Runtime, RuntimeOptions};
    use std::sync::Arc;

    #[derive(Default)]
    struct Steps(parking_lot::Mutex<Vec<(u32, u32)>>);
    impl JobObserver for Steps {
        fn on_event(&self, _id: u64, event: &JobEvent<'_>) {
            if let JobEvent::Progress { step, total } = event {
                self.0.lock().push((*step, *total));
            }
        }
    }
    let kib = |dir: &std::path::Path, g: &str| common::graph_kib(&dir.join(g));
    let load = |residency: Residency, dir: std::path::PathBuf| {
        let rt = Runtime::new(&RuntimeOptions { sequential_load: true, residency, providers: common::env_providers(), ..Default::default() }).unwrap();
        let pool = JobPool::new(1);
        let steps = Arc::new(Steps::default());
        let config = JobConfig { observer: Some(Arc::clone(&steps) as Arc<dyn JobObserver>), ..Default::default() };
        let id = pool.submit_work(JobWork::LoadModel { runtime: rt, dir, options: Default::default() }, config);
        assert_eq!(pool.wait(id, Duration::from_secs(120)).unwrap(), JobState::Succeeded, "{:?}", pool.error_message(id));
        let polled = pool.poll(id).unwrap();
        pool.release(id).unwrap();
        let told = steps.0.lock().clone();
        (told, (polled.step, polled.total_steps))
    };

    let dir = common::fixture();
    let (te, unet, vae) = (kib(&dir, "text_encoder"), kib(&dir, "unet"), kib(&dir, "vae_decoder"));
    let total = te + unet + vae;
    let (told, polled) = load(Residency::AllResident, dir);
    println!("sequential load: {told:?} (KiB: text encoder {te}, U-Net {unet}, VAE decoder {vae})");
    assert_eq!(told, vec![(0, total), (te, total), (te + unet, total), (total, total)]);
    assert_eq!(polled, (total, total));

    let controlnet = common::controlnet_folder("load-progress");
    let (told, polled) = load(Residency::AllResident, controlnet);
    println!("ControlNet folder: {told:?}");
    assert_eq!(told, vec![(0, te + vae), (te, te + vae), (te + vae, te + vae)], "unet/ opens on first use: not counted");
    assert_eq!(polled, (te + vae, te + vae));

    let (told, polled) = load(Residency::PerStage, common::fixture());
    assert_eq!(told, vec![(1, 1)], "per stage, the load makes no session");
    assert_eq!(polled, (1, 1));
}
