//! The Python binding's pytest suite (bindings/python/tests), run against the
//! libkiln built for this test run: the API, the job API, the ABI tables, and
//! the wheel from build_wheel.py installed offline into a fresh venv. Needs
//! numpy, Pillow, pytest, setuptools and wheel for `$KILN_PYTHON` (default
//! python3): where it lacks them, pip installs them into target/python-test-deps
//! first (common::programs::skipped). `KILN_SKIP_BINDINGS=python` skips it.
mod common;

use common::programs::{command, lib_path, python, run_limited, skipped, transcript};

#[test]
fn pytest_suite_passes() {
    if skipped("python") {
        return;
    }
    let py = python();
    let out = run_limited(
        command(&py)
            .args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "bindings/python/tests"])
            .current_dir(common::root())
            .env("KILN_LIBRARY", lib_path())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env_remove("KILN_TEST_INSTALLED"),
        900,
    );
    let text = transcript(&out);
    println!("{text}");
    // pytest exits 0 only when tests ran and all passed (5 = none collected).
    assert!(out.status.success(), "pytest failed (exit {:?}):\n{text}", out.status.code());
    assert!(text.contains(" passed"), "{text}");
}
