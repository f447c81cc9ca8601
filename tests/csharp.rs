//! The C# binding (bindings/csharp), run with Mono: builds it with `mcs` against the
//! libkiln built for this test run, runs its test program (`tests/KilnTests.cs`:
//! pixels, error statuses, callbacks, row flip, IL2CPP rules by reflection, SDXL
//! embeddings and the base-to-refiner hand-off against their goldens), and checks
//! that its txt2img example, its default request and its SDXL embedding and hand-off
//! requests give exactly the pixels the C API gives for the same requests. Without
//! Mono it says so and skips, except under `KILN_REQUIRE_TOOLS=1`, which `.ci/run`
//! sets after installing Mono; `KILN_SKIP_BINDINGS=csharp` skips it.
mod common;

use common::binding_goldens::count_differing;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-csharp-{}-{name}", std::process::id()));
    if d.exists() {
        std::fs::remove_dir_all(&d).unwrap();
    }
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A command with the binding's environment: the library under test, and no
/// LD_LIBRARY_PATH from cargo that could lead Mono to a stale libkiln.
fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = common::programs::command(program);
    c.env("KILN_LIBRARY", common::programs::lib_path());
    c
}

/// Runs `cmd`, killing it after `secs` so a hang fails the test instead of the suite.
fn run_limited(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} did not finish within {secs} s", cmd.get_program());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: o.join().unwrap(), stderr: e.join().unwrap() }
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Builds the binding, its example and its tests into a fresh folder.
fn build(dir: &Path) {
    let out = run_limited(command(common::root().join("bindings/csharp/build.sh")).arg(dir), 300);
    assert!(out.status.success(), "bindings/csharp/build.sh failed:\n{}", text(&out));
}

/// What the C API gives for txt2img.c's request (default settings, native size,
/// seed 42) through the same exported functions, called in this process.
fn c_api_pixels(prompt: &str) -> (u32, u32, Vec<u8>) {
    use kiln::ffi::image::*;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use kiln::ffi::kiln_status;
    unsafe {
        let mut ro = std::mem::zeroed::<kiln_runtime_options>();
        kiln_runtime_options_init(&mut ro);
        let mut rt = std::ptr::null_mut();
        assert_eq!(kiln_runtime_create(&ro, &mut rt), kiln_status::Ok);
        let dir = CString::new(common::fixture().to_str().unwrap()).unwrap();
        let mut model = std::ptr::null_mut();
        assert_eq!(kiln_model_load(rt, dir.as_ptr(), &mut model), kiln_status::Ok);
        let mut go = std::mem::zeroed::<kiln_generate_options>();
        kiln_generate_options_init(&mut go);
        let p = CString::new(prompt).unwrap();
        go.prompt = p.as_ptr();
        go.seed = 42;
        let mut image = std::ptr::null_mut();
        assert_eq!(kiln_model_generate(model, &go, &mut image), kiln_status::Ok);
        let (w, h) = (kiln_image_width(image), kiln_image_height(image));
        let px = std::slice::from_raw_parts(kiln_image_pixels(image), (w * h * 4) as usize).to_vec();
        kiln_image_free(image);
        kiln_model_free(model);
        kiln_runtime_destroy(rt);
        (w, h, px)
    }
}

#[test]
fn csharp_binding_tests_pass() {
    if common::programs::skipped("csharp") {
        return;
    }
    let dir = scratch("tests");
    build(&dir.join("build"));
    let refiner = common::sdxl_refiner_folder("csharp");
    let out = run_limited(
        command("mono")
            .arg(dir.join("build/KilnTests.exe"))
            .arg(common::fixture())
            .arg(dir.join("scratch"))
            .arg(common::controlnet_folder("csharp"))
            .arg(&refiner),
        600,
    );
    let log = text(&out);
    println!("{log}");
    assert!(out.status.success() && log.contains(" passed, 0 failed"), "the C# tests failed:\n{log}");
    common::binding_goldens::check_binding_margins(
        &log,
        &["csharp::sdxl_embedding::xl_embedding_euler::image_abs_past_8bit", "csharp::sdxl_handoff::euler_08::image_abs_past_8bit"],
    );

    // Its SDXL embedding and hand-off requests against the C API's pixels for the same requests.
    for (file, expected) in [
        ("sdxl-embedding.rgba", common::binding_goldens::sdxl_embedding_rgba()),
        ("sdxl-handoff.rgba", common::binding_goldens::sdxl_handoff_rgba(&refiner)),
    ] {
        let got = std::fs::read(dir.join("scratch").join(file)).unwrap_or_else(|e| panic!("the C# tests write {file}: {e}"));
        let differing = count_differing(&expected, &got);
        println!("C# {file} vs C API: {differing} of {} bytes differ (bound: 0)", expected.len());
        assert_eq!(differing, 0, "{file}");
    }

    // Its default request (what Txt2Img does) against the C API's pixels.
    let (w, h, expected) = c_api_pixels("mossy stone brick wall");
    assert_eq!((w, h), (64, 64));
    let got = std::fs::read(dir.join("scratch/default-seed42.rgba")).expect("the C# tests write default-seed42.rgba");
    let differing = count_differing(&expected, &got);
    println!("C# default request vs C API: {differing} of {} bytes differ (bound: 0)", expected.len());
    assert_eq!(differing, 0);
}

