//! img2img and inpainting with the `lcm` scheduler against diffusers
//! (tools/make_lcm_img2img_golden.py), every random draw replayed:
//! - an LCM-distilled U-Net (`timestep_cond`, variants/lcm-unet) as optimum's
//!   ORTLatentConsistencyModelImg2ImgPipeline: the schedule comes from the
//!   first int(original_inference_steps · strength) distillation timesteps
//!   and all `steps` steps run;
//! - a plain U-Net (tiny-sd, as with an LCM-LoRA) with LCMScheduler as
//!   ORTStableDiffusionImg2ImgPipeline / ORTStableDiffusionInpaintPipeline:
//!   the full LCM schedule sliced by the strength.
//!
//! Bounds as tests/img2img.rs: latents ≤ 1e-3 relative, image (inpainting:
//! the repainted area) ≤ 2e-3 absolute, U-Net timesteps exact.
mod common;

use std::sync::OnceLock;

use kiln::pipeline::{GenerateRequest, Hooks, InitImage, Mask};
use kiln::{Model, SchedulerKind};

fn lcm_unet() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(common::runtime(), &common::variant_folder("lcm-unet")).expect("lcm-unet loads"))
}

fn init() -> InitImage {
    kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).unwrap()
}

fn mask() -> Mask {
    let mut reader = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(common::golden("inpaint/mask.png")).unwrap()))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let ch = info.color_type.samples();
    Mask { width: info.width as usize, height: info.height as usize, data: buf[..info.buffer_size()].chunks(ch).map(|p| p[0]).collect() }
}

fn case_request(name: &str) -> (GenerateRequest, &'static Model, serde_json::Value) {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::golden("lcm_img2img/cases.json")).unwrap()).unwrap();
    let c = cases.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap().clone();
    let (_, draws) = common::read_npy(&format!("lcm_img2img/{name}.draws.npy"));
    let model = match c["model"].as_str().unwrap() {
        "lcm-unet" => lcm_unet(),
        _ => common::tiny_model(),
    };
    let request = GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().into(),
        steps: c["steps"].as_u64().unwrap() as usize,
        strength: c["strength"].as_f64().unwrap() as f32,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        scheduler: SchedulerKind::Lcm,
        init_image: Some(init()),
        mask: c.get("mask").map(|_| mask()),
        // The posterior sample, the start noise, [the masked picture's sample,] LCM's step noise.
        step_noise: Some(draws),
        ..Default::default()
    };
    (request, model, c)
}

/// Latents (relative) and image (absolute; inpainting: repainted pixels only) from the golden.
fn case(name: &str) -> (f64, f64) {
    let (request, model, c) = case_request(name);
    let out = model.generate_with(&request, Hooks::default()).unwrap();
    let want_t: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: timesteps");
    let (_, want) = common::read_npy(&format!("lcm_img2img/{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let latents = (common::max_abs_diff(&got, &want) / scale) as f64;
    let (_, want_img) = common::read_npy(&format!("lcm_img2img/{name}.image.npy"));
    let image = match &request.mask {
        None => common::max_abs_diff(&out.image.data, &want_img) as f64,
        Some(m) => {
            // Kiln pastes the kept pixels back (diffusers does not): compare the repainted area.
            let mut d = 0f32;
            for (p, &v) in m.data.iter().enumerate() {
                if v >= 128 {
                    for ch in 0..3 {
                        d = d.max((out.image.data[p * 3 + ch] - want_img[p * 3 + ch]).abs());
                    }
                }
            }
            d as f64
        }
    };
    common::check_margin(&format!("lcm_img2img::{name}::latents_rel"), latents, 1e-3);
    common::check_margin(&format!("lcm_img2img::{name}::image_abs"), image, 2e-3);
    eprintln!("{name}: timesteps {want_t:?}; latents {latents:e} (bound 1e-3), image {image:e} (bound 2e-3)");
    (latents, image)
}

#[test]
fn lcm_unet_img2img_at_strength_0_6_matches_diffusers() {
    case("lcm_unet_s06");
}

#[test]
fn lcm_unet_img2img_at_strength_0_3_with_6_steps_matches_diffusers() {
    case("lcm_unet_s03_6steps");
}

#[test]
fn plain_unet_img2img_with_lcm_matches_diffusers() {
    case("plain_unet_s05");
}

#[test]
fn plain_unet_inpainting_with_lcm_matches_diffusers() {
    case("plain_unet_inpaint_s075");
}

/// The distilled-U-Net schedule is really the shortened one: slicing the full
/// LCM schedule by the strength (what the plain pipelines do) gives other
/// timesteps than diffusers' LCM img2img pipeline ran.
#[test]
fn the_lcm_unet_schedule_is_not_the_strength_slice() {
    let (_, _, c) = case_request("lcm_unet_s06");
    let full = [999.0, 759.0, 499.0, 259.0]; // LCMScheduler.set_timesteps(4)
    let slice = &full[4 - (4.0 * 0.6) as usize..];
    let want: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_ne!(slice, &want[..]);
    assert_eq!(want.len(), 4, "every step runs");
}

#[test]
fn a_strength_that_keeps_fewer_timesteps_than_steps_is_invalid() {
    let (mut request, model, _) = case_request("lcm_unet_s06");
    request.strength = 0.05; // int(50 · 0.05) = 2 < 4 steps
    let e = model.generate_with(&request, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), kiln::ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("distillation timesteps"), "{e}");
}
