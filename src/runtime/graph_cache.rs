//! An on-disk cache of ONNX Runtime's optimized graphs, to cut cold start.
//!
//! Creating a session makes ONNX Runtime optimize the graph (constant folding,
//! fusions, the CPU's NCHWc layout), which on a full-size U-Net takes seconds.
//! ONNX Runtime can save the graph it ends up with (`optimized_model_filepath`),
//! and a session created from that file with optimization off skips the work.
//! This module keeps such files in a folder the host names
//! (`RuntimeOptions::graph_cache_dir`; there is no default: a library does not
//! write to disk unless asked) and decides when one may be reused.
//!
//! **Validity.** ONNX Runtime warns that a graph saved above the "extended" level
//! may hold hardware-specific nodes (NCHWc blocks sized for the CPU's vector
//! width: 8 floats with AVX2, 16 with AVX-512) and must run where it was made,
//! with the same execution providers and options. An entry is therefore found
//! by a key over everything that shapes the optimized graph:
//!
//! * the source graph: for a file, its canonical path plus the name, size and
//!   modification time of every file in its folder (external-data weights
//!   included, whatever they are called); for a graph rewritten in memory
//!   (seamless tiling, CLIP skip), a 128-bit hash of its bytes plus the same
//!   listing of the folder its external data comes from;
//! * the ONNX Runtime version and the providers the loaded library carries;
//! * the optimization level and the execution providers registered;
//! * the OS, the architecture and the CPU features ONNX Runtime's kernels and
//!   layout choices depend on;
//! * this cache's format version.
//!
//! Thread counts are left out: no optimizer depends on them, and a graph made
//! with one count is valid with another. Kiln sets no free-dimension overrides.
//!
//! Why path + size + mtime and not a content hash of the weights: hashing a
//! 3.4 GB U-Net on every start would cost much of what the cache saves (and
//! read the original weights, which a cache hit otherwise never touches),
//! while a hash of only the first and last MiB is unsafe here: two fine-tunes
//! of one base (a merged LoRA changes only attention weights) have the same
//! size and may share both ends. Size and mtime change on every normal write,
//! as for Python's `.pyc` files; copying a model elsewhere or touching it
//! only costs one re-optimization. What it cannot see is a file replaced by
//! one of the same size with its mtime forged (`cp -p` of a same-sized
//! fine-tune over the original); delete the cache folder after doing that.
//!
//! **Safety.** An entry is written into a private temporary folder inside the
//! cache folder (ONNX Runtime writes `model.onnx` and its external-data file
//! `model.onnx.data`), then a manifest with every file's size and hash, then
//! everything is flushed to disk and the folder renamed into place in one step.
//! Readers see a complete entry or none; two processes writing the same entry
//! both finish, one rename wins and the other discards its copy. On use, the
//! manifest must match the key exactly and every file its size and hash: the
//! whole graph file, and the weights file in full up to 64 MiB, above that its
//! first and last MiB and 62 blocks of 64 KiB spread over it. That catches
//! truncation, a file replaced or scribbled over in large parts, and an entry
//! from another key, without reading gigabytes on every start; it does not
//! catch a single flipped bit in a large weights file (neither does ONNX
//! Runtime for the original model). Torn writes cannot happen: files are
//! flushed before the rename publishes them. An entry that fails any check,
//! or that ONNX Runtime refuses, is logged, moved aside and rewritten, and the
//! load goes on from the original model: the cache can cost time, never a load.
//!
//! Cost: an entry holds the optimized graph and all of its weights, so about
//! the model's size on disk per cached graph (a seamless view adds its own
//! U-Net and VAE decoder); the first load also writes and flushes it. Nothing
//! is evicted: entries of changed models or another ONNX Runtime simply stop
//! being used, and the folder can be deleted at any time.
//!
//! Only sessions on the CPU provider are cached for now: TensorRT, CoreML and
//! DirectML compile nodes that ONNX Runtime cannot save, and CUDA graphs have
//! not been checked on a GPU; such graphs load as before, with a logged note.
//! The exception is the static-shape U-Net (`model::static_unet`): what is
//! cached there is the graph specialised to one job shape at the basic,
//! provider-independent level, not a session's optimized graph, so it is
//! cached for every provider (entries `unet_static-*`, keyed with the
//! providers the U-Net registered).
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Provider;

