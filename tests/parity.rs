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
    if !matches!(kiln_name, "dpmpp_2m_karras" | "dpmpp_2m_sde") {
        let class = c["scheduler"].as_str().unwrap();
        assert_eq!(SchedulerKind::from_class_name(class), Some(scheduler), "{name}: {class} maps to {kiln_name}");
    }
    let (shape, noise) = common::read_npy(c["noise"].as_str().unwrap());
    // Stochastic schedulers replay diffusers' recorded draws.
    let step_noise = c["files"]["step_noise"].as_str().map(|f| {
        let (s, data) = common::read_npy(f);
        assert_eq!(s[0] as u64, c["step_noise_draws"].as_u64().unwrap(), "{name}: draws");
        assert_eq!(&s[1..], &shape[..], "{name}: one latent-sized block per draw");
        data
    });
    assert_eq!(step_noise.is_some(), scheduler.is_stochastic(), "{name}: step noise iff stochastic");
    let request = GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap_or("").into(),
        width: c["width"].as_u64().unwrap() as usize,
        height: c["height"].as_u64().unwrap() as usize,
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        guidance_rescale: c["guidance_rescale"].as_f64().unwrap_or(0.0) as f32,
        seed: 0,
        scheduler,
        initial_noise: Some(InitialNoise { shape: [shape[0], shape[1], shape[2], shape[3]], data: noise }),
        step_noise,
        // The case's scheduler config as diffusers built it (overrides included).
        scheduler_overrides: Some(c["scheduler_config"].clone()),
        ..Default::default()
    };
    let out = common::tiny_model().generate_with(&request, Hooks::default()).expect("generation succeeds");

    let want_t: Vec<f64> = c["unet_timestep_feed"]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: U-Net timesteps");

    let (lshape, want_latents) = common::read_npy(c["files"]["latents"].as_str().unwrap());
    assert_eq!(out.latents.shape(), &lshape[..], "{name}: latent shape");
    let got_latents: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want_latents.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got_latents, &want_latents) / scale;
    common::check_margin(&format!("parity::{name}::latents_rel"), rel as f64, 1e-3);

    let (ishape, want_image) = common::read_npy(c["files"]["image"].as_str().unwrap());
    assert_eq!(ishape, vec![out.image.height, out.image.width, 3], "{name}: image shape");
    let d = common::max_abs_diff(&out.image.data, &want_image);
    common::check_margin(&format!("parity::{name}::image_abs"), d as f64, 2e-3);
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
fn euler_ancestral_with_guidance_matches_diffusers() {
    case("euler_a_cfg");
}

#[test]
fn dpmpp_2m_sde_with_guidance_matches_diffusers() {
    case("dpmpp_2m_sde_cfg");
}

#[test]
fn unipc_with_guidance_matches_diffusers() {
    case("unipc_cfg");
}

#[test]
fn lcm_with_guidance_matches_diffusers() {
    case("lcm_cfg");
}

#[test]
fn euler_with_guidance_rescale_matches_diffusers() {
    case("euler_rescale");
}

#[test]
fn ddim_with_clip_sample_matches_diffusers() {
    case("ddim_clip");
}

#[test]
fn ddim_with_dynamic_thresholding_matches_diffusers() {
    case("ddim_threshold");
}

#[test]
fn euler_with_zero_terminal_snr_and_trailing_spacing_matches_diffusers() {
    case("euler_zero_snr");
}

/// Every case in cases.json has a test above.
#[test]
fn every_golden_case_is_tested() {
    let src = include_str!("parity.rs");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::golden("cases.json")).unwrap()).unwrap();
    for c in cases.as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        assert!(src.contains(&format!("case(\"{name}\")")), "no parity test runs {name}");
    }
}

