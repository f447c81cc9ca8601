//! The Python binding's pytest suite (bindings/python/tests), run against the
//! libkiln built for this test run: the API, the job API, the ABI tables, and
//! the wheel from build_wheel.py installed offline into a fresh venv. Needs
//! numpy, Pillow, pytest, setuptools and wheel for `$KILN_PYTHON` (default
//! python3); .ci/run installs them. `KILN_SKIP_BINDINGS=python` skips it.
mod common;

use common::programs::{command, lib_path, run_limited, skipped, transcript};

fn python() -> String {
    std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn pytest_suite_passes() {
    if skipped("python") {
        return;
    }
    let py = python();
    let probe = command(&py).args(["-c", "import numpy, PIL, pytest, setuptools, wheel"]).output();
    assert!(
        probe.as_ref().is_ok_and(|o| o.status.success()),
        "{py} lacks numpy, Pillow, pytest, setuptools or wheel: `{py} -m pip install numpy pillow pytest setuptools wheel` \
         (or KILN_SKIP_BINDINGS=python):\n{}",
        probe.map(|o| transcript(&o)).unwrap_or_else(|e| e.to_string())
    );
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
