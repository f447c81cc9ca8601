//! Finding and loading the ONNX Runtime shared library.
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::error::{Error, ErrorKind, Result};

/// The library this process loaded.
#[derive(Debug, Clone)]
pub struct LoadedLibrary {
    /// Absolute path of the library file.
    pub path: PathBuf,
    /// Version string reported by the library, e.g. `1.31.1`.
    pub version: String,
}

static LOADED: Mutex<Option<LoadedLibrary>> = Mutex::new(None);

/// The oldest ONNX Runtime release Kiln loads. 1.22 aborts the process inside
/// `CreateSession` (a libstdc++ assertion on an empty `OrtEpDevice` list,
/// reached because `ort` sets an execution-provider selection policy on every
/// session), so older libraries are refused before any session exists.
pub const ONNXRUNTIME_OLDEST_SUPPORTED: (u32, u32) = (1, 23);

/// The newest ONNX Runtime release the parity tests ran against
/// (`tools/ort_range.sh`); newer ones load if their C API is compatible.
pub const ONNXRUNTIME_NEWEST_TESTED: &str = "1.32.0";

/// File name of ONNX Runtime on this platform.
pub(crate) fn library_file_name() -> &'static str {
    if cfg!(windows) {
        "onnxruntime.dll"
    } else if cfg!(target_os = "macos") {
        "libonnxruntime.dylib"
    } else {
        "libonnxruntime.so"
    }
}

/// The search list, in order, each with where it came from.
pub(crate) fn candidates(explicit: Option<&Path>) -> Vec<(PathBuf, &'static str)> {
    // An explicit path is the only candidate: a studio that names its runtime
    // must get that one or an error, never a different copy found elsewhere.
    if let Some(p) = explicit {
        return vec![(absolute(p), "runtime options")];
    }
    // ORT_DYLIB_PATH is as explicit as a path in the options: falling back to
    // another copy would silently run a runtime the host did not choose.
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return vec![(absolute(Path::new(&p)), "ORT_DYLIB_PATH")];
    }
    let mut list = Vec::new();
    if let Some(dir) = own_library_dir() {
        list.push((dir.join(library_file_name()), "beside libkiln"));
        if cfg!(target_os = "linux") {
            // Wheels and many SDKs ship only the versioned name.
            if let Ok(entries) = std::fs::read_dir(&dir) {
                let mut versioned: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("libonnxruntime.so."))
                    })
                    .collect();
                versioned.sort();
                if let Some(p) = versioned.pop() {
                    list.push((p, "beside libkiln"));
                }
            }
        }
    }
    let fetched = env!("KILN_SETUP_ORT_PATH");
    if !fetched.is_empty() {
        list.push((PathBuf::from(fetched), "fetched by the project's setup"));
    }
    list
}

/// Loads ONNX Runtime once per process; later calls check they agree.
pub(crate) fn load(explicit: Option<&Path>) -> Result<LoadedLibrary> {
    let mut loaded = LOADED.lock();
    if let Some(lib) = loaded.as_ref() {
        if let Some(p) = explicit {
            let wanted = absolute(p);
            if !same_file(&wanted, &lib.path) {
                return Err(Error::new(
                    ErrorKind::RuntimeLoad,
                    format!(
                        "ONNX Runtime is already loaded in this process from {} (version {}); it cannot also load {}",
                        lib.path.display(),
                        lib.version,
                        wanted.display()
                    ),
                ));
            }
        }
        return Ok(lib.clone());
    }
    let mut tried = Vec::new();
    for (path, origin) in candidates(explicit) {
        if !path.is_file() {
            tried.push(format!("{} ({origin}): no such file", path.display()));
            continue;
        }
        match try_load(&path) {
            Ok(version) => {
                let lib = LoadedLibrary { path, version };
                *loaded = Some(lib.clone());
                return Ok(lib);
            }
            Err(why) => tried.push(format!("{} ({origin}): {why}", path.display())),
        }
    }
    if tried.is_empty() {
        tried.push("no candidate: pass a path, set ORT_DYLIB_PATH, or put the library beside libkiln".into());
    }
    Err(Error::new(
        ErrorKind::RuntimeLoad,
        format!("could not load ONNX Runtime; tried: {}", tried.join("; ")),
    ))
}

