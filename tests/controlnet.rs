//! ControlNet parity with diffusers' StableDiffusionControlNetPipeline,
//! ...ControlNetImg2ImgPipeline and ...ControlNetInpaintPipeline
//! (tools/make_controlnet_golden.py) on the tiny
//! fixture plus tests/fixtures/controlnet (tools/make_controlnet_fixture.py),
//! and on the 9-channel inpainting variant with its `unet_controlnet`
//! (tests/fixtures/controlnet-inpaint9, `--inpaint9` of both scripts):
//! same control images, scales, window and guess mode, every random draw
//! replayed. Tolerances as tests/parity.rs: latents ≤ 1e-3 relative to their
//! largest value, image ≤ 2e-3 absolute, U-Net timesteps exact. The golden
//! side ran torch, Kiln runs the ONNX exports (per-graph difference ≈ 1e-6).
//! Also the errors: a missing ControlNet, one for another architecture, a
//! residual-count mismatch, a bad control image; the model stays usable.
//! And plain jobs in a ControlNet folder: they run `unet_controlnet` with zero
//! residuals, with the pixels of `unet/` (bit for bit), unless its weights
//! differ from `unet/`'s.
mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::image::control::{ControlImage, Preprocess};
use kiln::pipeline::control::Control;
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{ErrorKind, Model, SchedulerKind};

fn model_folder() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| common::controlnet_folder("controlnet-tests")).clone()
}

fn model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(common::runtime(), &model_folder()).expect("controlnet model loads"))
}

/// variants/inpaint9 (a 9-channel inpainting U-Net) with its
/// `unet_controlnet` and the 4-channel ControlNet `small`.
fn inpaint9_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| {
        Model::load(common::runtime(), &common::inpaint9_controlnet_folder("controlnet-tests")).expect("inpaint9 ControlNet folder loads")
    })
}

fn case(name: &str) {
    case_on(model(), "controlnet", "tiny", name);
}

/// Golden case `name` of golden/`set`, run on `model` with ControlNet `net`.
fn case_on(model: &Model, set: &str, net: &str, name: &str) {
    let c = common::golden_case(&common::golden(&format!("{set}/cases.json")), name);
    let (_, draws) = common::read_npy(&format!("{set}/{name}.draws.npy"));
    let request = common::controlnet_request(&c, net, draws);
    let out = model.generate_with(&request, Hooks::default()).unwrap();
    common::check_controlnet_device_loop(name, &out);
    let want_t: Vec<f64> = c["unet_timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: timesteps");
    let (_, want) = common::read_npy(&format!("{set}/{name}.latents.npy"));
    let got: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let rel = common::max_abs_diff(&got, &want) / scale;
    common::check_margin(&format!("controlnet::{name}::latents_rel"), rel as f64, 1e-3);
    let (_, want_img) = common::read_npy(&format!("{set}/{name}.image.npy"));
    let d = common::max_abs_diff(&out.image.data, &want_img);
    common::check_margin(&format!("controlnet::{name}::image_abs"), d as f64, 2e-3);

    // The control must matter: without it the latents are far from the golden.
    let plain = GenerateRequest { controls: Vec::new(), guess_mode: false, ..request };
    let without = model.generate_with(&plain, Hooks::default()).unwrap();
    let off: Vec<f32> = without.latents.iter().copied().collect();
    let effect = common::max_abs_diff(&off, &want) / scale;
    eprintln!("{name}: without the ControlNet the latents differ by {effect:.3e} (relative)");
    assert!(effect > 1e-2, "{name}: the ControlNet changed the result by only {effect:e}");
}

#[test]
fn one_controlnet_ddim_matches_diffusers() {
    case("ddim_one");
}

#[test]
fn one_controlnet_euler_matches_diffusers() {
    case("euler_one");
}

#[test]
fn two_controlnets_at_different_scales_match_diffusers() {
    case("ddim_two");
}

#[test]
fn start_end_window_matches_diffusers() {
    case("ddim_window");
}

#[test]
fn guess_mode_matches_diffusers() {
    case("ddim_guess");
}

