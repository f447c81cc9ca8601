//! Execution providers through the C API on a CPU-only machine: what is
//! compiled in and present is reported, a requested GPU provider that cannot
//! be used falls back to the CPU with the reason recorded per graph, or fails
//! loudly when the caller requires it.
mod common;

use std::ffi::{c_char, CStr, CString};
use std::ptr;

use kiln::ffi::kiln_status;
use kiln::ffi::model::*;
use kiln::ffi::provider::*;
use kiln::ffi::runtime::*;

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn runtime_with(providers: &[u32], require: bool) -> (kiln_status, *mut kiln_runtime) {
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.providers = providers.as_ptr();
    o.providers_len = providers.len();
    o.require_provider = require as u32;
    let mut rt = ptr::null_mut();
    let s = unsafe { kiln_runtime_create(&o, &mut rt) };
    (s, rt)
}

fn load(rt: *mut kiln_runtime) -> (kiln_status, *mut kiln_model) {
    let dir = CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    let s = unsafe { kiln_model_load(rt, dir.as_ptr(), &mut m) };
    (s, m)
}

fn graph_provider(m: *const kiln_model, graph: u32) -> String {
    let mut buf = vec![0 as c_char; 1024];
    assert_eq!(unsafe { kiln_model_graph_provider(m, graph, buf.as_mut_ptr(), buf.len(), ptr::null_mut()) }, kiln_status::Ok);
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

#[test]
fn compiled_and_available_providers_are_reported() {
    let mask = kiln_providers_compiled();
    assert_eq!(mask & 1, 1, "the CPU is always there");
    assert_eq!(mask & 2 != 0, cfg!(feature = "cuda"));
    let (s, rt) = runtime_with(&[], false);
    assert_eq!(s, kiln_status::Ok);
    let mut has = 7u32;
    assert_eq!(unsafe { kiln_runtime_provider_available(rt, kiln_provider::Cpu as u32, &mut has) }, kiln_status::Ok);
    assert_eq!(has, 1);
    assert_eq!(unsafe { kiln_runtime_provider_available(rt, 99, &mut has) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_runtime_provider_available(rt, 1, ptr::null_mut()) }, kiln_status::NullArgument);
    let (s, m) = load(rt);
    assert_eq!(s, kiln_status::Ok);
    assert_eq!(graph_provider(m, kiln_graph::Unet as u32), "CPUExecutionProvider");
    assert_eq!(unsafe { kiln_model_graph_provider(m, 9, ptr::null_mut(), 0, ptr::null_mut()) }, kiln_status::InvalidArgument);
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}

#[cfg(not(feature = "cuda"))]
#[test]
fn unusable_gpu_provider_falls_back_with_a_reason_or_fails_loudly() {
    let cuda = [kiln_provider::Cuda as u32, kiln_provider::Cpu as u32];
    let (s, rt) = runtime_with(&cuda, false);
    assert_eq!(s, kiln_status::Ok);
    let (s, m) = load(rt);
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    for g in [kiln_graph::TextEncoder, kiln_graph::Unet, kiln_graph::VaeDecoder] {
        let text = graph_provider(m, g as u32);
        assert!(text.starts_with("CPUExecutionProvider (CUDAExecutionProvider: not compiled"), "{text}");
    }
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };

    let (s, rt) = runtime_with(&cuda[..1], true);
    assert_eq!(s, kiln_status::Ok);
    let (s, m) = load(rt);
    assert_eq!(s, kiln_status::ProviderUnavailable);
    assert!(m.is_null());
    assert!(last_error().contains("CUDAExecutionProvider"), "{}", last_error());
    // The runtime is still usable with a CPU-only request.
    unsafe { kiln_runtime_destroy(rt) };
    let (s, rt) = runtime_with(&[kiln_provider::Cpu as u32], true);
    assert_eq!(s, kiln_status::Ok);
    let (s, m) = load(rt);
    assert_eq!(s, kiln_status::Ok, "asking for the CPU alone is satisfiable");
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn bad_provider_lists_are_rejected() {
    let (s, rt) = runtime_with(&[42], false);
    assert_eq!(s, kiln_status::InvalidArgument);
    assert!(rt.is_null());
    assert!(last_error().contains("42"));
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.providers_len = 2;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::NullArgument);
}
