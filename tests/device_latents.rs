//! Device-resident latents (`ProviderPolicy::device_latents`): the loop that
//! keeps the latents bound where the U-Net runs and steps the scheduler in a
//! small ONNX graph gives the host loop's results, per scheduler, and is
//! really used (`Generation::device_steps`).
//!
//! On the CPU provider (CI) the "device" is host memory: the same bindings,
//! step graph and coefficients run, so this checks all of it but the copies.
//! `KILN_TEST_PROVIDERS=cuda KILN_TEST_GPU_MATH=exact` (tools/gpu_check.sh)
//! runs the same comparisons on CUDA, device memory included.
//! `KILN_TEST_STATIC_UNET=1` runs both loops through the static U-Net, and
//! `KILN_TEST_CUDA_GRAPH=1` with CUDA graph replay (on CUDA the device loop
//! then binds fixed buffers, as `fixed_buffers_*` does everywhere).
mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use kiln::pipeline::{Generation, GenerateRequest, Hooks, StepLatents};
use kiln::{Model, Runtime, SchedulerKind};

use common::Log;

/// A runtime with the providers tests/common reads from the environment,
/// device-resident latents on or off, and its log.
fn make_runtime(device_latents: bool) -> (Runtime, Log) {
    make_runtime_with(device_latents, false)
}

/// As `make_runtime`; `fixed`: the device loop binds the U-Net's buffers at
/// fixed addresses (the CUDA graph replay path) on any provider.
fn make_runtime_with(device_latents: bool, fixed: bool) -> (Runtime, Log) {
    make_runtime_full(device_latents, fixed, kiln::model::Residency::default())
}

/// As `make_runtime_with`, with a residency.
fn make_runtime_full(device_latents: bool, fixed: bool, residency: kiln::model::Residency) -> (Runtime, Log) {
    let mut providers = common::env_providers();
    providers.static_unet = common::env_flag("KILN_TEST_STATIC_UNET");
    providers.cuda_graph = common::env_flag("KILN_TEST_CUDA_GRAPH");
    providers.device_latents = device_latents;
    providers.fixed_unet_buffers = fixed;
    common::logged_runtime(providers, residency)
}

fn host_model() -> &'static Model {
    static M: OnceLock<(Model, Log)> = OnceLock::new();
    &M.get_or_init(|| {
        let (rt, log) = make_runtime(false);
        (Model::load(&rt, &common::fixture()).expect("tiny fixture loads"), log)
    })
    .0
}

fn device() -> &'static (Model, Log) {
    static M: OnceLock<(Model, Log)> = OnceLock::new();
    M.get_or_init(|| {
        let (rt, log) = make_runtime(true);
        (Model::load(&rt, &common::fixture()).expect("tiny fixture loads"), log)
    })
}

fn request(scheduler: SchedulerKind, guidance: f32, steps: usize) -> GenerateRequest {
    GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        negative_prompt: "blurry".into(),
        width: 64,
        height: 64,
        steps,
        guidance_scale: guidance,
        seed: 11,
        scheduler,
        ..Default::default()
    }
}

fn flat(a: &ndarray::ArrayD<f32>) -> Vec<f32> {
    a.iter().copied().collect()
}

/// Latents relative to their largest magnitude, image absolute; both bounds
/// were set before measuring: the two loops differ only in the rounding of
/// the step arithmetic (coefficients folded on the host in f64, applied in
/// f32), about 1e-7 relative per step.
fn compare_results(id: &str, got: &Generation, want: &Generation) {
    assert_eq!(got.latents.shape(), want.latents.shape());
    let (a, b) = (flat(&got.latents), flat(&want.latents));
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    common::check_margin(&format!("device_latents::{id}::latents_rel"), (common::max_abs_diff(&a, &b) / scale) as f64, 1e-5);
    common::check_margin(&format!("device_latents::{id}::image_abs"), common::max_abs_diff(&got.image.data, &want.image.data) as f64, 1e-5);
}

fn compare(id: &str, r: &GenerateRequest) {
    let want = host_model().generate_with(r, Hooks::default()).expect("host loop");
    assert_eq!(want.device_steps, 0, "the host runtime must not use the device loop");
    let got = device().0.generate_with(r, Hooks::default()).expect("device loop");
    assert_eq!(got.device_steps, want.timesteps.len(), "{id}: every U-Net call should have run with device-resident latents");
    compare_results(id, &got, &want);
}

#[test]
fn device_loop_matches_the_host_loop_per_scheduler() {
    compare("euler_cfg", &request(SchedulerKind::Euler, 5.0, 8));
    compare("euler_a_cfg", &request(SchedulerKind::EulerA, 5.0, 8));
    compare("ddim_cfg", &request(SchedulerKind::Ddim, 5.0, 8));
    compare("dpmpp_2m_cfg", &request(SchedulerKind::DpmPP2M, 5.0, 8));
    compare("dpmpp_2m_karras_cfg", &request(SchedulerKind::DpmPP2MKarras, 5.0, 8));
    compare("dpmpp_2m_sde_cfg", &request(SchedulerKind::DpmPP2MSde, 5.0, 8));
    compare("lcm_cfg", &request(SchedulerKind::Lcm, 5.0, 4));
    // Without guidance the U-Net runs batch 1 (the other step graph).
    compare("euler_noguide", &request(SchedulerKind::Euler, 1.0, 6));
    compare("dpmpp_2m_noguide", &request(SchedulerKind::DpmPP2M, 1.0, 6));
}

#[test]
fn device_loop_runs_img2img_from_part_way() {
    let picture = kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).expect("an init picture");
    for (id, kind) in [("img2img_dpmpp_2m", SchedulerKind::DpmPP2M), ("img2img_euler_a", SchedulerKind::EulerA)] {
        let r = GenerateRequest { init_image: Some(picture.clone()), strength: 0.6, ..request(kind, 5.0, 10) };
        compare(id, &r);
    }
}

