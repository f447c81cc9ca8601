//! Inpainting with an ordinary U-Net, against optimum's
//! ORTStableDiffusionInpaintPipeline on the tiny fixture
//! (tools/make_inpaint_golden.py, every draw replayed): final latents within
//! 1e-3 relative, the repainted area within 2e-3 of diffusers' image, and the
//! kept area exactly the input picture.
mod common;

use kiln::pipeline::{GenerateRequest, Hooks, InitImage, Mask};
use kiln::SchedulerKind;

fn png_bytes(path: &std::path::Path) -> (usize, usize, usize, Vec<u8>) {
    let mut reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap())).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, info.color_type.samples(), buf)
}

fn init() -> InitImage {
    let (w, h, ch, buf) = png_bytes(&common::golden("ddim_cfg.png"));
    InitImage { width: w, height: h, rgb: buf.chunks(ch).flat_map(|p| [p[0], p[1], p[2]]).collect() }
}

fn mask() -> Mask {
    let (w, h, ch, buf) = png_bytes(&common::golden("inpaint/mask.png"));
    Mask { width: w, height: h, data: buf.chunks(ch).map(|p| p[0]).collect() }
}

fn case(name: &str, scheduler: SchedulerKind, steps: usize, strength: f32) {
    let (_, draws) = common::read_npy(&format!("inpaint/{name}.draws.npy"));
    let request = GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        negative_prompt: "blurry".into(),
        steps,
        strength,
        scheduler,
        init_image: Some(init()),
        mask: Some(mask()),
        step_noise: Some(draws),
        ..Default::default()
    };
    let out = common::tiny_model().generate_with(&request, Hooks::default()).unwrap();
    let (_, want) = common::read_npy(&format!("inpaint/{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want) / scale;
    assert!(rel <= 1e-3, "{name}: latents differ by {rel:e}");
    let (_, want_img) = common::read_npy(&format!("inpaint/{name}.image.npy"));
    let (m, i) = (mask(), init());
    let (mut worst_painted, mut kept_exact) = (0f32, true);
    for p in 0..64 * 64 {
        for c in 0..3 {
            let v = out.image.data[p * 3 + c];
            if m.data[p] >= 128 {
                worst_painted = worst_painted.max((v - want_img[p * 3 + c]).abs());
            } else {
                kept_exact &= v == i.rgb[p * 3 + c] as f32 / 255.0;
            }
        }
    }
    assert!(worst_painted <= 2e-3, "{name}: repainted area differs by {worst_painted:e}");
    assert!(kept_exact, "{name}: the kept area must be the input picture exactly");
    eprintln!("{name}: latents {rel:e}, repainted area {worst_painted:e}");
}

#[test]
fn ddim_inpainting_matches_diffusers() {
    case("ddim_s075", SchedulerKind::Ddim, 8, 0.75);
}

#[test]
fn euler_inpainting_at_full_strength_matches_diffusers() {
    case("euler_s1", SchedulerKind::Euler, 8, 1.0);
}

#[test]
fn bad_masks_are_reported() {
    let m = common::tiny_model();
    let base = GenerateRequest { prompt: "x".into(), steps: 4, scheduler: SchedulerKind::Ddim, init_image: Some(init()), mask: Some(mask()), ..Default::default() };
    let small = Mask { width: 32, height: 32, data: vec![255; 32 * 32] };
    let e = m.generate_with(&GenerateRequest { mask: Some(small), ..base.clone() }, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), kiln::ErrorKind::InvalidSize, "{e}");
    let e = m.generate_with(&GenerateRequest { init_image: None, ..base.clone() }, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), kiln::ErrorKind::InvalidArgument, "{e}");
}

#[test]
fn c_api_inpainting_keeps_the_unmasked_pixels() {
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut model) }, kiln_status::Ok);
    let (i, m) = (init(), mask());
    let prompt = std::ffi::CString::new("lava").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 4;
    o.scheduler = 1;
    o.init_image = i.rgb.as_ptr();
    o.init_image_len = i.rgb.len();
    o.init_image_width = 64;
    o.init_image_height = 64;
    o.init_image_channels = 3;
    o.mask = m.data.as_ptr();
    o.mask_len = m.data.len();
    o.mask_width = 64;
    o.mask_height = 64;
    let mut out = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(model, &o, out.as_mut_ptr(), out.len(), 0) }, kiln_status::Ok);
    for p in 0..64 * 64 {
        if m.data[p] < 128 {
            assert_eq!(&out[p * 4..p * 4 + 3], &i.rgb[p * 3..p * 3 + 3], "kept pixel {p} changed");
        }
    }
    let mut bad = o;
    bad.mask_len = 10;
    assert_eq!(unsafe { kiln_model_generate_into(model, &bad, out.as_mut_ptr(), out.len(), 0) }, kiln_status::InvalidSize);
    unsafe { kiln_model_free(model) };
    unsafe { kiln_runtime_destroy(rt) };
}
