//! Every C function's error paths: NULL pointers, invalid UTF-8, missing and
//! corrupt model files, bad sizes, bad enum values, wrong struct sizes, small
//! buffers. Each returns a specific status and a message, and the runtime and
//! model stay usable afterwards.
mod common;

use std::ffi::{c_char, CStr, CString};
use std::path::Path;
use std::ptr;

use kiln::ffi::image::*;
use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::runtime::*;

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn runtime() -> *mut kiln_runtime {
    let mut rt = ptr::null_mut();
    let s = unsafe { kiln_runtime_create(ptr::null(), &mut rt) };
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    rt
}

fn load(rt: *mut kiln_runtime, dir: &Path) -> (kiln_status, *mut kiln_model) {
    let c = CString::new(dir.to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    let s = unsafe { kiln_model_load(rt, c.as_ptr(), &mut m) };
    (s, m)
}

fn options(prompt: &CStr) -> kiln_generate_options {
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 2;
    o
}

/// A copy of the fixture whose `rel` file is replaced by `contents` (None = removed).
fn broken_fixture(tag: &str, rel: &str, contents: Option<&[u8]>) -> std::path::PathBuf {
    let dst = std::env::temp_dir().join(format!("kiln-broken-{}-{tag}", std::process::id()));
    copy_dir(&common::fixture(), &dst);
    let target = dst.join(rel);
    match contents {
        Some(bytes) => std::fs::write(&target, bytes).unwrap(),
        None => std::fs::remove_file(&target).unwrap(),
    }
    dst
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

/// Generates one small image, proving the handles still work.
fn still_works(m: *const kiln_model) {
    let p = CString::new("stone").unwrap();
    let o = options(&p);
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::Ok, "{}", last_error());
    assert_eq!(unsafe { kiln_image_width(img) }, 64);
    unsafe { kiln_image_free(img) };
}

#[test]
fn null_arguments_are_reported_not_crashed() {
    let rt = runtime();
    let (s, m) = load(rt, &common::fixture());
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    let p = CString::new("x").unwrap();
    let o = options(&p);
    let mut img: *mut kiln_image = ptr::null_mut();
    unsafe {
        assert_eq!(kiln_runtime_create(ptr::null(), ptr::null_mut()), kiln_status::NullArgument);
        assert_eq!(kiln_model_load(ptr::null(), p.as_ptr(), &mut ptr::null_mut()), kiln_status::NullArgument);
        assert!(last_error().contains("runtime"), "{}", last_error());
        assert_eq!(kiln_model_load(rt, ptr::null(), &mut ptr::null_mut()), kiln_status::NullArgument);
        assert!(last_error().contains("model_dir"));
        let c = CString::new(common::fixture().to_str().unwrap()).unwrap();
        assert_eq!(kiln_model_load(rt, c.as_ptr(), ptr::null_mut()), kiln_status::NullArgument);
        assert_eq!(kiln_model_generate(ptr::null(), &o, &mut img), kiln_status::NullArgument);
        assert_eq!(kiln_model_generate(m, ptr::null(), &mut img), kiln_status::NullArgument);
        assert_eq!(kiln_model_generate(m, &o, ptr::null_mut()), kiln_status::NullArgument);
        let mut no_prompt = o;
        no_prompt.prompt = ptr::null();
        assert_eq!(kiln_model_generate(m, &no_prompt, &mut img), kiln_status::NullArgument);
        assert!(last_error().contains("prompt"));
        assert!(img.is_null());
        assert_eq!(kiln_model_generate_into(m, &o, ptr::null_mut(), 100, 0), kiln_status::NullArgument);
        assert_eq!(kiln_model_get_info(m, ptr::null_mut()), kiln_status::NullArgument);
        assert_eq!(kiln_image_write_png(ptr::null(), p.as_ptr()), kiln_status::NullArgument);
        assert_eq!(kiln_image_copy(ptr::null(), ptr::null_mut(), 0, 0), kiln_status::NullArgument);
        assert_eq!(kiln_image_width(ptr::null()), 0);
        assert_eq!(kiln_image_height(ptr::null()), 0);
        assert!(kiln_image_pixels(ptr::null()).is_null());
        assert_eq!(kiln_runtime_onnxruntime_version(ptr::null(), ptr::null_mut(), 0, ptr::null_mut()), kiln_status::NullArgument);
        kiln_image_free(ptr::null_mut());
        kiln_model_free(ptr::null_mut());
        kiln_runtime_destroy(ptr::null_mut());
        kiln_runtime_options_init(ptr::null_mut());
        kiln_generate_options_init(ptr::null_mut());
        assert_eq!(CStr::from_ptr(kiln::ffi::status::kiln_status_name(12345)).to_str().unwrap(), "KILN_STATUS_UNKNOWN");
        assert_eq!(CStr::from_ptr(kiln::ffi::status::kiln_status_name(100)).to_str().unwrap(), "KILN_STATUS_NULL_ARGUMENT");
    }
    still_works(m);
    assert_eq!(last_error(), "", "a successful call clears the message");
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn invalid_utf8_is_reported() {
    let rt = runtime();
    let bad = CString::new(vec![b'a', 0xff, 0xfe, b'b']).unwrap();
    let mut m = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, bad.as_ptr(), &mut m) }, kiln_status::InvalidUtf8);
    assert!(last_error().contains("UTF-8"));
    let (s, m) = load(rt, &common::fixture());
    assert_eq!(s, kiln_status::Ok);
    let o = options(&bad);
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::InvalidUtf8);
    let good = CString::new("ok").unwrap();
    let mut o = options(&good);
    o.negative_prompt = bad.as_ptr();
    assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::InvalidUtf8);
    assert!(last_error().contains("negative_prompt"));
    assert_eq!(unsafe { kiln_image_write_png(ptr::null(), bad.as_ptr()) }, kiln_status::NullArgument);
    still_works(m);
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn missing_and_corrupt_model_files_name_the_file() {
    let rt = runtime();
    let (s, m) = load(rt, Path::new("/nonexistent/kiln-model"));
    assert_eq!(s, kiln_status::ModelNotFound);
    assert!(m.is_null());
    assert!(last_error().contains("/nonexistent/kiln-model"));

    let cases: [(&str, &str, Option<&[u8]>, kiln_status); 6] = [
        ("nounet", "unet/model.onnx", None, kiln_status::ModelNotFound),
        ("badunet", "unet/model.onnx", Some(b"this is not an onnx graph"), kiln_status::ModelInvalid),
        ("notok", "tokenizer/vocab.json", None, kiln_status::ModelNotFound),
        ("badindex", "model_index.json", Some(b"{ not json"), kiln_status::ModelInvalid),
        ("badsched", "scheduler/scheduler_config.json", Some(br#"{"beta_schedule": "wavy"}"#), kiln_status::Ok),
        ("badvocab", "tokenizer/vocab.json", Some(b"[1, 2"), kiln_status::ModelInvalid),
    ];
    // Per-stage residency opens no session at load (it reads the graphs'
    // inputs and outputs from the files), and sequential loading skips the
    // loader threads: both must still refuse the same files the same way.
    let mut lazy = ptr::null_mut();
    let mut lazy_options = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut lazy_options) };
    lazy_options.residency = kiln_residency::PerStage as u32;
    lazy_options.sequential_load = 1;
    assert_eq!(unsafe { kiln_runtime_create(&lazy_options, &mut lazy) }, kiln_status::Ok);
    for ((tag, rel, contents, want), rt) in cases.into_iter().flat_map(|c| [(c, rt), (c, lazy)]) {
        let dir = broken_fixture(tag, rel, contents);
        let (s, m) = load(rt, &dir);
        assert_eq!(s, want, "{tag}: {}", last_error());
        if want != kiln_status::Ok {
            assert!(last_error().contains(rel.split('/').next().unwrap()), "{tag}: {}", last_error());
            assert!(m.is_null());
        } else {
            // A bad scheduler config is reported when a generation needs it.
            let p = CString::new("x").unwrap();
            let o = options(&p);
            let mut img = ptr::null_mut();
            assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::ModelInvalid);
            assert!(last_error().contains("wavy"), "{}", last_error());
            unsafe { kiln_model_free(m) };
        }
        std::fs::remove_dir_all(&dir).ok();
    }
    // The runtimes are still usable.
    for rt in [rt, lazy] {
        let (s, m) = load(rt, &common::fixture());
        assert_eq!(s, kiln_status::Ok);
        still_works(m);
        unsafe { kiln_model_free(m) };
        unsafe { kiln_runtime_destroy(rt) };
    }
}