/// A step's latents leave the device only when asked for, and then equal the
/// host loop's latents after that step.
#[test]
fn previews_copy_latents_back_only_on_asked_steps() {
    let r = request(SchedulerKind::DpmPP2M, 5.0, 7);
    let mut host_steps = Vec::new();
    let mut record = |p: &kiln::pipeline::StepProgress<'_>| host_steps.push(flat(p.latents));
    host_model().generate_with(&r, Hooks { on_step: Some(&mut record), ..Default::default() }).unwrap();
    let mut seen = Vec::new();
    let mut observe = |p: &kiln::pipeline::StepProgress<'_>| seen.push((p.step, p.total, flat(p.latents)));
    let hooks = Hooks { on_step: Some(&mut observe), step_latents: StepLatents::Interval(3), ..Default::default() };
    let got = device().0.generate_with(&r, hooks).unwrap();
    assert_eq!(got.device_steps, 7);
    assert_eq!(seen.iter().map(|s| s.0).collect::<Vec<_>>(), (1..=7).collect::<Vec<_>>(), "every step is reported");
    for (step, total, latents) in &seen {
        assert_eq!(*total, 7);
        let wanted = step % 3 == 0 || *step == 7;
        assert_eq!(!latents.is_empty(), wanted, "step {step}: latents came back = {}", !latents.is_empty());
        if wanted {
            let want = &host_steps[step - 1];
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            common::check_margin(&format!("device_latents::preview_step{step}_rel"), (common::max_abs_diff(latents, want) / scale) as f64, 1e-5);
        }
    }
}

/// Requests the device loop does not run fall back to the host loop, with
/// the reason logged, and give the host loop's results exactly.
#[test]
fn unsupported_requests_run_the_host_loop() {
    let cases = [
        ("pndm", request(SchedulerKind::Pndm, 5.0, 6), "not a linear map"),
        ("heun", request(SchedulerKind::Heun, 5.0, 4), "not a linear map"),
        ("rescale", GenerateRequest { guidance_rescale: 0.7, ..request(SchedulerKind::Euler, 5.0, 6) }, "guidance rescale"),
        (
            "ddim_clip",
            GenerateRequest {
                scheduler_overrides: Some(serde_json::json!({"clip_sample": true})),
                ..request(SchedulerKind::Ddim, 5.0, 6)
            },
            "not a linear map",
        ),
    ];
    for (id, r, reason) in cases {
        let before = device().1.lock().unwrap().len();
        let got = device().0.generate_with(&r, Hooks::default()).unwrap();
        let want = host_model().generate_with(&r, Hooks::default()).unwrap();
        assert_eq!(got.device_steps, 0, "{id}");
        assert_eq!(flat(&got.latents), flat(&want.latents), "{id}: the host loop must run unchanged");
        let log = device().1.lock().unwrap()[before..].to_vec();
        assert!(log.iter().any(|l| l.starts_with("latents: host loop") && l.contains(reason)), "{id}: {log:?}");
    }
}

