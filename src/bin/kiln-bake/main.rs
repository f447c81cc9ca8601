//! `kiln-bake`: bakes the textures and sprites of a TOML manifest into files an
//! engine imports directly (PNG with settings, DDS with wrap-aware mip chains,
//! sprite atlases), resumably, on one machine or split over many.
//!
//! ```text
//! kiln-bake MANIFEST.toml --out DIR [--shard I/N] [--force] [--dry-run] [--prune] [--report FILE.json]
//! ```
mod atlas;
mod dds;
#[cfg(kiln_ispc_kernels)]
mod ispc;
mod manifest;
mod progress;
mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln::jobs::{JobPool, JobState, JobWork};
use kiln::image::seam::{seam_score, Axis};
use kiln::model::seamless::Seamless;
use kiln::model::matting::Matting;
use kiln::model::upscaler::Upscaler;
use kiln::pipeline::outputs::{self, PostProcess};
use kiln::model::attention::Attention;
use kiln::model::quantize::Quantization;
use kiln::{Model, ModelOptions, Runtime, RuntimeOptions};

use manifest::{Asset, Format, Manifest};
use progress::Progress;

const USAGE: &str = "usage: kiln-bake MANIFEST.toml --out DIR [options]
  --out DIR            where the outputs, their .kiln-key files and atlases go (created if missing)
  --shard I/N          bake only the assets whose stable name hash falls in shard I of N (1-based);
                       N machines or CI jobs with I = 1..N bake disjoint sets that together cover all
  --force              bake even assets whose key says they are up to date
  --dry-run            validate and say what would be baked or skipped; generate nothing
  --report FILE.json   write {\"assets\": [{name, status, outputs, seconds, error}]} there
  --prune              after the bake, remove what earlier bakes wrote to DIR that the manifest no
                       longer makes (assets and atlases taken out, outputs turned off or renamed);
                       only files listed in DIR's .kiln-key files; not with --shard; with
                       --dry-run it lists what would go if every asset baked
  --onnxruntime PATH   ONNX Runtime library to load (default: search)
  --threads N          threads per graph (default: all cores)
  --version            print kiln-bake's version, whether it writes DDS, and the ONNX Runtime it
                       finds (with --onnxruntime: that one); exit 1 when none loads
  --help               this text
Exit status: 0 when every asset baked or was skipped, 1 when any failed, 2 for a bad command
line or manifest, 130 when interrupted (Ctrl-C cancels the running job; run again to resume).";

struct Args {
    manifest: PathBuf,
    out: PathBuf,
    shard: Option<(u32, u32)>,
    force: bool,
    dry_run: bool,
    prune: bool,
    report: Option<PathBuf>,
    onnxruntime: Option<PathBuf>,
    threads: usize,
}

/// What the command line asks for.
enum Command {
    Help,
    /// `--version`, with the `--onnxruntime` given beside it.
    Version(Option<PathBuf>),
    Bake(Args),
}

fn parse_args(argv: &[String]) -> Result<Command, String> {
    let mut manifest = None;
    let mut out = None;
    let mut a = Args {
        manifest: PathBuf::new(),
        out: PathBuf::new(),
        shard: None,
        force: false,
        dry_run: false,
        prune: false,
        report: None,
        onnxruntime: None,
        threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    };
    let mut version = false;
    let mut it = argv.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--help" | "-h" => return Ok(Command::Help),
            "--version" => version = true,
            "--out" => out = Some(PathBuf::from(value()?)),
            "--shard" => {
                let v = value()?;
                let parsed = v.split_once('/').and_then(|(i, n)| Some((i.parse::<u32>().ok()?, n.parse::<u32>().ok()?)));
                match parsed {
                    Some((i, n)) if n >= 1 && (1..=n).contains(&i) => a.shard = Some((i, n)),
                    _ => return Err(format!("--shard: {v:?} is not I/N with 1 <= I <= N")),
                }
            }
            "--force" => a.force = true,
            "--dry-run" => a.dry_run = true,
            "--prune" => a.prune = true,
            "--report" => a.report = Some(PathBuf::from(value()?)),
            "--onnxruntime" => a.onnxruntime = Some(PathBuf::from(value()?)),
            "--threads" => {
                let v = value()?;
                a.threads = v.parse().ok().filter(|&n| n >= 1).ok_or_else(|| format!("--threads: {v:?} is not a positive number"))?;
            }
            s if s.starts_with('-') => return Err(format!("unknown option {s:?}")),
            s if manifest.is_none() => manifest = Some(PathBuf::from(s)),
            s => return Err(format!("one manifest only; {s:?} is extra")),
        }
    }
    if version {
        return Ok(Command::Version(a.onnxruntime));
    }
    if a.prune && a.shard.is_some() {
        // A shard knows only its part of the manifest: the rest would look stale.
        return Err("--prune needs the whole manifest: run it without --shard (the gather run)".into());
    }
    a.manifest = manifest.ok_or("no MANIFEST.toml given")?;
    a.out = out.ok_or("--out DIR is required")?;
    Ok(Command::Bake(a))
}

