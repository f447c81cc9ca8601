//! The folder layout the diffusers/optimum ONNX exporter writes, and its configs.
//!
//! ```text
//! model_index.json
//! text_encoder/model.onnx   text_encoder/config.json
//! unet/model.onnx           unet/config.json
//! vae_decoder/model.onnx    vae_decoder/config.json
//! vae_encoder/model.onnx    (optional, img2img)
//! tokenizer/vocab.json + merges.txt (or tokenizer.json), tokenizer_config.json
//! scheduler/scheduler_config.json
//! unet_controlnet/model.onnx, controlnet/<name>/model.onnx  (optional, ControlNet)
//! ```
//!
//! SDXL exports add `text_encoder_2/` (CLIP with projection) and `tokenizer_2/`;
//! a refiner-style export has only those two, which then serve as the text
//! encoder and tokenizer.
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{Error, ErrorKind, Result};

/// Paths and parsed configs of a model folder.
#[derive(Debug, Clone)]
pub struct ModelLayout {
    /// The model folder.
    pub root: PathBuf,
    /// `text_encoder/model.onnx` (a refiner-style SDXL export without one:
    /// `text_encoder_2/model.onnx`).
    pub text_encoder: PathBuf,
    /// SDXL: `text_encoder_2/model.onnx` when the export also has `text_encoder/`.
    pub text_encoder_2: Option<PathBuf>,
    /// SDXL: `tokenizer_2/`, beside `text_encoder_2`.
    pub tokenizer_2_dir: Option<PathBuf>,
    /// SDXL: the second text encoder's config.
    pub text_config_2: Option<TextConfig>,
    /// SDXL: the U-Net's added conditioning and the pipeline's flags.
    pub xl: Option<XlConfig>,
    /// `unet/model.onnx`.
    pub unet: PathBuf,
    /// `vae_decoder/model.onnx`.
    pub vae_decoder: PathBuf,
    /// `vae_encoder/model.onnx`, when the export has one.
    pub vae_encoder: Option<PathBuf>,
    /// `preview_decoder/model.onnx`: an optional small decoder (TAESD-style)
    /// used for step previews instead of the linear projection.
    pub preview_decoder: Option<PathBuf>,
    /// Latents are divided by this before the preview decoder
    /// (`preview_decoder/config.json` `scaling_factor`; 1.0 for TAESD).
    pub preview_scaling_factor: f32,
    /// `tokenizer/`.
    pub tokenizer_dir: PathBuf,
    /// `unet_controlnet/model.onnx`: the U-Net taking ControlNet residuals,
    /// when the export has one (see [`crate::model::controlnet`]).
    pub unet_controlnet: Option<PathBuf>,
    /// Names of the ControlNets under `controlnet/`, sorted.
    pub controlnets: Vec<String>,
    /// The U-Net's config.
    pub unet_config: UnetConfig,
    /// The VAE's config.
    pub vae_config: VaeConfig,
    /// The text encoder's config.
    pub text_config: TextConfig,
    /// `scheduler/scheduler_config.json`, parsed later by the scheduler.
    pub scheduler_config: Value,
    /// Per-graph config files the export lacks (older diffusers-script exports
    /// have none); their values come from defaults and the graphs.
    pub missing_configs: Vec<String>,
    /// How the text encoders' and U-Nets' weights are stored for running (the
    /// load option [`crate::model::ModelOptions::quantization`]). Kept with the
    /// paths so every graph loaded from them, in views and LoRA sets too, is
    /// loaded the same way.
    pub quantization: super::quantize::Quantization,
    /// Whether attention runs fused (the load option
    /// [`crate::model::ModelOptions::attention`]), kept for the same reason.
    pub attention: super::attention::Attention,
    /// Whether the U-Net and text encoders get LoRA slots (the load option
    /// [`crate::model::ModelOptions::lora_slots`]), kept for the same reason.
    pub lora_slots: bool,
}

/// What Kiln needs from `unet/config.json`.
#[derive(Debug, Clone)]
pub struct UnetConfig {
    /// Latent side of the model's native resolution.
    pub sample_size: usize,
    /// Input channels (4, or 9 for inpainting U-Nets).
    pub in_channels: usize,
    /// Number of resolution levels; the U-Net halves the latent `levels - 1` times.
    pub levels: usize,
    /// LCM-distilled U-Nets embed the guidance scale (`timestep_cond`).
    pub time_cond_proj_dim: Option<usize>,
    /// Resnets per down level (2 when absent, as diffusers); SGM-named SDXL
    /// LoRA keys are mapped with it.
    pub layers_per_block: usize,
}