/// Version of the cache layout and key; bump it when either changes meaning.
pub(crate) const FORMAT: u32 = 1;
/// The optimized graph inside an entry.
pub(crate) const MODEL_FILE: &str = "model.onnx";
/// Its external-data file (every initializer of at least [`EXTERNAL_MIN_BYTES`]).
pub(crate) const DATA_FILE: &str = "model.onnx.data";
/// Initializers this large go to [`DATA_FILE`], which keeps the graph file small
/// (cheap to hash) and under protobuf's 2 GB limit for any model size.
pub(crate) const EXTERNAL_MIN_BYTES: u64 = 1024;
const MANIFEST: &str = "entry.json";
/// Data files up to this size are hashed whole; larger ones are sampled.
const FULL_HASH_LIMIT: u64 = 64 << 20;
/// Temporary folders older than this are a crashed writer's and are removed.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// How much ONNX Runtime optimizes a graph when it creates a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GraphOptimization {
    /// No graph optimization (nothing to cache).
    Disabled,
    /// Constant folding and redundant-node removal only.
    Basic,
    /// Basic plus node fusions; no hardware-specific layouts.
    Extended,
    /// Everything, including the CPU's NCHWc layout (ONNX Runtime's default).
    #[default]
    All,
}

impl GraphOptimization {
    pub(crate) fn ort(self) -> ort::session::builder::GraphOptimizationLevel {
        use ort::session::builder::GraphOptimizationLevel as L;
        match self {
            Self::Disabled => L::Disable,
            Self::Basic => L::Level1,
            Self::Extended => L::Level2,
            Self::All => L::All,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Basic => "basic",
            Self::Extended => "extended",
            Self::All => "all",
        }
    }
}

/// What the optimized-graph cache of a runtime has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphCacheStats {
    /// Sessions created from a cached optimized graph.
    pub hits: u64,
    /// Optimized graphs written to the cache.
    pub writes: u64,
    /// Cached entries found unusable (truncated, corrupt, unreadable or refused
    /// by ONNX Runtime); each was set aside and the graph loaded from the original.
    pub rejected: u64,
    /// Graph loads that could not use the cache (a GPU provider, optimization
    /// off, a folder that cannot be written, a failed write); the reason is logged.
    pub skipped: u64,
}

/// The cache of one runtime.
pub(crate) struct GraphCache {
    dir: PathBuf,
    hits: AtomicU64,
    writes: AtomicU64,
    rejected: AtomicU64,
    skipped: AtomicU64,
}

/// Identifies one cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Key {
    /// Every input of the key, one per line; stored in the manifest and compared
    /// verbatim on use, so a hash collision can never pick a wrong entry.
    pub(crate) description: String,
    /// `<graph>-<32 hex digits>`: the entry's folder name.
    pub(crate) dir_name: String,
}

/// Where a graph's bytes come from, as far as the key is concerned.
pub(crate) enum SourceId<'a> {
    /// An ONNX file, external data beside it.
    File(&'a Path),
    /// Bytes in memory; external data in `dir`. `digest` memoizes their hash.
    Memory { bytes: &'a [u8], dir: &'a Path, digest: &'a OnceLock<String> },
}

/// The session settings that shape an optimized graph.
pub(crate) struct Settings<'a> {
    /// Graph role (`unet`, ...): the entry's name prefix.
    pub graph: &'a str,
    /// Version of the loaded ONNX Runtime.
    pub onnxruntime: &'a str,
    /// Providers the loaded ONNX Runtime carries.
    pub available: &'a [String],
    /// Providers registered for the session, best first (the CPU follows).
    pub registered: &'a [Provider],
    /// The optimization level the entry is made with.
    pub level: GraphOptimization,
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// A complete entry; its optimized graph file.
    Hit(PathBuf),
    /// No entry.
    Miss,
    /// An entry that must not be used, and why.
    Unusable(String),
}

/// An entry being written; removed on drop unless published.
pub(crate) struct Pending {
    tmp: PathBuf,
    entry: PathBuf,
    description: String,
    published: bool,
}

