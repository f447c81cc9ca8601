//! `lora_bench`: what applying and switching LoRAs costs, against a full model load.
//!
//! ```text
//! cargo run --release --example lora_bench -- --model DIR --loras DIR [--repeats N] [--threads N] [--lora-slots] [--json FILE]
//! cargo run --release --example lora_bench -- --model DIR --loras DIR --memory-only kohya|peft [--json FILE]
//! ```
//!
//! `--loras DIR` holds `a.kohya.safetensors`, `a.peft.safetensors`,
//! `b.kohya.safetensors`, `b.peft.safetensors` (tools/make_sd15_lora.py).
//!
//! Time: after one untimed load that warms the page cache, `--repeats` rounds,
//! each timing a full `Model::load`, then per layout apply
//! (`base.with_loras([a])` from the plain model) and switch
//! (`view_a.with_loras([b])`), and once back to plain (`with_loras([])`).
//! Rounds alternate the measurements so a shared machine's changing load hits
//! them alike; each round's apply and switch are also divided by that round's
//! load. Reported: medians (with min, max and every sample in the JSON), the
//! part of apply spent merging weights (Kiln's own log line) before the
//! sessions are created, and the bytes the process read through read(2)
//! (`rchar`: memory-mapped pages are not counted).
//!
//! Memory (`--memory-only`, a fresh process per layout, because memory freed
//! by earlier views would be reused by the allocator and hide a view's cost):
//! VmRSS, RssAnon, RssFile and Pss (`/proc/self/smaps_rollup`, which counts a
//! file page mapped twice once) before loading, with the base model, plus
//! view a, plus view b. Linux only for the memory and read counters.
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kiln::{Model, Runtime, RuntimeOptions};

struct Args {
    model: PathBuf,
    loras: PathBuf,
    repeats: usize,
    threads: usize,
    json: Option<PathBuf>,
    memory_only: Option<String>,
    /// Load the model with LoRA slots (`ModelOptions::lora_slots`).
    lora_slots: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args { model: PathBuf::new(), loras: PathBuf::new(), repeats: 5, threads: 2, json: None, memory_only: None, lora_slots: false };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--loras" => a.loras = value()?.into(),
            "--repeats" => a.repeats = value()?.parse().map_err(|e| format!("--repeats: {e}"))?,
            "--threads" => a.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--json" => a.json = Some(value()?.into()),
            "--lora-slots" => a.lora_slots = true,
            "--memory-only" => a.memory_only = Some(value()?).filter(|f| FORMATS.contains(&f.as_str())).map(Some).ok_or("--memory-only: kohya or peft")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.model.as_os_str().is_empty() || a.loras.as_os_str().is_empty() || a.repeats == 0 {
        return Err("usage: lora_bench --model DIR --loras DIR [--repeats N>0] [--threads N] [--lora-slots] [--json FILE] [--memory-only kohya|peft]".into());
    }
    Ok(a)
}

