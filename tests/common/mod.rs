//! Shared test helpers: one ONNX Runtime per test process, fixture paths.
#![allow(dead_code)]
use std::path::PathBuf;
use std::sync::OnceLock;

use kiln::{Model, Runtime, RuntimeOptions};

pub mod binding_goldens;
pub mod handoff;
pub mod programs;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture() -> PathBuf {
    root().join("tests/fixtures/tiny-sd")
}

/// What a load job counts for the graph in `dir` (its `model.onnx`; the
/// fixtures keep no external weights): its size in KiB, rounded up.
pub fn graph_kib(dir: &std::path::Path) -> u32 {
    std::fs::metadata(dir.join("model.onnx")).unwrap().len().div_ceil(1024) as u32
}

pub fn golden(name: &str) -> PathBuf {
    root().join("tests/fixtures/golden").join(name)
}

/// One runtime per test process. Spinning is off (Kiln's default), so test
/// threads running graphs at once do not fight over the two cores.
///
/// On a GPU machine the same tests check a provider: `KILN_TEST_PROVIDERS=cuda`
/// (required, no CPU fallback) and `KILN_TEST_GPU_MATH=exact|fast`
/// (tools/gpu_check.sh sets them). Unset, the tests run on the CPU.
/// `KILN_TEST_STATIC_UNET=1` and `KILN_TEST_CUDA_GRAPH=1` turn on the static
/// U-Net and CUDA graph replay (`ProviderPolicy::static_unet`, `cuda_graph`);
/// `KILN_TEST_DEVICE_LATENTS=1` device-resident latents (`device_latents`).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        let mut providers = env_providers();
        // The GPU levers, for running every test through them (.ci/run runs
        // the parity cases with the static U-Net; tools/gpu_check.sh with CUDA graphs).
        providers.static_unet = env_flag("KILN_TEST_STATIC_UNET");
        providers.cuda_graph = env_flag("KILN_TEST_CUDA_GRAPH");
        providers.device_latents = env_flag("KILN_TEST_DEVICE_LATENTS");
        Runtime::new(&RuntimeOptions { providers, ..Default::default() }).expect("ONNX Runtime must load for the tests")
    })
}

/// The providers and GPU math the environment asks for
/// (`KILN_TEST_PROVIDERS`, required; `KILN_TEST_GPU_MATH`), levers off: the
/// base of every test runtime, so a GPU run checks the same provider everywhere.
pub fn env_providers() -> kiln::runtime::ProviderPolicy {
    let mut providers = kiln::runtime::ProviderPolicy::default();
    if let Ok(list) = std::env::var("KILN_TEST_PROVIDERS") {
        providers.preferred = kiln::runtime::Provider::list_from_names(&list).unwrap_or_else(|e| panic!("KILN_TEST_PROVIDERS: {e}"));
        providers.require = true;
    }
    if let Ok(math) = std::env::var("KILN_TEST_GPU_MATH") {
        providers.gpu_math = kiln::runtime::GpuMath::from_name(&math).expect("KILN_TEST_GPU_MATH: fast or exact");
    }
    providers
}

/// Whether the environment variable `name` is `1`.
pub fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

/// The request of a LoRA golden case (tools/make_lora_fixture.py and its
/// siblings) whose files are in `dir`: its prompt, size, schedule and the
/// recorded initial (and, for stochastic schedulers, per-step) noise.
pub fn lora_case_request(dir: &std::path::Path, c: &serde_json::Value) -> kiln::GenerateRequest {
    let npy = |f: &str| kiln::image::npy::read_f32(&dir.join(f)).expect("golden file");
    let (shape, noise) = npy("noise_1x4x8x8.npy");
    kiln::GenerateRequest {
        seed: 0,
        scheduler: kiln::SchedulerKind::from_name(c["kiln_scheduler"].as_str().unwrap()).unwrap(),
        initial_noise: Some(kiln::pipeline::InitialNoise { shape: [shape[0], shape[1], shape[2], shape[3]], data: noise }),
        step_noise: c["files"]["step_noise"].as_str().map(|f| npy(f).1),
        scheduler_overrides: Some(c["scheduler_config"].clone()),
        ..case_basics(c)
    }
}

