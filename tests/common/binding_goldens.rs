//! What the binding suites (C#, C++) check at run time against the SDXL goldens,
//! seen from Rust: the C API's own RGBA8 pixels for the same requests (the
//! embedding case of tests/sdxl_embedding.rs and the `euler_08` hand-off of
//! tests/sdxl_handoff.rs), and the margins the binding programs print.
use std::ffi::CString;
use std::path::Path;
use std::ptr;

use kiln::ffi::lora::*;
use kiln::ffi::model::*;
use kiln::ffi::runtime::*;
use kiln::ffi::kiln_status;

use super::{ffi_case_options as options, ffi_load_model as load};

fn generate(model: *const kiln_model, o: &kiln_generate_options) -> Vec<u8> {
    let mut rgba = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(model, o, rgba.as_mut_ptr(), rgba.len(), 0) }, kiln_status::Ok);
    rgba
}

/// The C API's pixels for tests/fixtures/sdxl-embedding's case on tiny-sdxl
/// with its embedding applied by `kiln_model_with_adapters`.
pub fn sdxl_embedding_rgba() -> Vec<u8> {
    let dir = super::root().join("tests/fixtures/sdxl-embedding");
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let c = &cases[0];
    let name = c["name"].as_str().unwrap();
    let draws = kiln::image::npy::read_f32(&dir.join(format!("{name}.draws.npy"))).unwrap().1;
    unsafe {
        let mut rt = ptr::null_mut();
        assert_eq!(kiln_runtime_create(ptr::null(), &mut rt), kiln_status::Ok);
        let base = load(rt, &super::root().join("tests/fixtures/tiny-sdxl"));
        let file = CString::new(dir.join(c["file"].as_str().unwrap()).to_str().unwrap()).unwrap();
        let token = CString::new(c["token"].as_str().unwrap()).unwrap();
        let mut e = std::mem::zeroed::<kiln_embedding>();
        kiln_embedding_init(&mut e);
        (e.path, e.token) = (file.as_ptr(), token.as_ptr());
        let mut embedded = ptr::null_mut();
        assert_eq!(kiln_model_with_adapters(base, ptr::null(), 0, &e, 1, &mut embedded), kiln_status::Ok);
        let mut keep = Vec::new();
        let rgba = generate(embedded, &options(c, &draws, &mut keep));
        kiln_model_free(embedded);
        kiln_model_free(base);
        kiln_runtime_destroy(rt);
        rgba
    }
}

/// The C API's pixels for tests/sdxl_handoff.rs's `euler_08` case: tiny-sdxl
/// handing off to the refiner-style model in `refiner_dir`.
pub fn sdxl_handoff_rgba(refiner_dir: &Path) -> Vec<u8> {
    let c = super::golden_case(&super::golden("sdxl_handoff/cases.json"), "euler_08");
    let (_, draws) = super::read_npy("sdxl_handoff/euler_08.draws.npy");
    unsafe {
        let mut rt = ptr::null_mut();
        assert_eq!(kiln_runtime_create(ptr::null(), &mut rt), kiln_status::Ok);
        let base = load(rt, &super::root().join("tests/fixtures/tiny-sdxl"));
        let refiner = load(rt, refiner_dir);
        let mut keep = Vec::new();
        let mut o = options(&c, &draws, &mut keep);
        o.refiner = refiner;
        o.refiner_start = c["refiner_start"].as_f64().unwrap() as f32;
        let rgba = generate(base, &o);
        kiln_model_free(refiner);
        kiln_model_free(base);
        kiln_runtime_destroy(rt);
        rgba
    }
}

/// Reports every `MARGIN <id> <measured> <bound>` line a binding program
/// printed through [`super::check_margin`], and checks that each of `expected`
/// was among them (so a test that silently stopped measuring fails).
pub fn check_binding_margins(log: &str, expected: &[&str]) {
    let mut seen = Vec::new();
    for line in log.lines().filter_map(|l| l.trim().strip_prefix("MARGIN ")) {
        let parts: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(parts.len(), 3, "malformed margin line: MARGIN {line}");
        let (measured, bound): (f64, f64) = (parts[1].parse().unwrap(), parts[2].parse().unwrap());
        super::check_margin(parts[0], measured, bound);
        seen.push(parts[0].to_string());
    }
    for id in expected {
        assert!(seen.iter().any(|s| s == id), "the binding's tests printed no margin {id}; they printed {seen:?}");
    }
}

/// How many bytes differ between two pixel buffers of the same length.
pub fn count_differing(a: &[u8], b: &[u8]) -> usize {
    assert_eq!(a.len(), b.len(), "pixel buffers differ in length");
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}
