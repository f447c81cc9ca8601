//! The static-shape U-Net (`ProviderPolicy::static_unet`): the graph
//! specialised to a job's shapes has no `Shape` node and no symbolic dimension
//! left, and generating with it gives the dynamic graph's latents and images.
//!
//! Bound: final latents max|Δ| ≤ 1e-5 × max|latents| and image max|Δ| ≤ 1e-5.
//! The specialised graph is the same arithmetic with its shape computations
//! folded, so the only allowed difference is float rounding where ONNX Runtime
//! picks other fusions or kernels once shapes are known (~1e-7 per op,
//! accumulated over the steps). Not bit-identical: measured on the CPU
//! (AVX-512) up to 1.9e-6 relative on latents, 1.7e-6 on images (the margin
//! lines).
//!
//! With `KILN_TEST_PROVIDERS=cuda` (tools/gpu_check.sh) the same cases run on
//! the GPU; `KILN_TEST_CUDA_GRAPH=1` also turns on CUDA graph replay there.
mod common;

use std::sync::{Arc, OnceLock};

use kiln::model::static_unet::{inspect, specialise};
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::runtime::LogLevel;
use kiln::{Model, Runtime, RuntimeOptions, SchedulerKind};

use common::Log;

/// A runtime like the common one (same providers and GPU math) with the
/// static U-Net on or off, and its log. The dynamic one is made here, not
/// taken from tests/common: under `KILN_TEST_CUDA_GRAPH=1` the common runtime
/// specialises the U-Net too, and the comparison would be static against
/// static.
fn runtime_with(static_unet: bool) -> (Runtime, Log) {
    let mut providers = common::env_providers();
    providers.static_unet = static_unet;
    providers.cuda_graph = static_unet && common::env_flag("KILN_TEST_CUDA_GRAPH");
    common::logged_runtime(providers, Default::default())
}

fn static_runtime() -> &'static (Runtime, Log) {
    static RT: OnceLock<(Runtime, Log)> = OnceLock::new();
    RT.get_or_init(|| runtime_with(true))
}

fn dynamic_runtime() -> &'static Runtime {
    static RT: OnceLock<(Runtime, Log)> = OnceLock::new();
    &RT.get_or_init(|| runtime_with(false)).0
}

/// The tiny fixture with the dynamic U-Net, the reference.
fn dynamic_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(dynamic_runtime(), &common::fixture()).expect("tiny fixture loads"))
}

fn static_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(&static_runtime().0, &common::fixture()).expect("tiny fixture loads"))
}

fn scratch(name: &str) -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-static-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn specialised_graph_has_no_shape_computation_left() {
    let unet = common::fixture().join("unet").join("model.onnx");
    let before = inspect(&unet).unwrap();
    eprintln!("original U-Net: {before:?}");
    // The export computes shapes at run time; otherwise this test shows nothing.
    assert!(before.shape_nodes > 0 && before.symbolic_dims > 0, "{before:?}");
    let bytes = std::fs::read(&unet).unwrap();
    let out = scratch("inspect");
    let fixed = vec![
        ("sample".to_string(), vec![2, 4, 8, 8]),
        ("timestep".to_string(), vec![]),
        ("encoder_hidden_states".to_string(), vec![2, 77, 32]),
        ("out_sample".to_string(), vec![2, 4, 8, 8]),
    ];
    let (path, after) = specialise(common::runtime(), &bytes, unet.parent().unwrap(), &fixed, &out).unwrap();
    eprintln!("specialised U-Net ({}): {after:?}", path.display());
    assert_eq!(after.shape_nodes, 0, "Shape nodes left: {after:?}");
    assert_eq!(after.symbolic_dims, 0, "symbolic dims left: {after:?}");
    assert!(after.nodes < before.nodes, "folding removed nothing: {before:?} -> {after:?}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn fixing_an_unknown_input_is_an_error() {
    let unet = common::fixture().join("unet").join("model.onnx");
    let bytes = std::fs::read(&unet).unwrap();
    let e = kiln::model::static_unet::fix_input_dims(&bytes, &[("no_such_input".into(), vec![1])]).unwrap_err();
    assert!(e.message().contains("no_such_input"), "{}", e.message());
}

fn request(scheduler: SchedulerKind, guidance: f32, size: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        negative_prompt: "blurry".into(),
        width: size,
        height: size,
        steps: 4,
        guidance_scale: guidance,
        seed: 11,
        scheduler,
        ..Default::default()
    }
}