#[test]
fn controlnet_without_guidance_matches_diffusers() {
    case("ddim_noguide");
}

#[test]
fn img2img_with_control_matches_diffusers() {
    case("ddim_img2img");
}

#[test]
fn inpainting_with_control_matches_diffusers() {
    case("ddim_inpaint");
}

#[test]
fn inpainting_at_full_strength_with_control_matches_diffusers() {
    case("euler_inpaint_full");
}

// A 9-channel inpainting U-Net (latents, mask, masked picture's latents)
// with a ControlNet, which sees the latents without the mask channels, as in
// diffusers' StableDiffusionControlNetInpaintPipeline
// (tools/make_controlnet_golden.py --inpaint9).

#[test]
fn inpainting_unet_with_control_matches_diffusers() {
    case_on(inpaint9_model(), "controlnet-inpaint9", "small", "ddim_inpaint9");
}

#[test]
fn inpainting_unet_with_a_control_window_matches_diffusers() {
    case_on(inpaint9_model(), "controlnet-inpaint9", "small", "euler_inpaint9_window");
}

#[test]
fn inpainting_unet_with_two_controls_matches_diffusers() {
    case_on(inpaint9_model(), "controlnet-inpaint9", "small", "ddim_inpaint9_two");
}

#[test]
fn inpainting_unet_with_control_in_guess_mode_matches_diffusers() {
    case_on(inpaint9_model(), "controlnet-inpaint9", "small", "ddim_inpaint9_guess");
}

#[test]
fn a_plain_model_opens_no_controlnet_session() {
    let m = Model::load(common::runtime(), &common::fixture()).unwrap();
    assert!(m.layout().unet_controlnet.is_none() && m.layout().controlnets.is_empty());
    let before = m.loaded_sessions();
    let r = GenerateRequest { prompt: "x".into(), steps: 2, controls: vec![Control::new("tiny", common::control_image("control_a.png"))], ..Default::default() };
    let e = m.generate_with(&r, Hooks::default()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ModelNotFound, "{e}");
    assert_eq!(m.loaded_sessions(), before);
    // The ControlNet model lists what it has and opens nothing until used.
    let layout = model().layout();
    assert_eq!(layout.controlnets, ["few-residuals", "tiny", "wide-text"]);
}

/// A ControlNet folder holds the U-Net twice (`unet/`, and `unet_controlnet/`
/// taking residuals). Every job runs `unet_controlnet`, plain ones with zero
/// residuals, so one copy of the weights is resident whatever the mix of
/// jobs, and a plain job's pixels are the plain U-Net's, bit for bit.
#[test]
fn every_job_runs_one_unet_in_a_controlnet_folder() {
    let m = Model::load(common::runtime(), &common::controlnet_folder("one-unet")).unwrap();
    assert!(!m.resident_graphs().contains(&"unet"), "loading opened unet/: {:?}", m.resident_graphs());
    let controlled = GenerateRequest {
        prompt: "mossy stone".into(),
        steps: 3,
        seed: 5,
        controls: vec![Control::new("tiny", common::control_image("control_a.png"))],
        ..Default::default()
    };
    let first = m.generate_with(&controlled, Hooks::default()).unwrap();
    assert!(!m.resident_graphs().contains(&"unet"), "a ControlNet job opened unet/: {:?}", m.resident_graphs());
    let sessions = m.loaded_sessions();
    let plain = GenerateRequest { controls: Vec::new(), ..controlled.clone() };
    let shared = m.generate_with(&plain, Hooks::default()).unwrap();
    assert!(!m.resident_graphs().contains(&"unet"), "a plain job opened unet/: {:?}", m.resident_graphs());
    assert!(m.resident_graphs().contains(&"unet_controlnet"), "{:?}", m.resident_graphs());
    assert_eq!(m.loaded_sessions(), sessions, "the plain job opens no session");
    // The same plain job on the fixture without ControlNet parts (its own unet/).
    let own = Model::load(common::runtime(), &common::fixture()).unwrap().generate_with(&plain, Hooks::default()).unwrap();
    let d = common::max_abs_diff(&shared.latents.iter().copied().collect::<Vec<_>>(), &own.latents.iter().copied().collect::<Vec<_>>());
    eprintln!("plain job through unet_controlnet vs unet/: latents differ by {d:e}");
    assert_eq!(shared.latents, own.latents, "zero residuals must leave the U-Net's output as it is");
    assert_eq!(shared.image.data, own.image.data);
    // Non-square: the zero residuals take each axis's size.
    let wide = GenerateRequest { width: 96, height: 32, ..plain.clone() };
    let a = m.generate_with(&wide, Hooks::default()).unwrap();
    let b = Model::load(common::runtime(), &common::fixture()).unwrap().generate_with(&wide, Hooks::default()).unwrap();
    assert_eq!((a.image.width, a.image.height), (96, 32));
    assert_eq!(a.image.data, b.image.data, "96x32 through unet_controlnet vs unet/");
    // A seamless view: both graphs rewritten to wrap, still the same pixels.
    let xy = kiln::model::seamless::Seamless::Xy;
    let a = m.seamless(xy).unwrap().generate_with(&plain, Hooks::default()).unwrap();
    let b = Model::load(common::runtime(), &common::fixture()).unwrap().seamless(xy).unwrap().generate_with(&plain, Hooks::default()).unwrap();
    assert_eq!(a.image.data, b.image.data, "seamless through unet_controlnet vs unet/");
    // And the ControlNet job again is unchanged.
    assert_eq!(m.generate_with(&controlled, Hooks::default()).unwrap().image.data, first.image.data);
}

