//! The C examples are tests: each is compiled with the target's C compiler
//! against include/kiln.h and the freshly built Kiln shared library (through its
//! import library on Windows), then run.
//!
//! The compiler is `cc` (Unix), `gcc` (MinGW) or `cl` (MSVC), or `KILN_TEST_CC`.
//! When cross-testing (Windows binaries under Wine, `tools/windows_ci.sh`),
//! `KILN_TEST_C_PREBUILT=DIR` names a folder of examples already built with the
//! target's compiler on the build machine, which the tests run instead.
mod common;

use std::path::PathBuf;
use std::process::Command;

use common::programs::run_limited;

/// Compiler flags for every C program on Linux: AddressSanitizer (leak
/// detection on) and UndefinedBehaviorSanitizer, so each example and C test
/// also proves that Kiln leaks nothing and the C side makes no invalid access.
/// Elsewhere none: MinGW has no sanitizers, and macOS's leak checker differs.
const SANITIZE: &[&str] = if cfg!(target_os = "linux") {
    &["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined", "-fno-omit-frame-pointer", "-g", "-pthread"]
} else {
    &[]
};

/// Runs a C program and fails on any sanitizer report. Reports exit with 86,
/// which no program here uses, so a test that expects exit code 1 still sees one.
fn run_checked(cmd: &mut Command, secs: u64) -> std::process::Output {
    let out = run_limited(
        cmd.env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:exitcode=86")
            .env("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1:exitcode=86"),
        secs,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("ERROR: AddressSanitizer") && !stderr.contains("ERROR: LeakSanitizer") && !stderr.contains("runtime error:"),
        "sanitizer report:\n{stderr}"
    );
    assert_ne!(out.status.code(), Some(86), "sanitizer exit:\n{stderr}");
    out
}

/// The shared library cargo builds.
fn lib_name() -> &'static str {
    if cfg!(windows) {
        "kiln.dll"
    } else if cfg!(target_os = "macos") {
        "libkiln.dylib"
    } else {
        "libkiln.so"
    }
}

/// What a C program links against: the import library on Windows.
fn link_file() -> &'static str {
    if cfg!(all(windows, target_env = "msvc")) {
        "kiln.dll.lib"
    } else if cfg!(windows) {
        "libkiln.dll.a"
    } else {
        lib_name()
    }
}

fn c_compiler() -> String {
    std::env::var("KILN_TEST_CC").unwrap_or_else(|_| {
        if cfg!(all(windows, target_env = "msvc")) {
            "cl".into()
        } else if cfg!(windows) {
            "gcc".into()
        } else {
            "cc".into()
        }
    })
}

/// Where cargo put the cdylib built for this test run: target/<profile>/deps/
/// (beside the test executable), or target/<profile>/ after a `cargo build`.
fn lib_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    if deps.join(lib_name()).exists() {
        deps
    } else {
        deps.parent().unwrap().to_path_buf()
    }
}

/// Builds each example once per test process (tests run in parallel threads).
fn build_c(example: &'static str) -> PathBuf {
    build_source(example, &format!("examples/c/{example}.c"), SANITIZE)
}

fn build_source(name: &'static str, source: &str, extra: &[&str]) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&'static str, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    // A failed build panics while holding the lock; the other tests still build theirs.
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, p)) = built.iter().find(|(n, _)| *n == name) {
        return p.clone();
    }
    let p = compile_c(name, source, extra);
    built.push((name, p.clone()));
    p
}