/// A cancel between steps stops the device loop with CANCELLED, and the
/// model then generates again (the flag is set from the step callback, so
/// the outcome does not depend on scheduling).
#[test]
fn cancel_stops_the_device_loop_and_the_model_stays_usable() {
    let r = request(SchedulerKind::Euler, 5.0, 6);
    let cancel = AtomicBool::new(false);
    let mut on_step = |p: &kiln::pipeline::StepProgress<'_>| {
        if p.step == 2 {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let hooks = Hooks { cancel: Some(&cancel), on_step: Some(&mut on_step), step_latents: StepLatents::Never, ..Default::default() };
    let e = device().0.generate_with(&r, hooks).unwrap_err();
    assert_eq!(e.kind(), kiln::ErrorKind::Cancelled, "{}", e.message());
    assert!(e.message().contains("before step 3"), "{}", e.message());
    let again = device().0.generate_with(&r, Hooks::default()).unwrap();
    assert_eq!(again.device_steps, 6);
}

/// Records a job's previews.
#[derive(Default)]
struct Previews(Mutex<Vec<(u32, Vec<u8>)>>);

impl kiln::jobs::JobObserver for Previews {
    fn on_event(&self, _id: u64, event: &kiln::jobs::JobEvent<'_>) {
        if let kiln::jobs::JobEvent::Preview { step, image } = event {
            self.0.lock().unwrap().push((*step, image.pixels.clone()));
        }
    }
}

/// A job asks for the latents of its preview steps only, and gets them: the
/// same previews, at the same steps, as with the host loop.
#[test]
fn job_previews_come_back_from_the_device() {
    let run = |model: &Model| -> Vec<(u32, Vec<u8>)> {
        let previews = Arc::new(Previews::default());
        let pool = kiln::jobs::pool_for(model.runtime()).unwrap();
        let config = kiln::jobs::JobConfig { preview_interval: 3, observer: Some(previews.clone()), ..Default::default() };
        let job = pool.submit(model, request(SchedulerKind::Euler, 5.0, 7), config);
        assert_eq!(pool.wait(job, std::time::Duration::from_secs(120)).unwrap(), kiln::jobs::JobState::Succeeded);
        pool.release(job).unwrap();
        let got = previews.0.lock().unwrap().clone();
        got
    };
    let before = device().1.lock().unwrap().len();
    let on_device = run(&device().0);
    let log = device().1.lock().unwrap()[before..].to_vec();
    assert!(log.iter().any(|l| l == "latents: 7 steps with device-resident latents"), "{log:?}");
    assert!(!log.iter().any(|l| l.contains("no preview")), "{log:?}");
    let on_host = run(host_model());
    let steps = |v: &[(u32, Vec<u8>)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(steps(&on_device), [3, 6, 7]);
    assert_eq!(steps(&on_device), steps(&on_host));
    for ((step, a), (_, b)) in on_device.iter().zip(&on_host) {
        let worst = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
        // 8-bit previews of latents 1e-7 apart: at most one step of rounding.
        common::check_margin(&format!("device_latents::job_preview_step{step}_levels"), worst as f64, 1.0);
    }
}

/// SDXL's added inputs (`text_embeds`, `time_ids`) are bound once for the
/// whole loop; the tiny SDXL fixture gives the host loop's results.
#[test]
fn sdxl_runs_on_the_device_loop() {
    let folder = common::root().join("tests/fixtures/tiny-sdxl");
    let host = Model::load(host_model().runtime(), &folder).expect("tiny SDXL loads");
    let dev = Model::load(device().0.runtime(), &folder).expect("tiny SDXL loads");
    for (id, kind, guidance) in [("sdxl_euler_cfg", SchedulerKind::Euler, 5.0), ("sdxl_dpmpp_2m_noguide", SchedulerKind::DpmPP2M, 1.0)] {
        let r = request(kind, guidance, 6);
        let want = host.generate_with(&r, Hooks::default()).expect("host loop");
        let got = dev.generate_with(&r, Hooks::default()).expect("device loop");
        assert_eq!((want.device_steps, got.device_steps), (0, 6), "{id}");
        compare_results(id, &got, &want);
    }
}

/// RGBA8 pixels of one 5-step Euler job through the C API, from a runtime
/// made with `kiln_runtime_options.device_latents` set to `device_latents`.
fn c_generate(device_latents: u32) -> Vec<u8> {
    common::c_generate_tiny(64, |o| o.device_latents = device_latents, |g| {
        (g.steps, g.guidance_scale) = (5, 5.0);
        g.scheduler = SchedulerKind::Euler as u32;
    })
}

/// The C field `kiln_runtime_options.device_latents`: on, the job's log says
/// its steps ran with device-resident latents (off, it does not), and the RGBA8
/// pixels equal the host loop's. Bound: the float images differ by ≤ 1e-5
/// (above), so a byte may differ by one level where a value lies within 1e-5
/// of a rounding boundary: at most about 2·1e-5·255 ≈ 0.5 % of the values if
/// spread evenly; the bound is 1 %.
#[test]
fn the_c_field_turns_device_latents_on_with_the_same_pixels() {
    let device_lines = || common::C_LOG.lock().unwrap().iter().filter(|l| l.contains("with device-resident latents")).cloned().collect::<Vec<_>>();
    common::C_LOG.lock().unwrap().clear();
    let off = c_generate(0);
    assert!(device_lines().is_empty(), "device_latents 0 ran the device loop: {:?}", device_lines());
    let on = c_generate(1);
    let lines = device_lines();
    eprintln!("{lines:?}");
    assert!(lines.iter().any(|l| l.contains("5 steps with device-resident latents")), "device_latents 1 did not run the device loop: {lines:?}");
    let diffs: Vec<u8> = on.iter().zip(&off).map(|(a, b)| a.abs_diff(*b)).collect();
    let max = *diffs.iter().max().unwrap();
    let differing = diffs.iter().filter(|&&d| d != 0).count() as f64 / diffs.len() as f64;
    eprintln!("C route, device vs host loop: max {max} levels, {:.3} % of values differ", differing * 100.0);
    assert!(max <= 1, "a byte differs by {max} levels");
    common::check_margin("device_latents::c_route::differing_fraction", differing, 0.01);
}

/// A device-loop model whose U-Net buffers are bound at fixed addresses.
fn fixed() -> &'static (Model, Log) {
    static M: OnceLock<(Model, Log)> = OnceLock::new();
    M.get_or_init(|| {
        let (rt, log) = make_runtime_with(true, true);
        (Model::load(&rt, &common::fixture()).expect("tiny fixture loads"), log)
    })
}

/// Lines of `log` from `from` on that say fixed buffers were made.
fn buffers_made(log: &Log, from: usize) -> Vec<String> {
    log.lock().unwrap()[from..].iter().filter(|l| l.contains("bound at fixed addresses")).cloned().collect()
}

/// The CUDA graph replay path (every U-Net input and the output bound once,
/// the step graph writing the next sample into the bound buffer, the timestep
/// copied into its buffer) gives the host loop's results, on the CPU without
/// a capture. The buffers are kept between generations of the same shapes (a
/// captured graph needs the same addresses) with this generation's inputs
/// written into them: a second prompt and seed at the same shapes reuses them
/// and still matches the host loop, and another batch makes new ones.
#[test]
fn fixed_buffers_match_the_host_loop_and_are_reused() {
    let (model, log) = fixed();
    let run = |id: &str, r: &GenerateRequest| -> usize {
        let before = log.lock().unwrap().len();
        let want = host_model().generate_with(r, Hooks::default()).expect("host loop");
        let got = model.generate_with(r, Hooks::default()).expect("device loop, fixed buffers");
        assert_eq!(got.device_steps, want.timesteps.len(), "{id}: every U-Net call should have run in the device loop");
        compare_results(&format!("fixed_{id}"), &got, &want);
        let made = buffers_made(log, before);
        // On CUDA with KILN_TEST_CUDA_GRAPH=1 (tools/gpu_check.sh) the buffers serve a captured graph.
        let replay = std::env::var("KILN_TEST_CUDA_GRAPH").is_ok_and(|v| v == "1")
            && std::env::var("KILN_TEST_PROVIDERS").is_ok_and(|p| p.contains("cuda"));
        assert!(made.iter().all(|l| l.ends_with("(CUDA graph replay)") == replay), "{id}: {made:?}");
        made.len()
    };
    assert_eq!(run("euler_cfg", &request(SchedulerKind::Euler, 5.0, 6)), 1, "the first generation makes the buffers");
    let other = GenerateRequest {
        prompt: "cracked desert clay".into(),
        negative_prompt: "smooth".into(),
        seed: 23,
        ..request(SchedulerKind::DpmPP2MSde, 7.0, 6)
    };
    assert_eq!(run("dpmpp_2m_sde_cfg_second_prompt", &other), 0, "same shapes: the buffers are reused");
    assert_eq!(run("dpmpp_2m_noguide", &request(SchedulerKind::DpmPP2M, 1.0, 5)), 1, "batch 1: new buffers");
    let picture = kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).expect("an init picture");
    let img2img = GenerateRequest { init_image: Some(picture), strength: 0.6, ..request(SchedulerKind::EulerA, 5.0, 8) };
    // The dynamic U-Net keeps one set of buffers; each specialised U-Net (one
    // per shape) keeps its own, so batch 2 finds its set again.
    let specialised = ["KILN_TEST_STATIC_UNET", "KILN_TEST_CUDA_GRAPH"].iter().any(|v| std::env::var(v).is_ok_and(|v| v == "1"));
    assert_eq!(run("img2img_euler_a", &img2img), usize::from(!specialised), "batch 2 again (specialised U-Nets: {specialised})");
}

