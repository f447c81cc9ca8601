//! Shared checks of the base-to-refiner hand-off goldens
//! (tools/make_sdxl*_handoff_golden.py): every case records both stages'
//! timesteps, the latents at the hand-off, the final latents and the image.
use kiln::pipeline::{GenerateRequest, Generation, Hooks, StepProgress};
use kiln::Model;

/// The parity bounds of tests/sdxl.rs: latents relative, image absolute.
pub const LATENTS_BOUND: f64 = 1e-3;
pub const IMAGE_BOUND: f64 = 2e-3;

/// A case's timestep list `key` (`base_timesteps`, `refiner_timesteps`).
pub fn times(c: &serde_json::Value, key: &str) -> Vec<f64> {
    c[key].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect()
}

/// Relative difference of `got` from golden `file`'s values, by their largest magnitude.
pub fn relative(got: &[f32], file: &str) -> f64 {
    let (_, want) = super::read_npy(file);
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    (super::max_abs_diff(got, &want) / scale) as f64
}

/// One hand-off job: the latents after the base's `base_steps` steps, the
/// progress it reported (step, total) and the generation.
pub struct Run {
    pub handed: Vec<f32>,
    pub progress: Vec<(usize, usize)>,
    pub out: Generation,
}

pub fn run(model: &Model, request: &GenerateRequest, base_steps: usize) -> Run {
    let mut handed = None;
    let mut progress = Vec::new();
    let mut on_step = |p: &StepProgress<'_>| {
        progress.push((p.step, p.total));
        if p.step == base_steps {
            handed = Some(p.latents.iter().copied().collect::<Vec<f32>>());
        }
    };
    let out = model.generate_with(request, Hooks { on_step: Some(&mut on_step), ..Default::default() }).unwrap();
    Run { handed: handed.expect("the job reported the hand-off step"), progress, out }
}

/// Runs golden case `name` (of folder `golden`, its record `c`) on `model`
/// and checks it: one job's progress over both stages, both stages'
/// timesteps exactly, and the hand-off latents, final latents and image
/// within the bounds (margins recorded). Returns the run for further checks.
pub fn check_case(golden: &str, name: &str, c: &serde_json::Value, model: &Model, request: &GenerateRequest) -> Run {
    let (base_t, refiner_t) = (times(c, "base_timesteps"), times(c, "refiner_timesteps"));
    let run = run(model, request, base_t.len());
    let total = base_t.len() + refiner_t.len();
    assert_eq!(run.progress, (1..=total).map(|s| (s, total)).collect::<Vec<_>>(), "{name}: one job's progress");
    let want_t: Vec<f64> = base_t.iter().chain(&refiner_t).copied().collect();
    assert_eq!(run.out.timesteps, want_t, "{name}: both stages' timesteps");
    let handoff = relative(&run.handed, &format!("{golden}/{name}.handoff.npy"));
    let (latents, image) = final_misses(golden, name, &run.out);
    super::check_margin(&format!("{golden}::{name}::handoff_latents_rel"), handoff, LATENTS_BOUND);
    super::check_margin(&format!("{golden}::{name}::latents_rel"), latents, LATENTS_BOUND);
    super::check_margin(&format!("{golden}::{name}::image_abs"), image, IMAGE_BOUND);
    eprintln!(
        "{name}: base {} steps, refiner {}; hand-off latents {handoff:e}, final {latents:e} (bound {LATENTS_BOUND:e}), image {image:e} (bound {IMAGE_BOUND:e})",
        base_t.len(),
        refiner_t.len()
    );
    run
}

/// How far `out`'s final latents (relative) and image (absolute) are from case `name`'s.
pub fn final_misses(golden: &str, name: &str, out: &Generation) -> (f64, f64) {
    let latents = relative(&out.latents.iter().copied().collect::<Vec<_>>(), &format!("{golden}/{name}.latents.npy"));
    let (_, want_img) = super::read_npy(&format!("{golden}/{name}.image.npy"));
    (latents, super::max_abs_diff(&out.image.data, &want_img) as f64)
}

/// A runtime with device-resident latents (`ProviderPolicy::device_latents`).
pub fn device_latents_runtime() -> kiln::Runtime {
    let providers = kiln::runtime::ProviderPolicy { device_latents: true, ..Default::default() };
    kiln::Runtime::new(&kiln::RuntimeOptions { providers, ..Default::default() }).expect("runtime")
}

/// Case `name` run by `base` with `request` on the device loop: every step of
/// both stages there, final latents and image within the bounds.
pub fn check_device_loop_case(golden: &str, name: &str, c: &serde_json::Value, base: &Model, request: &GenerateRequest) {
    let out = base.generate_with(request, Hooks::default()).unwrap();
    let total = times(c, "base_timesteps").len() + times(c, "refiner_timesteps").len();
    assert_eq!(out.device_steps, total, "{name}: every step on the device loop");
    let (latents, image) = final_misses(golden, name, &out);
    super::check_margin(&format!("{golden}::device_loop::{name}::latents_rel"), latents, LATENTS_BOUND);
    super::check_margin(&format!("{golden}::device_loop::{name}::image_abs"), image, IMAGE_BOUND);
}

/// The refiner-style fixture assembled once per test process (`tag` keeps
/// test binaries from writing the same folder; one tag per process).
pub fn refiner_folder(tag: &str) -> &'static std::path::PathBuf {
    static F: std::sync::OnceLock<(String, std::path::PathBuf)> = std::sync::OnceLock::new();
    let (first, folder) = F.get_or_init(|| (tag.to_string(), super::sdxl_refiner_folder(tag)));
    assert_eq!(first, tag, "one refiner tag per test process");
    folder
}

/// The refiner fixture loaded once on the shared runtime.
pub fn refiner(tag: &str) -> &'static Model {
    static M: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    M.get_or_init(|| Model::load(super::runtime(), refiner_folder(tag)).expect("refiner fixture loads"))
}

/// tests/fixtures/tiny-sdxl loaded once on the shared runtime.
pub fn tiny_sdxl() -> &'static Model {
    static M: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    M.get_or_init(|| Model::load(super::runtime(), &super::root().join("tests/fixtures/tiny-sdxl")).expect("tiny-sdxl loads"))
}

/// What every hand-off case's request shares: its prompts, 64×64, steps,
/// guidance and scheduler, handing off to `to` at its `refiner_start`.
pub fn case_request(c: &serde_json::Value, to: &Model) -> GenerateRequest {
    GenerateRequest {
        prompt: c["prompt"].as_str().unwrap().to_string(),
        negative_prompt: c.get("negative_prompt").and_then(|v| v.as_str()).unwrap_or("").to_string(),
        width: 64,
        height: 64,
        steps: c["steps"].as_u64().unwrap() as usize,
        guidance_scale: c["guidance_scale"].as_f64().unwrap() as f32,
        scheduler: kiln::SchedulerKind::from_name(c["kiln_scheduler"].as_str().unwrap()).unwrap(),
        refiner: Some(kiln::pipeline::handoff::Refiner { model: to.clone(), start: c["refiner_start"].as_f64().unwrap() as f32 }),
        ..Default::default()
    }
}
