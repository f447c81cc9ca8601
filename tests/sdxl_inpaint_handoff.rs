//! Base-to-refiner hand-off with inpainting, against diffusers' inpainting
//! ensemble (tools/make_sdxl_inpaint_handoff_golden.py): optimum's
//! ORTStableDiffusionXLInpaintPipeline on tiny-sdxl with the picture, the
//! mask and `denoising_end=f, output_type="latent"`, then the same pipeline
//! class on the refiner-style fixture with those latents as `image`, the
//! same mask and `denoising_start=f`; every random draw replayed. The
//! refiner keeps the *handed-over latents* in the unmasked area, re-noised
//! with one draw of its own. Bounds as tests/sdxl_handoff.rs: latents ≤ 1e-3
//! relative, image ≤ 2e-3 absolute, both stages' U-Net timesteps exact.
mod common;


use kiln::pipeline::handoff::Refiner;
use kiln::pipeline::{GenerateRequest, Hooks, InitImage, Mask};
use kiln::{ErrorKind, Model};

/// This binary's refiner fixture folder tag.
const TAG: &str = "inpaint-handoff";

use common::handoff::{case_request, refiner, refiner_folder, tiny_sdxl, check_case, check_device_loop_case, device_latents_runtime, run, times};

const GOLDEN: &str = "sdxl_inpaint_handoff";

fn case_entry(name: &str) -> serde_json::Value {
    common::golden_case(&common::golden(&format!("{GOLDEN}/cases.json")), name)
}

/// Case `name`'s request: picture, mask, strength, all recorded draws as the
/// step noise (diffusers' output is not pasted back, so neither is Kiln's).
fn request(name: &str) -> (GenerateRequest, serde_json::Value) {
    let c = case_entry(name);
    let (_, draws) = common::read_npy(&format!("{GOLDEN}/{name}.draws.npy"));
    assert_eq!(draws.len() as u64, c["draws_len"].as_u64().unwrap());
    let (width, height, rgb) = common::png_rgb(common::golden("ddim_cfg.png"));
    let (mw, mh, channels, bytes) = common::png_samples(common::golden("inpaint/mask.png"));
    let request = GenerateRequest {
        init_image: Some(InitImage { width, height, rgb }),
        mask: Some(Mask { width: mw, height: mh, data: bytes.chunks(channels).map(|p| p[0]).collect() }),
        strength: c["strength"].as_f64().unwrap() as f32,
        paste_unmasked: Some(false),
        step_noise: Some(draws),
        ..case_request(&c, refiner(TAG))
    };
    (request, c)
}

fn case(name: &str) {
    let (request, c) = request(name);
    check_case(GOLDEN, name, &c, tiny_sdxl(), &request);
}

#[test]
fn euler_inpainting_handing_off_at_0_8_matches_diffusers() {
    case("euler_08");
}

#[test]
fn dpmpp_2m_inpainting_at_strength_0_8_handing_off_at_0_7_matches_diffusers() {
    case("dpmpp_2m_07");
}

#[test]
fn euler_a_inpainting_continues_the_noise_stream_in_the_refiner() {
    case("euler_a_06");
}

/// What the refiner keeps: at its last step diffusers puts its
/// `image_latents`, the base's latents as handed over, into the unmasked
/// area unchanged (not the picture's clean latents, and not the refiner's own
/// prediction). Kiln's final latents equal the handed ones there exactly,
/// while the repainted area moved on in the refiner's steps.
#[test]
fn the_refiner_keeps_the_handed_latents_outside_the_mask() {
    let (request, c) = request("euler_08");
    let run = run(tiny_sdxl(), &request, times(&c, "base_timesteps").len());
    let (handed, fin): (Vec<f32>, Vec<f32>) = (run.handed, run.out.latents.iter().copied().collect());
    // diffusers' latent mask: the binarized mask sampled nearest at every 8th pixel.
    let m = request.mask.as_ref().unwrap();
    let (mut kept, mut moved, mut kept_diff) = (0, 0f32, 0f32);
    for ch in 0..4 {
        for y in 0..8 {
            for x in 0..8 {
                let k = ch * 64 + y * 8 + x;
                if m.data[(y * 8) * m.width + x * 8] < 128 {
                    kept += 1;
                    kept_diff = kept_diff.max((fin[k] - handed[k]).abs());
                } else {
                    moved = moved.max((fin[k] - handed[k]).abs());
                }
            }
        }
    }
    eprintln!("euler_08: {kept} kept latent values differ from the handed ones by {kept_diff:e}; the repainted ones moved up to {moved:e}");
    assert!(kept > 0 && kept < 256, "the mask keeps part of the picture ({kept} of 256)");
    assert_eq!(kept_diff, 0.0, "the kept area is the handed latents");
    assert!(moved > 1e-2, "the refiner's steps changed the repainted area ({moved:e})");
}