impl GraphCache {
    pub(crate) fn new(dir: &Path) -> Self {
        let dir = if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            std::env::current_dir().map(|d| d.join(dir)).unwrap_or_else(|_| dir.to_path_buf())
        };
        Self { dir, hits: AtomicU64::new(0), writes: AtomicU64::new(0), rejected: AtomicU64::new(0), skipped: AtomicU64::new(0) }
    }

    /// The cache folder (absolute).
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn stats(&self) -> GraphCacheStats {
        GraphCacheStats {
            hits: self.hits.load(Relaxed),
            writes: self.writes.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            skipped: self.skipped.load(Relaxed),
        }
    }

    pub(crate) fn note_hit(&self) {
        self.hits.fetch_add(1, Relaxed);
    }
    pub(crate) fn note_write(&self) {
        self.writes.fetch_add(1, Relaxed);
    }
    pub(crate) fn note_rejected(&self) {
        self.rejected.fetch_add(1, Relaxed);
    }
    pub(crate) fn note_skipped(&self) {
        self.skipped.fetch_add(1, Relaxed);
    }

    /// The entry folder of `key`.
    pub(crate) fn entry_dir(&self, key: &Key) -> PathBuf {
        self.dir.join(&key.dir_name)
    }

    /// Finds and checks the entry of `key`.
    pub(crate) fn lookup(&self, key: &Key) -> Lookup {
        let entry = self.entry_dir(key);
        match fs::metadata(&entry) {
            // No entry, or no cache folder yet (`begin` reports a folder that cannot be made).
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => return Lookup::Miss,
            Err(e) => return Lookup::Unusable(format!("cannot read {}: {e}", entry.display())),
            Ok(m) if !m.is_dir() => return Lookup::Unusable(format!("{} is not a folder", entry.display())),
            Ok(_) => {}
        }
        match check_entry(&entry, &key.description) {
            Ok(()) => Lookup::Hit(entry.join(MODEL_FILE)),
            Err(why) => Lookup::Unusable(why),
        }
    }

    /// Moves the entry of `key` out of the way (one rename, so no reader sees
    /// it half deleted) and deletes it. Errors are returned for the log only.
    pub(crate) fn retire(&self, key: &Key) -> Result<(), String> {
        let entry = self.entry_dir(key);
        let trash = self.dir.join(format!(".trash-{}", unique_suffix()));
        match fs::rename(&entry, &trash) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("cannot move {} aside: {e}", entry.display())),
        }
        // Another process may still read it (mapped on Windows): best effort.
        let _ = remove_path(&trash);
        Ok(())
    }

    /// Starts writing the entry of `key`: a fresh temporary folder.
    pub(crate) fn begin(&self, key: &Key) -> std::io::Result<Pending> {
        fs::create_dir_all(&self.dir)?;
        self.sweep();
        let tmp = self.dir.join(format!(".tmp-{}-{}", key.dir_name, unique_suffix()));
        fs::create_dir(&tmp)?;
        Ok(Pending { tmp, entry: self.entry_dir(key), description: key.description.clone(), published: false })
    }

    /// Removes temporary folders of crashed writers and leftover trash.
    fn sweep(&self) {
        let Ok(list) = fs::read_dir(&self.dir) else { return };
        let now = SystemTime::now();
        for e in list.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            let stale = || {
                e.metadata()
                    .and_then(|m| m.modified())
                    .map(|t| now.duration_since(t).unwrap_or_default() > STALE_AFTER)
                    .unwrap_or(false)
            };
            if name.starts_with(".trash-") || (name.starts_with(".tmp-") && stale()) {
                let _ = remove_path(&e.path());
            }
        }
    }
}

impl Pending {
    /// Where ONNX Runtime writes the optimized graph.
    pub(crate) fn model_path(&self) -> PathBuf {
        self.tmp.join(MODEL_FILE)
    }

