//! Golden parity with the reference pipeline (optimum's ORTStableDiffusionPipeline
//! with diffusers' schedulers) on the same tiny graphs and the same initial noise.
//! The goldens are made by tools/make_golden.py.
//!
//! Tolerances: final latents max|Δ| ≤ 1e-3 × max|reference| (relative);
//! decoded float image max|Δ| ≤ 2e-3 (absolute, image in [0, 1]);
//! U-Net timesteps exactly equal.
mod common;

use kiln::pipeline::{GenerateRequest, Hooks, InitialNoise};
use kiln::SchedulerKind;

fn case(name: &str) {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::golden("cases.json")).unwrap()).unwrap();
    let c = cases.as_array().unwrap().iter().find(|c| c["name"] == name).expect("case in cases.json");
    // `kiln_scheduler` is the Kiln name the case stands for (the class alone
    // does not tell DPM-Solver++ 2M from its Karras variant).
    let kiln_name = c["kiln_scheduler"].as_str().expect("case names its kiln_scheduler");
    let scheduler = SchedulerKind::from_name(kiln_name).unwrap_or_else(|| panic!("no Kiln scheduler {kiln_name}"));
    if kiln_name != "dpmpp_2m_karras" {
        let class = c["scheduler"].as_str().unwrap();
        assert_eq!(SchedulerKind::from_class_name(class), Some(scheduler), "{name}: {class} maps to {kiln_name}");
    }
    let (shape, noise) = common::read_npy(c["noise"].as_str().unwrap());
    let request = GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap_or("").into(),
        width: c["width"].as_u64().unwrap() as usize,
        height: c["height"].as_u64().unwrap() as usize,
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        seed: 0,
        scheduler,
        initial_noise: Some(InitialNoise { shape: [shape[0], shape[1], shape[2], shape[3]], data: noise }),
    };
    let out = common::tiny_model().generate_with(&request, Hooks::default()).expect("generation succeeds");

    let want_t: Vec<f64> = c["unet_timestep_feed"]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: U-Net timesteps");

    let (lshape, want_latents) = common::read_npy(c["files"]["latents"].as_str().unwrap());
    assert_eq!(out.latents.shape(), &lshape[..], "{name}: latent shape");
    let got_latents: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want_latents.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got_latents, &want_latents) / scale;
    assert!(rel <= 1e-3, "{name}: final latents differ by {rel:e} relative (max |ref| {scale})");

    let (ishape, want_image) = common::read_npy(c["files"]["image"].as_str().unwrap());
    assert_eq!(ishape, vec![out.image.height, out.image.width, 3], "{name}: image shape");
    let d = common::max_abs_diff(&out.image.data, &want_image);
    assert!(d <= 2e-3, "{name}: decoded image differs by {d:e}");
    eprintln!("{name}: latents rel {rel:e}, image abs {d:e}");
}

#[test]
fn ddim_with_guidance_matches_diffusers() {
    case("ddim_cfg");
}

#[test]
fn euler_with_guidance_matches_diffusers() {
    case("euler_cfg");
}

#[test]
fn ddim_without_guidance_matches_diffusers() {
    case("ddim_noguide");
}

#[test]
fn euler_without_guidance_matches_diffusers() {
    case("euler_noguide");
}

#[test]
fn pndm_with_guidance_matches_diffusers() {
    case("pndm_cfg");
}

#[test]
fn pndm_without_guidance_matches_diffusers() {
    case("pndm_noguide");
}

#[test]
fn dpmpp_2m_with_guidance_matches_diffusers() {
    case("dpmpp_2m_cfg");
}

#[test]
fn dpmpp_2m_karras_with_guidance_matches_diffusers() {
    case("dpmpp_2m_karras_cfg");
}

#[test]
fn lms_with_guidance_matches_diffusers() {
    case("lms_cfg");
}

#[test]
fn heun_with_guidance_matches_diffusers() {
    case("heun_cfg");
}

#[test]
fn text_embeddings_match_diffusers() {
    let m = common::tiny_model();
    for (prompt, file) in [("mossy stone brick wall", "ddim_cfg.cond_embeds.npy"), ("blurry", "ddim_cfg.uncond_embeds.npy")] {
        let got = m.encode_prompt(prompt).unwrap();
        let (shape, want) = common::read_npy(file);
        assert_eq!(got.shape(), &shape[..]);
        let d = common::max_abs_diff(&got.iter().copied().collect::<Vec<_>>(), &want);
        assert!(d <= 1e-4, "{prompt}: embeddings differ by {d:e}");
    }
}
