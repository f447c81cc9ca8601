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

/// A model variant of tests/fixtures/variants assembled into a plain model
/// folder, as tests/variants.rs and tools/make_variant_fixtures.py assemble
/// it: tiny-sd's `from_base` files (variant.json), then the variant's own.
pub fn variant_folder(name: &str) -> PathBuf {
    let vdir = root().join("tests/fixtures/variants").join(name);
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vdir.join("variant.json")).expect("variant.json")).unwrap();
    let base = vdir.join(spec["base"].as_str().unwrap());
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-common-variants").join(name);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let copy = |from: &std::path::Path, rel: &str| {
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    };
    for rel in spec["from_base"].as_array().unwrap() {
        let rel = rel.as_str().unwrap();
        copy(&base.join(rel), rel);
    }
    let mut stack = vec![vdir.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(&vdir).unwrap().to_string_lossy().replace('\\', "/");
            if p.is_dir() {
                stack.push(p);
            } else if rel != "variant.json" && rel != "README.md" {
                copy(&p, &rel);
            }
        }
    }
    dest
}

pub fn read_npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    kiln::image::npy::read_f32(&golden(name)).expect("golden file")
}

/// max |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}
