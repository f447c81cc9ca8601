//! The ONNX Runtime range, in a process of its own (ORT_DYLIB_PATH and the
//! loaded library are process-global): a library named by `ORT_DYLIB_PATH` is
//! that library or an error naming it, never silently replaced by another copy;
//! a release older than 1.23 is refused, naming its version, before ort keeps it
//! or any session exists (1.22 aborts the process inside `CreateSession`).
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr;

use kiln::ffi::kiln_status;
use kiln::ffi::runtime::*;

fn last_error() -> String {
    let mut buf = vec![0 as std::ffi::c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn create(path: Option<&Path>) -> (kiln_status, *mut kiln_runtime) {
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    let c = path.map(|p| CString::new(p.to_str().unwrap()).unwrap());
    o.onnxruntime_path = c.as_ref().map_or(ptr::null(), |c| c.as_ptr());
    let mut rt = ptr::null_mut();
    let s = unsafe { kiln_runtime_create(&o, &mut rt) };
    (s, rt)
}

/// A shared library that looks like ONNX Runtime `version` to a version probe:
/// `OrtGetApiBase` gives a `GetVersionString`, while `GetApi` returns NULL so
/// nothing could ever run through it.
fn fake_runtime(version: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-fake-ort-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("fake_ort.c");
    std::fs::write(
        &src,
        format!(
            "#include <stddef.h>\n\
             typedef struct {{ const void *(*get_api)(unsigned); const char *(*get_version)(void); }} api_base;\n\
             static const void *get_api(unsigned v) {{ (void)v; return NULL; }}\n\
             static const char *get_version(void) {{ return \"{version}\"; }}\n\
             static const api_base base = {{ get_api, get_version }};\n\
             #ifdef _WIN32\n__declspec(dllexport)\n#endif\n\
             const api_base *OrtGetApiBase(void) {{ return &base; }}\n"
        ),
    )
    .unwrap();
    let lib = dir.join(if cfg!(windows) { "onnxruntime.dll" } else { "libonnxruntime.so.1.22.1" });
    let cc = std::env::var("KILN_TEST_CC").unwrap_or_else(|_| "cc".into());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("{cc} runs: {e}"));
    assert!(out.status.success(), "building the fake runtime failed:\n{}", String::from_utf8_lossy(&out.stderr));
    lib
}

#[test]
fn unusable_ort_dylib_path_is_an_error_and_old_releases_are_refused() {
    // A missing library named by ORT_DYLIB_PATH: an error naming the variable and
    // the path, not the copy the project's setup fetched.
    let missing = Path::new("/nonexistent/kiln-test/libonnxruntime.so");
    std::env::set_var("ORT_DYLIB_PATH", missing);
    let (s, rt) = create(None);
    let msg = last_error();
    println!("ORT_DYLIB_PATH missing: {s:?}: {msg}");
    assert_eq!(s, kiln_status::RuntimeLoadFailed, "{msg}");
    assert!(rt.is_null());
    assert!(msg.contains("ORT_DYLIB_PATH") && msg.contains(&missing.display().to_string()), "{msg}");
    assert!(!msg.contains("fetched by the project's setup"), "fell back to another copy: {msg}");

    // A library reporting 1.22.1, named by ORT_DYLIB_PATH: refused by version.
    let old = fake_runtime("1.22.1");
    std::env::set_var("ORT_DYLIB_PATH", &old);
    let (s, rt) = create(None);
    let msg = last_error();
    println!("ORT_DYLIB_PATH = a 1.22.1: {s:?}: {msg}");
    assert_eq!(s, kiln_status::RuntimeLoadFailed, "{msg}");
    assert!(rt.is_null());
    assert!(msg.contains("1.22.1") && msg.contains("1.23") && msg.contains("ORT_DYLIB_PATH"), "{msg}");
    assert!(msg.contains(&old.display().to_string()), "{msg}");

    // The same library as an explicit path: the same refusal.
    std::env::remove_var("ORT_DYLIB_PATH");
    let (s, _) = create(Some(&old));
    let msg = last_error();
    assert_eq!(s, kiln_status::RuntimeLoadFailed, "{msg}");
    assert!(msg.contains("1.22.1") && msg.contains("runtime options"), "{msg}");

    // The refusals left nothing loaded: the search still finds a usable runtime.
    let (s, rt) = create(None);
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    unsafe { kiln_runtime_destroy(rt) };
}