/// `--version`: what a build machine checks before a bake, the ONNX Runtime
/// above all, since the search may find another copy than the one meant.
fn print_version(onnxruntime: Option<PathBuf>) -> ExitCode {
    let dds = if cfg!(kiln_ispc_kernels) { "DDS (BC1/BC3/BC4/BC5/BC7) and PNG" } else { "PNG only (no ISPC kernels in this build)" };
    println!("kiln-bake {}: writes {dds}", kiln::VERSION);
    match Runtime::new(&RuntimeOptions { onnxruntime_path: onnxruntime, ..Default::default() }) {
        Ok(rt) => {
            println!("ONNX Runtime {} from {}", rt.onnxruntime_version(), rt.onnxruntime_path().display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("ONNX Runtime: none loads: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One line of the JSON report.
#[derive(Debug, serde::Serialize)]
struct Entry {
    name: String,
    /// `baked`, `skipped`, `failed`, or `planned` in a dry run.
    status: &'static str,
    outputs: Vec<String>,
    seconds: f64,
    error: Option<String>,
    /// What went as asked but may not be what was meant (a `source` picture
    /// marked seamless that does not tile); left out when there is none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
}

impl Entry {
    /// An entry without warnings (only a baked or failed asset can have them).
    fn new(name: &str, status: &'static str, outputs: Vec<String>, seconds: f64, error: Option<String>) -> Self {
        Entry { name: name.to_string(), status, outputs, seconds, error, warnings: Vec::new() }
    }
}

#[derive(Debug, serde::Serialize)]
struct Report {
    assets: Vec<Entry>,
    atlases: Vec<Entry>,
    /// With `--prune`: the files removed (in a dry run, those that would be).
    #[serde(skip_serializing_if = "Option::is_none")]
    pruned: Option<Vec<String>>,
}

/// Set by Ctrl-C; the running job is cancelled through Kiln and nothing new starts.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(Command::Bake(a)) => a,
        Ok(Command::Version(onnxruntime)) => return print_version(onnxruntime),
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("kiln-bake: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let manifest = match manifest::load(&args.manifest) {
        Ok(m) => m,
        Err(errors) => {
            for e in &errors {
                eprintln!("kiln-bake: {}: {e}", args.manifest.display());
            }
            eprintln!("kiln-bake: {} error(s) in the manifest; nothing was baked", errors.len());
            return ExitCode::from(2);
        }
    };
    match bake(&args, &manifest) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("kiln-bake: {e}");
            ExitCode::FAILURE
        }
    }
}

/// An asset that needs baking, with its key.
struct Todo<'a> {
    asset: &'a Asset,
    key: String,
}

fn bake(args: &Args, manifest: &Manifest) -> Result<ExitCode, String> {
    let out = &args.out;
    // A dry run changes nothing on disk.
    if !args.dry_run {
        std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
        let stale = store::remove_stale_temporaries(out).map_err(|e| format!("cannot clean {}: {e}", out.display()))?;
        if stale > 0 {
            eprintln!("kiln-bake: removed {stale} temporary file(s) left by an interrupted bake");
        }
    }
    // What earlier bakes wrote, read before this one rewrites the key files.
    let earlier = if args.prune { store::key_files(out) } else { Vec::new() };
    let selected: Vec<&Asset> = manifest
        .assets
        .iter()
        .filter(|a| args.shard.is_none_or(|(i, n)| store::in_shard(&a.name, i, n)))
        .collect();
    if let Some((i, n)) = args.shard {
        eprintln!("kiln-bake: shard {i}/{n}: {} of {} assets", selected.len(), manifest.assets.len());
    }

    // Keys first: they need each model's and LoRA's identity, not the model itself.
    let mut identities: HashMap<PathBuf, Result<String, String>> = HashMap::new();
    let mut lora_identities: HashMap<PathBuf, Result<String, String>> = HashMap::new();
    let mut embedding_identities: HashMap<PathBuf, Result<String, String>> = HashMap::new();
    let mut picture_identities: HashMap<PathBuf, Result<String, String>> = HashMap::new();
    let mut upscaler_identities: HashMap<PathBuf, Result<String, String>> = HashMap::new();
    let mut entries: Vec<Entry> = Vec::new();
    let mut todo: Vec<Todo<'_>> = Vec::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    for asset in &selected {
        let identity = match &asset.source {
            Some(source) => source_identities(asset, source, &mut picture_identities, &mut identities, &mut upscaler_identities),
            None => generated_identities(asset, &mut identities, &mut lora_identities, &mut embedding_identities, &mut picture_identities, &mut upscaler_identities),
        };
        let paths = asset.outputs().iter().map(|o| out.join(o).display().to_string()).collect();
        match identity {
            Err(e) => entries.push(Entry::new(&asset.name, "failed", vec![], 0.0, Some(e))),
            Ok(ids) => {
                let key = store::content_key(asset, &ids);
                keys.insert(asset.name.clone(), key.clone());
                if !args.force && store::is_current(out, &asset.name, &key) {
                    entries.push(Entry::new(&asset.name, "skipped", paths, 0.0, None));
                } else {
                    if args.dry_run {
                        entries.push(Entry::new(&asset.name, "planned", paths, 0.0, None));
                    }
                    todo.push(Todo { asset, key });
                }
            }
        }
    }
    if args.dry_run {
        for e in &entries {
            println!("{:8} {}", e.status, e.name);
        }
        let atlases = if args.shard.is_some() { vec![] } else { manifest.atlases.iter().map(|a| planned(&a.name)).collect() };
        let pruned = args.prune.then(|| prune(manifest, &earlier, &[], out, false));
        for f in pruned.iter().flatten() {
            println!("prune    {f}");
        }
        write_report(args, &Report { assets: entries, atlases, pruned })?;
        return Ok(ExitCode::SUCCESS);
    }

    let mut progress = Progress::new(selected.len());
    for e in &entries {
        progress.finish(&match &e.error {
            None => format!("{}: skipped (up to date)", e.name),
            Some(err) => format!("{}: failed: {err}", e.name),
        });
    }
    let _ = ctrlc::set_handler(|| {
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            // A second Ctrl-C: leave now (temporaries are cleaned next time).
            std::process::exit(130);
        }
    });

    let runtime = match todo.is_empty() {
        true => None,
        false => Some(Runtime::new(&RuntimeOptions { onnxruntime_path: args.onnxruntime.clone(), intra_op_threads: args.threads, ..Default::default() })),
    };
    if let Some(Err(e)) = &runtime {
        // Nothing can bake; the report still says why for every asset.
        for Todo { asset, .. } in &todo {
            progress.finish(&format!("{}: failed: ONNX Runtime: {e}", asset.name));
            entries.push(failed(asset, format!("ONNX Runtime: {e}"), 0.0));
        }
    }
    if let Some(Ok(runtime)) = &runtime {
        // All assets of one model in a row, so it loads once, and within it all
        // assets of one LoRA set in a row, so its view is built once and dropped
        // before the next one is made; file order otherwise.
        let mut order: Vec<usize> = (0..todo.len()).collect();
        let first_of: HashMap<ModelKey<'_>, usize> = todo.iter().enumerate().rev().map(|(i, t)| (model_key(t.asset), i)).collect();
        let first_of_set: HashMap<LoraGroup<'_>, usize> =
            todo.iter().enumerate().rev().map(|(i, t)| ((model_key(t.asset), lora_set(t.asset)), i)).collect();
        order.sort_by_key(|&i| {
            let a = todo[i].asset;
            (first_of[&model_key(a)], first_of_set[&(model_key(a), lora_set(a))], i)
        });
        // Models by folder, quantization and attention (an int8 load is another model).
        let mut models: HashMap<ModelKey<'_>, Result<Model, String>> = HashMap::new();
        // Refiner models, each loaded once (plain; a seamless asset takes a view),
        // and their views with an asset's embeddings (SDXL's `clip_g` into the
        // refiner's one encoder, so it reads the token the model reads).
        let mut refiners: HashMap<ModelKey<'_>, Result<Model, String>> = HashMap::new();
        let mut refiner_views: HashMap<(ModelKey<'_>, EmbeddingSet), Result<Model, String>> = HashMap::new();
        // Upscalers, each loaded once for the run (by path) on the same runtime.
        let mut upscalers: HashMap<&Path, Result<Arc<Upscaler>, String>> = HashMap::new();
        // Matting graphs of `source` sprites, each loaded once for the run.
        let mut mattings: HashMap<PathBuf, Result<Matting, String>> = HashMap::new();
        // The LoRA view of the group being baked (model, LoRA set), or why it could not be made.
        let mut lora_view: Option<(LoraGroup<'_>, Result<Model, String>)> = None;
        for i in order {
            let Todo { asset, key } = &todo[i];
            if INTERRUPTED.load(Ordering::SeqCst) {
                entries.push(failed(asset, "interrupted before it started (Ctrl-C)".into(), 0.0));
                continue;
            }
            let upscaler = asset.upscale.as_ref().map(|u| {
                upscalers
                    .entry(u.path.as_path())
                    .or_insert_with(|| {
                        progress.log(&format!("loading upscaler {}", u.path.display()));
                        let load = JobWork::LoadUpscaler { runtime: runtime.clone(), path: u.path.clone() };
                        make_with_job(runtime, load, "the upscaler load", JobPool::upscaler).map_err(|e| format!("upscaler {}: {e}", u.path.display()))
                    })
                    .as_ref()
                    .map_err(Clone::clone)
            });
            if let Some(source) = &asset.source {
                // A picture as it is: no model loads; a sprite takes its model's
                // matting graph (loaded once per run) or the chroma key.
                let matting = source_matting(asset).map(|dir| {
                    mattings
                        .entry(dir.clone())
                        .or_insert_with(|| {
                            progress.log(&format!("loading matting graph {}", dir.display()));
                            Matting::load(runtime, &dir).map_err(|e| format!("matting graph {}: {e}", dir.display()))
                        })
                        .as_ref()
                        .map_err(Clone::clone)
                });
                let t0 = Instant::now();
                progress.start(&asset.name, &format!("finishing {}", source.display()));
                let mut warnings = Vec::new();
                let result = match (upscaler.transpose(), matting.transpose()) {
                    (Ok(upscaler), Ok(matting)) => bake_source(runtime, source, matting, upscaler, asset, key, out, &mut progress, &mut warnings),
                    (Err(e), _) | (_, Err(e)) => Err(e),
                };
                record(&mut entries, &mut progress, asset, result, t0.elapsed().as_secs_f64(), warnings);
                continue;
            }
            let model = models.entry(model_key(asset)).or_insert_with(|| {
                // Load the graphs most of this model's assets use, so an all-seamless set
                // never holds the plain U-Net (other axes come as views of it).
                let axes = most_common_axes(todo.iter().map(|t| t.asset).filter(|a| a.source.is_none() && model_key(a) == model_key(asset)));
                let q = asset.quantization;
                let weights = if q == Quantization::None { String::new() } else { format!(", {} weights", q.name()) };
                progress.log(&format!("loading model {} (seamless {axes:?}{weights})", asset.model.display()));
                let options = ModelOptions { seamless: axes, matting: None, quantization: q, attention: asset.attention, lora_slots: asset.lora_slots };
                let load = JobWork::LoadModel { runtime: runtime.clone(), dir: asset.model.clone(), options };
                make_with_job(runtime, load, "the model load", JobPool::model).map_err(|e| format!("model {}: {e}", asset.model.display()))
            });
            let set = lora_set(asset);
            let model: Result<&Model, String> = match model {
                Err(e) => Err(e.clone()),
                Ok(base) if set.0.is_empty() && set.1.is_empty() => Ok(base),
                Ok(base) => {
                    let group = (model_key(asset), set);
                    if lora_view.as_ref().is_none_or(|(g, _)| *g != group) {
                        drop(lora_view.take()); // free the previous view's merged weights first
                        let names = asset
                            .loras
                            .iter()
                            .map(|l| match l.text_encoder_scale {
                                Some(t) => format!("LoRA {} scale {} (text encoders {t})", l.path.display(), l.scale),
                                None => format!("LoRA {} scale {}", l.path.display(), l.scale),
                            })
                            .chain(asset.embeddings.iter().map(|e| format!("embedding {}", e.path.display())))
                            .collect::<Vec<_>>()
                            .join(", ");
                        progress.log(&format!("merging {names} into {}", asset.model.display()));
                        let work = JobWork::WithAdapters { model: base.clone(), adapters: adapters(asset, true) };
                        let view = make_with_job(runtime, work, "the LoRA merge", JobPool::model).map_err(|e| format!("{names}: {e}"));
                        lora_view = Some((group, view));
                    }
                    lora_view.as_ref().expect("just set").1.as_ref().map_err(Clone::clone)
                }
            };
            let refiner = asset.refiner.as_deref().map(|dir| {
                // LoRAs adapt the base, never the refiner: it loads without slots.
                let plain = refiners.entry((dir, asset.quantization, asset.attention, false)).or_insert_with(|| {
                    progress.log(&format!("loading refiner model {}", dir.display()));
                    let options = ModelOptions { quantization: asset.quantization, attention: asset.attention, ..Default::default() };
                    let load = JobWork::LoadModel { runtime: runtime.clone(), dir: dir.to_path_buf(), options };
                    make_with_job(runtime, load, "the refiner load", JobPool::model).map_err(|e| format!("refiner model {}: {e}", dir.display()))
                });
                match plain {
                    Ok(plain) if !asset.embeddings.is_empty() => refiner_views
                        .entry(((dir, asset.quantization, asset.attention, false), asset.embeddings.clone()))
                        .or_insert_with(|| {
                            let names = asset.embeddings.iter().map(|e| e.path.display().to_string()).collect::<Vec<_>>().join(", ");
                            progress.log(&format!("adding embedding {names} to refiner model {}", dir.display()));
                            let work = JobWork::WithAdapters { model: plain.clone(), adapters: adapters(asset, false) };
                            make_with_job(runtime, work, "the refiner's embeddings", JobPool::model)
                                .map_err(|e| format!("refiner model {} with embedding {names}: {e}", dir.display()))
                        })
                        .as_ref()
                        .map_err(Clone::clone),
                    plain => plain.as_ref().map_err(Clone::clone),
                }
            });
            let t0 = Instant::now();
            progress.start(&asset.name, "generating");
            let result = match (model, refiner.transpose(), upscaler.transpose()) {
                (Ok(model), Ok(refiner), Ok(upscaler)) => bake_one(runtime, model, refiner, upscaler, asset, key, out, &mut progress),
                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
            };
            record(&mut entries, &mut progress, asset, result, t0.elapsed().as_secs_f64(), Vec::new());
        }
    }
    progress.close();

    // Atlases come from the baked PNGs, so they need every member: an unsharded run
    // (which skips the assets the shards already baked) makes them.
    let mut atlases = Vec::new();
    for atlas in &manifest.atlases {
        if args.shard.is_some() {
            atlases.push(Entry::new(&atlas.name, "skipped", vec![], 0.0, Some("atlases are made by a run without --shard, after the shards".into())));
            continue;
        }
        atlases.push(bake_atlas(atlas, manifest, &keys, &entries, out, args.force));
    }
    for a in &atlases {
        if a.status != "skipped" || a.error.is_none() {
            eprintln!("kiln-bake: atlas {}: {}{}", a.name, a.status, a.error.as_ref().map_or(String::new(), |e| format!(": {e}")));
        }
    }

    // Report in manifest order.
    let rank: HashMap<&str, usize> = manifest.assets.iter().enumerate().map(|(i, a)| (a.name.as_str(), i)).collect();
    entries.sort_by_key(|e| rank[e.name.as_str()]);
    let count = |s: &str| entries.iter().chain(&atlases).filter(|e| e.status == s).count();
    let (baked, skipped, failed_n) = (count("baked"), count("skipped"), count("failed"));
    eprintln!("kiln-bake: {baked} baked, {skipped} skipped, {failed_n} failed");
    let pruned = match (args.prune, INTERRUPTED.load(Ordering::SeqCst)) {
        (false, _) => None,
        (true, true) => {
            eprintln!("kiln-bake: interrupted: nothing pruned");
            Some(Vec::new())
        }
        (true, false) => {
            let failed: Vec<&str> = entries.iter().chain(&atlases).filter(|e| e.status == "failed").map(|e| e.name.as_str()).collect();
            let removed = prune(manifest, &earlier, &failed, out, true);
            for f in &removed {
                eprintln!("kiln-bake: pruned {}", out.join(f).display());
            }
            Some(removed)
        }
    };
    write_report(args, &Report { assets: entries, atlases, pruned })?;
    Ok(if INTERRUPTED.load(Ordering::SeqCst) {
        eprintln!("kiln-bake: interrupted; run the same command again to finish");
        ExitCode::from(130)
    } else if failed_n > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The identities of the files a generated asset is made from, each file
/// read once per run through its cache.
fn generated_identities(
    asset: &Asset,
    identities: &mut HashMap<PathBuf, Result<String, String>>,
    lora_identities: &mut HashMap<PathBuf, Result<String, String>>,
    embedding_identities: &mut HashMap<PathBuf, Result<String, String>>,
    picture_identities: &mut HashMap<PathBuf, Result<String, String>>,
    upscaler_identities: &mut HashMap<PathBuf, Result<String, String>>,
) -> Result<store::Identities, String> {
    let id = identities
        .entry(asset.model.clone())
        .or_insert_with(|| store::model_identity(&asset.model).map_err(|e| format!("cannot read model {}: {e}", asset.model.display())))
        .clone()?;
    let loras = file_identities(lora_identities, asset.loras.iter().map(|l| l.path.as_path()), "LoRA")?;
    let embeddings = file_identities(embedding_identities, asset.embeddings.iter().map(|e| e.path.as_path()), "embedding")?;
    let controls = file_identities(picture_identities, asset.controls.iter().map(|c| c.image.as_path()), "control image")?;
    // The picture and mask it starts from (read once per run, as control images are).
    let mut one_picture = |path: &Option<PathBuf>, what: &str| {
        path.as_deref().map(|p| file_identities(picture_identities, std::iter::once(p), what).map(|mut ids| ids.remove(0))).transpose()
    };
    let init_image = one_picture(&asset.init_image, "init image")?;
    let mask = one_picture(&asset.mask, "mask")?;
    // A refiner's files are part of what the asset is made from.
    let model = match &asset.refiner {
        None => id,
        Some(dir) => {
            let refiner = identities
                .entry(dir.clone())
                .or_insert_with(|| store::model_identity(dir).map_err(|e| format!("cannot read refiner model {}: {e}", dir.display())))
                .clone()?;
            format!("{id} refiner {refiner}")
        }
    };
    // The upscaler's files (its tile and context are in the settings).
    let upscaler = upscaler_identity(upscaler_identities, asset)?;
    Ok(store::Identities { model, loras, embeddings, controls, upscaler, init_image, mask, source: None })
}

/// The identities of the files a `source` asset is made from: the picture,
/// the upscaler's, and what cuts its sprite out (its model's matting graph,
/// or the chroma key).
fn source_identities(
    asset: &Asset,
    source: &Path,
    picture_identities: &mut HashMap<PathBuf, Result<String, String>>,
    identities: &mut HashMap<PathBuf, Result<String, String>>,
    upscaler_identities: &mut HashMap<PathBuf, Result<String, String>>,
) -> Result<store::Identities, String> {
    let picture = file_identities(picture_identities, std::iter::once(source), "source picture")?.remove(0);
    let cutout = match (asset.sprite, source_matting(asset)) {
        (false, _) => String::new(),
        (true, None) => "chroma key".into(),
        (true, Some(dir)) => {
            let id = identities
                .entry(dir.clone())
                .or_insert_with(|| store::model_identity(&dir).map_err(|e| format!("cannot read matting graph {}: {e}", dir.display())))
                .clone()?;
            format!("matting {id}")
        }
    };
    Ok(store::Identities { model: cutout, upscaler: upscaler_identity(upscaler_identities, asset)?, source: Some(picture), ..Default::default() })
}

/// The matting graph a `source` sprite is cut out with: its model folder's
/// `matting/`, when it names a model that has one (as a generated sprite's).
fn source_matting(asset: &Asset) -> Option<PathBuf> {
    let dir = asset.model.join("matting");
    (asset.sprite && !asset.model.as_os_str().is_empty() && dir.is_dir()).then_some(dir)
}

/// The identity of the asset's upscaler's files, when it is upscaled.
fn upscaler_identity(cache: &mut HashMap<PathBuf, Result<String, String>>, asset: &Asset) -> Result<Option<String>, String> {
    asset
        .upscale
        .as_ref()
        .map(|u| cache.entry(u.path.clone()).or_insert_with(|| store::upscaler_identity(&u.path).map_err(|e| format!("cannot read upscaler {}: {e}", u.path.display()))).clone())
        .transpose()
}

/// The identities (`store::file_identity`) of `paths`, each read once per
/// run through `cache`; `what` names the kind of file in the error.
fn file_identities<'p>(cache: &mut HashMap<PathBuf, Result<String, String>>, paths: impl Iterator<Item = &'p Path>, what: &str) -> Result<Vec<String>, String> {
    paths
        .map(|p| {
            cache
                .entry(p.to_path_buf())
                .or_insert_with(|| store::file_identity(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display())))
                .clone()
        })
        .collect()
}

/// An asset's embeddings as a comparable set, in manifest order.
type EmbeddingSet = Vec<manifest::AssetEmbedding>;

/// An asset's adapters as a comparable set: its LoRAs (file, scale bits) and
/// its embeddings, in manifest order.
type LoraSet = (Vec<(PathBuf, u32, Option<u32>)>, EmbeddingSet);

/// The assets that share one adapter view: a model folder and an adapter set.
/// A model folder as loaded: with its weights as float or int8, its attention
/// fused or not, with LoRA slots or without.
type ModelKey<'a> = (&'a Path, Quantization, Attention, bool);

