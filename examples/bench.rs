//! `bench`: where the time and memory of a generation go.
//!
//! ```text
//! cargo run --release --example bench -- [--model DIR] [--size N] [--steps N] [--guidance G]
//!     [--runs N] [--warmup N] [--residency all|per-stage] [--seamless x|y|xy] [--attention auto|exported|fused] [--lora-slots] [--lora FILE:SCALE] [--threads N] [--graph-cache DIR] [--sequential-load]
//!     [--provider cuda,...] [--gpu-math fast|exact] [--static-unet] [--cuda-graph] [--device-latents] [--json FILE] [--markdown FILE]
//! ```
//!
//! Reports, for one process: model load (cold), the first image (cold) and the
//! mean of `--runs` warm images made after `--warmup` untimed ones (default 1:
//! on the SD 1.5 export the second image of a process still decodes ≈ 15 %
//! slower than later ones, so the first warm image is not a fair sample); per stage the time inside ONNX Runtime's run
//! calls (text encoder, each U-Net call, VAE decode); Kiln's overhead = wall
//! time − time inside ONNX Runtime (tokenizer, tensor conversion, scheduler,
//! guidance, post-processing); tokenizer and RGBA8 conversion on their own;
//! time to the first preview of a job; `kiln_job_poll` latency p50/p99 while a
//! job runs; images per minute; and the process's peak RSS (Linux VmHWM).
//! Per stage (text encoder, U-Net, VAE decoder) it also reports the peak memory
//! while that stage ran during the warm images: the process's resident set
//! (VmRSS sampled every 2 ms) and, when a CUDA provider is asked for and
//! `nvidia-smi` runs, the GPU's used memory (`nvidia-smi -lms 10`, the whole
//! device: run it alone on the GPU). Compare `--residency all` with
//! `--residency per-stage` for what per-stage residency saves. Samples are
//! taken, not traced: a spike shorter than the interval can be missed.
//! Ratios against another configuration come from running both in one script
//! (see `tools/bench_compare.py`), never from absolute numbers alone.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use kiln::jobs::{JobConfig, JobEvent, JobObserver};
use kiln::model::Residency;
use kiln::pipeline::{GenerateRequest, Hooks};
use kiln::{Model, Runtime, RuntimeOptions, SchedulerKind};

struct Args {
    model: PathBuf,
    size: usize,
    steps: usize,
    guidance: f32,
    runs: usize,
    warmup: usize,
    residency: Residency,
    threads: usize,
    json: Option<PathBuf>,
    markdown: Option<PathBuf>,
    seamless: kiln::model::seamless::Seamless,
    attention: kiln::model::attention::Attention,
    lora_slots: bool,
    loras: Vec<(PathBuf, f32)>,
    graph_cache: Option<PathBuf>,
    sequential_load: bool,
    providers: kiln::runtime::ProviderPolicy,
}

