//! The optimized-graph cache (`RuntimeOptions::graph_cache_dir`): the first
//! load writes one entry per graph, later loads (other runtimes, other
//! processes) create their sessions from it and make bit-identical images;
//! unusable entries fall back to the original model and are rewritten; every
//! setting that shapes the optimized graph gets its own entry; graphs
//! rewritten in memory and models with external-data weights work too.
mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use kiln::model::seamless::Seamless;
use kiln::runtime::{GraphCacheStats, GraphOptimization, LogLevel};
use kiln::{GenerateRequest, Model, Runtime, RuntimeOptions, SchedulerKind};

type Log = Arc<Mutex<Vec<(LogLevel, String)>>>;

fn scratch(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("kiln-graph-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn runtime_with(options: RuntimeOptions) -> (Runtime, Log) {
    let log: Log = Default::default();
    let sink = Arc::clone(&log);
    let rt = Runtime::new(&RuntimeOptions {
        log: Some(Arc::new(move |level, text: &str| sink.lock().unwrap().push((level, text.to_string())))),
        log_level: LogLevel::Info,
        ..options
    })
    .expect("runtime");
    (rt, log)
}

fn cached_runtime(cache: &Path) -> (Runtime, Log) {
    runtime_with(RuntimeOptions { graph_cache_dir: Some(cache.to_path_buf()), ..Default::default() })
}

fn stats(hits: u64, writes: u64, rejected: u64, skipped: u64) -> GraphCacheStats {
    GraphCacheStats { hits, writes, rejected, skipped }
}

fn request() -> GenerateRequest {
    GenerateRequest {
        prompt: "mossy stone brick wall".into(),
        negative_prompt: "blurry".into(),
        steps: 3,
        guidance_scale: 7.5,
        seed: 7,
        scheduler: SchedulerKind::Euler,
        ..Default::default()
    }
}

/// Final latents and decoded image, as raw floats.
fn render(model: &Model) -> (Vec<f32>, Vec<f32>) {
    let g = model.generate_with(&request(), Default::default()).expect("generate");
    (g.latents.iter().copied().collect(), g.image.data)
}

/// The tiny model's output without any cache: what every cached load must reproduce.
fn reference() -> &'static (Vec<f32>, Vec<f32>) {
    static R: OnceLock<(Vec<f32>, Vec<f32>)> = OnceLock::new();
    R.get_or_init(|| render(common::tiny_model()))
}

fn reference_seamless() -> &'static (Vec<f32>, Vec<f32>) {
    static R: OnceLock<(Vec<f32>, Vec<f32>)> = OnceLock::new();
    R.get_or_init(|| render(&common::tiny_model().seamless(Seamless::Xy).unwrap()))
}

fn assert_same(got: &(Vec<f32>, Vec<f32>), want: &(Vec<f32>, Vec<f32>), what: &str) {
    // Bit-identical: a session from the cached graph runs the very nodes the
    // optimizing session ran (measured: max difference exactly 0).
    assert!(got.0 == want.0, "{what}: latents differ by up to {}", common::max_abs_diff(&got.0, &want.0));
    assert!(got.1 == want.1, "{what}: image differs by up to {}", common::max_abs_diff(&got.1, &want.1));
}

