//! img2img parity with optimum's ORTStableDiffusionImg2ImgPipeline on the tiny
//! fixture (tools/make_img2img_golden.py): same init picture, same strength,
//! every random draw replayed (VAE posterior sample, start noise, step noise).
//! Every scheduler but `lcm` (tests/lcm_img2img.rs has it): the multistep ones (DPM-Solver++, UniPC, PNDM,
//! LMS) start part-way as diffusers does with `set_begin_index`, Heun at
//! `t_start · 2`. Tolerances as tests/parity.rs: latents ≤ 1e-3 relative,
//! image ≤ 2e-3, U-Net timesteps exact.
mod common;

use kiln::pipeline::{GenerateRequest, Hooks, InitImage};
use kiln::SchedulerKind;

fn init_image() -> InitImage {
    kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).unwrap()
}

fn case(name: &str) {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::golden("img2img/cases.json")).unwrap()).unwrap();
    let c = cases.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
    let scheduler = SchedulerKind::from_name(c["kiln_scheduler"].as_str().unwrap()).unwrap();
    let (_, draws) = common::read_npy(&format!("img2img/{name}.draws.npy"));
    let request = GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().into(),
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        strength: c["strength"].as_f64().unwrap() as f32,
        scheduler,
        init_image: Some(init_image()),
        step_noise: Some(draws),
        ..Default::default()
    };
    let out = common::tiny_model().generate_with(&request, Hooks::default()).unwrap();
    let want_t: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: timesteps");
    let (_, want) = common::read_npy(&format!("img2img/{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want) / scale;
    common::check_margin(&format!("img2img::{name}::latents_rel"), rel as f64, 1e-3);
    let (_, want_img) = common::read_npy(&format!("img2img/{name}.image.npy"));
    let d = common::max_abs_diff(&out.image.data, &want_img);
    common::check_margin(&format!("img2img::{name}::image_abs"), d as f64, 2e-3);
    eprintln!("{name}: latents {rel:e}, image {d:e}");
}

#[test]
fn ddim_strength_06_matches_diffusers() {
    case("ddim_s06");
}

#[test]
fn euler_strength_06_matches_diffusers() {
    case("euler_s06");
}

#[test]
fn ddim_strength_1_matches_diffusers() {
    case("ddim_s10");
}

#[test]
fn euler_strength_03_without_guidance_matches_diffusers() {
    case("euler_s03_noguide");
}

#[test]
fn dpmpp_2m_strength_06_matches_diffusers() {
    case("dpmpp_2m_s06");
}

#[test]
fn dpmpp_2m_karras_strength_05_matches_diffusers() {
    case("dpmpp_2m_karras_s05");
}

#[test]
fn dpmpp_2m_sde_strength_06_matches_diffusers() {
    case("dpmpp_2m_sde_s06");
}

#[test]
fn unipc_strength_06_matches_diffusers() {
    case("unipc_s06");
}

#[test]
fn unipc_strength_1_without_guidance_matches_diffusers() {
    case("unipc_s1_noguide");
}

#[test]
fn pndm_strength_06_matches_diffusers() {
    case("pndm_s06");
}

#[test]
fn lms_strength_06_matches_diffusers() {
    case("lms_s06");
}

#[test]
fn heun_strength_05_matches_diffusers() {
    case("heun_s05");
}

#[test]
fn bad_img2img_requests_are_reported() {
    let m = common::tiny_model();
    let base = GenerateRequest { prompt: "x".into(), steps: 4, init_image: Some(init_image()), scheduler: SchedulerKind::Ddim, ..Default::default() };
    let err = |r: GenerateRequest| m.generate_with(&r, Hooks::default()).unwrap_err();
    assert_eq!(err(GenerateRequest { strength: 0.1, ..base.clone() }).kind(), kiln::ErrorKind::InvalidArgument);
    assert_eq!(err(GenerateRequest { strength: 1.5, ..base.clone() }).kind(), kiln::ErrorKind::InvalidArgument);
    let bad = InitImage { width: 64, height: 64, rgb: vec![0; 10] };
    assert_eq!(err(GenerateRequest { init_image: Some(bad), ..base.clone() }).kind(), kiln::ErrorKind::InvalidSize);
    // `lcm` img2img is checked against diffusers in tests/lcm_img2img.rs.
    // A differently sized picture is resized; the posterior mean is deterministic.
    let small = InitImage { width: 32, height: 32, rgb: vec![128; 32 * 32 * 3] };
    let r = GenerateRequest { init_image: Some(small), posterior_mean: true, ..base.clone() };
    let a = m.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!((a.image.width, a.image.height), (64, 64));
}

#[test]
fn c_api_img2img_checks_the_picture_and_runs() {
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut m = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut m) }, kiln_status::Ok);
    let prompt = std::ffi::CString::new("moss").unwrap();
    let init = init_image();
    // RGBA with a padded row pitch.
    let pitch = 64 * 4 + 8;
    let mut rgba = vec![0u8; pitch * 64];
    for y in 0..64 {
        for x in 0..64 {
            let s = (y * 64 + x) * 3;
            rgba[y * pitch + x * 4..y * pitch + x * 4 + 4].copy_from_slice(&[init.rgb[s], init.rgb[s + 1], init.rgb[s + 2], 255]);
        }
    }
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 4;
    o.scheduler = 1;
    o.init_image = rgba.as_ptr();
    o.init_image_len = rgba.len();
    o.init_image_width = 64;
    o.init_image_height = 64;
    o.init_image_row_pitch = pitch;
    o.init_image_channels = 4;
    o.strength = 0.5;
    let mut out = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(m, &o, out.as_mut_ptr(), out.len(), 0) }, kiln_status::Ok);
    let mut bad = o;
    bad.init_image_len = 100;
    assert_eq!(unsafe { kiln_model_generate_into(m, &bad, out.as_mut_ptr(), out.len(), 0) }, kiln_status::BufferTooSmall);
    let mut bad = o;
    bad.init_image_channels = 2;
    assert_eq!(unsafe { kiln_model_generate_into(m, &bad, out.as_mut_ptr(), out.len(), 0) }, kiln_status::InvalidArgument);
    let mut bad = o;
    bad.strength = 0.01;
    assert_eq!(unsafe { kiln_model_generate_into(m, &bad, out.as_mut_ptr(), out.len(), 0) }, kiln_status::InvalidArgument);
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}
