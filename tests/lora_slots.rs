//! LoRA slots (`ModelOptions::lora_slots`): the plain model's pictures are
//! the exported graph's bit for bit (every slot switched off); plain low-rank LoRAs fed to the slots
//! match diffusers' goldens (tools/make_lora_fixture.py) within the bounds
//! of tests/lora.rs (final latents max|Δ| ≤ 1e-3 × max|reference|, image
//! max|Δ| ≤ 2e-3) and the merged path within 1e-4 of each other; a switch
//! opens no session; other adapter kinds fall back to merging; the C API.
mod common;

use std::path::PathBuf;

use kiln::model::{Adapters, EmbeddingSpec, LoraSpec, ModelOptions};
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{Model, SchedulerKind};

fn slotted(runtime: &kiln::Runtime) -> Model {
    Model::load_with(runtime, &common::fixture(), &ModelOptions { lora_slots: true, ..Default::default() }).expect("loads with LoRA slots")
}

fn lora_dir() -> PathBuf {
    common::root().join("tests/fixtures/lora")
}

fn case(dir: &std::path::Path, name: &str) -> serde_json::Value {
    common::golden_case(&dir.join("cases.json"), name)
}

fn request(dir: &std::path::Path, c: &serde_json::Value) -> GenerateRequest {
    common::lora_case_request(dir, c)
}

fn case_loras(dir: &std::path::Path, c: &serde_json::Value, peft: bool) -> Adapters {
    let loras = c["loras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let file = if peft { l["peft_file"].as_str().unwrap() } else { l["file"].as_str().unwrap() };
            LoraSpec { text_encoder_scale: l["text_encoder_scale"].as_f64().map(|t| t as f32), ..LoraSpec::new(dir.join(file), l["scale"].as_f64().unwrap() as f32) }
        })
        .collect();
    let embeddings = c["embeddings"]
        .as_array()
        .map(|a| a.iter().map(|e| EmbeddingSpec { path: dir.join(e["file"].as_str().unwrap()), token: e["token"].as_str().map(str::to_string) }).collect())
        .unwrap_or_default();
    Adapters { loras, embeddings, ..Default::default() }
}

/// Generates case `name` on `model`, checks it against diffusers' golden and
/// returns (latents, image).
fn check(model: &Model, dir: &std::path::Path, name: &str, label: &str) -> (Vec<f32>, Vec<f32>) {
    let c = case(dir, name);
    let out = model.generate_with(&request(dir, &c), Hooks::default()).expect("generates");
    // Under KILN_TEST_DEVICE_LATENTS=1 every U-Net call ran on the device loop (its bindings carry the feeds).
    common::check_controlnet_device_loop(name, &out);
    let (_, want_latents) = kiln::image::npy::read_f32(&dir.join(c["files"]["latents"].as_str().unwrap())).unwrap();
    let (_, want_image) = kiln::image::npy::read_f32(&dir.join(c["files"]["image"].as_str().unwrap())).unwrap();
    let latents: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want_latents.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&latents, &want_latents) / scale;
    let d = common::max_abs_diff(&out.image.data, &want_image);
    eprintln!("{name} ({label}): latents rel {rel:e} (bound 1e-3), image abs {d:e} (bound 2e-3)");
    let id = format!("lora_slots::{name}::{}", label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
    common::check_margin(&format!("{id}::latents_rel"), rel as f64, 1e-3);
    common::check_margin(&format!("{id}::image_abs"), d as f64, 2e-3);
    (latents, out.image.data.clone())
}

