//! Reading LoRA `.safetensors` files in the layouts trainers and hubs use.
//!
//! - kohya-ss (sd-scripts, most Civitai files): `lora_unet_<module>` and
//!   `lora_te_<module>` with `.lora_down.weight`, `.lora_up.weight` and an
//!   optional scalar `.alpha`; the module path has its dots turned into `_`.
//!   SDXL files name the encoders `lora_te1_`/`lora_te2_` and the U-Net's
//!   modules in the original SGM naming (`input_blocks_4_1_...`), which
//!   [`super::sgm`] maps to diffusers' once the model's U-Net config is known.
//! - diffusers/PEFT: `unet.<module>`, `text_encoder.<module>` and (SDXL)
//!   `text_encoder_2.<module>` with
//!   `.lora_A.weight`/`.lora_B.weight`; alpha from the `lora_adapter_metadata`
//!   JSON that diffusers writes (`unet.lora_alpha`, `unet.r`, `*.alpha_pattern`),
//!   else alpha = rank. The older diffusers names `.lora.down/.lora.up`,
//!   `.lora_linear_layer.down/up` and `processor.to_q_lora.down` read the same.
//!
//! - LyCORIS LoHa (`.hada_w1_a`, `.hada_w1_b`, `.hada_w2_a`, `.hada_w2_b`) and
//!   LoKr (`.lokr_w1` or `.lokr_w1_a`/`_b`, `.lokr_w2` or `.lokr_w2_a`/`_b`),
//!   in the kohya layout LyCORIS writes, with `.alpha`.
//!
//! - DoRA: a module's magnitude, PEFT `lora_magnitude_vector` (one value
//!   per output row) or kohya/LyCORIS `.dora_scale` (per output row, or per
//!   input channel with LyCORIS's `wd_on_out = False`), on LoRA, LoHa or LoKr.
//!
//! - LyCORIS's Tucker cores (`use_tucker`) on convolutions: LoCon's
//!   `.lora_mid.weight`, LoHa's `.hada_t1`/`.hada_t2`, LoKr's `.lokr_t2`.
//!
//! - LyCORIS full (`algo=full`): the weight difference `.diff` itself, and
//!   `.diff_b` for the layer's bias (`diff_b` is read with any kind, as
//!   ComfyUI does).
//!
//! The delta of a module is (alpha / rank) · the factors' product
//! ([`super::factors`]). Norm adapters (`w_norm`/`b_norm`) are refused by name.
use std::collections::BTreeMap;

pub use super::factors::{Decomposed, DoraAxis, DoraStrength, Factors, KronFactor, Magnitude};
use crate::error::{Error, ErrorKind, Result};

/// Which graph a LoRA module belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Component {
    /// The U-Net.
    Unet,
    /// The (first) CLIP text encoder.
    TextEncoder,
    /// SDXL's second text encoder (`text_encoder_2`).
    TextEncoder2,
}

impl Component {
    /// The component's name in messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unet => "unet",
            Self::TextEncoder => "text_encoder",
            Self::TextEncoder2 => "text_encoder_2",
        }
    }
}

/// A row-major f32 tensor read from the file.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

/// One adapted layer: its delta is `alpha / rank ·` the factors' product.
#[derive(Debug, Clone)]
pub struct LoraModule {
    /// Which graph.
    pub component: Component,
    /// Module path with every `.` as `_` (kohya's spelling), e.g.
    /// `down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q`.
    pub key: String,
    /// The key as written in the file, for messages.
    pub file_key: String,
    /// The stored factors (LoRA, LoHa or LoKr).
    pub factors: Factors,
    /// Alpha; `None` = rank (scale 1).
    pub alpha: Option<f32>,
    /// DoRA: the magnitude of each output row after the merge.
    pub magnitude: Option<Magnitude>,
    /// LyCORIS `diff_b`: added to the layer's bias, `[out]`.
    pub bias: Option<Vec<f32>>,
}

impl LoraModule {
    /// alpha / rank; 1 without an alpha, or for a LoKr whose factors are
    /// both whole (no rank: LyCORIS applies those unscaled).
    pub fn alpha_scale(&self) -> f32 {
        match (self.alpha, self.factors.rank()) {
            (Some(a), Some(r)) => a / r as f32,
            _ => 1.0,
        }
    }
}

/// A parsed LoRA file.
#[derive(Debug, Clone)]
pub struct LoraFile {
    /// Modules, sorted by component and key.
    pub modules: Vec<LoraModule>,
    /// `kohya` or `peft`, for messages and model info.
    pub layout: &'static str,
    /// A key only SDXL LoRAs have (`lora_te1_`/`lora_te2_`, `text_encoder_2.`,
    /// SGM U-Net names), for messages; `None` for an SD 1.x/2.x-style file.
    pub sdxl_key: Option<String>,
}

fn invalid(what: impl std::fmt::Display) -> Error {
    Error::model(format!("not a readable LoRA file: {what}"))
}

fn mismatch(what: impl Into<String>) -> Error {
    Error::adapter_mismatch(what)
}

/// Which part of a module a tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Down,
    Up,
    Alpha,
    HadaW1A,
    HadaW1B,
    HadaW2A,
    HadaW2B,
    LokrW1,
    LokrW1A,
    LokrW1B,
    LokrW2,
    LokrW2A,
    LokrW2B,
    /// Tucker cores (LyCORIS `use_tucker`).
    Mid,
    HadaT1,
    HadaT2,
    LokrT2,
    /// LyCORIS full: the weight difference and the bias difference.
    Diff,
    DiffB,
    /// DoRA's magnitude: kohya/LyCORIS `dora_scale`, PEFT `lora_magnitude_vector`.
    Magnitude,
}

/// Suffixes of refused adapter types and what they are.
const REFUSED: &[(&str, &str)] = &[
    (".w_norm", "GLoRA/norm adapters"),
    (".b_norm", "GLoRA/norm adapters"),
];

const PARTS: &[(&str, Part)] = &[
    (".lora_down.weight", Part::Down),
    (".lora_up.weight", Part::Up),
    (".lora_A.weight", Part::Down),
    (".lora_B.weight", Part::Up),
    (".lora.down.weight", Part::Down),
    (".lora.up.weight", Part::Up),
    (".lora_linear_layer.down.weight", Part::Down),
    (".lora_linear_layer.up.weight", Part::Up),
    (".down.weight", Part::Down),
    (".up.weight", Part::Up),
    (".alpha", Part::Alpha),
    (".hada_w1_a", Part::HadaW1A),
    (".hada_w1_b", Part::HadaW1B),
    (".hada_w2_a", Part::HadaW2A),
    (".hada_w2_b", Part::HadaW2B),
    (".lokr_w1", Part::LokrW1),
    (".lokr_w1_a", Part::LokrW1A),
    (".lokr_w1_b", Part::LokrW1B),
    (".lokr_w2", Part::LokrW2),
    (".lokr_w2_a", Part::LokrW2A),
    (".lokr_w2_b", Part::LokrW2B),
    (".lora_mid.weight", Part::Mid),
    (".hada_t1", Part::HadaT1),
    (".hada_t2", Part::HadaT2),
    (".lokr_t2", Part::LokrT2),
    (".diff", Part::Diff),
    (".diff_b", Part::DiffB),
    (".dora_scale", Part::Magnitude),
    (".lora_magnitude_vector", Part::Magnitude),
    (".lora_magnitude_vector.weight", Part::Magnitude),
];