/// Bytes this process has read through read(2) so far.
fn read_bytes() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    io.lines().find_map(|l| l.strip_prefix("rchar: ")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// (VmRSS, RssAnon, RssFile, Pss) in MiB.
fn memory() -> [f64; 4] {
    let kb = |text: &str, key: &str| -> f64 {
        text.lines().find(|l| l.starts_with(key)).and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<f64>().ok()).unwrap_or(f64::NAN) / 1024.0
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").unwrap_or_default();
    [kb(&status, "VmRSS:"), kb(&status, "RssAnon:"), kb(&status, "RssFile:"), kb(&rollup, "Pss:")]
}

#[derive(Default, Clone)]
struct Samples {
    seconds: Vec<f64>,
    read_mib: Vec<f64>,
    merge_seconds: Vec<f64>,
}

impl Samples {
    fn summary(&self) -> serde_json::Value {
        serde_json::json!({ "seconds": stat(&self.seconds), "read_mib": stat(&self.read_mib), "merge_seconds": stat(&self.merge_seconds) })
    }

    fn median(&self) -> f64 {
        median(&self.seconds)
    }

    fn extend(&mut self, other: &Samples) {
        self.seconds.extend(&other.seconds);
        self.read_mib.extend(&other.read_mib);
        self.merge_seconds.extend(&other.merge_seconds);
    }

    fn push(&mut self, seconds: f64, read: u64, merge: Option<f64>) {
        self.seconds.push(seconds);
        self.read_mib.push(read as f64 / 1048576.0);
        self.merge_seconds.extend(merge);
    }
}

/// Median, min, max and every sample.
fn stat(v: &[f64]) -> serde_json::Value {
    if v.is_empty() {
        return serde_json::Value::Null;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    serde_json::json!({ "median": s[s.len() / 2], "min": s[0], "max": s[s.len() - 1], "all": v })
}

/// The LoRA file layouts measured, each with its own a and b files.
const FORMATS: [&str; 2] = ["kohya", "peft"];

/// Runs `f` `n` times, timing each and counting the bytes read; `merge` reads
/// the merge seconds Kiln logged during the call, if any.
fn measure<T>(n: usize, merge: &dyn Fn() -> Option<f64>, mut f: impl FnMut() -> T) -> Samples {
    let mut s = Samples::default();
    for _ in 0..n {
        let (r0, t0) = (read_bytes(), Instant::now());
        let out = f();
        s.seconds.push(t0.elapsed().as_secs_f64());
        s.read_mib.push((read_bytes() - r0) as f64 / 1048576.0);
        if let Some(m) = merge() {
            s.merge_seconds.push(m);
        }
        drop(out);
    }
    s
}

fn main() -> std::process::ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("lora_bench: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lora_bench: {}", e.message());
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(a: &Args) -> Result<(), kiln::Error> {
    // "applied N LoRA(s): ... merged in X s, sessions ready after Y s"
    let last_merge: Arc<Mutex<Option<f64>>> = Arc::default();
    let sink = Arc::clone(&last_merge);
    let log: kiln::runtime::LogCallback = Arc::new(move |_level, line: &str| {
        if let Some(rest) = line.split(" merged in ").nth(1) {
            *sink.lock().unwrap() = rest.split(' ').next().and_then(|v| v.parse().ok());
        }
    });
    let rt = Runtime::new(&RuntimeOptions {
        intra_op_threads: a.threads,
        log: Some(log),
        log_level: kiln::runtime::LogLevel::Info,
        ..Default::default()
    })?;
    let merge = || last_merge.lock().unwrap().take();
    let lora = |name: &str, fmt: &str| -> PathBuf { a.loras.join(format!("{name}.{fmt}.safetensors")) };
    let model_mib: f64 = dir_size(&a.model) as f64 / 1048576.0;

    if let Some(fmt) = &a.memory_only {
        return memory_only(a, &rt, fmt);
    }
    eprintln!("warm-up load of {} ({model_mib:.0} MiB)", a.model.display());
    let options = kiln::ModelOptions { lora_slots: a.lora_slots, ..Default::default() };
    drop(Model::load_with(&rt, &a.model, &options)?);
    let base = Model::load_with(&rt, &a.model, &options)?;
    // Rounds alternate every measurement, so a shared machine's changing load
    // hits them alike; each round's times are also taken as ratios to that
    // round's full load.
    let mut load = Samples::default();
    let mut plain = Samples::default();
    let mut apply: Vec<Samples> = vec![Samples::default(); FORMATS.len()];
    let mut switch: Vec<Samples> = vec![Samples::default(); FORMATS.len()];
    let mut ratios: Vec<[Vec<f64>; 2]> = vec![Default::default(); FORMATS.len()];
    for round in 0..a.repeats {
        let l = measure(1, &|| None, || Model::load_with(&rt, &a.model, &options).expect("load"));
        let t_load = l.seconds[0];
        load.extend(&l);
        for (i, fmt) in FORMATS.iter().enumerate() {
            merge();
            let (r0, t0) = (read_bytes(), Instant::now());
            let view_a = base.with_loras(&[(lora("a", fmt), 1.0)])?;
            apply[i].push(t0.elapsed().as_secs_f64(), read_bytes() - r0, merge());
            let s = measure(1, &merge, || view_a.with_loras(&[(lora("b", fmt), 1.0)]).expect("switch"));
            switch[i].extend(&s);
            ratios[i][0].push(apply[i].seconds[round] / t_load);
            ratios[i][1].push(s.seconds[0] / t_load);
            if i == 0 {
                plain.extend(&measure(1, &merge, || view_a.with_loras::<&Path>(&[]).expect("plain")));
            }
        }
        eprintln!(
            "round {}: load {t_load:.2} s, apply {} s, switch {} s, to plain {:.2} s",
            round + 1,
            apply.iter().map(|x| format!("{:.2}", x.seconds[round])).collect::<Vec<_>>().join(" / "),
            switch.iter().map(|x| format!("{:.2}", x.seconds[round])).collect::<Vec<_>>().join(" / "),
            plain.seconds[round]
        );
    }
    let mut formats = serde_json::Map::new();
    let mut rows = Vec::new();
    for (i, fmt) in FORMATS.iter().enumerate() {
        rows.push(format!(
            "| {fmt} | {:.2} s ({:.2}x) | {:.2} s | {:.2} s ({:.2}x) | {:.0} / {:.0} MiB |",
            apply[i].median(),
            median(&ratios[i][0]),
            median(&apply[i].merge_seconds),
            switch[i].median(),
            median(&ratios[i][1]),
            median(&switch[i].read_mib),
            median(&load.read_mib),
        ));
        formats.insert(
            fmt.to_string(),
            serde_json::json!({
                "apply": apply[i].summary(),
                "switch": switch[i].summary(),
                "apply_over_load": stat(&ratios[i][0]),
                "switch_over_load": stat(&ratios[i][1]),
            }),
        );
    }
    let report = serde_json::json!({
        "model": a.model,
        "model_mib": model_mib,
        "repeats": a.repeats,
        "intra_op_threads": a.threads,
        "full_load": load.summary(),
        "to_plain_from_kohya_view": plain.summary(),
        "formats": formats,
    });
    println!(
        "full model load: median {:.2} s, read {:.0} MiB through read(2); back to plain from a kohya view: median {:.2} s",
        load.median(),
        median(&load.read_mib),
        plain.median()
    );
    println!("| LoRA file | apply (÷ load) | of which merging | switch a → b (÷ load) | read per switch / per load |");
    println!("| --- | --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).map_err(|e| kiln::Error::new(kiln::ErrorKind::Io, format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

/// A fresh process's memory: the base model alone, with view a, with views a and b.
/// (Measured apart from the timing rounds: memory they freed would be reused
/// by the allocator and hide a view's cost.)
fn memory_only(a: &Args, rt: &Runtime, fmt: &str) -> Result<(), kiln::Error> {
    let lora = |name: &str| -> PathBuf { a.loras.join(format!("{name}.{fmt}.safetensors")) };
    let start = memory();
    let base = Model::load_with(rt, &a.model, &kiln::ModelOptions { lora_slots: a.lora_slots, ..Default::default() })?;
    let with_base = memory();
    let view_a = base.with_loras(&[(lora("a"), 1.0)])?;
    let with_a = memory();
    let view_b = view_a.with_loras(&[(lora("b"), 1.0)])?;
    let with_b = memory();
    let (unet, text) = view_b.merged_initializers();
    let delta = |x: [f64; 4], y: [f64; 4]| -> Vec<f64> { x.iter().zip(y).map(|(p, q)| p - q).collect() };
    let report = serde_json::json!({
        "model": a.model,
        "format": fmt,
        "columns": ["VmRSS", "RssAnon", "RssFile", "Pss"],
        "mib_before_load": start,
        "mib_base": with_base,
        "mib_base_and_view_a": with_a,
        "mib_base_and_views_a_b": with_b,
        "base_model_mib": delta(with_base, start),
        "view_a_extra_mib": delta(with_a, with_base),
        "view_b_extra_mib": delta(with_b, with_a),
        "merged_initializers": { "unet": unet.len(), "text_encoder": text.len() },
    });
    println!(
        "{fmt}: base model {:.0} MiB RSS ({:.0} PSS); view a +{:.0} MiB RSS (+{:.0} PSS, +{:.0} anonymous); view b +{:.0} MiB RSS (+{:.0} PSS, +{:.0} anonymous); {} U-Net and {} text-encoder initializers merged",
        with_base[0] - start[0],
        with_base[3] - start[3],
        with_a[0] - with_base[0],
        with_a[3] - with_base[3],
        with_a[1] - with_base[1],
        with_b[0] - with_a[0],
        with_b[3] - with_a[3],
        with_b[1] - with_a[1],
        unet.len(),
        text.len()
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report).unwrap()).map_err(|e| kiln::Error::new(kiln::ErrorKind::Io, format!("{}: {e}", path.display())))?;
    }
    Ok(())
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    s[s.len() / 2]
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|it| {
            it.filter_map(|e| e.ok())
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