/// In a ControlNet folder every job runs `unet_controlnet`, plain ones with
/// zero residuals, so the U-Net's weights are held once (tests/controlnet.rs).
/// The device loop does so too: it binds `unet_controlnet` with its zero
/// residuals among the inputs bound once per generation, and `unet/` stays
/// unopened. Checked with and without fixed buffers, CFG and no guidance,
/// against the host loop on the tiny fixture's own U-Net (`compare_results`'s
/// bounds); a ControlNet job on the same model then runs the same
/// `unet_controlnet`.
#[test]
fn a_controlnet_folder_runs_the_device_loop_through_unet_controlnet() {
    // KILN_TEST_STATIC_UNET=1: the graphs specialised from them.
    let unet_graphs = |r: &[&str]| r.iter().filter(|n| n.starts_with("unet")).map(|n| n.to_string()).collect::<Vec<_>>();
    for (tag, fixed) in [("device", false), ("device-fixed", true)] {
        let (rt, log) = make_runtime_with(true, fixed);
        let m = Model::load(&rt, &common::controlnet_folder(tag)).expect("ControlNet folder loads");
        for (id, r) in [("euler_cfg", request(SchedulerKind::Euler, 5.0, 6)), ("dpmpp_2m_noguide", request(SchedulerKind::DpmPP2M, 1.0, 5))] {
            let want = host_model().generate_with(&r, Hooks::default()).expect("host loop");
            let got = m.generate_with(&r, Hooks::default()).expect("device loop through unet_controlnet");
            assert_eq!(got.device_steps, want.timesteps.len(), "{tag} {id}: every U-Net call should have run in the device loop");
            compare_results(&format!("controlnet_folder_{}_{id}", tag.replace('-', "_")), &got, &want);
        }
        let unets = unet_graphs(&m.resident_graphs());
        eprintln!("{tag}: U-Net graphs resident: {unets:?}");
        assert!(unets == ["unet_controlnet"] || unets == ["unet_controlnet_static"], "{tag}: {unets:?}");
        let controlled = GenerateRequest {
            controls: vec![kiln::pipeline::control::Control::new("tiny", common::control_image("control_a.png"))],
            ..request(SchedulerKind::Euler, 5.0, 4)
        };
        let got = m.generate_with(&controlled, Hooks::default()).expect("ControlNet job");
        assert_eq!(got.device_steps, 4, "{tag}: the ControlNet job runs the device loop too ({:?})", log.lock().unwrap().last());
        assert_eq!(unet_graphs(&m.resident_graphs()), unets, "{tag}: the ControlNet job opened another U-Net");
    }
}

/// ControlNet jobs run on the device loop too: before each U-Net call the
/// nets in their window run on the U-Net's bound sample and write their
/// residuals into the tensors `unet_controlnet` reads (two nets at one step,
/// or guess mode, into their own, then scaled and added by a combine graph;
/// none in the window: zeros).
/// Against the host loop on the same folder, `compare_results`'s bounds: one
/// net with CFG, without guidance, two nets at once, two nets with windows
/// that leave steps to neither (zeros copied back in), img2img, blended
/// inpainting, guess mode (per-block scales applied by the combine graph;
/// with CFG the nets run on the conditional row alone and the combine puts
/// their residuals after a row of zeros), alone, with two nets and without
/// guidance; with and without fixed buffers.
#[test]
fn controlnet_jobs_run_on_the_device_loop() {
    use kiln::pipeline::control::Control;
    let host = Model::load(&make_runtime(false).0, &common::controlnet_folder("controlnet-host")).expect("ControlNet folder loads");
    let a = || Control::new("tiny", common::control_image("control_a.png"));
    let b = || Control::new("tiny", common::control_image("control_b.png"));
    let with = |controls: Vec<Control>, r: GenerateRequest| GenerateRequest { controls, ..r };
    let cases = [
        ("one_euler_cfg", with(vec![a()], request(SchedulerKind::Euler, 5.0, 6))),
        ("one_ddim_noguide", with(vec![Control { scale: 0.7, ..a() }], request(SchedulerKind::Ddim, 1.0, 5))),
        ("two_dpmpp_2m_cfg", with(vec![Control { scale: 0.5, ..a() }, Control { scale: 1.2, ..b() }], request(SchedulerKind::DpmPP2M, 5.0, 6))),
        (
            // Of 6 calls, a runs the first 2 and b the last 2: zeros between.
            "two_windows_euler_a_cfg",
            with(vec![Control { end: 0.34, ..a() }, Control { start: 0.66, ..b() }], request(SchedulerKind::EulerA, 5.0, 6)),
        ),
        (
            "img2img_euler_cfg",
            GenerateRequest {
                init_image: Some(kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).expect("an init picture")),
                strength: 0.6,
                ..with(vec![a()], request(SchedulerKind::Euler, 5.0, 10))
            },
        ),
        ("inpaint_blend_ddim_cfg", with(vec![b()], inpaint_request(SchedulerKind::Ddim, 5.0, 8, 0.8))),
        // Guess mode: per-block scales, and with CFG the conditional row only.
        ("guess_euler_cfg", GenerateRequest { guess_mode: true, ..with(vec![Control { scale: 0.8, ..a() }], request(SchedulerKind::Euler, 5.0, 6)) }),
        ("guess_two_dpmpp_2m_cfg", GenerateRequest { guess_mode: true, ..with(vec![a(), Control { end: 0.5, ..b() }], request(SchedulerKind::DpmPP2M, 5.0, 6)) }),
        ("guess_ddim_noguide", GenerateRequest { guess_mode: true, ..with(vec![a()], request(SchedulerKind::Ddim, 1.0, 5)) }),
    ];
    for (tag, fixed) in [("controlnet-device", false), ("controlnet-device-fixed", true)] {
        let (rt, log) = make_runtime_with(true, fixed);
        let m = Model::load(&rt, &common::controlnet_folder(tag)).expect("ControlNet folder loads");
        compare_controlnet_cases(&host, &m, &log, &tag.replace('-', "_"), &cases);
        // The control must matter, or none of the above shows anything.
        let plain = m.generate_with(&request(SchedulerKind::Euler, 5.0, 6), Hooks::default()).unwrap();
        let moved = common::max_abs_diff(&plain.image.data, &host.generate_with(&cases[0].1, Hooks::default()).unwrap().image.data);
        assert!(moved > 1e-2, "{tag}: the ControlNet moved the image by only {moved}");
        // Guess mode must matter too.
        let guess = m.generate_with(&cases[6].1, Hooks::default()).unwrap();
        let plain_scale = m.generate_with(&GenerateRequest { guess_mode: false, ..cases[6].1.clone() }, Hooks::default()).unwrap();
        let moved = common::max_abs_diff(&guess.image.data, &plain_scale.image.data);
        assert!(moved > 1e-2, "{tag}: guess mode moved the image by only {moved}");
    }
}