/// diffusers' inpainting refiner cannot condition a 9-channel inpainting
/// U-Net on handed-over latents: such a U-Net on either side is UNSUPPORTED
/// (checked on SD 1.x fixtures, the same rule), and the models stay usable.
#[test]
fn inpainting_unets_in_a_hand_off_are_unsupported() {
    let inpaint9 = Model::load(common::runtime(), &common::variant_folder("inpaint9")).expect("inpaint9 loads");
    let plain = common::tiny_model();
    let (mut r, _) = request("euler_08");
    r.step_noise = None;
    for (from, to, which) in [(&inpaint9, plain, "base"), (plain, &inpaint9, "refiner")] {
        r.refiner = Some(Refiner { model: to.clone(), start: 0.8 });
        let e = from.generate_with(&r, Hooks::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
        assert!(e.message().contains(&format!("the {which} model's takes 9 input channels")), "{e}");
    }
    r.refiner = Some(Refiner { model: plain.clone(), start: 0.8 });
    plain.generate_with(&r, Hooks::default()).unwrap();
    r.refiner = None;
    inpaint9.generate_with(&r, Hooks::default()).unwrap();
}

/// With device-resident latents (`ProviderPolicy::device_latents`) both
/// stages run the device loop, the refiner's blend with the handed latents
/// included, and still meet the goldens.
#[test]
fn both_stages_run_on_the_device_loop_and_match_diffusers() {
    let rt = device_latents_runtime();
    let dev_base = Model::load(&rt, &common::root().join("tests/fixtures/tiny-sdxl")).expect("tiny-sdxl loads");
    let dev_refiner = Model::load(&rt, refiner_folder(TAG)).expect("refiner loads");
    for name in ["euler_08", "dpmpp_2m_07"] {
        let (mut request, c) = request(name);
        request.refiner.as_mut().unwrap().model = dev_refiner.clone();
        check_device_loop_case(GOLDEN, name, &c, &dev_base, &request);
    }
}

/// Through `kiln_model_generate_into` with `mask` and `refiner`: the job
/// succeeds, the kept pixels are the picture's exactly (Kiln's paste-back,
/// on by default for 4-channel U-Nets, applies to the refiner's decode), and
/// the repainted ones differ from the same call without the refiner.
#[test]
fn c_api_inpainting_with_refiner_keeps_the_picture_and_uses_the_refiner() {
    use common::{ffi_last_error as last_error, ffi_load_model as load};
    use kiln::ffi::{kiln_status, model::*, runtime::*};
    use std::ffi::CString;
    use std::ptr;

    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok, "{}", last_error());
    let model = load(rt, &common::root().join("tests/fixtures/tiny-sdxl"));
    let refiner = load(rt, refiner_folder(TAG));
    let (request, _) = request("euler_08");
    let (init, mask) = (request.init_image.as_ref().unwrap(), request.mask.as_ref().unwrap());
    let prompt = CString::new(request.prompt.as_str()).unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    o.prompt = prompt.as_ptr();
    (o.width, o.height) = (64, 64);
    o.steps = 10;
    o.scheduler = kiln_scheduler::Euler as u32;
    o.seed = 5;
    o.strength = 1.0;
    o.init_image = init.rgb.as_ptr();
    o.init_image_len = init.rgb.len();
    (o.init_image_width, o.init_image_height, o.init_image_channels) = (64, 64, 3);
    o.mask = mask.data.as_ptr();
    o.mask_len = mask.data.len();
    (o.mask_width, o.mask_height) = (64, 64);
    o.refiner = refiner;
    let generate = |o: &kiln_generate_options| -> Vec<u8> {
        let mut buf = vec![0u8; 64 * 64 * 4];
        let s = unsafe { kiln_model_generate_into(model, o, buf.as_mut_ptr(), buf.len(), 0) };
        assert_eq!(s, kiln_status::Ok, "{}", last_error());
        buf
    };
    let got = generate(&o);
    o.refiner = ptr::null();
    let alone = generate(&o);
    let (mut kept_changed, mut repainted_differ) = (0, 0);
    for p in 0..64 * 64 {
        if mask.data[p] < 128 {
            kept_changed += usize::from(got[p * 4..p * 4 + 3] != init.rgb[p * 3..p * 3 + 3]);
        } else {
            repainted_differ += usize::from(got[p * 4..p * 4 + 3] != alone[p * 4..p * 4 + 3]);
        }
    }
    eprintln!("c_api: {kept_changed} kept pixels changed (bound 0); {repainted_differ} repainted pixels differ from the base alone");
    assert_eq!(kept_changed, 0);
    assert!(repainted_differ > 0, "the refiner must matter through C");
    unsafe {
        kiln_model_free(refiner);
        kiln_model_free(model);
        kiln_runtime_destroy(rt);
    }
}
