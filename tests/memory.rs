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

/// Per-stage residency reads each graph's inputs and outputs from the file
/// instead of a session; they must be exactly what ONNX Runtime reports, on
/// every export shape the fixtures cover (fp16, int32 ids, fixed batch, 9
/// input channels, v-prediction...).
#[test]
fn per_stage_reads_the_same_graph_io_as_a_session() {
    common::runtime();
    let eager_rt = Runtime::new(&RuntimeOptions::default()).unwrap();
    let lazy_rt = Runtime::new(&RuntimeOptions { residency: Residency::PerStage, ..Default::default() }).unwrap();
    let mut folders = vec![common::fixture()];
    for v in ["fp16", "legacy-int64", "fixed-batch1", "inpaint9", "sd2-vpred", "lcm-unet"] {
        folders.push(common::variant_folder(v));
    }
    let describe = |m: &Model| -> Vec<String> {
        m.graph_io()
            .iter()
            .flat_map(|(graph, inputs, outputs)| {
                let side = |dir: &'static str, list: &[kiln::model::TensorSpec]| {
                    list.iter().map(move |t| format!("{graph} {dir} {} {:?} {:?}", t.name, t.ty, t.shape)).collect::<Vec<_>>()
                };
                let mut all = side("in", inputs);
                all.extend(side("out", outputs));
                all
            })
            .collect()
    };
    for folder in folders {
        let eager = Model::load(&eager_rt, &folder).unwrap();
        let lazy = Model::load(&lazy_rt, &folder).unwrap();
        assert_eq!(lazy.loaded_sessions(), 0, "{}", folder.display());
        let (want, got) = (describe(&eager), describe(&lazy));
        assert!(want.len() >= 6, "{want:?}");
        assert_eq!(got, want, "{}", folder.display());
    }
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

#[test]
fn seamless_only_load_never_holds_the_plain_graphs() {
    use kiln::model::seamless::Seamless;
    use kiln::ModelOptions;
    let rt = common::runtime();
    let req = GenerateRequest { prompt: "cobblestone".into(), steps: 2, seed: 5, scheduler: SchedulerKind::Ddim, ..Default::default() };

    // Today's path: load plain, then ask for the view. Both sets stay loaded.
    let plain = Model::load(rt, &common::fixture()).unwrap();
    assert_eq!(plain.loaded_sessions(), 3, "text encoder, U-Net, VAE decoder");
    let view = plain.seamless(Seamless::Xy).unwrap();
    assert_eq!(view.loaded_sessions(), 5, "the view adds a rewritten U-Net and decoder");
    let view_image = view.generate_with(&req, Hooks::default()).unwrap().image.data;
    let plain_image = plain.generate_with(&req, Hooks::default()).unwrap().image.data;

    // Loading the seamless view directly holds only three sessions, and draws
    // the same image bit for bit.
    let only = Model::load_with(rt, &common::fixture(), &ModelOptions { seamless: Seamless::Xy, ..Default::default() }).unwrap();
    assert_eq!(only.seamless_axes(), Seamless::Xy);
    assert_eq!(only.loaded_sessions(), 3);
    assert_eq!(only.generate_with(&req, Hooks::default()).unwrap().image.data, view_image);
    assert_eq!(only.seamless(Seamless::Xy).unwrap().loaded_sessions(), 3, "asking for its own setting loads nothing");
    assert_ne!(view_image, plain_image);
    // The plain view loads the plain graphs only when asked for, and matches.
    let back = only.seamless(Seamless::None).unwrap();
    assert_eq!(back.seamless_axes(), Seamless::None);
    assert_eq!(only.loaded_sessions(), 5);
    assert_eq!(back.generate_with(&req, Hooks::default()).unwrap().image.data, plain_image);
    // Another axis from the seamless root is rewritten from the files too.
    let x = only.seamless(Seamless::X).unwrap();
    assert_eq!(x.generate_with(&req, Hooks::default()).unwrap().image.data, plain.seamless(Seamless::X).unwrap().generate_with(&req, Hooks::default()).unwrap().image.data);

    // Per-stage residency: nothing resident after load, one graph at a time after.
    let lazy_rt = Runtime::new(&RuntimeOptions { residency: Residency::PerStage, ..Default::default() }).unwrap();
    let lazy = Model::load_with(&lazy_rt, &common::fixture(), &ModelOptions { seamless: Seamless::Xy, ..Default::default() }).unwrap();
    assert_eq!(lazy.loaded_sessions(), 0);
    assert_eq!(lazy.generate_with(&req, Hooks::default()).unwrap().image.data, view_image);
    assert_eq!(lazy.loaded_sessions(), 1);
}

