//! Variation seeds (`GenerateRequest::variation_seed` / `variation_strength`,
//! AUTOMATIC1111's "variation seed"): the starting noise is A1111's spherical
//! blend of the seed's draw and the variation seed's.
//!
//! Goldens: tests/fixtures/golden/variation (tools/make_variation_golden.py):
//! the blend written in torch float32 from A1111's description, on torch's
//! CPU draws; and optimum's pipelines (tiny-sd) started from that blend with
//! every other draw from the seed's generator (txt2img with the CPU and the
//! CUDA generator, img2img with the blend as its start noise).
//!
//! Tolerances: the blend within 1e-5 of torch's (torch blends in float32,
//! Kiln in f64: the cosine's and the sines' rounding, a few float32 ulps of
//! values up to about 4); generations as tests/parity.rs (latents 1e-3
//! relative, image 2e-3 absolute).
mod common;

use kiln::pipeline::noise::{variation_slerp, NoiseGenerator, TorchCpuRng};
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::scheduler::NoiseSource;
use kiln::{ErrorKind, SchedulerKind};

const BLEND_TOL: f64 = 1e-5;
const LATENT_TOL: f64 = 1e-3;
const IMAGE_TOL: f64 = 2e-3;

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(common::golden("variation/cases.json")).unwrap()).unwrap()
}

fn torch_draw(seed: u64, n: usize) -> Vec<f32> {
    let mut v = vec![0.0f32; n];
    TorchCpuRng::new(seed).fill_normals(&mut v).unwrap();
    v
}

#[test]
fn the_blend_is_a1111s() {
    let (_, want) = common::read_npy("variation/blend.npy");
    let mut at = 0;
    for b in cases()["blends"].as_array().unwrap() {
        let shape: Vec<usize> = b["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let n: usize = shape.iter().product();
        let (seed, vseed) = (b["seed"].as_u64().unwrap(), b["variation_seed"].as_u64().unwrap());
        let strength = b["strength"].as_f64().unwrap() as f32;
        let (mut low, high) = (torch_draw(seed, n), torch_draw(vseed, n));
        // The inputs are torch's draws (tests/torch_seed.rs bounds those).
        assert!(common::max_abs_diff(&low, &want[at..at + n]) < 1e-6 && common::max_abs_diff(&high, &want[at + n..at + 2 * n]) < 1e-6);
        variation_slerp(strength, &mut low, &high, &shape).unwrap();
        let d = common::max_abs_diff(&low, &want[at + 2 * n..at + 3 * n]);
        common::check_margin(&format!("variation::blend::{seed}_{vseed}_{strength}_abs"), d as f64, BLEND_TOL);
        at += 3 * n;
    }
    assert_eq!(at, want.len(), "every golden value checked");
}

fn request(c: &serde_json::Value) -> GenerateRequest {
    let img2img = c["kind"] == "img2img";
    let noise = NoiseGenerator::from_name(c["noise"].as_str().unwrap()).unwrap();
    GenerateRequest {
        width: c["width"].as_u64().unwrap() as usize,
        height: c["height"].as_u64().unwrap() as usize,
        variation_seed: c["variation_seed"].as_u64().unwrap(),
        variation_strength: c["variation_strength"].as_f64().unwrap() as f32,
        init_image: img2img.then(|| kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).unwrap()),
        strength: c["strength"].as_f64().unwrap_or(0.8) as f32,
        ..common::seeded_golden_request(c, c["seed"].as_u64().unwrap(), noise)
    }
}

#[test]
fn a_variation_gives_diffusers_image_from_a1111s_blend() {
    for c in cases()["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let r = request(c);
        let out = common::tiny_model().generate_with(&r, Hooks::default()).unwrap();
        let (_, want) = common::read_npy(&format!("variation/{}", c["latents"].as_str().unwrap()));
        let got: Vec<f32> = out.latents.iter().copied().collect();
        let rel = common::max_abs_diff(&got, &want) / want.iter().fold(0f32, |m, v| m.max(v.abs()));
        common::check_margin(&format!("variation::{name}::latents_rel"), rel as f64, LATENT_TOL);
        let (_, want_img) = common::read_npy(&format!("variation/{}", c["image"].as_str().unwrap()));
        common::check_margin(&format!("variation::{name}::image_abs"), common::max_abs_diff(&out.image.data, &want_img) as f64, IMAGE_TOL);
        // Without the variation the seed makes another picture.
        let plain = common::tiny_model().generate_with(&GenerateRequest { variation_strength: 0.0, ..r }, Hooks::default()).unwrap();
        assert!(common::max_abs_diff(&plain.image.data, &want_img) > 0.01, "{name}: the variation changed nothing");
    }
}