/// Same seed, same stochastic image; the per-step noise continues the seed's
/// stream, so a different seed changes it.
#[test]
fn stochastic_schedulers_are_reproducible_from_the_seed() {
    let m = common::tiny_model();
    for scheduler in [SchedulerKind::EulerA, SchedulerKind::DpmPP2MSde, SchedulerKind::Lcm] {
        let request = GenerateRequest {
            prompt: "rusty iron plate".into(),
            steps: 4,
            guidance_scale: 1.0,
            seed: 11,
            scheduler,
            ..Default::default()
        };
        let a = m.generate_with(&request, Hooks::default()).unwrap().latents;
        let b = m.generate_with(&request, Hooks::default()).unwrap().latents;
        assert_eq!(a, b, "{scheduler:?}");
        // Same initial latents (given), different seed: only the step noise differs.
        let init = kiln::pipeline::noise::NoiseRng::new(11).normals(4 * 8 * 8);
        let given = |seed| GenerateRequest {
            seed,
            initial_noise: Some(InitialNoise { shape: [1, 4, 8, 8], data: init.clone() }),
            ..request.clone()
        };
        let c = m.generate_with(&given(1), Hooks::default()).unwrap().latents;
        let d = m.generate_with(&given(2), Hooks::default()).unwrap().latents;
        assert_ne!(c, d, "{scheduler:?}: step noise follows the seed");
    }
}

#[test]
fn step_noise_must_match_the_draws() {
    let m = common::tiny_model();
    let request = GenerateRequest {
        prompt: "rusty iron plate".into(),
        steps: 4,
        guidance_scale: 1.0,
        scheduler: SchedulerKind::EulerA,
        step_noise: Some(vec![0.0; 3 * 256]),
        ..Default::default()
    };
    let err = m.generate_with(&request, Hooks::default()).unwrap_err();
    assert!(err.to_string().contains("ran out"), "{err}");
    let request = GenerateRequest { step_noise: Some(vec![0.0; 5 * 256]), ..request };
    let err = m.generate_with(&request, Hooks::default()).unwrap_err();
    assert!(err.to_string().contains("did not use"), "{err}");
}

#[test]
fn text_embeddings_match_diffusers() {
    let m = common::tiny_model();
    for (prompt, file) in [("mossy stone brick wall", "ddim_cfg.cond_embeds.npy"), ("blurry", "ddim_cfg.uncond_embeds.npy")] {
        let got = m.encode_prompt(prompt).unwrap();
        let (shape, want) = common::read_npy(file);
        assert_eq!(got.shape(), &shape[..]);
        let d = common::max_abs_diff(&got.iter().copied().collect::<Vec<_>>(), &want);
        common::check_margin(&format!("parity::embeds::{prompt}"), d as f64, 1e-4);
    }
}

/// Per-request scheduler overrides, through the C API too.
#[test]
fn scheduler_overrides_apply_per_request() {
    let m = common::tiny_model();
    let r = GenerateRequest {
        prompt: "x".into(),
        steps: 10,
        scheduler: SchedulerKind::Ddim,
        scheduler_overrides: Some(serde_json::json!({"timestep_spacing": "trailing"})),
        ..Default::default()
    };
    let out = m.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(out.timesteps[0], 999.0);
    let bad = GenerateRequest { scheduler_overrides: Some(serde_json::json!({"timestep_spacing": "sideways"})), ..r };
    // A bad value the caller's overrides brought in is the caller's argument (issue 14), not a broken model.
    let e = m.generate_with(&bad, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), kiln::ErrorKind::InvalidArgument, "{}", e.message());
    assert!(e.message().contains("scheduler_overrides") && e.message().contains("sideways"), "{}", e.message());

    use kiln::ffi::{kiln_status, model::*, runtime::*};
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut model) }, kiln_status::Ok);
    let prompt = std::ffi::CString::new("x").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.steps = 2;
    let mut buf = vec![0u8; 64 * 64 * 4];
    for (json, want) in [("{\"timestep_spacing\": \"trailing\"}", kiln_status::Ok), ("not json", kiln_status::InvalidArgument), ("[1]", kiln_status::InvalidArgument)] {
        let j = std::ffi::CString::new(json).unwrap();
        o.scheduler_overrides = j.as_ptr();
        assert_eq!(unsafe { kiln_model_generate_into(model, &o, buf.as_mut_ptr(), buf.len(), 0) }, want, "{json}");
    }
    unsafe { kiln_model_free(model) };
    unsafe { kiln_runtime_destroy(rt) };
}
