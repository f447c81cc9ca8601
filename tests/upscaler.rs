//! Super-resolution graphs (tools/make_upscaler_fixture.py): Kiln's tiled,
//! seamless-aware upscale equals the script's torch runs of the same nets on
//! the whole image (or on the image padded circularly, for seamless axes);
//! fixed-size graphs, settings files, the alpha paths, cancellation, and
//! every bad input through the Rust and C APIs.
mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::ptr;

use kiln::ffi::image::kiln_image;
use kiln::ffi::kiln_status;
use kiln::ffi::upscale::*;
use kiln::model::seamless::Seamless;
use kiln::model::upscaler::{upsample_bilinear, UpscaleAlpha, UpscaleOptions, Upscaler};
use kiln::{ErrorKind, Rgba8Image};

/// Golden tolerance, absolute on RGB in 0..1. Kiln runs the exported graph on
/// ONNX Runtime, the script ran the torch module: the same convolutions with
/// other kernels and summation orders, so outputs differ by float rounding of
/// activations up to about 2 after 17 layers (here up to about 1e-6). Tiles
/// run the same layers on smaller windows, which may pick other kernels
/// again. 1e-5 is ten times that and still a hundred times below one 8-bit
/// step (3.9e-3), so windows that miss part of the receptive field or pad
/// instead of wrapping (which move outputs by 7e-4 and 4e-3 here, though the
/// nets' learned branch is scaled by 0.1; see the control cases) fail it.
const TOL: f32 = 1e-5;

fn fixtures() -> PathBuf {
    common::root().join("tests/fixtures/upscaler")
}

fn npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    let path = fixtures().join("golden").join(format!("{name}.npy"));
    kiln::image::npy::read_f32(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture picture, 24x20 RGBA with alpha falling from 255 to 40.
fn image() -> Rgba8Image {
    let (shape, data) = kiln::image::npy::read_f32(&fixtures().join("image.npy")).unwrap();
    assert_eq!(shape, vec![20, 24, 4]);
    Rgba8Image { width: 24, height: 20, pixels: data.iter().map(|&v| v as u8).collect() }
}

/// The picture's RGB as three planes in 0..1, optionally cropped to `w × h`.
fn rgb_planes(img: &Rgba8Image, w: usize, h: usize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * w * h];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                out[c * w * h + y * w + x] = img.pixels[(y * img.width + x) * 4 + c] as f32 / 255.0;
            }
        }
    }
    out
}

fn x4() -> Upscaler {
    Upscaler::load(common::runtime(), &fixtures().join("x4")).unwrap()
}

fn x2_fixed() -> Upscaler {
    Upscaler::load(common::runtime(), &fixtures().join("x2-fixed.onnx")).unwrap()
}

fn opts(tile: u32, context: u32, seamless: Seamless) -> UpscaleOptions {
    UpscaleOptions { tile, context, seamless, alpha: UpscaleAlpha::Graph }
}

fn planes_of(u: &Upscaler, planes: &[f32], w: usize, h: usize, o: &UpscaleOptions) -> Vec<f32> {
    u.upscale_planes(planes, w, h, o, &mut |_, _| {}).unwrap()
}

/// Compares with a golden, prints the margin and returns the worst difference.
fn check(id: &str, ours: &[f32], golden: &str) -> f32 {
    let (shape, theirs) = npy(golden);
    assert_eq!(ours.len(), shape.iter().product::<usize>(), "{id}: size");
    let worst = common::max_abs_diff(ours, &theirs);
    common::check_margin(&format!("upscaler {id}"), worst as f64, TOL as f64);
    worst
}

#[test]
fn whole_image_and_tiles_with_enough_context_equal_the_net_on_the_whole_image() {
    let u = x4();
    assert_eq!(u.scale(), 4, "found by the probe run: no settings file, dynamic shapes");
    let img = image();
    let rgb = rgb_planes(&img, 24, 20);
    check("x4 whole", &planes_of(&u, &rgb, 24, 20, &opts(0, 0, Seamless::None)), "x4_whole");
    // 8-pixel tiles (3 x 3 of them) with 20 pixels of context: the net's
    // receptive field is 19, so each kept pixel saw all it would have seen.
    assert_eq!(u.tiles(24, 20, &opts(8, 20, Seamless::None)), 9);
    check("x4 tiles 8 context 20", &planes_of(&u, &rgb, 24, 20, &opts(8, 20, Seamless::None)), "x4_whole");
    check("x4 tiles 5 context 19", &planes_of(&u, &rgb, 24, 20, &opts(5, 19, Seamless::None)), "x4_whole");
    // Control: too little context, and the tile edges show.
    let (_, whole) = npy("x4_whole");
    let short = common::max_abs_diff(&planes_of(&u, &rgb, 24, 20, &opts(8, 2, Seamless::None)), &whole);
    assert!(short > 10.0 * TOL, "context 2 should change pixels near tile edges, moved only {short:e}");
}