#[test]
fn a_plain_slotted_model_draws_the_exported_graphs_pictures_bit_for_bit() {
    let m = slotted(common::runtime());
    let info = m.info();
    eprintln!("tiny-sd: {} U-Net layers with a LoRA slot", info.lora_slots);
    assert!(info.lora_slots > 0);
    assert_eq!(common::tiny_model().info().lora_slots, 0);
    // The fusion runs before the rewrite, so it finds every attention layer it finds without slots.
    let plain_fused = common::tiny_model().info().fused_attention;
    assert!(plain_fused > 0 && info.fused_attention == plain_fused, "{} vs {plain_fused} fused", info.fused_attention);
    let c = case(&lora_dir(), "style_ddim_s1");
    let a = m.generate_with(&request(&lora_dir(), &c), Hooks::default()).unwrap();
    let b = common::tiny_model().generate_with(&request(&lora_dir(), &c), Hooks::default()).unwrap();
    assert_eq!(a.latents, b.latents, "switched-off slots pass the layers' outputs on");
    assert_eq!(a.image.data, b.image.data);
}

#[test]
fn fed_loras_match_diffusers_and_the_merged_path() {
    let m = slotted(common::runtime());
    let base = common::tiny_model();
    for (name, peft) in [("style_ddim_s1", false), ("style_euler_s05", false), ("style_ddim_s1", true), ("stack_ddim", false)] {
        let adapters = case_loras(&lora_dir(), &case(&lora_dir(), name), peft);
        let fed = m.with_adapters(&adapters).expect("applies");
        let (unet, text) = fed.lora_fed_layers();
        assert!(unet > 0 && text > 0, "{name}: {unet} U-Net and {text} text-encoder layers fed");
        assert_eq!(fed.merged_initializers(), (vec![], vec![]), "{name}: nothing merged");
        let label = if peft { "peft, fed" } else { "kohya, fed" };
        let (fed_latents, fed_image) = check(&fed, &lora_dir(), name, label);
        let merged = base.with_adapters(&adapters).unwrap();
        let (merged_latents, merged_image) = check(&merged, &lora_dir(), name, if peft { "peft, merged" } else { "kohya, merged" });
        let scale = merged_latents.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let (dl, di) = (common::max_abs_diff(&fed_latents, &merged_latents) / scale, common::max_abs_diff(&fed_image, &merged_image));
        eprintln!("{name}: fed vs merged: latents rel {dl:e}, image abs {di:e} (bound 1e-4)");
        common::check_margin(&format!("lora_slots::{name}::fed_vs_merged_latents"), dl as f64, 1e-4);
        common::check_margin(&format!("lora_slots::{name}::fed_vs_merged_image"), di as f64, 1e-4);
    }
}

/// Every case of tests/lora.rs through a slotted model, from its kohya files
/// (PEFT's for DoRA, whose kohya twin follows A1111's strength rule):
/// plain LoRAs (LoCon 3×3, time embedding and samplers included) are fed,
/// LoHa, LoKr, Tucker cores, DoRA and full diffs fall back to merging, and
/// each matches its golden within the same bounds.
#[test]
fn every_lora_case_matches_its_golden_fed_or_merged() {
    let m = slotted(common::runtime());
    let dirs = ["lora", "lycoris", "dora", "lycoris_native", "lycoris_full", "lora_component"];
    for d in dirs {
        let dir = common::root().join("tests/fixtures").join(d);
        let cases: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
        for c in &cases {
            let name = c["name"].as_str().unwrap();
            let view = m.with_adapters(&case_loras(&dir, c, d == "dora")).unwrap_or_else(|e| panic!("{name}: {e}"));
            let (fed_unet, fed_text) = view.lora_fed_layers();
            let (merged_unet, merged_text) = view.merged_initializers();
            eprintln!("{d}/{name}: fed {fed_unet} U-Net and {fed_text} text-encoder layers; merged {} and {}", merged_unet.len(), merged_text.len());
            // Plain low-rank files are fed whole; every other kind is merged.
            let plain = d == "lora" || d == "lora_component";
            if plain && name != "embedding_ddim" {
                assert!(fed_unet > 0 && merged_unet.is_empty(), "{name}: the U-Net is fed");
            } else if !plain {
                assert!(fed_unet == 0 && !merged_unet.is_empty(), "{name}: the U-Net is merged");
            }
            check(&view, &dir, name, "slotted model");
        }
    }
}

