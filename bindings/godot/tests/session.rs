//! The binding's engine-independent path end to end, on Kiln's tiny fixture
//! model and real ONNX Runtime: options → preparation thread → Kiln job →
//! frame-by-frame events → Godot image data. No Godot involved.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kiln::model::seamless::Seamless;
use kiln::{GenerateRequest, Model, Runtime, RuntimeOptions, SchedulerKind};
use kiln_godot::image_data::to_godot_rgba8;
use kiln_godot::options::OptionValue;
use kiln_godot::session::{GpuSettings, Session, SessionConfig, UpscaleSettings};
use kiln_godot::tracker::{Event, Phase, Tracker};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-sd")
}

fn session() -> Session {
    Session::new(SessionConfig { model_dir: fixture(), onnxruntime_path: None, ..Default::default() })
}

fn opts(list: &[(&str, OptionValue)]) -> Vec<(String, OptionValue)> {
    list.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// Updates the tracker as a game would each frame until it ends. The limit
/// only keeps a broken build from hanging CI; nothing is timed.
fn run_to_end(tracker: &mut Tracker) -> Vec<Event> {
    let start = Instant::now();
    let mut events = Vec::new();
    while !tracker.has_ended() {
        events.extend(tracker.update(Session::pool()));
        assert!(start.elapsed() < Duration::from_secs(300), "job did not end; events so far: {}", events.len());
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(tracker.update(Session::pool()).is_empty(), "no events after the end");
    events
}

fn direct(model: &Model, request: &GenerateRequest) -> kiln::Rgba8Image {
    model.generate(request).expect("direct generation").to_rgba8()
}

fn fixture_model() -> Model {
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    Model::load(&rt, &fixture()).expect("fixture loads")
}

#[test]
fn a_job_reports_progress_previews_then_the_image_kiln_makes_directly() {
    use OptionValue::*;
    let s = session();
    let mut t = s.start(
        "mossy stone",
        &opts(&[("steps", Int(4)), ("seed", Int(3)), ("scheduler", String("ddim".into())), ("preview_interval", Int(2))]),
    );
    assert_eq!(t.phase(), Phase::Preparing);
    let events = run_to_end(&mut t);
    assert_eq!(t.phase(), Phase::Done);

    let steps: Vec<(u32, u32)> =
        events.iter().filter_map(|e| if let Event::Progress { step, total } = e { Some((*step, *total)) } else { None }).collect();
    println!("progress events: {steps:?}");
    assert!(steps.windows(2).all(|w| w[0].0 < w[1].0), "steps only go up: {steps:?}");
    assert_eq!(steps.last(), Some(&(4, 4)));
    let previews: Vec<u32> = events.iter().filter_map(|e| if let Event::Preview { step, .. } = e { Some(*step) } else { None }).collect();
    println!("preview steps: {previews:?}");
    assert_eq!(previews.last(), Some(&4), "the final preview is seen");
    assert!(previews.iter().all(|s| s % 2 == 0));
    let Some(Event::Done { image }) = events.last() else { panic!("last event must be done: {:?}", events.last()) };
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Done { .. })).count(), 1);

    let request = GenerateRequest {
        prompt: "mossy stone".into(),
        steps: 4,
        seed: 3,
        scheduler: SchedulerKind::Ddim,
        ..Default::default()
    };
    let want = direct(&fixture_model(), &request);
    assert_eq!((image.width, image.height), (want.width, want.height));
    let differing = image.pixels.iter().zip(&want.pixels).filter(|(a, b)| a != b).count();
    println!("pixels differing from Model::generate: {differing} of {} (bound 0)", want.pixels.len());
    assert_eq!(differing, 0);
    let godot = to_godot_rgba8(image).unwrap();
    assert_eq!(godot.bytes, want.pixels, "Godot's RGBA8 data is Kiln's pixels, top row first");
}

#[test]
fn seamless_option_generates_from_the_seamless_view() {
    use OptionValue::*;
    let s = session();
    let mut t = s.start("tiles", &opts(&[("steps", Int(2)), ("seamless", String("xy".into()))]));
    let events = run_to_end(&mut t);
    let Some(Event::Done { image }) = events.last() else { panic!("{:?}", events.last()) };
    let request = GenerateRequest { prompt: "tiles".into(), steps: 2, ..Default::default() };
    let model = fixture_model();
    let want = direct(&model.seamless(Seamless::Xy).unwrap(), &request);
    let plain = direct(&model, &request);
    assert_eq!(image.pixels, want.pixels, "same pixels as Model::seamless(Xy)");
    assert_ne!(image.pixels, plain.pixels, "and not the plain model's");
}

/// The request of the `euler_a_64` case that Kiln's torch-seed and
/// torch-cuda-seed goldens share (the first case of each
/// tests/fixtures/golden/*/cases.json): "mossy stone brick wall", negative
/// "blurry", 64x64, 6 steps, guidance 7.5, euler_a, seed 2026.
fn euler_a_64_request(noise: kiln::pipeline::NoiseGenerator) -> GenerateRequest {
    GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        negative_prompt: "blurry".into(),
        width: 64,
        height: 64,
        steps: 6,
        guidance_scale: 7.5,
        scheduler: SchedulerKind::EulerA,
        seed: 2026,
        noise,
        ..Default::default()
    }
}

/// Runs `euler_a_64_request` as a job with `"noise_generator": name` (the
/// key left out for `None`) and checks that its pixels are `Model::generate`'s
/// for the same request with `noise` as its `GenerateRequest::noise`.
fn euler_a_64_job(s: &Session, model: &Model, name: Option<&str>, noise: kiln::pipeline::NoiseGenerator) -> kiln::Rgba8Image {
    use OptionValue::*;
    let mut options = opts(&[
        ("negative_prompt", String("blurry".into())),
        ("width", Int(64)),
        ("height", Int(64)),
        ("steps", Int(6)),
        ("guidance_scale", Float(7.5)),
        ("scheduler", String("euler_a".into())),
        ("seed", Int(2026)),
    ]);
    if let Some(name) = name {
        options.push(("noise_generator".into(), String(name.into())));
    }
    let mut t = s.start("mossy stone brick wall", &options);
    let image = done_image(&run_to_end(&mut t)).clone();
    let want = direct(model, &euler_a_64_request(noise));
    let differing = count_differing(&image, &want);
    println!(
        "noise_generator {}: pixels differing from Model::generate ({noise:?}): {differing} of {} (bound 0)",
        name.unwrap_or("(none)"),
        want.pixels.len()
    );
    assert_eq!(differing, 0);
    image
}

/// Half an 8-bit step of rounding on top of Kiln's 2e-3 float image bound.
const EULER_A_64_BOUND: f32 = 2e-3 + 0.5 / 255.0;

/// The largest |job - diffusers| over the RGB values, against diffusers'
/// float32 image (HWC RGB in [0, 1]) in
/// tests/fixtures/golden/<golden>/euler_a_64.image.npy.
fn from_diffusers(image: &kiln::Rgba8Image, golden: &str) -> f32 {
    from_diffusers_npy(image, &format!("{golden}/euler_a_64.image.npy"))
}

/// [`from_diffusers`] against tests/fixtures/golden/<file>, a 64x64 image.
fn from_diffusers_npy(image: &kiln::Rgba8Image, file: &str) -> f32 {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/golden").join(file);
    let (shape, diffusers) = kiln::image::npy::read_f32(&path).expect("golden image");
    assert_eq!(shape, [64, 64, 3]);
    assert_eq!(image.pixels.len() / 4 * 3, diffusers.len());
    let rgb = image.pixels.chunks_exact(4).flat_map(|p| p[..3].iter().map(|&v| v as f32 / 255.0));
    rgb.zip(&diffusers).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

/// `noise_generator: "torch"` with the settings of Kiln's torch-seed golden
/// `euler_a_64` (tests/fixtures/golden/torch-seed/cases.json): the job's
/// pixels are `Model::generate_with`'s for the same request with
/// `NoiseGenerator::TorchCpu`, differ from Kiln's own noise for that seed,
/// and match diffusers' image for `torch.Generator("cpu").manual_seed(2026)`.
#[test]
fn noise_generator_torch_gives_diffusers_seed() {
    use kiln::pipeline::NoiseGenerator;
    let s = session();
    let model = fixture_model();
    let image = euler_a_64_job(&s, &model, Some("torch"), NoiseGenerator::TorchCpu);

    // The key's default is Kiln's own noise, another picture from the same seed.
    let kiln_noise = euler_a_64_job(&s, &model, None, NoiseGenerator::Kiln);
    let moved = count_differing(&image, &kiln_noise);
    println!("noise_generator torch: {moved} of {} channel values differ from Kiln's noise", image.pixels.len());
    assert!(moved > image.pixels.len() / 4, "the generator changes the image");

    let d = from_diffusers(&image, "torch-seed");
    println!("noise_generator torch: max |job - diffusers| {d:e} (bound {EULER_A_64_BOUND:e})");
    assert!(d <= EULER_A_64_BOUND, "{d} > {EULER_A_64_BOUND}");
    let d_own = from_diffusers(&kiln_noise, "torch-seed");
    assert!(d_own > 0.05, "Kiln's noise is not diffusers' image ({d_own})");
}

/// `noise_generator: "torch_cuda"`, same request: the job's pixels are
/// `Model::generate_with`'s with `NoiseGenerator::TorchCuda`, differ from
/// the `"torch"` (CPU generator) job's, and match diffusers' image for
/// `torch.Generator("cuda").manual_seed(2026)` (AUTOMATIC1111's default GPU
/// seed) in tests/fixtures/golden/torch-cuda-seed, within the same bound.
#[test]
fn noise_generator_torch_cuda_gives_diffusers_cuda_seed() {
    use kiln::pipeline::NoiseGenerator;
    let s = session();
    let model = fixture_model();
    let image = euler_a_64_job(&s, &model, Some("torch_cuda"), NoiseGenerator::TorchCuda);

    let cpu = euler_a_64_job(&s, &model, Some("torch"), NoiseGenerator::TorchCpu);
    let moved = count_differing(&image, &cpu);
    println!("noise_generator torch_cuda: {moved} of {} channel values differ from the torch (CPU) job's", image.pixels.len());
    assert!(moved > image.pixels.len() / 4, "the CUDA stream is another picture than the CPU one");

    let d = from_diffusers(&image, "torch-cuda-seed");
    println!("noise_generator torch_cuda: max |job - diffusers| {d:e} (bound {EULER_A_64_BOUND:e})");
    assert!(d <= EULER_A_64_BOUND, "{d} > {EULER_A_64_BOUND}");
    let cpu_from_cuda_golden = from_diffusers(&cpu, "torch-cuda-seed");
    let cuda_from_cpu_golden = from_diffusers(&image, "torch-seed");
    println!(
        "noise_generator torch_cuda: max |torch job - CUDA golden| {cpu_from_cuda_golden:e}, max |torch_cuda job - CPU golden| {cuda_from_cpu_golden:e}"
    );
    assert!(cpu_from_cuda_golden > 0.05 && cuda_from_cpu_golden > 0.05, "each generator gives its own golden only");
}

/// `variation_seed` and `variation_strength` with the settings of Kiln's
/// variation golden `euler_a_64_cpu` (the first case of
/// tests/fixtures/golden/variation/cases.json: the `euler_a_64` request with
/// `noise_generator: "torch"`, variation seed 7 at strength 0.3): the job's
/// pixels are `Model::generate_with`'s for the same request, differ from the
/// seed's own picture, and match diffusers' image started from AUTOMATIC1111's
/// blend of the two seeds' noise (`euler_a_64_cpu.image.npy`) within the
/// bound of the `noise_generator` tests.
#[test]
fn variation_seed_gives_a1111s_variation_of_diffusers_seed() {
    use kiln::pipeline::{Hooks, NoiseGenerator};
    use OptionValue::*;
    let s = session();
    let model = fixture_model();
    let options = opts(&[
        ("negative_prompt", String("blurry".into())),
        ("width", Int(64)),
        ("height", Int(64)),
        ("steps", Int(6)),
        ("guidance_scale", Float(7.5)),
        ("scheduler", String("euler_a".into())),
        ("seed", Int(2026)),
        ("noise_generator", String("torch".into())),
        ("variation_seed", Int(7)),
        ("variation_strength", Float(0.3)),
    ]);
    let mut t = s.start("mossy stone brick wall", &options);
    let image = done_image(&run_to_end(&mut t)).clone();
    let request = GenerateRequest { variation_seed: 7, variation_strength: 0.3, ..euler_a_64_request(NoiseGenerator::TorchCpu) };
    let want = model.generate_with(&request, Hooks::default()).expect("direct generation").image.to_rgba8();
    let differing = count_differing(&image, &want);
    println!("variation: pixels differing from Model::generate_with: {differing} of {} (bound 0)", want.pixels.len());
    assert_eq!(differing, 0);

    // The seed alone (the same job without the two keys) is another picture.
    let plain = euler_a_64_job(&s, &model, Some("torch"), NoiseGenerator::TorchCpu);
    let moved = count_differing(&image, &plain);
    println!("variation: {moved} of {} channel values differ from the seed's own picture", image.pixels.len());
    assert!(moved > image.pixels.len() / 4, "the variation changes the image");

    let golden = "variation/euler_a_64_cpu.image.npy";
    let d = from_diffusers_npy(&image, golden);
    println!("variation: max |job - diffusers| {d:e} (bound {EULER_A_64_BOUND:e})");
    assert!(d <= EULER_A_64_BOUND, "{d} > {EULER_A_64_BOUND}");
    let d_plain = from_diffusers_npy(&plain, golden);
    println!("variation: max |seed's own picture - variation golden| {d_plain:e}");
    assert!(d_plain > 0.05, "the seed's own picture is not the variation's ({d_plain})");

    // Out of range: the job fails with INVALID_ARGUMENT before touching the model.
    let mut t = s.start("x", &opts(&[("variation_strength", Float(1.5))]));
    let (status, message) = failure(&run_to_end(&mut t));
    assert_eq!((status, message.as_str()), (101, "options[\"variation_strength\"]: 1.5 is out of range 0..=1"));
}

/// SDXL keys on tests/fixtures/tiny-sdxl: the job's pixels are those of the
/// same request made directly, and differ from the request without them.
#[test]
fn sdxl_keys_generate_what_kiln_makes_directly() {
    use OptionValue::*;
    let dir = fixture().join("../tiny-sdxl");
    let s = Session::new(SessionConfig { model_dir: dir.clone(), onnxruntime_path: None, ..Default::default() });
    let mut t = s.start(
        "mossy stone brick wall",
        &opts(&[
            ("steps", Int(3)),
            ("width", Int(96)),
            ("scheduler", String("euler".into())),
            ("prompt_2", String("rusty metal plate".into())),
            ("original_width", Int(160)),
            ("original_height", Int(128)),
            ("crop_top", Int(8)),
            ("crop_left", Int(16)),
        ]),
    );
    let events = run_to_end(&mut t);
    let Some(Event::Done { image }) = events.last() else { panic!("{:?}", events.last()) };
    let plain = GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        steps: 3,
        width: 96,
        scheduler: SchedulerKind::Euler,
        ..Default::default()
    };
    let request = GenerateRequest {
        prompt_2: "rusty metal plate".into(),
        xl: kiln::XlConditioning { original_size: Some([160, 128]), crop_top_left: [8, 16], ..Default::default() },
        ..plain.clone()
    };
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let model = Model::load(&rt, &dir).expect("tiny-sdxl loads");
    let want = direct(&model, &request);
    let differing = image.pixels.iter().zip(&want.pixels).filter(|(a, b)| a != b).count();
    println!("sdxl: pixels differing from Model::generate: {differing} of {} (bound 0)", want.pixels.len());
    assert_eq!((image.width, image.height, differing), (96, 64, 0));
    assert_ne!(image.pixels, direct(&model, &plain).pixels, "the SDXL keys changed nothing");
}

