//! Texture helpers built on inpainting: outpainting keeps the original pixels
//! exactly and fills the new border; make_tileable turns a picture with a hard
//! wrap seam into one whose wrap seam is no worse than its interior.
mod common;

use kiln::image::seam::{seam_score, Axis};
use kiln::pipeline::texture::Extend;
use kiln::pipeline::{GenerateRequest, InitImage};
use kiln::{Rgba8Image, SchedulerKind};

fn request() -> GenerateRequest {
    GenerateRequest { prompt: "sandstone".into(), steps: 4, strength: 1.0, scheduler: SchedulerKind::Ddim, ..Default::default() }
}

/// A diagonal colour ramp: smooth inside, a hard jump across both wrap edges.
fn ramp() -> InitImage {
    let mut rgb = Vec::new();
    for y in 0..64 {
        for x in 0..64 {
            rgb.extend_from_slice(&[(x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8]);
        }
    }
    InitImage { width: 64, height: 64, rgb }
}

fn rgba(data: &[f32], w: usize, h: usize) -> Rgba8Image {
    kiln::FloatImage { width: w, height: h, data: data.to_vec() }.to_rgba8()
}

#[test]
fn extend_texture_keeps_the_original_and_grows() {
    let m = common::tiny_model();
    let src = ramp();
    let out = m.extend_texture(&request(), &src, Extend { right: 64, ..Default::default() }).unwrap();
    assert_eq!((out.image.width, out.image.height), (128, 64));
    for y in 0..64 {
        for x in 0..64 {
            for c in 0..3 {
                assert_eq!(out.image.data[(y * 128 + x) * 3 + c], src.rgb[(y * 64 + x) * 3 + c] as f32 / 255.0);
            }
        }
    }
    let e = m.extend_texture(&request(), &src, Extend { left: 3, ..Default::default() }).unwrap_err();
    assert_eq!(e.kind(), kiln::ErrorKind::InvalidSize);
}

#[test]
fn make_tileable_removes_the_wrap_seam() {
    let m = common::tiny_model();
    let src = ramp();
    let before_x = seam_score(&rgba(&src.rgb.iter().map(|&v| v as f32 / 255.0).collect::<Vec<_>>(), 64, 64), Axis::X).unwrap();
    let out = m.make_tileable(&request(), &src, 16).unwrap();
    let img = rgba(&out.image.data, 64, 64);
    let (after_x, after_y) = (seam_score(&img, Axis::X).unwrap(), seam_score(&img, Axis::Y).unwrap());
    eprintln!("seam score x: before {before_x:.1}, after {after_x:.2}; y after {after_y:.2}");
    assert!(before_x > 10.0, "the ramp has a hard seam ({before_x})");
    assert!(after_x <= 1.1 && after_y <= 1.1, "tileable after: x {after_x}, y {after_y}");
    // The result is the picture offset by half its size; away from the
    // central band it is the input exactly.
    for (x, y) in [(4usize, 4usize), (60, 10), (10, 60), (58, 58)] {
        let (sx, sy) = ((x + 32) % 64, (y + 32) % 64);
        for c in 0..3 {
            assert_eq!(out.image.data[(y * 64 + x) * 3 + c], src.rgb[(sy * 64 + sx) * 3 + c] as f32 / 255.0);
        }
    }
    assert!(m.make_tileable(&request(), &src, 0).is_err());
}

#[test]
fn c_api_texture_helpers() {
    use kiln::ffi::image::*;
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use kiln::ffi::texture::*;
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut m) }, kiln_status::Ok);
    let src = ramp();
    let prompt = std::ffi::CString::new("sand").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 2;
    o.strength = 1.0;
    o.scheduler = 1;
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_make_tileable(m, &o, 16, &mut img) }, kiln_status::InvalidArgument, "no picture");
    o.init_image = src.rgb.as_ptr();
    o.init_image_len = src.rgb.len();
    o.init_image_width = 64;
    o.init_image_height = 64;
    o.init_image_channels = 3;
    assert_eq!(unsafe { kiln_model_make_tileable(m, &o, 16, &mut img) }, kiln_status::Ok);
    assert_eq!(unsafe { kiln_image_width(img) }, 64);
    unsafe { kiln_image_free(img) };
    assert_eq!(unsafe { kiln_model_extend_texture(m, &o, 0, 0, 64, 0, &mut img) }, kiln_status::Ok);
    assert_eq!((unsafe { kiln_image_width(img) }, unsafe { kiln_image_height(img) }), (64, 128));
    unsafe { kiln_image_free(img) };
    assert_eq!(unsafe { kiln_model_extend_texture(m, &o, 5, 0, 0, 0, &mut img) }, kiln_status::InvalidSize);
    assert_eq!(unsafe { kiln_model_extend_texture(m, &o, 0, 0, 0, 0, ptr::null_mut()) }, kiln_status::NullArgument);
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}