fn try_load(path: &Path) -> std::result::Result<String, String> {
    // The version is read before ort keeps the library, so a refused release
    // leaves nothing behind and the next candidate can still load.
    let version = version_of(path);
    if let Some(v) = &version {
        check_supported(v)?;
    }
    // ort validates the API version and keeps the library; a failure leaves it
    // unset so the next candidate can be tried. Guard against panics inside.
    let result = std::panic::catch_unwind(|| ort::init_from(path).map(|_| ()));
    match result {
        Ok(Ok(())) => Ok(version.unwrap_or_else(|| "unknown".into())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("loading panicked inside ort".into()),
    }
}

/// Refuses releases older than [`ONNXRUNTIME_OLDEST_SUPPORTED`], naming the version.
pub(crate) fn check_supported(version: &str) -> std::result::Result<(), String> {
    let mut parts = version.split('.').map(|p| p.trim().parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return Err(format!("its version string {version:?} is not MAJOR.MINOR.PATCH"));
    };
    let (min_major, min_minor) = ONNXRUNTIME_OLDEST_SUPPORTED;
    if (major, minor) < (min_major, min_minor) {
        return Err(format!(
            "it is ONNX Runtime {version}, older than {min_major}.{min_minor}, the oldest release Kiln supports \
             (1.22 aborts the process when it creates a session)"
        ));
    }
    Ok(())
}

/// Reads the version string through the library's own `OrtGetApiBase`.
fn version_of(path: &Path) -> Option<String> {
    #[repr(C)]
    struct ApiBase {
        get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
        get_version_string: unsafe extern "C" fn() -> *const std::ffi::c_char,
    }
    // SAFETY: loading runs the library's initializers, as ort's own load would;
    // OrtGetApiBase and GetVersionString are stable since ORT 1.0.
    unsafe {
        let lib = libloading::Library::new(path).ok()?;
        let get: libloading::Symbol<unsafe extern "C" fn() -> *const ApiBase> = lib.get(b"OrtGetApiBase").ok()?;
        let base = get();
        if base.is_null() {
            return None;
        }
        let s = ((*base).get_version_string)();
        if s.is_null() {
            return None;
        }
        Some(std::ffi::CStr::from_ptr(s).to_string_lossy().into_owned())
    }
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir().map(|d| d.join(p)).unwrap_or_else(|_| p.to_path_buf())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The folder holding the binary Kiln's code is in (libkiln.so when used as a
/// shared library, the executable when linked statically).
fn own_library_dir() -> Option<PathBuf> {
    #[cfg(unix)]
    {
        // SAFETY: dladdr only reads loader tables; the address is a function of ours.
        unsafe {
            let mut info: libc::Dl_info = std::mem::zeroed();
            let addr = own_library_dir as *const std::ffi::c_void;
            if libc::dladdr(addr, &mut info) != 0 && !info.dli_fname.is_null() {
                let name = std::ffi::CStr::from_ptr(info.dli_fname).to_string_lossy().into_owned();
                let path = absolute(Path::new(&name));
                return path.parent().map(Path::to_path_buf);
            }
        }
        None
    }
    #[cfg(windows)]
    {
        // The module (kiln.dll, or the executable when linked statically) that
        // holds this function: an engine's executable usually lives elsewhere.
        use std::os::windows::ffi::OsStringExt;
        const FROM_ADDRESS: u32 = 0x4;
        const UNCHANGED_REFCOUNT: u32 = 0x2;
        #[link(name = "kernel32")]
        extern "system" {
            fn GetModuleHandleExW(flags: u32, name: *const u16, module: *mut *mut std::ffi::c_void) -> i32;
            fn GetModuleFileNameW(module: *mut std::ffi::c_void, name: *mut u16, size: u32) -> u32;
        }
        // SAFETY: both calls only read loader tables and write into our buffers.
        unsafe {
            let mut module = std::ptr::null_mut();
            let addr = own_library_dir as *const u16;
            if GetModuleHandleExW(FROM_ADDRESS | UNCHANGED_REFCOUNT, addr, &mut module) == 0 {
                return None;
            }
            let mut buf = vec![0u16; 32768];
            let len = GetModuleFileNameW(module, buf.as_mut_ptr(), buf.len() as u32) as usize;
            if len == 0 || len >= buf.len() {
                return None;
            }
            let path = PathBuf::from(std::ffi::OsString::from_wide(&buf[..len]));
            path.parent().map(Path::to_path_buf)
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        std::env::current_exe().ok().and_then(|p| p.parent().map(Path::to_path_buf))
    }
}

#[cfg(test)]
mod tests {
    use super::check_supported;

    #[test]
    fn version_gate() {
        for ok in ["1.23.0", "1.23.2", "1.31.1", "1.100.0", "2.0.0"] {
            assert!(check_supported(ok).is_ok(), "{ok}");
        }
        for old in ["1.22.1", "1.22.0", "1.9.0", "0.99.0"] {
            let why = check_supported(old).unwrap_err();
            assert!(why.contains(old) && why.contains("1.23"), "{why}");
        }
        assert!(check_supported("garbage").is_err());
    }
}