fn compile_c(example: &str, source: &str, extra: &[&str]) -> PathBuf {
    if let Some(dir) = std::env::var_os("KILN_TEST_C_PREBUILT") {
        let bin = PathBuf::from(dir).join(example).with_extension(std::env::consts::EXE_EXTENSION);
        assert!(bin.is_file(), "KILN_TEST_C_PREBUILT has no {}", bin.display());
        return bin;
    }
    let out_dir = std::env::temp_dir().join(format!("kiln-c-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let bin = out_dir.join(example).with_extension(std::env::consts::EXE_EXTENSION);
    let lib = lib_dir();
    assert!(lib.join(link_file()).exists(), "{} not found in {}", link_file(), lib.display());
    let cc = c_compiler();
    let mut cmd = Command::new(&cc);
    if cc.ends_with("cl") || cc.ends_with("cl.exe") {
        // MSVC: untried here (no MSVC on the CI machine); the flags are cl's.
        cmd.args(["/nologo", "/W4", "/WX", "/O1"]).arg("/I").arg(common::root().join("include"));
        cmd.arg(common::root().join(source)).arg(format!("/Fe:{}", bin.display())).arg(lib.join(link_file()));
    } else {
        cmd.args(["-std=c99", "-Wall", "-Wextra", "-Wpedantic", "-Werror", "-O1"])
            .arg("-I")
            .arg(common::root().join("include"))
            .args(extra)
            .arg(common::root().join(source))
            .arg("-o")
            .arg(&bin)
            .arg("-L")
            .arg(&lib);
        #[cfg(target_os = "linux")]
        {
            // The program asks the loader for the SONAME, libkiln.so.<major>, which
            // cargo does not create: a link to this run's library stands in for it.
            let soname = out_dir.join(format!("libkiln.so.{}", env!("CARGO_PKG_VERSION_MAJOR")));
            let _ = std::fs::remove_file(&soname);
            std::os::unix::fs::symlink(lib.join(lib_name()), &soname).unwrap();
            cmd.arg(format!("-Wl,-rpath,{}", out_dir.display()));
        }
        #[cfg(all(unix, not(target_os = "linux")))]
        cmd.arg(format!("-Wl,-rpath,{}", lib.display()));
        cmd.arg("-lkiln");
    }
    let status = cmd.output().unwrap_or_else(|e| panic!("{cc} runs: {e}"));
    assert!(status.status.success(), "compiling {example}.c failed:\n{}", String::from_utf8_lossy(&status.stderr));
    bin
}

/// A command for a compiled example. cargo puts target/<profile> on
/// LD_LIBRARY_PATH, which outranks the binary's RUNPATH and can pick up a stale
/// libkiln from an earlier `cargo build`; the example must load the one built
/// for this test run.
fn c_program(bin: &std::path::Path) -> Command {
    let mut c = Command::new(bin);
    c.env_remove("LD_LIBRARY_PATH").env_remove("DYLD_LIBRARY_PATH");
    if cfg!(windows) {
        // Windows finds DLLs on PATH (there is no rpath): this run's kiln.dll first.
        let mut path = std::ffi::OsString::from(lib_dir());
        if let Some(old) = std::env::var_os("PATH") {
            path.push(";");
            path.push(old);
        }
        c.env("PATH", path);
    }
    c
}


#[test]
fn txt2img_writes_a_png() {
    let bin = build_c("txt2img");
    let png = bin.with_extension("png");
    let out = run_checked(c_program(&bin)
        .arg(common::fixture())
        .arg("mossy stone brick wall")
        .arg(&png), 300);
    assert!(out.status.success(), "txt2img failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let reader = decoder.read_info().unwrap();
    let info = reader.info();
    assert_eq!((info.width, info.height), (64, 64));
    assert_eq!(info.color_type, png::ColorType::Rgba);
}

#[test]
fn txt2img_reports_a_missing_model_by_name() {
    let bin = build_c("txt2img");
    let out = run_checked(c_program(&bin).arg("/nonexistent/model").arg("x").arg("/tmp/never.png"), 300);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KILN_STATUS_MODEL_NOT_FOUND") && err.contains("/nonexistent/model"), "{err}");
}

#[test]
fn async_poll_runs_the_frame_loop_and_cancels() {
    let bin = build_c("async_poll");
    let out = run_checked(c_program(&bin).arg(common::fixture()), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "async_poll failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("texture 64x64 ready") && stdout.contains("second job state 4"), "{stdout}");
    // The loading bar ends full, at the KiB of the three graphs the load opens.
    let total: u32 = ["text_encoder", "unet", "vae_decoder"].iter().map(|g| common::graph_kib(&common::fixture().join(g))).sum();
    assert!(stdout.contains(&format!("loading 100% ({total} of {total} KiB)")), "{stdout}");
}

/// examples/c/upscale_job.c: a seamless generation and its seamless 4x
/// upscale as one polled job (`kiln_job_submit_upscaled`) with every handle
/// freed right after submit, under the sanitizers. Its PNG equals the Rust API's generation through the
/// seamless view followed by `Upscaler::upscale` with the same options.
#[test]
fn upscale_job_generates_and_upscales_without_blocking() {
    use kiln::model::seamless::Seamless;
    use kiln::model::upscaler::{UpscaleOptions, Upscaler};
    let bin = build_c("upscale_job");
    let png = bin.with_extension("png");
    let upscaler = common::root().join("tests/fixtures/upscaler/x4");
    let out = run_checked(c_program(&bin).arg(common::fixture()).arg(&upscaler).arg(&png), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "upscale_job failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    // The default scheduler (PNDM) makes 9 U-Net calls for 8 steps; then four tiles of 32 px.
    let counts: Vec<(u32, u32)> = stdout
        .lines()
        .filter_map(|l| l.split(", ").nth(1)?.split_once('/').and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?))))
        .collect();
    assert!(counts.windows(2).all(|w| w[0].0 <= w[1].0), "the count only goes up: {stdout}");
    assert!(counts.iter().any(|&(s, t)| (1..=9).contains(&s) && t == 13), "U-Net calls counted against 13: {stdout}");
    assert!(stdout.contains("state 2, 13/13"), "then the tiles, to the end: {stdout}");
    let request = kiln::GenerateRequest { prompt: "mossy cobblestone".into(), steps: 8, seed: 7, ..Default::default() };
    let tiled = common::tiny_model().seamless(Seamless::Xy).unwrap();
    let generated = tiled.generate(&request).unwrap().to_rgba8();
    let options = UpscaleOptions { tile: 32, seamless: Seamless::Xy, ..Default::default() };
    let expected = Upscaler::load(common::runtime(), &upscaler).unwrap().upscale(&generated, &options).unwrap();
    let (w, h, _, pixels) = common::png_samples(&png);
    assert_eq!((w, h), (256, 256));
    let differ = pixels.iter().zip(&expected.pixels).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "the C jobs give the Rust API's bytes");
}

#[test]
fn cancel_stops_a_running_generation_quickly() {
    let bin = build_c("cancel");
    let out = run_checked(c_program(&bin).arg(common::fixture()), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cancel failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("cancelled at step") && stdout.contains("of 900"), "{stdout}");
}

/// 8 threads x 50 jobs with random cancels and frees, under AddressSanitizer
/// (leak detection on) and UndefinedBehaviorSanitizer, no suppressions. Not on Windows: MinGW has no
/// AddressSanitizer and the test uses pthreads.
#[cfg(unix)]
#[test]
fn stress_jobs_under_sanitizers() {
    let bin = build_source(
        "stress",
        "tests/c/stress.c",
        SANITIZE,
    );
    let out = run_checked(c_program(&bin)
        .arg(common::fixture()), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stress failed:\n{stdout}{stderr}");
    assert!(!stderr.contains("ERROR: AddressSanitizer") && !stderr.contains("ERROR: LeakSanitizer"), "{stderr}");
    assert!(stdout.contains("mismatched 0, protocol errors 0"), "{stdout}");
}

#[test]
fn controlnet_generates_from_a_canny_edge_map() {
    let bin = build_c("controlnet");
    let png = bin.with_extension("png");
    let edges = bin.with_extension("edges.png");
    let model = common::controlnet_folder("c-example");
    let out = run_limited(c_program(&bin).arg(&model).arg("tiny").arg("mossy stone").arg(&png).arg(&edges), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "controlnet failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("wrote") && stdout.contains("still usable"), "{stdout}");
    assert!(stdout.contains("KILN_STATUS_MODEL_NOT_FOUND") && stdout.contains("no-such-controlnet"), "{stdout}");
    // The edge map holds edges: some white, mostly black.
    let mut reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&edges).unwrap())).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    let white = buf.chunks_exact(4).filter(|p| p[0] == 255).count();
    assert!(white > 50 && white < 64 * 64 / 4, "{white} edge pixels");
}

