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
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{ErrorKind, Model};

/// This binary's refiner fixture folder tag.
const TAG: &str = "controlnet-handoff";

use common::handoff::{refiner, refiner_folder, check_case, relative, run, times, IMAGE_BOUND, LATENTS_BOUND};

const GOLDEN: &str = "sdxl_controlnet_handoff";

fn base_folder() -> &'static PathBuf {
    static F: OnceLock<PathBuf> = OnceLock::new();
    F.get_or_init(|| common::sdxl_controlnet_folder(TAG))
}

fn base() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(common::runtime(), base_folder()).expect("SDXL ControlNet model loads"))
}

fn case_entry(name: &str) -> serde_json::Value {
    common::golden_case(&common::golden(&format!("{GOLDEN}/cases.json")), name)
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
    request.refiner = Some(Refiner { model: refiner(TAG).clone(), start: c["refiner_start"].as_f64().unwrap() as f32 });
    (request, c)
}

fn case(name: &str) {
    let (request, c) = request(name);
    check_case(GOLDEN, name, &c, base(), &request);
    // The ControlNet must matter: without it the hand-off latents miss the golden.
    let plain = GenerateRequest { controls: Vec::new(), ..request };
    let off = run(base(), &plain, times(&c, "base_timesteps").len());
    let effect = relative(&off.handed, &format!("{GOLDEN}/{name}.handoff.npy"));
    eprintln!("{name}: without the ControlNet the hand-off is {effect:e} away (bound {LATENTS_BOUND:e})");
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
    let handed = run(base(), &request, times(&c, "base_timesteps").len()).handed;
    let miss = relative(&handed, &format!("{GOLDEN}/euler_window.handoff.npy"));
    eprintln!("euler_window with the window over the cut schedule: hand-off latents {miss:e} away (bound {LATENTS_BOUND:e})");
    assert!(miss > 10.0 * LATENTS_BOUND, "the window's reach barely matters here ({miss:e})");
}

/// With device-resident latents both stages run on the device loop, the
/// base's ControlNet too (its nets write the residuals into unet_controlnet's
/// bound inputs), with the window over the whole schedule as above, and meet
/// the goldens' bounds.
#[test]
fn the_controlnet_hand_off_runs_on_the_device_loop() {
    let rt = common::handoff::device_latents_runtime();
    let dev_base = Model::load(&rt, base_folder()).expect("SDXL ControlNet model loads");
    let dev_refiner = Model::load(&rt, refiner_folder(TAG)).expect("refiner loads");
    for name in ["euler_08", "euler_window"] {
        let (mut request, c) = request(name);
        request.refiner = Some(Refiner { model: dev_refiner.clone(), start: c["refiner_start"].as_f64().unwrap() as f32 });
        common::handoff::check_device_loop_case(GOLDEN, name, &c, &dev_base, &request);
    }
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
    use common::{ffi_case_options, ffi_generate_rgb_64, ffi_image_from_png, ffi_last_error as last_error, ffi_load_model as load};
    use kiln::ffi::control::kiln_control;
    use kiln::ffi::image::kiln_image_free;
    use kiln::ffi::{kiln_status, model::*, runtime::*};
    use std::ffi::CString;
    use std::ptr;

    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok, "{}", last_error());
    let model = load(rt, base_folder());
    let refiner = load(rt, refiner_folder(TAG));

    let c = case_entry("euler_08");
    let image = ffi_image_from_png(common::golden(&format!("controlnet/{}", c["controls"][0]["image"].as_str().unwrap())));
    let (_, draws) = common::read_npy(&format!("{GOLDEN}/euler_08.draws.npy"));
    assert_eq!(draws.len(), 256, "Euler's only draw is the initial noise");
    let (_, want) = common::read_npy(&format!("{GOLDEN}/euler_08.image.npy"));
    let name = CString::new("xl").unwrap();
    let control = common::ffi_case_control(&c, &name, image);
    let mut keep = Vec::new();
    let mut o = ffi_case_options(&c, &draws, &mut keep);
    o.refiner = refiner;
    o.refiner_start = c["refiner_start"].as_f64().unwrap() as f32;
    let generate = |o: &kiln_generate_options| ffi_generate_rgb_64(model, o);
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
