//! Textual-inversion embeddings: new prompt tokens whose vectors come from a file.
//!
//! Read from `.safetensors` in the layouts in use: AUTOMATIC1111's
//! `emb_params` `[vectors, dim]` (token = the file name without extension),
//! `string_to_param.*`, and diffusers' `learned_embeds.safetensors` (one
//! tensor named after its token, `[dim]` or `[vectors, dim]`). A token with
//! several vectors becomes that many ids, as diffusers names them (`tok`,
//! `tok_1`, ...). The vectors are appended to the text encoder's token
//! embedding table, handed to ONNX Runtime as an initializer override.
//! SDXL embeddings in the common layout (AUTOMATIC1111, civitai) hold two
//! tensors: `clip_l` `[vectors, 768]` for `text_encoder` and `clip_g`
//! `[vectors, 1280]` for `text_encoder_2`; each is appended to its encoder's
//! table and its token added to that encoder's tokenizer, as diffusers'
//! `load_textual_inversion` does when called once per encoder. Which family
//! an embedding is for is checked against the model when it is applied.
//! Pickled `.pt`/`.bin` files are refused (reading pickles runs arbitrary
//! code).
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// A textual-inversion file and the prompt token it is used by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmbeddingSpec {
    /// The `.safetensors` file.
    pub path: PathBuf,
    /// The prompt token; `None` = the token the file names (diffusers'
    /// layout), else the file name without extension (AUTOMATIC1111).
    pub token: Option<String>,
}

/// An embedding read from its file.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    /// The prompt token.
    pub token: String,
    /// One row per vector, each `dim` wide: for SD 1.x/2.x the only encoder,
    /// for SDXL the first (`clip_l`).
    pub vectors: Vec<Vec<f32>>,
    /// SDXL embeddings: the second encoder's vectors (`clip_g`); `None` for an
    /// SD 1.x/2.x embedding.
    pub vectors_2: Option<Vec<Vec<f32>>>,
}

fn invalid(path: &Path, what: impl std::fmt::Display) -> Error {
    Error::model(format!("embedding {}: {what}", path.display()))
}

impl Embedding {
    /// Reads the file of `spec`.
    pub fn read(spec: &EmbeddingSpec) -> Result<Self> {
        let path = &spec.path;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if matches!(ext.as_str(), "pt" | "bin" | "ckpt" | "pth") {
            return Err(Error::unsupported(format!(
                "embedding {}: pickled PyTorch files are not read (unpickling can run code); convert it to .safetensors",
                path.display()
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::ModelNotFound } else { ErrorKind::Io };
            Error::new(kind, format!("cannot read embedding {}: {e}", path.display()))
        })?;
        Self::parse(&bytes, spec)
    }

    /// Parses the `.safetensors` bytes of `spec`'s file (its path names it in
    /// messages and gives AUTOMATIC1111's token).
    pub fn parse(bytes: &[u8], spec: &EmbeddingSpec) -> Result<Self> {
        let path = &spec.path;
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| invalid(path, format!("not readable safetensors: {e}")))?;
        let names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
        let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let token_from = |file_token: String| -> Result<String> {
            let token = spec.token.clone().unwrap_or(file_token);
            if token.trim().is_empty() || token.chars().any(char::is_whitespace) {
                return Err(Error::invalid(format!("embedding {}: token {token:?} must be one word without spaces", path.display())));
            }
            Ok(token)
        };
        let has = |k: &str| names.iter().any(|n| n == k);
        if has("clip_l") || has("clip_g") {
            if !(has("clip_l") && has("clip_g")) {
                return Err(invalid(path, format!("an SDXL embedding needs both `clip_l` and `clip_g`, found {names:?}")));
            }
            let (vectors, vectors_2) = (matrix(&st, path, "clip_l")?, matrix(&st, path, "clip_g")?);
            if vectors.len() != vectors_2.len() {
                return Err(invalid(path, format!("`clip_l` has {} vectors but `clip_g` {}", vectors.len(), vectors_2.len())));
            }
            return Ok(Self { token: token_from(stem)?, vectors, vectors_2: Some(vectors_2) });
        }
        let (key, file_token) = if has("emb_params") {
            ("emb_params".to_string(), stem)
        } else if let Some(k) = names.iter().find(|n| n.starts_with("string_to_param")) {
            (k.clone(), stem)
        } else if names.len() == 1 {
            (names[0].clone(), names[0].clone())
        } else {
            return Err(Error::adapter_mismatch(format!("embedding {}: expected `emb_params`, `string_to_param`, `clip_l` + `clip_g` or a single tensor, found {names:?}", path.display())));
        };
        let vectors = matrix(&st, path, &key)?;
        Ok(Self { token: token_from(file_token)?, vectors, vectors_2: None })
    }