#[test]
fn sprite_cuts_out_with_a_matting_graph_or_reports_a_bad_one() {
    let bin = build_c("sprite");
    let png = bin.with_extension("png");
    let matting = common::root().join("tests/fixtures/matting/fixed");
    let out = run_checked(c_program(&bin).arg(common::fixture()).arg(&matting).arg("gem").arg(&png), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "sprite failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("matte: graph"), "{stdout}");
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut buf).unwrap();
    let px: Vec<&[u8]> = buf.chunks_exact(4).collect();
    assert!(px.iter().any(|p| p[3] == 0) && px.iter().any(|p| p[3] == 255), "a real cut-out");
    assert!(px.iter().all(|p| p[0] <= p[3] && p[1] <= p[3] && p[2] <= p[3]), "premultiplied");
    // Without a graph it keys; with a missing one the load names it.
    let out = run_checked(c_program(&bin).arg(common::fixture()).arg("-").arg("gem").arg(&png), 300);
    assert!(String::from_utf8_lossy(&out.stdout).contains("matte: key"));
    let out = run_checked(c_program(&bin).arg(common::fixture()).arg("/nonexistent/rmbg.onnx").arg("gem").arg(&png), 300);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("KILN_STATUS_MODEL_NOT_FOUND") && err.contains("/nonexistent/rmbg.onnx"), "{err}");
}

