//! Base-to-refiner hand-off with a ControlNet on the base, against diffusers'
//! common workflow (tools/make_sdxl_controlnet_handoff_golden.py):
//! StableDiffusionXLControlNetPipeline on tiny-sdxl + tests/fixtures/sdxl-controlnet
//! with `denoising_end=f, output_type="latent"`, then the plain
//! ORTStableDiffusionXLImg2ImgPipeline refiner with those latents and
//! `denoising_start=f`, every random draw replayed. The ControlNet's window
//! is a fraction of the whole schedule (diffusers computes it before the cut).
//! Bounds as tests/sdxl_handoff.rs: latents ≤ 1e-3 relative, image ≤ 2e-3
//! absolute, both stages' U-Net timesteps exact.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::pipeline::handoff::Refiner;
use kiln::pipeline::{GenerateRequest, Hooks, StepProgress};
use kiln::{ErrorKind, Model};

const LATENTS_BOUND: f64 = 1e-3;
const IMAGE_BOUND: f64 = 2e-3;
const GOLDEN: &str = "sdxl_controlnet_handoff";

fn base_folder() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| common::sdxl_controlnet_folder("controlnet-handoff"))
}

fn refiner_folder() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| common::sdxl_refiner_folder("controlnet-handoff"))
}

fn base() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(common::runtime(), base_folder()).expect("SDXL ControlNet model loads"))
}

fn refiner() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(common::runtime(), refiner_folder()).expect("refiner fixture loads"))
}

fn case_entry(name: &str) -> serde_json::Value {
    common::golden_case(&common::golden(&format!("{GOLDEN}/cases.json")), name)
}

