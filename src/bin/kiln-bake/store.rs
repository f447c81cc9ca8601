//! The output folder: atomic writes, content keys beside the outputs, and the
//! stable name hash that assigns assets to shards.
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::manifest::Asset;

/// Temporary files end with this; a killed bake can leave them, the next one removes them.
pub const TMP_SUFFIX: &str = ".kiln-tmp";

/// Key files end with this.
pub const KEY_SUFFIX: &str = ".kiln-key";

/// 64-bit FNV-1a: stable across platforms and Rust versions (std's hasher is not).
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Fnv {
    /// A fresh hasher.
    pub fn new() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
    /// Mixes `bytes` in.
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
    /// Mixes a length-prefixed field in, so ("ab","c") and ("a","bc") differ.
    pub fn field(&mut self, bytes: &[u8]) {
        self.write(&(bytes.len() as u64).to_le_bytes());
        self.write(bytes);
    }
    /// The hash.
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// Whether `name` belongs to shard `index` (1-based) of `count`.
pub fn in_shard(name: &str, index: u32, count: u32) -> bool {
    let mut h = Fnv::new();
    h.write(name.as_bytes());
    (h.finish() % count as u64) as u32 == index - 1
}

/// The identity of a model folder: every file's relative path, size and bytes,
/// in sorted order. Renaming or moving the folder keeps it; changing any
/// weight, config or tokenizer file changes it.
pub fn model_identity(dir: &Path) -> std::io::Result<String> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = Fnv::new();
    let mut buf = vec![0u8; 1 << 20];
    for f in &files {
        let rel = f.strip_prefix(dir).unwrap_or(f).to_string_lossy().replace('\\', "/");
        h.field(rel.as_bytes());
        let mut file = std::fs::File::open(f)?;
        h.write(&file.metadata()?.len().to_le_bytes());
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
        }
    }
    Ok(format!("{:016x}", h.finish()))
}

/// The identity of one file: its size and bytes. Moving or renaming it keeps it.
pub fn file_identity(path: &Path) -> std::io::Result<String> {
    let mut h = Fnv::new();
    let mut file = std::fs::File::open(path)?;
    h.write(&file.metadata()?.len().to_le_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)?;
        if n == 0 {
            break;
        }
        h.write(&buf[..n]);
    }
    Ok(format!("{:016x}", h.finish()))
}

/// The identity of an upscaler path, as the library reads it: a folder as a
/// model folder (every file: `model.onnx`, `config.json`, external weights),
/// else the ONNX file and, when there is one, the settings `.json` of its
/// name beside it.
pub fn upscaler_identity(path: &Path) -> std::io::Result<String> {
    if path.is_dir() {
        return model_identity(path);
    }
    let graph = file_identity(path)?;
    let settings = path.with_extension("json");
    Ok(match settings.is_file() {
        true => format!("{graph} settings {}", file_identity(&settings)?),
        false => graph,
    })
}

/// The identities of the files an asset is made from (each as
/// [`model_identity`], [`file_identity`] or [`upscaler_identity`] gives it).
#[derive(Debug, Clone, Default)]
pub struct Identities {
    /// The model folder's, and a refiner's after it when there is one; for
    /// a `source` asset, what cuts its sprite out (the matting graph's
    /// files, or the chroma key), or nothing.
    pub model: String,
    /// Each LoRA file's, in the order of `asset.loras`.
    pub loras: Vec<String>,
    /// Each embedding file's, in the order of `asset.embeddings`.
    pub embeddings: Vec<String>,
    /// Each control image's, in the order of `asset.controls`.
    pub controls: Vec<String>,
    /// The upscaler's files, when the asset is upscaled.
    pub upscaler: Option<String>,
    /// The init image's, when the asset starts from a picture.
    pub init_image: Option<String>,
    /// The inpainting mask's.
    pub mask: Option<String>,
    /// The picture's, for a `source` asset.
    pub source: Option<String>,
}

/// The content key of an asset: its resolved settings, the identities of the
/// files it is made from, each LoRA's scale, and Kiln's version (a new Kiln
/// may make other pixels). Each kind of file enters the key only when the
/// asset has one, so an asset keeps the key it had before that kind existed
/// (an upscale's tile and context, a picture's strength, `extend` and
/// `make_tileable` are in the settings).
pub fn content_key(asset: &Asset, ids: &Identities) -> String {
    let settings = asset.settings_text();
    let mut h = Fnv::new();
    h.field(b"kiln-bake key v1");
    h.field(kiln::VERSION.as_bytes());
    h.field(ids.model.as_bytes());
    h.field(settings.as_bytes());
    for (lora, identity) in asset.loras.iter().zip(&ids.loras) {
        h.field(b"lora");
        h.field(identity.as_bytes());
        h.field(&lora.scale.to_bits().to_le_bytes());
        // Only when given: keys of LoRAs with one strength stay what they were.
        if let Some(t) = lora.text_encoder_scale {
            h.field(b"text encoder scale");
            h.field(&t.to_bits().to_le_bytes());
        }
    }
    for (embedding, identity) in asset.embeddings.iter().zip(&ids.embeddings) {
        h.field(b"embedding");
        h.field(identity.as_bytes());
        h.field(embedding.token.as_deref().unwrap_or("").as_bytes());
    }
    // The control images' bytes (their settings are in `settings`).
    for identity in &ids.controls {
        h.field(b"control image");
        h.field(identity.as_bytes());
    }
    for (tag, identity) in [(&b"upscaler"[..], &ids.upscaler), (b"init image", &ids.init_image), (b"mask", &ids.mask), (b"source", &ids.source)] {
        if let Some(identity) = identity {
            h.field(tag);
            h.field(identity.as_bytes());
        }
    }
    format!("{:016x}", h.finish())
}