fn failure(events: &[Event]) -> (u32, String) {
    match events {
        [.., Event::Failed { status, message }] => (*status, message.clone()),
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn failures_carry_kiln_status_and_message() {
    use OptionValue::*;
    // Bad options: rejected without touching the model.
    let mut t = session().start("x", &opts(&[("steps", Int(0))]));
    let (status, message) = failure(&run_to_end(&mut t));
    assert_eq!((status, message.as_str()), (101, "options[\"steps\"]: 0 is out of range 1..=1000"));

    // A missing model folder.
    let missing = Session::new(SessionConfig { model_dir: fixture().join("no-such-model"), onnxruntime_path: None, ..Default::default() });
    let mut t = missing.start("x", &[]);
    let (status, message) = failure(&run_to_end(&mut t));
    println!("missing model: {status} {message}");
    assert_eq!(status, 200);
    assert!(message.contains("no-such-model"), "{message}");

    // A size the model cannot make fails inside Kiln's job; the status survives the pool.
    let mut t = session().start("x", &opts(&[("width", Int(65)), ("steps", Int(1))]));
    let (status, message) = failure(&run_to_end(&mut t));
    println!("width 65: {status} {message}");
    assert_eq!(status, 104);
    assert_eq!(t.phase(), Phase::Failed);

    // An empty model path says what to set.
    let empty = Session::new(SessionConfig::default());
    let mut t = empty.start("x", &[]);
    let (status, message) = failure(&run_to_end(&mut t));
    assert_eq!((status, message.as_str()), (101, "model_path is empty; set it to a Kiln model folder"));
}

#[test]
fn cancel_ends_the_job_with_cancelled() {
    use OptionValue::*;
    let s = session();
    // Long enough that it cannot finish before the cancel lands, and valid for the
    // fixture's schedule (1000 steps with steps_offset 1 would reach timestep 1000 and be
    // refused with 201 when the job starts before the cancel: a race, seen in CI).
    let mut t = s.start("x", &opts(&[("steps", Int(500)), ("scheduler", String("ddim".into()))]));
    assert!(t.cancel(Session::pool()));
    let events = run_to_end(&mut t);
    let (status, message) = failure(&events);
    println!("cancelled: {status} {message:?} after {} events", events.len());
    assert_eq!(status, 400);
    assert!(!t.cancel(Session::pool()), "an ended job has nothing to cancel");
}

/// KiB of the graphs `files` (under `dir`), as Kiln's load jobs weigh them:
/// each file rounded up to whole KiB (these fixtures keep their weights
/// inside the graph, so no external-data file counts).
fn graph_kib(dir: &Path, files: &[&str]) -> u32 {
    files.iter().map(|f| std::fs::metadata(dir.join(f)).unwrap().len().div_ceil(1024) as u32).sum()
}

/// The `loading` events in `events`, in order.
fn loading_of(events: &[Event]) -> Vec<(&'static str, u32, u32)> {
    events.iter().filter_map(|e| if let Event::Loading { what, step, total } = e { Some((*what, *step, *total)) } else { None }).collect()
}

/// Each load the job reports, in order, is `what` out of `total` KiB: its
/// counts only go up, from 0 or more to `total`, before the job's first
/// `progress`.
fn assert_loads(events: &[Event], want: &[(&str, u32)]) {
    let loads = loading_of(events);
    let mut whats: Vec<&str> = Vec::new();
    for l in &loads {
        if whats.last() != Some(&l.0) {
            whats.push(l.0);
        }
    }
    assert_eq!(whats, want.iter().map(|w| w.0).collect::<Vec<_>>(), "loads in order: {loads:?}");
    for (what, total) in want {
        let one: Vec<(u32, u32)> = loads.iter().filter(|l| l.0 == *what).map(|l| (l.1, l.2)).collect();
        assert!(one.windows(2).all(|w| w[0].0 < w[1].0), "{what}: counts only go up: {one:?}");
        assert!(one.iter().all(|l| l.1 == *total), "{what}: every total is {total} KiB: {one:?}");
        assert_eq!(one.last(), Some(&(*total, *total)), "{what}: ends with all of it open");
    }
    let first_progress = events.iter().position(|e| matches!(e, Event::Progress { .. })).unwrap_or(events.len());
    let last_loading = events.iter().rposition(|e| matches!(e, Event::Loading { .. }));
    assert!(last_loading.is_none_or(|l| l < first_progress), "loads come before the job runs: {loads:?}");
}

/// `loading` reports what a job's preparation loads, in KiB of the graphs
/// each load opens: the model on the first job (text encoder, U-Net, VAE
/// decoder), a seamless view (U-Net and decoder rewritten), a LoRA view
/// (U-Net and text encoder merged), an upscaler; a job that finds them
/// loaded reports nothing.
#[test]
fn loading_reports_each_load_a_job_makes_in_kib_of_its_graphs() {
    use OptionValue::*;
    let s = session();
    let dir = fixture();
    let kib = |files: &[&str]| graph_kib(&dir, files);
    let model = kib(&["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"]);
    let steps = [("steps", Int(2))];
    let mut first = s.start("x", &opts(&steps));
    let events = run_to_end(&mut first);
    println!("first job's loads: {:?}", loading_of(&events));
    assert_loads(&events, &[("model", model)]);
    assert!(matches!(events.last(), Some(Event::Done { .. })));
    let mut again = s.start("x", &opts(&steps));
    assert_loads(&run_to_end(&mut again), &[]);

    let tiled = [("steps", Int(2)), ("seamless", String("xy".into()))];
    let mut t = s.start("x", &opts(&tiled));
    let events = run_to_end(&mut t);
    println!("seamless view's loads: {:?}", loading_of(&events));
    assert_loads(&events, &[("seamless", kib(&["unet/model.onnx", "vae_decoder/model.onnx"]))]);
    let mut t = s.start("x", &opts(&tiled));
    assert_loads(&run_to_end(&mut t), &[]);

    let lora = [("steps", Int(2)), ("loras", Array(vec![lora_entry(lora_dir().join("style.kohya.safetensors"), 1.0)]))];
    let mut t = s.start("x", &opts(&lora));
    let events = run_to_end(&mut t);
    println!("LoRA view's loads: {:?}", loading_of(&events));
    assert_loads(&events, &[("adapters", kib(&["unet/model.onnx", "text_encoder/model.onnx"]))]);

    let upscaled = upscale_with(upscalers().join("x4"));
    let mut t = s.start_upscaled("x", &opts(&steps), &upscaled);
    let events = run_to_end(&mut t);
    println!("upscaler's loads: {:?}", loading_of(&events));
    assert_loads(&events, &[("upscaler", graph_kib(&upscalers(), &["x4/model.onnx"]))]);
    let mut t = s.upscale(picture(8, 8), "none", &upscaled);
    assert_loads(&run_to_end(&mut t), &[]);
}

/// Jobs started together on a fresh session share one model load, and each
/// reports it: the one that loads it, and the ones that wait for it, from
/// where it was when they started waiting to the end.
#[test]
fn jobs_waiting_for_the_model_report_its_load_too() {
    use OptionValue::*;
    let s = session();
    let model = graph_kib(&fixture(), &["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"]);
    let mut jobs: Vec<Tracker> = (0..3).map(|i| s.start("x", &opts(&[("steps", Int(2)), ("seed", Int(i))]))).collect();
    let start = Instant::now();
    let mut events: Vec<Vec<Event>> = jobs.iter().map(|_| Vec::new()).collect();
    while !jobs.iter().all(Tracker::has_ended) {
        for (t, ev) in jobs.iter_mut().zip(events.iter_mut()) {
            ev.extend(t.update(Session::pool()));
        }
        assert!(start.elapsed() < Duration::from_secs(300), "jobs did not end");
        std::thread::sleep(Duration::from_millis(2));
    }
    for ev in &events {
        println!("a job's loads: {:?}", loading_of(ev));
        assert_loads(ev, &[("model", model)]);
        assert_eq!(loading_of(ev)[0], ("model", 0, model), "each starts at 0");
        assert!(matches!(ev.last(), Some(Event::Done { .. })));
    }
}

/// `prepare` loads what a job with its options needs (model, LoRA view,
/// seamless view, upscaler), reports each load and ends with `Prepared`;
/// the job after it then loads nothing. Bad options fail as `generate`'s.
#[test]
fn prepare_loads_what_the_options_need_and_the_job_after_it_loads_nothing() {
    use OptionValue::*;
    let s = session();
    let dir = fixture();
    let kib = |files: &[&str]| graph_kib(&dir, files);
    let options = opts(&[
        ("seamless", String("xy".into())),
        ("loras", Array(vec![lora_entry(lora_dir().join("style.kohya.safetensors"), 1.0)])),
    ]);
    let upscaled = upscale_with(upscalers().join("x4"));
    let mut t = s.prepare(&options, &upscaled);
    let events = run_to_end(&mut t);
    println!("prepare's loads: {:?}", loading_of(&events));
    assert_eq!(events.last(), Some(&Event::Prepared));
    assert_eq!(t.phase(), Phase::Done);
    assert_loads(
        &events,
        &[
            ("model", kib(&["text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx"])),
            ("adapters", kib(&["unet/model.onnx", "text_encoder/model.onnx"])),
            ("seamless", kib(&["unet/model.onnx", "vae_decoder/model.onnx"])),
            ("upscaler", graph_kib(&upscalers(), &["x4/model.onnx"])),
        ],
    );
    let mut job = vec![("steps".to_string(), Int(2))];
    job.extend(options);
    let mut t = s.start_upscaled("brick", &job, &upscaled);
    let events = run_to_end(&mut t);
    assert_loads(&events, &[]);
    assert_eq!((done_image(&events).width, done_image(&events).height), (256, 256), "generated and upscaled");

    let mut bad = s.prepare(&opts(&[("seamless", String("z".into()))]), &UpscaleSettings::default());
    let (status, message) = failure(&run_to_end(&mut bad));
    println!("bad option: {status} {message}");
    assert_eq!(status, 101);
    let empty = Session::new(SessionConfig::default());
    let mut t = empty.prepare(&[], &UpscaleSettings::default());
    assert_eq!(failure(&run_to_end(&mut t)), (101, "model_path is empty; set it to a Kiln model folder".into()));
}

/// `cancel` while the first job loads the model ends that job on the next
/// frame (it does not wait for the load), and the next job runs to Kiln's
/// own pixels on the same session.
#[test]
fn cancel_while_the_model_loads_ends_the_job_at_once_and_the_session_goes_on() {
    use OptionValue::*;
    let s = session();
    let mut t = s.start("x", &opts(&[("steps", Int(2))]));
    assert!(t.cancel(Session::pool()));
    let events = t.update(Session::pool());
    assert!(t.has_ended(), "ended on the first update after the cancel: {events:?}");
    println!("cancelled while loading: {:?}", events.last());
    assert!(events[..events.len() - 1].iter().all(|e| matches!(e, Event::Loading { what: "model", .. })), "{events:?}");
    assert_eq!(failure(&events), (400, "cancelled while the job was being prepared, before it was queued".into()));
    assert!(run_to_end(&mut t).is_empty());

    let mut next = s.start("x", &opts(&[("steps", Int(2)), ("seed", Int(5))]));
    let events = run_to_end(&mut next);
    let request = GenerateRequest { prompt: "x".into(), steps: 2, seed: 5, ..Default::default() };
    assert_eq!(done_image(&events).pixels, direct(&fixture_model(), &request).pixels, "Model::generate's pixels");
}

/// Copies the folder tree `src` into `to` (created as needed).
fn copy_tree(src: &Path, to: &Path) {
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let out = to.join(p.strip_prefix(src).unwrap());
            if p.is_dir() {
                stack.push(p);
            } else {
                std::fs::create_dir_all(out.parent().unwrap()).unwrap();
                std::fs::copy(&p, &out).unwrap();
            }
        }
    }
}

