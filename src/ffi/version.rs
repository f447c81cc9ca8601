//! Library version at run time (the header has the compile-time macros).
use std::ffi::c_char;

/// Kiln's version as `(major << 16) | (minor << 8) | patch`; compare with the
/// header's `KILN_VERSION` to detect a header/library mismatch.
#[no_mangle]
pub extern "C" fn kiln_version() -> u32 {
    boundary_value!(0, {
        let part = |s: &str| s.parse::<u32>().unwrap_or(0);
        (part(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
            | (part(env!("CARGO_PKG_VERSION_MINOR")) << 8)
            | part(env!("CARGO_PKG_VERSION_PATCH"))
    })
}

/// Kiln's version as a static string such as `"0.1.0"`. Never free it.
#[no_mangle]
pub extern "C" fn kiln_version_string() -> *const c_char {
    boundary_value!(c"".as_ptr(), { concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast() })
}