/// A golden case's prompt, negative prompt, size, steps and guidance, as
/// every tools/make_*_fixture.py script writes them; the rest default.
pub fn case_basics(c: &serde_json::Value) -> kiln::GenerateRequest {
    kiln::GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap_or("").into(),
        width: c["width"].as_u64().unwrap() as usize,
        height: c["height"].as_u64().unwrap() as usize,
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        ..Default::default()
    }
}

/// Load options for the LoRA golden suites: with `KILN_TEST_LORA_SLOTS=1`
/// the model gets LoRA slots, so the same goldens check the fed path.
pub fn lora_model_options() -> kiln::ModelOptions {
    kiln::ModelOptions { lora_slots: env_flag("KILN_TEST_LORA_SLOTS"), ..Default::default() }
}

/// Under `KILN_TEST_LORA_SLOTS=1`, checks that `view`'s U-Net LoRA was fed to
/// the slots (`plain`: the files are plain low-rank LoRAs) or merged (others),
/// so a golden passing there really tested the path asked for.
pub fn check_lora_path(label: &str, view: &Model, plain: bool) {
    if !env_flag("KILN_TEST_LORA_SLOTS") {
        return;
    }
    let (fed, text_fed) = view.lora_fed_layers();
    eprintln!("{label}: {fed} U-Net and {text_fed} text-encoder layers fed to LoRA slots");
    assert_eq!(fed > 0, plain, "{label}: fed {fed} U-Net layers");
}

/// A runtime's log lines, as its log callback received them.
pub type Log = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// A runtime with `providers` and `residency` whose Info-level log is kept.
pub fn logged_runtime(providers: kiln::runtime::ProviderPolicy, residency: kiln::model::Residency) -> (Runtime, Log) {
    let log: Log = Default::default();
    let sink = std::sync::Arc::clone(&log);
    let rt = Runtime::new(&RuntimeOptions {
        providers,
        log: Some(std::sync::Arc::new(move |_level, text: &str| sink.lock().unwrap().push(text.to_string()))),
        log_level: kiln::runtime::LogLevel::Info,
        residency,
        ..Default::default()
    })
    .expect("runtime");
    (rt, log)
}

/// Under `KILN_TEST_DEVICE_LATENTS=1`, checks that a ControlNet job `out`
/// ran every U-Net call on the device-resident latent loop (so the parity
/// cases run through it really test it).
pub fn check_controlnet_device_loop(id: &str, out: &kiln::pipeline::Generation) {
    if std::env::var("KILN_TEST_DEVICE_LATENTS").is_ok_and(|v| v == "1") {
        assert_eq!(out.device_steps, out.timesteps.len(), "{id}: U-Net calls on the device loop");
    }
}

pub fn tiny_model() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| Model::load(runtime(), &fixture()).expect("tiny fixture loads"))
}

/// A model variant of tests/fixtures/variants assembled into a plain model
/// folder, as tests/variants.rs and tools/make_variant_fixtures.py assemble
/// it: tiny-sd's `from_base` files (variant.json), then the variant's own.
pub fn variant_folder(name: &str) -> PathBuf {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-common-variants").join(name);
    assemble_variant(name, &dest);
    dest
}

/// Variant `name` assembled in `dest` (emptied first), as `variant_folder`.
pub fn assemble_variant(name: &str, dest: &std::path::Path) {
    let vdir = root().join("tests/fixtures/variants").join(name);
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(vdir.join("variant.json")).expect("variant.json")).unwrap();
    let base = vdir.join(spec["base"].as_str().unwrap());
    if dest.exists() {
        std::fs::remove_dir_all(dest).unwrap();
    }
    let copy = |from: &std::path::Path, rel: &str| {
        let to = dest.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {} -> {}: {e}", from.display(), to.display()));
    };
    for rel in spec["from_base"].as_array().unwrap() {
        let rel = rel.as_str().unwrap();
        copy(&base.join(rel), rel);
    }
    let mut stack = vec![vdir.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(&vdir).unwrap().to_string_lossy().replace('\\', "/");
            if p.is_dir() {
                stack.push(p);
            } else if rel != "variant.json" && rel != "README.md" {
                copy(&p, &rel);
            }
        }
    }
}

/// Copies every file below `src` to the same relative path below `dest`.
pub fn copy_tree(src: &std::path::Path, dest: &std::path::Path) {
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let to = dest.join(p.strip_prefix(src).unwrap());
            if p.is_dir() {
                stack.push(p);
            } else {
                std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                std::fs::copy(&p, &to).unwrap();
            }
        }
    }
}