fn entries(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn entry(cache: &Path, graph: &str) -> PathBuf {
    let names: Vec<String> = entries(cache).into_iter().filter(|n| n.starts_with(&format!("{graph}-"))).collect();
    assert_eq!(names.len(), 1, "one {graph} entry in {:?}", entries(cache));
    cache.join(&names[0])
}

fn warnings(log: &Log) -> Vec<String> {
    log.lock().unwrap().iter().filter(|(l, _)| *l >= LogLevel::Warning).map(|(_, t)| t.clone()).collect()
}

fn logged(log: &Log, needle: &str) -> usize {
    log.lock().unwrap().iter().filter(|(_, t)| t.contains(needle)).count()
}

#[test]
fn the_second_load_uses_what_the_first_wrote_and_draws_the_same_image() {
    let cache = scratch("reuse");
    let want = reference();

    let (rt, log) = cached_runtime(&cache);
    let model = Model::load(&rt, &common::fixture()).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(0, 3, 0, 0));
    assert_eq!(logged(&log, "optimized graph saved to the cache"), 3);
    assert!(warnings(&log).is_empty(), "{:?}", warnings(&log));
    assert_same(&render(&model), want, "writing load");
    let names = entries(&cache);
    assert_eq!(names.len(), 3, "{names:?}");
    for graph in ["text_encoder", "unet", "vae_decoder"] {
        let e = entry(&cache, graph);
        for f in ["entry.json", "model.onnx", "model.onnx.data"] {
            assert!(e.join(f).is_file(), "{}/{f}", e.display());
        }
    }

    let (rt2, log2) = cached_runtime(&cache);
    let model2 = Model::load(&rt2, &common::fixture()).unwrap();
    assert_eq!(rt2.graph_cache_stats(), stats(3, 0, 0, 0));
    assert_eq!(logged(&log2, "optimized graph from the cache"), 3);
    assert!(warnings(&log2).is_empty(), "{:?}", warnings(&log2));
    assert_same(&render(&model2), want, "cached load");
    assert_eq!(entries(&cache), names, "nothing rewritten, nothing left behind");

    // Per-stage residency opens nothing at load; each stage loads from the
    // cache when it first runs.
    let (rt3, _) = runtime_with(RuntimeOptions {
        graph_cache_dir: Some(cache.clone()),
        residency: kiln::model::Residency::PerStage,
        ..Default::default()
    });
    let model3 = Model::load(&rt3, &common::fixture()).unwrap();
    assert_eq!(rt3.graph_cache_stats(), stats(0, 0, 0, 0));
    assert_same(&render(&model3), want, "per-stage residency");
    assert_eq!(rt3.graph_cache_stats(), stats(3, 0, 0, 0));
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn unusable_entries_fall_back_to_the_model_and_are_rewritten() {
    let cache = scratch("corrupt");
    let want = reference();
    Model::load(&cached_runtime(&cache).0, &common::fixture()).unwrap();

    // Each damage, then a load: it must work, say why it did not use the
    // entry, and leave a good entry behind (the load after it hits).
    type Damage = fn(&Path);
    let damages: [(&str, &str, Damage, &str); 6] = [
        ("unet", "truncated weights", |e| truncate(&e.join("model.onnx.data")), "truncated"),
        ("vae_decoder", "truncated graph", |e| truncate(&e.join("model.onnx")), "truncated"),
        ("unet", "same-size garbage", |e| scribble(&e.join("model.onnx")), "corrupt"),
        ("text_encoder", "no manifest", |e| std::fs::remove_file(e.join("entry.json")).unwrap(), "entry.json"),
        ("unet", "manifest of another key", |e| {
            let p = e.join("entry.json");
            let text = std::fs::read_to_string(&p).unwrap().replace("optimization all", "optimization basic");
            std::fs::write(p, text).unwrap();
        }, "another key"),
        ("vae_decoder", "a file, not a folder", |e| {
            std::fs::remove_dir_all(e).unwrap();
            std::fs::write(e, b"not an entry").unwrap();
        }, "not a folder"),
    ];
    for (graph, what, damage, reason) in damages {
        damage(&entry(&cache, graph));
        let (rt, log) = cached_runtime(&cache);
        let model = Model::load(&rt, &common::fixture()).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(rt.graph_cache_stats(), stats(2, 1, 1, 0), "{what}");
        let w = warnings(&log);
        assert!(w.len() == 1 && w[0].contains("is unusable") && w[0].contains(reason), "{what}: {w:?}");
        assert!(w[0].starts_with(graph), "{what}: {w:?}");
        if what == "truncated weights" {
            assert_same(&render(&model), want, what);
        }
        let (rt, log) = cached_runtime(&cache);
        Model::load(&rt, &common::fixture()).unwrap();
        assert_eq!(rt.graph_cache_stats(), stats(3, 0, 0, 0), "after {what}: {:?}", warnings(&log));
        assert_eq!(entries(&cache).len(), 3, "{what}: {:?}", entries(&cache));
    }
    std::fs::remove_dir_all(&cache).ok();
}

fn truncate(p: &Path) {
    let len = std::fs::metadata(p).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(p).unwrap().set_len(len / 2).unwrap();
}

fn scribble(p: &Path) {
    let mut bytes = std::fs::read(p).unwrap();
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn settings_that_shape_the_graph_get_their_own_entries() {
    let cache = scratch("keys");
    let (rt, _) = cached_runtime(&cache);
    Model::load(&rt, &common::fixture()).unwrap();
    assert_eq!(entries(&cache).len(), 3);

    let extended = || {
        runtime_with(RuntimeOptions {
            graph_cache_dir: Some(cache.clone()),
            graph_optimization: GraphOptimization::Extended,
            ..Default::default()
        })
    };
    let (rt, _) = extended();
    let written = render(&Model::load(&rt, &common::fixture()).unwrap());
    assert_eq!(rt.graph_cache_stats(), stats(0, 3, 0, 0), "another level: other entries");
    assert_eq!(entries(&cache).len(), 6);
    let (rt, _) = extended();
    assert_same(&render(&Model::load(&rt, &common::fixture()).unwrap()), &written, "extended level, cached");
    assert_eq!(rt.graph_cache_stats(), stats(3, 0, 0, 0));

    // Thread counts do not shape the graph: same entries.
    let (rt, _) = runtime_with(RuntimeOptions {
        graph_cache_dir: Some(cache.clone()),
        intra_op_threads: 1,
        inter_op_threads: 2,
        ..Default::default()
    });
    Model::load(&rt, &common::fixture()).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(3, 0, 0, 0));

    // Nothing to save without optimization.
    let (rt, log) = runtime_with(RuntimeOptions {
        graph_cache_dir: Some(cache.clone()),
        graph_optimization: GraphOptimization::Disabled,
        ..Default::default()
    });
    Model::load(&rt, &common::fixture()).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(0, 0, 0, 3));
    assert_eq!(logged(&log, "graph optimization is off"), 3);
    assert_eq!(entries(&cache).len(), 6);
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn graphs_rewritten_in_memory_get_their_own_entries() {
    let cache = scratch("rewritten");
    let want = reference_seamless();
    let (rt, _) = cached_runtime(&cache);
    let base = Model::load(&rt, &common::fixture()).unwrap();
    let tiled = base.seamless(Seamless::Xy).unwrap();
    assert_same(&render(&tiled), want, "seamless, writing");
    base.clip_skip(1).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(0, 6, 0, 0), "3 plain + seamless U-Net and VAE + CLIP-skip encoder");
    assert_eq!(entries(&cache).len(), 6, "{:?}", entries(&cache));

    let (rt, log) = cached_runtime(&cache);
    let base = Model::load(&rt, &common::fixture()).unwrap();
    assert_same(&render(&base.seamless(Seamless::Xy).unwrap()), want, "seamless, cached");
    let skip = base.clip_skip(1).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(6, 0, 0, 0), "{:?}", warnings(&log));
    let skip_uncached = common::tiny_model().clip_skip(1).unwrap();
    assert_same(&render(&skip), &render(&skip_uncached), "CLIP skip, cached");

    // Another rewrite of the same files is another entry.
    base.seamless(Seamless::X).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(6, 2, 0, 0));
    std::fs::remove_dir_all(&cache).ok();
}

