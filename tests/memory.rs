//! Memory controls: per-stage residency keeps one graph loaded at a time and
//! gives bit-identical images; the prompt-embedding cache skips the text
//! encoder for repeated prompts without changing results.
mod common;

use kiln::model::Residency;
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{Model, Runtime, RuntimeOptions, SchedulerKind};

fn request() -> GenerateRequest {
    GenerateRequest {
        prompt: "grass".into(),
        negative_prompt: "blurry".into(),
        steps: 4,
        seed: 3,
        scheduler: SchedulerKind::Ddim,
        ..Default::default()
    }
}

fn model(residency: Residency, cache: Option<usize>) -> Model {
    common::runtime(); // load ONNX Runtime once for this process
    let rt = Runtime::new(&RuntimeOptions { residency, embedding_cache_entries: cache, ..Default::default() }).unwrap();
    Model::load(&rt, &common::fixture()).unwrap()
}

#[test]
fn per_stage_residency_holds_one_graph_and_changes_nothing() {
    let lazy = model(Residency::PerStage, Some(0));
    assert!(lazy.resident_graphs().is_empty(), "nothing stays loaded after load");
    let mut seen = Vec::new();
    let mut on_step = |_: &kiln::pipeline::StepProgress<'_>| seen.push(lazy.resident_graphs());
    let out = lazy.generate_with(&request(), Hooks { on_step: Some(&mut on_step), ..Default::default() }).unwrap();
    assert!(seen.iter().all(|r| r == &vec!["unet"]), "only the U-Net is loaded while denoising: {seen:?}");
    assert_eq!(lazy.resident_graphs(), vec!["vae_decoder"]);

    let eager = model(Residency::AllResident, Some(0));
    assert_eq!(eager.resident_graphs(), vec!["text_encoder", "unet", "vae_decoder"]);
    let reference = eager.generate_with(&request(), Hooks::default()).unwrap();
    assert_eq!(out.image.data, reference.image.data, "residency must not change a pixel");
    // A second generation reloads each stage and still matches.
    let again = lazy.generate_with(&request(), Hooks::default()).unwrap();
    assert_eq!(again.image.data, reference.image.data);
}

#[test]
fn embedding_cache_skips_repeated_prompts() {
    let cached = model(Residency::AllResident, Some(4));
    let first = cached.generate_with(&request(), Hooks::default()).unwrap();
    assert_eq!(cached.embedding_cache_stats(), (0, 2));
    let second = cached.generate_with(&request(), Hooks::default()).unwrap();
    assert_eq!(cached.embedding_cache_stats(), (2, 2));
    assert_eq!(first.image.data, second.image.data);
    // Eviction: five new prompts through a 4-entry cache push "grass" out.
    for p in ["a", "b", "c", "d", "e"] {
        cached.encode_prompt(p).unwrap();
    }
    cached.generate_with(&request(), Hooks::default()).unwrap();
    let (hits, misses) = cached.embedding_cache_stats();
    assert_eq!((hits, misses), (2, 2 + 5 + 2), "both prompts were evicted");

    let uncached = model(Residency::AllResident, Some(0));
    uncached.generate_with(&request(), Hooks::default()).unwrap();
    uncached.generate_with(&request(), Hooks::default()).unwrap();
    assert_eq!(uncached.embedding_cache_stats().0, 0);
}

#[test]
fn bad_residency_value_is_rejected() {
    use kiln::ffi::runtime::*;
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    assert_eq!(o.embedding_cache_entries, 32);
    o.residency = 5;
    let mut rt = std::ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln::ffi::kiln_status::InvalidArgument);
    assert!(rt.is_null());
}