#[test]
fn seamless_axes_upscale_the_tiling_the_image_stands_for() {
    let u = x4();
    let rgb = rgb_planes(&image(), 24, 20);
    for (tile, id) in [(0, "whole"), (8, "tiles 8"), (7, "tiles 7")] {
        check(&format!("x4 wrap xy {id}"), &planes_of(&u, &rgb, 24, 20, &opts(tile, 20, Seamless::Xy)), "x4_wrap_xy");
        check(&format!("x4 wrap x {id}"), &planes_of(&u, &rgb, 24, 20, &opts(tile, 20, Seamless::X)), "x4_wrap_x");
    }
    // Control: without wrapping the borders differ from the tiled picture's.
    let (_, wrapped) = npy("x4_wrap_xy");
    let plain = common::max_abs_diff(&planes_of(&u, &rgb, 24, 20, &opts(0, 20, Seamless::None)), &wrapped);
    assert!(plain > 100.0 * TOL, "zero padding and wrapping should differ at the borders, moved only {plain:e}");
    // And the bytes tile: the seam score of the seamless upscale is the
    // score of an interior column pair, far below the plain upscale's.
    let img = image();
    let seamless = u.upscale(&img, &opts(8, 20, Seamless::Xy)).unwrap();
    let plain = u.upscale(&img, &opts(8, 20, Seamless::None)).unwrap();
    let score = |i: &Rgba8Image| kiln::image::seam::seam_score(i, kiln::image::seam::Axis::X).unwrap();
    assert!(score(&seamless) < score(&plain), "seam score {} (seamless) vs {} (plain)", score(&seamless), score(&plain));
}

#[test]
fn a_fixed_size_graph_runs_in_windows_of_its_size() {
    let u = x2_fixed();
    assert_eq!(u.scale(), 2);
    let img = image();
    let rgb = rgb_planes(&img, 24, 20);
    // 16x16 windows with 3 pixels of context keep 10x10 each (the net's
    // receptive field is 3): equal to the net on the whole image.
    assert_eq!(u.tiles(24, 20, &opts(0, 3, Seamless::None)), 6);
    check("x2 fixed context 3", &planes_of(&u, &rgb, 24, 20, &opts(999, 3, Seamless::None)), "x2_whole");
    // A context larger than the window allows is reduced to 7 (16 = 2 + 2·7).
    check("x2 fixed context 40", &planes_of(&u, &rgb, 24, 20, &opts(0, 40, Seamless::None)), "x2_whole");
    // An image smaller than the window is extended by its edge pixels, or
    // read around on seamless axes.
    let small = rgb_planes(&img, 12, 10);
    check("x2 fixed small", &planes_of(&u, &small, 12, 10, &opts(0, 3, Seamless::None)), "x2_small");
    check("x2 fixed small wrap", &planes_of(&u, &small, 12, 10, &opts(0, 3, Seamless::Xy)), "x2_small_wrap");
}

/// A float16 graph (the x2 net's weights in half precision, f16 in and out):
/// Kiln converts its input and output. Bound: float16 keeps 11 significant
/// bits, so values near 1 are rounded by up to 4.9e-4 at every layer's
/// output (weights, input, two convolutions, the output); 4e-3, about one
/// 8-bit step, is a few of those ulps (9.8e-4 near 1) and still far below
/// what a mis-converted tensor would give (garbage, or 0). Headroom is about
/// 8x, under tools/test_margins.py's 10x mark, on purpose: the gap measured
/// (4.7e-4) is one float16 rounding of the output, which no CPU shrinks, and
/// ten times it would pass a result off by more than one 8-bit step.
#[test]
fn a_float16_graph_upscales_within_half_precision() {
    let u = Upscaler::load(common::runtime(), &fixtures().join("x2-f16")).unwrap();
    assert_eq!(u.scale(), 2);
    let rgb = rgb_planes(&image(), 24, 20);
    let (_, want) = npy("x2_whole");
    for (tile, id) in [(0, "whole"), (8, "tiles 8")] {
        let got = planes_of(&u, &rgb, 24, 20, &opts(tile, 3, Seamless::None));
        common::check_margin(&format!("upscaler x2 float16 {id}"), common::max_abs_diff(&got, &want) as f64, 4e-3);
    }
}