#[test]
fn models_with_external_data_weights_are_cached_whole() {
    let cache = scratch("external");
    let model_dir = external_data_copy(&scratch("external-model"));
    let want = reference();
    let (rt, log) = cached_runtime(&cache);
    let model = Model::load(&rt, &model_dir).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(0, 3, 0, 0), "{:?}", warnings(&log));
    assert_same(&render(&model), want, "external data, writing");
    let e = entry(&cache, "unet");
    assert!(std::fs::metadata(e.join("model.onnx.data")).unwrap().len() > 4 << 20, "the weights went to the entry's data file");
    assert!(std::fs::metadata(e.join("model.onnx")).unwrap().len() < 1 << 20);
    let tiled = model.seamless(Seamless::Xy).unwrap();
    assert_same(&render(&tiled), reference_seamless(), "external data, seamless, writing");

    let (rt, _) = cached_runtime(&cache);
    let model = Model::load(&rt, &model_dir).unwrap();
    assert_same(&render(&model), want, "external data, cached");
    assert_same(&render(&model.seamless(Seamless::Xy).unwrap()), reference_seamless(), "external data, seamless, cached");
    assert_eq!(rt.graph_cache_stats(), stats(5, 0, 0, 0));

    // New weights (a changed mtime is enough) make a new U-Net entry.
    let data = std::fs::File::options().write(true).open(model_dir.join("unet/model.onnx_data")).unwrap();
    data.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    drop(data);
    let (rt, _) = cached_runtime(&cache);
    Model::load(&rt, &model_dir).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(2, 1, 0, 0));
    std::fs::remove_dir_all(&cache).ok();
    std::fs::remove_dir_all(&model_dir).ok();
}