/// tiny-sd plus tests/fixtures/controlnet, assembled under the target dir.
fn controlnet_model_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-godot-controlnet");
    let _ = std::fs::remove_dir_all(&dest);
    for src in [root.join("tiny-sd"), root.join("controlnet")] {
        copy_tree(&src, &dest);
    }
    dest
}

/// A checker with a disc: 64x64 RGBA8, as a Godot `Image` hands it over.
fn control_pixels() -> kiln::image::control::ControlImage {
    let mut data = Vec::with_capacity(64 * 64 * 4);
    for y in 0..64i32 {
        for x in 0..64i32 {
            let on = ((x / 8 + y / 8) % 2 == 0) && (x - 40).pow(2) + (y - 24).pow(2) >= 150;
            let v = if on { 255 } else { 0 };
            data.extend_from_slice(&[v, v, v, 255]);
        }
    }
    kiln::image::control::ControlImage { width: 64, height: 64, channels: 4, data }
}

/// The `controls` and `guess_mode` keys on the ControlNet fixture: the job's
/// pixels are `Model::generate`'s for the same controls, differ from the
/// uncontrolled image, and a missing ControlNet fails with 200.
#[test]
fn controls_generate_what_kiln_makes_directly() {
    use kiln::image::control::Preprocess;
    use kiln::pipeline::control::Control;
    use OptionValue::*;
    let dir = controlnet_model_dir();
    let s = Session::new(SessionConfig { model_dir: dir.clone(), onnxruntime_path: None, ..Default::default() });
    let entry = |net: &str| {
        Dictionary(opts(&[
            ("controlnet", String(net.into())),
            ("image", Image(control_pixels())),
            ("scale", Float(0.8)),
            ("end", Float(0.75)),
            ("preprocess", String("canny".into())),
            ("canny_low", Int(50)),
        ]))
    };
    let base = [("steps", Int(4)), ("seed", Int(5)), ("scheduler", String("ddim".into()))];
    let mut with_controls = base.to_vec();
    with_controls.extend([("controls", Array(vec![entry("tiny")])), ("guess_mode", Bool(true))]);
    let mut t = s.start("mossy stone", &opts(&with_controls));
    let events = run_to_end(&mut t);
    let Some(Event::Done { image }) = events.last() else { panic!("{:?}", events.last()) };

    let plain = GenerateRequest { prompt: "mossy stone".into(), steps: 4, seed: 5, scheduler: SchedulerKind::Ddim, ..Default::default() };
    let control = Control {
        scale: 0.8,
        end: 0.75,
        preprocess: Preprocess::Canny { low: 50.0, high: 200.0 },
        ..Control::new("tiny", control_pixels())
    };
    let request = GenerateRequest { controls: vec![control], guess_mode: true, ..plain.clone() };
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let model = Model::load(&rt, &dir).expect("the ControlNet model loads");
    let want = direct(&model, &request);
    let differing = image.pixels.iter().zip(&want.pixels).filter(|(a, b)| a != b).count();
    println!("controls: pixels differing from Model::generate: {differing} of {} (bound 0)", want.pixels.len());
    assert_eq!(differing, 0);
    let uncontrolled = direct(&model, &plain);
    let moved = image.pixels.iter().zip(&uncontrolled.pixels).filter(|(a, b)| a != b).count();
    println!("controls: the ControlNet changes {moved} of {} channel values", want.pixels.len());
    assert!(moved > want.pixels.len() / 4, "the ControlNet acts");

    let mut missing = base.to_vec();
    missing.push(("controls", Array(vec![entry("no-such-net")])));
    let mut t = s.start("mossy stone", &opts(&missing));
    let (status, message) = failure(&run_to_end(&mut t));
    println!("missing ControlNet: {status} {message}");
    assert_eq!(status, 200);
    assert!(message.contains("no-such-net") && message.contains("tiny"), "{message}");
}

/// How many of two images' channel values differ (same size asserted).
fn count_differing(a: &kiln::Rgba8Image, b: &kiln::Rgba8Image) -> usize {
    assert_eq!((a.width, a.height), (b.width, b.height));
    a.pixels.iter().zip(&b.pixels).filter(|(x, y)| x != y).count()
}

fn done_image(events: &[Event]) -> &kiln::Rgba8Image {
    match events.last() {
        Some(Event::Done { image }) => image,
        other => panic!("expected done, got {other:?}"),
    }
}

/// A 64x64 RGBA8 picture (diagonal gradient with a bright square, alpha
/// varying so that dropping it is checked), as a Godot `Image` hands it over.
fn init_pixels() -> kiln::image::control::ControlImage {
    let mut data = Vec::with_capacity(64 * 64 * 4);
    for y in 0..64u32 {
        for x in 0..64u32 {
            let inside = (20..44).contains(&x) && (12..36).contains(&y);
            let (r, g, b) = if inside { (230, 210, 90) } else { ((x * 4) as u8, (y * 4) as u8, ((x + y) * 2) as u8) };
            data.extend_from_slice(&[r, g, b, (x * 3) as u8]);
        }
    }
    kiln::image::control::ControlImage { width: 64, height: 64, channels: 4, data }
}

/// The same picture as Kiln's RGB init image.
fn init_rgb() -> kiln::pipeline::InitImage {
    let p = init_pixels();
    kiln::pipeline::InitImage { width: 64, height: 64, rgb: p.data.chunks(4).flat_map(|c| [c[0], c[1], c[2]]).collect() }
}

/// A mask as an RGBA8 `Image`: white (repaint) on the right half, black elsewhere.
fn mask_pixels() -> kiln::image::control::ControlImage {
    let data = (0..64 * 64).flat_map(|i| if i % 64 >= 32 { [255, 255, 255, 255] } else { [0, 0, 0, 255] }).collect();
    kiln::image::control::ControlImage { width: 64, height: 64, channels: 4, data }
}

/// `init_image`, `strength`, `posterior_mean` and `mask` on tiny-sd: each
/// job gives `Model::generate`'s pixels for the same request, and each key
/// changes the image.
#[test]
fn img2img_and_inpainting_generate_what_kiln_makes_directly() {
    use kiln::pipeline::Mask;
    use OptionValue::*;
    let s = session();
    let model = fixture_model();
    let base = [("steps", Int(4)), ("seed", Int(11)), ("scheduler", String("ddim".into()))];
    let plain = GenerateRequest { prompt: "mossy stone".into(), steps: 4, seed: 11, scheduler: SchedulerKind::Ddim, ..Default::default() };
    let job = |extra: &[(&str, OptionValue)]| {
        let mut list = base.to_vec();
        list.extend(extra.iter().cloned());
        let mut t = s.start("mossy stone", &opts(&list));
        done_image(&run_to_end(&mut t)).clone()
    };

    let img2img = GenerateRequest { init_image: Some(init_rgb()), strength: 0.6, ..plain.clone() };
    let got = job(&[("init_image", Image(init_pixels())), ("strength", Float(0.6))]);
    let want = direct(&model, &img2img);
    let (differing, from_txt2img) = (count_differing(&got, &want), count_differing(&got, &direct(&model, &plain)));
    println!("img2img: {differing} of {} differ from Model::generate (bound 0); txt2img differs in {from_txt2img}", want.pixels.len());
    assert_eq!(differing, 0);
    assert!(from_txt2img > want.pixels.len() / 4, "init_image changes the image");
    let weaker = job(&[("init_image", Image(init_pixels())), ("strength", Float(0.3))]);
    let moved = count_differing(&weaker, &got);
    println!("img2img: strength 0.3 instead of 0.6 changes {moved}");
    assert_eq!(count_differing(&weaker, &direct(&model, &GenerateRequest { strength: 0.3, ..img2img.clone() })), 0);
    assert!(moved > 0, "strength changes the image");
    let mean = job(&[("init_image", Image(init_pixels())), ("strength", Float(0.6)), ("posterior_mean", Bool(true))]);
    assert_eq!(count_differing(&mean, &direct(&model, &GenerateRequest { posterior_mean: true, ..img2img.clone() })), 0);
    println!("img2img: posterior_mean changes {}", count_differing(&mean, &got));
    assert_ne!(mean.pixels, got.pixels, "posterior_mean changes the image");

    // The mask arrives as an RGBA8 Image; Kiln gets its luma.
    let gray: Vec<u8> = mask_pixels().data.chunks(4).map(|p| p[0]).collect();
    let inpaint = GenerateRequest { mask: Some(Mask { width: 64, height: 64, data: gray.clone() }), ..img2img.clone() };
    let got = job(&[("init_image", Image(init_pixels())), ("strength", Float(0.6)), ("mask", Image(mask_pixels()))]);
    let want = direct(&model, &inpaint);
    let differing = count_differing(&got, &want);
    let unmasked = count_differing(&got, &direct(&model, &img2img));
    println!("inpaint: {differing} of {} differ from Model::generate (bound 0); without the mask {unmasked} differ", want.pixels.len());
    assert_eq!(differing, 0);
    assert!(unmasked > 0, "the mask changes the image");
    // Kept (black) pixels are the init picture's exactly (Kiln's paste-back on an ordinary U-Net).
    let init = init_rgb();
    let kept_wrong = (0..64 * 64).filter(|&i| gray[i] == 0 && got.pixels[i * 4..i * 4 + 3] != init.rgb[i * 3..i * 3 + 3]).count();
    println!("inpaint: kept pixels not the init picture's: {kept_wrong} of 2048 (bound 0)");
    assert_eq!(kept_wrong, 0);

    // A mask of another size fails before Kiln runs; the session keeps working.
    let small = kiln::image::control::ControlImage { width: 32, height: 32, channels: 1, data: vec![255; 32 * 32] };
    let mut list = base.to_vec();
    list.extend([("init_image", Image(init_pixels())), ("mask", Image(small))]);
    let mut t = s.start("mossy stone", &opts(&list));
    let (status, message) = failure(&run_to_end(&mut t));
    println!("small mask: {status} {message}");
    assert_eq!((status, message.as_str()), (104, "options[\"mask\"]: the mask is 32x32 but \"init_image\" is 64x64; they must match"));
}

fn lora_dir() -> PathBuf {
    fixture().join("../lora")
}

fn lora_entry(path: PathBuf, scale: f64) -> OptionValue {
    OptionValue::Dictionary(opts(&[("path", OptionValue::String(path.display().to_string())), ("scale", OptionValue::Float(scale))]))
}

fn embedding_entry(path: PathBuf, token: Option<&str>) -> OptionValue {
    let mut list = vec![("path", OptionValue::String(path.display().to_string()))];
    list.extend(token.map(|t| ("token", OptionValue::String(t.into()))));
    OptionValue::Dictionary(opts(&list))
}