/// What Kiln needs from the VAE's config.
#[derive(Debug, Clone)]
pub struct VaeConfig {
    /// Latent channels (4 for SD 1.x/2.x).
    pub latent_channels: usize,
    /// Latents are multiplied by this after encoding, divided before decoding.
    pub scaling_factor: f32,
    /// Pixels per latent pixel along each axis (8 for SD).
    pub downsampling: usize,
    /// Added after dividing by `scaling_factor` before decoding, subtracted
    /// before scaling after encoding (`shift_factor`; 0 when absent or null,
    /// as for SD 1.x, 2.x and SDXL).
    pub shift_factor: f32,
    /// Channels at full resolution (`block_out_channels[0]`; 128 for SD),
    /// which sets a decode's memory per pixel.
    pub full_res_channels: usize,
}

/// SDXL's added conditioning (`addition_embed_type = "text_time"`).
#[derive(Debug, Clone, PartialEq)]
pub struct XlConfig {
    /// `unet/config.json` `addition_time_embed_dim`.
    pub addition_time_embed_dim: Option<usize>,
    /// `unet/config.json` `projection_class_embeddings_input_dim`: time-id
    /// embeddings plus the pooled text embedding.
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// `model_index.json` `force_zeros_for_empty_prompt` (default true): an
    /// empty negative prompt becomes zero embeddings instead of encoded "".
    pub force_zeros_for_empty_prompt: bool,
    /// `model_index.json` `requires_aesthetics_score` (refiner): time ids hold
    /// an aesthetic score instead of the target size.
    pub requires_aesthetics_score: bool,
}

/// What Kiln needs from `text_encoder/config.json`.
#[derive(Debug, Clone)]
pub struct TextConfig {
    /// Width of the embeddings.
    pub hidden_size: usize,
    /// Longest token sequence the encoder accepts.
    pub max_position_embeddings: usize,
}