    /// `true` for an SDXL embedding (`clip_l` + `clip_g`).
    pub fn is_sdxl(&self) -> bool {
        self.vectors_2.is_some()
    }
}

/// The tensor `key` as rows of f32: `[dim]` is one vector, `[vectors, dim]` several.
fn matrix(st: &safetensors::SafeTensors<'_>, path: &Path, key: &str) -> Result<Vec<Vec<f32>>> {
    let view = st.tensor(key).map_err(|e| invalid(path, e))?;
    let values: Vec<f32> = match view.dtype() {
        safetensors::Dtype::F32 => view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        safetensors::Dtype::F16 => view.data().chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        safetensors::Dtype::BF16 => view.data().chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(invalid(path, format!("`{key}` has element type {other:?}"))),
    };
    let dim = match view.shape() {
        [d] => *d,
        [_, d] => *d,
        other => return Err(invalid(path, format!("`{key}` has shape {other:?}; expected [dim] or [vectors, dim]"))),
    };
    if dim == 0 || values.is_empty() {
        return Err(invalid(path, format!("`{key}` is empty")));
    }
    Ok(values.chunks(dim).map(<[f32]>::to_vec).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, tensors: &[(&str, Vec<usize>)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("kiln-embedding-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let data: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s)| (n.to_string(), s.clone(), (0..s.iter().product::<usize>()).flat_map(|i| (i as f32).to_le_bytes()).collect()))
            .collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
            .iter()
            .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
            .collect();
        let path = dir.join(name);
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        path
    }

    #[test]
    fn reads_a1111_and_diffusers_layouts_and_refuses_the_rest() {
        let a1111 = write("brick-style.safetensors", &[("emb_params", vec![2, 4])]);
        let e = Embedding::read(&EmbeddingSpec { path: a1111.clone(), token: None }).unwrap();
        assert_eq!(e.token, "brick-style");
        assert_eq!(e.vectors, vec![vec![0.0, 1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0, 7.0]]);
        let named = Embedding::read(&EmbeddingSpec { path: a1111, token: Some("<b>".into()) }).unwrap();
        assert_eq!(named.token, "<b>");
        let diffusers = write("learned_embeds.safetensors", &[("<moss>", vec![4])]);
        let e = Embedding::read(&EmbeddingSpec { path: diffusers, token: None }).unwrap();
        assert_eq!((e.token.as_str(), e.vectors.len()), ("<moss>", 1));
        // A1111's older layout: the vectors under `string_to_param.*`, the token from the file name.
        let older = write("old-style.safetensors", &[("string_to_param.*", vec![3, 4])]);
        let e = Embedding::read(&EmbeddingSpec { path: older, token: None }).unwrap();
        assert_eq!((e.token.as_str(), e.vectors.len(), e.vectors[2][3]), ("old-style", 3, 11.0));
        let sdxl = write("xl.safetensors", &[("clip_l", vec![2, 4]), ("clip_g", vec![2, 6])]);
        let e = Embedding::read(&EmbeddingSpec { path: sdxl, token: None }).unwrap();
        assert_eq!((e.token.as_str(), e.vectors.len(), e.vectors[1][3]), ("xl", 2, 7.0));
        let g = e.vectors_2.as_ref().expect("clip_g read");
        assert_eq!((g.len(), g[1].len(), g[1][5]), (2, 6, 11.0));
        assert!(e.is_sdxl());
        let half = write("half-xl.safetensors", &[("clip_l", vec![1, 4])]);
        assert_eq!(Embedding::read(&EmbeddingSpec { path: half, token: None }).unwrap_err().kind(), ErrorKind::ModelInvalid);
        let uneven = write("uneven-xl.safetensors", &[("clip_l", vec![1, 4]), ("clip_g", vec![2, 6])]);
        assert_eq!(Embedding::read(&EmbeddingSpec { path: uneven, token: None }).unwrap_err().kind(), ErrorKind::ModelInvalid);
        let pt = Embedding::read(&EmbeddingSpec { path: "x.pt".into(), token: None }).unwrap_err();
        assert_eq!(pt.kind(), ErrorKind::Unsupported);
        let spaced = write("s.safetensors", &[("emb_params", vec![1, 4])]);
        assert_eq!(Embedding::read(&EmbeddingSpec { path: spaced, token: Some("a b".into()) }).unwrap_err().kind(), ErrorKind::InvalidArgument);
    }
}
