//! Build script: kept small on purpose (STYLE 18). It writes only under OUT_DIR.
//!
//! Unless opted out (`KILN_FETCH_ORT=0`), it runs the project's setup script
//! `tools/fetch_onnxruntime.py`, which takes the pinned runtime from its PyPI
//! wheel (`KILN_ORT_PACKAGE=onnxruntime-gpu` for CUDA/TensorRT), the target's
//! wheel when cross-building (`win_amd64` for `x86_64-pc-windows-gnu`). The library
//! records that path as its last-resort search location (after the caller's
//! path, `ORT_DYLIB_PATH` and the folder holding libkiln), so
//! `cargo run --example generate` and `cargo test` work on a fresh machine.
//! A failed fetch is a warning, never a build error: the runtime then reports
//! every path it tried.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=tools/fetch_onnxruntime.py");
    println!("cargo:rerun-if-env-changed=KILN_FETCH_ORT");
    println!("cargo:rerun-if-env-changed=KILN_PYTHON");
    println!("cargo:rerun-if-env-changed=KILN_ORT_PACKAGE");

    // kiln-bake's block compressor (intel_tex_2) links prebuilt ISPC kernels
    // whose ASTC part is C++, so the binaries name the C++ runtime (the
    // library itself never links them).
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux-gnu") || target.contains("android") {
        println!("cargo:rustc-link-arg-bins=-lstdc++");
    } else if target.contains("apple") {
        println!("cargo:rustc-link-arg-bins=-lc++");
    }
    // ELF targets: the shared library is `libkiln.so.<major>` to the dynamic
    // loader, so a release with a breaking ABI can sit beside an older one.
    if std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux" || os == "android") {
        let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets the version");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libkiln.so.{major}");
    }

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // The header travels with the crate so dependants can find it (`DEP_KILN_INCLUDE`).
    let include = out_dir.join("include");
    let _ = std::fs::create_dir_all(&include);
    let _ = std::fs::copy("include/kiln.h", include.join("kiln.h"));
    println!("cargo:include={}", include.display());

    ispc_kernels(&out_dir);

    let mut fetched = String::new();
    if std::env::var("KILN_FETCH_ORT").map(|v| v != "0").unwrap_or(true) {
        let python = std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into());
        // onnxruntime (CPU, default), onnxruntime-gpu (CUDA/TensorRT) or
        // onnxruntime-directml (Windows), matching the cargo features in use.
        let package = std::env::var("KILN_ORT_PACKAGE").unwrap_or_else(|_| "onnxruntime".into());
        let dest = out_dir.join("onnxruntime").join(&package);
        let mut fetch = Command::new(&python);
        fetch.arg("tools/fetch_onnxruntime.py").arg("--dest").arg(&dest).arg("--package").arg(&package);
        // Cross-building: the runtime must be the target's, not the build machine's.
        if std::env::var("TARGET").ok() != std::env::var("HOST").ok() {
            fetch.arg("--platform").arg(wheel_platform());
        }
        match fetch.output() {
            Ok(out) if out.status.success() => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                fetched = stdout.lines().last().unwrap_or("").trim().to_string();
            }
            Ok(out) => println!(
                "cargo:warning=could not fetch ONNX Runtime ({}); set ORT_DYLIB_PATH or pass a path at runtime creation",
                String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("unknown error")
            ),
            Err(e) => println!("cargo:warning=could not run {python} to fetch ONNX Runtime: {e}"),
        }
    }
    println!("cargo:rustc-env=KILN_SETUP_ORT_PATH={fetched}");
}

/// The PyPI wheel platform tag of the target (the fetch script rejects "unknown").
fn wheel_platform() -> String {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    match (os.as_str(), arch.as_str()) {
        ("windows", "x86_64") => "win_amd64".into(),
        ("windows", "aarch64") => "win_arm64".into(),
        ("linux", "x86_64") => "manylinux_2_28_x86_64".into(),
        ("linux", "aarch64") => "manylinux_2_28_aarch64".into(),
        ("macos", "aarch64") => "macosx_13_0_arm64".into(),
        _ => "unknown".into(),
    }
}

/// kiln-bake's block-compression kernels (`src/bin/kiln-bake/ispc.rs`): sets
/// `kiln_ispc_kernels` where they link. `intel_tex_2` links them everywhere
/// but MinGW, for which it ships no library under a MinGW name; there its
/// MSVC library (COFF objects that need nothing from the C runtime but
/// `memcpy`) is linked instead, found in `KILN_ISPC_KERNEL_LIB` or in cargo's
/// registry copy of the `intel_tex_2` that Cargo.lock names. Not found: a
/// warning, and kiln-bake refuses DDS with a message.
fn ispc_kernels(out_dir: &std::path::Path) {
    println!("cargo::rustc-check-cfg=cfg(kiln_ispc_kernels)");
    println!("cargo:rerun-if-env-changed=KILN_ISPC_KERNEL_LIB");
    let var = |k: &str| std::env::var(k).unwrap_or_default();
    if !(var("CARGO_CFG_TARGET_OS") == "windows" && var("CARGO_CFG_TARGET_ENV") == "gnu") {
        println!("cargo:rustc-cfg=kiln_ispc_kernels");
        return;
    }
    let arch = var("CARGO_CFG_TARGET_ARCH");
    let file = format!("kernel{arch}-pc-windows-msvc.lib");
    let found = std::env::var_os("KILN_ISPC_KERNEL_LIB").map(PathBuf::from).or_else(|| {
        let version = std::fs::read_to_string("Cargo.lock").ok().and_then(|lock| {
            let entry = lock.split("[[package]]").find(|p| p.contains("name = \"intel_tex_2\""))?.to_string();
            let line = entry.lines().find(|l| l.starts_with("version = "))?;
            Some(line.trim_start_matches("version = ").trim_matches('"').to_string())
        })?;
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")).map(|h| PathBuf::from(h).join(".cargo")))?;
        let registries = std::fs::read_dir(home.join("registry").join("src")).ok()?;
        registries
            .flatten()
            .map(|r| r.path().join(format!("intel_tex_2-{version}")).join("src").join("ispc").join(&file))
            .find(|p| p.is_file())
    });
    match found.filter(|p| p.is_file()) {
        Some(lib) => {
            println!("cargo:rerun-if-changed={}", lib.display());
            // GNU ld reads the archive whatever its name; rustc looks for lib<name>.a.
            match std::fs::copy(&lib, out_dir.join("libkiln_ispc_kernels.a")) {
                Ok(_) => {
                    println!("cargo:rustc-link-search=native={}", out_dir.display());
                    println!("cargo:rustc-cfg=kiln_ispc_kernels");
                }
                Err(e) => println!("cargo:warning=cannot copy {}: {e}; kiln-bake will refuse DDS", lib.display()),
            }
        }
        None => println!(
            "cargo:warning=no ISPC kernel library ({file}) for this MinGW build: kiln-bake will refuse DDS (set KILN_ISPC_KERNEL_LIB to intel_tex_2's copy)"
        ),
    }
}
