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
