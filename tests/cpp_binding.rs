//! The C++ binding's tests (bindings/cpp/tests/*.cpp): compiled with g++ (and
//! clang++ when present) as `-std=c++17 -Wall -Wextra -Wpedantic -Werror`
//! against include/kiln.h, bindings/cpp/kiln.hpp and the libkiln built for this
//! run, then run on the tiny fixture (and its ControlNet, tests/fixtures/controlnet; tiny-sdxl with the
//! SDXL embedding and refiner goldens, whose margins are reported here and whose pixels must equal the
//! C API's for the same requests). `KILN_SKIP_BINDINGS=cpp` skips them.
mod common;

use common::binding_goldens;
use common::programs::{command, lib_path, run_limited, scratch, skipped, soname_dir, transcript};
use std::path::PathBuf;

const STRICT: [&str; 5] = ["-std=c++17", "-Wall", "-Wextra", "-Wpedantic", "-Werror"];

fn compilers() -> Vec<&'static str> {
    // skipped("cpp"), called first, has made sure g++ is here; clang++ runs where installed.
    let present = |c: &str| std::process::Command::new(c).arg("--version").output().is_ok_and(|o| o.status.success());
    ["g++", "clang++"].into_iter().filter(|c| present(c)).collect()
}

fn compile(compiler: &str, source: &str, extra: &[&str]) -> PathBuf {
    let root = common::root();
    let lib = lib_path();
    let stem = std::path::Path::new(source).file_stem().unwrap().to_string_lossy().to_string();
    let bin = scratch("cpp").join(format!("{stem}-{compiler}"));
    let out = command(compiler)
        .args(STRICT)
        .args(extra)
        .arg("-I")
        .arg(root.join("include"))
        .arg("-I")
        .arg(root.join("bindings/cpp"))
        .arg(root.join(source))
        .arg("-o")
        .arg(&bin)
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", soname_dir().display()))
        .arg(format!("-Wl,-rpath,{}", lib.parent().unwrap().display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(out.status.success(), "{compiler} {source} failed:\n{}", transcript(&out));
    bin
}

#[test]
fn cpp_tests_pass_under_each_compiler() {
    if skipped("cpp") {
        return;
    }
    let refiner = common::sdxl_refiner_folder("cpp");
    // The C API's pixels for the SDXL embedding and hand-off requests the tests also make.
    let expected = [
        ("sdxl-embedding.rgba", binding_goldens::sdxl_embedding_rgba()),
        ("sdxl-handoff.rgba", binding_goldens::sdxl_handoff_rgba(&refiner)),
    ];
    for compiler in compilers() {
        // AddressSanitizer with leak detection: the RAII handles must free everything.
        let bin = compile(compiler, "bindings/cpp/tests/test_kiln.cpp", &["-g", "-fsanitize=address", "-fno-omit-frame-pointer"]);
        let out_dir = scratch("cpp").join(format!("out-{compiler}"));
        std::fs::create_dir_all(&out_dir).unwrap();
        let out = run_limited(
            command(&bin)
                .arg(common::fixture())
                .arg(common::controlnet_folder(&format!("cpp-{compiler}")))
                .arg(&refiner)
                .arg(&out_dir)
                .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0"),
            300,
        );
        let text = transcript(&out);
        println!("{compiler}:\n{text}");
        assert!(out.status.success(), "test_kiln ({compiler}) failed:\n{text}");
        assert!(text.contains(" passed, 0 failed"), "{text}");
        assert!(!text.contains("ERROR: AddressSanitizer") && !text.contains("ERROR: LeakSanitizer"), "{text}");
        binding_goldens::check_binding_margins(
            &text,
            &["cpp_binding::sdxl_embedding::xl_embedding_euler::image_abs_past_8bit", "cpp_binding::sdxl_handoff::euler_08::image_abs_past_8bit"],
        );
        for (file, want) in &expected {
            let got = std::fs::read(out_dir.join(file)).unwrap_or_else(|e| panic!("test_kiln ({compiler}) writes {file}: {e}"));
            let differing = binding_goldens::count_differing(want, &got);
            println!("C++ ({compiler}) {file} vs C API: {differing} of {} bytes differ (bound: 0)", want.len());
            assert_eq!(differing, 0, "{file}");
        }
    }
}

#[test]
fn cpp_binding_needs_no_exceptions() {
    if skipped("cpp") {
        return;
    }
    for compiler in compilers() {
        let bin = compile(compiler, "bindings/cpp/tests/no_exceptions.cpp", &["-fno-exceptions"]);
        let out = run_limited(&mut command(&bin), 120);
        assert!(out.status.success(), "no_exceptions ({compiler}) failed:\n{}", transcript(&out));
    }
}
