//! `controlnet_bench`: what one and two ControlNets add to a denoising step.
//!
//! ```text
//! cargo run --release --example controlnet_bench -- --model DIR --controlnet NAME
//!     [--size 512] [--steps 4] [--rounds 3] [--guidance 7.5] [--threads 2] [--json FILE]
//! ```
//!
//! `DIR` is an export with Kiln's ControlNet layout (`unet_controlnet/` and
//! `controlnet/NAME/`; tools/make_controlnet_fixture.py --sd15-random makes a
//! full-size random SD 1.5 one). Three configurations: no ControlNet (the
//! plain `unet/`), one ControlNet, and two (the same ControlNet twice with
//! different scales: each runs its own batch-2 call, so the compute is that of
//! two different ControlNets; only the weights' memory is shared).
//!
//! A step's time is the interval between two consecutive step callbacks
//! (ControlNet calls, the U-Net call, guidance and the scheduler), so the text
//! encoder and the first step's session warm-up stay out of it; each run makes
//! `--steps` + 1 steps and is cancelled after the last timed one, so no VAE
//! decode is paid. One untimed warm-up run per configuration loads the
//! sessions. Rounds rotate the order of the configurations so that a shared
//! machine's changing load hits them alike; each round's one- and
//! two-ControlNet steps are also divided by that round's plain step. Reported:
//! medians (with min, max and every sample in the JSON).
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kiln::image::control::ControlImage;
use kiln::pipeline::control::Control;
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{ErrorKind, Model, Runtime, RuntimeOptions, SchedulerKind};