#[test]
fn a_cache_folder_that_cannot_be_used_never_fails_a_load() {
    let dir = scratch("unusable");
    let not_a_folder = dir.join("file");
    std::fs::write(&not_a_folder, b"x").unwrap();
    let (rt, log) = cached_runtime(&not_a_folder);
    let model = Model::load(&rt, &common::fixture()).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(0, 0, 0, 3));
    let w = warnings(&log);
    assert!(w.len() == 3 && w.iter().all(|t| t.contains("optimized-graph cache not used")), "{w:?}");
    assert_same(&render(&model), reference(), "without a usable cache");
    std::fs::remove_dir_all(&dir).ok();
}

/// Run by `concurrent_processes_share_one_cache` in child processes; a no-op otherwise.
#[test]
fn child_process_loads_through_the_cache() {
    let (Some(cache), Some(out)) = (std::env::var_os("KILN_GRAPH_CACHE_CHILD"), std::env::var_os("KILN_GRAPH_CACHE_CHILD_OUT"))
    else {
        return;
    };
    let (rt, log) = cached_runtime(Path::new(&cache));
    let model = Model::load(&rt, &common::fixture()).unwrap();
    let (latents, image) = render(&model);
    let bytes: Vec<u8> = latents.iter().chain(&image).flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&out, bytes).unwrap();
    assert!(warnings(&log).is_empty(), "{:?}", warnings(&log));
    let s = rt.graph_cache_stats();
    assert_eq!(s.hits + s.writes, 3, "{s:?}");
}

#[test]
fn concurrent_processes_share_one_cache() {
    let cache = scratch("processes");
    let outs = scratch("processes-out");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..3)
        .map(|i| {
            std::process::Command::new(&exe)
                .args(["--exact", "child_process_loads_through_the_cache", "--nocapture", "--test-threads", "1"])
                .env("KILN_GRAPH_CACHE_CHILD", &cache)
                .env("KILN_GRAPH_CACHE_CHILD_OUT", outs.join(format!("{i}.f32")))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let want: Vec<u8> = {
        let r = reference();
        r.0.iter().chain(&r.1).flat_map(|v| v.to_le_bytes()).collect()
    };
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "child {i}: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("1 passed"), "child {i} ran the test");
        assert!(std::fs::read(outs.join(format!("{i}.f32"))).unwrap() == want, "child {i}: image differs");
    }
    let names = entries(&cache);
    assert_eq!(names.len(), 3, "three complete entries, no temporary folders left: {names:?}");
    let (rt, _) = cached_runtime(&cache);
    Model::load(&rt, &common::fixture()).unwrap();
    assert_eq!(rt.graph_cache_stats(), stats(3, 0, 0, 0));
    std::fs::remove_dir_all(&cache).ok();
    std::fs::remove_dir_all(&outs).ok();
}