fn parse() -> Result<Args, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        model: root.join("tests/fixtures/tiny-sd"),
        size: 0,
        steps: 20,
        guidance: 7.5,
        runs: 5,
        warmup: 1,
        residency: Residency::AllResident,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        json: None,
        markdown: None,
        seamless: Default::default(),
        attention: Default::default(),
        lora_slots: false,
        loras: Vec::new(),
        graph_cache: None,
        sequential_load: false,
        providers: Default::default(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        let mut v = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        let num = |s: String| s.parse::<f64>().map_err(|_| format!("{flag}: {s:?} is not a number"));
        match flag.as_str() {
            "--model" => a.model = PathBuf::from(v()?),
            "--size" => a.size = num(v()?)? as usize,
            "--steps" => a.steps = num(v()?)? as usize,
            "--guidance" => a.guidance = num(v()?)? as f32,
            "--runs" => a.runs = (num(v()?)? as usize).max(1),
            "--warmup" => a.warmup = num(v()?)? as usize,
            "--threads" => a.threads = num(v()?)? as usize,
            "--residency" => {
                let name = v()?;
                a.residency = Residency::from_name(&name).ok_or_else(|| format!("--residency: unknown {name:?}"))?;
            }
            "--json" => a.json = Some(PathBuf::from(v()?)),
            "--seamless" => {
                let name = v()?;
                a.seamless = kiln::model::seamless::Seamless::from_name(&name).ok_or_else(|| format!("--seamless: {name:?}"))?;
            }
            "--attention" => {
                let name = v()?;
                a.attention = kiln::model::attention::Attention::from_name(&name).ok_or_else(|| format!("--attention: {name:?}"))?;
            }
            "--lora-slots" => a.lora_slots = true,
            "--lora" => {
                let spec = v()?;
                let (path, scale) = spec.rsplit_once(':').ok_or_else(|| format!("--lora: {spec:?} is not FILE:SCALE"))?;
                a.loras.push((PathBuf::from(path), scale.parse().map_err(|e| format!("--lora: {e}"))?));
            }
            "--markdown" => a.markdown = Some(PathBuf::from(v()?)),
            "--graph-cache" => a.graph_cache = Some(PathBuf::from(v()?)),
            "--sequential-load" => a.sequential_load = true,
            "--provider" => {
                a.providers.preferred.extend(kiln::runtime::Provider::list_from_names(&v()?).map_err(|e| format!("--provider: {e}"))?);
                // A benchmark that silently fell back to the CPU would measure the wrong thing.
                a.providers.require = true;
            }
            "--static-unet" => a.providers.static_unet = true,
            // Replay needs the static graph (ProviderPolicy::cuda_graph implies it).
            "--cuda-graph" => a.providers.cuda_graph = true,
            "--device-latents" => a.providers.device_latents = true,
            "--gpu-math" => {
                let name = v()?;
                a.providers.gpu_math = kiln::runtime::GpuMath::from_name(&name).ok_or_else(|| format!("--gpu-math: fast or exact, not {name:?}"))?;
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(a)
}

fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn current_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// The generation stages, in order, as `Model::graph_run_times` lists them.
const STAGES: [&str; 3] = ["text_encoder", "unet", "vae_decoder"];

/// Which stage of a generation is running, from the graphs' completed-call
/// counters: a run's calls of each stage are known from the first image, and a
/// counter moves when a call ends, so the running stage is the first one whose
/// calls in the current image are not all done.
#[derive(Clone)]
struct StageClock {
    model: Model,
    start: [u64; 3],
    per_image: [u64; 3],
}

impl StageClock {
    fn now(&self) -> usize {
        let counts = self.model.graph_run_times();
        let done: Vec<u64> = (0..3).map(|i| counts[i].1 - self.start[i]).collect();
        // Images finished so far: the last stage's calls tell.
        let image = done[2].checked_div(self.per_image[2]).unwrap_or(0);
        (0..3).find(|&i| done[i] < (image + 1) * self.per_image[i] && self.per_image[i] > 0).unwrap_or(2)
    }
}

/// Peak memory (MiB) seen per stage: resident set and GPU memory used.
#[derive(Default, Clone, Copy)]
struct StagePeak {
    rss: Option<f64>,
    gpu: Option<f64>,
}

/// Samples memory on background threads while the warm images run.
struct StageSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    peaks: std::sync::Arc<std::sync::Mutex<[StagePeak; 3]>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    nvidia_smi: Option<std::process::Child>,
    gpu_note: String,
}

impl StageSampler {
    fn start(clock: StageClock, gpu_device: Option<i32>) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let stop = Arc::new(AtomicBool::new(false));
        let peaks: Arc<Mutex<[StagePeak; 3]>> = Default::default();
        let mut threads = Vec::new();
        let (s, p, c) = (Arc::clone(&stop), Arc::clone(&peaks), clock.clone());
        threads.push(std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = current_rss_mib() {
                    let stage = c.now();
                    let mut peaks = p.lock().unwrap();
                    peaks[stage].rss = Some(peaks[stage].rss.map_or(rss, |v: f64| v.max(rss)));
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }));
        let mut nvidia_smi = None;
        let mut gpu_note = "no CUDA provider asked for".to_string();
        if let Some(device) = gpu_device {
            let spawned = std::process::Command::new("nvidia-smi")
                .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", &device.to_string(), "-lms", "10"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn();
            match spawned {
                Ok(mut child) => {
                    let out = child.stdout.take().expect("piped");
                    let (p, c) = (Arc::clone(&peaks), clock);
                    threads.push(std::thread::spawn(move || {
                        use std::io::BufRead;
                        for line in std::io::BufReader::new(out).lines() {
                            let Ok(line) = line else { break };
                            let Ok(mib) = line.trim().parse::<f64>() else { continue };
                            let stage = c.now();
                            let mut peaks = p.lock().unwrap();
                            peaks[stage].gpu = Some(peaks[stage].gpu.map_or(mib, |v: f64| v.max(mib)));
                        }
                    }));
                    gpu_note = format!("nvidia-smi memory.used of GPU {device}");
                    nvidia_smi = Some(child);
                }
                Err(e) => gpu_note = format!("nvidia-smi could not run: {e}"),
            }
        }
        Self { stop, peaks, threads, nvidia_smi, gpu_note }
    }

    fn finish(mut self) -> ([StagePeak; 3], String) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(mut child) = self.nvidia_smi.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let peaks = *self.peaks.lock().unwrap();
        (peaks, self.gpu_note.clone())
    }
}