#[test]
fn alpha_goes_through_the_graph_or_bilinearly_and_bytes_round_as_diffusers() {
    let u = x4();
    let img = image();
    let rgb = planes_of(&u, &rgb_planes(&img, 24, 20), 24, 20, &opts(8, 20, Seamless::None));
    let out = u.upscale(&img, &opts(8, 20, Seamless::None)).unwrap();
    assert_eq!((out.width, out.height), (96, 80));
    let n = 96 * 80;
    // RGB bytes: clamp, round half to even, of the float planes.
    for i in 0..n {
        for c in 0..3 {
            let want = (rgb[c * n + i].clamp(0.0, 1.0) * 255.0).round_ties_even() as u8;
            assert_eq!(out.pixels[i * 4 + c], want, "pixel {i} channel {c}");
        }
    }
    // Alpha through the graph: the channel mean of the net's output on the
    // alpha plane as a grey image.
    // Each byte must be the rounding of a value within TOL of the reference:
    // what a byte lies beyond half a step from it, in 0..1 units.
    let (_, a3) = npy("x4_alpha");
    let mut worst = 0f32;
    for i in 0..n {
        let want = ((a3[i] + a3[n + i] + a3[2 * n + i]) / 3.0).clamp(0.0, 1.0) * 255.0;
        worst = worst.max(((out.pixels[i * 4 + 3] as f32 - want).abs() - 0.5).max(0.0) / 255.0);
    }
    common::check_margin("upscaler alpha through the graph (past rounding)", worst as f64, TOL as f64);
    // Alpha bilinear: PyTorch's bilinear 4x.
    let alpha: Vec<f32> = img.pixels.chunks_exact(4).map(|p| p[3] as f32 / 255.0).collect();
    check("alpha bilinear", &upsample_bilinear(&alpha, 24, 20, 4, Seamless::None), "alpha_bilinear");
    let bilinear = u.upscale(&img, &UpscaleOptions { alpha: UpscaleAlpha::Bilinear, ..opts(8, 20, Seamless::None) }).unwrap();
    assert_eq!(bilinear.pixels.chunks_exact(4).map(|p| &p[..3]).collect::<Vec<_>>(), out.pixels.chunks_exact(4).map(|p| &p[..3]).collect::<Vec<_>>());
    // An opaque image stays opaque, and takes one pass.
    let mut opaque = img.clone();
    opaque.pixels.chunks_exact_mut(4).for_each(|p| p[3] = 255);
    let mut calls = Vec::new();
    let o = u.upscale_with_progress(&opaque, &opts(8, 20, Seamless::None), &mut |d, t| calls.push((d, t))).unwrap();
    assert!(o.pixels.chunks_exact(4).all(|p| p[3] == 255));
    assert_eq!(calls, (1..=9).map(|d| (d, 9)).collect::<Vec<_>>());
    let mut calls = Vec::new();
    u.upscale_with_progress(&img, &opts(8, 20, Seamless::None), &mut |d, t| calls.push((d, t))).unwrap();
    assert_eq!(calls, (1..=18).map(|d| (d, 18)).collect::<Vec<_>>(), "transparency doubles the passes");
    // Deterministic.
    assert_eq!(u.upscale(&img, &opts(8, 20, Seamless::None)).unwrap(), out);
}

/// A copy of the fixed x2 graph under `name`, with `settings` beside it (none if `None`).
fn x2_copy(name: &str, settings: Option<&str>) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-upscaler");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{name}.onnx"));
    std::fs::copy(fixtures().join("x2-fixed.onnx"), &file).unwrap();
    let json = file.with_extension("json");
    let _ = std::fs::remove_file(&json);
    if let Some(s) = settings {
        std::fs::write(&json, s).unwrap();
    }
    file
}