/// Splits a file key into (component, module key in `_` spelling, part).
fn classify(name: &str) -> Result<Option<(Component, String, Part)>> {
    for (suffix, what) in REFUSED {
        if name.ends_with(suffix) {
            return Err(Error::unsupported(format!(
                "`{name}` is {what}: Kiln applies LoRA, LoCon, DoRA, LoHa, LoKr (with or without Tucker cores) and full diffs; norm adapters are refused"
            )));
        }
    }
    let Some((suffix, part)) = PARTS.iter().find(|(s, _)| name.ends_with(s)) else {
        return Ok(None);
    };
    let stem = &name[..name.len() - suffix.len()];
    // Bare `.down/.up.weight` only in diffusers' attention-processor format.
    if matches!(*suffix, ".down.weight" | ".up.weight") && !stem.contains(".processor.") {
        return Ok(None);
    }
    for (prefix, what) in [
        ("lora_transformer_", "a transformer-based model (SD3/Flux)"),
        ("transformer.", "a transformer-based model (SD3/Flux)"),
        ("lora_unet_double_blocks_", "Flux"),
        ("lora_unet_single_blocks_", "Flux"),
    ] {
        if stem.starts_with(prefix) {
            return Err(mismatch(format!("`{name}` is from a LoRA for {what}; Kiln applies LoRAs to SD 1.x/2.x and SDXL")));
        }
    }
    let (component, module) = if let Some(m) = stem.strip_prefix("lora_unet_") {
        (Component::Unet, m.to_string())
    } else if let Some(m) = stem.strip_prefix("lora_te_").or_else(|| stem.strip_prefix("lora_te1_")) {
        (Component::TextEncoder, m.to_string())
    } else if let Some(m) = stem.strip_prefix("lora_te2_") {
        (Component::TextEncoder2, m.to_string())
    } else if let Some(m) = stem.strip_prefix("unet.") {
        (Component::Unet, m.to_string())
    } else if let Some(m) = stem.strip_prefix("text_encoder.") {
        (Component::TextEncoder, m.to_string())
    } else if let Some(m) = stem.strip_prefix("text_encoder_2.") {
        (Component::TextEncoder2, m.to_string())
    } else {
        return Ok(None);
    };
    // Diffusers' attention-processor format: `attn1.processor.to_q_lora`.
    let module = match module.split_once(".processor.") {
        Some((head, tail)) => {
            let target = tail.strip_suffix("_lora").unwrap_or(tail);
            let target = if target == "to_out" { "to_out.0" } else { target };
            format!("{head}.{target}")
        }
        None => module,
    };
    Ok(Some((component, module.replace('.', "_"), *part)))
}