    /// Writes the manifest, flushes everything to disk and renames the folder
    /// into place. Returns the entry's size in bytes, or `None` when another
    /// writer got there first: its entry stays and this one is discarded.
    pub(crate) fn publish(mut self) -> Result<Option<u64>, String> {
        let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
        let model = self.tmp.join(MODEL_FILE);
        if !model.is_file() {
            return Err(format!("ONNX Runtime wrote no {}", model.display()));
        }
        let mut files = Vec::new();
        let mut total = 0;
        for name in [MODEL_FILE, DATA_FILE] {
            let path = self.tmp.join(name);
            if name == DATA_FILE && !path.exists() {
                continue; // no initializer reached the external-data threshold
            }
            // Flush before hashing and renaming: after a power cut an entry is
            // either absent or complete.
            File::open(&path).and_then(|f| f.sync_all()).map_err(|e| io(&format!("cannot flush {}", path.display()), e))?;
            let (size, digest) = file_digest(&path).map_err(|e| io(&format!("cannot read {}", path.display()), e))?;
            total += size;
            files.push(serde_json::json!({ "name": name, "size": size, "digest": digest }));
        }
        let manifest = serde_json::json!({ "kiln_graph_cache": FORMAT, "key": self.description, "files": files });
        let manifest_path = self.tmp.join(MANIFEST);
        fs::write(&manifest_path, serde_json::to_vec_pretty(&manifest).unwrap_or_default())
            .and_then(|()| File::open(&manifest_path)?.sync_all())
            .map_err(|e| io(&format!("cannot write {}", manifest_path.display()), e))?;
        sync_dir(&self.tmp);
        match fs::rename(&self.tmp, &self.entry) {
            Ok(()) => {
                self.published = true;
                if let Some(parent) = self.entry.parent() {
                    sync_dir(parent);
                }
                Ok(Some(total))
            }
            // Another process published the same entry first: keep theirs.
            Err(_) if self.entry.join(MANIFEST).is_file() => Ok(None),
            Err(e) => Err(io(&format!("cannot rename {} to {}", self.tmp.display(), self.entry.display()), e)),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.published {
            let _ = remove_path(&self.tmp);
        }
    }
}

/// The key of a graph.
pub(crate) fn key(settings: &Settings<'_>, source: &SourceId<'_>) -> std::io::Result<Key> {
    use std::fmt::Write as _;
    let mut d = String::new();
    let _ = writeln!(d, "kiln graph cache {FORMAT}");
    let _ = writeln!(d, "onnxruntime {} [{}]", settings.onnxruntime, settings.available.join(","));
    let _ = writeln!(d, "platform {} {} [{}]", std::env::consts::OS, std::env::consts::ARCH, cpu_features().join(","));
    let _ = writeln!(d, "graph {}", settings.graph);
    let _ = writeln!(d, "optimization {}", settings.level.name());
    let providers: Vec<&str> = settings.registered.iter().map(|p| p.ort_name()).chain(["CPUExecutionProvider"]).collect();
    let _ = writeln!(d, "providers {}", providers.join(","));
    let dir = match source {
        SourceId::File(path) => {
            let path = fs::canonicalize(path)?;
            let _ = writeln!(d, "source file {}", path.display());
            path.parent().map(Path::to_path_buf).unwrap_or_default()
        }
        SourceId::Memory { bytes, dir, digest } => {
            let digest = digest.get_or_init(|| hash128(bytes));
            let _ = writeln!(d, "source memory {} bytes {digest}", bytes.len());
            let dir = fs::canonicalize(dir)?;
            let _ = writeln!(d, "external data {}", dir.display());
            dir
        }
    };
    let mut listing: Vec<(String, u64, String)> = Vec::new();
    for e in fs::read_dir(&dir)? {
        let e = e?;
        let m = fs::metadata(e.path())?;
        if !m.is_file() {
            continue;
        }
        let mtime = m.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        let mtime = mtime.map_or("?".into(), |t| format!("{}.{:09}", t.as_secs(), t.subsec_nanos()));
        listing.push((e.file_name().to_string_lossy().into_owned(), m.len(), mtime));
    }
    listing.sort();
    for (name, size, mtime) in listing {
        let _ = writeln!(d, "file {name} {size} {mtime}");
    }
    let graph: String = settings.graph.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '-' }).collect();
    let dir_name = format!("{graph}-{}", hash128(d.as_bytes()));
    Ok(Key { description: d, dir_name })
}