fn model_key(asset: &Asset) -> ModelKey<'_> {
    (asset.model.as_path(), asset.quantization, asset.attention, asset.lora_slots)
}

type LoraGroup<'a> = (ModelKey<'a>, LoraSet);

fn lora_set(asset: &Asset) -> LoraSet {
    (asset.loras.iter().map(|l| (l.path.clone(), l.scale.to_bits(), l.text_encoder_scale.map(f32::to_bits))).collect(), asset.embeddings.clone())
}

/// The asset's embeddings, and its LoRAs when `loras` (a refiner takes only
/// the embeddings: LoRAs are made for the model's U-Net).
fn adapters(asset: &Asset, loras: bool) -> kiln::model::Adapters {
    kiln::model::Adapters {
        loras: if loras { asset.loras.iter().map(|l| kiln::model::LoraSpec { path: l.path.clone(), scale: l.scale, text_encoder_scale: l.text_encoder_scale }).collect() } else { Vec::new() },
        embeddings: asset.embeddings.iter().map(|e| kiln::model::EmbeddingSpec { path: e.path.clone(), token: e.token.clone() }).collect(),
        ..Default::default()
    }
}

/// Records how one asset's bake ended, in the log and the report.
fn record(entries: &mut Vec<Entry>, progress: &mut Progress, asset: &Asset, result: Result<Vec<String>, String>, seconds: f64, warnings: Vec<String>) {
    match result {
        Ok(paths) => {
            progress.finish(&format!("{}: baked in {seconds:.2}s -> {}", asset.name, paths.join(", ")));
            entries.push(Entry { warnings, ..Entry::new(&asset.name, "baked", paths, seconds, None) });
        }
        Err(e) => {
            progress.finish(&format!("{}: failed: {e}", asset.name));
            entries.push(Entry { warnings, ..failed(asset, e, seconds) });
        }
    }
}

