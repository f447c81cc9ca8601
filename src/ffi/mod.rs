//! The C ABI: the only module with `#[no_mangle]`. `include/kiln.h` is generated
//! from these files by cbindgen (see `tests/header.rs`).
//!
//! Every exported function runs inside one of the boundary macros of
//! `boundary`, which catch panics and turn errors into a `kiln_status` plus a
//! thread-local message; a test checks that none is missing.
#![allow(non_camel_case_types)]
// The pointer contract of every export is stated once, in the header's
// opening comment and each function's doc, rather than per function.
#![allow(clippy::missing_safety_doc)]

#[macro_use]
mod boundary;
mod handles;
pub mod control;
pub mod image;
pub mod job;
pub mod lora;
pub mod provider;
pub mod model;
pub mod postprocess;
#[cfg(test)]
mod pointer_checks;
pub mod runtime;
pub mod seamless;
pub mod status;
pub mod texture;
pub mod upscale;
pub mod version;

pub use self::boundary::kiln_last_error_message;
pub use self::status::kiln_status;