struct Args {
    model: PathBuf,
    controlnet: String,
    size: usize,
    steps: usize,
    rounds: usize,
    guidance: f32,
    threads: usize,
    json: Option<PathBuf>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        model: PathBuf::new(),
        controlnet: String::new(),
        size: 512,
        steps: 4,
        rounds: 3,
        guidance: 7.5,
        threads: 2,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<f64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--controlnet" => a.controlnet = value()?,
            "--size" => a.size = num(value()?)? as usize,
            "--steps" => a.steps = num(value()?)? as usize,
            "--rounds" => a.rounds = num(value()?)? as usize,
            "--guidance" => a.guidance = num(value()?)? as f32,
            "--threads" => a.threads = num(value()?)? as usize,
            "--json" => a.json = Some(value()?.into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.model.as_os_str().is_empty() || a.controlnet.is_empty() || a.steps < 2 || a.rounds == 0 || !a.size.is_multiple_of(8) {
        return Err("usage: controlnet_bench --model DIR --controlnet NAME [--size N (multiple of 8)] [--steps N>=2] \
                    [--rounds N>0] [--guidance G] [--threads N] [--json FILE]"
            .into());
    }
    Ok(a)
}

/// The configurations measured: how many ControlNets run per step.
const CONFIGS: [(&str, usize); 3] = [("none", 0), ("one", 1), ("two", 2)];

/// A control image with edges everywhere (a checker of 32-pixel squares).
fn control_image(size: usize) -> ControlImage {
    let data = (0..size * size).map(|i| if ((i % size) / 32 + (i / size) / 32).is_multiple_of(2) { 255 } else { 0 }).collect();
    ControlImage { width: size, height: size, channels: 1, data }
}

/// One run: `steps` + 1 steps, cancelled after the `steps`-th; returns the
/// `steps` − 1 intervals between consecutive step callbacks, in seconds.
fn step_times(model: &Model, request: &GenerateRequest, steps: usize) -> Result<Vec<f64>, kiln::Error> {
    let cancel = AtomicBool::new(false);
    let mut marks: Vec<Instant> = Vec::new();
    let mut on_step = |p: &kiln::pipeline::StepProgress<'_>| {
        marks.push(Instant::now());
        if p.step >= steps {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let request = GenerateRequest { steps: steps + 1, ..request.clone() };
    let hooks = Hooks { cancel: Some(&cancel), on_step: Some(&mut on_step), run_options: None, ..Default::default() };
    match model.generate_with(&request, hooks) {
        Err(e) if e.kind() == ErrorKind::Cancelled => {}
        Err(e) => return Err(e),
        Ok(_) => eprintln!("controlnet_bench: the run was not cancelled (it decoded once more; its steps still count)"),
    }
    Ok(marks.windows(2).take(steps - 1).map(|w| (w[1] - w[0]).as_secs_f64()).collect())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

/// Median, min, max and every sample.
fn stat(v: &[f64]) -> serde_json::Value {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    serde_json::json!({ "median": s[s.len() / 2], "min": s[0], "max": s[s.len() - 1], "all": v })
}

fn run(a: &Args) -> Result<(), kiln::Error> {
    let runtime = Runtime::new(&RuntimeOptions { intra_op_threads: a.threads, embedding_cache_entries: Some(0), ..Default::default() })?;
    let t = Instant::now();
    let model = Model::load(&runtime, &a.model)?;
    eprintln!("model loaded in {:.1} s", t.elapsed().as_secs_f64());
    let image = control_image(a.size);
    let request_for = |count: usize| GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        negative_prompt: "blurry".into(),
        width: a.size,
        height: a.size,
        guidance_scale: a.guidance,
        seed: 1,
        scheduler: SchedulerKind::Euler,
        controls: (0..count).map(|i| Control { scale: 1.0 - 0.3 * i as f32, ..Control::new(a.controlnet.clone(), image.clone()) }).collect(),
        ..Default::default()
    };
    for (name, count) in CONFIGS {
        let t = Instant::now();
        step_times(&model, &request_for(count), 2)?;
        eprintln!("warm-up {name}: {:.1} s (sessions load on first use)", t.elapsed().as_secs_f64());
    }
    let mut steps: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    for round in 0..a.rounds {
        let mut medians = [0.0; CONFIGS.len()];
        for k in 0..CONFIGS.len() {
            let i = (k + round) % CONFIGS.len();
            let times = step_times(&model, &request_for(CONFIGS[i].1), a.steps)?;
            eprintln!("round {round} {}: steps {:?} s", CONFIGS[i].0, times.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>());
            medians[i] = median(&times);
            steps[i].extend(times);
        }
        for i in 0..CONFIGS.len() {
            ratios[i].push(medians[i] / medians[0]);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "| ControlNets | step (median s, {}², guidance {}) | min–max s | / no ControlNet (median of {} rounds) | per round |",
        a.size, a.guidance, a.rounds
    );
    println!("| --- | --- | --- | --- | --- |");
    for (i, (name, _)) in CONFIGS.iter().enumerate() {
        let s = &steps[i];
        let (lo, hi) = s.iter().fold((f64::MAX, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
        let per: Vec<String> = ratios[i].iter().map(|r| format!("{r:.3}")).collect();
        println!("| {name} | {:.3} | {lo:.3}–{hi:.3} | **{:.3}** | {} |", median(s), median(&ratios[i]), per.join(", "));
    }
    eprintln!("load average at the end: {}", load.trim());
    if let Some(path) = &a.json {
        let report = serde_json::json!({
            "model": a.model.display().to_string(), "controlnet": a.controlnet, "size": a.size,
            "timed_steps_per_run": a.steps - 1, "rounds": a.rounds, "guidance": a.guidance, "threads": a.threads,
            "onnxruntime": runtime.onnxruntime_version(), "loadavg_end": load.trim(),
            "configs": CONFIGS.iter().enumerate().map(|(i, (name, count))| serde_json::json!({
                "name": name, "controlnets": count, "step_s": stat(&steps[i]), "ratio_to_none": stat(&ratios[i]),
            })).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap() + "\n")
            .map_err(|e| kiln::Error::new(ErrorKind::Io, format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("controlnet_bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("controlnet_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
