//! ControlNet on SDXL: parity with diffusers' StableDiffusionXLControlNetPipeline,
//! ...XLControlNetImg2ImgPipeline and ...XLControlNetInpaintPipeline
//! (tools/make_sdxl_controlnet_golden.py) on tests/fixtures/tiny-sdxl with the
//! U-Net, `unet_controlnet` and ControlNet of tests/fixtures/sdxl-controlnet
//! (tools/make_sdxl_controlnet_fixture.py): same control images, scales,
//! window and guess mode, every random draw replayed. The ControlNet takes the
//! pooled text embedding and time ids of the rows it runs on. Tolerances as
//! tests/controlnet.rs: latents ≤ 1e-3 relative to their largest value, image
//! ≤ 2e-3 absolute, U-Net timesteps exact; each case also runs without the
//! ControlNet, which must miss the golden. Also: a ControlNet of the other
//! family is ADAPTER_MISMATCH both ways with the model usable after, and the
//! C API carries an SDXL ControlNet (the CLI and kiln-bake: tests/cli.rs,
//! kept there because that binary is not run under qemu, whose child
//! processes would run natively).
//! Last, an SDXL LoRA view with the ControlNet against diffusers with the
//! LoRA fused into the U-Net and text encoders
//! (tools/make_sdxl_controlnet_lora_golden.py), same bounds, the plain model
//! with the same ControlNet as the control; and an SDXL textual-inversion
//! embedding view with it against diffusers after `load_textual_inversion`
//! into both encoders (tools/make_sdxl_controlnet_embedding_golden.py).
//! Plain jobs (and a LoRA view's) run `unet_controlnet` with zero residuals
//! and give the plain U-Net's latents and pixels, bit for bit.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::pipeline::control::Control;
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{ErrorKind, Model, SchedulerKind};

/// common::sdxl_controlnet_folder, plus the SD 1.x ControlNet of
/// tests/fixtures/controlnet as `controlnet/sd15` for the mismatch test.
fn model_folder() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dest = common::sdxl_controlnet_folder("sdxl-controlnet-tests");
        common::copy_tree(&common::root().join("tests/fixtures/controlnet/controlnet/tiny"), &dest.join("controlnet/sd15"));
        dest
    })
    .clone()
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(common::runtime(), &model_folder()).expect("SDXL ControlNet model loads"))
}

fn cases() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(common::golden("sdxl_controlnet/cases.json")).unwrap()).unwrap()
}

/// The request of golden case `name`, with its recorded draws.
fn request(name: &str) -> GenerateRequest {
    let (_, draws) = common::read_npy(&format!("sdxl_controlnet/{name}.draws.npy"));
    common::controlnet_request(&common::golden_case(&common::golden("sdxl_controlnet/cases.json"), name), "xl", draws)
}