/// A copy of tiny-sd whose U-Net keeps its weights in `unet/model.onnx_data`,
/// as full-size exports over 2 GB do (optimum's layout), made by moving every
/// initializer's `raw_data` of 1 KiB or more to that file.
fn external_data_copy(dest: &Path) -> PathBuf {
    let src = common::fixture();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let to = dest.join(p.strip_prefix(&src).unwrap());
            if p.is_dir() {
                std::fs::create_dir_all(&to).unwrap();
                stack.push(p);
            } else {
                std::fs::copy(&p, &to).unwrap();
            }
        }
    }
    let unet = std::fs::read(src.join("unet/model.onnx")).unwrap();
    let mut data = Vec::new();
    let model = proto::rewrite(&unet, &mut |n, payload| match n {
        7 => Some(Some(proto::rewrite(payload, &mut |n, payload| match n {
            5 => Some(Some(proto::externalize(payload, &mut data, "model.onnx_data"))),
            _ => None,
        }))),
        _ => None,
    });
    assert!(data.len() > 4 << 20, "the U-Net's weights moved out");
    std::fs::write(dest.join("unet/model.onnx"), model).unwrap();
    std::fs::write(dest.join("unet/model.onnx_data"), data).unwrap();
    dest.to_path_buf()
}

/// Just enough protobuf to move ONNX initializers to external data
/// (ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto.raw_data = 9,
/// .external_data = 13, .data_location = 14).
mod proto {
    fn varint(buf: &[u8], pos: &mut usize) -> u64 {
        let mut v = 0;
        for shift in (0..64).step_by(7) {
            let b = buf[*pos];
            *pos += 1;
            v |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                break;
            }
        }
        v
    }

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push(v as u8 | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn put_bytes(out: &mut Vec<u8>, number: u32, bytes: &[u8]) {
        put_varint(out, (number as u64) << 3 | 2);
        put_varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }

    /// What `rewrite` does with a field: `None` keeps it, `Some(None)` drops
    /// it, `Some(Some(bytes))` replaces its payload.
    pub type Edit<'a> = dyn FnMut(u32, &[u8]) -> Option<Option<Vec<u8>>> + 'a;

    /// Copies a message; `edit` sees each length-delimited field.
    pub fn rewrite(buf: &[u8], edit: &mut Edit<'_>) -> Vec<u8> {
        let mut out = Vec::with_capacity(buf.len());
        let mut pos = 0;
        while pos < buf.len() {
            let start = pos;
            let key = varint(buf, &mut pos);
            let number = (key >> 3) as u32;
            match key & 7 {
                0 => {
                    varint(buf, &mut pos);
                }
                1 => pos += 8,
                5 => pos += 4,
                2 => {
                    let len = varint(buf, &mut pos) as usize;
                    let payload = &buf[pos..pos + len];
                    pos += len;
                    match edit(number, payload) {
                        None => {}
                        Some(None) => continue,
                        Some(Some(new)) => {
                            put_bytes(&mut out, number, &new);
                            continue;
                        }
                    }
                }
                other => panic!("wire type {other}"),
            }
            out.extend_from_slice(&buf[start..pos]);
        }
        out
    }

    /// A TensorProto with its raw_data (if 1 KiB or more) appended to `data`.
    pub fn externalize(tensor: &[u8], data: &mut Vec<u8>, location: &str) -> Vec<u8> {
        let mut moved = None;
        let mut out = rewrite(tensor, &mut |n, payload| {
            if n == 9 && payload.len() >= 1024 {
                while !data.len().is_multiple_of(64) {
                    data.push(0);
                }
                moved = Some((data.len(), payload.len()));
                data.extend_from_slice(payload);
                Some(None)
            } else {
                None
            }
        });
        let Some((offset, length)) = moved else { return out };
        for (k, v) in [("location", location.to_string()), ("offset", offset.to_string()), ("length", length.to_string())] {
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, k.as_bytes());
            put_bytes(&mut entry, 2, v.as_bytes());
            put_bytes(&mut out, 13, &entry);
        }
        put_varint(&mut out, 14 << 3);
        put_varint(&mut out, 1);
        out
    }
}