/// tiny-sd with the ControlNet layout of tests/fixtures/controlnet added
/// (tools/make_controlnet_fixture.py), assembled once per test process under
/// the target dir (`tag` keeps test binaries apart).
pub fn controlnet_folder(tag: &str) -> PathBuf {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-controlnet-model").join(tag);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).unwrap();
    }
    for src in [fixture(), root().join("tests/fixtures/controlnet")] {
        copy_tree(&src, &dest);
    }
    dest
}

/// The 9-channel inpainting variant (variants/inpaint9) with the ControlNet
/// layout: its `unet_controlnet/` from tests/fixtures/controlnet-inpaint9 and
/// the ControlNet of its architecture (controlnet/few-residuals, as
/// `controlnet/small`; `tools/make_controlnet_fixture.py --inpaint9`),
/// assembled under the target dir (`tag` keeps test binaries apart).
pub fn inpaint9_controlnet_folder(tag: &str) -> PathBuf {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-inpaint9-controlnet-model").join(tag);
    assemble_variant("inpaint9", &dest);
    copy_tree(&root().join("tests/fixtures/controlnet-inpaint9"), &dest);
    copy_tree(&root().join("tests/fixtures/controlnet/controlnet/few-residuals"), &dest.join("controlnet/small"));
    dest
}

/// tiny-sdxl with tests/fixtures/sdxl-controlnet put over it
/// (tools/make_sdxl_controlnet_fixture.py: its smaller U-Net replaces
/// tiny-sdxl's, with `unet_controlnet/` and `controlnet/xl/`), assembled once
/// per test process under the target dir (`tag` keeps test binaries apart).
pub fn sdxl_controlnet_folder(tag: &str) -> PathBuf {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-sdxl-controlnet-model").join(tag);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).unwrap();
    }
    for src in ["tests/fixtures/tiny-sdxl", "tests/fixtures/sdxl-controlnet"] {
        copy_tree(&root().join(src), &dest);
    }
    dest
}

/// The SDXL refiner-style fixture: tiny-sdxl's shared subfolders with
/// tests/fixtures/sdxl-refiner's own files (model_index.json, unet/,
/// scheduler/) over them, as tools/make_sdxl_refiner_fixture.py assembles it;
/// under the target dir (`tag` keeps test binaries apart).
pub fn sdxl_refiner_folder(tag: &str) -> PathBuf {
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-sdxl-refiner-model").join(tag);
    if dest.exists() {
        std::fs::remove_dir_all(&dest).unwrap();
    }
    let tiny = root().join("tests/fixtures/tiny-sdxl");
    for sub in ["text_encoder_2", "tokenizer_2", "vae_decoder", "vae_encoder"] {
        copy_tree(&tiny.join(sub), &dest.join(sub));
    }
    copy_tree(&root().join("tests/fixtures/sdxl-refiner"), &dest);
    dest
}

/// The case named `name` in a golden `cases.json`.
pub fn golden_case(cases_json: &std::path::Path, name: &str) -> serde_json::Value {
    let cases: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(cases_json).unwrap()).unwrap();
    cases.as_array().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("no case {name}")).clone()
}

/// Golden case `c`'s prompts, steps, guidance and scheduler, with no noise
/// given: only `seed`, through `noise` (the seed goldens: tests/torch_seed.rs,
/// tests/variation.rs).
pub fn seeded_golden_request(c: &serde_json::Value, seed: u64, noise: kiln::pipeline::NoiseGenerator) -> kiln::GenerateRequest {
    kiln::GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().into(),
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        scheduler: kiln::SchedulerKind::from_name(c["kiln_scheduler"].as_str().unwrap()).unwrap(),
        seed,
        noise,
        ..Default::default()
    }
}

