//! Fused attention (`ModelOptions::attention`, `model::attention`): every
//! attention layer of the U-Net (and of ControlNets) run as ONNX Runtime's
//! `MultiHeadAttention` instead of the exported head split, MatMul, Softmax,
//! MatMul.
//!
//! Fused and exported graphs compute the same function in another summation
//! order, so both are held to diffusers at the usual parity bounds (latents
//! 1e-3 relative, image 2e-3), and to each other at 1e-4 relative latents
//! (measured about 1e-6: the margin line prints it). The default (auto)
//! fuses when the graphs run on the CPU provider. Also: the fused count in
//! the model info, SDXL, ControlNet folders, the graph cache, and the C API.
mod common;

use kiln::model::attention::Attention;
use kiln::{Model, ModelOptions, Runtime, RuntimeOptions};

fn load(rt: &Runtime, dir: &std::path::Path, attention: Attention) -> Model {
    Model::load_with(rt, dir, &ModelOptions { attention, ..Default::default() }).expect("load")
}

/// max |a - b| / max |b| over the final latents.
fn latents_rel(a: &kiln::pipeline::Generation, b: &kiln::pipeline::Generation) -> f64 {
    let (a, b): (Vec<f32>, Vec<f32>) = (a.latents.iter().copied().collect(), b.latents.iter().copied().collect());
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    (common::max_abs_diff(&a, &b) / scale) as f64
}

#[test]
fn fused_and_exported_both_match_diffusers_and_each_other() {
    let rt = common::runtime();
    let exported = load(rt, &common::fixture(), Attention::Exported);
    // Fused, not auto: on a GPU provider (tools/gpu_check.sh's attention
    // stage) auto keeps the export, and this is the check of the fused node there.
    let fused = load(rt, &common::fixture(), Attention::Fused);
    assert_eq!(exported.info().fused_attention, 0);
    // tiny-sd: 2 attention layers (self and cross) in each of its 6 transformer blocks.
    assert_eq!(fused.info().fused_attention, 12);
    for name in ["euler_cfg", "ddim_cfg", "euler_a_cfg", "dpmpp_2m_sde_cfg"] {
        let e = common::golden_parity(&exported, name, "attention::exported");
        let f = common::golden_parity(&fused, name, "attention::fused");
        common::check_margin(&format!("attention::fused_vs_exported::{name}::latents_rel"), latents_rel(&f, &e), 1e-4);
    }
}

#[test]
fn sdxl_fuses_every_attention_and_agrees() {
    let rt = common::runtime();
    let dir = common::root().join("tests/fixtures/tiny-sdxl");
    let exported = load(rt, &dir, Attention::Exported);
    let fused = load(rt, &dir, Attention::Fused);
    assert_eq!((exported.info().fused_attention, fused.info().fused_attention), (0, 16));
    let request = kiln::GenerateRequest { prompt: "mossy stone brick wall".into(), negative_prompt: "blurry".into(), steps: 6, seed: 3, ..Default::default() };
    let e = exported.generate_with(&request, kiln::pipeline::Hooks::default()).unwrap();
    let f = fused.generate_with(&request, kiln::pipeline::Hooks::default()).unwrap();
    common::check_margin("attention::sdxl::fused_vs_exported::latents_rel", latents_rel(&f, &e), 1e-4);
    assert!(common::max_abs_diff(&f.image.data, &e.image.data) > 0.0, "the fused graph ran (another summation order)");
}

#[test]
fn auto_fuses_when_the_gpu_provider_asked_for_is_not_there() {
    // No GPU provider is compiled into this build (or in this ONNX Runtime):
    // the graphs run on the CPU, so auto fuses; on a usable GPU provider it
    // keeps the export (unit test `names_and_values_round_trip`).
    let providers = kiln::runtime::ProviderPolicy { preferred: vec![kiln::runtime::Provider::Cuda, kiln::runtime::Provider::Cpu], ..Default::default() };
    let rt = Runtime::new(&RuntimeOptions { providers, ..Default::default() }).unwrap();
    if cfg!(feature = "cuda") {
        eprintln!("SKIPPED: built with the CUDA provider, which may be usable here");
        return;
    }
    assert_eq!(load(&rt, &common::fixture(), Attention::Auto).info().fused_attention, 12);
    assert_eq!(load(&rt, &common::fixture(), Attention::Exported).info().fused_attention, 0);
}

#[test]
fn controlnet_graphs_are_fused_too() {
    let (rt, log) = common::logged_runtime(common::env_providers(), kiln::model::Residency::AllResident);
    let dir = common::controlnet_folder("attention");
    let model = load(&rt, &dir, Attention::Fused);
    let c = common::golden_case(&common::golden("controlnet/cases.json"), "euler_one");
    let (_, draws) = common::read_npy("controlnet/euler_one.draws.npy");
    let request = common::controlnet_request(&c, "tiny", draws);
    model.generate_with(&request, kiln::pipeline::Hooks::default()).expect("a ControlNet job");
    let lines = log.lock().unwrap().clone();
    for graph in ["unet_controlnet", "controlnet"] {
        assert!(
            lines.iter().any(|l| l.contains(&format!("{graph}: ")) && l.contains("attention layers fused")),
            "{graph} not fused: {lines:#?}"
        );
    }
}