/// `loras` and `embeddings` on tiny-sd with tests/fixtures/lora: the job's
/// pixels are those of `Model::with_adapters` for the same set, the set
/// changes the image, a second job with the set reuses the view, and bad
/// files fail with their status naming the entry while the session stays usable.
#[test]
fn loras_and_embeddings_generate_what_kiln_makes_directly() {
    use kiln::model::{Adapters, EmbeddingSpec, LoraSpec};
    use OptionValue::*;
    let s = session();
    let model = fixture_model();
    let prompt = "<brick-style> sand";
    let base = [("steps", Int(4)), ("seed", Int(2)), ("scheduler", String("euler".into()))];
    let plain = GenerateRequest { prompt: prompt.into(), steps: 4, seed: 2, scheduler: SchedulerKind::Euler, ..Default::default() };
    let with = |extra: Vec<(&'static str, OptionValue)>| {
        let mut list = base.to_vec();
        list.extend(extra);
        s.start(prompt, &opts(&list))
    };
    let set = || {
        vec![
            ("loras", Array(vec![lora_entry(lora_dir().join("style.kohya.safetensors"), 0.7)])),
            ("embeddings", Array(vec![embedding_entry(lora_dir().join("brick-style.safetensors"), Some("<brick-style>"))])),
        ]
    };
    let got = done_image(&run_to_end(&mut with(set()))).clone();
    assert_eq!(s.adapter_views_built(), 1);
    let adapters = Adapters {
        loras: vec![LoraSpec::new(lora_dir().join("style.kohya.safetensors"), 0.7)],
        embeddings: vec![EmbeddingSpec { path: lora_dir().join("brick-style.safetensors"), token: Some("<brick-style>".into()) }],
        ..Default::default()
    };
    let view = model.with_adapters(&adapters).expect("the fixture's adapters fit tiny-sd");
    let want = direct(&view, &plain);
    let differing = count_differing(&got, &want);
    let from_plain = count_differing(&got, &direct(&model, &plain));
    println!("adapters: {differing} of {} differ from Model::with_adapters + generate (bound 0); the plain model differs in {from_plain}", want.pixels.len());
    assert_eq!(differing, 0);
    assert!(from_plain > 0, "the adapters change the image");

    // Only the LoRA: its own view, and it differs from the plain model too.
    let lora_only = done_image(&run_to_end(&mut with(vec![("loras", Array(vec![lora_entry(lora_dir().join("style.kohya.safetensors"), 0.7)]))]))).clone();
    let lora_view = model.with_loras(&[(lora_dir().join("style.kohya.safetensors"), 0.7)]).unwrap();
    assert_eq!(count_differing(&lora_only, &direct(&lora_view, &plain)), 0);
    println!("adapters: the LoRA alone changes {} of the plain model's values", count_differing(&lora_only, &direct(&model, &plain)));
    assert_ne!(lora_only.pixels, direct(&model, &plain).pixels, "the LoRA changes the image");
    assert_eq!(s.adapter_views_built(), 2);
    // The first set again: its cached view, no new merge, the same pixels.
    let again = done_image(&run_to_end(&mut with(set()))).clone();
    assert_eq!((s.adapter_views_built(), again.pixels == got.pixels), (2, true), "the cached view is reused");
    // With seamless: the seamless view of the adapter view (it keeps the adapters).
    let mut tiled_set = set();
    tiled_set.push(("seamless", String("xy".into())));
    let tiled = done_image(&run_to_end(&mut with(tiled_set))).clone();
    let differing = count_differing(&tiled, &direct(&view.seamless(Seamless::Xy).unwrap(), &plain));
    println!("adapters + seamless: {differing} differ from Model::with_adapters + seamless(Xy) (bound 0); {} from the adapters without seamless", count_differing(&tiled, &got));
    assert_eq!(differing, 0);
    assert_ne!(tiled.pixels, got.pixels, "seamless still acts on the adapter view");
    assert_eq!(s.adapter_views_built(), 2, "the seamless job reused the set's view");

    // Bad files: the status Kiln gives, the message naming the entry.
    type Case = (Vec<(&'static str, OptionValue)>, u32, &'static str);
    let cases: Vec<Case> = vec![
        (vec![("loras", Array(vec![lora_entry(lora_dir().join("style.kohya.safetensors"), 1.0), lora_entry(lora_dir().join("no-such.safetensors"), 1.0)]))], 200, "options[\"loras[1].path\"]: no such file"),
        (vec![("loras", Array(vec![lora_entry(lora_dir().join("style.kohya.safetensors"), 1.0), lora_entry(lora_dir().join("broken/sdxl.safetensors"), 1.0)]))], 204, "options[\"loras[1].path\"]: "),
        (vec![("loras", Array(vec![lora_entry(lora_dir().join("broken/truncated.safetensors"), 1.0)]))], 201, "options[\"loras[0].path\"]: "),
        (vec![("embeddings", Array(vec![embedding_entry(fixture().join("../sdxl-embedding/xl-brick.safetensors"), None)]))], 204, "options[\"embeddings[0].path\"]: "),
        (vec![("embeddings", Array(vec![embedding_entry(lora_dir().join("learned_embeds.safetensors"), Some("wall"))]))], 101, "options[\"embeddings[0].path\"]: "),
    ];
    for (extra, want_status, want) in cases {
        let (status, message) = failure(&run_to_end(&mut with(extra)));
        println!("bad adapters: {status} {message}");
        assert_eq!(status, want_status, "{message}");
        assert!(message.starts_with(want), "{message:?} should start with {want:?}");
    }
    assert_eq!(s.adapter_views_built(), 2, "failed sets are not cached");
    let after = done_image(&run_to_end(&mut with(set()))).clone();
    assert_eq!(after.pixels, got.pixels, "the session still generates after the failures");

    // The text encoders' own strength (`text_encoder_scale`): the view with that strength.
    let te_entry = OptionValue::Dictionary(opts(&[
        ("path", String(lora_dir().join("style.kohya.safetensors").display().to_string())),
        ("scale", Float(0.7)),
        ("text_encoder_scale", Float(0.0)),
    ]));
    let te_only = done_image(&run_to_end(&mut with(vec![("loras", Array(vec![te_entry]))]))).clone();
    let spec = LoraSpec { text_encoder_scale: Some(0.0), ..LoraSpec::new(lora_dir().join("style.kohya.safetensors"), 0.7) };
    let te_view = model.with_adapters(&Adapters { loras: vec![spec], ..Default::default() }).unwrap();
    assert_eq!(count_differing(&te_only, &direct(&te_view, &plain)), 0, "text_encoder_scale 0: Model::with_adapters's pixels");
    assert_ne!(te_only.pixels, lora_only.pixels, "the text encoders' strength acts");
}

/// SDXL adapters through the same keys: the `clip_l`/`clip_g` embedding and
/// a kohya LoRA on tiny-sdxl give `Model::with_adapters`'s pixels.
#[test]
fn sdxl_adapters_generate_what_kiln_makes_directly() {
    use kiln::model::{Adapters, EmbeddingSpec, LoraSpec};
    use OptionValue::*;
    let dir = fixture().join("../tiny-sdxl");
    let (lora, emb) = (fixture().join("../sdxl-lora/style.kohya.safetensors"), fixture().join("../sdxl-embedding/xl-brick.safetensors"));
    let s = Session::new(SessionConfig { model_dir: dir.clone(), onnxruntime_path: None, ..Default::default() });
    let prompt = "<xl-brick> wall, mossy";
    let mut t = s.start(
        prompt,
        &opts(&[
            ("steps", Int(3)),
            ("scheduler", String("euler".into())),
            ("loras", Array(vec![lora_entry(lora.clone(), 0.5)])),
            ("embeddings", Array(vec![embedding_entry(emb.clone(), None)])),
        ]),
    );
    let got = done_image(&run_to_end(&mut t)).clone();
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let model = Model::load(&rt, &dir).expect("tiny-sdxl loads");
    let adapters = Adapters {
        loras: vec![LoraSpec::new(lora, 0.5)],
        embeddings: vec![EmbeddingSpec { path: emb, token: None }],
        ..Default::default()
    };
    let request = GenerateRequest { prompt: prompt.into(), steps: 3, scheduler: SchedulerKind::Euler, ..Default::default() };
    let want = direct(&model.with_adapters(&adapters).unwrap(), &request);
    let differing = count_differing(&got, &want);
    let from_plain = count_differing(&got, &direct(&model, &request));
    println!("sdxl adapters: {differing} of {} differ from Model::with_adapters + generate (bound 0); the plain model differs in {from_plain}", want.pixels.len());
    assert_eq!(differing, 0);
    assert!(from_plain > 0, "the adapters change the image");
}

/// tests/fixtures/sdxl-refiner over tiny-sdxl's second encoder and VAE, as
/// tests/common::sdxl_refiner_folder assembles it, under the target dir.
/// Assembled once per test binary: tests run in parallel, and one must not
/// empty the folder while another loads from it.
fn refiner_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
        let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-godot-refiner");
        let _ = std::fs::remove_dir_all(&dest);
        for sub in ["text_encoder_2", "tokenizer_2", "vae_decoder", "vae_encoder"] {
            copy_tree(&root.join("tiny-sdxl").join(sub), &dest.join(sub));
        }
        copy_tree(&root.join("sdxl-refiner"), &dest);
        dest
    })
    .clone()
}

/// `refiner` and `refiner_start` on tiny-sdxl: the job's pixels are those of
/// `Model::generate` with the same `Refiner`, the hand-off changes the image,
/// `seamless` and `embeddings` apply to both models, and a missing or
/// mismatched refiner fails.
#[test]
fn refiner_hand_off_generates_what_kiln_makes_directly() {
    use kiln::model::EmbeddingSpec;
    use kiln::pipeline::handoff::Refiner;
    use OptionValue::*;
    let dir = fixture().join("../tiny-sdxl");
    let refiner_path = refiner_dir();
    let s = Session::new(SessionConfig { model_dir: dir.clone(), onnxruntime_path: None, ..Default::default() });
    let prompt = "mossy stone brick wall";
    let base = [("steps", Int(5)), ("seed", Int(4)), ("scheduler", String("euler".into()))];
    let with = |extra: Vec<(&'static str, OptionValue)>| {
        let mut list = base.to_vec();
        list.extend(extra);
        s.start(prompt, &opts(&list))
    };
    let refiner_key = || ("refiner", String(refiner_path.display().to_string()));
    let got = done_image(&run_to_end(&mut with(vec![refiner_key(), ("refiner_start", Float(0.6))]))).clone();

    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let model = Model::load(&rt, &dir).expect("tiny-sdxl loads");
    let refiner = Model::load(&rt, &refiner_path).expect("the refiner fixture loads");
    let plain = GenerateRequest { prompt: prompt.into(), steps: 5, seed: 4, scheduler: SchedulerKind::Euler, ..Default::default() };
    let handoff = GenerateRequest { refiner: Some(Refiner { model: refiner.clone(), start: 0.6 }), ..plain.clone() };
    let want = direct(&model, &handoff);
    let differing = count_differing(&got, &want);
    let from_base = count_differing(&got, &direct(&model, &plain));
    println!("refiner: {differing} of {} differ from Model::generate with the Refiner (bound 0); the base alone differs in {from_base}", want.pixels.len());
    assert_eq!(differing, 0);
    assert!(from_base > 0, "the hand-off changes the image");
    // The default start is Kiln's 0.8.
    let default_start = done_image(&run_to_end(&mut with(vec![refiner_key()]))).clone();
    let want = direct(&model, &GenerateRequest { refiner: Some(Refiner { model: refiner.clone(), start: 0.8 }), ..plain.clone() });
    assert_eq!(count_differing(&default_start, &want), 0);
    println!("refiner: start 0.8 instead of 0.6 changes {}", count_differing(&default_start, &got));
    assert_ne!(default_start.pixels, got.pixels, "refiner_start changes the image");
    // Seamless: both the base and the refiner wrap around.
    let tiled = done_image(&run_to_end(&mut with(vec![refiner_key(), ("seamless", String("xy".into()))]))).clone();
    let refiner_xy = Refiner { model: refiner.seamless(Seamless::Xy).unwrap(), start: 0.8 };
    let want = direct(&model.seamless(Seamless::Xy).unwrap(), &GenerateRequest { refiner: Some(refiner_xy), ..plain.clone() });
    let differing = count_differing(&tiled, &want);
    println!("refiner + seamless: {differing} differ from both seamless views' hand-off (bound 0)");
    assert_eq!(differing, 0);

    // Failures: no such folder (200), a refiner of another family (101).
    let (status, message) = failure(&run_to_end(&mut with(vec![("refiner", String(fixture().join("no-such-refiner").display().to_string()))])));
    println!("missing refiner: {status} {message}");
    assert_eq!(status, 200);
    assert!(message.starts_with("options[\"refiner\"]: ") && message.contains("no-such-refiner"), "{message}");
    let (status, message) = failure(&run_to_end(&mut with(vec![("refiner", String(fixture().display().to_string()))])));
    println!("SD 1.x refiner: {status} {message}");
    assert_eq!(status, 101);
    assert!(message.contains("cannot continue this model's latents"), "{message}");
    // `embeddings` reach the refiner too (its one encoder takes an SDXL
    // file's `clip_g`), as `generate --embedding --refiner` gives them.
    let file = fixture().join("../sdxl-embedding/xl-brick.safetensors");
    let embedded = done_image(&run_to_end(&mut s.start(
        "<xl-brick> wall, mossy",
        &opts(&[base[0].clone(), base[1].clone(), base[2].clone(), refiner_key(), ("refiner_start", Float(0.4)), ("embeddings", Array(vec![embedding_entry(file.clone(), Some("<xl-brick>"))]))]),
    )))
    .clone();
    let adapters = kiln::model::Adapters { embeddings: vec![EmbeddingSpec { path: file, token: Some("<xl-brick>".into()) }], ..Default::default() };
    let (model_view, refiner_view) = (model.with_adapters(&adapters).unwrap(), refiner.with_adapters(&adapters).unwrap());
    let request = |r: &Model| GenerateRequest {
        prompt: "<xl-brick> wall, mossy".into(),
        refiner: Some(Refiner { model: r.clone(), start: 0.4 }),
        ..plain.clone()
    };
    let differing = count_differing(&embedded, &direct(&model_view, &request(&refiner_view)));
    let without = count_differing(&embedded, &direct(&model_view, &request(&refiner)));
    println!("refiner + embeddings: {differing} differ from both views' hand-off (bound 0); {without} with the plain refiner");
    assert_eq!(differing, 0);
    assert!(without > 0, "the refiner's embedding changes the image");
    let mask = kiln::image::control::ControlImage { width: 64, height: 64, channels: 1, data: vec![255; 64 * 64] };
    // Inpainting hands off too (diffusers' inpainting ensemble; tests/sdxl_inpaint_handoff.rs).
    let inpainted = done_image(&run_to_end(&mut with(vec![refiner_key(), ("init_image", Image(init_pixels())), ("mask", Image(mask))]))).clone();
    println!("refiner + mask: {}x{} image", inpainted.width, inpainted.height);
}