/// The hostile caller (tests/c/hostile.c): every argument a careless or
/// hostile engine could pass, each with its expected status, then a normal
/// generation on the same handles; under AddressSanitizer (leaks on) and
/// UndefinedBehaviorSanitizer (any report fails). Unix only: the sanitizers
/// and pthreads are not in MinGW (the Windows CI runs the examples only).
#[cfg(unix)]
#[test]
fn hostile_caller_gets_statuses_not_crashes() {
    let bin = build_source(
        "hostile",
        "tests/c/hostile.c",
        SANITIZE,
    );
    let out = run_checked(c_program(&bin)
        .arg(common::fixture()), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "hostile failed:\n{stdout}{stderr}");
    assert!(!stderr.contains("ERROR: AddressSanitizer") && !stderr.contains("ERROR: LeakSanitizer"), "{stderr}");
    assert!(!stderr.contains("runtime error:"), "UBSan: {stderr}");
    assert!(stdout.contains(", failed 0"), "{stdout}");
}

/// Lifetimes under concurrency (tests/c/lifetimes.c), 8 threads under
/// AddressSanitizer with leak detection: models freed while their jobs run,
/// the runtime destroyed while jobs run, job ids freed on one thread while
/// another polls them. Unix only, as the hostile caller.
#[cfg(unix)]
#[test]
fn lifetimes_under_concurrency_are_defined() {
    let bin = build_source(
        "lifetimes",
        "tests/c/lifetimes.c",
        SANITIZE,
    );
    let out = run_checked(c_program(&bin)
        .arg(common::fixture()), 300);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(out.status.success(), "lifetimes failed:\n{stdout}{stderr}");
    assert!(!stderr.contains("ERROR: AddressSanitizer") && !stderr.contains("ERROR: LeakSanitizer"), "{stderr}");
    assert!(stdout.contains("protocol errors 0"), "{stdout}");
}