/// A switch on a slotted model opens no session: the views run the base's
/// sessions with other feeds, and switching back gives the first view's
/// pictures bit for bit.
#[test]
fn switching_fed_loras_opens_no_session() {
    let (rt, log) = common::logged_runtime(Default::default(), Default::default());
    let m = slotted(&rt);
    let opened = || log.lock().unwrap().iter().filter(|l| l.contains(": execution provider")).count();
    let at_load = opened();
    assert!(at_load >= 3, "text encoder, U-Net and VAE decoder opened at load ({at_load})");
    let held = m.loaded_sessions();
    let c = case(&lora_dir(), "style_ddim_s1");
    let req = request(&lora_dir(), &c);
    let style = m.with_loras(&[(lora_dir().join("style.kohya.safetensors"), 1.0)]).unwrap();
    let a = style.generate_with(&req, Hooks::default()).unwrap();
    let detail = style.with_loras(&[(lora_dir().join("detail.kohya.safetensors"), -0.6)]).unwrap();
    let b = detail.generate_with(&req, Hooks::default()).unwrap();
    let back = detail.with_loras(&[(lora_dir().join("style.kohya.safetensors"), 1.0)]).unwrap();
    let again = back.generate_with(&req, Hooks::default()).unwrap();
    let plain = back.with_loras::<PathBuf>(&[]).unwrap().generate_with(&req, Hooks::default()).unwrap();
    assert_eq!(opened(), at_load, "no session opened by three switches and a switch off");
    assert_eq!((back.loaded_sessions(), m.loaded_sessions()), (held, held), "a fed view holds no session of its own");
    assert_ne!(a.latents, b.latents);
    assert_eq!(a.latents, again.latents, "switching back gives the same pictures");
    assert_eq!(a.image.data, again.image.data);
    let reference = common::tiny_model().generate_with(&req, Hooks::default()).unwrap();
    assert_eq!(plain.latents, reference.latents, "an empty set gives the plain pictures back");
    // A LoHa falls back to merging: new sessions for what it adapts.
    let loha = m.with_adapters(&case_loras(&common::root().join("tests/fixtures/lycoris"), &case(&common::root().join("tests/fixtures/lycoris"), "loha_ddim"), false)).unwrap();
    assert!(opened() > at_load, "a merged set opens sessions");
    assert!(loha.lora_fed_layers().0 == 0);
}

/// Seamless and CLIP-skip views of a fed LoRA view keep its LoRAs: the
/// seamless view equals a seamless model with the same LoRAs merged.
#[test]
fn views_of_a_fed_view_keep_the_loras() {
    let m = slotted(common::runtime());
    let style = lora_dir().join("style.kohya.safetensors");
    let fed = m.with_loras(&[(&style, 1.0)]).unwrap();
    let merged = common::tiny_model().with_loras(&[(&style, 1.0)]).unwrap();
    let c = case(&lora_dir(), "style_ddim_s1");
    let req = request(&lora_dir(), &c);
    let view = |m: &Model, seamless: bool| if seamless { m.seamless(kiln::model::seamless::Seamless::Xy).unwrap() } else { m.clip_skip(1).unwrap() };
    for seamless in [true, false] {
        let label = if seamless { "seamless" } else { "clip_skip_1" };
        let a = view(&fed, seamless).generate_with(&req, Hooks::default()).unwrap();
        let b = view(&merged, seamless).generate_with(&req, Hooks::default()).unwrap();
        let plain = view(common::tiny_model(), seamless).generate_with(&req, Hooks::default()).unwrap();
        let scale = b.latents.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let a_l: Vec<f32> = a.latents.iter().copied().collect();
        let b_l: Vec<f32> = b.latents.iter().copied().collect();
        let p_l: Vec<f32> = plain.latents.iter().copied().collect();
        let d = common::max_abs_diff(&a_l, &b_l) / scale;
        let effect = common::max_abs_diff(&b_l, &p_l) / scale;
        eprintln!("{label}: fed vs merged latents rel {d:e} (bound 1e-4); the LoRA moves them by {effect:e}");
        common::check_margin(&format!("lora_slots::{label}::fed_vs_merged_latents"), d as f64, 1e-4);
        assert!(effect > 1e-2, "the LoRA is in the view");
    }
}

