//! The post-processing C API: sprites, pixel art, material maps, seam score
//! and `kiln_image_create`, their results and their error statuses.
mod common;

use std::collections::HashSet;
use std::ffi::{c_char, CStr, CString};
use std::ptr;

use kiln::ffi::image::*;
use kiln::ffi::kiln_status;
use kiln::ffi::postprocess::*;

fn last_error() -> String {
    let mut buf = vec![0 as c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// A Kiln image from tightly packed RGBA8 pixels.
fn create(w: u32, h: u32, pixels: &[u8]) -> *mut kiln_image {
    let mut img = ptr::null_mut();
    let s = unsafe { kiln_image_create(w, h, pixels.as_ptr(), pixels.len(), 0, &mut img) };
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    assert!(!img.is_null());
    img
}

fn pixels(img: *const kiln_image) -> (u32, u32, Vec<u8>) {
    let (w, h) = unsafe { (kiln_image_width(img), kiln_image_height(img)) };
    let p = unsafe { std::slice::from_raw_parts(kiln_image_pixels(img), (w * h * 4) as usize) };
    (w, h, p.to_vec())
}

fn from_fn(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
    let f = &f;
    (0..h).flat_map(|y| (0..w).flat_map(move |x| f(x, y))).collect()
}

fn srgb_to_linear(c: u8) -> f32 {
    let c = c as f32 / 255.0;
    if c <= 0.04045 {
        c / 12.92
    } else {
        ((c + 0.055) / 1.055).powf(2.4)
    }
}

fn linear_to_srgb(x: f32) -> u8 {
    let e = if x <= 0.0031308 { x * 12.92 } else { 1.055 * x.powf(1.0 / 2.4) - 0.055 };
    (e.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// A red disc (radius 20, centre on the pixel corner (32, 32)) on a green key,
/// 4x4 supersampled, blended in linear light: it covers columns/rows 12..=51.
fn disc_on_green() -> (Vec<u8>, Vec<f32>) {
    let (fg, key) = ([200u8, 40, 30], [0u8, 255, 0]);
    let coverage = |x: u32, y: u32| {
        let mut n = 0;
        for sy in 0..4 {
            for sx in 0..4 {
                let (u, v) = (x as f32 + (sx as f32 + 0.5) / 4.0 - 32.0, y as f32 + (sy as f32 + 0.5) / 4.0 - 32.0);
                n += (u * u + v * v <= 400.0) as u32;
            }
        }
        n as f32 / 16.0
    };
    let px = from_fn(64, 64, |x, y| {
        let c = coverage(x, y);
        let m = |f: u8, k: u8| linear_to_srgb(c * srgb_to_linear(f) + (1.0 - c) * srgb_to_linear(k));
        [m(fg[0], key[0]), m(fg[1], key[1]), m(fg[2], key[2]), 255]
    });
    let cov = (0..64).flat_map(|y| (0..64).map(move |x| (x, y))).map(|(x, y)| coverage(x, y)).collect();
    (px, cov)
}

#[test]
fn image_create_copies_with_row_pitch_and_checks_its_arguments() {
    // 3x2 image in a buffer with a 16-byte pitch (4 bytes of padding per row).
    let mut buf = [0xEEu8; 16 + 12];
    for y in 0..2 {
        for i in 0..12 {
            buf[y * 16 + i] = (y * 12 + i) as u8;
        }
    }
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_create(3, 2, buf.as_ptr(), buf.len(), 16, &mut img) }, kiln_status::Ok);
    let (w, h, p) = pixels(img);
    assert_eq!((w, h), (3, 2));
    assert_eq!(p, (0..24).collect::<Vec<u8>>());
    unsafe { kiln_image_free(img) };

    let mut out = ptr::dangling_mut::<kiln_image>(); // must be reset to NULL on failure
    let s = unsafe { kiln_image_create(3, 2, buf.as_ptr(), 27, 16, &mut out) };
    assert_eq!(s, kiln_status::BufferTooSmall);
    assert!(out.is_null());
    assert!(last_error().contains("needs 28"), "{}", last_error());
    assert_eq!(unsafe { kiln_image_create(3, 2, buf.as_ptr(), buf.len(), 8, &mut out) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_image_create(0, 2, buf.as_ptr(), buf.len(), 0, &mut out) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_image_create(3, 0, buf.as_ptr(), buf.len(), 0, &mut out) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_image_create(u32::MAX, u32::MAX, buf.as_ptr(), buf.len(), 0, &mut out) }, kiln_status::InvalidArgument);
    assert_eq!(unsafe { kiln_image_create(3, 2, ptr::null(), 24, 0, &mut out) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_image_create(3, 2, buf.as_ptr(), buf.len(), 0, ptr::null_mut()) }, kiln_status::NullArgument);
}

#[test]
fn sprite_from_a_disc_on_a_green_key() {
    let (px, cov) = disc_on_green();
    let img = create(64, 64, &px);
    let mut sprite = ptr::null_mut();
    let mut bbox = kiln_rect { x: 9, y: 9, width: 9, height: 9 };
    // NULL options = defaults: auto key, despill, straight alpha.
    assert_eq!(unsafe { kiln_image_make_sprite(img, ptr::null(), &mut sprite, &mut bbox) }, kiln_status::Ok, "{}", last_error());
    assert_eq!(bbox, kiln_rect { x: 12, y: 12, width: 40, height: 40 });
    let (_, _, out) = pixels(sprite);
    let mut soft = 0;
    for (p, c) in out.chunks_exact(4).zip(&cov) {
        if *c == 0.0 {
            assert_eq!(p[3], 0);
        }
        if *c == 1.0 {
            assert_eq!(p, [200, 40, 30, 255]);
        }
        if p[3] > 0 && p[3] < 255 {
            soft += 1;
            assert!(p[1] <= p[0].max(p[2]), "green cast {p:?}");
        }
    }
    assert!(soft > 0);
    // The input is untouched.
    assert_eq!(pixels(img).2, px);
    unsafe { kiln_image_free(sprite) };

    // Given key, premultiplied, feathered, bbox threshold; bbox_out may be NULL.
    let mut o = unsafe { std::mem::zeroed::<kiln_sprite_options>() };
    unsafe { kiln_sprite_options_init(&mut o) };
    assert_eq!(o.struct_size as usize, std::mem::size_of::<kiln_sprite_options>());
    assert_eq!((o.auto_key, o.key_rgb, o.despill, o.feather_radius, o.premultiplied, o.bbox_threshold), (1, 0x00FF00, 1, 0, 0, 1));
    o.auto_key = 0;
    o.key_rgb = 0x00FF00;
    o.premultiplied = 1;
    o.feather_radius = 2;
    assert_eq!(unsafe { kiln_image_make_sprite(img, &o, &mut sprite, ptr::null_mut()) }, kiln_status::Ok, "{}", last_error());
    let (_, _, out) = pixels(sprite);
    assert!(out.chunks_exact(4).all(|p| p[0] <= p[3] && p[1] <= p[3] && p[2] <= p[3]));
    assert!(out.chunks_exact(4).filter(|p| p[3] > 0 && p[3] < 255).count() > 100);
    unsafe { kiln_image_free(sprite) };
    o.bbox_threshold = 255;
    o.feather_radius = 0;
    assert_eq!(unsafe { kiln_image_make_sprite(img, &o, &mut sprite, &mut bbox) }, kiln_status::Ok);
    assert!(bbox.x >= 12 && bbox.width <= 40 && bbox.width >= 36, "{bbox:?}");
    unsafe { kiln_image_free(sprite) };

    // An image that is all key: empty box, fully transparent.
    let green = create(8, 8, &[0u8, 255, 0, 255].repeat(64));
    assert_eq!(unsafe { kiln_image_make_sprite(green, ptr::null(), &mut sprite, &mut bbox) }, kiln_status::Ok);
    assert_eq!(bbox, kiln_rect::default());
    assert!(pixels(sprite).2.chunks_exact(4).all(|p| p[3] == 0));
    unsafe { kiln_image_free(sprite) };
    unsafe { kiln_image_free(green) };
    unsafe { kiln_image_free(img) };
}

#[test]
fn sprite_errors() {
    let img = create(4, 4, &[0u8, 255, 0, 255].repeat(16));
    let mut out = ptr::dangling_mut::<kiln_image>();
    let mut bbox = kiln_rect { x: 1, y: 1, width: 1, height: 1 };
    let mut o = unsafe { std::mem::zeroed::<kiln_sprite_options>() };
    unsafe { kiln_sprite_options_init(&mut o) };
    assert_eq!(unsafe { kiln_image_make_sprite(ptr::null(), &o, &mut out, &mut bbox) }, kiln_status::NullArgument);
    assert!(out.is_null());
    assert_eq!(bbox, kiln_rect::default(), "zeroed on entry");
    assert_eq!(unsafe { kiln_image_make_sprite(img, &o, ptr::null_mut(), &mut bbox) }, kiln_status::NullArgument);
    let bad = |f: &dyn Fn(&mut kiln_sprite_options)| {
        let mut b = o;
        f(&mut b);
        let mut out = ptr::null_mut();
        let s = unsafe { kiln_image_make_sprite(img, &b, &mut out, ptr::null_mut()) };
        assert!(out.is_null());
        (s, last_error())
    };
    assert_eq!(bad(&|b| b.struct_size = 3).0, kiln_status::StructSizeMismatch);
    assert_eq!(bad(&|b| b.struct_size += 4).0, kiln_status::StructSizeMismatch);
    let (s, msg) = bad(&|b| {
        b.inner_tolerance = 0.5;
        b.outer_tolerance = 0.1
    });
    assert_eq!(s, kiln_status::InvalidArgument);
    assert!(msg.contains("inner"), "{msg}");
    assert_eq!(bad(&|b| b.inner_tolerance = f32::NAN).0, kiln_status::InvalidArgument);
    assert_eq!(bad(&|b| b.feather_radius = 1000).0, kiln_status::InvalidArgument);
    assert_eq!(bad(&|b| b.bbox_threshold = 256).0, kiln_status::InvalidArgument);
    assert_eq!(bad(&|b| b.key_rgb = 0x0100_0000).0, kiln_status::InvalidArgument);
    unsafe { kiln_sprite_options_init(ptr::null_mut()) }; // ignored
    unsafe { kiln_image_free(img) };
}

#[test]
fn pixel_art_quantizes_snaps_and_scales() {
    let px = from_fn(50, 30, |x, y| [(x * 5) as u8, (y * 8) as u8, ((x * y) % 256) as u8, 255]);
    let img = create(50, 30, &px);
    let mut o = unsafe { std::mem::zeroed::<kiln_pixel_art_options>() };
    unsafe { kiln_pixel_art_options_init(&mut o) };
    assert_eq!((o.cell, o.scale, o.colors, o.cell_color, o.alpha_threshold, o.palette_len), (8, 1, 16, 0, 0, 0));
    o.cell = 4;
    o.scale = 2;
    o.colors = 6;
    let mut out = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_pixel_art(img, &o, &mut out) }, kiln_status::Ok, "{}", last_error());
    let (w, h, a) = pixels(out);
    assert_eq!((w, h), (13 * 2, 8 * 2), "ceil(50/4) x ceil(30/4) cells, scale 2");
    let colors: HashSet<[u8; 3]> = a.chunks_exact(4).map(|p| [p[0], p[1], p[2]]).collect();
    assert!(colors.len() <= 6 && colors.len() > 1, "{}", colors.len());
    for y in 0..h as usize {
        for x in 0..w as usize {
            let (i, j) = ((y * w as usize + x) * 4, ((y & !1) * w as usize + (x & !1)) * 4);
            assert_eq!(a[i..i + 4], a[j..j + 4], "each cell is one colour");
        }
    }
    // Deterministic.
    let mut again = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_pixel_art(img, &o, &mut again) }, kiln_status::Ok);
    assert_eq!(pixels(again).2, a);
    unsafe { kiln_image_free(again) };
    unsafe { kiln_image_free(out) };

    // Caller palette: every output colour is one of it; binary alpha.
    let palette: [u8; 12] = [0, 0, 0, 255, 255, 255, 180, 40, 40, 40, 90, 200];
    o.palette_rgb = palette.as_ptr();
    o.palette_len = palette.len();
    o.alpha_threshold = 128;
    o.cell_color = kiln_cell_color::Mode as u32;
    assert_eq!(unsafe { kiln_image_pixel_art(img, &o, &mut out) }, kiln_status::Ok, "{}", last_error());
    let (_, _, a) = pixels(out);
    let allowed: Vec<&[u8]> = palette.chunks_exact(3).collect();
    assert!(a.chunks_exact(4).all(|p| allowed.contains(&&p[..3]) && (p[3] == 0 || p[3] == 255)));
    unsafe { kiln_image_free(out) };

    // NULL options = defaults (8-pixel cells, scale 1).
    assert_eq!(unsafe { kiln_image_pixel_art(img, ptr::null(), &mut out) }, kiln_status::Ok);
    assert_eq!(pixels(out).0, 7);
    unsafe { kiln_image_free(out) };
    unsafe { kiln_image_free(img) };
}