fn gpu_session(gpu: GpuSettings) -> Session {
    Session::new(SessionConfig { model_dir: fixture(), onnxruntime_path: None, gpu, ..Default::default() })
}

/// The node's GPU properties reach the runtime the model is loaded with: the
/// static U-Net (its lazy dynamic graph never opens, so `unet` is not
/// resident) and device-resident latents on the CPU provider give the image
/// Kiln makes directly with the same settings, and differ from the defaults'
/// model only in what those settings change.
#[test]
fn gpu_settings_reach_the_runtime() {
    use OptionValue::*;
    let gpu = GpuSettings {
        providers: vec!["CPU".into(), " cpu".into()],
        gpu_math: "exact".into(),
        static_unet: true,
        device_latents: true,
        ..Default::default()
    };
    let s = gpu_session(gpu.clone());
    let mut t = s.start("mossy stone", &opts(&[("steps", Int(4)), ("seed", Int(3)), ("scheduler", String("euler".into()))]));
    let events = run_to_end(&mut t);
    let got = done_image(&events).clone();
    let model = s.loaded_model().expect("the job loaded the model");
    let resident = model.resident_graphs();
    println!("resident graphs with the static U-Net: {resident:?}");
    assert!(resident.contains(&"unet_static") && !resident.contains(&"unet"), "{resident:?}");

    let rt = Runtime::new(&RuntimeOptions { providers: gpu.provider_policy().unwrap(), ..Default::default() }).unwrap();
    let request = GenerateRequest { prompt: "mossy stone".into(), steps: 4, seed: 3, scheduler: SchedulerKind::Euler, ..Default::default() };
    let direct_model = Model::load(&rt, &fixture()).unwrap();
    let generation = direct_model.generate_with(&request, kiln::pipeline::Hooks::default()).unwrap();
    assert_eq!(generation.device_steps, 4, "the direct run used the device loop");
    assert_eq!(count_differing(&got, &generation.image.to_rgba8()), 0);
    // The defaults' model holds the dynamic U-Net: the settings made the difference.
    let plain = session();
    let mut t = plain.start("mossy stone", &opts(&[("steps", Int(4)), ("seed", Int(3)), ("scheduler", String("euler".into()))]));
    run_to_end(&mut t);
    assert!(plain.loaded_model().unwrap().resident_graphs().contains(&"unet"));
}

/// GPU settings Kiln cannot take fail the job with status 101 and a message
/// naming the property; a provider this ONNX Runtime build lacks falls back
/// to the CPU, unless it is required (status 301); the node stays usable.
#[test]
fn bad_or_unavailable_gpu_settings_fail_the_job_with_a_status() {
    use OptionValue::*;
    let cases = [
        (GpuSettings { providers: vec!["cuda".into(), "quantum".into()], ..Default::default() }, "providers: unknown provider \"quantum\""),
        (GpuSettings { gpu_math: "turbo".into(), ..Default::default() }, "gpu_math: \"turbo\" is not fast or exact"),
        (GpuSettings { gpu_memory_limit_mib: -1, ..Default::default() }, "gpu_memory_limit_mb: -1 is not a size"),
        (GpuSettings { device_id: -1, ..Default::default() }, "gpu_device: -1 is not a device index"),
        (GpuSettings { device_id: 1 << 40, ..Default::default() }, "gpu_device: 1099511627776 is not a device index"),
    ];
    for (gpu, want) in cases {
        let mut t = gpu_session(gpu).start("x", &opts(&[("steps", Int(1))]));
        let (status, message) = failure(&run_to_end(&mut t));
        println!("{status} {message}");
        assert_eq!(status, 101, "{message}");
        assert!(message.starts_with(want), "{message:?} should start with {want:?}");
    }
    // This build has no CUDA provider compiled in (the binding builds Kiln's default features).
    let required = GpuSettings { providers: vec!["cuda".into()], require_provider: true, ..Default::default() };
    let mut t = gpu_session(required).start("x", &opts(&[("steps", Int(1))]));
    let (status, message) = failure(&run_to_end(&mut t));
    println!("required cuda: {status} {message}");
    assert_eq!(status, 301, "{message}");
    let fallback = GpuSettings { providers: vec!["cuda".into()], ..Default::default() };
    let mut t = gpu_session(fallback).start("x", &opts(&[("steps", Int(1))]));
    let events = run_to_end(&mut t);
    assert!(matches!(events.last(), Some(Event::Done { .. })), "without require_provider the CPU runs: {:?}", events.last());
}

// ---- Int8 weights (`quantization`) and `model_info` ----

fn quantized_session(model_dir: PathBuf, quantization: &str) -> Session {
    Session::new(SessionConfig { model_dir, quantization: quantization.into(), ..Default::default() })
}

fn int8_model(rt: &Runtime, dir: &Path) -> Model {
    use kiln::model::quantize::Quantization;
    let options = kiln::ModelOptions { quantization: Quantization::Int8, ..Default::default() };
    Model::load_with(rt, dir, &options).expect("int8 load")
}

/// The node's `quantization` property: `int8` loads tiny-sd with Kiln's int8
/// weights, so the job's pixels are `Model::load_with(Int8)` + `generate`'s
/// (0 differ) and not the float model's, and `model_info` reports `int8`
/// (`none` for the default); the job's `seamless` view and a `refiner` are
/// int8 too; an unknown name fails the job with 101 before anything loads.
#[test]
fn quantization_int8_loads_int8_weights_and_model_info_says_so() {
    use kiln::model::quantize::Quantization;
    use kiln::pipeline::handoff::Refiner;
    use kiln_godot::session::{info_entries, InfoValue};
    use OptionValue::*;
    let job = [("steps", Int(4)), ("seed", Int(3)), ("scheduler", String("euler".into()))];
    let request = GenerateRequest { prompt: "mossy stone".into(), steps: 4, seed: 3, scheduler: SchedulerKind::Euler, ..Default::default() };
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let int8 = int8_model(&rt, &fixture());

    let s = quantized_session(fixture(), "int8");
    assert_eq!(s.model_info(), None, "nothing is loaded before the first job");
    let got = done_image(&run_to_end(&mut s.start("mossy stone", &opts(&job)))).clone();
    let info = s.model_info().expect("the job loaded the model");
    println!("int8 model_info: {:?}", info_entries(&info));
    assert_eq!(info.quantization, Quantization::Int8);
    assert!(info_entries(&info).contains(&("quantization", InfoValue::Name("int8"))));
    let differing = count_differing(&got, &direct(&int8, &request));
    let from_float = count_differing(&got, &direct(&fixture_model(), &request));
    println!("int8: {differing} of {} differ from Model::load_with(Int8) + generate (bound 0); {from_float} from the float model", got.pixels.len());
    assert_eq!(differing, 0);
    assert!(from_float > 0, "int8 weights change the picture");

    // The job's seamless view keeps the int8 weights.
    let mut seamless_job = job.to_vec();
    seamless_job.push(("seamless", String("xy".into())));
    let tiled = done_image(&run_to_end(&mut s.start("mossy stone", &opts(&seamless_job)))).clone();
    let differing = count_differing(&tiled, &direct(&int8.seamless(Seamless::Xy).unwrap(), &request));
    println!("int8 + seamless: {differing} differ from the int8 model's seamless view (bound 0)");
    assert_eq!(differing, 0);

    // The default (the property's "none", or empty) is the float model.
    for name in ["none", ""] {
        let plain = quantized_session(fixture(), name);
        let got = done_image(&run_to_end(&mut plain.start("mossy stone", &opts(&job)))).clone();
        let info = plain.model_info().expect("the job loaded the model");
        assert_eq!(info.quantization, Quantization::None, "{name:?}");
        assert!(info_entries(&info).contains(&("quantization", InfoValue::Name("none"))));
        assert_eq!(count_differing(&got, &direct(&fixture_model(), &request)), 0, "{name:?} is the float model");
    }

    // A refiner is loaded as the model was: tiny-sdxl and the refiner fixture, both int8.
    let sdxl = fixture().join("../tiny-sdxl");
    let refiner_path = refiner_dir();
    let s = quantized_session(sdxl.clone(), "int8");
    let refined = done_image(&run_to_end(&mut s.start(
        "mossy stone",
        &opts(&[job[0].clone(), job[1].clone(), job[2].clone(), ("refiner", String(refiner_path.display().to_string())), ("refiner_start", Float(0.6))]),
    )))
    .clone();
    let handoff = |refiner: Model| GenerateRequest { refiner: Some(Refiner { model: refiner, start: 0.6 }), ..request.clone() };
    let base = int8_model(&rt, &sdxl);
    let differing = count_differing(&refined, &direct(&base, &handoff(int8_model(&rt, &refiner_path))));
    let float_refiner = count_differing(&refined, &direct(&base, &handoff(Model::load(&rt, &refiner_path).unwrap())));
    println!("int8 refiner hand-off: {differing} differ from both int8 models' hand-off (bound 0); {float_refiner} from a float refiner's");
    assert_eq!(differing, 0);
    assert!(float_refiner > 0, "the refiner's int8 weights count");

    // Unknown names fail the job with 101 naming the property; nothing loads.
    for bad in ["int4", "fp16"] {
        let s = quantized_session(fixture(), bad);
        let (status, message) = failure(&run_to_end(&mut s.start("x", &opts(&[("steps", Int(1))]))));
        println!("quantization {bad:?}: {status} {message}");
        assert_eq!((status, message), (101, format!("quantization: \"{bad}\" is not none or int8")));
        assert_eq!(s.model_info(), None);
        assert!(s.loaded_model().is_none());
    }
}

// ---- Fused attention (`attention`) and `model_info`'s `fused_attention` ----

fn attention_session(model_dir: PathBuf, attention: &str) -> Session {
    Session::new(SessionConfig { model_dir, attention: attention.into(), ..Default::default() })
}

fn attention_model(rt: &Runtime, dir: &Path, attention: kiln::model::attention::Attention) -> Model {
    let options = kiln::ModelOptions { attention, ..Default::default() };
    Model::load_with(rt, dir, &options).expect("load with attention")
}