/// A ControlNet graph without a `conditioning_scale` input (exports made
/// outside optimum's layout often leave it to the caller): Kiln scales the
/// residuals itself, on the host in the host loop and in the combine graph on
/// the device. `xl-unscaled` is the SDXL fixture's `xl` with that input fixed
/// to 1 (tools/make_unscaled_controlnet.py), so at any scale it must give what
/// `xl` gives with the scale applied inside its graph: on the host loop, and
/// on the device loop with and without fixed buffers. One net, two nets (one
/// scaled each way), a window, no guidance.
#[test]
fn a_controlnet_without_a_scale_input_is_scaled_by_kiln_on_both_loops() {
    use kiln::pipeline::control::Control;
    let folder = |tag: &str| {
        let f = common::sdxl_controlnet_folder(tag);
        common::copy_tree(&common::root().join("tests/fixtures/controlnet-unscaled/xl-unscaled"), &f.join("controlnet/xl-unscaled"));
        f
    };
    let host = Model::load(&make_runtime(false).0, &folder("unscaled-host")).expect("SDXL ControlNet folder loads");
    let on = |net: &str, image: &str, scale: f32| Control { scale, ..Control::new(net, common::control_image(image)) };
    let with = |controls: Vec<Control>, r: GenerateRequest| GenerateRequest { controls, ..r };
    // Each case on the unscaled net, and the same with `xl` in its place.
    let cases = [
        ("one_euler_cfg_s06", vec![on("xl-unscaled", "control_a.png", 0.6)], request(SchedulerKind::Euler, 5.0, 6)),
        (
            "two_dpmpp_2m_cfg",
            vec![on("xl", "control_a.png", 0.5), on("xl-unscaled", "control_b.png", 1.3)],
            request(SchedulerKind::DpmPP2M, 5.0, 6),
        ),
        ("window_ddim_cfg_s07", vec![Control { end: 0.5, ..on("xl-unscaled", "control_b.png", 0.7) }], request(SchedulerKind::Ddim, 5.0, 6)),
        ("one_euler_noguide_s04", vec![on("xl-unscaled", "control_a.png", 0.4)], request(SchedulerKind::Euler, 1.0, 5)),
    ];
    let scaled_in_graph = |controls: &[Control]| -> Vec<Control> {
        controls.iter().map(|c| Control { controlnet: "xl".into(), ..c.clone() }).collect()
    };
    let mut unscaled = Vec::new();
    for (id, controls, r) in &cases {
        let request = with(controls.clone(), r.clone());
        let want = host.generate_with(&with(scaled_in_graph(controls), r.clone()), Hooks::default()).expect("the scale inside the graph");
        let got = host.generate_with(&request, Hooks::default()).expect("the scale applied by Kiln");
        assert_eq!((want.device_steps, got.device_steps), (0, 0));
        compare_results(&format!("unscaled_host_{id}"), &got, &want);
        unscaled.push((*id, request));
    }
    // The scale must matter: at 1 the unscaled net gives another picture.
    let at_one = host.generate_with(&with(vec![on("xl-unscaled", "control_a.png", 1.0)], cases[0].2.clone()), Hooks::default()).unwrap();
    let at_06 = host.generate_with(&unscaled[0].1, Hooks::default()).unwrap();
    let moved = common::max_abs_diff(&at_one.image.data, &at_06.image.data);
    assert!(moved > 1e-2, "the conditioning scale moved the image by only {moved}");
    for (tag, fixed) in [("unscaled-device", false), ("unscaled-device-fixed", true)] {
        let (rt, log) = make_runtime_with(true, fixed);
        let m = Model::load(&rt, &folder(tag)).expect("SDXL ControlNet folder loads");
        compare_controlnet_cases(&host, &m, &log, &tag.replace('-', "_"), &unscaled);
    }
}

/// Runs each case on `host` (the host loop) and `device`, checking that every
/// U-Net call ran in the device loop and that the results agree; margins
/// named `{prefix}_{id}`.
fn compare_controlnet_cases(host: &Model, device: &Model, log: &Log, prefix: &str, cases: &[(&str, GenerateRequest)]) {
    for (id, r) in cases {
        let want = host.generate_with(r, Hooks::default()).expect("host loop");
        assert_eq!(want.device_steps, 0);
        let got = device.generate_with(r, Hooks::default()).expect("device loop with ControlNets");
        let said = log.lock().unwrap().iter().rfind(|l| l.starts_with("latents:")).cloned();
        assert_eq!(got.device_steps, want.timesteps.len(), "{prefix} {id}: every U-Net call should have run in the device loop ({said:?})");
        compare_results(&format!("{prefix}_{id}"), &got, &want);
    }
}