/// CPU features that change ONNX Runtime's kernels or layouts (NCHWc block
/// size, int8/bf16/fp16 paths), in a fixed order. (AMX cannot be queried on
/// stable Rust yet; ONNX Runtime uses it only for int8 matrix products.)
pub(crate) fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        macro_rules! detect {
            ($($f:tt),*) => { $( if std::arch::is_x86_feature_detected!($f) { found.push($f); } )* };
        }
        detect!(
            "sse4.1", "sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl",
            "avx512vnni", "avx512bf16", "avx512fp16", "avxvnni"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! detect {
            ($($f:tt),*) => { $( if std::arch::is_aarch64_feature_detected!($f) { found.push($f); } )* };
        }
        detect!("neon", "fp16", "fhm", "dotprod", "i8mm", "bf16", "sve", "sve2");
    }
    found
}

/// Checks an entry folder against the key: manifest, sizes, hashes.
fn check_entry(entry: &Path, description: &str) -> Result<(), String> {
    let manifest_path = entry.join(MANIFEST);
    let text = fs::read(&manifest_path).map_err(|e| format!("cannot read {}: {e}", manifest_path.display()))?;
    let m: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("{} is not valid JSON: {e}", manifest_path.display()))?;
    if m["kiln_graph_cache"].as_u64() != Some(FORMAT as u64) {
        return Err(format!("{} has another format ({}; this Kiln writes {FORMAT})", manifest_path.display(), m["kiln_graph_cache"]));
    }
    if m["key"].as_str() != Some(description) {
        return Err(format!("{} was written for another key", manifest_path.display()));
    }
    let files = m["files"].as_array().ok_or_else(|| format!("{} lists no files", manifest_path.display()))?;
    if !files.iter().any(|f| f["name"].as_str() == Some(MODEL_FILE)) {
        return Err(format!("{} does not list {MODEL_FILE}", manifest_path.display()));
    }
    for f in files {
        let (Some(name), Some(size), Some(digest)) = (f["name"].as_str(), f["size"].as_u64(), f["digest"].as_str()) else {
            return Err(format!("{} has a malformed file entry", manifest_path.display()));
        };
        if name != MODEL_FILE && name != DATA_FILE {
            return Err(format!("{} lists an unexpected file {name:?}", manifest_path.display()));
        }
        let path = entry.join(name);
        let actual = fs::metadata(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?.len();
        if actual != size {
            return Err(format!("{} is {actual} bytes, the manifest says {size} (truncated or overwritten)", path.display()));
        }
        let (_, got) = file_digest(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if got != digest {
            return Err(format!("{} does not match its hash (corrupt)", path.display()));
        }
    }
    Ok(())
}

/// Size and hash of a cache file: the whole file up to [`FULL_HASH_LIMIT`],
/// above that its first and last MiB and 62 blocks of 64 KiB spread evenly.
fn file_digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let size = f.metadata()?.len();
    if size <= FULL_HASH_LIMIT {
        let mut bytes = Vec::with_capacity(size as usize);
        f.read_to_end(&mut bytes)?;
        return Ok((bytes.len() as u64, format!("full:{}", hash128(&bytes))));
    }
    const END: u64 = 1 << 20;
    const BLOCK: u64 = 64 << 10;
    const BLOCKS: u64 = 62;
    let mut ranges = vec![(0, END), (size - END, END)];
    let span = size - 2 * END - BLOCK;
    ranges.extend((0..BLOCKS).map(|i| (END + span * i / (BLOCKS - 1), BLOCK)));
    let mut bytes = Vec::with_capacity((2 * END + BLOCKS * BLOCK + 8) as usize);
    bytes.extend_from_slice(&size.to_le_bytes());
    for (offset, len) in ranges {
        f.seek(SeekFrom::Start(offset))?;
        let start = bytes.len();
        bytes.resize(start + len as usize, 0);
        f.read_exact(&mut bytes[start..])?;
    }
    Ok((size, format!("sampled:{}", hash128(&bytes))))
}

/// A name part no other writer in any process uses at the same moment.
fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    format!("{}-{nanos}-{}", std::process::id(), COUNTER.fetch_add(1, Relaxed))
}

fn remove_path(p: &Path) -> std::io::Result<()> {
    if p.is_dir() {
        fs::remove_dir_all(p)
    } else {
        fs::remove_file(p)
    }
}