/// Whether a key names a part only SDXL has: a second text encoder, or the
/// U-Net in SGM naming (kohya's SDXL trainer; SD 1.x kohya files use diffusers').
fn is_sdxl_only(name: &str) -> bool {
    ["lora_te1_", "lora_te2_", "text_encoder_2.", "lora_unet_input_blocks_", "lora_unet_middle_block_", "lora_unet_output_blocks_"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// A tensor's values as f32, whatever float type the file stores.
fn to_f32(name: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<F32Tensor> {
    use safetensors::Dtype;
    let bytes = view.data();
    let data: Vec<f32> = match view.dtype() {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => bytes.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
        other => return Err(invalid(format!("tensor `{name}` has element type {other:?}, expected a float type"))),
    };
    Ok(F32Tensor { shape: view.shape().to_vec(), data })
}

/// PEFT's alpha for `component`/`module` from diffusers' metadata, if any.
struct PeftAlphas {
    config: serde_json::Map<String, serde_json::Value>,
}

impl PeftAlphas {
    fn from_metadata(metadata: Option<&std::collections::HashMap<String, String>>) -> Result<Option<Self>> {
        let Some(raw) = metadata.and_then(|m| m.get("lora_adapter_metadata")) else {
            return Ok(None);
        };
        let value: serde_json::Value =
            serde_json::from_str(raw).map_err(|e| invalid(format!("lora_adapter_metadata is not JSON: {e}")))?;
        let config = value.as_object().cloned().ok_or_else(|| invalid("lora_adapter_metadata is not a JSON object"))?;
        Ok(Some(Self { config }))
    }

    /// alpha for a module of `rank`: an `alpha_pattern` entry whose key ends the
    /// module path, else `lora_alpha`; `None` when the metadata says nothing.
    fn alpha(&self, component: Component, module_dots: &str) -> Option<f32> {
        let c = component.name();
        if let Some(patterns) = self.config.get(&format!("{c}.alpha_pattern")).and_then(|v| v.as_object()) {
            let best = patterns.iter().filter(|(k, _)| module_dots == k.as_str() || module_dots.ends_with(&format!(".{k}"))).max_by_key(|(k, _)| k.len());
            if let Some((_, v)) = best {
                return v.as_f64().map(|a| a as f32);
            }
        }
        self.config.get(&format!("{c}.lora_alpha")).and_then(|v| v.as_f64()).map(|a| a as f32)
    }
}

impl LoraFile {
    /// Reads a LoRA file.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound { ErrorKind::ModelNotFound } else { ErrorKind::Io };
            Error::new(kind, format!("cannot read LoRA {}: {e}", path.display()))
        })?;
        Self::parse(&bytes).map_err(|e| e.context(format!("LoRA {}", path.display())))
    }

    /// Parses the bytes of a `.safetensors` LoRA.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| invalid(format!("safetensors: {e}")))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(bytes).map_err(|e| invalid(format!("safetensors: {e}")))?;
        let peft = PeftAlphas::from_metadata(meta.metadata().as_ref())?;
        #[derive(Default)]
        struct Parts {
            tensors: Vec<(Part, String, F32Tensor)>,
            alpha: Option<f32>,
            peft: bool,
            dotted: String,
        }
        let mut found: BTreeMap<(Component, String), Parts> = BTreeMap::new();
        let mut ignored = Vec::new();
        let mut kohya = false;
        let mut sdxl_key = None;
        for (name, view) in st.iter() {
            let Some((component, key, part)) = classify(name)? else {
                ignored.push(name.to_string());
                continue;
            };
            let entry = found.entry((component, key)).or_default();
            let is_peft = name.starts_with("unet.") || name.starts_with("text_encoder.") || name.starts_with("text_encoder_2.");
            // The first such name in sorted order: safetensors iterates in hash
            // order, and the error message that quotes it must not vary.
            if is_sdxl_only(name) && sdxl_key.as_deref().is_none_or(|k: &str| name < k) {
                sdxl_key = Some(name.to_string());
            }
            kohya |= !is_peft;
            entry.peft = is_peft;
            if is_peft && entry.dotted.is_empty() {
                let stem = name.split_once('.').map_or(name, |(_, rest)| rest);
                entry.dotted = PARTS.iter().find_map(|(s, _)| stem.strip_suffix(s)).unwrap_or(stem).to_string();
            }
            let tensor = to_f32(name, &view)?;
            if part == Part::Alpha {
                let a = tensor.data.first().copied().filter(|_| tensor.data.len() == 1).ok_or_else(|| {
                    invalid(format!("`{name}` should hold one number, has {} values", tensor.data.len()))
                })?;
                entry.alpha = Some(a);
            } else {
                entry.tensors.push((part, name.to_string(), tensor));
            }
        }
        if found.is_empty() {
            let sample: Vec<&str> = ignored.iter().take(5).map(String::as_str).collect();
            return Err(mismatch(format!(
                "no LoRA tensors for an SD U-Net or text encoder ({} tensors, e.g. {sample:?}); a textual-inversion embedding goes through --embedding",
                ignored.len()
            )));
        }
        if !ignored.is_empty() {
            let sample: Vec<&str> = ignored.iter().take(8).map(String::as_str).collect();
            return Err(mismatch(format!("{} tensors are not LoRA up/down/alpha tensors Kiln knows: {sample:?}", ignored.len())));
        }
        let mut modules = Vec::with_capacity(found.len());
        for ((component, key), mut p) in found {
            // safetensors iterates in hash order; messages name the first tensor by name.
            p.tensors.sort_by(|a, b| a.1.cmp(&b.1));
            let file_key = p.tensors.first().map(|(_, n, _)| n.clone()).ok_or_else(|| invalid(format!("{} `{key}` has an alpha but no weights", component.name())))?;
            let magnitudes: Vec<&str> = p.tensors.iter().filter(|(part, ..)| *part == Part::Magnitude).map(|(_, n, _)| n.as_str()).collect();
            if magnitudes.len() > 1 {
                return Err(invalid(format!("{} `{key}` has {} DoRA magnitudes: {magnitudes:?}", component.name(), magnitudes.len())));
            }
            let magnitude = p.tensors.iter().position(|(part, ..)| *part == Part::Magnitude).map(|i| p.tensors.remove(i));
            let bias = p.tensors.iter().position(|(part, ..)| *part == Part::DiffB).map(|i| p.tensors.remove(i));
            if let (Some((_, name, _)), true) = (&bias, p.tensors.is_empty()) {
                return Err(Error::unsupported(format!(
                    "`{name}` is a bias difference without a weight difference; Kiln applies `diff_b` with the module's `diff` or LoRA factors"
                )));
            }
            let factors = factors_of(component, &key, p.tensors)?;
            let magnitude = magnitude.map(|(_, name, t)| dora_magnitude(&name, t, &factors, p.peft)).transpose()?;
            let bias = bias.map(|(_, name, t)| bias_difference(&name, t, &factors)).transpose()?;
            let alpha = match (p.alpha, &peft) {
                (Some(a), _) => Some(a),
                (None, Some(cfg)) if p.peft => cfg.alpha(component, &p.dotted),
                _ => None,
            };
            modules.push(LoraModule { component, key, file_key, factors, alpha, magnitude, bias });
        }
        Ok(Self { modules, layout: if kohya { "kohya" } else { "peft" }, sdxl_key })
    }
}