#[test]
fn c_api_loads_with_slots_and_refuses_bad_values() {
    use kiln::ffi::kiln_status;
    use kiln::ffi::lora::*;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_model_load_options>() };
    unsafe { kiln_model_load_options_init(&mut o) };
    assert_eq!(o.lora_slots, 0, "off by default");
    o.lora_slots = 2;
    let mut model = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load_with(rt, dir.as_ptr(), &o, &mut model) }, kiln_status::InvalidArgument);
    assert!(common::ffi_last_error().contains("options->lora_slots 2"), "{}", common::ffi_last_error());
    assert!(model.is_null());
    o.lora_slots = 1;
    assert_eq!(unsafe { kiln_model_load_with(rt, dir.as_ptr(), &o, &mut model) }, kiln_status::Ok);
    let mut info = kiln_model_info { struct_size: std::mem::size_of::<kiln_model_info>() as u32, ..Default::default() };
    assert_eq!(std::mem::size_of::<kiln_model_info>(), 44);
    assert_eq!(unsafe { kiln_model_get_info(model, &mut info) }, kiln_status::Ok);
    assert_eq!(info.lora_slots as usize, slotted(common::runtime()).info().lora_slots);
    // The 40-byte layout still reads, without the new field.
    let mut old = kiln_model_info { struct_size: 40, lora_slots: 77, ..Default::default() };
    assert_eq!(unsafe { kiln_model_get_info(model, &mut old) }, kiln_status::Ok);
    assert_eq!((old.lora_slots, old.fused_attention), (77, info.fused_attention));
    // A LoRA through the C API gives the Rust API's fed pictures.
    let style = std::ffi::CString::new(lora_dir().join("style.kohya.safetensors").to_str().unwrap()).unwrap();
    let mut l = unsafe { std::mem::zeroed::<kiln_lora>() };
    unsafe { kiln_lora_init(&mut l) };
    l.path = style.as_ptr();
    let mut view = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_with_loras(model, &l, 1, &mut view) }, kiln_status::Ok);
    let c = case(&lora_dir(), "style_ddim_s1");
    let (prompt, negative) = (std::ffi::CString::new(c["prompt"].as_str().unwrap()).unwrap(), std::ffi::CString::new("blurry").unwrap());
    let mut g = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut g) };
    g.prompt = prompt.as_ptr();
    g.negative_prompt = negative.as_ptr();
    (g.width, g.height, g.steps, g.seed) = (64, 64, 4, 7);
    let from_c = common::ffi_generate_rgb_64(view, &g);
    let rust = slotted(common::runtime()).with_loras(&[(lora_dir().join("style.kohya.safetensors"), 1.0)]).unwrap();
    let req = GenerateRequest { prompt: c["prompt"].as_str().unwrap().into(), negative_prompt: "blurry".into(), width: 64, height: 64, steps: 4, seed: 7, ..Default::default() };
    let want = rust.generate_with(&req, Hooks::default()).unwrap();
    // The C buffer is 8-bit: within one step of the Rust API's float pixels.
    let rgb = want.image.data.clone();
    assert_eq!(from_c.len(), rgb.len());
    let d = common::max_abs_diff(&from_c, &rgb);
    assert!(d <= 1.0 / 255.0 + 1e-6, "the C API's view is the Rust API's: {d}");
    unsafe {
        kiln_model_free(view);
        kiln_model_free(model);
        kiln_runtime_destroy(rt);
    }
}