/// Flushes a folder's entries (the renames and creations in it) on Unix;
/// Windows has no such call and commits metadata itself.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// 128 bits as 32 hex digits: XXH64 with two seeds.
pub(crate) fn hash128(bytes: &[u8]) -> String {
    format!("{:016x}{:016x}", xxh64(bytes, 0), xxh64(bytes, 0x9E37_79B9_7F4A_7C15))
}

/// XXH64 (Yann Collet's xxHash, 64-bit), written out here rather than taken as a
/// dependency; checked against the reference implementation's outputs below.
fn xxh64(data: &[u8], seed: u64) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    fn round(acc: u64, input: u64) -> u64 {
        acc.wrapping_add(input.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1)
    }
    fn merge(acc: u64, val: u64) -> u64 {
        (acc ^ round(0, val)).wrapping_mul(P1).wrapping_add(P4)
    }
    let u64_at = |p: &[u8]| u64::from_le_bytes(p[..8].try_into().unwrap());
    let mut p = data;
    let mut h = if data.len() >= 32 {
        let mut v = [seed.wrapping_add(P1).wrapping_add(P2), seed.wrapping_add(P2), seed, seed.wrapping_sub(P1)];
        while p.len() >= 32 {
            for (i, lane) in v.iter_mut().enumerate() {
                *lane = round(*lane, u64_at(&p[i * 8..]));
            }
            p = &p[32..];
        }
        let mut h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        for lane in v {
            h = merge(h, lane);
        }
        h
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(data.len() as u64);
    while p.len() >= 8 {
        h ^= round(0, u64_at(p));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        p = &p[8..];
    }
    if p.len() >= 4 {
        h ^= (u32::from_le_bytes(p[..4].try_into().unwrap()) as u64).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        p = &p[4..];
    }
    for &b in p {
        h ^= (b as u64).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^= h >> 32;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rewrites an entry's manifest to match its files as they are now.
    fn reseal(entry: &Path) {
        let path = entry.join(MANIFEST);
        let mut m: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        for f in m["files"].as_array_mut().unwrap() {
            let (size, digest) = file_digest(&entry.join(f["name"].as_str().unwrap())).unwrap();
            f["size"] = size.into();
            f["digest"] = digest.into();
        }
        fs::write(path, serde_json::to_vec(&m).unwrap()).unwrap();
    }

    #[test]
    fn an_entry_onnx_runtime_refuses_is_replaced() {
        use crate::runtime::{LogLevel, Runtime, RuntimeOptions};
        let cache = scratch("refused");
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-sd");
        let log: std::sync::Arc<std::sync::Mutex<Vec<String>>> = Default::default();
        let runtime = || {
            let sink = std::sync::Arc::clone(&log);
            Runtime::new(&RuntimeOptions {
                graph_cache_dir: Some(cache.clone()),
                log: Some(std::sync::Arc::new(move |level, text: &str| {
                    if level >= LogLevel::Warning {
                        sink.lock().unwrap().push(text.to_string());
                    }
                })),
                ..Default::default()
            })
            .unwrap()
        };
        let rt = runtime();
        crate::Model::load(&rt, &fixture).unwrap();
        assert_eq!(rt.graph_cache_stats().writes, 3);
        // A manifest that vouches for a graph ONNX Runtime cannot parse (as a
        // build of the same version without some operator would refuse it).
        let unet = fs::read_dir(&cache).unwrap().flatten().map(|e| e.path()).find(|p| {
            p.file_name().unwrap().to_string_lossy().starts_with("unet-")
        });
        let unet = unet.unwrap();
        fs::write(unet.join(MODEL_FILE), b"this is not an ONNX graph").unwrap();
        reseal(&unet);
        let rt = runtime();
        crate::Model::load(&rt, &fixture).unwrap();
        assert_eq!(rt.graph_cache_stats(), GraphCacheStats { hits: 2, writes: 1, rejected: 1, skipped: 0 });
        let lines = log.lock().unwrap().clone();
        assert!(lines.iter().any(|l| l.starts_with("unet: cached optimized graph") && l.contains("ONNX Runtime refused it")), "{lines:?}");
        let rt = runtime();
        crate::Model::load(&rt, &fixture).unwrap();
        assert_eq!(rt.graph_cache_stats(), GraphCacheStats { hits: 3, writes: 0, rejected: 0, skipped: 0 });
        fs::remove_dir_all(&cache).ok();
    }

    #[test]
    fn xxh64_matches_the_reference() {
        // From the reference implementation (python-xxhash 3.x).
        let long: Vec<u8> = (0..=255u8).cycle().take(768).chain(*b"xyz").collect();
        let cases: [(&[u8], u64, u64); 5] = [
            (b"", 0xef46db3751d8e999, 0xc4349fc93c010000),
            (b"a", 0xd24ec4f1a98c6e5b, 0x9a7c6d2ea45568c9),
            (b"abc", 0x44bc2cf5ad770999, 0x2ed0f59d6b43ac8b),
            (b"Nobody inspects the spammish repetition", 0xfbcea83c8a378bf1, 0xeb8b157ca26cbf34),
            (&long, 0xe921a1b45bd779f8, 0x179ca0201a65d20e),
        ];
        for (data, seed0, seed1) in cases {
            assert_eq!(xxh64(data, 0), seed0, "{} bytes", data.len());
            assert_eq!(xxh64(data, 0x9E37_79B9_7F4A_7C15), seed1, "{} bytes", data.len());
        }
    }

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kiln-graph-cache-unit-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn every_setting_that_shapes_the_graph_changes_the_key() {
        let dir = scratch("key");
        let model = dir.join("model.onnx");
        fs::write(&model, b"graph").unwrap();
        fs::write(dir.join("model.onnx_data"), b"weights").unwrap();
        let available = vec!["CPUExecutionProvider".to_string()];
        let base = Settings { graph: "unet", onnxruntime: "1.31.1", available: &available, registered: &[], level: GraphOptimization::All };
        let k = |s: &Settings<'_>| key(s, &SourceId::File(&model)).unwrap();
        let k0 = k(&base);
        assert_eq!(k0, k(&base), "the key is stable");
        assert!(k0.dir_name.starts_with("unet-") && k0.dir_name.len() == 5 + 32);
        let gpu = vec!["CUDAExecutionProvider".to_string(), "CPUExecutionProvider".to_string()];
        let variants = [
            Settings { onnxruntime: "1.31.2", ..base },
            Settings { level: GraphOptimization::Extended, ..base },
            Settings { registered: &[Provider::Cuda], ..base },
            Settings { available: &gpu, ..base },
            Settings { graph: "vae_decoder", ..base },
        ];
        for v in &variants {
            assert_ne!(k(v).dir_name, k0.dir_name, "{}", k(v).description);
        }
        // External data beside the graph is part of the source.
        fs::write(dir.join("model.onnx_data"), b"weights, retrained").unwrap();
        assert_ne!(k(&base).dir_name, k0.dir_name);
        // A graph from memory: its bytes decide.
        let (d1, d2) = (OnceLock::new(), OnceLock::new());
        let m1 = key(&base, &SourceId::Memory { bytes: b"rewritten a", dir: &dir, digest: &d1 }).unwrap();
        let m2 = key(&base, &SourceId::Memory { bytes: b"rewritten b", dir: &dir, digest: &d2 }).unwrap();
        assert_ne!(m1.dir_name, m2.dir_name);
        assert!(k0.description.contains(&format!("[{}]", cpu_features().join(","))));
        fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn sampled_digest_sees_truncation_and_torn_blocks() {
        let dir = scratch("digest");
        let p = dir.join("big");
        let data: Vec<u8> = (0..(FULL_HASH_LIMIT + (3 << 20))).map(|i| ((i * 2654435761) >> 13) as u8).collect();
        fs::write(&p, &data).unwrap();
        let (size, d0) = file_digest(&p).unwrap();
        assert_eq!(size, data.len() as u64);
        assert!(d0.starts_with("sampled:"));
        let mut torn = data.clone();
        let mid = torn.len() / 2;
        torn[mid - (1 << 20)..mid + (1 << 20)].fill(0);
        fs::write(&p, &torn).unwrap();
        assert_ne!(file_digest(&p).unwrap().1, d0, "2 MiB zeroed in the middle (more than the sampling stride)");
        fs::remove_dir_all(&dir).ok();
    }
}
