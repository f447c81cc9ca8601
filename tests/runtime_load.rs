//! ONNX Runtime loading, in a process of its own (it is process-global state):
//! failures name every path tried, leave the process able to load later, and a
//! second, different library is refused rather than silently ignored.
use std::ffi::{CStr, CString};
use std::ptr;

use kiln::ffi::kiln_status;
use kiln::ffi::runtime::*;

fn last_error() -> String {
    let mut buf = vec![0 as std::ffi::c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// An `OrtGetApiBase` of an ONNX Runtime too old for Kiln (API level 22).
#[cfg(unix)]
const FAKE_OLD_ORT: &str = "typedef struct { const void *(*get_api)(unsigned); const char *(*version)(void); } api_base;\n\
static const void *get_api(unsigned v) { (void)v; return 0; }\n\
static const char *version(void) { return \"1.10.0\"; }\n\
static const api_base base = { get_api, version };\n\
const api_base *OrtGetApiBase(void) { return &base; }\n";

/// Compiles `source` into a shared library `name` in a scratch folder.
#[cfg(unix)]
fn fake_library(name: &str, source: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-fake-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join(name).with_extension("c");
    std::fs::write(&c, source).unwrap();
    let lib = dir.join(name);
    let out = std::process::Command::new("cc").args(["-shared", "-fPIC", "-o"]).arg(&lib).arg(&c).output().expect("cc runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    lib
}

fn create(path: Option<&str>) -> (kiln_status, *mut kiln_runtime) {
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    let c = path.map(|p| CString::new(p).unwrap());
    o.onnxruntime_path = c.as_ref().map_or(ptr::null(), |c| c.as_ptr());
    let mut rt = ptr::null_mut();
    let s = unsafe { kiln_runtime_create(&o, &mut rt) };
    (s, rt)
}

#[test]
fn loading_fails_loudly_then_succeeds() {
    let (s, rt) = create(Some("/nonexistent/libonnxruntime.so"));
    assert_eq!(s, kiln_status::RuntimeLoadFailed);
    assert!(rt.is_null());
    let msg = last_error();
    assert!(msg.contains("/nonexistent/libonnxruntime.so") && msg.contains("no such file"), "{msg}");

    // A file that exists but is not a shared library.
    let not_a_lib = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let (s, _) = create(Some(not_a_lib));
    assert_eq!(s, kiln_status::RuntimeLoadFailed);
    assert!(last_error().contains("Cargo.toml"), "{}", last_error());

    // Real shared libraries that are not a usable ONNX Runtime, built here:
    // one without `OrtGetApiBase`, one whose `OrtGetApiBase` reports version
    // 1.10.0 and offers no API at the level Kiln needs. Unix only: they are
    // built with the host's `cc` (the Windows CI runs this binary under Wine).
    #[cfg(unix)]
    for (name, source, needle) in [
        ("libnot_ort.so", "int not_onnxruntime(void) { return 42; }\n", "libnot_ort.so"),
        ("libold_ort.so", FAKE_OLD_ORT, "libold_ort.so"),
    ] {
        let lib = fake_library(name, source);
        let (s, rt) = create(Some(lib.to_str().unwrap()));
        println!("{name}: {s:?}: {}", last_error());
        assert_eq!(s, kiln_status::RuntimeLoadFailed, "{}", last_error());
        assert!(rt.is_null());
        assert!(last_error().contains(needle), "{}", last_error());
    }

    // The search path still works after those failures.
    let (s, rt) = create(None);
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    let mut len = 0usize;
    assert_eq!(unsafe { kiln_runtime_onnxruntime_version(rt, ptr::null_mut(), 0, &mut len) }, kiln_status::Ok);
    let mut buf = vec![0 as std::ffi::c_char; len + 1];
    assert_eq!(unsafe { kiln_runtime_onnxruntime_version(rt, buf.as_mut_ptr(), buf.len(), &mut len) }, kiln_status::Ok);
    let version = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_str().unwrap().to_string();
    assert!(version.starts_with("1."), "{version}");
    // A too-small buffer is truncated, NUL-terminated and reported.
    let mut small = [0x7f as std::ffi::c_char; 3];
    assert_eq!(unsafe { kiln_runtime_onnxruntime_version(rt, small.as_mut_ptr(), 3, &mut len) }, kiln_status::BufferTooSmall);
    assert_eq!(small[2], 0);
    assert_eq!(len, version.len());

    // Once loaded, asking for another library is an error, not a silent mismatch.
    let (s, rt2) = create(Some("/opt/other/libonnxruntime.so"));
    assert_eq!(s, kiln_status::RuntimeLoadFailed);
    assert!(rt2.is_null());
    assert!(last_error().contains("already loaded"), "{}", last_error());

    // A second runtime with the default search shares the loaded library.
    let (s, rt3) = create(None);
    assert_eq!(s, kiln_status::Ok);
    unsafe { kiln_runtime_destroy(rt3) };
    unsafe { kiln_runtime_destroy(rt) };
}