/// The node's `attention` property: `exported` loads tiny-sd with its
/// attention as exported, so the job's pixels are `Model::load_with(Exported)`
/// + `generate`'s (0 differ) and `model_info` reports `fused_attention` 0;
/// the default (`auto`, or empty) is `Model::load`'s model, whose 12
/// attention layers run fused on the CPU, and `fused` the same; the job's
/// `seamless` view and a `refiner` keep it; an unknown name fails the job
/// with 101 before anything loads. On tiny-sd the fused and the exported
/// pictures round to the same 8-bit values, so the pixel checks hold either
/// way and the `fused_attention` counts are what tell the loads apart.
#[test]
fn attention_exported_loads_the_exported_graphs_and_model_info_counts_the_fused_layers() {
    use kiln::model::attention::Attention;
    use kiln::pipeline::handoff::Refiner;
    use kiln_godot::session::{info_entries, InfoValue};
    use OptionValue::*;
    let job = [("steps", Int(4)), ("seed", Int(3)), ("scheduler", String("euler".into()))];
    let request = GenerateRequest { prompt: "mossy stone".into(), steps: 4, seed: 3, scheduler: SchedulerKind::Euler, ..Default::default() };
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let exported = attention_model(&rt, &fixture(), Attention::Exported);
    assert_eq!(exported.info().fused_attention, 0);

    let s = attention_session(fixture(), "exported");
    assert_eq!(s.model_info(), None, "nothing is loaded before the first job");
    let got = done_image(&run_to_end(&mut s.start("mossy stone", &opts(&job)))).clone();
    let info = s.model_info().expect("the job loaded the model");
    println!("exported model_info: {:?}", info_entries(&info));
    assert_eq!(info.fused_attention, 0);
    assert!(info_entries(&info).contains(&("fused_attention", InfoValue::Int(0))));
    let differing = count_differing(&got, &direct(&exported, &request));
    let from_fused = count_differing(&got, &direct(&fixture_model(), &request));
    println!("exported: {differing} of {} differ from Model::load_with(Exported) + generate (bound 0); {from_fused} from the default (fused) model", got.pixels.len());
    assert_eq!(differing, 0);

    // The job's seamless view keeps the exported attention.
    let mut seamless_job = job.to_vec();
    seamless_job.push(("seamless", String("xy".into())));
    let tiled = done_image(&run_to_end(&mut s.start("mossy stone", &opts(&seamless_job)))).clone();
    let differing = count_differing(&tiled, &direct(&exported.seamless(Seamless::Xy).unwrap(), &request));
    println!("exported + seamless: {differing} differ from the exported model's seamless view (bound 0)");
    assert_eq!(differing, 0);

    // The default (the property's "auto", or empty) is Model::load's model: fused on the CPU.
    let default_model = fixture_model();
    assert_eq!(default_model.info().fused_attention, 12, "Model::load fuses tiny-sd's 12 attention layers on the CPU");
    for name in ["auto", ""] {
        let plain = attention_session(fixture(), name);
        let got = done_image(&run_to_end(&mut plain.start("mossy stone", &opts(&job)))).clone();
        let info = plain.model_info().expect("the job loaded the model");
        assert_eq!(info.fused_attention, 12, "{name:?}");
        assert!(info_entries(&info).contains(&("fused_attention", InfoValue::Int(12))));
        assert_eq!(count_differing(&got, &direct(&default_model, &request)), 0, "{name:?} is Model::load's model");
    }
    // `fused` fuses whatever the providers: on the CPU, the same 12 layers and pixels.
    let fused = attention_session(fixture(), "fused");
    let got = done_image(&run_to_end(&mut fused.start("mossy stone", &opts(&job)))).clone();
    assert_eq!(fused.model_info().expect("loaded").fused_attention, 12);
    assert_eq!(count_differing(&got, &direct(&attention_model(&rt, &fixture(), Attention::Fused), &request)), 0);

    // A refiner is loaded as the model was: tiny-sdxl and the refiner fixture, both exported.
    let sdxl = fixture().join("../tiny-sdxl");
    let refiner_path = refiner_dir();
    let s = attention_session(sdxl.clone(), "exported");
    let refined = done_image(&run_to_end(&mut s.start(
        "mossy stone",
        &opts(&[job[0].clone(), job[1].clone(), job[2].clone(), ("refiner", String(refiner_path.display().to_string())), ("refiner_start", Float(0.6))]),
    )))
    .clone();
    assert_eq!(s.model_info().expect("loaded").fused_attention, 0);
    let loaded_refiner = s.loaded_refiner(&refiner_path).expect("the job loaded the refiner");
    assert_eq!(loaded_refiner.info().fused_attention, 0, "the refiner runs its attention as exported too");
    let handoff = |refiner: Model| GenerateRequest { refiner: Some(Refiner { model: refiner, start: 0.6 }), ..request.clone() };
    let base = attention_model(&rt, &sdxl, Attention::Exported);
    let refiner = attention_model(&rt, &refiner_path, Attention::Exported);
    assert_eq!(refiner.info().fused_attention, 0);
    let differing = count_differing(&refined, &direct(&base, &handoff(refiner)));
    let auto_refiner = Model::load(&rt, &refiner_path).unwrap();
    println!("default refiner: {} attention layers fused", auto_refiner.info().fused_attention);
    assert!(auto_refiner.info().fused_attention > 0, "by default the refiner fixture's attention runs fused");
    let fused_refiner = count_differing(&refined, &direct(&base, &handoff(auto_refiner)));
    println!("exported refiner hand-off: {differing} differ from both exported models' hand-off (bound 0); {fused_refiner} from a fused refiner's");
    assert_eq!(differing, 0);

    // Unknown names fail the job with 101 naming the property; nothing loads.
    for bad in ["flash", "none"] {
        let s = attention_session(fixture(), bad);
        let (status, message) = failure(&run_to_end(&mut s.start("x", &opts(&[("steps", Int(1))]))));
        println!("attention {bad:?}: {status} {message}");
        assert_eq!((status, message), (101, format!("attention: \"{bad}\" is not auto, exported or fused")));
        assert_eq!(s.model_info(), None);
        assert!(s.loaded_model().is_none());
    }
}

// ---- LoRA slots (`lora_slots`) and `model_info`'s `lora_slots` ----

fn slots_session(model_dir: PathBuf, lora_slots: bool, gpu: GpuSettings) -> Session {
    Session::new(SessionConfig { model_dir, lora_slots, gpu, ..Default::default() })
}

fn slotted_model(rt: &Runtime, dir: &Path) -> Model {
    let options = kiln::ModelOptions { lora_slots: true, ..Default::default() };
    Model::load_with(rt, dir, &options).expect("load with LoRA slots")
}