#[test]
fn c_seamless_load_option_matches_the_seamless_handle() {
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use kiln::ffi::seamless::kiln_model_seamless;
    use std::ptr;
    let mut rt = ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(ptr::null(), &mut rt) }, kiln_status::Ok);
    let dir = std::ffi::CString::new(common::fixture().to_str().unwrap()).unwrap();
    let prompt = std::ffi::CString::new("sand").unwrap();
    let mut go = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut go) };
    go.prompt = prompt.as_ptr();
    go.steps = 2;
    let draw = |m: *const kiln_model| {
        let mut buf = vec![0u8; 64 * 64 * 4];
        assert_eq!(unsafe { kiln_model_generate_into(m, &go, buf.as_mut_ptr(), buf.len(), 0) }, kiln_status::Ok);
        buf
    };
    let mut base = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut base) }, kiln_status::Ok);
    let mut tiled = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_seamless(base, 2, &mut tiled) }, kiln_status::Ok);
    let mut o = unsafe { std::mem::zeroed::<kiln_model_load_options>() };
    unsafe { kiln_model_load_options_init(&mut o) };
    o.seamless = 2;
    let mut only = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load_with(rt, dir.as_ptr(), &o, &mut only) }, kiln_status::Ok);
    assert_eq!(draw(only), draw(tiled));
    let mut plain = ptr::null_mut();
    assert_eq!(unsafe { kiln_model_seamless(only, 0, &mut plain) }, kiln_status::Ok);
    assert_eq!(draw(plain), draw(base));
    for m in [base, tiled, only, plain] {
        unsafe { kiln_model_free(m) };
    }
    unsafe { kiln_runtime_destroy(rt) };
}

#[test]
fn a_view_that_outlives_its_base_makes_correct_views() {
    use kiln::model::seamless::Seamless;
    let req = GenerateRequest { prompt: "bark".into(), steps: 2, seed: 9, scheduler: SchedulerKind::Ddim, ..Default::default() };
    let draw = |m: &Model| m.generate_with(&req, Hooks::default()).unwrap().image.data;
    let plain = draw(common::tiny_model());
    let tiled = draw(&common::tiny_model().seamless(Seamless::X).unwrap());
    let skipped = draw(&common::tiny_model().clip_skip(1).unwrap());
    // The C pattern: make a view, free the base handle, ask the view for others.
    let base = Model::load(common::runtime(), &common::fixture()).unwrap();
    let view = base.seamless(Seamless::X).unwrap().clip_skip(1).unwrap();
    drop(base);
    let back = view.seamless(Seamless::None).unwrap().clip_skip(0).unwrap();
    assert_eq!(draw(&back), plain, "plain again: neither the wrapped U-Net nor the skipped encoder reused");
    assert_eq!(draw(&view.clip_skip(0).unwrap()), tiled);
    assert_eq!(draw(&view.seamless(Seamless::None).unwrap()), skipped);
}

/// A step hook may generate on the same model (a tool drawing a variation
/// while the main image runs): under either residency the nested job runs
/// and gives the same image as on its own, and the outer job finishes. Per-
/// stage residency loads and drops sessions under locks the outer job
/// takes too, so a lock held across the hook would hang here.
#[test]
fn a_step_hook_can_generate_on_the_same_model() {
    use std::sync::mpsc;
    use std::time::Duration;
    for residency in [Residency::AllResident, Residency::PerStage] {
        let m = model(residency, Some(0));
        let alone = m.generate_with(&request(), Hooks::default()).expect("alone").image.data;
        let (done_tx, done_rx) = mpsc::channel();
        // Detached: a hang fails the test on the timeout instead of blocking it.
        std::thread::spawn(move || {
            let mut nested = None;
            let mut on_step = |p: &kiln::pipeline::StepProgress<'_>| {
                if p.step == 1 {
                    nested = Some(m.generate_with(&request(), Hooks::default()).map(|g| g.image.data));
                }
            };
            let outer = m.generate_with(&request(), Hooks { on_step: Some(&mut on_step), ..Default::default() }).map(|g| g.image.data);
            let _ = done_tx.send((outer, nested));
        });
        let (outer, nested) = done_rx.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| panic!("{residency:?}: the nested generation hung"));
        assert_eq!(nested.expect("the hook ran").expect("nested job"), alone, "{residency:?}: nested image");
        assert_eq!(outer.expect("outer job"), alone, "{residency:?}: outer image");
    }
}