/// ControlNet jobs with a 9-channel inpainting U-Net on the device loop: the
/// step graph writes the U-Net's next input (latents, mask, masked picture's
/// latents) and the same rows without the mask channels, which the nets take
/// (as diffusers' StableDiffusionControlNetInpaintPipeline). Against the host
/// loop on the same folder, with and without fixed buffers: one net with
/// CFG, two nets (the combine), a window that leaves steps to no net, guess
/// mode with CFG, and no guidance.
#[test]
fn controlnet_jobs_with_an_inpainting_unet_run_on_the_device_loop() {
    use kiln::pipeline::control::Control;
    let host = Model::load(&make_runtime(false).0, &common::inpaint9_controlnet_folder("device-host")).expect("inpaint9 ControlNet folder loads");
    let a = || Control::new("small", common::control_image("control_a.png"));
    let b = || Control::new("small", common::control_image("control_b.png"));
    let with = |controls: Vec<Control>, r: GenerateRequest| GenerateRequest { controls, ..r };
    let cases = [
        ("inpaint9_one_ddim_cfg_s1", with(vec![a()], inpaint_request(SchedulerKind::Ddim, 7.5, 6, 1.0))),
        ("inpaint9_two_dpmpp_2m_cfg_s075", with(vec![Control { scale: 0.6, ..a() }, Control { scale: 0.4, ..b() }], inpaint_request(SchedulerKind::DpmPP2M, 7.5, 6, 0.75))),
        ("inpaint9_window_euler_a_cfg_s1", with(vec![Control { end: 0.5, ..b() }], inpaint_request(SchedulerKind::EulerA, 7.5, 6, 1.0))),
        ("inpaint9_guess_euler_cfg_s1", GenerateRequest { guess_mode: true, ..with(vec![Control { scale: 0.9, ..a() }], inpaint_request(SchedulerKind::Euler, 7.5, 6, 1.0)) }),
        ("inpaint9_one_ddim_noguide_s06", with(vec![b()], inpaint_request(SchedulerKind::Ddim, 1.0, 6, 0.6))),
    ];
    for (tag, fixed) in [("device-inpaint9", false), ("device-inpaint9-fixed", true)] {
        let (rt, log) = make_runtime_with(true, fixed);
        let m = Model::load(&rt, &common::inpaint9_controlnet_folder(tag)).expect("inpaint9 ControlNet folder loads");
        compare_controlnet_cases(&host, &m, &log, if fixed { "fixed" } else { "own" }, &cases);
        // The control must matter, or none of the above shows anything.
        let plain = m.generate_with(&GenerateRequest { controls: Vec::new(), ..cases[0].1.clone() }, Hooks::default()).unwrap();
        let moved = common::max_abs_diff(&plain.image.data, &host.generate_with(&cases[0].1, Hooks::default()).unwrap().image.data);
        assert!(moved > 1e-2, "{tag}: the ControlNet moved the image by only {moved}");
    }
}

/// Per-stage residency with ControlNets on the device loop: the nets and
/// `unet_controlnet` are one stage, so both stay loaded through the loop; a
/// job's first preview decodes with the VAE, which releases them both
/// mid-loop, and each is bound again in its reopened session (a stale
/// ControlNet binding would run on a freed session, and the U-Net's new
/// binding must get the residuals, not the zeros it was first made with:
/// 6 levels off when that was missed). Same results as the host loop with
/// every graph resident, with and without fixed buffers.
#[test]
fn per_stage_residency_runs_controlnet_jobs_on_the_device_loop() {
    use kiln::pipeline::control::Control;
    let host = Model::load(&make_runtime(false).0, &common::controlnet_folder("per-stage-host")).expect("ControlNet folder loads");
    let a = || Control::new("tiny", common::control_image("control_a.png"));
    let b = || Control::new("tiny", common::control_image("control_b.png"));
    let one = GenerateRequest { controls: vec![a()], ..request(SchedulerKind::Euler, 5.0, 7) };
    let two = GenerateRequest {
        controls: vec![Control { scale: 0.5, ..a() }, Control { end: 0.5, ..b() }],
        ..request(SchedulerKind::DpmPP2M, 5.0, 6)
    };
    let want_job = host.generate_with(&one, Hooks::default()).unwrap().image.to_rgba8();
    for fixed in [false, true] {
        let tag = if fixed { "per-stage-device-fixed" } else { "per-stage-device" };
        let (rt, log) = make_runtime_full(true, fixed, kiln::model::Residency::PerStage);
        let model = Model::load(&rt, &common::controlnet_folder(tag)).expect("ControlNet folder loads");
        for (id, r) in [("controlnet_euler_cfg", &one), ("two_controlnets_dpmpp_2m_cfg", &two)] {
            let id = format!("per_stage{}_{id}", if fixed { "_fixed" } else { "" });
            let want = host.generate_with(r, Hooks::default()).expect("host loop");
            let got = model.generate_with(r, Hooks::default()).expect("device loop, per stage, ControlNets");
            assert_eq!(got.device_steps, want.timesteps.len(), "{id}: every U-Net call should have run in the device loop");
            compare_results(&id, &got, &want);
        }
        // A job with previews: the first decodes with the VAE, releasing the
        // nets and the U-Net; the residuals must be bound again with the U-Net.
        let pool = kiln::jobs::pool_for(model.runtime()).unwrap();
        let config = kiln::jobs::JobConfig { preview_interval: 2, observer: Some(Arc::new(Previews::default())), ..Default::default() };
        let before = log.lock().unwrap().len();
        let job = pool.submit(&model, one.clone(), config);
        assert_eq!(pool.wait(job, std::time::Duration::from_secs(120)).unwrap(), kiln::jobs::JobState::Succeeded, "{}", pool.error_message(job).unwrap());
        let pixels = pool.with_image(job, |image| Ok(image.pixels.clone())).unwrap();
        pool.release(job).unwrap();
        let lines = log.lock().unwrap()[before..].to_vec();
        assert!(lines.iter().any(|l| l == "latents: 7 steps with device-resident latents"), "{tag}: {lines:?}");
        assert!(lines.iter().any(|l| l.contains("session was reloaded") && l.contains("bound again")), "{tag}: the U-Net was never released mid-loop: {lines:?}");
        let net_opens = lines.iter().filter(|l| l.starts_with("controlnet: execution provider")).count();
        assert!(net_opens >= 2, "{tag}: the ControlNet was never released mid-loop ({net_opens} opens): {lines:?}");
        let worst = pixels.iter().zip(want_job.pixels.iter()).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
        common::check_margin(&format!("device_latents::{}_job_image_levels", tag.replace('-', "_")), worst as f64, 1.0);
    }
}