/// An `unet_controlnet/` whose weights are not `unet/`'s (exported from
/// another fine-tune) must not change plain jobs: they open `unet/`.
#[test]
fn plain_jobs_open_unet_when_unet_controlnet_holds_other_weights() {
    use kiln::model::lora::GraphIndex;
    // The first layer by name is one of those compared value by value; every
    // bias is compared, so the last layer's weight stays and its bias changes.
    let index = GraphIndex::read(&common::root().join("tests/fixtures/controlnet/unet_controlnet/model.onnx")).unwrap();
    let first = index.modules.keys().min().unwrap().clone();
    let last_biased = index.biases.keys().max().unwrap().clone();
    for (case, slot, said_about) in [
        ("other-weights", &index.modules[&first], format!("layer `{first}` holds other values")),
        ("other-bias", &index.biases[&last_biased], format!("the bias of layer `{last_biased}` holds other values")),
    ] {
        let folder = common::controlnet_folder(case);
        let dir = folder.join("unet_controlnet");
        // Find the tensor's stored bytes (in model.onnx or an external data file) and change one.
        let values = index.read_f32(slot).unwrap();
        let pattern: Vec<u8> = values[..8].iter().flat_map(|v| v.to_le_bytes()).collect();
        let changed = std::fs::read_dir(&dir).unwrap().flatten().any(|entry| {
            let mut bytes = std::fs::read(entry.path()).unwrap();
            let Some(at) = bytes.windows(pattern.len()).position(|w| w == pattern.as_slice()) else { return false };
            bytes[at + 1] ^= 0x40;
            std::fs::write(entry.path(), bytes).unwrap();
            true
        });
        assert!(changed, "{case}: `{}`'s bytes not found in {}", slot.initializer, dir.display());

        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = std::sync::Arc::clone(&log);
        let rt = kiln::Runtime::new(&kiln::RuntimeOptions {
            log: Some(std::sync::Arc::new(move |_level, text: &str| sink.lock().unwrap().push(text.to_string()))),
            ..Default::default()
        })
        .unwrap();
        let m = Model::load(&rt, &folder).unwrap();
        let plain = GenerateRequest { prompt: "mossy stone".into(), steps: 2, seed: 5, ..Default::default() };
        let out = m.generate_with(&plain, Hooks::default()).unwrap();
        let said = log.lock().unwrap().join("\n");
        assert!(said.contains("not the same U-Net") && said.contains(&said_about), "{case}: {said}");
        assert!(m.resident_graphs().contains(&"unet"), "{case}: {:?}", m.resident_graphs());
        assert!(!m.resident_graphs().contains(&"unet_controlnet"), "{case}: {:?}", m.resident_graphs());
        let own = Model::load(common::runtime(), &common::fixture()).unwrap().generate_with(&plain, Hooks::default()).unwrap();
        assert_eq!(out.image.data, own.image.data, "{case}");
    }
}