/// The request of a ControlNet golden case `c` (the tools/make_*controlnet*_golden.py
/// scripts): prompts, steps, guidance, scheduler, its controls on net `net`
/// (scale; window and guess mode where the case has them), and `draws` as the
/// initial noise, or, for img2img and inpainting cases, as the step noise with
/// the init picture and strength; inpainting cases add the mask with Kiln's
/// paste-back off (diffusers returns the decoded image whole).
pub fn controlnet_request(c: &serde_json::Value, net: &str, draws: Vec<f32>) -> kiln::pipeline::GenerateRequest {
    use kiln::pipeline::control::Control;
    use kiln::pipeline::{GenerateRequest, InitImage, InitialNoise, Mask};
    let controls = c["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            let plain = Control::new(net, control_image(k["image"].as_str().unwrap()));
            Control {
                scale: k["scale"].as_f64().unwrap() as f32,
                start: k["start"].as_f64().map_or(plain.start, |v| v as f32),
                end: k["end"].as_f64().map_or(plain.end, |v| v as f32),
                ..plain
            }
        })
        .collect();
    let mut request = GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().into(),
        negative_prompt: c["negative_prompt"].as_str().unwrap().into(),
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        scheduler: kiln::SchedulerKind::from_name(c["kiln_scheduler"].as_str().unwrap()).unwrap(),
        guess_mode: c["guess_mode"].as_bool().unwrap_or(false),
        controls,
        ..Default::default()
    };
    if c["kind"] == "img2img" || c["kind"] == "inpaint" {
        let (width, height, rgb) = png_rgb(golden("ddim_cfg.png"));
        request.init_image = Some(InitImage { width, height, rgb });
        request.strength = c["strength"].as_f64().unwrap() as f32;
        request.step_noise = Some(draws);
    } else {
        request.initial_noise = Some(InitialNoise { shape: [1, 4, 8, 8], data: draws });
    }
    if c["kind"] == "inpaint" {
        let (width, height, channels, bytes) = png_samples(golden("inpaint/mask.png"));
        request.mask = Some(Mask { width, height, data: bytes.chunks(channels).map(|p| p[0]).collect() });
        request.paste_unmasked = Some(false);
    }
    request
}

pub fn read_npy(name: &str) -> (Vec<usize>, Vec<f32>) {
    kiln::image::npy::read_f32(&golden(name)).expect("golden file")
}

/// max |a - b|.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Checks `measured <= bound` and prints the margin line that
/// tools/test_margins.py collects into docs/test-margins.md:
/// `margin <id>: measured <m> bound <b> headroom <b/m>x`.
/// Every tolerance-based test goes through here, so its margin is visible on
/// every CPU it runs on.
#[track_caller]
pub fn check_margin(id: &str, measured: f64, bound: f64) {
    let headroom = if measured > 0.0 { bound / measured } else { f64::INFINITY };
    eprintln!("margin {id}: measured {measured:.3e} bound {bound:.3e} headroom {headroom:.1}x");
    assert!(measured <= bound, "{id}: measured {measured:e} exceeds the bound {bound:e}");
}

/// Log lines delivered through [`c_log`], the C route's log callback (one list
/// per test binary; tests that read it clear it first).
pub static C_LOG: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A `kiln_log_callback` that appends each line to [`C_LOG`].
pub unsafe extern "C" fn c_log(_user: *mut std::ffi::c_void, _level: u32, message: *const std::ffi::c_char, len: usize) {
    let bytes = unsafe { std::slice::from_raw_parts(message.cast::<u8>(), len) };
    C_LOG.lock().unwrap().push(String::from_utf8_lossy(bytes).into_owned());
}

/// RGBA8 pixels of one `size`² job on the tiny fixture through the C API
/// ("mossy stone brick wall", negative "blurry", seed 11), from a fresh
/// runtime whose options `runtime` adjusts (its log goes to [`C_LOG`]) and a
/// request that `job` adjusts (steps, guidance, scheduler, ...).
pub fn c_generate_tiny(
    size: u32,
    runtime: impl FnOnce(&mut kiln::ffi::runtime::kiln_runtime_options),
    job: impl FnOnce(&mut kiln::ffi::model::kiln_generate_options),
) -> Vec<u8> {
    use kiln::ffi::kiln_status;
    use kiln::ffi::model::*;
    use kiln::ffi::runtime::*;
    use std::ffi::CString;
    let mut o = unsafe { std::mem::zeroed::<kiln_runtime_options>() };
    unsafe { kiln_runtime_options_init(&mut o) };
    o.log_callback = Some(c_log);
    runtime(&mut o);
    let mut rt = std::ptr::null_mut();
    assert_eq!(unsafe { kiln_runtime_create(&o, &mut rt) }, kiln_status::Ok);
    let dir = CString::new(fixture().to_str().unwrap()).unwrap();
    let mut m = std::ptr::null_mut();
    assert_eq!(unsafe { kiln_model_load(rt, dir.as_ptr(), &mut m) }, kiln_status::Ok);
    let mut g = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut g) };
    let (prompt, negative) = (CString::new("mossy stone brick wall").unwrap(), CString::new("blurry").unwrap());
    g.prompt = prompt.as_ptr();
    g.negative_prompt = negative.as_ptr();
    (g.width, g.height, g.seed) = (size, size, 11);
    job(&mut g);
    let mut pixels = vec![0u8; (size * size * 4) as usize];
    let s = unsafe { kiln_model_generate_into(m, &g, pixels.as_mut_ptr(), pixels.len(), 0) };
    assert_eq!(s, kiln_status::Ok);
    unsafe { kiln_model_free(m) };
    unsafe { kiln_runtime_destroy(rt) };
    pixels
}