/// In a ControlNet folder every job runs `unet_controlnet`: a fed view runs
/// the model's session of it with its own feeds, so switching LoRAs there
/// opens no session either, and the LoRA changes ControlNet jobs.
#[test]
fn a_fed_view_in_a_controlnet_folder_shares_unet_controlnet() {
    use kiln::pipeline::control::Control;
    let (rt, log) = common::logged_runtime(Default::default(), Default::default());
    let opts = ModelOptions { lora_slots: true, ..Default::default() };
    let base = Model::load_with(&rt, &common::controlnet_folder("lora-slots-controlnet"), &opts).unwrap();
    let r = GenerateRequest {
        prompt: "x".into(),
        steps: 2,
        scheduler: SchedulerKind::Ddim,
        controls: vec![Control::new("tiny", common::control_image("control_a.png"))],
        ..Default::default()
    };
    let plain = base.generate_with(&r, Hooks::default()).unwrap();
    let opened = || log.lock().unwrap().iter().filter(|l| l.contains(": execution provider")).count();
    let before = opened();
    let style = base.with_loras(&[(lora_dir().join("style.kohya.safetensors"), 1.0)]).unwrap();
    let a = style.generate_with(&r, Hooks::default()).unwrap();
    let detail = style.with_loras(&[(lora_dir().join("detail.kohya.safetensors"), 1.0)]).unwrap();
    let b = detail.generate_with(&r, Hooks::default()).unwrap();
    let without_controls = GenerateRequest { controls: Vec::new(), ..r.clone() };
    detail.generate_with(&without_controls, Hooks::default()).unwrap();
    assert_eq!(opened(), before, "two switches, ControlNet and plain jobs: no session opened");
    assert_ne!(a.latents, plain.latents, "the LoRA reaches unet_controlnet");
    assert_ne!(a.latents, b.latents);
    // The same LoRA merged (a model without slots) draws the same picture to float rounding.
    let merged = Model::load(&rt, &common::controlnet_folder("lora-slots-controlnet-merged"))
        .unwrap()
        .with_loras(&[(lora_dir().join("style.kohya.safetensors"), 1.0)])
        .unwrap()
        .generate_with(&r, Hooks::default())
        .unwrap();
    let (x, y): (Vec<f32>, Vec<f32>) = (a.latents.iter().copied().collect(), merged.latents.iter().copied().collect());
    let d = common::max_abs_diff(&x, &y) / y.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!("ControlNet job, fed vs merged: latents rel {d:e} (bound 1e-4)");
    common::check_margin("lora_slots::controlnet::fed_vs_merged_latents", d as f64, 1e-4);
}

/// With int8 weights the slots stay float (their products sit in `If`
/// branches, which the quantizer leaves alone): the plain slotted int8 model
/// draws the int8 model's pictures bit for bit, and a fed LoRA moves them.
#[test]
fn slots_on_an_int8_model_change_nothing_until_fed_and_stay_float() {
    use kiln::model::quantize::Quantization;
    let int8 = ModelOptions { quantization: Quantization::Int8, ..Default::default() };
    let plain = Model::load_with(common::runtime(), &common::fixture(), &int8).unwrap();
    let slotted = Model::load_with(common::runtime(), &common::fixture(), &ModelOptions { lora_slots: true, ..int8 }).unwrap();
    let req = request(&lora_dir(), &case(&lora_dir(), "style_ddim_s1"));
    let a = plain.generate_with(&req, Hooks::default()).unwrap();
    let b = slotted.generate_with(&req, Hooks::default()).unwrap();
    assert_eq!(a.latents, b.latents, "switched-off slots beside int8 layers change nothing");
    let fed = slotted.with_loras(&[(lora_dir().join("style.kohya.safetensors"), 1.0)]).unwrap();
    assert!(fed.lora_fed_layers().0 > 0);
    let c = fed.generate_with(&req, Hooks::default()).unwrap();
    let (x, y): (Vec<f32>, Vec<f32>) = (a.latents.iter().copied().collect(), c.latents.iter().copied().collect());
    let effect = common::max_abs_diff(&x, &y) / x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    eprintln!("int8: the fed LoRA moves the latents by {effect:e} (relative)");
    assert!(effect > 1e-2);
}