impl ModelLayout {
    /// Reads and validates a model folder, naming the first missing or malformed file.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::new(
                ErrorKind::ModelNotFound,
                format!("model folder {} does not exist or is not a folder", root.display()),
            ));
        }
        let index = root.join("model_index.json");
        let index_json = read_json(&index)?;
        if !index_json.is_object() {
            return Err(Error::model(format!("{} is not a JSON object", index.display())));
        }
        let need = |rel: &str| -> Result<PathBuf> {
            let p = root.join(rel);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::new(ErrorKind::ModelNotFound, format!("model file {} is missing", p.display())))
            }
        };
        // SDXL: a second encoder; a refiner-style export has only that one.
        let has_first = root.join("text_encoder").join("model.onnx").is_file();
        let has_second = root.join("text_encoder_2").join("model.onnx").is_file();
        let (text_encoder, text_encoder_2, first_dir, first_tokenizer) = match (has_first, has_second) {
            (false, true) => (need("text_encoder_2/model.onnx")?, None, "text_encoder_2", "tokenizer_2"),
            (_, second) => {
                let te = need("text_encoder/model.onnx")?;
                (te, Some(root.join("text_encoder_2").join("model.onnx")).filter(|_| second), "text_encoder", "tokenizer")
            }
        };
        let unet = need("unet/model.onnx")?;
        let vae_decoder = need("vae_decoder/model.onnx")?;
        let vae_encoder = Some(root.join("vae_encoder").join("model.onnx")).filter(|p| p.is_file());
        let preview_decoder = Some(root.join("preview_decoder").join("model.onnx")).filter(|p| p.is_file());
        let preview_config = root.join("preview_decoder").join("config.json");
        let preview_scaling_factor = if preview_decoder.is_some() && preview_config.is_file() {
            get_f64(&read_json(&preview_config)?, "scaling_factor", &preview_config)?.unwrap_or(1.0) as f32
        } else {
            1.0
        };
        let check_tokenizer = |dir: &Path| -> Result<()> {
            let has_bpe = dir.join("vocab.json").is_file() && dir.join("merges.txt").is_file();
            if !has_bpe && !dir.join("tokenizer.json").is_file() {
                return Err(Error::new(
                    ErrorKind::ModelNotFound,
                    format!("tokenizer files are missing: {} needs vocab.json and merges.txt (or tokenizer.json)", dir.display()),
                ));
            }
            Ok(())
        };
        let tokenizer_dir = root.join(first_tokenizer);
        check_tokenizer(&tokenizer_dir)?;
        let tokenizer_2_dir = match &text_encoder_2 {
            Some(_) => {
                let dir = root.join("tokenizer_2");
                check_tokenizer(&dir)?;
                Some(dir)
            }
            None => None,
        };
        let scheduler_config = read_json(&need("scheduler/scheduler_config.json")?)?;

        // Exports made by diffusers' older ONNX script carry no per-graph
        // config.json; Kiln then uses SD 1.x defaults and, in Model::load,
        // takes channel counts and widths from the graphs themselves.
        let mut missing_configs = Vec::new();
        let mut optional_json = |rel: &str| -> Result<Value> {
            let p = root.join(rel);
            if p.is_file() {
                read_json(&p)
            } else {
                missing_configs.push(rel.to_string());
                Ok(Value::Object(Default::default()))
            }
        };
        let unet_json = optional_json("unet/config.json")?;
        let unet_path = root.join("unet").join("config.json");
        let unet_config = UnetConfig {
            sample_size: get_usize_in(&unet_json, "sample_size", &unet_path, 1..=1024)?.unwrap_or(64),
            in_channels: get_usize_in(&unet_json, "in_channels", &unet_path, 1..=64)?.unwrap_or(4),
            levels: in_range(get_array_len(&unet_json, "block_out_channels", &unet_path)?, "block_out_channels", &unet_path, 1..=8)?.unwrap_or(4),
            time_cond_proj_dim: get_usize(&unet_json, "time_cond_proj_dim", &unet_path)?,
            layers_per_block: get_usize_in(&unet_json, "layers_per_block", &unet_path, 1..=16)?.unwrap_or(2),
        };

        // optimum writes the AutoencoderKL config beside each VAE half.
        let vae_path = root.join("vae_decoder").join("config.json");
        let vae_json = optional_json("vae_decoder/config.json")?;
        let vae_levels = in_range(get_array_len(&vae_json, "block_out_channels", &vae_path)?, "block_out_channels", &vae_path, 1..=8)?.unwrap_or(4);
        let vae_config = VaeConfig {
            latent_channels: get_usize_in(&vae_json, "latent_channels", &vae_path, 1..=64)?.unwrap_or(4),
            scaling_factor: match get_f64(&vae_json, "scaling_factor", &vae_path)? {
                Some(f) if !(f.is_finite() && f > 0.0 && (f as f32).is_normal()) => {
                    return Err(Error::model(format!("{}: `scaling_factor` {f} must be a positive number", vae_path.display())))
                }
                f => f.unwrap_or(0.18215) as f32,
            },
            downsampling: 1 << vae_levels.saturating_sub(1),
            shift_factor: match get_f64(&vae_json, "shift_factor", &vae_path)? {
                Some(f) if !f.is_finite() => {
                    return Err(Error::model(format!("{}: `shift_factor` {f} must be a finite number", vae_path.display())))
                }
                f => f.unwrap_or(0.0) as f32,
            },
            full_res_channels: vae_json
                .get("block_out_channels")
                .and_then(|v| v.as_array())
                .and_then(|a| a.first())
                .and_then(|v| v.as_u64())
                .map_or(128, |c| c as usize),
        };

        let mut text_config_of = |dir: &str| -> Result<TextConfig> {
            let text_path = root.join(dir).join("config.json");
            let text_json = optional_json(&format!("{dir}/config.json"))?;
            Ok(TextConfig {
                hidden_size: get_usize_in(&text_json, "hidden_size", &text_path, 1..=65536)?.unwrap_or(768),
                max_position_embeddings: get_usize_in(&text_json, "max_position_embeddings", &text_path, 1..=4096)?.unwrap_or(77),
            })
        };
        let text_config = text_config_of(first_dir)?;
        let text_config_2 = match &text_encoder_2 {
            Some(_) => Some(text_config_of("text_encoder_2")?),
            None => None,
        };
        let xl = match unet_json.get("addition_embed_type").and_then(Value::as_str) {
            Some("text_time") => Some(XlConfig {
                addition_time_embed_dim: get_usize_in(&unet_json, "addition_time_embed_dim", &unet_path, 1..=65536)?,
                projection_class_embeddings_input_dim: get_usize_in(
                    &unet_json,
                    "projection_class_embeddings_input_dim",
                    &unet_path,
                    1..=1 << 20,
                )?,
                force_zeros_for_empty_prompt: get_bool(&index_json, "force_zeros_for_empty_prompt", &index)?.unwrap_or(true),
                requires_aesthetics_score: get_bool(&index_json, "requires_aesthetics_score", &index)?.unwrap_or(false),
            }),
            _ => None,
        };

        Ok(Self {
            root: root.to_path_buf(),
            text_encoder,
            text_encoder_2,
            tokenizer_2_dir,
            text_config_2,
            xl,
            unet,
            vae_decoder,
            vae_encoder,
            preview_decoder,
            preview_scaling_factor,
            tokenizer_dir,
            unet_controlnet: super::controlnet::unet_path(root),
            controlnets: super::controlnet::available(root),
            unet_config,
            vae_config,
            text_config,
            scheduler_config,
            missing_configs,
            quantization: Default::default(),
            attention: Default::default(),
            lora_slots: false,
        })
    }

    /// Width and height the model was trained at.
    pub fn default_size(&self) -> usize {
        self.unet_config.sample_size * self.vae_config.downsampling
    }

    /// Image sizes must be multiples of this.
    pub fn size_multiple(&self) -> usize {
        self.vae_config.downsampling * (1 << self.unet_config.levels.saturating_sub(1))
    }
}

