//! The binding's engine-independent path end to end, on Kiln's tiny fixture
//! model and real ONNX Runtime: options → preparation thread → Kiln job →
//! frame-by-frame events → Godot image data. No Godot involved.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln::model::seamless::Seamless;
use kiln::{GenerateRequest, Model, Runtime, RuntimeOptions, SchedulerKind};
use kiln_godot::image_data::to_godot_rgba8;
use kiln_godot::options::OptionValue;
use kiln_godot::session::{Session, SessionConfig};
use kiln_godot::tracker::{Event, Phase, Tracker};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/tiny-sd")
}

fn session() -> Session {
    Session::new(SessionConfig { model_dir: fixture(), onnxruntime_path: None })
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

/// SDXL keys on tests/fixtures/tiny-sdxl: the job's pixels are those of the
/// same request made directly, and differ from the request without them.
#[test]
fn sdxl_keys_generate_what_kiln_makes_directly() {
    use OptionValue::*;
    let dir = fixture().join("../tiny-sdxl");
    let s = Session::new(SessionConfig { model_dir: dir.clone(), onnxruntime_path: None });
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
    let missing = Session::new(SessionConfig { model_dir: fixture().join("no-such-model"), onnxruntime_path: None });
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

/// tiny-sd plus tests/fixtures/controlnet, assembled under the target dir.
fn controlnet_model_dir() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures");
    let dest = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kiln-godot-controlnet");
    let _ = std::fs::remove_dir_all(&dest);
    for src in [root.join("tiny-sd"), root.join("controlnet")] {
        let mut stack = vec![src.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let to = dest.join(p.strip_prefix(&src).unwrap());
                if p.is_dir() {
                    stack.push(p);
                } else {
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(&p, &to).unwrap();
                }
            }
        }
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
    let s = Session::new(SessionConfig { model_dir: dir.clone(), onnxruntime_path: None });
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