/// GPU memory used now (MiB), for the baseline before the warm images.
fn gpu_used_mib(device: i32) -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args(["--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", &device.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct FirstPreview {
    at: std::sync::Mutex<Option<Instant>>,
}

impl JobObserver for FirstPreview {
    fn on_event(&self, _id: u64, event: &JobEvent<'_>) {
        if let JobEvent::Preview { .. } = event {
            self.at.lock().unwrap().get_or_insert_with(Instant::now);
        }
    }
}

fn main() -> std::process::ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&a) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), kiln::Error> {
    let runtime = Runtime::new(&RuntimeOptions {
        intra_op_threads: a.threads,
        residency: a.residency,
        // The benchmark measures the text encoder each run, so no cache.
        embedding_cache_entries: Some(0),
        graph_cache_dir: a.graph_cache.clone(),
        sequential_load: a.sequential_load,
        providers: a.providers.clone(),
        ..Default::default()
    })?;
    let t = Instant::now();
    let options = kiln::ModelOptions { attention: a.attention, lora_slots: a.lora_slots, ..Default::default() };
    let mut model = Model::load_with(&runtime, &a.model, &options)?.seamless(a.seamless)?;
    if !a.loras.is_empty() {
        let started = Instant::now();
        model = model.with_loras(&a.loras)?;
        eprintln!("LoRAs applied in {:.3} s ({:?} layers fed to slots)", started.elapsed().as_secs_f64(), model.lora_fed_layers());
    }
    let load_s = t.elapsed().as_secs_f64();
    let request = GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        negative_prompt: "blurry".into(),
        width: a.size,
        height: a.size,
        steps: a.steps,
        guidance_scale: a.guidance,
        seed: 1,
        scheduler: SchedulerKind::Euler,
        ..Default::default()
    };

    let t = Instant::now();
    let counts_at_start = model.graph_run_times();
    let first = model.generate_with(&request, Hooks::default())?;
    let first_image_s = t.elapsed().as_secs_f64();
    let counts_after_first = model.graph_run_times();
    for _ in 0..a.warmup {
        model.generate_with(&request, Hooks::default())?;
    }
    let before = model.graph_run_times();
    let gpu_device = a.providers.preferred.contains(&kiln::runtime::Provider::Cuda).then_some(a.providers.device_id);
    let baseline = (current_rss_mib(), gpu_device.and_then(gpu_used_mib));
    let clock = StageClock {
        model: model.clone(),
        start: [before[0].1, before[1].1, before[2].1],
        per_image: [0, 1, 2].map(|i| counts_after_first[i].1 - counts_at_start[i].1),
    };
    let sampler = StageSampler::start(clock, gpu_device);

    let mut walls = Vec::new();
    let mut rgba_s = 0.0;
    for _ in 0..a.runs {
        let t = Instant::now();
        let out = model.generate_with(&request, Hooks::default())?;
        let t2 = Instant::now();
        let _ = out.image.to_rgba8();
        rgba_s += t2.elapsed().as_secs_f64();
        walls.push(t.elapsed().as_secs_f64());
    }
    let after = model.graph_run_times();
    let (stage_peaks, gpu_note) = sampler.finish();
    let runs = a.runs as f64;
    let warm_s = walls.iter().sum::<f64>() / runs;
    let stage = |i: usize| -> (f64, f64) {
        let calls = (after[i].1 - before[i].1) as f64 / runs;
        let secs = (after[i].2 - before[i].2) / runs;
        (calls, secs)
    };
    let (te_calls, te_s) = stage(0);
    let (unet_calls, unet_s) = stage(1);
    let (vae_calls, vae_s) = stage(2);
    let ort_s = te_s + unet_s + vae_s;
    let overhead_s = warm_s - ort_s;

    let tokenizer = model.tokenizer();
    let t = Instant::now();
    let n_tok = 2000;
    for i in 0..n_tok {
        let _ = tokenizer.encode(if i % 2 == 0 { &request.prompt } else { "weathered oak planks, highly detailed" })?;
    }
    let tokenize_us = t.elapsed().as_secs_f64() * 1e6 / n_tok as f64;

    // Time to first preview, and poll latency while that job runs.
    let observer = std::sync::Arc::new(FirstPreview { at: std::sync::Mutex::new(None) });
    let submitted = Instant::now();
    let pool = kiln::jobs::pool_for(&runtime)?;
    let job = pool.submit(
        &model,
        request.clone(),
        JobConfig { priority: 0, preview_interval: 1, observer: Some(observer.clone()) },
    );
    let mut polls = Vec::new();
    let mut progress = kiln::ffi::job::kiln_job_progress {
        struct_size: std::mem::size_of::<kiln::ffi::job::kiln_job_progress>() as u32,
        ..Default::default()
    };
    loop {
        let t = Instant::now();
        // SAFETY: `progress` is a valid, sized struct.
        let status = unsafe { kiln::ffi::job::kiln_job_poll(job, &mut progress) };
        polls.push(t.elapsed().as_secs_f64() * 1e6);
        if status != kiln::ffi::kiln_status::Ok || progress.state >= 2 {
            break;
        }
        // A game polls once a frame; poll far more often to gather samples.
        std::thread::sleep(Duration::from_micros(200));
    }
    let first_preview_ms = observer.at.lock().unwrap().map(|t| (t - submitted).as_secs_f64() * 1e3);
    pool.release(job)?;
    polls.sort_by(f64::total_cmp);

    let peak = peak_rss_mib();
    let size = first.image.width;
    let report = serde_json::json!({
        "model": a.model.display().to_string(),
        "size": size,
        "steps": a.steps,
        "guidance": a.guidance,
        "runs": a.runs,
        "warmup": a.warmup,
        "threads": a.threads,
        "residency": format!("{:?}", a.residency),
        "seamless": format!("{:?}", a.seamless),
        "attention": a.attention.name(),
        "onnxruntime": runtime.onnxruntime_version(),
        "unet_provider": model.graph_providers()[1].1.describe(),
        // U-Net calls of the first image that kept their latents on the device (0 = host loop).
        "device_latent_steps": first.device_steps,
        "cold": { "model_load_s": load_s, "first_image_s": first_image_s },
        "graph_cache": a.graph_cache.as_ref().map(|d| {
            let s = runtime.graph_cache_stats();
            serde_json::json!({ "dir": d.display().to_string(), "hits": s.hits, "writes": s.writes, "rejected": s.rejected, "skipped": s.skipped })
        }),
        "warm": {
            "image_s": warm_s,
            "images_per_minute": 60.0 / warm_s,
            "inside_onnxruntime_s": ort_s,
            "kiln_overhead_s": overhead_s,
            "kiln_overhead_pct": 100.0 * overhead_s / warm_s,
            "text_encoder": { "calls": te_calls, "s": te_s },
            "unet": { "calls": unet_calls, "s": unet_s, "per_call_s": unet_s / unet_calls.max(1.0) },
            "vae_decoder": { "calls": vae_calls, "s": vae_s },
            "rgba8_conversion_s": rgba_s / runs,
        },
        "tokenize_us": tokenize_us,
        "first_preview_ms": first_preview_ms,
        "job_poll_us": { "samples": polls.len(), "p50": percentile(&polls, 0.5), "p99": percentile(&polls, 0.99), "max": polls.last() },
        "peak_rss_mib": peak,
        "stage_memory": {
            "residency": format!("{:?}", a.residency),
            "baseline_rss_mib": baseline.0,
            "baseline_gpu_mib": baseline.1,
            "gpu_source": gpu_note,
            "stages": STAGES.iter().zip(stage_peaks.iter()).map(|(name, p)| {
                serde_json::json!({ "stage": name, "peak_rss_mib": p.rss, "peak_gpu_mib": p.gpu })
            }).collect::<Vec<_>>(),
        },
    });
    let mib = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.0} MiB"));
    let mut stage_md = format!(
        "\nPeak memory per stage over the warm images (residency {:?}; before them: RSS {}, GPU {}; GPU: {gpu_note}):\n\n\
         | stage | peak RSS | peak GPU memory used |\n| --- | --- | --- |\n",
        a.residency,
        mib(baseline.0),
        mib(baseline.1)
    );
    for (name, p) in STAGES.iter().zip(stage_peaks.iter()) {
        stage_md.push_str(&format!("| {name} | {} | {} |\n", mib(p.rss), mib(p.gpu)));
    }
    let md = format!(
        "| metric | value |\n| --- | --- |\n\
         | model load (cold) | {load_s:.3} s{} |\n| first image (cold) | {first_image_s:.3} s |\n\
         | image (warm, mean of {}) | {warm_s:.4} s ({:.1} images/min) |\n\
         | inside ONNX Runtime | {ort_s:.4} s (text encoder {te_s:.4}, U-Net {unet_s:.4} over {unet_calls:.0} calls, VAE {vae_s:.4}) |\n\
         | Kiln overhead | {overhead_s:.4} s ({:.1} %) |\n| tokenize one prompt | {tokenize_us:.1} µs |\n\
         | first preview after submit | {} |\n| kiln_job_poll p50 / p99 | {:.2} / {:.2} µs ({} samples) |\n\
         | peak RSS | {} |\n{stage_md}",
        a.graph_cache.as_ref().map_or(String::new(), |_| {
            let s = runtime.graph_cache_stats();
            format!(" (graph cache: {} hits, {} written)", s.hits, s.writes)
        }),
        a.runs,
        60.0 / warm_s,
        100.0 * overhead_s / warm_s,
        first_preview_ms.map_or("n/a".into(), |v| format!("{v:.1} ms")),
        percentile(&polls, 0.5),
        percentile(&polls, 0.99),
        polls.len(),
        peak.map_or("n/a".into(), |v| format!("{v:.0} MiB")),
    );
    println!("{}x{}, {} steps, guidance {}, {} threads, residency {:?}\n\n{md}", size, size, a.steps, a.guidance, a.threads, a.residency);
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_string_pretty(&report).unwrap())
            .map_err(|e| kiln::Error::new(kiln::ErrorKind::Io, format!("{}: {e}", p.display())))?;
    }
    if let Some(p) = &a.markdown {
        std::fs::write(p, md).map_err(|e| kiln::Error::new(kiln::ErrorKind::Io, format!("{}: {e}", p.display())))?;
    }
    Ok(())
}