fn times(c: &serde_json::Value, key: &str) -> Vec<f64> {
    c[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Case `name`'s request (its control on the "xl" ControlNet, its recorded
/// draws), handing off to the refiner fixture.
fn request(name: &str) -> (GenerateRequest, serde_json::Value) {
    let c = case_entry(name);
    let (_, draws) = common::read_npy(&format!("{GOLDEN}/{name}.draws.npy"));
    let mut request = common::controlnet_request(&c, "xl", draws[..256].to_vec());
    request.width = 64;
    request.height = 64;
    // The base's initial latents, then any per-step noise of both stages.
    request.step_noise = Some(draws[256..].to_vec());
    request.refiner = Some(Refiner { model: refiner().clone(), start: c["refiner_start"].as_f64().unwrap() as f32 });
    (request, c)
}

/// Relative difference of `got` from golden `file`'s values, by their largest magnitude.
fn relative(got: &[f32], file: &str) -> f64 {
    let (_, want) = common::read_npy(file);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    (common::max_abs_diff(got, &want) / scale) as f64
}

/// Runs `request`, returning the latents at the hand-off (after `base_steps`
/// steps), the progress reported and the generation.
fn generate(request: &GenerateRequest, base_steps: usize) -> (Vec<f32>, Vec<(usize, usize)>, kiln::pipeline::Generation) {
    let mut handed = None;
    let mut progress = Vec::new();
    let mut on_step = |p: &StepProgress<'_>| {
        progress.push((p.step, p.total));
        if p.step == base_steps {
            handed = Some(p.latents.iter().copied().collect::<Vec<f32>>());
        }
    };
    let out = base().generate_with(request, Hooks { on_step: Some(&mut on_step), ..Default::default() }).unwrap();
    (handed.unwrap(), progress, out)
}

fn case(name: &str) {
    let (request, c) = request(name);
    let (base_t, refiner_t) = (times(&c, "base_timesteps"), times(&c, "refiner_timesteps"));
    let (handed, progress, out) = generate(&request, base_t.len());
    let total = base_t.len() + refiner_t.len();
    assert_eq!(progress, (1..=total).map(|s| (s, total)).collect::<Vec<_>>(), "{name}: one job's progress");
    let mut want_t = base_t.clone();
    want_t.extend(&refiner_t);
    assert_eq!(out.timesteps, want_t, "{name}: both stages' timesteps");
    let handoff = relative(&handed, &format!("{GOLDEN}/{name}.handoff.npy"));
    let latents = relative(&out.latents.iter().copied().collect::<Vec<_>>(), &format!("{GOLDEN}/{name}.latents.npy"));
    let (_, want_img) = common::read_npy(&format!("{GOLDEN}/{name}.image.npy"));
    let image = common::max_abs_diff(&out.image.data, &want_img) as f64;
    common::check_margin(&format!("{GOLDEN}::{name}::handoff_latents_rel"), handoff, LATENTS_BOUND);
    common::check_margin(&format!("{GOLDEN}::{name}::latents_rel"), latents, LATENTS_BOUND);
    common::check_margin(&format!("{GOLDEN}::{name}::image_abs"), image, IMAGE_BOUND);

    // The ControlNet must matter: without it the hand-off latents miss the golden.
    let plain = GenerateRequest { controls: Vec::new(), ..request };
    let (off, _, _) = generate(&plain, base_t.len());
    let effect = relative(&off, &format!("{GOLDEN}/{name}.handoff.npy"));
    eprintln!(
        "{name}: base {} steps, refiner {}; hand-off latents {handoff:e}, final {latents:e} (bound {LATENTS_BOUND:e}), \
         image {image:e} (bound {IMAGE_BOUND:e}); without the ControlNet the hand-off is {effect:e} away",
        base_t.len(),
        refiner_t.len()
    );
    assert!(effect > 10.0 * LATENTS_BOUND, "{name}: the ControlNet barely matters here ({effect:e})");
}

#[test]
fn euler_with_controlnet_handing_off_at_0_8_matches_diffusers() {
    case("euler_08");
}

#[test]
fn dpmpp_2m_with_controlnet_handing_off_at_0_7_matches_diffusers() {
    case("dpmpp_2m_07");
}

/// The window [0.1, 0.6] of 10 steps keeps steps 1..5 (diffusers, over the
/// whole schedule); taken over the base's 8 cut steps it would keep 1..3,
/// which is what a window ending at 0.4 keeps: that request misses the golden.
#[test]
fn control_window_is_a_fraction_of_the_whole_schedule() {
    case("euler_window");
    let (mut request, c) = request("euler_window");
    assert_eq!((request.controls[0].start, request.controls[0].end), (0.1, 0.6));
    request.controls[0].end = 0.4;
    let (handed, _, _) = generate(&request, times(&c, "base_timesteps").len());
    let miss = relative(&handed, &format!("{GOLDEN}/euler_window.handoff.npy"));
    eprintln!("euler_window with the window over the cut schedule: hand-off latents {miss:e} away (bound {LATENTS_BOUND:e})");
    assert!(miss > 10.0 * LATENTS_BOUND, "the window's reach barely matters here ({miss:e})");
}

/// What diffusers has no pipeline for stays UNSUPPORTED, with the model usable.
#[test]
fn controlnet_img2img_and_heun_hand_offs_are_unsupported() {
    let (ok, _) = request("euler_08");
    let mut r = ok.clone();
    let (width, height, rgb) = common::png_rgb(common::golden("ddim_cfg.png"));
    r.init_image = Some(kiln::pipeline::InitImage { width, height, rgb });
    r.strength = 0.6;
    let e = base().generate_with(&r, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().contains("ControlNet img2img"), "{e}");
    let mut r = ok.clone();
    r.scheduler = kiln::SchedulerKind::Heun;
    let e = base().generate_with(&r, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    assert!(e.message().contains("heun"), "{e}");
    base().generate_with(&ok, Hooks::default()).unwrap();
}

/// Through `kiln_model_generate_into` with `options->controls` and
/// `options->refiner`: the Euler case within half an 8-bit step plus the
/// parity bound; the same call without the control misses it.
#[test]
fn c_api_controlnet_with_refiner_matches_diffusers() {
    use kiln::ffi::control::{kiln_control, kiln_control_init};
    use kiln::ffi::image::kiln_image_free;
    use kiln::ffi::postprocess::kiln_image_create;
    use kiln::ffi::{kiln_status, model::*, runtime::*};
    use std::ffi::{c_char, CStr, CString};
    use std::ptr;

    let last_error = || {
        let mut buf = vec![0 as c_char; 4096];
        unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), ptr::null_mut()) };
        unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
    };
    let load = |rt: *mut kiln_runtime, dir: &std::path::Path| {
        let dir = CString::new(dir.to_str().unwrap()).unwrap();
        let mut model = ptr::null_mut();
        assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut model) }, kiln_status::Ok, "{}", last_error());
        model
    };
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok, "{}", last_error());
    let model = load(rt, base_folder());
    let refiner = load(rt, refiner_folder());

    let c = case_entry("euler_08");
    let (w, h, channels, bytes) = common::png_samples(common::golden(&format!("controlnet/{}", c["controls"][0]["image"].as_str().unwrap())));
    let rgba: Vec<u8> = bytes.chunks(channels).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let mut image = ptr::null_mut();
    let s = unsafe { kiln_image_create(w as u32, h as u32, rgba.as_ptr(), rgba.len(), 0, &mut image) };
    assert_eq!(s, kiln_status::Ok, "{}", last_error());
    let (_, draws) = common::read_npy(&format!("{GOLDEN}/euler_08.draws.npy"));
    assert_eq!(draws.len(), 256, "Euler's only draw is the initial noise");
    let (_, want) = common::read_npy(&format!("{GOLDEN}/euler_08.image.npy"));
    let (prompt, negative) =
        (CString::new(c["prompt"].as_str().unwrap()).unwrap(), CString::new(c["negative_prompt"].as_str().unwrap()).unwrap());
    let name = CString::new("xl").unwrap();
    let mut control: kiln_control = unsafe { std::mem::zeroed() };
    unsafe { kiln_control_init(&mut control) };
    control.controlnet = name.as_ptr();
    control.image = image;
    control.scale = c["controls"][0]["scale"].as_f64().unwrap() as f32;
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    o.negative_prompt = negative.as_ptr();
    (o.width, o.height) = (64, 64);
    o.steps = c["steps"].as_u64().unwrap() as u32;
    o.guidance_scale = c["guidance_scale"].as_f64().unwrap() as f32;
    o.scheduler = kiln_scheduler::Euler as u32;
    o.initial_noise = draws.as_ptr();
    o.initial_noise_len = draws.len();
    o.refiner = refiner;
    o.refiner_start = c["refiner_start"].as_f64().unwrap() as f32;
    let generate = |o: &kiln_generate_options| -> Vec<f32> {
        let mut buf = vec![0u8; 64 * 64 * 4];
        let s = unsafe { kiln_model_generate_into(model, o, buf.as_mut_ptr(), buf.len(), 0) };
        assert_eq!(s, kiln_status::Ok, "{}", last_error());
        buf.chunks_exact(4).flat_map(|p| p[..3].iter().map(|&v| v as f32 / 255.0)).collect()
    };
    let without = generate(&o);
    let control: *const kiln_control = &control;
    o.controls = control;
    o.control_count = 1;
    let got = generate(&o);
    const QUANTUM: f64 = 0.5 / 255.0;
    let d = (common::max_abs_diff(&got, &want) as f64 - QUANTUM).max(0.0);
    common::check_margin(&format!("{GOLDEN}::c_api::euler_08::image_abs_past_8bit"), d, IMAGE_BOUND);
    let miss = common::max_abs_diff(&without, &want) as f64 - QUANTUM;
    eprintln!("c_api: {d:e} past 8-bit rounding (bound {IMAGE_BOUND:e}); without the control {miss:.3e}");
    assert!(miss > IMAGE_BOUND, "the control must matter through C: {miss:e}");
    unsafe {
        kiln_image_free(image);
        kiln_model_free(refiner);
        kiln_model_free(model);
        kiln_runtime_destroy(rt);
    }
}