#[test]
fn bad_controls_get_specific_errors_and_the_model_stays_usable() {
    let m = model();
    let base = GenerateRequest { prompt: "x".into(), steps: 2, scheduler: SchedulerKind::Ddim, ..Default::default() };
    let with = |c: Control| GenerateRequest { controls: vec![c], ..base.clone() };
    let err = |r: GenerateRequest| m.generate_with(&r, Hooks::default()).unwrap_err();
    let good = common::control_image("control_a.png");

    let e = err(with(Control::new("missing", good.clone())));
    assert_eq!(e.kind(), ErrorKind::ModelNotFound, "{e}");
    assert!(e.to_string().contains("tiny"), "the message lists what exists: {e}");
    let e = err(with(Control::new("wide-text", good.clone())));
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{e}");
    assert!(e.to_string().contains("another base architecture"), "{e}");
    let e = err(with(Control::new("few-residuals", good.clone())));
    assert_eq!(e.kind(), ErrorKind::AdapterMismatch, "{e}");
    assert!(e.to_string().contains("4 down-block residuals"), "{e}");
    let e = err(with(Control::new("../tiny", good.clone())));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");

    let two_channels = ControlImage { width: 64, height: 64, channels: 2, data: vec![0; 64 * 64 * 2] };
    let e = err(with(Control::new("tiny", two_channels)));
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let short = ControlImage { data: good.data[..100].to_vec(), ..good.clone() };
    assert_eq!(err(with(Control::new("tiny", short))).kind(), ErrorKind::InvalidSize);
    let wide = ControlImage { width: 128, height: 32, channels: 1, data: vec![0; 128 * 32] };
    assert_eq!(err(with(Control::new("tiny", wide))).kind(), ErrorKind::InvalidSize);
    let window = Control { start: 0.7, end: 0.2, ..Control::new("tiny", good.clone()) };
    assert_eq!(err(with(window)).kind(), ErrorKind::InvalidArgument);
    assert_eq!(err(GenerateRequest { guess_mode: true, ..base.clone() }).kind(), ErrorKind::InvalidArgument);

    // Still usable, with and without a ControlNet; a half-size control image
    // of the right aspect is resized.
    m.generate_with(&base, Hooks::default()).unwrap();
    let half = ControlImage { width: 32, height: 32, channels: 1, data: vec![200; 32 * 32] };
    m.generate_with(&with(Control { preprocess: Preprocess::Tile, ..Control::new("tiny", half) }), Hooks::default()).unwrap();
    m.generate_with(&with(Control { preprocess: Preprocess::Canny { low: 100.0, high: 200.0 }, ..Control::new("tiny", good) }), Hooks::default())
        .unwrap();
}

/// Kiln's Canny against OpenCV's `cv2.Canny` (tools/make_canny_golden.py):
/// the share of pixels whose edge/no-edge verdict differs, relative to
/// OpenCV's edge count, must stay within 1 % (measured: identical on four
/// cases; 4 of 2136 edge pixels differ on the material-maps strip).
#[test]
fn canny_matches_opencv() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(common::golden("canny/cases.json")).unwrap()).unwrap();
    for c in cases["cases"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let (width, height, channels, data) = common::png_samples(common::golden(&format!("canny/{name}.png")));
        let image = ControlImage { width, height, channels, data };
        let (low, high) = (c["low"].as_f64().unwrap() as f32, c["high"].as_f64().unwrap() as f32);
        let got = kiln::image::control::canny(&image, low, high).unwrap();
        let (_, _, ch, want) = common::png_samples(common::golden(&format!("canny/{name}.edges.png")));
        assert_eq!(ch, 1);
        let differ = got.data.iter().zip(&want).filter(|(a, b)| a != b).count();
        let edges = want.iter().filter(|&&v| v > 0).count();
        assert!(edges > 0, "{name}: the golden has edges");
        common::check_margin(&format!("controlnet::canny::{name}::differing_share"), differ as f64 / edges as f64, 0.01);
    }
}