#[test]
fn bad_sizes_values_and_buffers_are_reported() {
    let rt = runtime();
    let (s, m) = load(rt, &common::fixture());
    assert_eq!(s, kiln_status::Ok);
    let p = CString::new("brick").unwrap();
    let mut img = ptr::null_mut();
    let check = |o: &kiln_generate_options, want: kiln_status, needle: &str| {
        let mut img = ptr::null_mut();
        assert_eq!(unsafe { kiln_model_generate(m, o, &mut img) }, want, "{}", last_error());
        assert!(img.is_null());
        assert!(last_error().contains(needle), "{}", last_error());
    };
    let mut o = options(&p);
    o.width = 100;
    check(&o, kiln_status::InvalidSize, "width 100");
    o.width = 64;
    o.height = 1 << 20;
    check(&o, kiln_status::InvalidSize, "height");
    let mut o = options(&p);
    o.scheduler = 77;
    check(&o, kiln_status::InvalidArgument, "scheduler");
    let mut o = options(&p);
    o.guidance_scale = f32::NAN;
    check(&o, kiln_status::InvalidArgument, "guidance");
    let mut o = options(&p);
    o.steps = 5000;
    check(&o, kiln_status::InvalidArgument, "steps");
    let noise = [0.0f32; 10];
    let mut o = options(&p);
    o.initial_noise = noise.as_ptr();
    o.initial_noise_len = noise.len();
    check(&o, kiln_status::InvalidSize, "initial noise");
    let mut o = options(&p);
    o.initial_noise_len = 256;
    check(&o, kiln_status::NullArgument, "initial_noise");
    let mut o = options(&p);
    o.struct_size = 3;
    check(&o, kiln_status::StructSizeMismatch, "struct_size");
    o.struct_size = 4096;
    check(&o, kiln_status::StructSizeMismatch, "struct_size");

    // Caller buffers: too small is refused before any work; a pitch smaller than a row too.
    let o = options(&p);
    let mut buf = vec![0u8; 64 * 64 * 4 - 1];
    assert_eq!(unsafe { kiln_model_generate_into(m, &o, buf.as_mut_ptr(), buf.len(), 0) }, kiln_status::BufferTooSmall);
    assert_eq!(unsafe { kiln_model_generate_into(m, &o, buf.as_mut_ptr(), buf.len(), 10) }, kiln_status::InvalidArgument);
    // With a pitch: rows land where asked and padding bytes are untouched.
    let pitch = 64 * 4 + 16;
    let mut padded = vec![0xABu8; pitch * 63 + 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(m, &o, padded.as_mut_ptr(), padded.len(), pitch) }, kiln_status::Ok, "{}", last_error());
    assert!(padded[64 * 4..pitch].iter().all(|&b| b == 0xAB));
    assert_eq!(padded[3], 255, "alpha is opaque");
    // The same request into a Kiln image gives the same pixels.
    assert_eq!(unsafe { kiln_model_generate(m, &o, &mut img) }, kiln_status::Ok);
    let pixels = unsafe { std::slice::from_raw_parts(kiln_image_pixels(img), 64 * 64 * 4) };
    assert_eq!(&padded[pitch..pitch + 256], &pixels[256..512], "deterministic with the same seed");
    let mut small = vec![0u8; 16];
    assert_eq!(unsafe { kiln_image_copy(img, small.as_mut_ptr(), small.len(), 0) }, kiln_status::BufferTooSmall);
    let bad_path = CString::new("/nonexistent/dir/out.png").unwrap();
    assert_eq!(unsafe { kiln_image_write_png(img, bad_path.as_ptr()) }, kiln_status::Io);
    unsafe { kiln_image_free(img) };

    let mut info = kiln_model_info { struct_size: 2, ..Default::default() };
    assert_eq!(unsafe { kiln_model_get_info(m, &mut info) }, kiln_status::StructSizeMismatch);
    info.struct_size = std::mem::size_of::<kiln_model_info>() as u32;
    assert_eq!(unsafe { kiln_model_get_info(m, &mut info) }, kiln_status::Ok);
    assert_eq!((info.default_size, info.size_multiple, info.latent_channels, info.vae_downsampling), (64, 16, 4, 8));
    still_works(m);
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn bad_runtime_options_are_reported() {
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.log_level = 9;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::InvalidArgument);
    assert!(last_error().contains("log_level"));
    o.log_level = 0;
    o.struct_size = 1;
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::StructSizeMismatch);
    let bad = CString::new(vec![0xC3u8, 0x28]).unwrap();
    unsafe { kiln_runtime_options_init(&mut o) };
    o.onnxruntime_path = bad.as_ptr();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::InvalidUtf8);
    assert!(rt.is_null());
}