#[test]
fn bad_graphs_settings_and_sizes_fail_with_their_own_status() {
    let rt = common::runtime();
    let kind = |p: &Path| Upscaler::load(rt, p).unwrap_err().kind();
    assert_eq!(kind(&fixtures().join("missing")), ErrorKind::ModelNotFound);
    assert_eq!(kind(&fixtures().join("no-such.onnx")), ErrorKind::ModelNotFound);
    // A matting graph: one image in, but one channel out.
    assert_eq!(kind(&common::root().join("tests/fixtures/matting/fixed/model.onnx")), ErrorKind::ModelInvalid);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-upscaler");
    std::fs::create_dir_all(&dir).unwrap();
    let corrupt = dir.join("corrupt.onnx");
    std::fs::write(&corrupt, b"not a graph").unwrap();
    assert_eq!(kind(&corrupt), ErrorKind::ModelInvalid);
    // Settings: a scale contradicting the graph's shapes, unknown fields, out of range.
    for bad in [r#"{"scale": 3}"#, r#"{"scael": 2}"#, r#"{"scale": 0}"#, "{"] {
        let e = Upscaler::load(rt, &x2_copy("bad", Some(bad))).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid, "{bad}: {e}");
    }
    // Without settings the fixed shapes give the scale.
    assert_eq!(Upscaler::load(rt, &x2_copy("bare", None)).unwrap().scale(), 2);
    // A result over 16384 pixels a side, and an empty image.
    let u = x2_fixed();
    let wide = Rgba8Image { width: 8200, height: 1, pixels: vec![255; 8200 * 4] };
    assert_eq!(u.upscale(&wide, &UpscaleOptions::default()).unwrap_err().kind(), ErrorKind::InvalidSize);
    let empty = Rgba8Image { width: 0, height: 0, pixels: vec![] };
    assert_eq!(u.upscale(&empty, &UpscaleOptions::default()).unwrap_err().kind(), ErrorKind::InvalidSize);
    // A context past 1024 is refused before any window is allocated (here it
    // would ask for a 2-billion-pixel window on a dynamic graph).
    let x4 = x4();
    let huge = UpscaleOptions { context: 1 << 30, ..UpscaleOptions::default() };
    assert_eq!(x4.upscale(&image(), &huge).unwrap_err().kind(), ErrorKind::InvalidArgument);
    // Still usable.
    assert_eq!(u.upscale(&image(), &UpscaleOptions::default()).unwrap().width, 48);
}

#[test]
fn cancel_stops_a_call_in_flight_and_later_calls_run() {
    let u = std::sync::Arc::new(x4());
    let big = Rgba8Image { width: 256, height: 256, pixels: (0..256 * 256 * 4).map(|i| (i % 251) as u8).collect() };
    let worker = {
        let u = std::sync::Arc::clone(&u);
        std::thread::spawn(move || u.upscale(&big, &opts(8, 20, Seamless::None)))
    };
    let started = std::time::Instant::now();
    while u.cancel() == 0 {
        assert!(!worker.is_finished(), "the upscale ended before it could be cancelled");
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "the upscale never started");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let e = worker.join().unwrap().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled, "{e}");
    assert_eq!(u.cancel(), 0, "nothing in flight once it returned");
    assert_eq!(u.upscale(&image(), &opts(0, 0, Seamless::None)).unwrap().width, 96);
}

fn last_error() -> String {
    common::ffi_last_error()
}