#[test]
fn pixel_art_errors() {
    let img = create(8, 8, &[9u8; 256]);
    let mut good = unsafe { std::mem::zeroed::<kiln_pixel_art_options>() };
    unsafe { kiln_pixel_art_options_init(&mut good) };
    let palette = [1u8; 12];
    let run = |f: &dyn Fn(&mut kiln_pixel_art_options)| {
        let mut o = good;
        f(&mut o);
        let mut out = ptr::dangling_mut::<kiln_image>();
        let s = unsafe { kiln_image_pixel_art(img, &o, &mut out) };
        if s == kiln_status::Ok {
            unsafe { kiln_image_free(out) };
        } else {
            assert!(out.is_null(), "image_out is NULL after a failure");
        }
        s
    };
    assert_eq!(run(&|_| {}), kiln_status::Ok);
    // A palette of 0 colours.
    assert_eq!(
        run(&|o| {
            o.palette_rgb = palette.as_ptr();
            o.palette_len = 0
        }),
        kiln_status::InvalidArgument
    );
    assert!(last_error().contains("multiple of 3"), "{}", last_error());
    // A length that is not a multiple of 3.
    assert_eq!(
        run(&|o| {
            o.palette_rgb = palette.as_ptr();
            o.palette_len = 4
        }),
        kiln_status::InvalidArgument
    );
    assert_eq!(run(&|o| o.palette_len = 3), kiln_status::NullArgument, "NULL palette with a length");
    assert_eq!(run(&|o| o.cell = 0), kiln_status::InvalidArgument);
    assert!(last_error().contains("cell"), "{}", last_error());
    assert_eq!(run(&|o| o.scale = 0), kiln_status::InvalidArgument);
    assert_eq!(run(&|o| o.colors = 257), kiln_status::InvalidArgument);
    assert_eq!(run(&|o| o.cell_color = 2), kiln_status::InvalidArgument);
    assert_eq!(run(&|o| o.alpha_threshold = 256), kiln_status::InvalidArgument);
    assert_eq!(run(&|o| o.struct_size = 8), kiln_status::StructSizeMismatch);
    let mut out = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_pixel_art(ptr::null(), &good, &mut out) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_image_pixel_art(img, &good, ptr::null_mut()) }, kiln_status::NullArgument);
    unsafe { kiln_image_free(img) };
}