/// The factors of one module from its tensors: a LoRA pair (with or without
/// a Tucker `lora_mid`), the LoHa tensors, or the two LoKr factors (each
/// whole or decomposed); anything else, mixed kinds or a missing tensor is
/// refused naming the module.
fn factors_of(component: Component, key: &str, tensors: Vec<(Part, String, F32Tensor)>) -> Result<Factors> {
    let what = |kind: &str| format!("{} `{key}` ({kind})", component.name());
    let lora = tensors.iter().any(|(p, ..)| matches!(p, Part::Down | Part::Up | Part::Mid));
    let loha = tensors.iter().any(|(p, ..)| matches!(p, Part::HadaW1A | Part::HadaW1B | Part::HadaW2A | Part::HadaW2B | Part::HadaT1 | Part::HadaT2));
    let lokr = tensors
        .iter()
        .any(|(p, ..)| matches!(p, Part::LokrW1 | Part::LokrW1A | Part::LokrW1B | Part::LokrW2 | Part::LokrW2A | Part::LokrW2B | Part::LokrT2));
    let full = tensors.iter().any(|(p, ..)| *p == Part::Diff);
    if !(lora || loha || lokr || full) {
        return Err(invalid(format!("{} `{key}` has no LoRA, LoHa, LoKr or full weights (only an alpha or a DoRA magnitude)", component.name())));
    }
    if usize::from(lora) + usize::from(loha) + usize::from(lokr) + usize::from(full) > 1 {
        let names: Vec<&str> = tensors.iter().map(|(_, n, _)| n.as_str()).collect();
        return Err(invalid(format!("{} mixes LoRA, LoHa, LoKr and full tensors: {names:?}", component.name())));
    }
    let mut slots: Vec<Option<(String, F32Tensor)>> = vec![None; Part::Magnitude as usize + 1];
    for (part, name, t) in tensors {
        let slot = &mut slots[part as usize];
        if let Some((first, _)) = slot {
            return Err(invalid(format!("`{first}` and `{name}` are both the {part:?} tensor of {} `{key}`", component.name())));
        }
        *slot = Some((name, t));
    }
    let mut take = |part: Part| slots[part as usize].take();
    let need = |t: Option<(String, F32Tensor)>, kind: &str, part: &str| t.ok_or_else(|| invalid(format!("{} has no `{part}` tensor", what(kind))));
    if full {
        let (name, diff) = need(take(Part::Diff), "full", "diff")?;
        if !(diff.shape.len() == 2 || diff.shape.len() == 4) || diff.shape.contains(&0) {
            return Err(invalid(format!("`{name}` is {:?}: a full difference is a non-empty 2-D (Linear) or 4-D (convolution) weight", diff.shape)));
        }
        return Ok(Factors::Full(diff));
    }
    if lora {
        let (down_name, down) = need(take(Part::Down), "LoRA", "down")?;
        let (up_name, up) = need(take(Part::Up), "LoRA", "up")?;
        let Some(mid) = take(Part::Mid) else {
            check_pair(&down_name, &down, &up_name, &up)?;
            return Ok(Factors::LowRank(Decomposed::Product { a: up, b: down }));
        };
        // LoCon's Tucker form: up [out, r1(, 1, 1)] · mid [r1, r2, kh, kw] · down [r2, in(, 1, 1)].
        for (name, t) in [(&down_name, &down), (&up_name, &up)] {
            if !(t.shape.len() == 2 || t.shape.len() == 4 && t.shape[2..] == [1, 1]) {
                return Err(invalid(format!("`{name}` is {:?}: with a `lora_mid` core, up and down are 2-D or 1x1 convolutions", t.shape)));
            }
        }
        return Ok(Factors::LowRank(tucker(mid, (up_name, transposed(&up)), (down_name, flattened(down)))?));
    }
    if loha {
        let mut half = |a: Part, b: Part, t: Part, n: u8| -> Result<Decomposed> {
            let wa = need(take(a), "LoHa", &format!("hada_w{n}_a"))?;
            let wb = need(take(b), "LoHa", &format!("hada_w{n}_b"))?;
            match take(t) {
                Some(core) => tucker(core, wa, wb),
                None => {
                    check_product(&wa, &wb)?;
                    Ok(Decomposed::Product { a: wa.1, b: wb.1 })
                }
            }
        };
        let w1 = half(Part::HadaW1A, Part::HadaW1B, Part::HadaT1, 1)?;
        let w2 = half(Part::HadaW2A, Part::HadaW2B, Part::HadaT2, 2)?;
        if (w1.rows(), w1.cols(), w1.kernel()) != (w2.rows(), w2.cols(), w2.kernel()) {
            return Err(mismatch(format!(
                "{}: the two Hadamard factors differ in shape: {} is {}x{} (kernel {:?}) but {} is {}x{} (kernel {:?})",
                what("LoHa"),
                w1.describe(["hada_w1_a", "hada_w1_b", "hada_t1"]),
                w1.rows(),
                w1.cols(),
                w1.kernel(),
                w2.describe(["hada_w2_a", "hada_w2_b", "hada_t2"]),
                w2.rows(),
                w2.cols(),
                w2.kernel()
            )));
        }
        return Ok(Factors::Hadamard(w1, w2));
    }
    let t2 = take(Part::LokrT2);
    let mut factor = |whole: Part, a: Part, b: Part, n: &str, core: Option<(String, F32Tensor)>| -> Result<KronFactor> {
        match (take(whole), take(a), take(b)) {
            (Some((name, w)), None, None) => {
                if let Some((core_name, _)) = core {
                    return Err(invalid(format!("{} has `{core_name}` and a whole `{name}`: a Tucker core needs `lokr_{n}_a` and `lokr_{n}_b`", what("LoKr"))));
                }
                if w.shape.len() != 2 && w.shape.len() != 4 || w.shape.contains(&0) {
                    return Err(invalid(format!("`{name}` is {:?}: expected a non-empty 2-D or 4-D factor", w.shape)));
                }
                Ok(KronFactor::Whole(w))
            }
            (None, Some(a), Some(b)) => match core {
                Some(core) => Ok(KronFactor::Decomposed(tucker(core, a, b)?)),
                None => {
                    check_product(&a, &b)?;
                    Ok(KronFactor::Decomposed(Decomposed::Product { a: a.1, b: b.1 }))
                }
            },
            (None, None, None) => Err(invalid(format!("{} has neither `lokr_{n}` nor `lokr_{n}_a` and `lokr_{n}_b`", what("LoKr")))),
            (Some((name, _)), ..) => Err(invalid(format!("{} has `{name}` and also `lokr_{n}_a`/`lokr_{n}_b`", what("LoKr")))),
            (None, a, _) => {
                let (has, lacks) = if a.is_some() { ("a", "b") } else { ("b", "a") };
                Err(invalid(format!("{} has `lokr_{n}_{has}` but no `lokr_{n}_{lacks}`", what("LoKr"))))
            }
        }
    };
    let w1 = factor(Part::LokrW1, Part::LokrW1A, Part::LokrW1B, "w1", None)?;
    let w2 = factor(Part::LokrW2, Part::LokrW2A, Part::LokrW2B, "w2", t2)?;
    if w1.kernel().is_some_and(|k| k.iter().any(|&d| d != 1)) {
        return Err(Error::unsupported(format!(
            "{}: w1 carries a {:?} kernel; LyCORIS puts a convolution's kernel in w2 only",
            what("LoKr"),
            w1.kernel().unwrap_or_default()
        )));
    }
    Ok(Factors::Kronecker { w1, w2 })
}

/// A `diff_b` tensor: one value per output of the module's weight.
fn bias_difference(name: &str, t: F32Tensor, factors: &Factors) -> Result<Vec<f32>> {
    if t.shape != [factors.out_features()] {
        return Err(mismatch(format!(
            "`{name}` is {:?} but the module's {} ({}) has {} outputs: a bias difference has one value per output",
            t.shape,
            factors.kind(),
            factors.describe(),
            factors.out_features()
        )));
    }
    Ok(t.data)
}

/// A Tucker-decomposed matrix (LyCORIS `use_tucker`): `core` `[r1, r2, kh, kw]`,
/// `a` `[r1, out]`, `b` `[r2, in]`, non-empty, ranks agreeing.
fn tucker((core_name, core): (String, F32Tensor), (a_name, a): (String, F32Tensor), (b_name, b): (String, F32Tensor)) -> Result<Decomposed> {
    if core.shape.len() != 4 || a.shape.len() != 2 || b.shape.len() != 2 {
        return Err(invalid(format!(
            "`{core_name}` {:?}, `{a_name}` {:?}, `{b_name}` {:?}: a Tucker core is 4-D [r1, r2, kh, kw] with 2-D modes [r1, out] and [r2, in]",
            core.shape, a.shape, b.shape
        )));
    }
    if core.shape[0] != a.shape[0] || core.shape[1] != b.shape[0] {
        return Err(mismatch(format!(
            "rank mismatch: the Tucker core `{core_name}` is {:?} but `{a_name}` is {:?} and `{b_name}` {:?} (expected [{}, …] and [{}, …])",
            core.shape, a.shape, b.shape, core.shape[0], core.shape[1]
        )));
    }
    if core.shape.iter().chain(&a.shape).chain(&b.shape).any(|&d| d == 0) {
        return Err(invalid(format!("`{core_name}` {:?}, `{a_name}` {:?} or `{b_name}` {:?} is empty", core.shape, a.shape, b.shape)));
    }
    Ok(Decomposed::Tucker { core, a, b })
}