/// A PNG's width, height, channel count and 8-bit samples as stored.
pub fn png_samples(path: impl AsRef<std::path::Path>) -> (usize, usize, usize, Vec<u8>) {
    let path = path.as_ref();
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width as usize, info.height as usize, info.color_type.samples(), buf)
}

/// A PNG's width, height and RGB samples (a fourth channel dropped).
pub fn png_rgb(path: impl AsRef<std::path::Path>) -> (usize, usize, Vec<u8>) {
    let (w, h, channels, data) = png_samples(path);
    (w, h, data.chunks(channels).flat_map(|p| [p[0], p[1], p[2]]).collect())
}

/// A ControlNet golden's control image (`tests/fixtures/golden/controlnet/<name>`), as RGB.
pub fn control_image(name: &str) -> kiln::image::control::ControlImage {
    let (width, height, data) = png_rgb(golden(&format!("controlnet/{name}")));
    kiln::image::control::ControlImage { width, height, channels: 3, data }
}

/// The C API's thread-local error message (`kiln_last_error_message`).
pub fn ffi_last_error() -> String {
    use std::ffi::{c_char, CStr};
    let mut buf = vec![0 as c_char; 4096];
    unsafe { kiln::ffi::kiln_last_error_message(buf.as_mut_ptr(), buf.len(), std::ptr::null_mut()) };
    unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

/// `kiln_model_load` of `dir` on `rt`, asserting success.
pub fn ffi_load_model(rt: *mut kiln::ffi::runtime::kiln_runtime, dir: &std::path::Path) -> *mut kiln::ffi::model::kiln_model {
    let dir = std::ffi::CString::new(dir.to_str().unwrap()).unwrap();
    let mut model = std::ptr::null_mut();
    let s = unsafe { kiln::ffi::model::kiln_model_load(rt, dir.as_ptr(), &mut model) };
    assert_eq!(s, kiln::ffi::kiln_status::Ok, "{}", ffi_last_error());
    model
}

/// A golden PNG as an opaque `kiln_image` (`kiln_image_create`), for
/// `kiln_control::image`; the caller frees it.
pub fn ffi_image_from_png(path: impl AsRef<std::path::Path>) -> *mut kiln::ffi::image::kiln_image {
    let (w, h, channels, bytes) = png_samples(path);
    let rgba: Vec<u8> = bytes.chunks(channels).flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    let mut image = std::ptr::null_mut();
    let s = unsafe { kiln::ffi::postprocess::kiln_image_create(w as u32, h as u32, rgba.as_ptr(), rgba.len(), 0, &mut image) };
    assert_eq!(s, kiln::ffi::kiln_status::Ok, "{}", ffi_last_error());
    image
}

/// `kiln_model_generate_into` at 64×64, asserting success; the RGB values in [0, 1].
pub fn ffi_generate_rgb_64(model: *mut kiln::ffi::model::kiln_model, o: &kiln::ffi::model::kiln_generate_options) -> Vec<f32> {
    let mut buf = vec![0u8; 64 * 64 * 4];
    let s = unsafe { kiln::ffi::model::kiln_model_generate_into(model, o, buf.as_mut_ptr(), buf.len(), 0) };
    assert_eq!(s, kiln::ffi::kiln_status::Ok, "{}", ffi_last_error());
    buf.chunks_exact(4).flat_map(|p| p[..3].iter().map(|&v| v as f32 / 255.0)).collect()
}

/// A golden case's request through the C struct, `draws` as its initial noise.
/// The strings live in `keep` for as long as the options are used.
pub fn ffi_case_options(
    c: &serde_json::Value,
    draws: &[f32],
    keep: &mut Vec<std::ffi::CString>,
) -> kiln::ffi::model::kiln_generate_options {
    use kiln::ffi::model::*;
    let mut o = unsafe { std::mem::zeroed::<kiln_generate_options>() };
    unsafe { kiln_generate_options_init(&mut o) };
    let mut text = |key: &str| match c.get(key).and_then(|v| v.as_str()) {
        Some(s) => {
            keep.push(std::ffi::CString::new(s).unwrap());
            keep.last().unwrap().as_ptr()
        }
        None => std::ptr::null(),
    };
    o.prompt = text("prompt");
    o.negative_prompt = text("negative_prompt");
    (o.width, o.height) = (64, 64);
    o.steps = c["steps"].as_u64().unwrap() as u32;
    o.guidance_scale = c["guidance_scale"].as_f64().unwrap() as f32;
    assert_eq!(c["kiln_scheduler"], "euler", "these goldens replay their draws as the initial noise");
    o.scheduler = kiln_scheduler::Euler as u32;
    o.initial_noise = draws.as_ptr();
    o.initial_noise_len = draws.len();
    o
}

/// Case `c`'s first control as a `kiln_control` on net `net` (which must
/// outlive it) with `image`, at the case's scale.
pub fn ffi_case_control(c: &serde_json::Value, net: &std::ffi::CStr, image: *mut kiln::ffi::image::kiln_image) -> kiln::ffi::control::kiln_control {
    let mut control: kiln::ffi::control::kiln_control = unsafe { std::mem::zeroed() };
    unsafe { kiln::ffi::control::kiln_control_init(&mut control) };
    control.controlnet = net.as_ptr();
    control.image = image;
    control.scale = c["controls"][0]["scale"].as_f64().unwrap() as f32;
    control
}

/// A job's progress through the C API (asserting the poll succeeds).
pub fn ffi_poll_job(job: u64) -> kiln::ffi::job::kiln_job_progress {
    use kiln::ffi::job::{kiln_job_poll, kiln_job_progress};
    let mut p = kiln_job_progress { struct_size: std::mem::size_of::<kiln_job_progress>() as u32, ..Default::default() };
    assert_eq!(unsafe { kiln_job_poll(job, &mut p) }, kiln::ffi::kiln_status::Ok);
    p
}

/// Polls a job every millisecond until `pred` holds; fails after `limit_s` seconds.
pub fn ffi_wait_for_job(
    job: u64,
    pred: impl Fn(&kiln::ffi::job::kiln_job_progress) -> bool,
    what: &str,
    limit_s: u64,
) -> kiln::ffi::job::kiln_job_progress {
    let start = std::time::Instant::now();
    loop {
        let p = ffi_poll_job(job);
        if pred(&p) {
            return p;
        }
        assert!(start.elapsed() < std::time::Duration::from_secs(limit_s), "timed out waiting for {what}: {p:?}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// FNV-1a 64, as tools/make_external_data_fixture.py records the data files.
pub fn fnv1a64(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    format!("{h:016x}")
}

/// tests/fixtures/tiny-sd with its U-Net in optimum's external-data layout
/// (`model.onnx_data`) and its text encoder in one file per tensor
/// (tools/make_external_data_fixture.py). The data files are rebuilt from the
/// plain fixture's bytes and must hash to what onnx.save wrote.
pub fn external_data_fixture() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-external-data-tiny-sd");
        let _ = std::fs::remove_dir_all(&dir);
        let plain = fixture();
        let ext = root().join("tests/fixtures/external-data");
        for entry in walk(&plain) {
            let rel = entry.strip_prefix(&plain).unwrap();
            let to = dir.join(rel);
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            let replaced = ext.join(rel);
            std::fs::copy(if replaced.is_file() { &replaced } else { &entry }, &to).unwrap();
        }
        let manifest: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(ext.join("data-files.json")).unwrap()).unwrap();
        for (part, files) in manifest.as_object().unwrap() {
            let source = std::fs::read(plain.join(part).join("model.onnx")).unwrap();
            for f in files.as_array().unwrap() {
                let mut data = vec![0u8; f["length"].as_u64().unwrap() as usize];
                for p in f["pieces"].as_array().unwrap() {
                    let [at, len, from] = [0, 1, 2].map(|i| p[i].as_u64().unwrap() as usize);
                    data[at..at + len].copy_from_slice(&source[from..from + len]);
                }
                let name = f["file"].as_str().unwrap();
                assert_eq!(fnv1a64(&data), f["fnv1a64"].as_str().unwrap(), "{part}/{name} rebuilt as onnx.save wrote it");
                std::fs::write(dir.join(part).join(name), data).unwrap();
            }
        }
        dir
    })
    .clone()
}

