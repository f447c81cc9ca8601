//! `controlnet_bench`: what one and two ControlNets add to a denoising step.
//!
//! ```text
//! cargo run --release --example controlnet_bench -- --model DIR --controlnet NAME
//!     [--size 512] [--steps 4] [--rounds 3] [--guidance 7.5] [--threads 2] [--json FILE]
//!     [--plain-unet]
//! ```
//!
//! `DIR` is an export with Kiln's ControlNet layout (`unet_controlnet/` and
//! `controlnet/NAME/`; tools/make_controlnet_fixture.py --sd15-random makes a
//! full-size random SD 1.5 one). Three configurations: no ControlNet (which
//! in such a folder runs `unet_controlnet` with zero residuals), one
//! ControlNet, and two (the same ControlNet twice with different scales: each
//! runs its own batch-2 call, so the compute is that of two different
//! ControlNets; only the weights' memory is shared). `--plain-unet` adds a
//! fourth: no ControlNet through `unet/`, from a second model loaded from a
//! folder of links to `DIR`'s parts without `unet_controlnet/` and
//! `controlnet/` (what a plain job cost before `unet_controlnet` served plain
//! jobs too; it holds a second copy of the U-Net, so mind the memory).
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
    plain_unet: bool,
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
        plain_unet: false,
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
            "--plain-unet" => a.plain_unet = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.model.as_os_str().is_empty() || a.controlnet.is_empty() || a.steps < 2 || a.rounds == 0 || !a.size.is_multiple_of(8) {
        return Err("usage: controlnet_bench --model DIR --controlnet NAME [--size N (multiple of 8)] [--steps N>=2] \
                    [--rounds N>0] [--guidance G] [--threads N] [--json FILE] [--plain-unet]"
            .into());
    }
    Ok(a)
}

/// A configuration measured: its name, how many ControlNets run per step,
/// and whether it runs on the model without ControlNet parts (`unet/`).
type Config = (&'static str, usize, bool);

/// `dir`'s parts, but `unet_controlnet/` and `controlnet/`, linked into a
/// fresh folder beside the system's temporary files: the same model, whose
/// plain jobs run `unet/`.
#[cfg(unix)]
fn without_controlnet_parts(dir: &std::path::Path) -> std::io::Result<PathBuf> {
    let out = std::env::temp_dir().join(format!("kiln-controlnet-bench-plain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if !matches!(entry.file_name().to_str(), Some("unet_controlnet" | "controlnet")) {
            std::os::unix::fs::symlink(std::fs::canonicalize(entry.path())?, out.join(entry.file_name()))?;
        }
    }
    Ok(out)
}

#[cfg(not(unix))]
fn without_controlnet_parts(_: &std::path::Path) -> std::io::Result<PathBuf> {
    Err(std::io::Error::other("--plain-unet links folders, which this bench does only on Unix"))
}

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
    // Warnings, and which U-Net plain jobs run (the log says it once).
    let log: kiln::runtime::LogCallback = std::sync::Arc::new(|level, text: &str| {
        if level == kiln::runtime::LogLevel::Warning || text.starts_with("unet: plain") {
            eprintln!("kiln: {text}");
        }
    });
    let runtime = Runtime::new(&RuntimeOptions {
        intra_op_threads: a.threads,
        embedding_cache_entries: Some(0),
        log: Some(log),
        log_level: kiln::runtime::LogLevel::Info,
        ..Default::default()
    })?;
    let t = Instant::now();
    let model = Model::load(&runtime, &a.model)?;
    eprintln!("model loaded in {:.1} s", t.elapsed().as_secs_f64());
    let plain_model = match a.plain_unet {
        true => {
            let dir = without_controlnet_parts(&a.model).map_err(|e| kiln::Error::new(ErrorKind::Io, format!("--plain-unet: {e}")))?;
            Some(Model::load(&runtime, &dir)?)
        }
        false => None,
    };
    let mut configs: Vec<Config> = vec![("none", 0, false), ("one", 1, false), ("two", 2, false)];
    if plain_model.is_some() {
        configs.push(("none via unet/", 0, true));
    }
    let model_for = |c: &Config| if c.2 { plain_model.as_ref().unwrap_or(&model) } else { &model };
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
    for c in &configs {
        let (name, count, _) = *c;
        let t = Instant::now();
        step_times(model_for(c), &request_for(count), 2)?;
        eprintln!("warm-up {name}: {:.1} s (sessions load on first use)", t.elapsed().as_secs_f64());
    }
    let n = configs.len();
    let mut steps: Vec<Vec<f64>> = vec![Vec::new(); n];
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); n];
    for round in 0..a.rounds {
        let mut medians = vec![0.0; n];
        for k in 0..n {
            let i = (k + round) % n;
            let times = step_times(model_for(&configs[i]), &request_for(configs[i].1), a.steps)?;
            eprintln!("round {round} {}: steps {:?} s", configs[i].0, times.iter().map(|t| (t * 1000.0).round() / 1000.0).collect::<Vec<_>>());
            medians[i] = median(&times);
            steps[i].extend(times);
        }
        for i in 0..n {
            ratios[i].push(medians[i] / medians[0]);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "| ControlNets | step (median s, {}², guidance {}) | min–max s | / no ControlNet (median of {} rounds) | per round |",
        a.size, a.guidance, a.rounds
    );
    println!("| --- | --- | --- | --- | --- |");
    for (i, (name, _, _)) in configs.iter().enumerate() {
        let s = &steps[i];
        let (lo, hi) = s.iter().fold((f64::MAX, 0f64), |(l, h), &v| (l.min(v), h.max(v)));
        let per: Vec<String> = ratios[i].iter().map(|r| format!("{r:.3}")).collect();
        println!("| {name} | {:.3} | {lo:.3}–{hi:.3} | **{:.3}** | {} |", median(s), median(&ratios[i]), per.join(", "));
    }
    eprintln!("load average at the end: {}", load.trim());
    // The process's peak resident memory (Linux), the sessions' weights and arenas included.
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l["VmHWM:".len()..].trim().to_string()));
    eprintln!("peak resident memory: {}; sessions open: {}", peak.as_deref().unwrap_or("unknown"), model.loaded_sessions());
    if let Some(path) = &a.json {
        let report = serde_json::json!({
            "model": a.model.display().to_string(), "controlnet": a.controlnet, "size": a.size,
            "timed_steps_per_run": a.steps - 1, "rounds": a.rounds, "guidance": a.guidance, "threads": a.threads,
            "onnxruntime": runtime.onnxruntime_version(), "loadavg_end": load.trim(), "peak_rss": peak,
            "sessions_open": model.loaded_sessions(),
            "configs": configs.iter().enumerate().map(|(i, (name, count, plain))| serde_json::json!({
                "name": name, "controlnets": count, "plain_unet": plain, "step_s": stat(&steps[i]), "ratio_to_none": stat(&ratios[i]),
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