/// `[rows, cols(, 1, 1)]` as `[cols, rows]`.
fn transposed(t: &F32Tensor) -> F32Tensor {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let data = (0..cols).flat_map(|c| (0..rows).map(move |r| t.data[r * cols + c])).collect();
    F32Tensor { shape: vec![cols, rows], data }
}

/// `[rows, cols(, 1, 1)]` as `[rows, cols]`.
fn flattened(mut t: F32Tensor) -> F32Tensor {
    t.shape.truncate(2);
    t
}

/// A DoRA magnitude. PEFT stores one value per output row (`[out]`); kohya
/// and LyCORIS per output row (`[out, 1]`, `[out, 1, 1, 1]`) or, with
/// LyCORIS's `wd_on_out = False`, per input channel (`[1, in]`,
/// `[1, in, 1, 1]`), told apart by the first dimension as ComfyUI does.
fn dora_magnitude(name: &str, t: F32Tensor, factors: &Factors, peft: bool) -> Result<Magnitude> {
    let out = factors.out_features();
    let channels = factors.in_features() / factors.kernel().map_or(1, |k| k.iter().product::<usize>().max(1));
    let ones_from = |i: usize| t.shape.iter().skip(i).all(|&d| d == 1);
    let axis = if peft {
        (t.data.len() == out && t.shape.iter().filter(|&&d| d != 1).count() <= 1).then_some(DoraAxis::Output)
    } else if t.data.len() == out && (t.shape.len() == 1 || t.shape[0] == out && ones_from(1)) {
        Some(DoraAxis::Output)
    } else if t.data.len() == channels && t.shape.len() >= 2 && t.shape[0] == 1 && t.shape[1] == channels && ones_from(2) {
        Some(DoraAxis::Input)
    } else {
        None
    };
    let Some(axis) = axis else {
        let inputs = if peft { String::new() } else { format!(" ([{out}, 1, …]) or per input channel ([1, {channels}, …])") };
        return Err(mismatch(format!("`{name}` is {:?} but the {} layer has {out} outputs: expected one magnitude per output{inputs}", t.shape, factors.kind())));
    };
    let strength = if peft { DoraStrength::InNorm } else { DoraStrength::Interpolate };
    Ok(Magnitude { values: t.data, strength, axis })
}

/// `a` `[rows, rank]` and `b` `[rank, …]` (2-D or 4-D), non-empty, ranks equal.
fn check_product((a_name, a): &(String, F32Tensor), (b_name, b): &(String, F32Tensor)) -> Result<()> {
    if a.shape.len() != 2 || !(b.shape.len() == 2 || b.shape.len() == 4) {
        return Err(invalid(format!("`{a_name}` {:?} and `{b_name}` {:?}: expected a 2-D `a` and a 2-D or 4-D `b`", a.shape, b.shape)));
    }
    if a.shape[1] != b.shape[0] {
        return Err(mismatch(format!("rank mismatch: `{a_name}` has rank {} ({:?}) but `{b_name}` has {} ({:?})", a.shape[1], a.shape, b.shape[0], b.shape)));
    }
    if a.shape.iter().chain(&b.shape).any(|&d| d == 0) {
        return Err(invalid(format!("`{a_name}` {:?} or `{b_name}` {:?} is empty", a.shape, b.shape)));
    }
    Ok(())
}