/// A seamless view rewrites the ControlNet and `unet_controlnet` like the
/// U-Net (their convolutions wrap with the latents) and opens them on first use.
#[test]
fn seamless_views_run_controlnets_with_wrapping_graphs() {
    let view = model().seamless(kiln::model::seamless::Seamless::Xy).unwrap();
    let before = view.loaded_sessions();
    let r = GenerateRequest {
        prompt: "x".into(),
        steps: 2,
        scheduler: SchedulerKind::Ddim,
        controls: vec![Control { preprocess: Preprocess::Tile, ..Control::new("tiny", common::control_image("control_b.png")) }],
        ..Default::default()
    };
    view.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(view.loaded_sessions(), before + 2, "unet_controlnet and the ControlNet, once");
    view.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(view.loaded_sessions(), before + 2);
}

/// Per-stage residency keeps a ControlNet and `unet_controlnet` loaded
/// together through the loop: they run in turn at every step, and releasing
/// one for the other reopened both sessions at every step (12 opens for a
/// 6-step job; on SD 1.5 seconds each). Each graph now opens once per job,
/// the text encoder and VAE are still released while denoising, and the
/// pixels are the all-resident model's.
#[test]
fn per_stage_residency_opens_the_controlnet_and_its_unet_once_per_job() {
    use std::sync::{Arc, Mutex};
    common::runtime(); // load ONNX Runtime once for this process
    let log: Arc<Mutex<Vec<String>>> = Default::default();
    let sink = Arc::clone(&log);
    let rt = kiln::Runtime::new(&kiln::RuntimeOptions {
        residency: kiln::model::Residency::PerStage,
        embedding_cache_entries: Some(0), // the text encoder runs in both rounds
        log: Some(Arc::new(move |_level, text: &str| sink.lock().unwrap().push(text.to_string()))),
        log_level: kiln::runtime::LogLevel::Info,
        ..Default::default()
    })
    .unwrap();
    let lazy = Model::load(&rt, &common::controlnet_folder("per-stage")).unwrap();
    let r = GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        negative_prompt: "blurry".into(),
        steps: 6,
        seed: 5,
        scheduler: SchedulerKind::Euler,
        // Two nets (one graph) and a window: steps with and without a net.
        controls: vec![
            Control { scale: 0.7, ..Control::new("tiny", common::control_image("control_a.png")) },
            Control { end: 0.5, ..Control::new("tiny", common::control_image("control_b.png")) },
        ],
        ..Default::default()
    };
    for round in 0..2 {
        log.lock().unwrap().clear();
        let mut seen = Vec::new();
        let mut on_step = |_: &kiln::pipeline::StepProgress<'_>| seen.push((lazy.resident_graphs(), lazy.loaded_sessions()));
        let out = lazy.generate_with(&r, Hooks { on_step: Some(&mut on_step), ..Default::default() }).unwrap();
        let opens: Vec<String> = log.lock().unwrap().iter().filter(|l| l.contains(": execution provider")).map(|l| l.split(':').next().unwrap().to_string()).collect();
        assert_eq!(opens, ["text_encoder", "controlnet", "unet_controlnet", "vae_decoder"], "round {round}: sessions opened");
        assert!(
            seen.iter().all(|(graphs, sessions)| graphs == &vec!["unet_controlnet"] && *sessions == 2),
            "round {round}: only unet_controlnet and the ControlNet are loaded while denoising: {seen:?}"
        );
        assert_eq!(lazy.resident_graphs(), vec!["vae_decoder"], "round {round}: the stage is released after the loop");
        let reference = model().generate_with(&r, Hooks::default()).unwrap();
        assert_eq!(out.image.data, reference.image.data, "round {round}: residency must not change a pixel");
    }
}
