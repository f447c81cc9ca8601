//! Fault injection (issue 14, item 3): broken files and configs, a model folder
//! deleted while loaded, a provider the machine lacks, a graph cache that
//! cannot be written, misbehaving callbacks. Every case gives a specific status
//! and a message naming what is wrong (never INTERNAL), and the same runtime
//! then completes a normal job. ONNX Runtime libraries that are missing, not
//! ONNX Runtime or too old are in `tests/runtime_load.rs` (a process of their
//! own, since the library is process-global); sizes too large to allocate are
//! in `tests/hardening.rs`.
mod common;

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU32, Ordering};

use kiln::ffi::image::*;
use kiln::ffi::job::*;
use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::runtime::*;

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn runtime_with(edit: impl FnOnce(&mut kiln_runtime_options)) -> *mut kiln_runtime {
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    edit(&mut o);
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::Ok, "{}", last_error());
    rt
}

fn load(rt: *mut kiln_runtime, dir: &Path) -> (kiln_status, *mut kiln_model) {
    let c = CString::new(dir.to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    let s = unsafe { kiln_model_load(rt, c.as_ptr(), &mut m) };
    (s, m)
}

fn generate(m: *const kiln_model) -> kiln_status {
    let p = CString::new("stone").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = p.as_ptr();
    o.steps = 2;
    let mut img = ptr::null_mut();
    let s = unsafe { kiln_model_generate(m, &o, &mut img) };
    unsafe { kiln_image_free(img) };
    s
}

/// The runtime still loads the fixture and completes a normal job.
fn normal_job_works(rt: *mut kiln_runtime) {
    let (s, m) = load(rt, &common::fixture());
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    let p = CString::new("stone").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = p.as_ptr();
    o.steps = 2;
    let mut job = 0u64;
    assert_eq!(unsafe { kiln_job_submit(m, &o, ptr::null(), &mut job) }, kiln_status::Ok);
    let mut state = 0u32;
    assert_eq!(unsafe { kiln_job_wait(job, 120_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Succeeded as u32);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    unsafe { kiln_model_free(m) };
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn scratch_fixture(tag: &str) -> PathBuf {
    let dst = std::env::temp_dir().join(format!("kiln-faults-{}-{tag}", std::process::id()));
    if dst.exists() {
        std::fs::remove_dir_all(&dst).unwrap();
    }
    copy_dir(&common::fixture(), &dst);
    dst
}

/// How a fault shows: at load, or at the first generation.
#[derive(Debug, Clone, Copy)]
enum When {
    Load(kiln_status),
    Generate(kiln_status),
}

#[test]
fn broken_files_and_configs_are_reported_by_name() {
    let fixture = common::fixture();
    let unet = std::fs::read(fixture.join("unet/model.onnx")).unwrap();
    let vae = std::fs::read(fixture.join("vae_decoder/model.onnx")).unwrap();
    let json = |rel: &str, edit: &dyn Fn(&mut serde_json::Value)| -> Vec<u8> {
        let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(fixture.join(rel)).unwrap()).unwrap();
        edit(&mut v);
        serde_json::to_vec(&v).unwrap()
    };
    type Case = (&'static str, &'static str, Vec<u8>, When, &'static str);
    let cases: Vec<Case> = vec![
        ("truncated-unet", "unet/model.onnx", unet[..unet.len() / 2].to_vec(), When::Load(kiln_status::ModelInvalid), "unet"),
        ("header-only-unet", "unet/model.onnx", unet[..64].to_vec(), When::Load(kiln_status::ModelInvalid), "unet"),
        ("empty-unet", "unet/model.onnx", Vec::new(), When::Load(kiln_status::ModelInvalid), "unet"),
        ("flipped-unet", "unet/model.onnx", unet.iter().enumerate().map(|(i, b)| if i % 97 == 0 { !b } else { *b }).collect(), When::Load(kiln_status::ModelInvalid), "unet"),
        ("vae-as-unet", "unet/model.onnx", vae.clone(), When::Load(kiln_status::ModelInvalid), "unet"),
        ("index-array", "model_index.json", b"[1, 2, 3]".to_vec(), When::Load(kiln_status::ModelInvalid), "model_index"),
        ("vae-scale-type", "vae_decoder/config.json", json("vae_decoder/config.json", &|v| v["scaling_factor"] = serde_json::json!("big")), When::Load(kiln_status::ModelInvalid), "scaling_factor"),
        ("vae-latent-0", "vae_decoder/config.json", json("vae_decoder/config.json", &|v| v["latent_channels"] = serde_json::json!(0)), When::Load(kiln_status::ModelInvalid), "latent"),
        ("vae-scale-zero", "vae_decoder/config.json", json("vae_decoder/config.json", &|v| v["scaling_factor"] = serde_json::json!(0.0)), When::Load(kiln_status::ModelInvalid), "scaling_factor"),
        ("vae-levels-99", "vae_decoder/config.json", json("vae_decoder/config.json", &|v| v["block_out_channels"] = serde_json::json!(vec![32; 99])), When::Load(kiln_status::ModelInvalid), "block_out_channels"),
        ("unet-sample-huge", "unet/config.json", json("unet/config.json", &|v| v["sample_size"] = serde_json::json!(1u64 << 40)), When::Load(kiln_status::ModelInvalid), "sample_size"),
        ("text-hidden-0", "text_encoder/config.json", json("text_encoder/config.json", &|v| v["hidden_size"] = serde_json::json!(0)), When::Load(kiln_status::ModelInvalid), "hidden_size"),
        ("unet-config-type", "unet/config.json", json("unet/config.json", &|v| v["sample_size"] = serde_json::json!("huge")), When::Load(kiln_status::ModelInvalid), "sample_size"),
        // Python's json writes NaN for unset floats; Kiln reads it as null (the default).
        ("sched-nan", "scheduler/scheduler_config.json", br#"{"beta_start": NaN}"#.to_vec(), When::Generate(kiln_status::Ok), ""),
        ("sched-inf", "scheduler/scheduler_config.json", br#"{"beta_start": Infinity}"#.to_vec(), When::Generate(kiln_status::ModelInvalid), "beta_start"),
        ("sched-not-json", "scheduler/scheduler_config.json", br#"{"beta_start": 0.1"#.to_vec(), When::Load(kiln_status::ModelInvalid), "scheduler_config"),
        ("sched-offset", "scheduler/scheduler_config.json", json("scheduler/scheduler_config.json", &|v| v["steps_offset"] = serde_json::json!(1e30)), When::Generate(kiln_status::ModelInvalid), "steps_offset"),
        ("sched-train-1", "scheduler/scheduler_config.json", json("scheduler/scheduler_config.json", &|v| v["num_train_timesteps"] = serde_json::json!(1)), When::Generate(kiln_status::ModelInvalid), "num_train_timesteps"),
        ("sched-betas", "scheduler/scheduler_config.json", json("scheduler/scheduler_config.json", &|v| v["beta_end"] = serde_json::json!(-3)), When::Generate(kiln_status::ModelInvalid), "beta_end"),
        ("tokenizer-config", "tokenizer/tokenizer_config.json", b"{\"model_max_length\": \"long\"".to_vec(), When::Load(kiln_status::ModelInvalid), "tokenizer"),
    ];
    let rt = runtime_with(|_| {});
    let mut report = Vec::new();
    for (tag, rel, contents, when, needle) in &cases {
        let dir = scratch_fixture(tag);
        std::fs::write(dir.join(rel), contents).unwrap();
        let (s, m) = load(rt, &dir);
        let got = if s != kiln_status::Ok {
            assert!(m.is_null());
            When::Load(s)
        } else {
            let g = generate(m);
            unsafe { kiln_model_free(m) };
            When::Generate(g)
        };
        let msg = last_error();
        report.push(format!("{tag}: {got:?}: {msg}"));
        let ok = match (got, when) {
            (When::Load(a), When::Load(b)) | (When::Generate(a), When::Generate(b)) => a == *b,
            _ => false,
        };
        assert!(ok, "{tag}: got {got:?}, want {when:?}: {msg}");
        assert!(msg.to_lowercase().contains(&needle.to_lowercase()), "{tag}: message should name {needle:?}: {msg}");
        std::fs::remove_dir_all(&dir).ok();
    }
    println!("{}", report.join("\n"));
    println!("{} broken-file cases", cases.len());
    normal_job_works(rt);
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn a_model_folder_deleted_while_loaded() {
    // All graphs resident: the loaded model keeps working without its folder.
    let rt = runtime_with(|_| {});
    let dir = scratch_fixture("deleted-resident");
    let (s, m) = load(rt, &dir);
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(generate(m), kiln_status::Ok, "{}", last_error());
    unsafe { kiln_model_free(m) };
    normal_job_works(rt);
    unsafe { kiln_runtime_destroy(rt) };

    // Per-stage residency reloads graphs from disk: it must report the missing
    // file, then work again once the folder is back.
    let rt = runtime_with(|o| o.residency = kiln_residency::PerStage as u32);
    let dir = scratch_fixture("deleted-per-stage");
    let (s, m) = load(rt, &dir);
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    std::fs::remove_dir_all(&dir).unwrap();
    let s = generate(m);
    let msg = last_error();
    println!("per-stage model with its folder deleted: {s:?}: {msg}");
    assert_eq!(s, kiln_status::ModelNotFound, "{msg}");
    assert!(msg.contains("model.onnx") || msg.contains(dir.to_str().unwrap()), "{msg}");
    // Replaced by a different (broken) file while loaded: reported, not crashed.
    // (The VAE decoder: the U-Net with fused attention reopens from the bytes
    // rewritten at load, not from its file.)
    copy_dir(&common::fixture(), &dir);
    std::fs::write(dir.join("vae_decoder/model.onnx"), b"replaced").unwrap();
    let s = generate(m);
    println!("per-stage model with its VAE decoder replaced: {s:?}: {}", last_error());
    assert!(matches!(s, kiln_status::ModelInvalid | kiln_status::Io), "{s:?}: {}", last_error());
    copy_dir(&common::fixture(), &dir);
    assert_eq!(generate(m), kiln_status::Ok, "{}", last_error());
    unsafe { kiln_model_free(m) };
    std::fs::remove_dir_all(&dir).ok();
    normal_job_works(rt);
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn a_provider_the_machine_lacks() {
    // CUDA is not in the CPU-only ONNX Runtime the tests load.
    let providers = [kiln::ffi::provider::kiln_provider::Cuda as u32];
    let rt = runtime_with(|o| {
        o.providers = providers.as_ptr();
        o.providers_len = 1;
        o.require_provider = 1;
    });
    let (s, m) = load(rt, &common::fixture());
    println!("required CUDA: {s:?}: {}", last_error());
    assert_eq!(s, kiln_status::ProviderUnavailable, "{}", last_error());
    assert!(m.is_null());
    assert!(last_error().contains("CUDA"), "{}", last_error());
    unsafe { kiln_runtime_destroy(rt) };
    // Not required: falls back to the CPU and says why.
    let rt = runtime_with(|o| {
        o.providers = providers.as_ptr();
        o.providers_len = 1;
    });
    normal_job_works(rt);
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn a_graph_cache_that_cannot_be_written_never_fails_a_load() {
    // A folder on a read-only file system (/proc): every write fails, as on a
    // full disk. (The tests run as root, so chmod cannot make a folder
    // unwritable, and a size-limited tmpfs needs mount rights.)
    let dir = CString::new("/proc/self/kiln-graph-cache").unwrap();
    let rt = runtime_with(|o| o.graph_cache_dir = dir.as_ptr());
    normal_job_works(rt);
    unsafe { kiln_runtime_destroy(rt) };
}

static EVENTS: AtomicU32 = AtomicU32::new(0);
static REENTRY_ERRORS: AtomicU32 = AtomicU32::new(0);

/// Slow, re-entrant and cancelling: sleeps 20 ms per event, polls its own job,
/// reads the runtime's version through the C API, asks to cancel at step 2.
unsafe extern "C" fn misbehave(user: *mut c_void, e: *const kiln_job_event) {
    let e = unsafe { &*e };
    EVENTS.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut p = kiln_job_progress { struct_size: std::mem::size_of::<kiln_job_progress>() as u32, ..Default::default() };
    if unsafe { kiln_job_poll(e.job, &mut p) } != kiln_status::Ok {
        REENTRY_ERRORS.fetch_add(1, Ordering::SeqCst);
    }
    let mut len = 0usize;
    if unsafe { kiln_runtime_onnxruntime_version(user as *const kiln_runtime, ptr::null_mut(), 0, &mut len) } != kiln_status::Ok {
        REENTRY_ERRORS.fetch_add(1, Ordering::SeqCst);
    }
    if e.kind == kiln_job_event_kind::Progress as u32 && e.step == 2 && kiln_job_cancel(e.job) != kiln_status::Ok {
        REENTRY_ERRORS.fetch_add(1, Ordering::SeqCst);
    }
}

/// A log callback that calls back into Kiln (it runs on Kiln's threads).
unsafe extern "C" fn reentrant_log(_user: *mut c_void, _level: u32, _msg: *const c_char, _len: usize) {
    let mut buf = [0 as c_char; 16];
    let _ = unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    let _ = kiln_job_cancel(0x1234);
}

#[test]
fn misbehaving_callbacks_are_contained() {
    let rt = runtime_with(|o| {
        o.log_callback = Some(reentrant_log);
        o.log_level = kiln_log_level::Debug as u32;
    });
    let (s, m) = load(rt, &common::fixture());
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    let p = CString::new("stone").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = p.as_ptr();
    o.steps = 20;
    o.scheduler = kiln_scheduler::Ddim as u32;
    let mut jo = unsafe { std::mem::zeroed::<kiln_job_options>() };
    unsafe { kiln_job_options_init(&mut jo) };
    jo.callback = Some(misbehave);
    jo.user_data = rt as *mut c_void;
    jo.preview_interval = 1;
    let mut job = 0u64;
    assert_eq!(unsafe { kiln_job_submit(m, &o, &jo, &mut job) }, kiln_status::Ok);
    let mut state = 0u32;
    assert_eq!(unsafe { kiln_job_wait(job, 120_000, &mut state) }, kiln_status::Ok);
    assert_eq!(state, kiln_job_state::Cancelled as u32, "the callback asked to cancel at step 2");
    assert_eq!(REENTRY_ERRORS.load(Ordering::SeqCst), 0);
    assert!(EVENTS.load(Ordering::SeqCst) >= 3);
    assert_eq!(kiln_job_free(job), kiln_status::Ok);
    unsafe { kiln_model_free(m) };
    normal_job_works(rt);
    unsafe { kiln_runtime_destroy(rt) };
}

/// A graph whose weights live in an external data file (the matting graph of
/// tests/fixtures/external-data-matting, saved by tools/make_external_data_matting_fixture.py
/// with every initializer in `model.onnx_data`): the file missing is
/// MODEL_NOT_FOUND, cut short or emptied MODEL_INVALID, each naming the file;
/// the same model then cuts out a sprite once the file is back, and the
/// runtime completes a normal job.
#[test]
fn external_weights_missing_or_short() {
    use kiln::ffi::postprocess::*;
    let src = common::root().join("tests/fixtures/external-data-matting");
    let dir = std::env::temp_dir().join(format!("kiln-faults-{}-external", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&src, &dir);
    let data_file = dir.join("model.onnx_data");
    let data = std::fs::read(&data_file).unwrap();

    let rt = runtime_with(|_| {});
    let mut lo = unsafe { std::mem::zeroed::<kiln_model_load_options>() };
    unsafe { kiln_model_load_options_init(&mut lo) };
    let matting = CString::new(dir.to_str().unwrap()).unwrap();
    lo.matting_path = matting.as_ptr();
    let tiny = CString::new(common::fixture().to_str().unwrap()).unwrap();
    let pixels: Vec<u8> = (0..48 * 40 * 4).map(|i| (i * 7 % 251) as u8).collect();
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_create(48, 40, pixels.as_ptr(), pixels.len(), 0, &mut img) }, kiln_status::Ok);
    let mut so = unsafe { std::mem::zeroed::<kiln_sprite_options>() };
    unsafe { kiln_sprite_options_init(&mut so) };
    so.matte = kiln_matte::Graph as u32;
    // A fresh model per case: the matting graph loads on first use and a
    // loaded one is kept, so each case must be its first load.
    let sprite = |expect_load: bool| -> (kiln_status, String) {
        let mut m = ptr::null_mut();
        assert_eq!(unsafe { kiln_model_load_with(rt, tiny.as_ptr(), &lo, &mut m) }, kiln_status::Ok, "{}", last_error());
        let mut out = ptr::null_mut();
        let mut bbox = kiln_rect::default();
        let s = unsafe { kiln_model_make_sprite(m, img, &so, &mut out, &mut bbox) };
        let msg = last_error();
        if s == kiln_status::Ok {
            assert!(expect_load, "{msg}");
        } else {
            assert!(out.is_null());
        }
        unsafe { kiln_image_free(out) };
        unsafe { kiln_model_free(m) };
        (s, msg)
    };
    let (s, msg) = sprite(true);
    assert_eq!(s, kiln_status::Ok, "the fixture itself works: {msg}");
    let cases: [(&str, Option<&[u8]>, kiln_status); 4] = [
        ("missing", None, kiln_status::ModelNotFound),
        ("half", Some(&data[..data.len() / 2]), kiln_status::ModelInvalid),
        ("one byte short", Some(&data[..data.len() - 1]), kiln_status::ModelInvalid),
        ("empty", Some(&[]), kiln_status::ModelInvalid),
    ];
    for (tag, contents, want) in cases {
        match contents {
            None => std::fs::remove_file(&data_file).unwrap(),
            Some(c) => std::fs::write(&data_file, c).unwrap(),
        }
        let (s, msg) = sprite(false);
        println!("external data {tag}: {s:?}: {msg}");
        assert_eq!(s, want, "{tag}: {msg}");
        assert!(msg.contains("model.onnx_data"), "{tag}: the message names the file: {msg}");
    }
    std::fs::write(&data_file, &data).unwrap();
    let (s, msg) = sprite(true);
    assert_eq!(s, kiln_status::Ok, "with the file back: {msg}");
    unsafe { kiln_image_free(img) };
    normal_job_works(rt);
    unsafe { kiln_runtime_destroy(rt) };
    std::fs::remove_dir_all(&dir).ok();
}