#[test]
fn log_callback_receives_lines_with_user_data() {
    unsafe extern "C" fn sink(user: *mut std::ffi::c_void, level: u32, msg: *const c_char, len: usize) {
        let lines = unsafe { &*(user as *const std::sync::Mutex<Vec<(u32, String)>>) };
        let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
        assert_eq!(unsafe { *msg.add(len) }, 0, "NUL-terminated too");
        lines.lock().unwrap().push((level, String::from_utf8_lossy(bytes).into_owned()));
    }
    let lines = Box::new(std::sync::Mutex::new(Vec::<(u32, String)>::new()));
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.log_callback = Some(sink);
    o.log_user_data = &*lines as *const _ as *mut _;
    o.log_level = kiln_log_level::Debug as u32;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::Ok);
    let (s, m) = load(rt, &common::fixture());
    assert_eq!(s, kiln_status::Ok);
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
    let lines = lines.lock().unwrap();
    assert!(lines.iter().any(|(l, t)| *l == 1 && t.contains("ONNX Runtime") && t.contains("loaded")), "{lines:?}");
    assert!(lines.iter().any(|(_, t)| t.contains("model") && t.contains("loaded")), "{lines:?}");
    // At debug level ONNX Runtime's own session log reaches the same callback.
    assert!(lines.iter().any(|(l, t)| *l == 0 && t.starts_with("onnxruntime: ")), "{lines:?}");
}