#[test]
fn strength_one_is_the_variation_seeds_noise_and_zero_is_none() {
    // A deterministic scheduler, so only the starting noise differs: at
    // strength 1 the blend is the variation seed's draw exactly.
    for noise in NoiseGenerator::ALL {
        let base = GenerateRequest {
            prompt: "mossy stone brick wall".into(),
            steps: 4,
            scheduler: SchedulerKind::Ddim,
            width: 64,
            height: 64,
            seed: 5,
            noise,
            ..Default::default()
        };
        let m = common::tiny_model();
        let full = m.generate_with(&GenerateRequest { variation_seed: 9, variation_strength: 1.0, ..base.clone() }, Hooks::default()).unwrap();
        let nine = m.generate_with(&GenerateRequest { seed: 9, ..base.clone() }, Hooks::default()).unwrap();
        assert_eq!(full.image.data, nine.image.data, "{noise:?}: strength 1 is the variation seed's picture");
        let none = m.generate_with(&GenerateRequest { variation_seed: 9, variation_strength: 0.0, ..base.clone() }, Hooks::default()).unwrap();
        let five = m.generate_with(&base, Hooks::default()).unwrap();
        assert_eq!(none.image.data, five.image.data, "{noise:?}: strength 0 is no variation");
        let half = m.generate_with(&GenerateRequest { variation_seed: 9, variation_strength: 0.5, ..base }, Hooks::default()).unwrap();
        assert!(common::max_abs_diff(&half.image.data, &five.image.data) > 0.01 && common::max_abs_diff(&half.image.data, &nine.image.data) > 0.01);
    }
}

#[test]
fn bad_strengths_and_given_noise_are_refused() {
    let m = common::tiny_model();
    let base = GenerateRequest { prompt: "x".into(), steps: 2, width: 64, height: 64, variation_seed: 3, ..Default::default() };
    for strength in [-0.1, 1.5, f32::NAN, f32::INFINITY] {
        let e = m.generate_with(&GenerateRequest { variation_strength: strength, ..base.clone() }, Hooks::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{strength}: {}", e.message());
        assert!(e.message().contains("variation_strength"), "{}", e.message());
    }
    let given = GenerateRequest {
        variation_strength: 0.5,
        initial_noise: Some(kiln::pipeline::InitialNoise { shape: [1, 4, 8, 8], data: vec![0.0; 256] }),
        ..base.clone()
    };
    let e = m.generate_with(&given, Hooks::default()).unwrap_err();
    assert!(e.kind() == ErrorKind::InvalidArgument && e.message().contains("own noise"), "{}", e.message());
    // The model still generates.
    m.generate_with(&GenerateRequest { variation_strength: 0.5, ..base }, Hooks::default()).unwrap();
}

#[test]
fn the_c_api_takes_the_variation_and_an_older_layout_ignores_it() {
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    let c = &cases()["cases"][0];
    assert_eq!(c["name"], "euler_a_64_cpu");
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    let mut rt = std::ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::Ok);
    let model = common::ffi_load_model(rt, &common::fixture());
    let mut g = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut g) };
    assert_eq!((g.variation_seed, g.variation_strength), (0, 0.0), "no variation by default");
    let text = |key: &str| std::ffi::CString::new(c[key].as_str().unwrap()).unwrap();
    let (prompt, negative) = (text("prompt"), text("negative_prompt"));
    (g.prompt, g.negative_prompt, g.width, g.height) = (prompt.as_ptr(), negative.as_ptr(), 64, 64);
    (g.steps, g.guidance_scale) = (c["steps"].as_u64().unwrap() as u32, c["guidance_scale"].as_f64().unwrap() as f32);
    (g.seed, g.scheduler, g.noise_generator) = (c["seed"].as_u64().unwrap(), kiln_scheduler::EulerA as u32, kiln_noise_generator::TorchCpu as u32);
    (g.variation_seed, g.variation_strength) = (c["variation_seed"].as_u64().unwrap(), c["variation_strength"].as_f64().unwrap() as f32);
    let got = common::ffi_generate_rgb_64(model, &g);
    let (_, want) = common::read_npy("variation/euler_a_64_cpu.image.npy");
    // 8-bit output: half a step of rounding on top of the float bound.
    common::check_margin("variation::c_api::euler_a_64_cpu_abs", common::max_abs_diff(&got, &want) as f64, IMAGE_TOL + 0.5 / 255.0);

    g.variation_strength = 2.0;
    let mut buf = vec![0u8; 64 * 64 * 4];
    assert_eq!(unsafe { kiln_model_generate_into(model, &g, buf.as_mut_ptr(), buf.len(), 0) }, kiln_status::InvalidArgument);
    assert!(common::ffi_last_error().contains("variation_strength 2"), "{}", common::ffi_last_error());
    // A caller built before the variation fields passes the older size: the
    // bytes past it are not read, so the out-of-range strength is ignored.
    g.struct_size = std::mem::offset_of!(kiln_generate_options, variation_seed) as u32;
    let plain = common::ffi_generate_rgb_64(model, &g);
    g.struct_size = std::mem::size_of::<kiln_generate_options>() as u32;
    g.variation_strength = 0.0;
    assert_eq!(common::ffi_generate_rgb_64(model, &g), plain, "the older layout generates without a variation");
    unsafe { kiln_model_free(model) };
    unsafe { kiln_runtime_destroy(rt) };
}