/// The node's `lora_slots` property on tiny-sd: off (the default)
/// `model_info` says `lora_slots` 0; on, the job loads the model with
/// `ModelOptions::lora_slots` and says how many U-Net layers have a slot
/// (121); without a LoRA its pixels are the plain model's (0 differ); with
/// tests/fixtures/lora/style.kohya.safetensors at 1.0 they are
/// `Model::load_with(lora_slots)` + `with_loras` + `generate`'s (0 differ),
/// the LoRA fed to the slots (no layer merged), and differ from the plain
/// picture; the job's `seamless` view keeps the fed LoRA; a second job with
/// the set reuses the view. With `static_unet` the job fails with 203 before
/// anything loads.
#[test]
fn lora_slots_feed_the_jobs_loras_and_model_info_counts_the_slots() {
    use kiln_godot::session::{info_entries, InfoValue};
    use OptionValue::*;
    let style = lora_dir().join("style.kohya.safetensors");
    let job = [("steps", Int(4)), ("seed", Int(3)), ("scheduler", String("euler".into()))];
    let with_lora = |extra: &[(&'static str, OptionValue)]| {
        let mut list = job.to_vec();
        list.push(("loras", Array(vec![lora_entry(style.clone(), 1.0)])));
        list.extend(extra.iter().cloned());
        opts(&list)
    };
    let request = GenerateRequest { prompt: "mossy stone".into(), steps: 4, seed: 3, scheduler: SchedulerKind::Euler, ..Default::default() };
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let plain_model = Model::load(&rt, &fixture()).expect("fixture loads");
    let plain_picture = direct(&plain_model, &request);
    let slotted = slotted_model(&rt, &fixture());
    let slots = slotted.info().lora_slots;
    println!("Model::load_with(lora_slots): {slots} U-Net layers with a slot; Model::load: {}", plain_model.info().lora_slots);
    assert_eq!(plain_model.info().lora_slots, 0);
    assert_eq!(slots, 121, "tiny-sd's adaptable U-Net layers");

    // Off (the default): the model has no slots.
    let off = slots_session(fixture(), false, GpuSettings::default());
    let got = done_image(&run_to_end(&mut off.start("mossy stone", &opts(&job)))).clone();
    let info = off.model_info().expect("the job loaded the model");
    assert_eq!(info.lora_slots, 0);
    assert!(info_entries(&info).contains(&("lora_slots", InfoValue::Int(0))));
    assert_eq!(count_differing(&got, &plain_picture), 0);

    // On, without a LoRA: the plain model's pixels, and the info counts the slots.
    let s = slots_session(fixture(), true, GpuSettings::default());
    assert_eq!(s.model_info(), None, "nothing is loaded before the first job");
    let unadapted = done_image(&run_to_end(&mut s.start("mossy stone", &opts(&job)))).clone();
    let info = s.model_info().expect("the job loaded the model");
    println!("lora_slots model_info: {:?}", info_entries(&info));
    assert_eq!(info.lora_slots, slots);
    assert!(info_entries(&info).contains(&("lora_slots", InfoValue::Int(121))));
    let differing = count_differing(&unadapted, &plain_picture);
    println!("lora_slots, no LoRA: {differing} of {} differ from the model loaded without slots (bound 0)", unadapted.pixels.len());
    assert_eq!(differing, 0);
    assert_eq!(s.adapter_views_built(), 0, "no LoRA, no view");

    // On, with the LoRA at 1.0: the slotted model's with_loras view, fed.
    let got = done_image(&run_to_end(&mut s.start("mossy stone", &with_lora(&[])))).clone();
    let view = slotted.with_loras(&[(style.clone(), 1.0)]).expect("the LoRA fits tiny-sd");
    let (fed_unet, fed_text) = view.lora_fed_layers();
    let (merged_unet, merged_text) = view.merged_initializers();
    println!("slotted view: {fed_unet} U-Net and {fed_text} text-encoder layers fed, {} + {} initializers merged", merged_unet.len(), merged_text.len());
    assert!(fed_unet > 0, "the kohya LoRA is fed to the U-Net's slots");
    assert!(merged_unet.is_empty() && merged_text.is_empty(), "a plain LoRA is not merged on a slotted model");
    let differing = count_differing(&got, &direct(&view, &request));
    let from_plain = count_differing(&got, &plain_picture);
    let from_merged = count_differing(&got, &direct(&plain_model.with_loras(&[(style.clone(), 1.0)]).unwrap(), &request));
    println!("lora_slots + LoRA 1.0: {differing} differ from Model::load_with(lora_slots) + with_loras + generate (bound 0); {from_plain} from the plain picture; {from_merged} from the merged LoRA's");
    assert_eq!(differing, 0);
    assert!(from_plain > 0, "the fed LoRA changes the image");
    assert_eq!(s.adapter_views_built(), 1);
    let again = done_image(&run_to_end(&mut s.start("mossy stone", &with_lora(&[])))).clone();
    assert_eq!((s.adapter_views_built(), again.pixels == got.pixels), (1, true), "the cached view is reused");
    assert_eq!(s.model_info().expect("loaded").lora_slots, slots, "the views do not reload the model");

    // The seamless view of the LoRA view keeps the LoRA fed.
    let tiled = done_image(&run_to_end(&mut s.start("mossy stone", &with_lora(&[("seamless", String("xy".into()))])))).clone();
    let differing = count_differing(&tiled, &direct(&view.seamless(Seamless::Xy).unwrap(), &request));
    println!("lora_slots + LoRA + seamless: {differing} differ from the view's seamless view (bound 0); {} from the view without seamless", count_differing(&tiled, &got));
    assert_eq!(differing, 0);
    assert_ne!(tiled.pixels, got.pixels, "seamless still acts on the fed view");

    // Slots with the static U-Net: Kiln refuses the load (203, Unsupported); nothing loads.
    let s = slots_session(fixture(), true, GpuSettings { static_unet: true, ..Default::default() });
    let (status, message) = failure(&run_to_end(&mut s.start("x", &opts(&[("steps", Int(1))]))));
    println!("lora_slots + static_unet: {status} {message}");
    assert_eq!(status, 203, "{message}");
    assert!(message.contains("LoRA slots"), "{message}");
    assert!(s.loaded_model().is_none());
}

/// `lora_slots` on tiny-sdxl with the refiner fixture: the refiner the job
/// loads has slots too, and a job with the SDXL LoRA fixture hands off as
/// both models loaded with slots (the LoRA on the base) do (0 differ).
#[test]
fn lora_slots_load_the_refiner_with_slots_too() {
    use kiln::pipeline::handoff::Refiner;
    use OptionValue::*;
    let sdxl = fixture().join("../tiny-sdxl");
    let lora = fixture().join("../sdxl-lora/style.kohya.safetensors");
    let refiner_path = refiner_dir();
    let s = slots_session(sdxl.clone(), true, GpuSettings::default());
    let list = [
        ("steps", Int(4)),
        ("seed", Int(3)),
        ("scheduler", String("euler".into())),
        ("refiner", String(refiner_path.display().to_string())),
        ("refiner_start", Float(0.6)),
        ("loras", Array(vec![lora_entry(lora.clone(), 1.0)])),
    ];
    let got = done_image(&run_to_end(&mut s.start("mossy stone", &opts(&list)))).clone();
    let base_slots = s.model_info().expect("loaded").lora_slots;
    let refiner_slots = s.loaded_refiner(&refiner_path).expect("the job loaded the refiner").info().lora_slots;
    println!("tiny-sdxl with lora_slots: {base_slots} U-Net layers with a slot; the refiner {refiner_slots}");
    assert!(base_slots > 0 && refiner_slots > 0, "both models are loaded with slots");

    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let (base, refiner) = (slotted_model(&rt, &sdxl), slotted_model(&rt, &refiner_path));
    assert_eq!((base.info().lora_slots, refiner.info().lora_slots), (base_slots, refiner_slots));
    let view = base.with_loras(&[(lora, 1.0)]).expect("the SDXL LoRA fits tiny-sdxl");
    println!("tiny-sdxl LoRA view: {:?} layers fed (U-Net, text encoders)", view.lora_fed_layers());
    assert!(view.lora_fed_layers().0 > 0);
    let request = GenerateRequest {
        prompt: "mossy stone".into(),
        steps: 4,
        seed: 3,
        scheduler: SchedulerKind::Euler,
        refiner: Some(Refiner { model: refiner, start: 0.6 }),
        ..Default::default()
    };
    let differing = count_differing(&got, &direct(&view, &request));
    let without_lora = count_differing(&got, &direct(&base, &request));
    println!("lora_slots refiner hand-off: {differing} differ from both slotted models' hand-off with the LoRA view (bound 0); {without_lora} without the LoRA");
    assert_eq!(differing, 0);
    assert!(without_lora > 0, "the fed LoRA changes the hand-off");
}

// ---- The upscaler (`upscaler_path`, `upscale_tile`, `upscale_context`, `upscale_alpha`) ----

use kiln::model::upscaler::{UpscaleAlpha, UpscaleOptions, Upscaler};

fn upscalers() -> PathBuf {
    fixture().join("../upscaler")
}

/// The node's upscale properties with `path` and the defaults (tile 256, context 16).
fn upscale_with(path: PathBuf) -> UpscaleSettings {
    UpscaleSettings { path, ..Default::default() }
}

fn load_upscaler(model: &Model, path: &Path) -> Upscaler {
    Upscaler::load(model.runtime(), path).expect("fixture upscaler loads")
}

/// With `upscaler_path` each job's image is `Upscaler::upscale` of what the
/// job makes without it, with the same tile and context and the job's
/// seamless axes; the graph is loaded once for all the jobs.
#[test]
fn upscaler_path_upscales_each_image_with_the_jobs_seamless_axes() {
    use OptionValue::*;
    let s = session();
    let x4 = upscale_with(upscalers().join("x4"));
    let base = [("steps", Int(2)), ("seed", Int(3)), ("scheduler", String("euler".into()))];
    let model = fixture_model();
    let upscaler = load_upscaler(&model, &upscalers().join("x4"));
    let request = GenerateRequest { prompt: "mossy stone".into(), steps: 2, seed: 3, scheduler: SchedulerKind::Euler, ..Default::default() };
    let plain = direct(&model, &request);

    let started = Instant::now();
    let got = done_image(&run_to_end(&mut s.start_upscaled("mossy stone", &opts(&base), &x4))).clone();
    println!("upscale: job with the x4 upscaler took {:?}", started.elapsed());
    let want = upscaler.upscale(&plain, &UpscaleOptions::default()).unwrap();
    assert_eq!((got.width, got.height), (256, 256), "4x the 64x64 generation");
    let differing = count_differing(&got, &want);
    println!("upscale: {differing} of {} values differ from Upscaler::upscale of Model::generate's image (bound 0)", want.pixels.len());
    assert_eq!(differing, 0);

    // seamless "xy": the seamless view's image, upscaled wrapping on both axes.
    let mut tiled = base.to_vec();
    tiled.push(("seamless", String("xy".into())));
    let got = done_image(&run_to_end(&mut s.start_upscaled("mossy stone", &opts(&tiled), &x4))).clone();
    let generated = direct(&model.seamless(Seamless::Xy).unwrap(), &request);
    let want = upscaler.upscale(&generated, &UpscaleOptions { seamless: Seamless::Xy, ..Default::default() }).unwrap();
    let unwrapped = upscaler.upscale(&generated, &UpscaleOptions::default()).unwrap();
    let differing = count_differing(&got, &want);
    println!(
        "upscale + seamless xy: {differing} differ from the wrapping upscale of the seamless view's image (bound 0); {} from the same image upscaled without wrapping",
        count_differing(&got, &unwrapped)
    );
    assert_eq!(differing, 0);
    assert_ne!(got.pixels, unwrapped.pixels, "the job's seamless axes reach the upscale");

    // upscale_tile / upscale_context reach Kiln: 16-pixel tiles with 2 pixels of context.
    let small_tiles = UpscaleSettings { tile: 16, context: 2, ..x4.clone() };
    let got = done_image(&run_to_end(&mut s.start_upscaled("mossy stone", &opts(&base), &small_tiles))).clone();
    let want = upscaler.upscale(&plain, &UpscaleOptions { tile: 16, context: 2, ..Default::default() }).unwrap();
    let whole = upscaler.upscale(&plain, &UpscaleOptions::default()).unwrap();
    println!("upscale tile 16 context 2: {} differ from Upscaler::upscale with those (bound 0), {} from tile 256", count_differing(&got, &want), count_differing(&got, &whole));
    assert_eq!(count_differing(&got, &want), 0);
    assert_ne!(got.pixels, whole.pixels, "tile and context reach the upscale");

    assert_eq!(s.upscalers_loaded(), 1, "one load for every job with the same path");
    // Without the upscaler the session makes Kiln's image as before.
    let off = done_image(&run_to_end(&mut s.start_upscaled("mossy stone", &opts(&base), &UpscaleSettings::default()))).clone();
    assert_eq!(off, plain);
}

/// A missing or wrong upscaler and bad numbers fail the job with Kiln's
/// status, the message naming the property; the session keeps generating.
#[test]
fn a_bad_upscaler_fails_the_job_with_kiln_status_and_the_next_job_succeeds() {
    use OptionValue::*;
    let s = session();
    let base = opts(&[("steps", Int(1)), ("seed", Int(5))]);
    let cases: Vec<(UpscaleSettings, u32, &str)> = vec![
        (upscale_with(upscalers().join("no-such-upscaler")), 200, "upscaler_path: upscaler graph "),
        // A real graph that is not an upscaler: the VAE decoder takes 4 latent channels.
        (upscale_with(fixture().join("vae_decoder/model.onnx")), 201, "upscaler_path: upscaler graph "),
        (UpscaleSettings { tile: -1, ..upscale_with(upscalers().join("x4")) }, 101, "upscale_tile: -1 is not a tile side in pixels"),
        (UpscaleSettings { context: -3, ..upscale_with(upscalers().join("x4")) }, 101, "upscale_context: -3 is not a number of pixels"),
        (UpscaleSettings { alpha: "nearest".into(), ..upscale_with(upscalers().join("x4")) }, 101, "upscale_alpha: \"nearest\" is not graph or bilinear"),
    ];
    for (settings, want_status, want) in cases {
        let (status, message) = failure(&run_to_end(&mut s.start_upscaled("x", &base, &settings)));
        println!("bad upscaler: {status} {message}");
        assert_eq!(status, want_status, "{message}");
        assert!(message.starts_with(want), "{message:?} should start with {want:?}");
    }
    assert_eq!(s.upscalers_loaded(), 0, "failed loads are not kept");
    // The path cleared: the next job generates as before.
    let mut t = s.start_upscaled("x", &base, &UpscaleSettings::default());
    let image = done_image(&run_to_end(&mut t)).clone();
    assert_eq!((image.width, image.height), (64, 64));
    // And a good path works on the same session.
    let image = done_image(&run_to_end(&mut s.start_upscaled("x", &base, &upscale_with(upscalers().join("x4"))))).clone();
    assert_eq!((image.width, image.height, s.upscalers_loaded()), (256, 256, 1));
}

/// A new `upscaler_path` loads that graph (2x here); the old path again
/// loads it again (one upscaler is kept at a time).
#[test]
fn changing_the_upscaler_path_loads_the_new_upscaler() {
    use OptionValue::*;
    let s = session();
    let base = opts(&[("steps", Int(1)), ("seed", Int(8))]);
    let model = fixture_model();
    let plain = direct(&model, &GenerateRequest { prompt: "x".into(), steps: 1, seed: 8, ..Default::default() });
    let mut sizes = Vec::new();
    for (path, loads) in [("x4", 1), ("x4", 1), ("x2-fixed.onnx", 2), ("x4", 3)] {
        let got = done_image(&run_to_end(&mut s.start_upscaled("x", &base, &upscale_with(upscalers().join(path))))).clone();
        let want = load_upscaler(&model, &upscalers().join(path)).upscale(&plain, &UpscaleOptions::default()).unwrap();
        assert_eq!(count_differing(&got, &want), 0, "{path}: Upscaler::upscale's pixels");
        assert_eq!(s.upscalers_loaded(), loads, "after a job with {path}");
        sizes.push((path, got.width, got.height));
    }
    println!("upscaler per job: {sizes:?}, {} loads", s.upscalers_loaded());
    assert_eq!(sizes.iter().map(|(_, w, h)| (*w, *h)).collect::<Vec<_>>(), vec![(256, 256), (256, 256), (128, 128), (256, 256)]);
}

/// The steps of the `progress` events in `events`, in order.
fn progress_of(events: &[Event]) -> Vec<(u32, u32)> {
    events.iter().filter_map(|e| if let Event::Progress { step, total } = e { Some((*step, *total)) } else { None }).collect()
}

/// Polls `jobs` as frames would until each one's `progress` passed `past`
/// (the U-Net calls before its upscale, if any: it is upscaling on a
/// worker); returns each one's events so far. Kiln's pool runs one job per
/// worker, so the upscales of jobs that all got there run at the same time.
fn until_upscaling_past(jobs: &mut [&mut Tracker], past: u32) -> Vec<Vec<Event>> {
    let start = Instant::now();
    let mut events: Vec<Vec<Event>> = jobs.iter().map(|_| Vec::new()).collect();
    let running = |ev: &[Event]| progress_of(ev).last().is_some_and(|p| p.0 > past);
    while !jobs.iter().zip(&events).all(|(t, ev)| running(ev) || t.has_ended()) {
        for (t, ev) in jobs.iter_mut().zip(events.iter_mut()) {
            ev.extend(t.update(Session::pool()));
        }
        assert!(start.elapsed() < Duration::from_secs(300), "jobs did not reach the upscale");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(jobs.iter().all(|t| !t.has_ended()), "a job ended before it was cancelled: {events:?}");
    events
}

/// Grows Kiln's process-wide pool (which never shrinks) so that the jobs of
/// a test that needs two upscales running at once never wait for a worker:
/// each test in flight (one per test thread) has at most two jobs running,
/// so twice the test threads and two more always leave two workers free.
fn enough_workers() {
    let threads = std::env::var("RUST_TEST_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    kiln::jobs::pool_with(2 * threads + 2).expect("the pool starts its workers");
}

/// Steps only go up, every total is `total`, and the last step is `total`.
fn assert_one_count(progress: &[(u32, u32)], total: u32) {
    assert!(progress.windows(2).all(|w| w[0].0 < w[1].0), "steps only go up: {progress:?}");
    assert!(progress.iter().all(|p| p.1 == total), "every total is {total}: {progress:?}");
    assert_eq!(progress.last(), Some(&(total, total)), "{progress:?}");
}

/// A generation with an upscaler is one Kiln job (`GenerateUpscaled`): one
/// `progress` count over the U-Net calls and then the upscale's tiles (its
/// total known from the first event), and `done` carries `Upscaler::upscale`
/// of the generated image.
#[test]
fn a_generation_with_an_upscaler_counts_steps_then_tiles_and_ends_with_the_upscale() {
    use OptionValue::*;
    let s = session();
    let settings = UpscaleSettings { tile: 16, context: 2, ..upscale_with(upscalers().join("x4")) };
    let options = UpscaleOptions { tile: 16, context: 2, ..Default::default() };
    // Euler: one U-Net call per step (the default PNDM makes one more than its steps).
    let request = [("steps", Int(3)), ("seed", Int(4)), ("scheduler", String("euler".into())), ("preview_interval", Int(1))];
    let mut t = s.start_upscaled("mossy stone", &opts(&request), &settings);
    let events = run_to_end(&mut t);
    let progress = progress_of(&events);
    println!("generation + upscale progress: {progress:?}");

    let model = fixture_model();
    let plain = direct(&model, &GenerateRequest { prompt: "mossy stone".into(), steps: 3, seed: 4, scheduler: SchedulerKind::Euler, ..Default::default() });
    let upscaler = load_upscaler(&model, &upscalers().join("x4"));
    let tiles = upscaler.runs(&plain, &options) as u32;
    assert_eq!(tiles, 16, "a 64x64 image in 16-pixel tiles");
    assert_one_count(&progress, 3 + tiles);
    // Previews come from the generation only: their steps are U-Net calls.
    let previews: Vec<u32> = events.iter().filter_map(|e| if let Event::Preview { step, .. } = e { Some(*step) } else { None }).collect();
    println!("generation + upscale previews at steps {previews:?}");
    assert!(!previews.is_empty() && previews.iter().all(|s| (1..=3).contains(s)), "previews of the U-Net calls only: {previews:?}");
    let want = upscaler.upscale(&plain, &options).unwrap();
    let got = done_image(&events);
    println!("generation + upscale: {} of {} values differ from Upscaler::upscale of Model::generate's image (bound 0)", count_differing(got, &want), want.pixels.len());
    assert_eq!((got.width, got.height, count_differing(got, &want)), (256, 256, 0));
}

/// An upscale that cannot run fails the job while it is prepared, with
/// Kiln's status (as `kiln_job_submit_upscaled` refuses it): nothing is
/// generated, no `progress` comes; a request the model refuses fails there
/// too, as it would in the job. The session goes on working.
#[test]
fn an_upscale_that_cannot_run_fails_before_anything_is_generated() {
    use OptionValue::*;
    let s = session();
    let x4 = upscale_with(upscalers().join("x4"));
    // 8192 pixels wide is a size the model makes, but 4x that is over Kiln's largest image side.
    let started = Instant::now();
    let events = run_to_end(&mut s.start_upscaled("x", &opts(&[("width", Int(8192)), ("steps", Int(1))]), &x4));
    let (status, message) = failure(&events);
    println!("too big to upscale: {status} {message:?} after {:?}", started.elapsed());
    assert_eq!(status, 104);
    assert!(message.contains("the 4x upscale of 8192x64"), "{message}");
    assert!(progress_of(&events).is_empty(), "nothing ran: {events:?}");

    let events = run_to_end(&mut s.start_upscaled("x", &opts(&[("width", Int(65)), ("steps", Int(1))]), &x4));
    let (status, message) = failure(&events);
    assert_eq!(status, 104, "{message}");
    assert!(message.starts_with("width 65 is not usable"), "{message}");
    assert!(progress_of(&events).is_empty(), "{events:?}");

    let image = done_image(&run_to_end(&mut s.start_upscaled("x", &opts(&[("steps", Int(1))]), &x4))).clone();
    assert_eq!((image.width, image.height, s.upscalers_loaded()), (256, 256, 1));
}

/// `cancel` while a job with an upscaler is still generating ends it with
/// 400 before any tile is counted.
#[test]
fn cancel_while_generating_with_an_upscaler_ends_the_job_cancelled() {
    use OptionValue::*;
    let s = session();
    let mut t = s.start_upscaled("x", &opts(&[("steps", Int(500)), ("scheduler", String("ddim".into()))]), &upscale_with(upscalers().join("x4")));
    let mut events = Vec::new();
    let start = Instant::now();
    while progress_of(&events).is_empty() && !t.has_ended() {
        events.extend(t.update(Session::pool()));
        assert!(start.elapsed() < Duration::from_secs(300), "the job did not start");
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(t.cancel(Session::pool()));
    events.extend(run_to_end(&mut t));
    let (status, message) = failure(&events);
    let progress = progress_of(&events);
    println!("cancelled while generating: {status} {message:?}, progress {:?}", progress.last());
    assert_eq!(status, 400);
    let tiles = 1; // 64x64 in one 256-pixel tile
    assert!(progress.iter().all(|p| p.1 == 500 + tiles && p.0 <= 500), "the tiles in the total from the start, none of them run: {progress:?}");
}

/// `cancel` during the upscale stops that job's upscale and the job fails
/// with 400; another job upscaling on the same graph at the time is not
/// touched (a job's cancel terminates its own graph run only) and finishes
/// with the right pixels, its count never going back.
#[test]
fn cancel_stops_an_upscale_in_flight_and_spares_the_other_jobs() {
    use OptionValue::*;
    enough_workers();
    let s = session();
    // 2-pixel tiles: 1024 graph runs per 64x64 image, seconds of work to cancel in.
    let slow = UpscaleSettings { tile: 2, context: 16, ..upscale_with(upscalers().join("x4")) };
    let base = opts(&[("steps", Int(1)), ("seed", Int(9))]);
    let mut cancelled = s.start_upscaled("x", &base, &slow);
    let mut other = s.start_upscaled("x", &base, &slow);
    // Past the one U-Net call: both jobs are upscaling.
    let mut before = until_upscaling_past(&mut [&mut cancelled, &mut other], 1);
    let other_before = before.pop().unwrap();
    let asked = Instant::now();
    assert!(cancelled.cancel(Session::pool()));
    let (status, message) = failure(&run_to_end(&mut cancelled));
    println!("upscale cancelled: {status} {message:?}, {:?} after the cancel", asked.elapsed());
    assert_eq!(status, 400);
    let after = run_to_end(&mut other);
    println!("the other job: done {:?} after the cancel; progress at the cancel {:?}", asked.elapsed(), progress_of(&other_before).last());
    let progress = progress_of(&[other_before, after.clone()].concat());
    assert_one_count(&progress, 1 + 1024);
    let model = fixture_model();
    let plain = direct(&model, &GenerateRequest { prompt: "x".into(), steps: 1, seed: 9, ..Default::default() });
    let want = load_upscaler(&model, &upscalers().join("x4")).upscale(&plain, &UpscaleOptions { tile: 2, context: 16, ..Default::default() }).unwrap();
    assert_eq!(count_differing(done_image(&after), &want), 0, "the spared job's pixels are Upscaler::upscale's");
}

/// A picture with varying alpha, for `upscale_image`.
fn picture(w: usize, h: usize) -> kiln::Rgba8Image {
    let pixels = (0..w * h).flat_map(|i| [(i * 7 % 256) as u8, (i * 13 % 256) as u8, (i % w * 10) as u8, (255 - i / 3 % 256) as u8]).collect();
    kiln::Rgba8Image { width: w, height: h, pixels }
}

/// `upscale_image` is an upscale job in Kiln's pool: `progress` counts its
/// graph runs (tiles, twice over for alpha through the graph) out of
/// `Upscaler::runs`, and `done` carries `Upscaler::upscale`'s pixels.
#[test]
fn upscale_image_reports_tile_progress_and_gives_upscaler_upscale() {
    let s = Session::new(SessionConfig::default());
    let image = picture(24, 20);
    let settings = UpscaleSettings { tile: 8, context: 4, ..upscale_with(upscalers().join("x4")) };
    let options = UpscaleOptions { tile: 8, context: 4, seamless: Seamless::X, ..Default::default() };
    let mut t = s.upscale(image.clone(), "x", &settings);
    let events = run_to_end(&mut t);
    let progress = progress_of(&events);
    println!("upscale_image progress: {progress:?}");
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let upscaler = Upscaler::load(&rt, &upscalers().join("x4")).unwrap();
    let runs = upscaler.runs(&image, &options) as u32;
    assert_eq!(runs, 18, "3x3 tiles of 8 pixels, colour then alpha");
    assert_one_count(&progress, runs);
    let want = upscaler.upscale(&image, &options).unwrap();
    let got = done_image(&events);
    assert_eq!((got.width, got.height, count_differing(got, &want)), (96, 80, 0), "Upscaler::upscale's pixels");
    assert!(events.iter().all(|e| !matches!(e, Event::Preview { .. })), "an upscale makes no previews");
}

/// Two `upscale_image` jobs on the same upscaler at once: cancelling one
/// ends it with 400 and leaves the other running to `Upscaler::upscale`'s
/// pixels, its tile count going on from where it was.
#[test]
fn cancelling_one_upscale_image_leaves_a_concurrent_one_alone() {
    enough_workers();
    let s = Session::new(SessionConfig::default());
    let image = picture(24, 20);
    // 1-pixel tiles, alpha through the graph: 960 graph runs each.
    let slow = UpscaleSettings { tile: 1, ..upscale_with(upscalers().join("x4")) };
    let mut cancelled = s.upscale(image.clone(), "none", &slow);
    let mut other = s.upscale(image.clone(), "none", &slow);
    let mut before = until_upscaling_past(&mut [&mut cancelled, &mut other], 0);
    let other_before = before.pop().unwrap();
    let at_cancel = progress_of(&other_before).last().copied();
    assert!(cancelled.cancel(Session::pool()));
    let (status, message) = failure(&run_to_end(&mut cancelled));
    println!("upscale_image cancelled beside another: {status} {message:?}; the other was at {at_cancel:?}");
    assert_eq!(status, 400);
    let after = run_to_end(&mut other);
    let progress = progress_of(&[other_before, after.clone()].concat());
    assert_one_count(&progress, 960);
    let want = Upscaler::load(&Runtime::new(&RuntimeOptions::default()).unwrap(), &upscalers().join("x4"))
        .unwrap()
        .upscale(&image, &UpscaleOptions { tile: 1, ..Default::default() })
        .unwrap();
    assert_eq!(count_differing(done_image(&after), &want), 0, "the other job's pixels are Upscaler::upscale's");
    assert_eq!(s.upscalers_loaded(), 1, "both jobs upscale on one graph");
}

/// `upscale_image`: a job with no generation (no model needed) whose image
/// is `Upscaler::upscale`'s, alpha through the graph or bilinear; bad
/// arguments fail with 101, and cancel stops it.
#[test]
fn upscale_image_upscales_a_given_image_alone() {
    let s = Session::new(SessionConfig::default()); // no model_path: none is needed
    let image = picture(24, 20);
    let x4 = upscale_with(upscalers().join("x4"));
    let rt = Runtime::new(&RuntimeOptions::default()).expect("ONNX Runtime loads");
    let upscaler = Upscaler::load(&rt, &upscalers().join("x4")).unwrap();

    let got = done_image(&run_to_end(&mut s.upscale(image.clone(), "xy", &x4))).clone();
    let want = upscaler.upscale(&image, &UpscaleOptions { seamless: Seamless::Xy, ..Default::default() }).unwrap();
    assert_eq!((got.width, got.height, count_differing(&got, &want)), (96, 80, 0), "Upscaler::upscale's pixels, wrapping");
    let bilinear = UpscaleSettings { alpha: "bilinear".into(), ..x4.clone() };
    let got_bilinear = done_image(&run_to_end(&mut s.upscale(image.clone(), "none", &bilinear))).clone();
    let want = upscaler.upscale(&image, &UpscaleOptions { alpha: UpscaleAlpha::Bilinear, ..Default::default() }).unwrap();
    assert_eq!(count_differing(&got_bilinear, &want), 0, "upscale_alpha bilinear");
    let through_graph = upscaler.upscale(&image, &UpscaleOptions::default()).unwrap();
    let alpha_differs = got_bilinear.pixels.chunks(4).zip(through_graph.pixels.chunks(4)).filter(|(a, b)| a[3] != b[3]).count();
    println!("upscale_image: bilinear alpha differs from the graph's in {alpha_differs} of {} pixels", 96 * 80);
    assert!(alpha_differs > 0);
    assert_eq!(s.upscalers_loaded(), 1);

    for (seamless, settings, want_status, want) in [
        ("z", x4.clone(), 101, "seamless: unknown axes \"z\"; one of none, x, y, xy"),
        ("none", UpscaleSettings::default(), 101, "upscaler_path is empty; set it to an upscaler"),
        ("none", upscale_with(upscalers().join("missing.onnx")), 200, "upscaler_path: upscaler graph "),
    ] {
        let (status, message) = failure(&run_to_end(&mut s.upscale(image.clone(), seamless, &settings)));
        println!("upscale_image: {status} {message}");
        assert_eq!(status, want_status);
        assert!(message.starts_with(want), "{message:?} should start with {want:?}");
    }

    // 1-pixel tiles, alpha through the graph: 960 graph runs to cancel in.
    let slow = UpscaleSettings { tile: 1, ..x4 };
    let mut t = s.upscale(image.clone(), "none", &slow);
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    assert!(t.cancel(Session::pool()));
    let (status, message) = failure(&run_to_end(&mut t));
    println!("upscale_image cancelled: {status} {message:?}, {:?} after the cancel", asked.elapsed());
    assert_eq!(status, 400);
}