fn compare(id: &str, scheduler: SchedulerKind, guidance: f32, size: usize) {
    let r = request(scheduler, guidance, size);
    let want = dynamic_model().generate_with(&r, Hooks::default()).expect("dynamic U-Net");
    let got = static_model().generate_with(&r, Hooks::default()).expect("static U-Net");
    assert_eq!(got.latents.shape(), want.latents.shape());
    let a: Vec<f32> = got.latents.iter().copied().collect();
    let b: Vec<f32> = want.latents.iter().copied().collect();
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    common::check_margin(&format!("static_unet::{id}::latents_rel"), (common::max_abs_diff(&a, &b) / scale) as f64, 1e-5);
    common::check_margin(&format!("static_unet::{id}::image_abs"), common::max_abs_diff(&got.image.data, &want.image.data) as f64, 1e-5);
}

#[test]
fn static_unet_matches_the_dynamic_one() {
    // CFG (batch 2) and no guidance (batch 1), two sizes: each its own graph.
    compare("euler_cfg", SchedulerKind::Euler, 5.0, 64);
    compare("euler_a_cfg", SchedulerKind::EulerA, 5.0, 64);
    compare("ddim_noguide", SchedulerKind::Ddim, 1.0, 64);
    compare("dpmpp_2m_cfg_48", SchedulerKind::DpmPP2M, 5.0, 48);
    let log = static_runtime().1.lock().unwrap().clone();
    let made: Vec<&String> = log.iter().filter(|l| l.starts_with("unet: specialised to")).collect();
    for line in &made {
        eprintln!("{line}");
    }
    // batch 2 at 64, batch 1 at 64, batch 2 at 48: three graphs, each wholly static.
    assert_eq!(made.len(), 3, "specialised graphs made: {made:?}\nlog: {log:#?}");
    assert!(made.iter().all(|l| l.contains(" 0 Shape nodes and 0 symbolic dims left")), "{made:?}");
    assert!(!log.iter().any(|l| l.contains("cannot specialise")), "{log:#?}");
    // The dynamic U-Net was never needed, so its session was never made: its
    // weights are not held beside the specialised graphs'.
    let resident = static_model().resident_graphs();
    eprintln!("resident graphs with the static U-Net: {resident:?}; the dynamic model's: {:?}", dynamic_model().resident_graphs());
    assert!(!resident.contains(&"unet"), "{resident:?}");
    assert!(dynamic_model().resident_graphs().contains(&"unet"), "the control: a plain model holds its U-Net");
}