/// The Unity sample (Samples~/FrameLoop), driven as Unity drives a MonoBehaviour by
/// tests/UnitySampleRunner.cs against the UnityEngine stub: it loads the model as a job
/// behind a loading bar, then generates to a full bar, and the texture it hands Unity is
/// the C API's pixels for the same request, rows bottom-up as Unity stores them.
#[test]
fn csharp_unity_sample_loads_as_a_job_then_generates_the_c_api_pixels() {
    if common::programs::skipped("csharp") {
        return;
    }
    let dir = scratch("unity-sample");
    build(&dir.join("build"));
    let rgba = dir.join("unity.rgba");
    let out = run_limited(command("mono").arg(dir.join("build/UnitySampleRunner.exe")).arg(common::fixture()).arg(&rgba), 600);
    let log = text(&out);
    let lines: Vec<&str> = log.lines().filter(|l| !l.starts_with("Debug.Log: ")).collect();
    println!("{}", lines.join("\n"));
    assert!(out.status.success(), "the Unity sample did not finish:\n{log}");
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("status: ")).collect();
    assert_eq!(statuses, ["Loading the model", "Generating", "Done"], "{log}");
    let progress: Vec<Vec<f32>> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("progress: "))
        .map(|l| l.split(' ').map(|v| v.parse().unwrap()).collect())
        .collect();
    // The frame a job ends on moves the sample to its next phase, so a bar's last value
    // before that frame need not be full; the generation's ends full on the last frame.
    assert_eq!(progress.len(), 2, "{log}");
    for (phase, p) in ["loading", "generating"].iter().zip(&progress) {
        assert!(p.windows(2).all(|w| w[0] < w[1]) && p.iter().all(|v| (0.0..=1.0).contains(v)), "{phase}: the bar only moves forward: {p:?}");
    }
    assert!(log.contains("final progress: 1.000"), "{log}");
    assert!(log.contains("texture 64x64, wrap Clamp"), "{log}");

    let (w, h, expected) = c_api_pixels("mossy stone brick wall");
    let row = (w * 4) as usize;
    let bottom_up: Vec<u8> = expected.chunks_exact(row).rev().flatten().copied().collect();
    let got = std::fs::read(&rgba).expect("the runner writes the texture's bytes");
    assert_eq!(got.len(), (w * h * 4) as usize);
    let differing = count_differing(&bottom_up, &got);
    println!("Unity sample's texture vs C API (rows flipped): {differing} of {} bytes differ (bound: 0)", got.len());
    assert_eq!(differing, 0);
}

#[test]
fn csharp_example_writes_the_c_api_pixels() {
    if common::programs::skipped("csharp") {
        return;
    }
    let dir = scratch("example");
    let png_path = dir.join("out.png");
    let out = run_limited(
        command(common::root().join("bindings/csharp/run-example.sh"))
            .arg(common::fixture())
            .arg("mossy stone brick wall")
            .arg(&png_path),
        600,
    );
    let log = text(&out);
    assert!(out.status.success(), "run-example.sh failed:\n{log}");
    assert!(log.contains("ONNX Runtime ") && log.contains("generated 64x64"), "{log}");
    let reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png_path).unwrap())).read_info().unwrap();
    let mut reader = reader;
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgba);
    let (w, h, expected) = c_api_pixels("mossy stone brick wall");
    assert_eq!((info.width, info.height), (w, h));
    let differing = count_differing(&expected, &buf[..info.buffer_size()]);
    println!("C# example PNG vs C API: {differing} of {} bytes differ (bound: 0)", expected.len());
    assert_eq!(differing, 0);

    // A missing model is reported by name with its status, as txt2img.c does.
    let out = run_limited(
        command(common::root().join("bindings/csharp/run-example.sh")).arg("/nonexistent/model").arg("x").arg(dir.join("never.png")),
        600,
    );
    let err = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("KILN_STATUS_MODEL_NOT_FOUND") && err.contains("/nonexistent/model"), "{err}");
}