/// txt2img (runtime, model load, a whole generation, PNG write, every free)
/// under valgrind's memcheck, which, unlike AddressSanitizer on the C side,
/// sees invalid reads and writes inside libkiln's own (uninstrumented) code.
/// Fails on any error or definite leak. "Possibly lost" blocks are not
/// errors: they are process-lifetime tables held by interior pointers
/// (Rust's per-thread handle, the tokenizer's byte table). The suppressions in
/// tools/valgrind.supp cover only glibc's loader and ONNX Runtime, each with
/// its reason. Two denoising steps. Linux only; `.ci/run` installs valgrind
/// when missing.
#[cfg(target_os = "linux")]
#[test]
fn txt2img_under_valgrind() {
    if !common::programs::tools_present("txt2img under valgrind", &["valgrind"], "apt-get install valgrind") {
        return;
    }
    // valgrind cannot run AddressSanitizer binaries: a plain build.
    let bin = build_source("txt2img-plain", "examples/c/txt2img.c", &["-g"]);
    let png = bin.with_extension("png");
    let supp = common::root().join("tools/valgrind.supp");
    let mut vg = Command::new("valgrind");
    vg.env_remove("LD_LIBRARY_PATH")
        .args(["--leak-check=full", "--errors-for-leak-kinds=definite", "--error-exitcode=99", "--num-callers=40"])
        .arg(format!("--suppressions={}", supp.display()))
        .arg(&bin)
        .arg(common::fixture())
        .arg("mossy stone brick wall")
        .arg(&png)
        // Two steps run every code path twenty do (CFG, scheduler step, decode)
        // in under half the time: memcheck is 50-100x slower than native.
        .arg("2");
    let out = run_limited(&mut vg, 900);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let summary: Vec<&str> = stderr.lines().filter(|l| l.contains("ERROR SUMMARY") || l.contains("lost:")).collect();
    println!("{}", summary.join("\n"));
    assert!(out.status.success(), "valgrind found errors (exit {:?}):\n{stderr}", out.status.code());
    assert!(stderr.contains("ERROR SUMMARY: 0 errors"), "{stderr}");
    assert!(stderr.contains("definitely lost: 0 bytes") || stderr.contains("All heap blocks were freed"), "{stderr}");
}

#[test]
fn txt2img_runs_the_sdxl_fixture_unchanged() {
    let bin = build_c("txt2img");
    let png = bin.with_file_name("txt2img-sdxl.png");
    let out = run_limited(c_program(&bin).arg(common::root().join("tests/fixtures/tiny-sdxl")).arg("mossy stone brick wall").arg(&png), 300);
    assert!(out.status.success(), "txt2img on SDXL failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap())).read_info().unwrap();
    assert_eq!((reader.info().width, reader.info().height), (64, 64));
}

/// examples/c/sdxl.c: `prompt_2`, original size and crop through the C struct
/// give exactly the pixels of the same request made from Rust; on SD 1.x the
/// example exits 1 with INVALID_ARGUMENT naming `prompt_2`.
#[test]
fn sdxl_example_sets_prompt_2_and_sizes_like_the_rust_request() {
    let bin = build_c("sdxl");
    let png = bin.with_extension("png");
    let dir = common::root().join("tests/fixtures/tiny-sdxl");
    let out = run_checked(c_program(&bin).arg(&dir).arg("mossy stone brick wall").arg("rusty metal plate").arg(&png), 300);
    assert!(out.status.success(), "sdxl failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let mut reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap())).read_info().unwrap();
    let mut got = vec![0; reader.output_buffer_size().unwrap()];
    reader.next_frame(&mut got).unwrap();
    let request = kiln::GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        prompt_2: "rusty metal plate".into(),
        width: 96,
        height: 64,
        steps: 6,
        guidance_scale: 5.0,
        scheduler: kiln::SchedulerKind::Euler,
        seed: 7,
        xl: kiln::XlConditioning { original_size: Some([160, 128]), crop_top_left: [8, 16], ..Default::default() },
        ..Default::default()
    };
    let model = kiln::Model::load(common::runtime(), &dir).unwrap();
    let want = model.generate(&request).unwrap().to_rgba8();
    let differing = got.iter().zip(&want.pixels).filter(|(a, b)| a != b).count();
    println!("sdxl.c vs Rust: {differing} of {} bytes differ (bound 0)", want.pixels.len());
    assert_eq!((got.len(), differing), (want.pixels.len(), 0));
    let plain = kiln::GenerateRequest { prompt_2: String::new(), xl: Default::default(), ..request };
    assert_ne!(model.generate(&plain).unwrap().to_rgba8().pixels, want.pixels, "the SDXL fields changed nothing");

    let out = run_checked(c_program(&bin).arg(common::fixture()).arg("stone").arg("metal").arg(bin.with_extension("sd1.png")), 300);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("KILN_STATUS_INVALID_ARGUMENT") && err.contains("options->prompt_2") && err.contains("not SDXL"), "{err}");
}
