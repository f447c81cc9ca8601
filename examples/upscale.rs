//! Upscales an existing image with a super-resolution graph (ESRGAN family):
//!
//! ```sh
//! cargo run --release --example upscale -- --graph realesrgan-x4.onnx --in brick.png --seamless xy --out brick-4x.png
//! ```
use std::path::PathBuf;
use std::process::ExitCode;

use kiln::model::seamless::Seamless;
use kiln::model::upscaler::{UpscaleAlpha, UpscaleOptions, Upscaler};
use kiln::runtime::{Runtime, RuntimeOptions};

const USAGE: &str = "usage: upscale --graph PATH --in FILE.png [options]
  --graph PATH            super-resolution graph: a folder with model.onnx (+ config.json) or an ONNX
                          file (+ the .json of its name); one float [1, 3, H, W] RGB input in 0..1,
                          output [1, 3, sH, sW]
  --in FILE.png           image to upscale (RGB or RGBA)
  --out FILE.png          output image (default: upscaled.png)
  --seamless x|y|xy       the image tiles along these axes: windows wrap, so the result tiles too
  --tile N                tile side in input pixels (default 256; 0 = whole image at once)
  --context N             pixels read around each tile and discarded (default 16)
  --alpha graph|bilinear  how transparency is upscaled (default graph)
  --repeat N              upscale N times and report the mean time of the runs after the first
  --threads N             threads per graph (default: all cores)
  --provider LIST         execution providers, best first: cpu,cuda,tensorrt,directml,coreml
  --onnxruntime PATH      ONNX Runtime library to load (default: search)";

struct Args {
    graph: PathBuf,
    input: PathBuf,
    out: PathBuf,
    options: UpscaleOptions,
    repeat: usize,
    threads: usize,
    providers: kiln::runtime::ProviderPolicy,
    onnxruntime: Option<PathBuf>,
}

fn parse(argv: &[String]) -> Result<Option<Args>, String> {
    let mut a = Args {
        graph: PathBuf::new(),
        input: PathBuf::new(),
        out: PathBuf::from("upscaled.png"),
        options: UpscaleOptions::default(),
        repeat: 1,
        threads: 0,
        providers: Default::default(),
        onnxruntime: None,
    };
    let mut it = argv.iter();
    while let Some(flag) = it.next() {
        if flag == "--help" || flag == "-h" {
            return Ok(None);
        }
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u32>().map_err(|_| format!("{flag}: {v:?} is not a whole number"));
        match flag.as_str() {
            "--graph" => a.graph = PathBuf::from(value()?),
            "--in" => a.input = PathBuf::from(value()?),
            "--out" => a.out = PathBuf::from(value()?),
            "--seamless" => {
                let v = value()?;
                a.options.seamless = Seamless::from_name(&v).ok_or_else(|| format!("--seamless: {v:?} is not x, y, xy or none"))?;
            }
            "--tile" => a.options.tile = number(value()?)?,
            "--context" => a.options.context = number(value()?)?,
            "--alpha" => {
                a.options.alpha = match value()?.as_str() {
                    "graph" => UpscaleAlpha::Graph,
                    "bilinear" => UpscaleAlpha::Bilinear,
                    v => return Err(format!("--alpha: {v:?} is not graph or bilinear")),
                }
            }
            "--repeat" => a.repeat = number(value()?)?.max(1) as usize,
            "--threads" => a.threads = number(value()?)? as usize,
            "--provider" => a.providers.preferred.extend(kiln::runtime::Provider::list_from_names(&value()?).map_err(|e| format!("--provider: {e}"))?),
            "--onnxruntime" => a.onnxruntime = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if a.graph.as_os_str().is_empty() || a.input.as_os_str().is_empty() {
        return Err("--graph and --in are required".into());
    }
    Ok(Some(a))
}

fn run(a: &Args) -> Result<(), kiln::Error> {
    let runtime = Runtime::new(&RuntimeOptions {
        onnxruntime_path: a.onnxruntime.clone(),
        intra_op_threads: a.threads,
        providers: a.providers.clone(),
        ..Default::default()
    })?;
    let t0 = std::time::Instant::now();
    let upscaler = Upscaler::load(&runtime, &a.graph)?;
    let load_s = t0.elapsed().as_secs_f64();
    let image = kiln::pipeline::inputs::read_rgba(&a.input)?;
    let tiles = upscaler.tiles(image.width, image.height, &a.options);
    let mut times = Vec::with_capacity(a.repeat);
    let mut out = None;
    for _ in 0..a.repeat {
        let t = std::time::Instant::now();
        let mut report = |done: usize, total: usize| eprint!("\rtile {done}/{total}");
        out = Some(upscaler.upscale_with_progress(&image, &a.options, &mut report)?);
        times.push(t.elapsed().as_secs_f64());
        eprintln!();
    }
    let out = out.expect("at least one run");
    out.save_png(&a.out)?;
    // Linux: the process's peak resident memory, what tiling bounds.
    let peak = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|t| t.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(String::new(), |kib| format!(", peak RSS {} MiB", kib / 1024));
    let warm = if times.len() > 1 { &times[1..] } else { &times[..] };
    let mean = warm.iter().sum::<f64>() / warm.len() as f64;
    println!(
        "wrote {} ({}x{}, {}x, {tiles} tiles of {}) in {mean:.3}s (mean of {} run(s){}; load {load_s:.2}s on {}{peak})",
        a.out.display(),
        out.width,
        out.height,
        upscaler.scale(),
        a.options.tile,
        warm.len(),
        if times.len() > 1 { " after the first" } else { "" },
        upscaler.provider().describe()
    );
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    match parse(&argv) {
        Ok(None) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Some(a)) => match run(&a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}