pub fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Runs golden case `name` of `cases.json` (tools/make_golden.py) on `model`
/// and checks it against diffusers' latents (1e-3 relative) and image (2e-3
/// absolute), margins named `{prefix}::{name}::…`; returns the generation.
pub fn golden_parity(model: &Model, name: &str, prefix: &str) -> kiln::pipeline::Generation {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(golden("cases.json")).unwrap()).unwrap();
    let c = cases.as_array().unwrap().iter().find(|c| c["name"] == name).expect("case in cases.json");
    // `kiln_scheduler` is the Kiln name the case stands for (the class alone
    // does not tell DPM-Solver++ 2M from its Karras variant).
    let kiln_name = c["kiln_scheduler"].as_str().expect("case names its kiln_scheduler");
    let scheduler = kiln::SchedulerKind::from_name(kiln_name).unwrap_or_else(|| panic!("no Kiln scheduler {kiln_name}"));
    if !matches!(kiln_name, "dpmpp_2m_karras" | "dpmpp_2m_sde") {
        let class = c["scheduler"].as_str().unwrap();
        assert_eq!(kiln::SchedulerKind::from_class_name(class), Some(scheduler), "{name}: {class} maps to {kiln_name}");
    }
    let (shape, noise) = read_npy(c["noise"].as_str().unwrap());
    let step_noise = golden_step_noise(c, name, &shape, scheduler, read_npy);
    let request = kiln::pipeline::GenerateRequest {
        guidance_rescale: c["guidance_rescale"].as_f64().unwrap_or(0.0) as f32,
        seed: 0,
        scheduler,
        initial_noise: Some(kiln::pipeline::InitialNoise { shape: [shape[0], shape[1], shape[2], shape[3]], data: noise }),
        step_noise,
        // The case's scheduler config as diffusers built it (overrides included).
        scheduler_overrides: Some(c["scheduler_config"].clone()),
        ..case_basics(c)
    };
    let out = model.generate_with(&request, kiln::pipeline::Hooks::default()).expect("generation succeeds");

    let want_t: Vec<f64> = c["unet_timestep_feed"]["values"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(out.timesteps, want_t, "{name}: U-Net timesteps");

    let (lshape, want_latents) = read_npy(c["files"]["latents"].as_str().unwrap());
    assert_eq!(out.latents.shape(), &lshape[..], "{name}: latent shape");
    let got_latents: Vec<f32> = out.latents.iter().copied().collect();
    let scale = want_latents.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let rel = max_abs_diff(&got_latents, &want_latents) / scale;
    check_margin(&format!("{prefix}::{name}::latents_rel"), rel as f64, 1e-3);

    let (ishape, want_image) = read_npy(c["files"]["image"].as_str().unwrap());
    assert_eq!(ishape, vec![out.image.height, out.image.width, 3], "{name}: image shape");
    let d = max_abs_diff(&out.image.data, &want_image);
    check_margin(&format!("{prefix}::{name}::image_abs"), d as f64, 2e-3);
    eprintln!("{name}: latents rel {rel:e}, image abs {d:e}");
    out
}

/// The per-step noise draws golden case `c` recorded from diffusers (one
/// latent-sized block of `shape` per draw, read by `read` from the case's
/// golden folder), which stochastic schedulers replay; `None` for a
/// deterministic `scheduler` (checked both ways).
pub fn golden_step_noise(
    c: &serde_json::Value,
    name: &str,
    shape: &[usize],
    scheduler: kiln::SchedulerKind,
    read: impl Fn(&str) -> (Vec<usize>, Vec<f32>),
) -> Option<Vec<f32>> {
    let step_noise = c["files"]["step_noise"].as_str().map(|f| {
        let (s, data) = read(f);
        assert_eq!(s[0] as u64, c["step_noise_draws"].as_u64().unwrap(), "{name}: draws");
        assert_eq!(&s[1..], shape, "{name}: one latent-sized block per draw");
        data
    });
    assert_eq!(step_noise.is_some(), scheduler.is_stochastic(), "{name}: step noise iff stochastic");
    step_noise
}
