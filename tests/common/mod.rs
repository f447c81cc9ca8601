//! Shared test helpers: one ONNX Runtime per test process, fixture paths.
#![allow(dead_code)]
use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::{Model, Runtime, RuntimeOptions};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture() -> PathBuf {
    root().join("tests/fixtures/tiny-sd")
}

pub fn golden(name: &str) -> PathBuf {
    root().join("tests/fixtures/golden").join(name)
}

/// One runtime per test process. Spinning is off (Kiln's default), so test
/// threads running graphs at once do not fight over the two cores.
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime must load for the tests"))
}

pub fn tiny_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(runtime(), &fixture()).expect("tiny fixture loads"))
}

pub fn read_npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    kiln::image::npy::read_f32(&golden(name)).expect("golden file")
}

/// max |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