#[test]
fn material_maps_through_the_c_api() {
    // Height rises down the image.
    let ramp = create(16, 16, &from_fn(16, 16, |_, y| [(y * 16) as u8, (y * 16) as u8, (y * 16) as u8, 255]));
    let mut o = unsafe { std::mem::zeroed::<kiln_material_options>() };
    unsafe { kiln_material_options_init(&mut o) };
    assert_eq!((o.blur_radius, o.strength, o.convention, o.wrap, o.invert_height), (1, 4.0, 0, 0, 0));
    let (mut hgt, mut gl) = (ptr::null_mut(), ptr::null_mut());
    assert_eq!(unsafe { kiln_image_material_maps(ramp, &o, &mut hgt, &mut gl) }, kiln_status::Ok, "{}", last_error());
    let (_, _, h) = pixels(hgt);
    assert!(h[(2 * 16 + 5) * 4] < h[(12 * 16 + 5) * 4], "height follows luminance");
    assert!(h.chunks_exact(4).all(|p| p[0] == p[1] && p[1] == p[2] && p[3] == 255));
    o.convention = kiln_normal_convention::Directx as u32;
    let mut dx = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_material_maps(ramp, &o, ptr::null_mut(), &mut dx) }, kiln_status::Ok);
    let (g, d) = (pixels(gl).2, pixels(dx).2);
    let i = (8 * 16 + 8) * 4;
    assert!(g[i + 1] > 128 && d[i + 1] < 128, "OpenGL green up, DirectX green down: {} {}", g[i + 1], d[i + 1]);
    for (a, b) in g.chunks_exact(4).zip(d.chunks_exact(4)) {
        assert_eq!((a[0], a[2]), (b[0], b[2]));
        assert!((a[1] as i32 + b[1] as i32 - 255).abs() <= 1);
        let n: Vec<f32> = a[..3].iter().map(|c| *c as f32 / 255.0 * 2.0 - 1.0).collect();
        let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
        assert!((len - 1.0).abs() <= 1.0 / 127.0, "{len}");
    }
    for m in [hgt, gl, dx] {
        unsafe { kiln_image_free(m) };
    }

    // Flat input: (128, 128, 255).
    let flat = create(5, 5, &[70u8, 80, 90, 255].repeat(25));
    let mut n = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_material_maps(flat, ptr::null(), ptr::null_mut(), &mut n) }, kiln_status::Ok);
    assert!(pixels(n).2.chunks_exact(4).all(|p| p == [128, 128, 255, 255]));
    unsafe { kiln_image_free(n) };

    // Errors.
    let mut out = ptr::dangling_mut::<kiln_image>();
    assert_eq!(unsafe { kiln_image_material_maps(flat, ptr::null(), ptr::null_mut(), ptr::null_mut()) }, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_image_material_maps(ptr::null(), ptr::null(), &mut out, ptr::null_mut()) }, kiln_status::NullArgument);
    assert!(out.is_null());
    let mut bad = o;
    bad.convention = 7;
    assert_eq!(unsafe { kiln_image_material_maps(flat, &bad, &mut out, ptr::null_mut()) }, kiln_status::InvalidArgument);
    bad = o;
    bad.strength = -1.0;
    assert_eq!(unsafe { kiln_image_material_maps(flat, &bad, &mut out, ptr::null_mut()) }, kiln_status::InvalidArgument);
    bad = o;
    bad.struct_size = 0;
    assert_eq!(unsafe { kiln_image_material_maps(flat, &bad, &mut out, ptr::null_mut()) }, kiln_status::StructSizeMismatch);
    unsafe { kiln_image_free(flat) };
    unsafe { kiln_image_free(ramp) };
}

