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
    common::golden_parity(common::tiny_model(), name, "parity");
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