/// Reads a JSON file; a missing file is `ModelNotFound`, bad JSON `ModelInvalid`.
pub(crate) fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::ModelNotFound } else { ErrorKind::Io };
        Error::new(kind, format!("cannot read {}: {e}", path.display()))
    })?;
    serde_json::from_str(&text)
        .or_else(|e| serde_json::from_str(&quote_non_finite(&text)).map_err(|_| e))
        .map_err(|e| Error::model(format!("{} is not valid JSON: {e}", path.display())))
}

/// Python's `json.dumps` writes `Infinity`, `-Infinity` and `NaN` (diffusers'
/// DPM-Solver configs hold `"lambda_min_clipped": -Infinity`); strict JSON has
/// no such literals, so they become the strings the configs' readers accept.
fn quote_non_finite(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let literal = ["-Infinity", "Infinity", "NaN"].into_iter().find(|l| rest.starts_with(l));
        match literal {
            Some("NaN") => {
                out.push_str("null");
                rest = &rest[3..];
            }
            Some(l) => {
                out.push('"');
                out.push_str(l);
                out.push('"');
                rest = &rest[l.len()..];
            }
            _ => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}


/// An optional integer field that must lie in `range`: absurd values (a
/// latent of 0 channels, 2^40-pixel samples) are the file's error at load,
/// not a confusing failure, or an overflow, later.
fn get_usize_in(v: &Value, key: &str, file: &Path, range: std::ops::RangeInclusive<usize>) -> Result<Option<usize>> {
    in_range(get_usize(v, key, file)?, key, file, range)
}

fn in_range(n: Option<usize>, key: &str, file: &Path, range: std::ops::RangeInclusive<usize>) -> Result<Option<usize>> {
    match n {
        Some(n) if !range.contains(&n) => Err(Error::model(format!(
            "{}: `{key}` is {n}; Kiln reads {}..={}",
            file.display(),
            range.start(),
            range.end()
        ))),
        n => Ok(n),
    }
}

fn get_usize(v: &Value, key: &str, file: &Path) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| Error::model(format!("{}: `{key}` must be a non-negative integer", file.display()))),
    }
}

fn get_bool(v: &Value, key: &str, file: &Path) -> Result<Option<bool>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x.as_bool().map(Some).ok_or_else(|| Error::model(format!("{}: `{key}` must be true or false", file.display()))),
    }
}

fn get_f64(v: &Value, key: &str, file: &Path) -> Result<Option<f64>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(x) => x
            .as_f64()
            .map(Some)
            .ok_or_else(|| Error::model(format!("{}: `{key}` must be a number", file.display()))),
    }
}

fn get_array_len(v: &Value, key: &str, file: &Path) -> Result<Option<usize>> {
    match v.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a)) if !a.is_empty() => Ok(Some(a.len())),
        Some(_) => Err(Error::model(format!("{}: `{key}` must be a non-empty list", file.display()))),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn python_non_finite_literals_are_read() {
        let fixed = super::quote_non_finite(r#"{"a": -Infinity, "b": "NaN stays", "c": NaN, "d": Infinity}"#);
        let v: serde_json::Value = serde_json::from_str(&fixed).unwrap();
        assert_eq!(v["a"], "-Infinity");
        assert_eq!(v["b"], "NaN stays");
        assert!(v["c"].is_null());
        assert_eq!(v["d"], "Infinity");
    }
}