/// In a ControlNet folder every job runs `unet_controlnet`, plain ones with
/// zero residuals, so the U-Net's weights are held once (tests/controlnet.rs).
/// With the static U-Net on, that holds too: plain and ControlNet jobs of one
/// shape run one graph specialised from `unet_controlnet`, and neither `unet/`
/// nor the dynamic `unet_controlnet` is opened. Bounds as `compare`'s: against
/// the same jobs on the dynamic graphs, and the plain job against the tiny
/// fixture's own specialised U-Net.
#[test]
fn a_controlnet_folder_specialises_unet_controlnet_for_every_job() {
    let m = Model::load(&static_runtime().0, &common::controlnet_folder("static-unet")).expect("ControlNet folder loads");
    let dynamic = Model::load(dynamic_runtime(), &common::controlnet_folder("static-unet-dynamic")).expect("ControlNet folder loads");
    let plain = request(SchedulerKind::Euler, 5.0, 64);
    let controlled = GenerateRequest {
        controls: vec![kiln::pipeline::control::Control::new("tiny", common::control_image("control_a.png"))],
        ..plain.clone()
    };
    let margins = |id: &str, got: &kiln::pipeline::Generation, want: &kiln::pipeline::Generation| {
        let (a, b): (Vec<f32>, Vec<f32>) = (got.latents.iter().copied().collect(), want.latents.iter().copied().collect());
        let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        common::check_margin(&format!("static_unet::{id}::latents_rel"), (common::max_abs_diff(&a, &b) / scale) as f64, 1e-5);
        common::check_margin(&format!("static_unet::{id}::image_abs"), common::max_abs_diff(&got.image.data, &want.image.data) as f64, 1e-5);
    };
    let got_plain = m.generate_with(&plain, Hooks::default()).expect("plain job");
    margins("controlnet_folder_plain", &got_plain, &dynamic.generate_with(&plain, Hooks::default()).unwrap());
    margins("controlnet_folder_plain_vs_unet_static", &got_plain, &static_model().generate_with(&plain, Hooks::default()).unwrap());
    let got_controlled = m.generate_with(&controlled, Hooks::default()).expect("ControlNet job");
    let want_controlled = dynamic.generate_with(&controlled, Hooks::default()).unwrap();
    margins("controlnet_folder_controlnet", &got_controlled, &want_controlled);
    // Checked to tell the two jobs apart: the control must change the picture.
    let moved = common::max_abs_diff(&got_controlled.image.data, &got_plain.image.data);
    assert!(moved > 1e-2, "the ControlNet changed the image by only {moved}");

    let resident = m.resident_graphs();
    eprintln!("resident graphs, static U-Net in a ControlNet folder: {resident:?}");
    assert!(resident.contains(&"unet_controlnet_static"), "{resident:?}");
    for never in ["unet", "unet_static", "unet_controlnet"] {
        assert!(!resident.contains(&never), "{never} was opened: {resident:?}");
    }
    // Its calls count as the U-Net's: two 4-step jobs, CFG in one batch.
    let (name, calls, _) = m.graph_run_times()[1];
    assert_eq!((name, calls), ("unet", 8), "U-Net calls reported");
    // One shape (CFG batch 2 at 64x64): one specialised graph served both jobs.
    let log = static_runtime().1.lock().unwrap().clone();
    let made: Vec<&String> = log.iter().filter(|l| l.starts_with("unet_controlnet: specialised to")).collect();
    eprintln!("{made:?}");
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].contains(" 0 Shape nodes and 0 symbolic dims left"), "{made:?}");
}

/// RGBA8 pixels of one 4-step job through the C API, from a runtime made
/// with `kiln_runtime_options.static_unet` set to `static_unet`.
fn c_generate(static_unet: u32, size: u32, guidance: f32) -> Vec<u8> {
    common::c_generate_tiny(size, |o| o.static_unet = static_unet, |g| (g.steps, g.guidance_scale) = (4, guidance))
}

/// The C field `kiln_runtime_options.static_unet`: on, the job runs the
/// specialised graph (its log says so) and its RGBA8 pixels are the dynamic
/// U-Net's. Bound: the float images may differ by 1e-5 (as above), so a byte
/// may differ by at most one level, and only where the float value lies within
/// 1e-5 of a rounding boundary (measured here: 0.006 %): at most about 2·1e-5·255 ≈ 0.5 % of the values
/// if they are spread evenly; the bound is 1 %.
#[test]
fn the_c_field_turns_the_static_unet_on_with_the_same_pixels() {
    common::C_LOG.lock().unwrap().clear();
    let off = c_generate(0, 64, 5.0);
    assert!(!common::C_LOG.lock().unwrap().iter().any(|l| l.starts_with("unet: specialised to")), "static_unet 0 made a specialised graph");
    let on = c_generate(1, 64, 5.0);
    let made: Vec<String> = common::C_LOG.lock().unwrap().iter().filter(|l| l.starts_with("unet: specialised to")).cloned().collect();
    eprintln!("{made:?}");
    assert_eq!(made.len(), 1, "static_unet 1 made no specialised graph: {made:?}");
    assert!(made[0].contains(" 0 Shape nodes and 0 symbolic dims left"), "{made:?}");
    let diffs: Vec<u8> = on.iter().zip(&off).map(|(a, b)| a.abs_diff(*b)).collect();
    let max = *diffs.iter().max().unwrap();
    let differing = diffs.iter().filter(|&&d| d != 0).count() as f64 / diffs.len() as f64;
    eprintln!("C route, static vs dynamic U-Net: max {max} levels, {:.3} % of values differ", differing * 100.0);
    // One level is what rounding a 1e-5 difference can make; more is a real change.
    assert!(max <= 1, "a byte differs by {max} levels");
    common::check_margin("static_unet::c_route::differing_fraction", differing, 0.01);
}