/// A job holds its model's fixed U-Net buffers for its whole loop, so a
/// second job on the model waits for them: that wait must still honour the
/// second job's cancel (the header promises a cancel within one graph call).
/// The first job is held inside its first step callback until the second
/// has ended; without the fix the second waited for the first forever.
#[test]
fn a_job_waiting_for_the_fixed_buffers_can_be_cancelled() {
    use std::sync::mpsc;
    use std::time::Duration;
    let (rt, _log) = make_runtime_full(true, true, kiln::model::Residency::AllResident);
    let model = Model::load(&rt, &common::fixture()).expect("model");
    let model = &model;
    let (entered_tx, entered_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let cancel = AtomicBool::new(false);
    std::thread::scope(|s| {
        let first = s.spawn(move || {
            let mut entered = Some(entered_tx);
            let mut on_step = |_: &kiln::pipeline::StepProgress<'_>| {
                if let Some(tx) = entered.take() {
                    tx.send(()).unwrap();
                    let _ = release_rx.recv();
                }
            };
            model.generate_with(&request(SchedulerKind::Euler, 5.0, 4), Hooks { on_step: Some(&mut on_step), ..Default::default() })
        });
        entered_rx.recv_timeout(Duration::from_secs(120)).expect("the first job reached its first step");
        let (done_tx, done_rx) = mpsc::channel();
        let cancel = &cancel;
        let second = s.spawn(move || {
            let r = model.generate_with(&request(SchedulerKind::Euler, 5.0, 4), Hooks { cancel: Some(cancel), ..Default::default() });
            let _ = done_tx.send(());
            r
        });
        // Time to reach the buffers' lock; cancelled earlier, it stops at an
        // earlier check, which is fine too.
        std::thread::sleep(Duration::from_millis(500));
        cancel.store(true, Ordering::SeqCst);
        let ended = done_rx.recv_timeout(Duration::from_secs(30));
        release_tx.send(()).unwrap();
        assert!(ended.is_ok(), "the cancelled job kept waiting for the other job's U-Net buffers");
        let e = second.join().unwrap().expect_err("cancelled");
        assert_eq!(e.kind(), kiln::ErrorKind::Cancelled, "{e}");
        first.join().unwrap().expect("the first job finishes once released");
    });
}

/// A generation started from a job's step hook on the same thread and model
/// (a Rust hook, or a C callback calling `kiln_model_generate`) would wait
/// for the fixed buffers its own caller holds, forever. It is refused with
/// BUSY instead, and the outer job finishes; from another thread the same
/// request still waits its turn (the test above). Without the check the
/// inner call never returned.
#[test]
fn a_generation_from_a_step_hook_on_the_same_model_is_refused_not_deadlocked() {
    use std::sync::mpsc;
    use std::time::Duration;
    let (rt, _log) = make_runtime_full(true, true, kiln::model::Residency::AllResident);
    let model = Model::load(&rt, &common::fixture()).expect("model");
    let (done_tx, done_rx) = mpsc::channel();
    // A detached thread: if the inner call hangs, the test fails on the timeout.
    std::thread::spawn(move || {
        let mut inner = None;
        let mut on_step = |_: &kiln::pipeline::StepProgress<'_>| {
            if inner.is_none() {
                inner = Some(model.generate_with(&request(SchedulerKind::Euler, 5.0, 2), Hooks::default()));
            }
        };
        let outer = model.generate_with(&request(SchedulerKind::Euler, 5.0, 4), Hooks { on_step: Some(&mut on_step), ..Default::default() });
        let _ = done_tx.send((outer.map(|g| g.device_steps), inner.map(|r| r.map(|g| g.device_steps))));
    });
    let (outer, inner) = done_rx.recv_timeout(Duration::from_secs(120)).expect("the nested generation returned instead of waiting for itself");
    let e = inner.expect("the hook ran").expect_err("refused");
    eprintln!("nested generation: {e}");
    assert_eq!(e.kind(), kiln::ErrorKind::Busy, "{e}");
    assert!(e.message().contains("step hook"), "{e}");
    assert_eq!(outer.expect("the outer job finishes"), 4, "the outer job ran every step on the device loop");
}

/// SDXL's added inputs live in fixed buffers too.
#[test]
fn fixed_buffers_run_sdxl() {
    let folder = common::root().join("tests/fixtures/tiny-sdxl");
    let host = Model::load(host_model().runtime(), &folder).expect("tiny SDXL loads");
    // A runtime of its own: its log must not reach the reuse test's counts.
    let (rt, _log) = make_runtime_with(true, true);
    let dev = Model::load(&rt, &folder).expect("tiny SDXL loads");
    let r = request(SchedulerKind::Euler, 5.0, 5);
    let want = host.generate_with(&r, Hooks::default()).expect("host loop");
    let got = dev.generate_with(&r, Hooks::default()).expect("device loop, fixed buffers");
    assert_eq!((want.device_steps, got.device_steps), (0, 5));
    compare_results("fixed_sdxl_euler_cfg", &got, &want);
}


/// tests/inpaint.rs's picture and mask (the mask repaints part of it).
fn inpaint_request(kind: SchedulerKind, guidance: f32, steps: usize, strength: f32) -> GenerateRequest {
    let (w, h, ch, buf) = common::png_samples(common::golden("ddim_cfg.png"));
    let init = kiln::pipeline::InitImage { width: w, height: h, rgb: buf.chunks(ch).flat_map(|p| [p[0], p[1], p[2]]).collect() };
    let (w, h, ch, buf) = common::png_samples(common::golden("inpaint/mask.png"));
    let mask = kiln::pipeline::Mask { width: w, height: h, data: buf.chunks(ch).map(|p| p[0]).collect() };
    GenerateRequest { init_image: Some(init), mask: Some(mask), strength, ..request(kind, guidance, steps) }
}