#[test]
fn the_c_api_upscales_and_reports_every_bad_input() {
    use kiln::ffi::runtime::{kiln_runtime_create, kiln_runtime_destroy};
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let path = CString::new(fixtures().join("x4").to_str().unwrap()).unwrap();
    let mut up = ptr::null_mut();
    assert_eq!(unsafe { kiln_upscaler_load(rt, path.as_ptr(), &mut up) }, kiln_status::Ok, "{}", last_error());
    // The runtime may go first: the upscaler keeps what it needs.
    unsafe { kiln_runtime_destroy(rt) };
    let mut scale = 0;
    assert_eq!(unsafe { kiln_upscaler_scale(up, &mut scale) }, kiln_status::Ok);
    assert_eq!(scale, 4);

    let img = image();
    let mut input: *mut kiln_image = ptr::null_mut();
    let s = unsafe { kiln::ffi::postprocess::kiln_image_create(24, 20, img.pixels.as_ptr(), img.pixels.len(), 0, &mut input) };
    assert_eq!(s, kiln_status::Ok);
    let mut o = unsafe { std::mem::zeroed::<kiln_upscale_options>() };
    unsafe { kiln_upscale_options_init(&mut o) };
    assert_eq!((o.tile, o.context, o.seamless, o.alpha), (256, 16, 0, 0));
    o.tile = 8;
    o.context = 20;
    o.seamless = 3;
    let mut out: *mut kiln_image = ptr::null_mut();
    assert_eq!(unsafe { kiln_upscaler_upscale(up, input, &o, &mut out) }, kiln_status::Ok, "{}", last_error());
    let (w, h) = unsafe { (kiln::ffi::image::kiln_image_width(out), kiln::ffi::image::kiln_image_height(out)) };
    assert_eq!((w, h), (96, 80));
    let expected = x4().upscale(&img, &opts(8, 20, Seamless::Xy)).unwrap();
    let mut bytes = vec![0u8; 96 * 80 * 4];
    let s = unsafe { kiln::ffi::image::kiln_image_copy(out, bytes.as_mut_ptr(), bytes.len(), 96 * 4) };
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    assert_eq!(bytes, expected.pixels, "the C API gives the Rust API's bytes");
    unsafe { kiln::ffi::image::kiln_image_free(out) };

    // Bad inputs: each its own status, out-parameters NULL, the upscaler usable.
    let mut out: *mut kiln_image = ptr::dangling_mut();
    let call = |o: &kiln_upscale_options, out: &mut *mut kiln_image| unsafe { kiln_upscaler_upscale(up, input, o, out) };
    for (field, status) in [("seamless", 4u32), ("alpha", 2), ("context", 1025)] {
        let mut bad = o;
        match field {
            "seamless" => bad.seamless = status,
            "alpha" => bad.alpha = status,
            _ => bad.context = status,
        }
        assert_eq!(call(&bad, &mut out), kiln_status::InvalidArgument, "{field}");
        assert!(out.is_null());
        assert!(last_error().contains(field), "{}", last_error());
    }
    let mut bad = o;
    bad.struct_size = 12;
    assert_eq!(call(&bad, &mut out), kiln_status::StructSizeMismatch);
    assert_eq!(unsafe { kiln_upscaler_upscale(ptr::null(), input, &o, &mut out) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_upscaler_upscale(up, ptr::null(), &o, &mut out) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_upscaler_upscale(up, input, &o, ptr::null_mut()) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_upscaler_scale(up, ptr::null_mut()) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_upscaler_cancel(ptr::null()) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_upscaler_cancel(up) }, kiln_status::Ok, "nothing in flight: a no-op");
    assert_eq!(unsafe { kiln_upscaler_upscale(up, input, ptr::null(), &mut out) }, kiln_status::Ok, "NULL options = defaults");
    unsafe { kiln::ffi::image::kiln_image_free(out) };

    // Loading: NULL, bad UTF-8, missing, not an upscaler.
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let mut other: *mut kiln_upscaler = ptr::dangling_mut();
    assert_eq!(unsafe { kiln_upscaler_load(rt, ptr::null(), &mut other) }, kiln_status::NullArgument);
    assert!(other.is_null());
    assert_eq!(unsafe { kiln_upscaler_load(ptr::null(), path.as_ptr(), &mut other) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_upscaler_load(rt, path.as_ptr(), ptr::null_mut()) }, kiln_status::NullArgument);
    let bad_utf8 = [0xffu8, 0xfe, 0];
    assert_eq!(unsafe { kiln_upscaler_load(rt, bad_utf8.as_ptr().cast(), &mut other) }, kiln_status::InvalidUtf8);
    let missing = CString::new(fixtures().join("missing").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { kiln_upscaler_load(rt, missing.as_ptr(), &mut other) }, kiln_status::ModelNotFound);
    let matting = CString::new(common::root().join("tests/fixtures/matting/fixed/model.onnx").to_str().unwrap()).unwrap();
    assert_eq!(unsafe { kiln_upscaler_load(rt, matting.as_ptr(), &mut other) }, kiln_status::ModelInvalid);
    assert!(last_error().contains("output"), "{}", last_error());
    assert!(other.is_null());
    unsafe { kiln_runtime_destroy(rt) };

    unsafe { kiln::ffi::image::kiln_image_free(input) };
    unsafe { kiln_upscaler_free(up) };
    unsafe { kiln_upscaler_free(ptr::null_mut()) };
}
