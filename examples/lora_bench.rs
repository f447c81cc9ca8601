//! `lora_bench`: what applying and switching LoRAs costs, against a full model load.
//!
//! ```text
//! cargo run --release --example lora_bench -- --model DIR --loras DIR [--repeats N] [--threads N] [--json FILE]
//! ```
//!
//! `--loras DIR` holds `a.kohya.safetensors`, `a.peft.safetensors`,
//! `b.kohya.safetensors`, `b.peft.safetensors` (tools/make_sd15_lora.py). In one
//! process, after one untimed load that warms the page cache, it measures
//! `--repeats` times each (reporting the median, min and max):
//! - a full `Model::load`;
//! - apply: `base.with_loras([a])` from the plain model;
//! - switch: `view_a.with_loras([b])`, and back to plain (`with_loras([])`);
//!
//! and for each the bytes the process read through read(2) (`rchar`: pages
//! that are memory-mapped are not counted), and for apply the part spent
//! merging weights (Kiln's own log line) before the sessions are created. Memory:
//! VmRSS, RssAnon, RssFile and Pss (`/proc/self/smaps_rollup`, which counts a
//! file page mapped twice once) with the base model alone, plus view a, plus
//! view b. Linux only for the memory and read counters.
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
}

fn parse() -> Result<Args, String> {
    let mut a = Args { model: PathBuf::new(), loras: PathBuf::new(), repeats: 5, threads: 2, json: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--model" => a.model = value()?.into(),
            "--loras" => a.loras = value()?.into(),
            "--repeats" => a.repeats = value()?.parse().map_err(|e| format!("--repeats: {e}"))?,
            "--threads" => a.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?,
            "--json" => a.json = Some(value()?.into()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.model.as_os_str().is_empty() || a.loras.as_os_str().is_empty() || a.repeats == 0 {
        return Err("usage: lora_bench --model DIR --loras DIR [--repeats N>0] [--threads N] [--json FILE]".into());
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
        let stat = |v: &[f64]| {
            if v.is_empty() {
                return serde_json::Value::Null;
            }
            let mut s = v.to_vec();
            s.sort_by(|a, b| a.total_cmp(b));
            serde_json::json!({ "median": s[s.len() / 2], "min": s[0], "max": s[s.len() - 1], "all": v })
        };
        serde_json::json!({ "seconds": stat(&self.seconds), "read_mib": stat(&self.read_mib), "merge_seconds": stat(&self.merge_seconds) })
    }

    fn median(&self) -> f64 {
        let mut s = self.seconds.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        s[s.len() / 2]
    }
}

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

    eprintln!("warm-up load of {} ({model_mib:.0} MiB)", a.model.display());
    drop(Model::load(&rt, &a.model)?);
    eprintln!("full loads x{}", a.repeats);
    let load = measure(a.repeats, &|| None, || Model::load(&rt, &a.model).expect("load"));
    eprintln!("  median {:.2} s", load.median());
    let base = Model::load(&rt, &a.model)?;
    let mem_base = memory();

    let mut formats = serde_json::Map::new();
    let mut rows = Vec::new();
    for fmt in ["kohya", "peft"] {
        eprintln!("{fmt}: apply x{}", a.repeats);
        let apply = measure(a.repeats, &merge, || base.with_loras(&[(lora("a", fmt), 1.0)]).expect("apply"));
        eprintln!("  median {:.2} s", apply.median());
        let before_a = memory();
        let view_a = base.with_loras(&[(lora("a", fmt), 1.0)])?;
        merge();
        let with_a = memory();
        eprintln!("{fmt}: switch a -> b x{}", a.repeats);
        let switch = measure(a.repeats, &merge, || view_a.with_loras(&[(lora("b", fmt), 1.0)]).expect("switch"));
        eprintln!("  median {:.2} s", switch.median());
        let to_plain = measure(a.repeats, &merge, || view_a.with_loras::<&Path>(&[]).expect("plain"));
        let view_b = view_a.with_loras(&[(lora("b", fmt), 1.0)])?;
        merge();
        let with_b = memory();
        let (unet, text) = view_b.merged_initializers();
        let merged = (unet.len(), text.len());
        drop(view_b);
        drop(view_a);
        let delta = |x: [f64; 4], y: [f64; 4]| -> Vec<f64> { x.iter().zip(y).map(|(p, q)| p - q).collect() };
        rows.push(format!(
            "| {fmt} | {:.2} s ({:.2}x) | {:.2} s | {:.2} s ({:.2}x) | {:.2} s ({:.2}x) | {:.0} / {:.0} MiB | {:.0} / {:.0} MiB | {:.0} / {:.0} MiB |",
            apply.median(),
            apply.median() / load.median(),
            median(&apply.merge_seconds),
            switch.median(),
            switch.median() / load.median(),
            to_plain.median(),
            to_plain.median() / load.median(),
            with_a[0] - before_a[0],
            with_a[3] - before_a[3],
            with_b[0] - with_a[0],
            with_b[3] - with_a[3],
            median(&switch.read_mib),
            median(&load.read_mib),
        ));
        formats.insert(
            fmt.into(),
            serde_json::json!({
                "apply": apply.summary(),
                "switch": switch.summary(),
                "to_plain": to_plain.summary(),
                "merged_initializers": { "unet": merged.0, "text_encoder": merged.1 },
                "memory_mib_before_view_a": before_a,
                "memory_mib_with_view_a": with_a,
                "memory_mib_with_view_b": with_b,
                "view_a_extra_mib": delta(with_a, before_a),
                "view_b_extra_mib": delta(with_b, with_a),
            }),
        );
    }
    let report = serde_json::json!({
        "model": a.model,
        "model_mib": model_mib,
        "repeats": a.repeats,
        "intra_op_threads": a.threads,
        "memory_columns": ["VmRSS", "RssAnon", "RssFile", "Pss"],
        "full_load": load.summary(),
        "memory_mib_base_model": mem_base,
        "formats": formats,
    });
    println!("full model load: median {:.2} s, read {:.0} MiB through read(2)", load.median(), median(&load.read_mib));
    println!("| LoRA file | apply | of which merging | switch a → b | back to plain | view a: RSS / PSS | view b: RSS / PSS | read per switch / per load |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in rows {
        println!("{r}");
    }
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