fn planned(name: &str) -> Entry {
    Entry::new(name, "planned", vec![], 0.0, None)
}

fn failed(asset: &Asset, error: String, seconds: f64) -> Entry {
    Entry::new(&asset.name, "failed", vec![], seconds, Some(error))
}

fn most_common_axes<'a>(assets: impl Iterator<Item = &'a Asset>) -> Seamless {
    let mut counts: Vec<(Seamless, usize)> = Vec::new();
    for a in assets {
        match counts.iter_mut().find(|(s, _)| *s == a.seamless) {
            Some((_, n)) => *n += 1,
            None => counts.push((a.seamless, 1)),
        }
    }
    // The first of the most common (max_by_key keeps the last of equals).
    counts.iter().rev().max_by_key(|(_, n)| *n).map_or(Seamless::None, |(s, _)| *s)
}

/// Generates one asset as a Kiln job (so Ctrl-C cancels it through Kiln),
/// post-processes it as `generate` does (upscaled with `upscaler` when the
/// asset asks) and writes every output, then its key. `model` is the plain
/// model or the asset's LoRA view; a seamless asset gets that model's
/// seamless view (cached by the model, so made once per group).
#[allow(clippy::too_many_arguments)]
fn bake_one(
    runtime: &Runtime,
    model: &Model,
    refiner: Option<&Model>,
    upscaler: Option<&Arc<Upscaler>>,
    asset: &Asset,
    key: &str,
    out: &Path,
    progress: &mut Progress,
) -> Result<Vec<String>, String> {
    let seamless_view = |m: &Model| match m.seamless_axes() == asset.seamless {
        true => Ok(m.clone()),
        false => make_with_job(runtime, JobWork::Seamless { model: m.clone(), axes: asset.seamless }, "the seamless view", JobPool::model),
    };
    let view = seamless_view(model)?;
    // The refiner finishes the schedule, so a tiling asset needs it wrapped too.
    let refiner = match (refiner, asset.refiner_start) {
        (Some(r), Some(start)) => Some(kiln::pipeline::handoff::Refiner { model: seamless_view(r)?, start }),
        _ => None,
    };
    let pool = kiln::jobs::pool_for(runtime).map_err(|e| e.to_string())?;
    let mut request = kiln::GenerateRequest { refiner: refiner.clone(), ..asset.request_with_files()? };
    // As `generate`: `extend` and `make_tileable` take the picture out of the request.
    let work = match (asset.extend, asset.make_tileable, request.init_image.take()) {
        (Some([left, right, top, bottom]), _, Some(picture)) => {
            JobWork::ExtendTexture { model: view.clone(), request, picture, extend: kiln::pipeline::texture::Extend { left, right, top, bottom } }
        }
        (None, Some(band), Some(picture)) => JobWork::MakeTileable { model: view.clone(), request, picture, band },
        (_, _, picture) => JobWork::Generate { model: view.clone(), request: kiln::GenerateRequest { init_image: picture, ..request } },
    };
    let id = pool.submit_work(work, Default::default());
    let image = run_job(pool, id, &asset.name, progress, "the job")?;
    let post = asset.post();
    let image = upscale(pool, upscaler, image, &post, &asset.name, progress)?;
    let finished = outputs::finish_upscaled(&view, image, &post).map_err(|e| e.to_string())?;
    let request = kiln::GenerateRequest { refiner, ..asset.request() };
    let from = outputs::Provenance {
        model: &asset.model,
        init_noise: None,
        init_image: asset.init_image.as_deref(),
        picture_job: asset.picture_job(),
        upscaler: asset.upscale.as_ref().map(|u| u.path.as_path()),
        quantization: asset.quantization,
    };
    let text = outputs::png_text(&request, &post, &from, finished.image.width, finished.image.height);
    write_outputs(asset, key, out, &finished, &text, upscaler, progress)
}

