//! Seamless tiling by graph rewrite, checked exactly on the tiny fixture: with
//! wrap on an axis, rolling the initial noise by k latent pixels along it
//! (k a multiple of the U-Net's downsampling) rolls the image by 8k pixels;
//! an axis without wrap does not have that property. (Random weights make
//! noise-like images on which a seam score cannot tell tiled from untiled,
//! so the shift test is the measure here.)
mod common;

use kiln::model::seamless::Seamless;
use kiln::pipeline::{GenerateRequest, Hooks, InitialNoise};
use kiln::pipeline::noise::NoiseRng;
use kiln::{Model, SchedulerKind};

const H: usize = 8;
const W: usize = 8;

fn noise() -> Vec<f32> {
    NoiseRng::new(2024).normals(4 * H * W)
}

/// Rolls NCHW latents by `dy`, `dx` (wrapping).
fn roll(data: &[f32], dy: usize, dx: usize) -> Vec<f32> {
    let mut out = vec![0.0; data.len()];
    for c in 0..4 {
        for y in 0..H {
            for x in 0..W {
                out[c * H * W + ((y + dy) % H) * W + (x + dx) % W] = data[c * H * W + y * W + x];
            }
        }
    }
    out
}

fn generate(m: &Model, noise: Vec<f32>) -> Vec<f32> {
    let request = GenerateRequest {
        prompt: "cobblestone".into(),
        steps: 4,
        scheduler: SchedulerKind::Ddim,
        initial_noise: Some(InitialNoise { shape: [1, 4, H, W], data: noise }),
        ..Default::default()
    };
    m.generate_with(&request, Hooks::default()).unwrap().image.data
}

/// max |image(rolled noise) − roll(image(noise))| over the 64×64×3 image.
fn shift_error(m: &Model, dy: usize, dx: usize) -> f32 {
    let a = generate(m, noise());
    let b = generate(m, roll(&noise(), dy, dx));
    let (ph, pw) = (H * 8, W * 8);
    let mut worst = 0.0f32;
    for y in 0..ph {
        for x in 0..pw {
            for c in 0..3 {
                let rolled = a[(y * pw + x) * 3 + c];
                let got = b[(((y + dy * 8) % ph) * pw + (x + dx * 8) % pw) * 3 + c];
                worst = worst.max((rolled - got).abs());
            }
        }
    }
    worst
}

#[test]
fn wrapped_axes_are_shift_equivariant_and_others_are_not() {
    let base = common::tiny_model();
    let x = base.seamless(Seamless::X).unwrap();
    let xy = base.seamless(Seamless::Xy).unwrap();
    assert_eq!(x.seamless_axes(), Seamless::X);
    let tol = 2.0 / 255.0;
    // k = 2 latent pixels: the tiny U-Net downsamples the latent 2x.
    let ex = shift_error(&x, 0, 2);
    let ey = shift_error(&x, 2, 0);
    let exy = shift_error(&xy, 2, 2);
    let plain = shift_error(base, 0, 2);
    eprintln!("shift error: x-wrap along x {ex:e}, along y {ey:e}; xy-wrap diagonal {exy:e}; no wrap {plain:e}");
    common::check_margin("seamless::x_wrap::shift_abs", ex as f64, tol);
    common::check_margin("seamless::xy_wrap::shift_abs", exy as f64, tol);
    assert!(ey > 0.05, "x-only wrap must not make y periodic ({ey})");
    assert!(plain > 0.05, "the unmodified model is not periodic ({plain})");
}

#[test]
fn variants_are_cached_and_share_the_text_encoder() {
    let base = common::tiny_model();
    let a = base.seamless(Seamless::Y).unwrap();
    let b = base.seamless(Seamless::Y).unwrap();
    let ptr = |m: &Model| m.graph_providers()[1].1 as *const _;
    assert_eq!(ptr(&a), ptr(&b), "the rewritten U-Net is made once per mode");
    assert_eq!(a.seamless(Seamless::None).unwrap().seamless_axes(), Seamless::None);
    // The unmodified model is untouched by making variants.
    let plain = generate(base, noise());
    assert_eq!(plain, generate(&a.seamless(Seamless::None).unwrap(), noise()));
}

#[test]
fn rewrite_rejects_garbage_and_reports_counts() {
    let bytes = std::fs::read(common::fixture().join("unet/model.onnx")).unwrap();
    let (out, report) = kiln::model::seamless::make_seamless(&bytes, Seamless::Xy).unwrap();
    assert!(report.convs_rewritten > 5, "{report:?}");
    assert!(out.len() > bytes.len());
    let (_, none) = kiln::model::seamless::make_seamless(&bytes, Seamless::None).unwrap();
    assert_eq!(none.convs_rewritten, 0);
    assert!(kiln::model::seamless::make_seamless(b"\x0a\xff\xff", Seamless::X).is_err());
}

#[test]
fn c_api_makes_seamless_handles() {
    use kiln::ffi::model::*;
    use kiln::ffi::seamless::kiln_model_seamless;
    use kiln::ffi::{kiln_status, runtime::*};
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut m) }, kiln_status::Ok);
    let mut tiled = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_seamless(m, 3, &mut tiled) }, kiln_status::Ok);
    assert!(!tiled.is_null());
    assert_eq!(unsafe { kiln_model_seamless(m, 9, &mut tiled) }, kiln_status::InvalidArgument);
    assert!(tiled.is_null());
    assert_eq!(unsafe { kiln_model_seamless(ptr::null(), 1, &mut tiled) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_model_seamless(m, 1, &mut tiled) }, kiln_status::Ok);
    // The base handle can go first; the seamless one keeps working.
    unsafe { kiln_model_free(m) };
    let p = std::ffi::CString::new("sand").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = p.as_ptr();
    o.steps = 2;
    let mut buf = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(tiled, &o, buf.as_mut_ptr(), buf.len(), 0) }, kiln_status::Ok);
    unsafe { kiln_model_free(tiled) };
    unsafe { kiln_runtime_destroy(rt) };
}