/// What a key file records.
#[derive(Debug, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KeyFile {
    /// The content key.
    pub key: String,
    /// Output file names, relative to the output folder.
    pub outputs: Vec<String>,
    /// The settings the key was made from, for people reading the file.
    pub settings: serde_json::Value,
}

/// The key files in `out`, by the name they are for, in name order. Those
/// that cannot be read or parsed are left out: `--prune` removes only what a
/// key file it understands lists.
pub fn key_files(out: &Path) -> Vec<(String, KeyFile)> {
    let Ok(entries) = std::fs::read_dir(out) else { return Vec::new() };
    let mut files: Vec<(String, KeyFile)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let name = file.strip_suffix(KEY_SUFFIX)?.to_string();
            let key = serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok()?;
            Some((name, key))
        })
        .collect();
    files.sort_by(|a, b| a.0.cmp(&b.0));
    files
}

/// `<name>.kiln-key`: the file name of `name`'s key.
pub fn key_name(name: &str) -> String {
    format!("{name}{KEY_SUFFIX}")
}

/// `DIR/<name>.kiln-key`.
pub fn key_path(out: &Path, name: &str) -> PathBuf {
    out.join(key_name(name))
}

/// Whether `name` is up to date: its key file holds `key` and every output it lists exists.
pub fn is_current(out: &Path, name: &str, key: &str) -> bool {
    let Ok(text) = std::fs::read_to_string(key_path(out, name)) else { return false };
    let Ok(file) = serde_json::from_str::<KeyFile>(&text) else { return false };
    file.key == key && file.outputs.iter().all(|o| out.join(o).is_file())
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed to disk, then renamed over `path`. A reader (or a killed bake)
/// sees the old file or the new one, never a part.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| std::io::Error::other("no file name"))?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.{}{TMP_SUFFIX}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        pause_before_rename(&tmp);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Test hook: with `KILN_BAKE_PAUSE_BEFORE_RENAME_MS` set, say that a
/// temporary file is complete and wait before renaming it, so a test can kill
/// the bake at the worst moment.
fn pause_before_rename(tmp: &Path) {
    if let Some(ms) = std::env::var("KILN_BAKE_PAUSE_BEFORE_RENAME_MS").ok().and_then(|v| v.parse::<u64>().ok()) {
        eprintln!("kiln-bake: wrote temporary {}", tmp.display());
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

/// Removes temporary files left by killed bakes in `out`; returns how many.
pub fn remove_stale_temporaries(out: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for e in std::fs::read_dir(out)? {
        let p = e?.path();
        if p.file_name().is_some_and(|f| f.to_string_lossy().ends_with(TMP_SUFFIX)) && p.is_file() {
            std::fs::remove_file(&p)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_the_reference_values() {
        // Published FNV-1a 64 test vectors.
        let h = |s: &str| {
            let mut f = Fnv::new();
            f.write(s.as_bytes());
            f.finish()
        };
        assert_eq!(h(""), 0xcbf29ce484222325);
        assert_eq!(h("a"), 0xaf63dc4c8601ec8c);
        assert_eq!(h("foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn shards_are_disjoint_and_cover_every_name() {
        let names: Vec<String> = (0..500).map(|i| format!("asset_{i}")).collect();
        for count in 1..=7u32 {
            let mut sizes = vec![0usize; count as usize];
            for n in &names {
                let owners: Vec<u32> = (1..=count).filter(|&i| in_shard(n, i, count)).collect();
                assert_eq!(owners.len(), 1, "{n} in {count} shards: {owners:?}");
                sizes[owners[0] as usize - 1] += 1;
            }
            let expected = names.len() / count as usize;
            println!("{count} shards: sizes {sizes:?}");
            assert!(sizes.iter().all(|&s| s * 2 >= expected), "a shard got under half its share: {sizes:?}");
        }
    }

    #[test]
    fn an_upscaler_file_is_known_by_its_bytes_and_its_settings_file() {
        let dir = std::env::temp_dir().join(format!("kiln-bake-store-upscaler-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("folder")).unwrap();
        let graph = dir.join("x2.onnx");
        std::fs::write(&graph, b"graph").unwrap();
        let alone = upscaler_identity(&graph).unwrap();
        assert_eq!(alone, file_identity(&graph).unwrap(), "without settings: the file's identity");
        std::fs::write(dir.join("x2.json"), b"{\"scale\": 2}").unwrap();
        let with = upscaler_identity(&graph).unwrap();
        assert_ne!(with, alone, "a settings file beside it is part of it");
        std::fs::write(dir.join("x2.json"), b"{\"scale\": 4}").unwrap();
        assert_ne!(upscaler_identity(&graph).unwrap(), with, "and so are its bytes");
        // A folder is known as a model folder is.
        std::fs::write(dir.join("folder/model.onnx"), b"graph").unwrap();
        assert_eq!(upscaler_identity(&dir.join("folder")).unwrap(), model_identity(&dir.join("folder")).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("kiln-bake-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        std::fs::write(dir.join(format!(".b.png.1{TMP_SUFFIX}")), b"partial").unwrap();
        assert_eq!(remove_stale_temporaries(&dir).unwrap(), 1);
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("a.bin")]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