/// Checks that `up · down` is defined: ranks agree, shapes are linear or conv.
fn check_pair(down_name: &str, down: &F32Tensor, up_name: &str, up: &F32Tensor) -> Result<()> {
    let ok_rank = |t: &F32Tensor| t.shape.len() == 2 || t.shape.len() == 4;
    if !ok_rank(down) || !ok_rank(up) || down.shape.len() != up.shape.len() {
        return Err(invalid(format!(
            "`{down_name}` {:?} and `{up_name}` {:?}: expected 2-D (linear) or 4-D (convolution) pairs of the same rank",
            down.shape, up.shape
        )));
    }
    if up.shape.len() == 4 && (up.shape[2] != 1 || up.shape[3] != 1) {
        return Err(Error::unsupported(format!("`{up_name}` has a {}x{} kernel; Kiln supports LoCon with a 1x1 up kernel", up.shape[2], up.shape[3])));
    }
    if up.shape[1] != down.shape[0] {
        return Err(mismatch(format!(
            "rank mismatch: `{down_name}` has rank {} ({:?}) but `{up_name}` has {} ({:?})",
            down.shape[0], down.shape, up.shape[1], up.shape
        )));
    }
    if down.shape[0] == 0 {
        return Err(invalid(format!("`{down_name}` has rank 0")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_both_layouts_map_to_one_module_key() {
        let k = classify("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight").unwrap().unwrap();
        let p = classify("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight").unwrap().unwrap();
        assert_eq!(k, p);
        assert_eq!(k.0, Component::Unet);
        assert_eq!(k.2, Part::Down);
        let old = classify("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.processor.to_out_lora.up.weight").unwrap().unwrap();
        assert_eq!(old.1, "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_out_0");
        assert_eq!(old.2, Part::Up);
        let te = classify("text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight").unwrap().unwrap();
        assert_eq!((te.0, te.1.as_str()), (Component::TextEncoder, "text_model_encoder_layers_0_self_attn_q_proj"));
        assert!(classify("lora_te_text_model_encoder_layers_0_mlp_fc1.alpha").unwrap().is_some());
        assert!(classify("something.else").unwrap().is_none());
    }

    #[test]
    fn refused_variants_and_other_architectures_have_their_own_errors() {
        let e = classify("lora_unet_mid_block_norm1.w_norm").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.message().contains("norm adapters"), "{}", e.message());
        // LyCORIS full differences are parts.
        assert_eq!(classify("lora_unet_mid_block_resnets_0_conv1.diff").unwrap().unwrap().2, Part::Diff);
        assert_eq!(classify("lora_te_text_model_encoder_layers_0_mlp_fc1.diff_b").unwrap().unwrap().2, Part::DiffB);
        // Tucker cores are parts.
        assert_eq!(classify("lora_unet_x.hada_t1").unwrap().unwrap().2, Part::HadaT1);
        assert_eq!(classify("lora_unet_x.lokr_t2").unwrap().unwrap().2, Part::LokrT2);
        assert_eq!(classify("lora_unet_x.lora_mid.weight").unwrap().unwrap().2, Part::Mid);
        assert_eq!(classify("lora_unet_x.dora_scale").unwrap().unwrap().2, Part::Magnitude);
        assert_eq!(classify("unet.x.lora_magnitude_vector").unwrap().unwrap().2, Part::Magnitude);
        // Plain LoHa and LoKr tensors are parts, not refusals.
        assert_eq!(classify("lora_unet_x.hada_w2_b").unwrap().unwrap().2, Part::HadaW2B);
        assert_eq!(classify("lora_unet_x.lokr_w1").unwrap().unwrap().2, Part::LokrW1);
        assert_eq!(classify("lora_te_x.lokr_w1_a").unwrap().unwrap().2, Part::LokrW1A);
        // SDXL LyCORIS files use the same SGM module names as SDXL LoRAs.
        let sgm = classify("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.hada_w1_a").unwrap().unwrap();
        assert_eq!(sgm, (Component::Unet, "input_blocks_4_1_transformer_blocks_0_attn1_to_q".to_string(), Part::HadaW1A));
        assert!(is_sdxl_only("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.hada_w1_a"));
        let te2 = classify("lora_te2_text_model_encoder_layers_0_mlp_fc1.dora_scale").unwrap().unwrap();
        assert_eq!((te2.0, te2.2), (Component::TextEncoder2, Part::Magnitude));
        let e = classify("lora_transformer_single_transformer_blocks_0_attn_to_q.lora_down.weight").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("SD3/Flux"), "{}", e.message());
    }

    #[test]
    fn sdxl_keys_name_both_text_encoders_and_mark_the_file() {
        let te1 = classify("lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight").unwrap().unwrap();
        let te2 = classify("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight").unwrap().unwrap();
        let peft2 = classify("text_encoder_2.text_model.encoder.layers.0.mlp.fc1.lora_A.weight").unwrap().unwrap();
        assert_eq!((te1.0, te1.1.as_str()), (Component::TextEncoder, "text_model_encoder_layers_0_mlp_fc1"));
        assert_eq!((te2.0, &te2.1), (Component::TextEncoder2, &te1.1));
        assert_eq!(peft2, te2);
        let sgm = classify("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight").unwrap().unwrap();
        assert_eq!((sgm.0, sgm.1.as_str()), (Component::Unet, "input_blocks_4_1_transformer_blocks_0_attn1_to_q"));
        let file = st(
            &[("lora_te2_a.lora_down.weight", vec![2, 3], vec![0.0; 6]), ("lora_te2_a.lora_up.weight", vec![4, 2], vec![0.0; 8])],
            None,
        );
        assert_eq!(LoraFile::parse(&file).unwrap().sdxl_key.as_deref(), Some("lora_te2_a.lora_down.weight"));
        let sd15 = st(
            &[("lora_unet_a.lora_down.weight", vec![2, 3], vec![0.0; 6]), ("lora_unet_a.lora_up.weight", vec![4, 2], vec![0.0; 8])],
            None,
        );
        assert_eq!(LoraFile::parse(&sd15).unwrap().sdxl_key, None);
    }

    fn st(tensors: &[(&str, Vec<usize>, Vec<f32>)], metadata: Option<std::collections::HashMap<String, String>>) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
            tensors.iter().map(|(n, s, d)| (n.to_string(), s.clone(), d.iter().flat_map(|x| x.to_le_bytes()).collect())).collect();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = bytes
            .iter()
            .map(|(n, s, d)| (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
            .collect();
        safetensors::serialize(views, metadata).unwrap()
    }

    #[test]
    fn parses_kohya_with_alpha_and_peft_with_metadata_alpha() {
        let kohya = st(
            &[
                ("lora_unet_a_b.lora_down.weight", vec![2, 3], vec![1.0; 6]),
                ("lora_unet_a_b.lora_up.weight", vec![4, 2], vec![1.0; 8]),
                ("lora_unet_a_b.alpha", vec![], vec![3.0]),
            ],
            None,
        );
        let f = LoraFile::parse(&kohya).unwrap();
        assert_eq!(f.layout, "kohya");
        assert_eq!(f.modules.len(), 1);
        assert_eq!(f.modules[0].alpha_scale(), 1.5);
        let meta = std::collections::HashMap::from([(
            "lora_adapter_metadata".to_string(),
            r#"{"unet.r": 2, "unet.lora_alpha": 1.0, "unet.alpha_pattern": {"b": 4.0}}"#.to_string(),
        )]);
        let peft = st(
            &[
                ("unet.a.b.lora_A.weight", vec![2, 3], vec![1.0; 6]),
                ("unet.a.b.lora_B.weight", vec![4, 2], vec![1.0; 8]),
                ("unet.a.c.lora_A.weight", vec![2, 3], vec![1.0; 6]),
                ("unet.a.c.lora_B.weight", vec![4, 2], vec![1.0; 8]),
            ],
            Some(meta),
        );
        let f = LoraFile::parse(&peft).unwrap();
        assert_eq!(f.layout, "peft");
        assert_eq!(f.modules[0].key, "a_b");
        assert_eq!(f.modules[0].alpha_scale(), 2.0, "alpha_pattern applies to a.b");
        assert_eq!(f.modules[1].alpha_scale(), 0.5, "lora_alpha elsewhere");
    }

    /// LyCORIS LoHa and LoKr modules: parsed into their factors, alpha over
    /// the right rank (LoKr: the decomposed factor's; both whole: unscaled).
    #[test]
    fn loha_and_lokr_modules_parse_with_their_alpha_scale() {
        let loha = st(
            &[
                ("lora_unet_a.hada_w1_a", vec![4, 2], vec![0.5; 8]),
                ("lora_unet_a.hada_w1_b", vec![2, 3], vec![0.5; 6]),
                ("lora_unet_a.hada_w2_a", vec![4, 2], vec![0.5; 8]),
                ("lora_unet_a.hada_w2_b", vec![2, 3], vec![0.5; 6]),
                ("lora_unet_a.alpha", vec![], vec![1.0]),
            ],
            None,
        );
        let f = LoraFile::parse(&loha).unwrap();
        let m = &f.modules[0];
        assert_eq!((m.factors.kind(), m.factors.out_features(), m.factors.in_features()), ("LoHa", 4, 3));
        assert_eq!(m.alpha_scale(), 0.5);
        assert_eq!(m.file_key, "lora_unet_a.hada_w1_a", "the first tensor by name, whatever the file's order");
        let lokr = |w1: &[(&str, Vec<usize>, Vec<f32>)]| {
            let mut t = w1.to_vec();
            t.push(("lora_unet_a.lokr_w2", vec![2, 3], vec![1.0; 6]));
            t.push(("lora_unet_a.alpha", vec![], vec![4.0]));
            LoraFile::parse(&st(&t, None))
        };
        let product = lokr(&[("lora_unet_a.lokr_w1_a", vec![2, 2], vec![1.0; 4]), ("lora_unet_a.lokr_w1_b", vec![2, 5], vec![1.0; 10])]).unwrap();
        let m = &product.modules[0];
        assert_eq!((m.factors.kind(), m.factors.out_features(), m.factors.in_features()), ("LoKr", 4, 15));
        assert_eq!(m.alpha_scale(), 2.0, "alpha / rank of the decomposed factor");
        let whole = lokr(&[("lora_unet_a.lokr_w1", vec![2, 5], vec![1.0; 10])]).unwrap();
        assert_eq!(whole.modules[0].alpha_scale(), 1.0, "both factors whole: LyCORIS ignores alpha");
        // Incomplete or mixed modules name what is wrong.
        let e = lokr(&[("lora_unet_a.lokr_w1_a", vec![2, 2], vec![1.0; 4])]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid);
        assert!(e.message().contains("has `lokr_w1_a` but no `lokr_w1_b`"), "{}", e.message());
        let e = lokr(&[("lora_unet_a.lokr_w1", vec![2, 5], vec![1.0; 10]), ("lora_unet_a.lokr_w1_a", vec![2, 2], vec![1.0; 4])]).unwrap_err();
        assert!(e.message().contains("also `lokr_w1_a`"), "{}", e.message());
        let e = lokr(&[("lora_unet_a.lokr_w1_a", vec![2, 2], vec![1.0; 4]), ("lora_unet_a.lokr_w1_b", vec![3, 5], vec![1.0; 15])]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("rank mismatch"), "{}", e.message());
        let lonely = st(&[("lora_unet_a.dora_scale", vec![4, 1], vec![1.0; 4]), ("lora_unet_a.alpha", vec![], vec![1.0])], None);
        let e = LoraFile::parse(&lonely).unwrap_err();
        assert!(e.message().contains("no LoRA, LoHa, LoKr or full weights"), "{}", e.message());
        let e = lokr(&[("lora_unet_a.hada_w1_a", vec![4, 2], vec![0.5; 8])]).unwrap_err();
        assert!(e.message().contains("mixes LoRA, LoHa, LoKr"), "{}", e.message());
        let mut three = vec![
            ("lora_unet_a.hada_w1_a", vec![4, 2], vec![0.5; 8]),
            ("lora_unet_a.hada_w1_b", vec![2, 3], vec![0.5; 6]),
            ("lora_unet_a.hada_w2_a", vec![4, 2], vec![0.5; 8]),
        ];
        let e = LoraFile::parse(&st(&three, None)).unwrap_err();
        assert!(e.message().contains("no `hada_w2_b`"), "{}", e.message());
        three.push(("lora_unet_a.hada_w2_b", vec![2, 4], vec![0.5; 8]));
        let e = LoraFile::parse(&st(&three, None)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("Hadamard factors differ"), "{}", e.message());
    }

    /// LyCORIS full: `diff` is the delta itself (alpha does not scale it),
    /// `diff_b` one value per output; a lone `diff_b`, a `diff_b` of the
    /// wrong length, a 3-D `diff` and a `diff` mixed with LoRA factors are
    /// each refused with their own status.
    #[test]
    fn full_differences_parse_with_their_bias() {
        let linear = st(
            &[
                ("lora_unet_a.diff", vec![3, 2], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
                ("lora_unet_a.diff_b", vec![3], vec![0.5, -0.5, 0.25]),
                ("lora_unet_a.alpha", vec![], vec![8.0]),
                ("lora_unet_c.diff", vec![4, 2, 3, 3], vec![0.1; 72]),
            ],
            None,
        );
        let f = LoraFile::parse(&linear).unwrap();
        let (a, c) = (&f.modules[0], &f.modules[1]);
        assert_eq!((a.factors.kind(), a.factors.out_features(), a.factors.in_features(), a.alpha_scale()), ("full diff", 3, 2, 1.0));
        assert_eq!(a.factors.delta().as_slice().unwrap(), &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        assert_eq!(a.bias.as_deref(), Some(&[0.5, -0.5, 0.25][..]));
        assert_eq!((c.factors.out_features(), c.factors.in_features(), c.factors.kernel(), c.bias.is_none()), (4, 18, Some(&[3, 3][..]), true));
        let parse = |t: &[(&str, Vec<usize>, Vec<f32>)]| LoraFile::parse(&st(t, None)).unwrap_err();
        let e = parse(&[("lora_unet_a.diff_b", vec![3], vec![0.5; 3])]);
        assert_eq!(e.kind(), ErrorKind::Unsupported);
        assert!(e.message().contains("bias difference without a weight difference"), "{}", e.message());
        let e = parse(&[("lora_unet_a.diff", vec![3, 2], vec![1.0; 6]), ("lora_unet_a.diff_b", vec![2], vec![0.5; 2])]);
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("`lora_unet_a.diff_b` is [2]") && e.message().contains("3 outputs"), "{}", e.message());
        let e = parse(&[("lora_unet_a.diff", vec![3, 2, 1], vec![1.0; 6])]);
        assert_eq!(e.kind(), ErrorKind::ModelInvalid);
        assert!(e.message().contains("2-D (Linear) or 4-D"), "{}", e.message());
        let e = parse(&[("lora_unet_a.diff", vec![3, 2], vec![1.0; 6]), ("lora_unet_a.lora_down.weight", vec![1, 2], vec![1.0; 2])]);
        assert_eq!(e.kind(), ErrorKind::ModelInvalid);
        assert!(e.message().contains("mixes LoRA, LoHa, LoKr and full"), "{}", e.message());
    }

    #[test]
    fn bad_files_give_specific_errors() {
        let rank = st(
            &[("lora_unet_a.lora_down.weight", vec![2, 3], vec![0.0; 6]), ("lora_unet_a.lora_up.weight", vec![4, 3], vec![0.0; 12])],
            None,
        );
        let e = LoraFile::parse(&rank).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("rank mismatch"), "{}", e.message());
        let good = st(
            &[("lora_unet_a.lora_down.weight", vec![2, 3], vec![0.0; 6]), ("lora_unet_a.lora_up.weight", vec![4, 2], vec![0.0; 8])],
            None,
        );
        for cut in [0, 7, 8, 20, good.len() - 1] {
            let e = LoraFile::parse(&good[..cut]).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::ModelInvalid, "cut {cut}: {}", e.message());
        }
        let half = st(&[("lora_unet_a.lora_down.weight", vec![2, 3], vec![0.0; 6])], None);
        assert_eq!(LoraFile::parse(&half).unwrap_err().kind(), ErrorKind::ModelInvalid);
        let foreign = st(&[("model.layers.0.weight", vec![2], vec![0.0; 2])], None);
        assert_eq!(LoraFile::parse(&foreign).unwrap_err().kind(), ErrorKind::AdapterMismatch);
    }

    /// LyCORIS's Tucker forms read into cores with their modes, alpha over
    /// the input mode's rank; wrong shapes and ranks named.
    #[test]
    fn tucker_modules_parse_for_locon_loha_and_lokr() {
        let (out, inn, r1, r2) = (6usize, 4usize, 2usize, 3usize);
        let locon = |mid: Vec<usize>| {
            let n = mid.iter().product();
            LoraFile::parse(&st(
                &[
                    ("lora_unet_c.lora_down.weight", vec![r2, inn, 1, 1], vec![0.5; r2 * inn]),
                    ("lora_unet_c.lora_mid.weight", mid, vec![0.5; n]),
                    ("lora_unet_c.lora_up.weight", vec![out, r1, 1, 1], vec![0.5; out * r1]),
                    ("lora_unet_c.alpha", vec![], vec![1.5]),
                ],
                None,
            ))
        };
        let f = locon(vec![r1, r2, 3, 3]).unwrap();
        let m = &f.modules[0];
        assert!(matches!(&m.factors, Factors::LowRank(Decomposed::Tucker { a, .. }) if a.shape == [r1, out]), "up transposed into the output mode");
        assert_eq!((m.factors.out_features(), m.factors.in_features(), m.factors.kernel()), (out, inn * 9, Some(&[3, 3][..])));
        assert_eq!(m.alpha_scale(), 0.5, "alpha / the down rank");
        let e = locon(vec![r2, r1, 3, 3]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("rank mismatch") && e.message().contains("lora_mid"), "{}", e.message());
        let e = locon(vec![r1, r2, 9]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid);
        assert!(e.message().contains("4-D"), "{}", e.message());

        let hada = |t2: Vec<usize>| {
            let n = t2.iter().product();
            LoraFile::parse(&st(
                &[
                    ("lora_unet_c.hada_t1", vec![r2, r2, 3, 3], vec![0.5; r2 * r2 * 9]),
                    ("lora_unet_c.hada_w1_a", vec![r2, out], vec![0.5; r2 * out]),
                    ("lora_unet_c.hada_w1_b", vec![r2, inn], vec![0.5; r2 * inn]),
                    ("lora_unet_c.hada_t2", t2, vec![0.5; n]),
                    ("lora_unet_c.hada_w2_a", vec![r2, out], vec![0.5; r2 * out]),
                    ("lora_unet_c.hada_w2_b", vec![r2, inn], vec![0.5; r2 * inn]),
                    ("lora_unet_c.alpha", vec![], vec![1.5]),
                ],
                None,
            ))
        };
        let f = hada(vec![r2, r2, 3, 3]).unwrap();
        assert_eq!((f.modules[0].factors.kind(), f.modules[0].factors.in_features(), f.modules[0].alpha_scale()), ("LoHa", inn * 9, 0.5));
        let e = hada(vec![r2, r2, 1, 1]).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("Hadamard factors differ"), "{}", e.message());

        let lokr = |w2: &str| {
            let mut t = vec![
                ("lora_unet_c.lokr_w1", vec![2, 2], vec![1.0; 4]),
                ("lora_unet_c.lokr_t2", vec![r1, r1, 3, 3], vec![0.5; r1 * r1 * 9]),
                ("lora_unet_c.alpha", vec![], vec![1.0]),
            ];
            if w2 == "decomposed" {
                t.push(("lora_unet_c.lokr_w2_a", vec![r1, 3], vec![0.5; r1 * 3]));
                t.push(("lora_unet_c.lokr_w2_b", vec![r1, 2], vec![0.5; r1 * 2]));
            } else {
                t.push(("lora_unet_c.lokr_w2", vec![3, 2, 3, 3], vec![0.5; 54]));
            }
            LoraFile::parse(&st(&t, None))
        };
        let f = lokr("decomposed").unwrap();
        let m = &f.modules[0];
        assert_eq!((m.factors.out_features(), m.factors.in_features(), m.factors.kernel()), (6, 4 * 9, Some(&[3, 3][..])));
        assert_eq!(m.alpha_scale(), 0.5, "alpha / the Tucker w2's rank");
        let e = lokr("whole").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::ModelInvalid);
        assert!(e.message().contains("a Tucker core needs `lokr_w2_a`"), "{}", e.message());
    }

    /// Which norms a DoRA magnitude is over: PEFT per output; kohya/LyCORIS
    /// per output (`[out, 1…]`) or per input channel (`[1, in…]`), also when
    /// a conv has as many inputs as outputs; on LoHa and LoKr too.
    #[test]
    fn dora_magnitude_axis_follows_the_layout_and_shape() {
        let (out, inn) = (4usize, 4usize);
        let conv = |scale: (&str, Vec<usize>)| {
            let n = scale.1.iter().product();
            LoraFile::parse(&st(
                &[
                    ("lora_unet_c.hada_w1_a", vec![out, 2], vec![0.5; out * 2]),
                    ("lora_unet_c.hada_w1_b", vec![2, inn, 3, 3], vec![0.5; 2 * inn * 9]),
                    ("lora_unet_c.hada_w2_a", vec![out, 2], vec![0.5; out * 2]),
                    ("lora_unet_c.hada_w2_b", vec![2, inn, 3, 3], vec![0.5; 2 * inn * 9]),
                    (scale.0, scale.1, vec![1.0; n]),
                ],
                None,
            ))
            .map(|f| f.modules[0].magnitude.clone().unwrap())
        };
        assert_eq!(conv(("lora_unet_c.dora_scale", vec![out, 1, 1, 1])).unwrap().axis, DoraAxis::Output);
        let per_input = conv(("lora_unet_c.dora_scale", vec![1, inn, 1, 1])).unwrap();
        assert_eq!((per_input.axis, per_input.strength), (DoraAxis::Input, DoraStrength::Interpolate));
        let e = conv(("lora_unet_c.dora_scale", vec![1, inn * 9])).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AdapterMismatch);
        assert!(e.message().contains("per input channel ([1, 4, …])"), "{}", e.message());
        let peft = LoraFile::parse(&st(
            &[
                ("unet.c.lora_A.weight", vec![2, inn], vec![0.5; 2 * inn]),
                ("unet.c.lora_B.weight", vec![out, 2], vec![0.5; out * 2]),
                ("unet.c.lora_magnitude_vector", vec![1, out, 1, 1], vec![1.0; out]),
            ],
            None,
        ))
        .unwrap();
        let m = peft.modules[0].magnitude.clone().unwrap();
        assert_eq!((m.axis, m.strength), (DoraAxis::Output, DoraStrength::InNorm));
    }
}
