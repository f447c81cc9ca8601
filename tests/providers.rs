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

/// A GPU memory cap a job outgrows: the job fails with OUT_OF_MEMORY and a
/// message (never an abort), and the same runtime and model then complete a
/// smaller job. Needs a CUDA GPU; tools/gpu_check.sh runs it with `--ignored`.
#[test]
#[ignore = "needs a CUDA GPU and ONNX Runtime's CUDA provider (tools/gpu_check.sh runs it)"]
fn gpu_out_of_memory_is_a_status_and_a_smaller_job_then_runs() {
    let cuda = [kiln_provider::Cuda as u32];
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.providers = cuda.as_ptr();
    o.providers_len = 1;
    o.require_provider = 1;
    o.gpu_math = kiln_gpu_math::Exact as u32;
    // Each session's arena: plenty for tiny-sd's weights and a 256x256 job, far
    // too little for self-attention over a 2048x2048 job's 65536 latent pixels.
    o.gpu_memory_limit = 256 << 20;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::Ok, "{}", last_error());
    let (s, m) = load(rt);
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    let unet = graph_provider(m, kiln_graph::Unet as u32);
    println!("U-Net runs on: {unet}");
    assert!(unet.starts_with("CUDAExecutionProvider [gpu math exact"), "{unet}");

    let generate = |side: u32| {
        let mut g = unsafe { std::mem::zeroed::<kiln_generate_options>() };
        unsafe { kiln_generate_options_init(&mut g) };
        let prompt = CString::new("mossy stone").unwrap();
        g.prompt = prompt.as_ptr();
        g.width = side;
        g.height = side;
        g.steps = 1;
        let mut image = ptr::null_mut();
        let s = unsafe { kiln_model_generate(m, &g, &mut image) };
        let message = last_error();
        unsafe { kiln::ffi::image::kiln_image_free(image) };
        (s, message)
    };
    let (s, message) = generate(2048);
    println!("2048x2048 under a 256 MiB cap: {s:?} {message}");
    assert_eq!(s, kiln_status::OutOfMemory, "{message}");
    assert!(message.contains("out of memory"), "{message}");
    for _ in 0..2 {
        let (s, message) = generate(256);
        assert_eq!(s, kiln_status::Ok, "the runtime recovers for a smaller job: {message}");
    }
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}