/// What one "process" saw: a fresh runtime and model on `cache`, generating at
/// each of `sizes` (CFG, so batch 2).
fn run_with_cache(cache: &std::path::Path, sizes: &[usize]) -> (kiln::runtime::GraphCacheStats, Vec<String>, Vec<Vec<f32>>) {
    let log: Log = Default::default();
    let sink = Arc::clone(&log);
    let rt = Runtime::new(&RuntimeOptions {
        providers: kiln::runtime::ProviderPolicy { static_unet: true, ..Default::default() },
        graph_cache_dir: Some(cache.to_path_buf()),
        log: Some(Arc::new(move |_level, text: &str| sink.lock().unwrap().push(text.to_string()))),
        log_level: LogLevel::Info,
        ..Default::default()
    })
    .expect("runtime");
    let model = Model::load(&rt, &common::fixture()).expect("tiny fixture loads");
    let images = sizes
        .iter()
        .map(|&size| model.generate_with(&request(SchedulerKind::Euler, 5.0, size), Hooks::default()).expect("static U-Net").image.data)
        .collect();
    let made = log.lock().unwrap().iter().filter(|l| l.starts_with("unet: specialised to")).cloned().collect();
    (rt.graph_cache_stats(), made, images)
}

/// With `graph_cache_dir`, a specialised U-Net is saved in the graph cache, and
/// a later process (here: a fresh runtime and model, which share nothing in
/// memory) takes it from there instead of specialising again; a job of
/// another shape misses and is specialised and saved.
#[test]
fn specialised_graphs_are_kept_in_the_graph_cache() {
    let cache = scratch("graph-cache");
    let (first, made, want) = run_with_cache(&cache, &[64]);
    eprintln!("first process: {first:?} {made:?}");
    // Text encoder and VAE decoder, then the U-Net specialised to 64x64 (the
    // dynamic U-Net is never loaded with the static one on).
    assert_eq!((first.hits, first.writes, first.rejected), (0, 3, 0), "{first:?}");
    assert!(made.len() == 1 && !made[0].contains("from the graph cache"), "{made:?}");
    let entries = std::fs::read_dir(&cache).unwrap().flatten().filter(|e| e.file_name().to_string_lossy().starts_with("unet_static-")).count();
    assert_eq!(entries, 1, "one specialised entry on disk");

    let (second, made, got) = run_with_cache(&cache, &[64, 48]);
    eprintln!("second process: {second:?} {made:?}");
    // 64x64 hits (with the two model graphs); 48x48 is another shape: a miss, written.
    assert_eq!((second.hits, second.writes, second.rejected), (3, 1, 0), "{second:?}");
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(made[0].contains("[[2, 4, 8, 8], [], [2, 77, 32]]") && made[0].contains("from the graph cache"), "{made:?}");
    assert!(made[1].contains("[[2, 4, 6, 6], [], [2, 77, 32]]") && !made[1].contains("from the graph cache"), "{made:?}");
    assert!(made.iter().all(|l| l.contains(" 0 Shape nodes and 0 symbolic dims left")), "{made:?}");
    // The same graph file on the same CPU: the same image.
    assert_eq!(got[0], want[0], "the cached specialised graph draws the image the fresh one drew");
    let _ = std::fs::remove_dir_all(&cache);
}