#[test]
fn seam_scores_through_the_c_api() {
    // Triangle wave in x (period = width): the wrap edge looks like the inside.
    let tri = create(32, 8, &from_fn(32, 8, |x, y| [(8 * (x as i32 - 16).unsigned_abs()) as u8, (y * 30) as u8, 0, 255]));
    // A ramp in x: a hard seam at the wrap edge.
    let ramp = create(32, 8, &from_fn(32, 8, |x, _| [(x * 8) as u8, 0, 0, 255]));
    let score = |img, axis| {
        let mut s = -1.0f32;
        let st = unsafe { kiln_image_seam_score(img, axis, &mut s) };
        (st, s)
    };
    let (st, s) = score(tri, 1);
    assert_eq!(st, kiln_status::Ok);
    assert!((s - 1.0).abs() < 1e-6, "{s}");
    let (_, s) = score(ramp, 1);
    assert!(s > 20.0, "{s}");
    let (_, s) = score(ramp, 2);
    assert_eq!(s, 1.0, "identical rows tile vertically");
    let (_, s) = score(tri, 2);
    assert!(s > 5.0, "the y ramp of green does not tile: {s}");
    // A wrapped normal map of a periodic texture is the tile of the map of the
    // texture tiled twice: continuous across the seam. Clamped, it is not.
    let tri2 = create(64, 8, &from_fn(64, 8, |x, y| [(8 * ((x % 32) as i32 - 16).unsigned_abs()) as u8, (y * 30) as u8, 0, 255]));
    let mut o = unsafe { std::mem::zeroed::<kiln_material_options>() };
    unsafe { kiln_material_options_init(&mut o) };
    let normals = |img, wrap| {
        let mut n = ptr::null_mut();
        let o = kiln_material_options { wrap, ..o };
        assert_eq!(unsafe { kiln_image_material_maps(img, &o, ptr::null_mut(), &mut n) }, kiln_status::Ok);
        let p = pixels(n).2;
        unsafe { kiln_image_free(n) };
        p
    };
    let (one, two) = (normals(tri, 1), normals(tri2, 1));
    for y in 0..8 {
        for x in 0..64 {
            let (i, j) = ((y * 64 + x) * 4, (y * 32 + x % 32) * 4);
            assert_eq!(two[i..i + 4], one[j..j + 4], "({x}, {y})");
        }
    }
    let clamped = normals(tri, 0);
    assert!((0..8).any(|y| clamped[y * 32 * 4..y * 32 * 4 + 4] != two[(y * 64 + 32) * 4..(y * 64 + 32) * 4 + 4]));

    for bad_axis in [0u32, 3, 99] {
        let (st, s) = score(tri, bad_axis);
        assert_eq!(st, kiln_status::InvalidArgument);
        assert_eq!(s, 0.0, "score_out zeroed on entry");
    }
    let one_col = create(1, 4, &[1u8; 16]);
    assert_eq!(score(one_col, 1).0, kiln_status::InvalidArgument);
    assert_eq!(score(ptr::null_mut(), 1).0, kiln_status::NullArgument);
    assert_eq!(unsafe { kiln_image_seam_score(tri, 1, ptr::null_mut()) }, kiln_status::NullArgument);
    for img in [tri, tri2, ramp, one_col] {
        unsafe { kiln_image_free(img) };
    }
}