/// Inpainting as diffusers' StableDiffusionInpaintPipeline, in the device
/// loop: with the ordinary U-Net the step graph blends the kept area back on
/// the init latents noised to the next timestep (the scheduler's add_noise
/// coefficients cross per step, as two scalars); with the 9-channel
/// inpainting U-Net it appends the mask and the masked picture's latents to
/// every U-Net input. Same results as the host loop: start part-way and from
/// full strength, deterministic and stochastic schedulers, with and without
/// guidance.
#[test]
fn inpainting_runs_on_the_device_loop() {
    let blend_cases = [
        ("inpaint_blend_ddim_s075", inpaint_request(SchedulerKind::Ddim, 7.5, 8, 0.75)),
        ("inpaint_blend_euler_s1", inpaint_request(SchedulerKind::Euler, 7.5, 8, 1.0)),
        ("inpaint_blend_euler_a_s075", inpaint_request(SchedulerKind::EulerA, 7.5, 8, 0.75)),
        ("inpaint_blend_dpmpp_2m_noguide_s06", inpaint_request(SchedulerKind::DpmPP2M, 1.0, 8, 0.6)),
    ];
    for (id, r) in &blend_cases {
        compare(id, r);
    }
    let folder = common::variant_folder("inpaint9");
    let host = Model::load(host_model().runtime(), &folder).expect("inpaint9 loads");
    let dev = Model::load(device().0.runtime(), &folder).expect("inpaint9 loads");
    let unet_cases = [
        ("inpaint9_ddim_s075", inpaint_request(SchedulerKind::Ddim, 7.5, 8, 0.75)),
        ("inpaint9_euler_s1", inpaint_request(SchedulerKind::Euler, 7.5, 8, 1.0)),
        ("inpaint9_dpmpp_2m_sde_s1", inpaint_request(SchedulerKind::DpmPP2MSde, 7.5, 6, 1.0)),
        ("inpaint9_dpmpp_2m_noguide_s06", inpaint_request(SchedulerKind::DpmPP2M, 1.0, 8, 0.6)),
    ];
    for (id, r) in &unet_cases {
        let want = host.generate_with(r, Hooks::default()).expect("host loop");
        let got = dev.generate_with(r, Hooks::default()).expect("device loop");
        assert_eq!((want.device_steps, got.device_steps), (0, want.timesteps.len()), "{id}");
        compare_results(id, &got, &want);
    }
    // Through fixed buffers too (the CUDA graph replay path), 9-channel
    // inputs included.
    let (rt, _log) = make_runtime_with(true, true);
    let fixed9 = Model::load(&rt, &folder).expect("inpaint9 loads");
    let fixed4 = Model::load(&rt, &common::fixture()).expect("tiny fixture loads");
    for (id, model, host_model, r) in [
        ("fixed_inpaint9_euler_s1", &fixed9, &host, &unet_cases[1].1),
        ("fixed_inpaint_blend_ddim_s075", &fixed4, host_model(), &blend_cases[0].1),
    ] {
        let want = host_model.generate_with(r, Hooks::default()).expect("host loop");
        let got = model.generate_with(r, Hooks::default()).expect("device loop, fixed buffers");
        assert_eq!(got.device_steps, want.timesteps.len(), "{id}");
        compare_results(id, &got, &want);
    }
}

/// Per-stage residency: the U-Net's session is loaded for the loop like any
/// stage, and a job's preview that decodes with the VAE (the first preview
/// fits the latent projection with the VAE decoder) releases it mid-loop; the
/// loop then binds its tensors again in the reloaded session (logged) and the
/// results are the host loop's.
#[test]
fn per_stage_residency_runs_the_device_loop() {
    let (rt, log) = make_runtime_full(true, false, kiln::model::Residency::PerStage);
    let model = Model::load(&rt, &common::fixture()).expect("tiny fixture loads");
    let picture = kiln::pipeline::inputs::read_init_image(&common::golden("ddim_cfg.png")).expect("an init picture");
    for (id, r) in [
        ("per_stage_euler_cfg", request(SchedulerKind::Euler, 5.0, 6)),
        ("per_stage_img2img_dpmpp_2m", GenerateRequest { init_image: Some(picture), strength: 0.6, ..request(SchedulerKind::DpmPP2M, 5.0, 8) }),
        ("per_stage_inpaint_blend_euler_a", inpaint_request(SchedulerKind::EulerA, 7.5, 6, 0.75)),
    ] {
        let want = host_model().generate_with(&r, Hooks::default()).expect("host loop");
        let got = model.generate_with(&r, Hooks::default()).expect("device loop, per stage");
        assert_eq!(got.device_steps, want.timesteps.len(), "{id}: every U-Net call should have run in the device loop");
        compare_results(id, &got, &want);
    }
    // A job with previews: the first one loads the VAE decoder, which releases the U-Net.
    let previews = Arc::new(Previews::default());
    let pool = kiln::jobs::pool_for(model.runtime()).unwrap();
    let config = kiln::jobs::JobConfig { preview_interval: 2, observer: Some(previews.clone()), ..Default::default() };
    let before = log.lock().unwrap().len();
    let job = pool.submit(&model, request(SchedulerKind::Euler, 5.0, 7), config);
    assert_eq!(pool.wait(job, std::time::Duration::from_secs(120)).unwrap(), kiln::jobs::JobState::Succeeded);
    pool.release(job).unwrap();
    let lines = log.lock().unwrap()[before..].to_vec();
    assert!(lines.iter().any(|l| l == "latents: 7 steps with device-resident latents"), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("session was reloaded") && l.contains("bound again")), "the U-Net was never released mid-loop: {lines:?}");
    let on_device = previews.0.lock().unwrap().clone();
    let host_previews = Arc::new(Previews::default());
    let host_pool = kiln::jobs::pool_for(host_model().runtime()).unwrap();
    let config = kiln::jobs::JobConfig { preview_interval: 2, observer: Some(host_previews.clone()), ..Default::default() };
    let job = host_pool.submit(host_model(), request(SchedulerKind::Euler, 5.0, 7), config);
    assert_eq!(host_pool.wait(job, std::time::Duration::from_secs(120)).unwrap(), kiln::jobs::JobState::Succeeded);
    host_pool.release(job).unwrap();
    let on_host = host_previews.0.lock().unwrap().clone();
    assert_eq!(on_device.iter().map(|p| p.0).collect::<Vec<_>>(), on_host.iter().map(|p| p.0).collect::<Vec<_>>());
    assert!(!on_device.is_empty());
    for ((step, a), (_, b)) in on_device.iter().zip(&on_host) {
        let worst = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap_or(0);
        common::check_margin(&format!("device_latents::per_stage_job_preview_step{step}_levels"), worst as f64, 1.0);
    }
}