#[test]
fn the_vae_keeps_its_exported_attention_and_img2img_agrees() {
    // The VAE's one attention block (one 512-wide head) stays as exported:
    // fused, it used more memory at 1024² (see model::attention).
    let rt = common::runtime();
    let (logged, log) = common::logged_runtime(common::env_providers(), kiln::model::Residency::AllResident);
    let fused = load(&logged, &common::fixture(), Attention::Fused);
    let exported = load(rt, &common::fixture(), Attention::Exported);
    let init = kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).unwrap();
    let request = kiln::GenerateRequest { prompt: "planks".into(), steps: 4, seed: 9, init_image: Some(init), strength: 0.6, ..Default::default() };
    let f = fused.generate_with(&request, kiln::pipeline::Hooks::default()).unwrap();
    let e = exported.generate_with(&request, kiln::pipeline::Hooks::default()).unwrap();
    let lines = log.lock().unwrap().clone();
    assert!(lines.iter().any(|l| l.starts_with("unet: ") && l.contains("attention layers fused")), "{lines:#?}");
    for graph in ["vae_decoder", "vae_encoder"] {
        assert!(!lines.iter().any(|l| l.starts_with(&format!("{graph}: ")) && l.contains("fused")), "{graph}: {lines:#?}");
    }
    common::check_margin("attention::img2img::fused_vs_exported::latents_rel", latents_rel(&f, &e), 1e-4);
    let d = common::max_abs_diff(&f.image.data, &e.image.data) as f64;
    common::check_margin("attention::img2img::fused_vs_exported::image_abs", d, 1e-4);
}

#[test]
fn the_graph_cache_keeps_fused_and_exported_apart() {
    if !common::env_providers().preferred.is_empty() {
        eprintln!("SKIPPED: only CPU sessions are cached");
        return;
    }
    let cache = std::env::temp_dir().join(format!("kiln-attention-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let rt = Runtime::new(&RuntimeOptions { providers: common::env_providers(), graph_cache_dir: Some(cache.clone()), ..Default::default() }).unwrap();
    let request = kiln::GenerateRequest { prompt: "planks".into(), width: 64, height: 64, steps: 3, seed: 5, ..Default::default() };
    let first = |a| load(&rt, &common::fixture(), a).generate_with(&request, kiln::pipeline::Hooks::default()).unwrap().image.data;
    let (e1, f1) = (first(Attention::Exported), first(Attention::Fused));
    // Read back from the cache: each mode gets its own graph, bit for bit.
    let (e2, f2) = (first(Attention::Exported), first(Attention::Fused));
    assert_eq!(e1, e2);
    assert_eq!(f1, f2);
    assert_ne!(e1, f1, "fused and exported entries are distinct");
    assert!(rt.graph_cache_stats().hits >= 2, "{:?}", rt.graph_cache_stats());
    let _ = std::fs::remove_dir_all(&cache);
}

#[test]
fn c_api_takes_the_mode_and_reports_the_fused_count() {
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let mut o = unsafe { std::mem::zeroed::<kiln_model_load_options>() };
    unsafe { kiln_model_load_options_init(&mut o) };
    assert_eq!((o.attention, o.lora_slots), (kiln_attention::Auto as u32, 0));
    assert_eq!(o.struct_size as usize, std::mem::size_of::<kiln_model_load_options>());

    o.attention = 9;
    let mut m = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load_with(rt, dir.as_ptr(), &o, &mut m) }, kiln_status::InvalidArgument);
    assert!(m.is_null());
    assert!(common::ffi_last_error().contains("options->attention 9"), "{}", common::ffi_last_error());

    let info_of = |m: *mut kiln_model, size: usize| {
        let mut info = kiln_model_info { struct_size: size as u32, ..Default::default() };
        assert_eq!(unsafe { kiln_model_get_info(m, &mut info) }, kiln_status::Ok);
        info
    };
    let full = std::mem::size_of::<kiln_model_info>();
    let mut counts = Vec::new();
    for mode in [kiln_attention::Auto, kiln_attention::Exported, kiln_attention::Fused] {
        o.attention = mode as u32;
        assert_eq!(unsafe { kiln_model_load_with(rt, dir.as_ptr(), &o, &mut m) }, kiln_status::Ok);
        counts.push(info_of(m, full).fused_attention);
        // The layout before `fused_attention` is still filled.
        assert_eq!(info_of(m, std::mem::offset_of!(kiln_model_info, fused_attention)).has_vae_encoder, 1);
        unsafe { kiln_model_free(m) };
    }
    assert_eq!(counts, [12, 0, 12]);
    // The layout before `attention` (24 bytes, ending in padding where
    // `attention` now is) loads with the default, whatever that padding holds.
    let mut older = o;
    older.attention = 9;
    older.struct_size = 24;
    assert_eq!(unsafe { kiln_model_load_with(rt, dir.as_ptr(), &older, &mut m) }, kiln_status::Ok);
    assert_eq!(info_of(m, full).fused_attention, 12, "the older layout reads no attention field");
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
}