/// A generated image goes through every post-process.
#[test]
fn generated_images_post_process() {
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok, "{}", last_error());
    let dir = CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut model) }, kiln_status::Ok, "{}", last_error());
    let prompt = CString::new("a red gem on a plain green background").unwrap();
    let mut go = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut go) };
    go.prompt = prompt.as_ptr();
    go.steps = 2;
    let mut img = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_generate(model, &go, &mut img) }, kiln_status::Ok, "{}", last_error());
    let (w, h, _) = pixels(img);

    let (mut sprite, mut bbox) = (ptr::null_mut(), kiln_rect::default());
    assert_eq!(unsafe { kiln_image_make_sprite(img, ptr::null(), &mut sprite, &mut bbox) }, kiln_status::Ok);
    assert_eq!(pixels(sprite).0, w);
    assert!(bbox.x + bbox.width <= w && bbox.y + bbox.height <= h);
    let mut art = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_pixel_art(img, ptr::null(), &mut art) }, kiln_status::Ok);
    assert_eq!(pixels(art).0, w.div_ceil(8));
    let (mut hm, mut nm) = (ptr::null_mut(), ptr::null_mut());
    assert_eq!(unsafe { kiln_image_material_maps(img, ptr::null(), &mut hm, &mut nm) }, kiln_status::Ok);
    let mut s = 0.0f32;
    assert_eq!(unsafe { kiln_image_seam_score(img, 1, &mut s) }, kiln_status::Ok);
    assert!(s.is_finite() && s >= 0.0);
    for i in [img, sprite, art, hm, nm] {
        unsafe { kiln_image_free(i) };
    }
    unsafe { kiln_model_free(model) };
    unsafe { kiln_runtime_destroy(rt) };
}
