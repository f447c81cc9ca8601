//! ControlNet with LoRA views and textual-inversion embeddings, against
//! diffusers' StableDiffusionControlNetPipeline with the LoRAs fused into the
//! U-Net and text encoder (not the ControlNet) or the embeddings loaded
//! (tools/make_controlnet_lora_golden.py), every random draw replayed.
//! Bounds as tests/controlnet.rs: latents ≤ 1e-3 relative to their largest
//! value, image ≤ 2e-3 absolute, U-Net timesteps exact. Each case also runs
//! without its adapters (same ControlNets) and must land more than 1e-2 (ten
//! times the latent bound) away, so the adapters demonstrably reach
//! `unet_controlnet` and the text encoder. Then the C API (a LoRA view plus
//! `controls`), with its error paths.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::model::{Adapters, EmbeddingSpec, LoraSpec};
use kiln::pipeline::control::Control;
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{Model, SchedulerKind};

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        Model::load_with(common::runtime(), &common::controlnet_folder("controlnet-lora-tests"), &common::lora_model_options()).expect("controlnet model loads")
    })
}

fn lora_dir() -> PathBuf {
    common::root().join("tests/fixtures/lora")
}

/// Runs golden case `name` with its LoRAs read from `layout`'s files
/// ("kohya" or "peft"; diffusers fuses both to the same weights, checked by
/// tools/make_lora_fixture.py).
fn case(name: &str, layout: &str) {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::golden("controlnet_lora/cases.json")).unwrap()).unwrap();
    let c = cases.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
    let file_key = if layout == "peft" { "peft_file" } else { "file" };
    let loras = c["loras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| LoraSpec::new(lora_dir().join(l[file_key].as_str().unwrap()), l["scale"].as_f64().unwrap() as f32))
        .collect();
    let embeddings = c["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| EmbeddingSpec { path: lora_dir().join(e["file"].as_str().unwrap()), token: e["token"].as_str().map(str::to_string) })
        .collect();
    let lora_count = c["loras"].as_array().unwrap().len();
    let view = model().with_adapters(&Adapters { loras, embeddings, ..Default::default() }).expect("adapters apply");
    common::check_lora_path(name, &view, lora_count > 0);
    let (_, draws) = common::read_npy(&format!("controlnet_lora/{name}.draws.npy"));
    let request = common::controlnet_request(c, "tiny", draws);
    let out = view.generate_with(&request, Hooks::default()).unwrap();
    common::check_controlnet_device_loop(name, &out);
    let want_t: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: timesteps");
    let (_, want) = common::read_npy(&format!("controlnet_lora/{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want) / scale;
    common::check_margin(&format!("controlnet_lora::{name}::{layout}::latents_rel"), rel as f64, 1e-3);
    let (_, want_img) = common::read_npy(&format!("controlnet_lora/{name}.image.npy"));
    let d = common::max_abs_diff(&out.image.data, &want_img);
    common::check_margin(&format!("controlnet_lora::{name}::{layout}::image_abs"), d as f64, 2e-3);

    // The adapters must matter: the same ControlNets on the plain model land far away.
    let without = model().generate_with(&request, Hooks::default()).unwrap();
    let off: Vec<f32> = without.latents.iter().copied().collect();
    let effect = common::max_abs_diff(&off, &want) / scale;
    eprintln!("{name}: without the adapters the latents differ by {effect:.3e} (relative; bound 1e-3)");
    assert!(effect > 1e-2, "{name}: the adapters changed the result by only {effect:e}");
}

#[test]
fn one_lora_with_one_controlnet_matches_diffusers() {
    case("style_ddim", "peft");
}

#[test]
fn kohya_file_of_the_same_lora_matches_too() {
    case("style_ddim", "kohya");
}

#[test]
fn two_loras_at_different_scales_with_euler_match_diffusers() {
    case("stack_euler", "kohya");
}

#[test]
fn lora_at_half_scale_with_two_controlnets_matches_diffusers() {
    case("style_half_two_nets", "kohya");
}

#[test]
fn textual_inversion_embeddings_with_a_controlnet_match_diffusers() {
    case("embedding_ddim", "kohya");
}

/// What a LoRA view costs with a ControlNet: one session, its own
/// `unet_controlnet` (whose LoRA-merged weights are the view's U-Net's
/// tensors); the ControlNet session is the model's, loaded once for both.
#[test]
fn a_lora_view_shares_the_models_controlnet_and_adds_one_session() {
    let base = Model::load(common::runtime(), &common::controlnet_folder("controlnet-lora-sessions")).unwrap();
    let r = GenerateRequest {
        prompt: "x".into(),
        steps: 2,
        scheduler: SchedulerKind::Ddim,
        controls: vec![Control::new("tiny", common::control_image("control_a.png"))],
        ..Default::default()
    };
    let plain = base.loaded_sessions();
    base.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(base.loaded_sessions(), plain + 2, "the model opens unet_controlnet and the ControlNet");
    let view = base.with_loras(&[(lora_dir().join("style.kohya.safetensors"), 1.0)]).unwrap();
    let before = view.loaded_sessions();
    view.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(view.loaded_sessions(), before + 1, "the view opens only its own unet_controlnet");
    // A ControlNet first used through a view is the model's too.
    let fresh = Model::load(common::runtime(), &common::controlnet_folder("controlnet-lora-sessions-2")).unwrap();
    let plain = fresh.loaded_sessions();
    let view = fresh.with_loras(&[(lora_dir().join("detail.kohya.safetensors"), 1.0)]).unwrap();
    view.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(fresh.loaded_sessions(), plain + 1, "the model holds the ControlNet the view loaded");
    fresh.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(fresh.loaded_sessions(), plain + 2, "and adds only its own unet_controlnet");
}

/// A seamless view of a LoRA view wraps `unet_controlnet` with the LoRA
/// merged in; switching the LoRA set off gives the plain model's pixels.
#[test]
fn seamless_and_switched_views_keep_the_controlnet_working() {
    let style = lora_dir().join("style.kohya.safetensors");
    let view = model().with_loras(&[(&style, 1.0)]).unwrap();
    let r = GenerateRequest {
        prompt: "x".into(),
        steps: 2,
        seed: 5,
        scheduler: SchedulerKind::Ddim,
        controls: vec![Control::new("tiny", common::control_image("control_b.png"))],
        ..Default::default()
    };
    let tiled = view.seamless(kiln::model::seamless::Seamless::Xy).unwrap();
    let a = tiled.generate_with(&r, Hooks::default()).unwrap();
    let plain_tiled = model().seamless(kiln::model::seamless::Seamless::Xy).unwrap().generate_with(&r, Hooks::default()).unwrap();
    let moved = common::max_abs_diff(&a.image.data, &plain_tiled.image.data);
    eprintln!("seamless view: the LoRA moves the image by {moved:.3e}");
    assert!(moved > 1e-2, "the LoRA reaches the seamless unet_controlnet");
    let off = view.with_loras::<PathBuf>(&[]).unwrap().generate_with(&r, Hooks::default()).unwrap();
    let plain = model().generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(off.image.data, plain.image.data, "the LoRA switched off gives the plain model's pixels");
}

/// Through the C API: a LoRA view (two LoRAs) plus a `kiln_control` entry
/// generates, differs from the plain model with the same control and from the
/// view without it; a missing ControlNet on the view is MODEL_NOT_FOUND and
/// the view then reproduces its first image exactly.
#[test]
fn c_api_lora_view_with_controls() {
    use kiln::ffi::control::*;
    use kiln::ffi::lora::*;
    use kiln::ffi::model::*;
    use kiln::ffi::postprocess::kiln_image_create;
    use kiln::ffi::{image::kiln_image_free, kiln_status, runtime::*};
    use std::ffi::CString;
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = CString::new(common::controlnet_folder("controlnet-lora-c").to_str().unwrap()).unwrap();
    let mut base = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut base) }, kiln_status::Ok);
    let style = CString::new(lora_dir().join("style.kohya.safetensors").to_str().unwrap()).unwrap();
    let detail = CString::new(lora_dir().join("detail.peft.safetensors").to_str().unwrap()).unwrap();
    let mut l = [unsafe { std::mem::zeroed::<kiln_lora>() }; 2];
    unsafe { kiln_lora_init(&mut l[0]) };
    unsafe { kiln_lora_init(&mut l[1]) };
    (l[0].path, l[0].scale, l[1].path, l[1].scale) = (style.as_ptr(), 0.8, detail.as_ptr(), -0.6);
    let mut view = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_loras(base, l.as_ptr(), 2, &mut view) }, kiln_status::Ok);

    let (w, h, rgb) = common::png_rgb(common::golden("controlnet/control_a.png"));
    let rgba: Vec<u8> = rgb.chunks(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let mut image = ptr::null_mut();
    assert_eq!(unsafe { kiln_image_create(w as u32, h as u32, rgba.as_ptr(), rgba.len(), 0, &mut image) }, kiln_status::Ok);
    let net = CString::new("tiny").unwrap();
    let mut control = unsafe { std::mem::zeroed::<kiln_control>() };
    unsafe { kiln_control_init(&mut control) };
    (control.controlnet, control.image, control.scale) = (net.as_ptr(), image, 0.8);
    let prompt = CString::new("mossy stone brick wall").unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    (o.prompt, o.steps, o.seed) = (prompt.as_ptr(), 4, 9);
    (o.controls, o.control_count) = (&control, 1);
    let generate = |m: *const kiln_model, o: &kiln_generate_options| {
        let mut buf = vec![0u8; 64 * 64 * 4];
        let s = unsafe { kiln_model_generate_into(m, o, buf.as_mut_ptr(), buf.len(), 0) };
        (s, buf)
    };
    let (s, styled) = generate(view, &o);
    assert_eq!(s, kiln_status::Ok);
    let (s, plain) = generate(base, &o);
    assert_eq!(s, kiln_status::Ok);
    let (s, uncontrolled) = generate(view, &kiln_generate_options { controls: ptr::null(), control_count: 0, ..o });
    assert_eq!(s, kiln_status::Ok);
    let differ = |a: &[u8], b: &[u8]| a.iter().zip(b).filter(|(x, y)| x != y).count();
    eprintln!(
        "C: the LoRAs change {} and the control {} of {} channel values",
        differ(&styled, &plain),
        differ(&styled, &uncontrolled),
        styled.len()
    );
    assert!(differ(&styled, &plain) > styled.len() / 4, "the LoRAs act on the controlled generation");
    assert!(differ(&styled, &uncontrolled) > styled.len() / 4, "the control acts on the LoRA view");

    let missing = CString::new("no-such-net").unwrap();
    let bad = kiln_control { controlnet: missing.as_ptr(), ..control };
    let (s, _) = generate(view, &kiln_generate_options { controls: &bad, ..o });
    assert_eq!(s, kiln_status::ModelNotFound);
    let (s, again) = generate(view, &o);
    assert_eq!(s, kiln_status::Ok);
    assert!(again == styled, "after the error the view reproduces its image exactly");

    unsafe { kiln_image_free(image) };
    unsafe { kiln_model_free(view) };
    unsafe { kiln_model_free(base) };
    unsafe { kiln_runtime_destroy(rt) };
}