/// Bakes a `source` asset: reads its picture and finishes it as a generated
/// image is finished (the upscale as a job, then material maps, the sprite
/// cut out with `matting` or the chroma key, pixel art), then writes every
/// output and its key. Nothing is generated. What may not be what was meant
/// goes to the log and to `warnings` (for the report).
#[allow(clippy::too_many_arguments)]
fn bake_source(
    runtime: &Runtime,
    source: &Path,
    matting: Option<&Matting>,
    upscaler: Option<&Arc<Upscaler>>,
    asset: &Asset,
    key: &str,
    out: &Path,
    progress: &mut Progress,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>, String> {
    let image = kiln::pipeline::inputs::read_rgba(source).map_err(|e| format!("source picture: {e}"))?;
    // Wrapped mips, maps and upscales of a picture that does not tile keep its
    // seam; say so, since nothing else would.
    for (axis, on) in [(Axis::X, asset.seamless.wraps_x()), (Axis::Y, asset.seamless.wraps_y())] {
        let score = if on { seam_score(&image, axis).ok() } else { None };
        if let Some(score) = score.filter(|s| *s > SEAM_WARNING) {
            let warning = format!(
                "the picture does not tile along {axis:?} (seam score {score:.1}; a tiling texture scores about 1): \
                 its seam stays; `init_image` with `make_tileable` makes it tile"
            );
            progress.log(&format!("{}: warning: {warning}", asset.name));
            warnings.push(warning);
        }
    }
    let pool = kiln::jobs::pool_for(runtime).map_err(|e| e.to_string())?;
    let post = asset.post();
    let image = upscale(pool, upscaler, image, &post, &asset.name, progress)?;
    let matte = matting.map_or(outputs::SpriteMatte::Key, outputs::SpriteMatte::Graph);
    let finished = outputs::finish_with(matte, image, &post).map_err(|e| e.to_string())?;
    let text = outputs::source_png_text(source, &post, asset.upscale.as_ref().map(|u| u.path.as_path()), finished.image.width, finished.image.height);
    write_outputs(asset, key, out, &finished, &text, upscaler, progress)
}

/// A seam score above this on a `source` asset's seamless axis gets a
/// warning. Tiling textures score about 1 (Kiln's seamless generations 0.2 to
/// 1.5 in `tests/bake.rs`), photos tens; 3 leaves room on both sides.
const SEAM_WARNING: f32 = 3.0;

/// Upscales `image` as `post` asks, as a job: its tiles show as progress
/// (under the asset's `name`), and Ctrl-C cancels it.
fn upscale(pool: &JobPool, upscaler: Option<&Arc<Upscaler>>, image: kiln::Rgba8Image, post: &PostProcess, name: &str, progress: &mut Progress) -> Result<kiln::Rgba8Image, String> {
    match (upscaler, outputs::upscale_options(post).map_err(|e| e.to_string())?) {
        (Some(up), Some(options)) => {
            progress.upscaling(name);
            let id = pool.submit_work(JobWork::Upscale { upscaler: Arc::clone(up), image, options }, Default::default());
            run_job(pool, id, name, progress, "the upscale")
        }
        (None, Some(_)) => Err("an upscale was asked for without an upscaler".into()),
        _ => Ok(image),
    }
}

/// Writes a finished asset's files (the main image as PNG with `text`, or
/// as DDS, then its maps), each atomically, then its key file.
fn write_outputs(
    asset: &Asset,
    key: &str,
    out: &Path,
    finished: &outputs::Finished,
    text: &[(&str, String)],
    upscaler: Option<&Arc<Upscaler>>,
    progress: &mut Progress,
) -> Result<Vec<String>, String> {
    if let Some(note) = &finished.sprite_note {
        progress.log(&format!("{}: {note}", asset.name));
    }
    let names = asset.outputs();
    let mut files: Vec<(&String, Vec<u8>)> = Vec::new();
    let main = match asset.format {
        Format::Png => {
            let text: Vec<(&str, &str)> = text.iter().map(|(k, v)| (*k, v.as_str())).collect();
            finished.image.encode_png_with_text(&text).map_err(|e| e.to_string())?
        }
        _ => dds::encode_dds(&finished.image, dds::Content::Colour, asset.format, asset.mipmaps, asset.seamless)?,
    };
    files.push((&names[0], main));
    let maps = [(&finished.normal, dds::Content::Normal), (&finished.height, dds::Content::Height)];
    for (map, content) in maps.into_iter().filter_map(|(m, c)| m.as_ref().map(|m| (m, c))) {
        let bytes = match asset.format {
            Format::Png => map.encode_png_with_text(&[]).map_err(|e| e.to_string())?,
            _ => dds::encode_dds(map, content, asset.format, asset.mipmaps, asset.seamless)?,
        };
        let suffix = if content == dds::Content::Normal { "_normal." } else { "_height." };
        let name = names.iter().find(|n| n.contains(suffix)).expect("outputs list every map");
        files.push((name, bytes));
    }
    for (name, bytes) in &files {
        store::write_atomic(&out.join(name), bytes).map_err(|e| format!("cannot write {}: {e}", out.join(name).display()))?;
    }
    // The key goes last: a bake killed before this point is redone next time.
    let mut settings = asset.settings_value();
    if !asset.loras.is_empty() {
        // For people reading the key file; the key itself holds the files' identities.
        let loras = asset
            .loras
            .iter()
            .map(|l| {
                let mut entry = serde_json::json!({"path": l.path.display().to_string(), "scale": l.scale});
                if let Some(t) = l.text_encoder_scale {
                    entry["text_encoder_scale"] = t.into();
                }
                entry
            })
            .collect();
        settings["lora"] = serde_json::Value::Array(loras);
    }
    if !asset.embeddings.is_empty() {
        let embeddings = asset.embeddings.iter().map(|e| serde_json::json!({"path": e.path.display().to_string(), "token": e.token})).collect();
        settings["embedding"] = serde_json::Value::Array(embeddings);
    }
    // The pictures' paths likewise (the key holds their bytes' identities).
    for (key, path) in [("init_image", &asset.init_image), ("mask", &asset.mask), ("source", &asset.source)] {
        if let Some(p) = path {
            settings[key] = p.display().to_string().into();
        }
    }
    if let (Some(u), Some(up)) = (&asset.upscale, upscaler) {
        // Beside tile and context (in the key's settings): the path, and the scale it gave.
        settings["upscale"]["path"] = u.path.display().to_string().into();
        settings["upscale"]["scale"] = up.scale().into();
    }
    let key_file = store::KeyFile { key: key.to_string(), outputs: names.clone(), settings };
    let json = serde_json::to_vec_pretty(&key_file).map_err(|e| e.to_string())?;
    let key_path = store::key_path(out, &asset.name);
    store::write_atomic(&key_path, &json).map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    Ok(names.iter().map(|n| out.join(n).display().to_string()).collect())
}

/// Waits for job `id`, showing its progress and cancelling it on Ctrl-C;
/// returns its image, or why there is none (`what` names it: "the job",
/// "the upscale"). The job is released either way.
fn run_job(pool: &JobPool, id: u64, name: &str, progress: &mut Progress, what: &str) -> Result<kiln::Rgba8Image, String> {
    finish_job(pool, id, |step, total| progress.step(name, step, total), what, |pool, id| pool.with_image(id, |img| Ok(img.clone())))
}

/// Runs `work` (a model load, a LoRA view, a seamless view, an upscaler
/// load) as a job and returns what `take` takes from it: so Ctrl-C stops a
/// load inside the session ONNX Runtime is creating instead of after it.
fn make_with_job<T>(runtime: &Runtime, work: JobWork, what: &str, take: impl FnOnce(&JobPool, u64) -> kiln::Result<T>) -> Result<T, String> {
    let pool = kiln::jobs::pool_for(runtime).map_err(|e| e.to_string())?;
    let id = pool.submit_work(work, Default::default());
    finish_job(pool, id, |_, _| {}, what, take)
}

/// Waits for job `id`, passing its progress to `on_step` and cancelling it
/// on Ctrl-C, then takes what it made with `take`, or says why there is
/// none (`what` names the job). The job is released either way.
fn finish_job<T>(
    pool: &JobPool,
    id: u64,
    mut on_step: impl FnMut(u32, u32),
    what: &str,
    take: impl FnOnce(&JobPool, u64) -> kiln::Result<T>,
) -> Result<T, String> {
    let mut step = 0;
    let mut cancelled = false;
    let mut follow = || loop {
        let state = pool.wait(id, Duration::from_millis(100)).map_err(|e| e.to_string())?;
        if let Ok(snap) = pool.poll(id) {
            if snap.step != step {
                step = snap.step;
                on_step(snap.step, snap.total_steps);
            }
        }
        if state.is_terminal() {
            return Ok(state);
        }
        if INTERRUPTED.load(Ordering::SeqCst) && !cancelled {
            cancelled = true;
            pool.cancel(id).map_err(|e| e.to_string())?;
        }
    };
    let made = follow().and_then(|state| match state {
        JobState::Succeeded => take(pool, id).map_err(|e| e.to_string()),
        JobState::Cancelled => Err(format!("interrupted (Ctrl-C): {what} was cancelled; nothing was written")),
        _ => Err(pool.error_message(id).unwrap_or_else(|e| e.to_string())),
    });
    let _ = pool.release(id);
    made
}

/// Packs an atlas from its members' PNGs (baked now or earlier).
fn bake_atlas(atlas: &manifest::Atlas, manifest: &Manifest, keys: &HashMap<String, String>, entries: &[Entry], out: &Path, force: bool) -> Entry {
    let t0 = Instant::now();
    let fail = |e: String| Entry::new(&atlas.name, "failed", vec![], t0.elapsed().as_secs_f64(), Some(e));
    let names = atlas.outputs();
    let paths: Vec<String> = names.iter().map(|n| out.join(n).display().to_string()).collect();
    let mut h = store::Fnv::new();
    h.field(b"kiln-bake atlas v1");
    h.field(&atlas.padding.to_le_bytes());
    for m in &atlas.assets {
        if let Some(e) = entries.iter().find(|e| &e.name == m && e.status == "failed") {
            return fail(format!("member \"{m}\" failed: {}", e.error.clone().unwrap_or_default()));
        }
        let Some(k) = keys.get(m) else { return fail(format!("member \"{m}\" has no key")) };
        h.field(m.as_bytes());
        h.field(k.as_bytes());
    }
    let key = format!("{:016x}", h.finish());
    if !force && store::is_current(out, &atlas.name, &key) {
        return Entry::new(&atlas.name, "skipped", paths, 0.0, None);
    }
    let mut sprites = Vec::new();
    for m in &atlas.assets {
        let asset = manifest.assets.iter().find(|a| &a.name == m).expect("validated member");
        let p = out.join(&asset.outputs()[0]);
        // The same checked decoder as init images: a sprite edited or
        // damaged on disk since its bake fails this atlas, not the tool.
        match kiln::pipeline::inputs::read_rgba(&p) {
            Ok(img) => sprites.push((m.clone(), img)),
            Err(e) => return fail(e.to_string()),
        }
    }
    let sheet = atlas::pack(&sprites, atlas.padding);
    let json = serde_json::json!({
        "image": names[0],
        "width": sheet.image.width,
        "height": sheet.image.height,
        "sprites": sheet.placements,
    });
    let write = || -> Result<(), String> {
        let png = sheet.image.encode_png_with_text(&[("Software", concat!("Kiln ", env!("CARGO_PKG_VERSION")))]).map_err(|e| e.to_string())?;
        store::write_atomic(Path::new(&paths[0]), &png).map_err(|e| e.to_string())?;
        store::write_atomic(Path::new(&paths[1]), &serde_json::to_vec_pretty(&json).expect("json")).map_err(|e| e.to_string())?;
        let key_file = store::KeyFile { key: key.clone(), outputs: names, settings: serde_json::json!({"assets": atlas.assets, "padding": atlas.padding}) };
        store::write_atomic(&store::key_path(out, &atlas.name), &serde_json::to_vec_pretty(&key_file).expect("json")).map_err(|e| e.to_string())
    };
    match write() {
        Ok(()) => Entry::new(&atlas.name, "baked", paths, t0.elapsed().as_secs_f64(), None),
        Err(e) => fail(e),
    }
}

/// The files in `out` that earlier bakes wrote (as their key files list
/// them, `earlier`) and the manifest no longer makes: every output and the
/// key of a name that is no longer an asset or atlas, and the outputs a
/// current asset no longer lists (a map turned off, another format). A name
/// in `failed` keeps its files. Never a file any current asset or atlas
/// makes, and only plain names inside `out`. Removes them when `remove`;
/// returns their names, sorted (a file that cannot be removed is left out,
/// with a warning).
fn prune(manifest: &Manifest, earlier: &[(String, store::KeyFile)], failed: &[&str], out: &Path, remove: bool) -> Vec<String> {
    let current: HashMap<&str, Vec<String>> = manifest
        .assets
        .iter()
        .map(|a| (a.name.as_str(), a.outputs()))
        .chain(manifest.atlases.iter().map(|a| (a.name.as_str(), a.outputs())))
        .collect();
    let keep: std::collections::HashSet<String> =
        current.iter().flat_map(|(name, outputs)| outputs.iter().cloned().chain([store::key_name(name)])).collect();
    // Key files are ours, but the folder is not: only plain names inside it.
    let plain = |f: &String| Path::new(f).file_name().is_some_and(|n| n == f.as_str()) && f != "." && f != "..";
    let mut stale: Vec<String> = Vec::new();
    for (name, key_file) in earlier {
        if failed.contains(&name.as_str()) {
            continue;
        }
        let candidates = match current.get(name.as_str()) {
            None => key_file.outputs.iter().cloned().chain([store::key_name(name)]).collect::<Vec<_>>(),
            Some(outputs) => key_file.outputs.iter().filter(|o| !outputs.contains(o)).cloned().collect(),
        };
        stale.extend(candidates.into_iter().filter(|f| plain(f) && !keep.contains(f) && out.join(f).is_file()));
    }
    stale.sort();
    stale.dedup();
    if remove {
        stale.retain(|f| match std::fs::remove_file(out.join(f)) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("kiln-bake: warning: cannot prune {}: {e}", out.join(f).display());
                false
            }
        });
    }
    stale
}

fn write_report(args: &Args, report: &Report) -> Result<(), String> {
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(report).map_err(|e| e.to_string())?;
        store::write_atomic(path, &json).map_err(|e| format!("cannot write the report {}: {e}", path.display()))?;
    }
    Ok(())
}