fn case(name: &str) {
    let request = request(name);
    let cases = cases();
    let c = cases.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap();
    let out = model().generate_with(&request, Hooks::default()).unwrap();
    common::check_controlnet_device_loop(name, &out);
    let want_t: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: timesteps");
    let (_, want) = common::read_npy(&format!("sdxl_controlnet/{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want) / scale;
    common::check_margin(&format!("sdxl_controlnet::{name}::latents_rel"), rel as f64, 1e-3);
    let (_, want_img) = common::read_npy(&format!("sdxl_controlnet/{name}.image.npy"));
    let d = common::max_abs_diff(&out.image.data, &want_img);
    common::check_margin(&format!("sdxl_controlnet::{name}::image_abs"), d as f64, 2e-3);

    // The control must matter: without it the latents are far from the golden.
    let plain = GenerateRequest { controls: Vec::new(), guess_mode: false, ..request };
    let without = model().generate_with(&plain, Hooks::default()).unwrap();
    let off: Vec<f32> = without.latents.iter().copied().collect();
    let effect = common::max_abs_diff(&off, &want) / scale;
    eprintln!("{name}: without the ControlNet the latents differ by {effect:.3e} (relative)");
    assert!(effect > 1e-2, "{name}: the ControlNet changed the result by only {effect:e}");
}

#[test]
fn one_controlnet_euler_matches_diffusers() {
    case("euler_one");
}

#[test]
fn one_controlnet_ddim_matches_diffusers() {
    case("ddim_one");
}

#[test]
fn two_controlnets_at_different_scales_match_diffusers() {
    case("ddim_two");
}

#[test]
fn start_end_window_matches_diffusers() {
    case("euler_window");
}

#[test]
fn guess_mode_matches_diffusers() {
    case("euler_guess");
}

#[test]
fn img2img_with_control_matches_diffusers() {
    case("euler_img2img");
}

#[test]
fn inpainting_with_control_matches_diffusers() {
    case("ddim_inpaint");
}

/// An SD 1.x ControlNet on this SDXL model, and this SDXL ControlNet on an
/// SD 1.x model: ADAPTER_MISMATCH naming the families, before anything
/// runs; both models generate afterwards, with and without a ControlNet.
#[test]
fn a_controlnet_of_the_other_family_is_a_mismatch_and_the_model_stays_usable() {
    let m = model();
    let base = GenerateRequest { prompt: "x".into(), steps: 2, scheduler: SchedulerKind::Ddim, ..Default::default() };
    let with = |name: &str| GenerateRequest { controls: vec![Control::new(name, common::control_image("control_a.png"))], ..base.clone() };
    let e = m.generate_with(&with("sd15"), Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{e}");
    assert!(e.to_string().contains("SD 1.x/2.x ControlNet") && e.to_string().contains("SDXL model"), "{e}");
    m.generate_with(&with("xl"), Hooks::default()).unwrap();
    m.generate_with(&base, Hooks::default()).unwrap();

    let sd = common::controlnet_folder("sdxl-controlnet-mismatch");
    common::copy_tree(&model_folder().join("controlnet/xl"), &sd.join("controlnet/xl"));
    let sd = Model::load(common::runtime(), &sd).unwrap();
    let e = sd.generate_with(&with("xl"), Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{e}");
    assert!(e.to_string().contains("an SDXL ControlNet") && e.to_string().contains("SD 1.x/2.x model"), "{e}");
    sd.generate_with(&with("tiny"), Hooks::default()).unwrap();
    sd.generate_with(&base, Hooks::default()).unwrap();
}

/// `kiln_control` on an SDXL model through the exported C functions: the
/// `euler_one` golden's pixels within half an 8-bit step plus the parity
/// bound; the same call without the control misses that bound.
#[test]
fn c_api_kiln_control_on_sdxl_matches_diffusers() {
    use common::{ffi_case_options, ffi_generate_rgb_64, ffi_image_from_png, ffi_last_error as last_error, ffi_load_model as load};
    use kiln::ffi::control::kiln_control;
    use kiln::ffi::image::kiln_image_free;
    use kiln::ffi::{kiln_status, model::*, runtime::*};
    use std::ffi::CString;
    use std::ptr;

    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok, "{}", last_error());
    let model = load(rt, &model_folder());
    let image = ffi_image_from_png(common::golden("controlnet/control_a.png"));

    let cases = cases();
    let c = cases.as_array().unwrap().iter().find(|c| c["name"] == "euler_one").unwrap();
    assert_eq!(c["controls"][0]["image"], "control_a.png");
    let (_, draws) = common::read_npy("sdxl_controlnet/euler_one.draws.npy");
    let (_, want) = common::read_npy("sdxl_controlnet/euler_one.image.npy");
    let name = CString::new("xl").unwrap();
    let mut control = common::ffi_case_control(c, &name, image);
    let mut keep = Vec::new();
    let mut o = ffi_case_options(c, &draws, &mut keep);
    let generate = |o: &kiln_generate_options| ffi_generate_rgb_64(model, o);
    let without = generate(&o);
    // Changed below through this pointer only, as C would.
    let control: *mut kiln_control = &mut control;
    o.controls = control;
    o.control_count = 1;
    let got = generate(&o);
    const QUANTUM: f64 = 0.5 / 255.0;
    let d = (common::max_abs_diff(&got, &want) as f64 - QUANTUM).max(0.0);
    common::check_margin("sdxl_controlnet::c_api::euler_one::image_abs_past_8bit", d, 2e-3);
    let miss = common::max_abs_diff(&without, &want) as f64 - QUANTUM;
    eprintln!("c_api: without the control the image is {miss:.3e} past half an 8-bit step from the golden");
    assert!(miss > 2e-3, "the control must matter through C: {miss:e}");

    // An SD 1.x ControlNet through C: the same status, and the handle still generates.
    let sd15 = CString::new("sd15").unwrap();
    unsafe { (*control).controlnet = sd15.as_ptr() };
    let mut buf = vec![0u8; 64 * 64 * 4];
    let s = unsafe { kiln_model_generate_into(model, &o, buf.as_mut_ptr(), buf.len(), 0) };
    assert_eq!(s, kiln_status::AdapterMismatch, "{}", last_error());
    unsafe { (*control).controlnet = name.as_ptr() };
    assert_eq!(generate(&o), got);
    unsafe {
        kiln_image_free(image);
        kiln_model_free(model);
        kiln_runtime_destroy(rt);
    }
}

/// Golden case `name` of `dir` run by an adapter view of this model (`view`
/// makes it from the case's record) with the case's ControlNets. Same bounds
/// as `case`; the plain model with the same request must miss the golden by
/// more than ten times the latent bound, so the adapter really acts.
fn adapter_case(dir: &std::path::Path, name: &str, label: &str, view: impl FnOnce(&serde_json::Value) -> Model) {
    let read = |file: &str| kiln::image::npy::read_f32(&dir.join(file)).expect("golden file").1;
    let c = common::golden_case(&dir.join("cases.json"), name);
    let view = view(&c);
    let request = common::controlnet_request(&c, "xl", read(&format!("{name}.draws.npy")));
    let out = view.generate_with(&request, Hooks::default()).unwrap();
    common::check_controlnet_device_loop(name, &out);
    let want_t: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: timesteps");
    let want = read(&format!("{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want) / scale;
    common::check_margin(&format!("sdxl_controlnet::{label}::latents_rel"), rel as f64, 1e-3);
    let d = common::max_abs_diff(&out.image.data, &read(&format!("{name}.image.npy")));
    common::check_margin(&format!("sdxl_controlnet::{label}::image_abs"), d as f64, 2e-3);

    let without = model().generate_with(&request, Hooks::default()).unwrap();
    let off: Vec<f32> = without.latents.iter().copied().collect();
    let effect = common::max_abs_diff(&off, &want) / scale;
    eprintln!("{name}: latents {rel:e} (bound 1e-3), image {d:e} (bound 2e-3); the plain model with the same ControlNet differs by {effect:.3e}");
    assert!(effect > 1e-2, "{name}: the adapter changed the result by only {effect:e}");
}

/// Golden case `name` of tests/fixtures/sdxl-controlnet-lora
/// (tools/make_sdxl_controlnet_lora_golden.py): an SDXL LoRA view of this
/// model, read from `layout`'s file ("kohya", SGM-named, or "peft"; diffusers
/// fuses both to the same weights, checked there), with the ControlNet.
/// diffusers fused the LoRA into the U-Net and both text encoders, never the
/// ControlNet.
fn lora_case(name: &str, layout: &str) {
    let dir = common::root().join("tests/fixtures/sdxl-controlnet-lora");
    adapter_case(&dir, name, &format!("lora::{name}::{layout}"), |c| {
        model()
            .with_loras(&[(dir.join(format!("style.{layout}.safetensors")), c["lora_scale"].as_f64().unwrap() as f32)])
            .expect("SDXL LoRA view applies")
    });
}

/// Golden case `name` of tools/make_sdxl_controlnet_embedding_golden.py: the
/// SDXL textual-inversion file of tests/fixtures/sdxl-embedding (`clip_l` and
/// `clip_g`) on this model, whose ControlNet reads the same prompt
/// embeddings as its U-Net, against diffusers' SDXL ControlNet pipeline after
/// `load_textual_inversion` into both encoders.
fn embedding_case(name: &str) {
    let dir = common::golden("sdxl_controlnet_embedding");
    adapter_case(&dir.clone(), name, &format!("embedding::{name}"), |c| {
        let spec = kiln::model::EmbeddingSpec { path: dir.join(c["file"].as_str().unwrap()), token: Some(c["token"].as_str().unwrap().into()) };
        model().with_adapters(&kiln::model::Adapters { embeddings: vec![spec], ..Default::default() }).expect("SDXL embedding applies")
    });
}

#[test]
fn sdxl_embedding_with_a_controlnet_matches_diffusers() {
    embedding_case("embedding_euler");
}

#[test]
fn sdxl_embedding_with_two_controlnets_and_ddim_matches_diffusers() {
    embedding_case("embedding_ddim_two");
}

#[test]
fn sdxl_lora_view_with_a_controlnet_matches_diffusers() {
    lora_case("style_euler", "kohya");
}

#[test]
fn sdxl_peft_lora_view_with_a_controlnet_matches_diffusers() {
    lora_case("style_euler", "peft");
}

#[test]
fn sdxl_lora_at_half_scale_with_two_controlnets_matches_diffusers() {
    lora_case("style_half_ddim_two", "kohya");
}

/// Plain jobs in an SDXL ControlNet folder run `unet_controlnet` with zero
/// residuals, so the U-Net's weights are held once; their latents and pixels
/// are those of the same folder without its ControlNet parts (its own
/// `unet/`), bit for bit, and so are a LoRA view's (whose `unet_controlnet`
/// takes the view's merged weights).
#[test]
fn plain_jobs_run_unet_controlnet_with_the_plain_unets_output() {
    let without = common::sdxl_controlnet_folder("sdxl-controlnet-removed");
    for part in ["unet_controlnet", "controlnet"] {
        std::fs::remove_dir_all(without.join(part)).unwrap();
    }
    let own = Model::load(common::runtime(), &without).unwrap();
    let plain = GenerateRequest { controls: Vec::new(), guess_mode: false, ..request("euler_one") };
    let lora = common::root().join("tests/fixtures/sdxl-controlnet-lora/style.kohya.safetensors");
    let check = |shared: &Model, alone: &Model, what: &str| {
        let a = shared.generate_with(&plain, Hooks::default()).unwrap();
        assert!(!shared.resident_graphs().contains(&"unet"), "{what}: a plain job opened unet/: {:?}", shared.resident_graphs());
        assert!(shared.resident_graphs().contains(&"unet_controlnet"), "{what}: {:?}", shared.resident_graphs());
        let b = alone.generate_with(&plain, Hooks::default()).unwrap();
        let d = common::max_abs_diff(&a.latents.iter().copied().collect::<Vec<_>>(), &b.latents.iter().copied().collect::<Vec<_>>());
        eprintln!("{what}: through unet_controlnet vs unet/: latents differ by {d:e}");
        assert_eq!(a.latents, b.latents, "{what}");
        assert_eq!(a.image.data, b.image.data, "{what}");
    };
    check(model(), &own, "plain");
    let view = |m: &Model| m.with_loras(&[(lora.clone(), 0.8)]).unwrap();
    check(&view(model()), &view(&own), "LoRA view");
}
