//! The `options` dictionary of `KilnGenerator.generate` → a Kiln request.
//!
//! Engine-independent: the Godot glue turns each dictionary entry into a key
//! and an [`OptionValue`] and hands them here, so every rule (known keys, types,
//! ranges) is unit-tested without Godot. Every mistake is an
//! `InvalidArgument` error naming the key, what was expected and what came.
use std::path::PathBuf;

use kiln::image::control::{ControlImage, Preprocess};
use kiln::model::seamless::Seamless;
use kiln::model::{Adapters, EmbeddingSpec, LoraSpec};
use kiln::pipeline::control::Control;
use kiln::pipeline::{InitImage, Mask, NoiseGenerator, PromptSyntax};
use kiln::{Error, ErrorKind, GenerateRequest, SchedulerKind};

/// One dictionary value, reduced to what the options can hold.
#[derive(Debug, Clone, PartialEq)]
pub enum OptionValue {
    /// `null`.
    Nil,
    /// `bool`.
    Bool(bool),
    /// `int` (GDScript ints are 64-bit).
    Int(i64),
    /// `float` (64-bit in GDScript; `JSON.parse` gives floats for every number).
    Float(f64),
    /// `String` or `StringName`.
    String(String),
    /// `Array`, element by element.
    Array(Vec<OptionValue>),
    /// `Dictionary`, its entries in order (keys as names).
    Dictionary(Vec<(String, OptionValue)>),
    /// An `Image`, its pixels copied out as 8-bit gray, RGB or RGBA.
    Image(ControlImage),
    /// Any other Variant type, by its Godot type name (for the error message).
    Other(String),
}

impl OptionValue {
    fn describe(&self) -> String {
        match self {
            Self::Nil => "null".into(),
            Self::Bool(b) => format!("bool {b}"),
            Self::Int(i) => format!("int {i}"),
            Self::Float(f) => format!("float {f}"),
            Self::String(s) => format!("String {s:?}"),
            Self::Array(a) => format!("Array of {}", a.len()),
            Self::Dictionary(d) => format!("Dictionary of {}", d.len()),
            Self::Image(i) => format!("Image {}x{}", i.width, i.height),
            Self::Other(t) => t.clone(),
        }
    }
}

/// Every key `generate` understands, for the unknown-key message.
pub const KEYS: &[&str] = &[
    "negative_prompt",
    "width",
    "height",
    "steps",
    "guidance_scale",
    "guidance_rescale",
    "seed",
    "noise_generator",
    "variation_seed",
    "variation_strength",
    "scheduler",
    "prompt_syntax",
    "clip_skip",
    "seamless",
    "preview_interval",
    "priority",
    "prompt_2",
    "negative_prompt_2",
    "original_width",
    "original_height",
    "crop_top",
    "crop_left",
    "target_width",
    "target_height",
    "negative_original_width",
    "negative_original_height",
    "negative_crop_top",
    "negative_crop_left",
    "negative_target_width",
    "negative_target_height",
    "aesthetic_score",
    "negative_aesthetic_score",
    "controls",
    "guess_mode",
    "init_image",
    "strength",
    "posterior_mean",
    "mask",
    "loras",
    "embeddings",
    "refiner",
    "refiner_start",
];

/// The keys of one `loras` entry: the C `kiln_lora` fields (a given
/// `text_encoder_scale` is `has_text_encoder_scale`).
pub const LORA_KEYS: &[&str] = &["path", "scale", "text_encoder_scale"];

/// The keys of one `embeddings` entry: the C `kiln_embedding` fields.
pub const EMBEDDING_KEYS: &[&str] = &["path", "token"];

/// The keys of one `controls` entry: the C `kiln_control` fields.
pub const CONTROL_KEYS: &[&str] = &["controlnet", "image", "scale", "start", "end", "preprocess", "canny_low", "canny_high"];

/// The SDXL size keys, in `[width, height]` pairs with the request field each sets.
const XL_SIZES: [(&str, &str); 4] = [
    ("original_width", "original_height"),
    ("target_width", "target_height"),
    ("negative_original_width", "negative_original_height"),
    ("negative_target_width", "negative_target_height"),
];

/// A parsed `generate` call: the Kiln request plus how the binding runs it.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// What Kiln generates.
    pub request: GenerateRequest,
    /// Which axes the texture tiles on (a seamless view of the model).
    pub seamless: Seamless,
    /// A preview every this many U-Net calls (0 = none).
    pub preview_interval: u32,
    /// Higher runs first among queued jobs.
    pub priority: i32,
    /// LoRAs and textual-inversion embeddings: the job runs on a view of the
    /// model with them merged (`Model::with_adapters`); empty = the model itself.
    pub adapters: Adapters,
    /// A second model folder that finishes the schedule (the C `refiner`).
    pub refiner: Option<RefinerChoice>,
}

/// The `refiner` and `refiner_start` keys: a model folder to load (once per
/// session) and the fraction of the schedule the main model runs first.
#[derive(Debug, Clone, PartialEq)]
pub struct RefinerChoice {
    /// The refiner's model folder, as a file-system path.
    pub path: PathBuf,
    /// Strictly between 0 and 1 (Kiln's default 0.8).
    pub start: f32,
}

/// Kiln's default `refiner_start` (`kiln_generate_options_init`'s).
pub const DEFAULT_REFINER_START: f32 = 0.8;

fn bad(key: &str, what: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::InvalidArgument, format!("options[\"{key}\"]: {what}"))
}

fn int(key: &str, v: &OptionValue) -> Result<i64, Error> {
    match *v {
        OptionValue::Int(i) => Ok(i),
        // JSON-loaded dictionaries hold floats; whole ones are integers.
        OptionValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(bad(key, format!("expected an integer, got {}", v.describe()))),
    }
}

fn int_in(key: &str, v: &OptionValue, min: i64, max: i64) -> Result<i64, Error> {
    let i = int(key, v)?;
    if i < min || i > max {
        return Err(bad(key, format!("{i} is out of range {min}..={max}")));
    }
    Ok(i)
}

fn float(key: &str, v: &OptionValue) -> Result<f64, Error> {
    match *v {
        OptionValue::Float(f) if f.is_finite() => Ok(f),
        OptionValue::Float(f) => Err(bad(key, format!("expected a finite number, got {f}"))),
        OptionValue::Int(i) => Ok(i as f64),
        _ => Err(bad(key, format!("expected a number, got {}", v.describe()))),
    }
}

fn string<'a>(key: &str, v: &'a OptionValue) -> Result<&'a str, Error> {
    match v {
        OptionValue::String(s) => Ok(s),
        _ => Err(bad(key, format!("expected a String, got {}", v.describe()))),
    }
}

fn boolean(key: &str, v: &OptionValue) -> Result<bool, Error> {
    match v {
        OptionValue::Bool(b) => Ok(*b),
        other => Err(bad(key, format!("expected a bool, got {}", other.describe()))),
    }
}

fn image<'a>(key: &str, v: &'a OptionValue) -> Result<&'a ControlImage, Error> {
    match v {
        OptionValue::Image(i) => Ok(i),
        other => Err(bad(key, format!("expected an Image, got {}", other.describe()))),
    }
}

/// A non-empty String naming a file or folder.
fn path(key: &str, v: &OptionValue) -> Result<PathBuf, Error> {
    match string(key, v)? {
        "" => Err(bad(key, "is empty; expected a file-system path")),
        p => Ok(PathBuf::from(p)),
    }
}

/// `init_image`: gray is spread to R, G and B; alpha is dropped (Kiln's
/// init pictures are RGB, and the C API ignores alpha too).
fn init_image(key: &str, v: &OptionValue) -> Result<InitImage, Error> {
    let i = image(key, v)?;
    let rgb = match i.channels {
        1 => i.data.iter().flat_map(|&g| [g, g, g]).collect(),
        3 => i.data.clone(),
        4 => i.data.chunks_exact(4).flat_map(|p| [p[0], p[1], p[2]]).collect(),
        c => return Err(bad(key, format!("an Image with {c} channels; expected gray, RGB or RGBA"))),
    };
    Ok(InitImage { width: i.width, height: i.height, rgb })
}

/// `mask`: its luma, one byte a pixel (white = repaint). Gray images are
/// used as they are; colour ones by Rec. 601 luma in PIL's fixed point
/// (`convert("L")`, which the Python binding uses); alpha is ignored.
fn mask(key: &str, v: &OptionValue) -> Result<Mask, Error> {
    let i = image(key, v)?;
    let luma = |p: &[u8]| ((19595 * p[0] as u32 + 38470 * p[1] as u32 + 7471 * p[2] as u32 + 0x8000) >> 16) as u8;
    let data = match i.channels {
        1 => i.data.clone(),
        3 | 4 => i.data.chunks_exact(i.channels).map(luma).collect(),
        c => return Err(bad(key, format!("an Image with {c} channels; expected gray, RGB or RGBA"))),
    };
    Ok(Mask { width: i.width, height: i.height, data })
}

/// The entries of a Dictionary `v` (one list item, named `key`), each key
/// checked against `known` and seen once; `what` describes the entry.
fn entry_fields<'a>(key: &str, v: &'a OptionValue, known: &[&str], what: &str) -> Result<Vec<(String, &'a OptionValue)>, Error> {
    let OptionValue::Dictionary(entries) = v else {
        return Err(bad(key, format!("expected a Dictionary with {}, got {}", known.join(", "), v.describe())));
    };
    let mut out: Vec<(String, &OptionValue)> = Vec::new();
    for (name, value) in entries {
        let k = format!("{key}.{name}");
        if out.iter().any(|(n, _)| n == &k) {
            return Err(bad(&k, "given twice"));
        }
        if !known.contains(&name.as_str()) {
            return Err(bad(&k, format!("unknown {what} key; known: {}", known.join(", "))));
        }
        out.push((k, value));
    }
    Ok(out)
}

/// A list option (an Array of Dictionaries), each entry parsed by `one`
/// with its name (`loras[1]`).
fn list_of<T>(key: &str, v: &OptionValue, one: impl Fn(&str, &OptionValue) -> Result<T, Error>) -> Result<Vec<T>, Error> {
    let OptionValue::Array(list) = v else {
        return Err(bad(key, format!("expected an Array of Dictionaries, got {}", v.describe())));
    };
    list.iter().enumerate().map(|(i, e)| one(&format!("{key}[{i}]"), e)).collect()
}

/// One `loras` entry: `{"path": String, "scale": float, "text_encoder_scale": float}`
/// (scale 1.0; the text encoders' own strength only when given).
fn lora(key: &str, v: &OptionValue) -> Result<LoraSpec, Error> {
    let mut spec = LoraSpec::new(PathBuf::new(), 1.0);
    let mut has_path = false;
    for (k, value) in entry_fields(key, v, LORA_KEYS, "LoRA")? {
        if k.ends_with(".path") {
            spec.path = path(&k, value)?;
            has_path = true;
        } else if k.ends_with(".text_encoder_scale") {
            spec.text_encoder_scale = Some(float(&k, value)? as f32);
        } else {
            spec.scale = float(&k, value)? as f32;
        }
    }
    if !has_path {
        return Err(bad(key, "missing \"path\" (the LoRA's .safetensors file)"));
    }
    Ok(spec)
}

/// One `embeddings` entry: `{"path": String, "token": String}` (token: the file's own).
fn embedding(key: &str, v: &OptionValue) -> Result<EmbeddingSpec, Error> {
    let mut spec = EmbeddingSpec { path: PathBuf::new(), token: None };
    let mut has_path = false;
    for (k, value) in entry_fields(key, v, EMBEDDING_KEYS, "embedding")? {
        if k.ends_with(".path") {
            spec.path = path(&k, value)?;
            has_path = true;
        } else {
            let token = string(&k, value)?;
            if token.is_empty() || token.contains(char::is_whitespace) {
                return Err(bad(&k, format!("{token:?} is not a prompt word (non-empty, no spaces)")));
            }
            spec.token = Some(token.to_string());
        }
    }
    if !has_path {
        return Err(bad(key, "missing \"path\" (the embedding's .safetensors file)"));
    }
    Ok(spec)
}

/// Applies `globalize` to every option that names a file or folder
/// (`refiner`, each `loras[i].path` and `embeddings[i].path`), so the Godot
/// node can turn `res://` and `user://` paths into file-system ones before
/// parsing. Values of the wrong type are left for [`parse`] to report.
pub fn map_paths(entries: &mut [(String, OptionValue)], globalize: impl Fn(&str) -> String) {
    for (key, value) in entries.iter_mut() {
        match (key.as_str(), value) {
            ("refiner", OptionValue::String(p)) => *p = globalize(p),
            ("loras" | "embeddings", OptionValue::Array(list)) => {
                for entry in list {
                    if let OptionValue::Dictionary(fields) = entry {
                        for (name, v) in fields {
                            if let ("path", OptionValue::String(p)) = (name.as_str(), v) {
                                *p = globalize(p);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// One `controls` entry (a Dictionary with [`CONTROL_KEYS`]) as a Kiln
/// control; `key` names it in errors (`controls[1]`).
fn control(key: &str, v: &OptionValue) -> Result<Control, Error> {
    let OptionValue::Dictionary(entries) = v else {
        return Err(bad(key, format!("expected a Dictionary with {}, got {}", CONTROL_KEYS.join(", "), v.describe())));
    };
    let (mut net, mut image, mut preprocess) = (None, None, None);
    let mut c = Control::new("", ControlImage { width: 0, height: 0, channels: 0, data: Vec::new() });
    let (mut low, mut high) = (100.0f32, 200.0f32);
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in entries {
        let k = format!("{key}.{name}");
        if seen.contains(&name.as_str()) {
            return Err(bad(&k, "given twice"));
        }
        seen.push(name);
        match name.as_str() {
            "controlnet" => net = Some(string(&k, value)?.to_string()),
            "image" => match value {
                OptionValue::Image(i) => image = Some(i.clone()),
                other => return Err(bad(&k, format!("expected an Image, got {}", other.describe()))),
            },
            "scale" => c.scale = float(&k, value)? as f32,
            "start" => c.start = float(&k, value)? as f32,
            "end" => c.end = float(&k, value)? as f32,
            "preprocess" => {
                let p = string(&k, value)?;
                preprocess = Some(Preprocess::from_name(p).ok_or_else(|| bad(&k, format!("unknown preprocessor {p:?}; one of none, canny, height, tile")))?);
            }
            "canny_low" => low = float(&k, value)? as f32,
            "canny_high" => high = float(&k, value)? as f32,
            _ => return Err(bad(&k, format!("unknown control key; known: {}", CONTROL_KEYS.join(", ")))),
        }
    }
    c.controlnet = net.ok_or_else(|| bad(key, "missing \"controlnet\" (a folder name under the model's controlnet/)"))?;
    c.image = image.ok_or_else(|| bad(key, "missing \"image\" (the control image)"))?;
    c.preprocess = match preprocess.unwrap_or_default() {
        Preprocess::Canny { .. } => Preprocess::Canny { low, high },
        p => p,
    };
    Ok(c)
}

/// Largest side accepted here; Kiln checks the model's own size rules.
const MAX_SIDE: i64 = 16384;

/// Parses `generate(prompt, options)`. Entries are applied in order; a key
/// given twice is an error (a Dictionary cannot hold one twice, so it means
/// `"steps"` and `&"steps"` were both used).
pub fn parse(prompt: &str, entries: &[(String, OptionValue)]) -> Result<GenerateOptions, Error> {
    let mut o = GenerateOptions {
        request: GenerateRequest { prompt: prompt.to_string(), ..Default::default() },
        seamless: Seamless::None,
        preview_interval: 0,
        priority: 0,
        adapters: Adapters::default(),
        refiner: None,
    };
    let mut seen: Vec<&str> = Vec::new();
    let mut refiner_start: Option<f32> = None;
    // SDXL sizes: [width, height] per entry of XL_SIZES, 0 = not given.
    let mut sizes = [[0usize; 2]; 4];
    for (key, value) in entries {
        if seen.contains(&key.as_str()) {
            return Err(bad(key, "given twice"));
        }
        seen.push(key);
        let r = &mut o.request;
        match key.as_str() {
            "negative_prompt" => r.negative_prompt = string(key, value)?.to_string(),
            "width" => r.width = int_in(key, value, 0, MAX_SIDE)? as usize,
            "height" => r.height = int_in(key, value, 0, MAX_SIDE)? as usize,
            "steps" => r.steps = int_in(key, value, 1, 1000)? as usize,
            "guidance_scale" => r.guidance_scale = float(key, value)? as f32,
            "guidance_rescale" => {
                let g = float(key, value)?;
                if !(0.0..=1.0).contains(&g) {
                    return Err(bad(key, format!("{g} is out of range 0..=1")));
                }
                r.guidance_rescale = g as f32;
            }
            "seed" => r.seed = int_in(key, value, 0, i64::MAX)? as u64,
            "noise_generator" => {
                let name = string(key, value)?;
                r.noise = NoiseGenerator::from_name(name)
                    .ok_or_else(|| bad(key, format!("unknown noise generator {name:?}; one of {}", NoiseGenerator::NAMES.join(", "))))?;
            }
            "variation_seed" => r.variation_seed = int_in(key, value, 0, i64::MAX)? as u64,
            "variation_strength" => {
                let v = float(key, value)?;
                if !(0.0..=1.0).contains(&v) {
                    return Err(bad(key, format!("{v} is out of range 0..=1")));
                }
                r.variation_strength = v as f32;
            }
            "scheduler" => {
                let name = string(key, value)?;
                r.scheduler = SchedulerKind::from_name(name).ok_or_else(|| {
                    bad(key, format!("unknown scheduler {name:?}; one of {}", SchedulerKind::NAMES.join(", ")))
                })?;
            }
            "prompt_syntax" => {
                r.prompt_syntax = match string(key, value)? {
                    "plain" => PromptSyntax::Plain,
                    "weighted" => PromptSyntax::Weighted,
                    other => return Err(bad(key, format!("unknown syntax {other:?}; one of plain, weighted"))),
                }
            }
            "clip_skip" => r.clip_skip = int_in(key, value, 0, 64)? as u32,
            "seamless" => {
                let name = string(key, value)?;
                o.seamless = Seamless::from_name(name)
                    .ok_or_else(|| bad(key, format!("unknown axes {name:?}; one of none, x, y, xy")))?;
            }
            "preview_interval" => o.preview_interval = int_in(key, value, 0, u32::MAX as i64)? as u32,
            "priority" => o.priority = int_in(key, value, i32::MIN as i64, i32::MAX as i64)? as i32,
            "prompt_2" => r.prompt_2 = string(key, value)?.to_string(),
            "negative_prompt_2" => r.negative_prompt_2 = string(key, value)?.to_string(),
            "crop_top" => r.xl.crop_top_left[0] = int_in(key, value, 0, MAX_SIDE)? as usize,
            "crop_left" => r.xl.crop_top_left[1] = int_in(key, value, 0, MAX_SIDE)? as usize,
            "negative_crop_top" => r.xl.negative_crop_top_left[0] = int_in(key, value, 0, MAX_SIDE)? as usize,
            "negative_crop_left" => r.xl.negative_crop_top_left[1] = int_in(key, value, 0, MAX_SIDE)? as usize,
            "aesthetic_score" => r.xl.aesthetic_score = float(key, value)? as f32,
            "negative_aesthetic_score" => r.xl.negative_aesthetic_score = float(key, value)? as f32,
            "controls" => {
                let OptionValue::Array(list) = value else {
                    return Err(bad(key, format!("expected an Array of Dictionaries, got {}", value.describe())));
                };
                r.controls = list.iter().enumerate().map(|(i, c)| control(&format!("controls[{i}]"), c)).collect::<Result<_, _>>()?;
            }
            "guess_mode" => r.guess_mode = boolean(key, value)?,
            "init_image" => r.init_image = Some(init_image(key, value)?),
            "strength" => {
                let s = float(key, value)?;
                if !(0.0..=1.0).contains(&s) {
                    return Err(bad(key, format!("{s} is out of range 0..=1")));
                }
                r.strength = s as f32;
            }
            "posterior_mean" => r.posterior_mean = boolean(key, value)?,
            "mask" => r.mask = Some(mask(key, value)?),
            "loras" => o.adapters.loras = list_of(key, value, lora)?,
            "embeddings" => o.adapters.embeddings = list_of(key, value, embedding)?,
            "refiner" => o.refiner = Some(RefinerChoice { path: path(key, value)?, start: DEFAULT_REFINER_START }),
            "refiner_start" => {
                let f = float(key, value)?;
                if !(f > 0.0 && f < 1.0) {
                    return Err(bad(key, format!("{f} must be strictly between 0 and 1 (the fraction of the schedule the model runs before the refiner)")));
                }
                refiner_start = Some(f as f32);
            }
            k => match XL_SIZES.iter().position(|(w, h)| k == *w || k == *h) {
                Some(i) => sizes[i][usize::from(k == XL_SIZES[i].1)] = int_in(key, value, 1, MAX_SIDE)? as usize,
                None => return Err(bad(key, format!("unknown option; known: {}", KEYS.join(", ")))),
            },
        }
    }
    let x = &mut o.request.xl;
    let fields = [&mut x.original_size, &mut x.target_size, &mut x.negative_original_size, &mut x.negative_target_size];
    for ((field, [w, h]), (wk, hk)) in fields.into_iter().zip(sizes).zip(XL_SIZES) {
        *field = match (w, h) {
            (0, 0) => None,
            (0, _) => return Err(bad(wk, format!("missing; \"{hk}\" is given and SDXL sizes need both"))),
            (_, 0) => return Err(bad(hk, format!("missing; \"{wk}\" is given and SDXL sizes need both"))),
            (w, h) => Some([w, h]),
        };
    }
    // Keys that only mean something with another: a Dictionary holds only
    // what the script set, so one given alone is a mistake worth naming.
    let r = &o.request;
    let given = |k: &str| seen.contains(&k);
    for k in ["strength", "posterior_mean", "mask"] {
        if given(k) && r.init_image.is_none() {
            return Err(bad(k, "needs \"init_image\" (the picture to start from)"));
        }
    }
    if let (Some(m), Some(i)) = (&r.mask, &r.init_image) {
        if (m.width, m.height) != (i.width, i.height) {
            return Err(Error::new(
                ErrorKind::InvalidSize,
                format!("options[\"mask\"]: the mask is {}x{} but \"init_image\" is {}x{}; they must match", m.width, m.height, i.width, i.height),
            ));
        }
    }
    match (&mut o.refiner, refiner_start) {
        (Some(choice), Some(start)) => choice.start = start,
        (None, Some(_)) => return Err(bad("refiner_start", "needs \"refiner\" (the refiner's model folder)")),
        _ => {}
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(list: &[(&str, OptionValue)]) -> Vec<(String, OptionValue)> {
        list.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    fn err(list: &[(&str, OptionValue)]) -> Error {
        parse("p", &entries(list)).expect_err("should be rejected")
    }

    #[test]
    fn empty_options_are_kiln_defaults() {
        let o = parse("mossy stone", &[]).unwrap();
        let d = GenerateRequest::default();
        assert_eq!(o.request.prompt, "mossy stone");
        assert_eq!((o.request.width, o.request.height, o.request.steps, o.request.seed), (d.width, d.height, d.steps, d.seed));
        assert_eq!(o.request.guidance_scale, d.guidance_scale);
        assert_eq!(o.request.scheduler, SchedulerKind::Default);
        assert_eq!(o.request.noise, NoiseGenerator::Kiln);
        assert_eq!((o.seamless, o.preview_interval, o.priority), (Seamless::None, 0, 0));
    }

    #[test]
    fn every_key_reaches_the_request() {
        use OptionValue::*;
        let o = parse(
            "p",
            &entries(&[
                ("negative_prompt", String("blurry".into())),
                ("width", Int(128)),
                ("height", Float(64.0)),
                ("steps", Int(4)),
                ("guidance_scale", Int(3)),
                ("guidance_rescale", Float(0.5)),
                ("seed", Int(42)),
                ("noise_generator", String("torch".into())),
                ("scheduler", String("euler_a".into())),
                ("prompt_syntax", String("weighted".into())),
                ("clip_skip", Int(1)),
                ("seamless", String("xy".into())),
                ("preview_interval", Int(2)),
                ("priority", Int(-3)),
            ]),
        )
        .unwrap();
        let r = &o.request;
        assert_eq!(r.negative_prompt, "blurry");
        assert_eq!((r.width, r.height, r.steps, r.seed, r.clip_skip), (128, 64, 4, 42, 1));
        assert_eq!((r.guidance_scale, r.guidance_rescale), (3.0, 0.5));
        assert_eq!(r.scheduler, SchedulerKind::EulerA);
        assert_eq!(r.noise, NoiseGenerator::TorchCpu);
        assert_eq!(r.prompt_syntax, PromptSyntax::Weighted);
        assert_eq!((o.seamless, o.preview_interval, o.priority), (Seamless::Xy, 2, -3));
    }

    #[test]
    fn noise_generator_takes_kilns_names() {
        for g in NoiseGenerator::ALL {
            let o = parse("p", &entries(&[("noise_generator", OptionValue::String(g.name().into()))])).unwrap();
            assert_eq!(o.request.noise, g, "{}", g.name());
        }
        let names = ["kiln", "torch", "torch_cuda"];
        assert_eq!(NoiseGenerator::NAMES, names, "the names the README documents");
        for (name, want) in names.into_iter().zip([NoiseGenerator::Kiln, NoiseGenerator::TorchCpu, NoiseGenerator::TorchCuda]) {
            let o = parse("p", &entries(&[("noise_generator", OptionValue::String(name.into()))])).unwrap();
            assert_eq!(o.request.noise, want, "{name}");
        }
        assert_eq!(parse("p", &[]).unwrap().request.noise, NoiseGenerator::default(), "Kiln's noise unless asked");
    }

    #[test]
    fn variation_keys_reach_the_request() {
        use OptionValue::*;
        let o = parse("p", &entries(&[("seed", Int(2026)), ("variation_seed", Int(7)), ("variation_strength", Float(0.3))])).unwrap();
        let r = &o.request;
        assert_eq!((r.seed, r.variation_seed, r.variation_strength), (2026, 7, 0.3f32));
        // JSON-loaded numbers are floats; the ends of the range are accepted.
        let o = parse("p", &entries(&[("variation_seed", Float(9.0)), ("variation_strength", Int(1))])).unwrap();
        assert_eq!((o.request.variation_seed, o.request.variation_strength), (9, 1.0));
        let o = parse("p", &entries(&[("variation_seed", Int(i64::MAX)), ("variation_strength", Float(0.0))])).unwrap();
        assert_eq!((o.request.variation_seed, o.request.variation_strength), (i64::MAX as u64, 0.0));
        // Either key alone is accepted, as in Kiln's request (strength 0 = no variation; variation seed 0 by default).
        assert_eq!(parse("p", &entries(&[("variation_strength", Float(0.5))])).unwrap().request.variation_seed, 0);
        assert_eq!(parse("p", &entries(&[("variation_seed", Int(3))])).unwrap().request.variation_strength, 0.0);
        // Without them, Kiln's defaults: no variation.
        let (d, plain) = (GenerateRequest::default(), parse("p", &[]).unwrap().request);
        assert_eq!((plain.variation_seed, plain.variation_strength), (d.variation_seed, d.variation_strength));
        assert_eq!((d.variation_seed, d.variation_strength), (0, 0.0));
    }

    #[test]
    fn variation_mistakes_name_the_key_and_what_came() {
        use OptionValue::*;
        let cases: Vec<(&str, OptionValue, &str)> = vec![
            ("variation_seed", Int(-1), "options[\"variation_seed\"]: -1 is out of range 0..=9223372036854775807"),
            ("variation_seed", Float(7.5), "options[\"variation_seed\"]: expected an integer, got float 7.5"),
            ("variation_seed", String("7".into()), "options[\"variation_seed\"]: expected an integer, got String \"7\""),
            ("variation_seed", Nil, "options[\"variation_seed\"]: expected an integer, got null"),
            ("variation_strength", Float(1.5), "options[\"variation_strength\"]: 1.5 is out of range 0..=1"),
            ("variation_strength", Float(-0.1), "options[\"variation_strength\"]: -0.1 is out of range 0..=1"),
            ("variation_strength", Int(2), "options[\"variation_strength\"]: 2 is out of range 0..=1"),
            ("variation_strength", Float(f64::NAN), "options[\"variation_strength\"]: expected a finite number, got NaN"),
            ("variation_strength", Float(f64::INFINITY), "options[\"variation_strength\"]: expected a finite number, got inf"),
            ("variation_strength", String("0.3".into()), "options[\"variation_strength\"]: expected a number, got String \"0.3\""),
            ("variation_strength", Bool(true), "options[\"variation_strength\"]: expected a number, got bool true"),
        ];
        for (key, value, want) in cases {
            let e = err(&[(key, value.clone())]);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{key}={value:?}");
            assert_eq!(e.message(), want, "{key}={value:?}");
        }
        let e = err(&[("variation_seed", Int(1)), ("variation_seed", Int(2))]);
        assert_eq!(e.message(), "options[\"variation_seed\"]: given twice");
    }

    #[test]
    fn mistakes_name_the_key_and_what_came() {
        use OptionValue::*;
        let cases: Vec<(&str, OptionValue, &str)> = vec![
            ("stpes", Int(4), "unknown option; known: negative_prompt"),
            ("steps", Int(0), "0 is out of range 1..=1000"),
            ("steps", Float(2.5), "expected an integer, got float 2.5"),
            ("steps", String("4".into()), "expected an integer, got String \"4\""),
            ("width", Int(-64), "-64 is out of range 0..=16384"),
            ("seed", Int(-1), "-1 is out of range 0..="),
            ("guidance_scale", Float(f64::NAN), "expected a finite number"),
            ("guidance_scale", Nil, "expected a number, got null"),
            ("guidance_rescale", Float(1.5), "1.5 is out of range 0..=1"),
            ("scheduler", String("eulerr".into()), "unknown scheduler \"eulerr\"; one of default, ddim"),
            ("noise_generator", String("pytorch".into()), "unknown noise generator \"pytorch\"; one of kiln, torch, torch_cuda"),
            ("noise_generator", Int(1), "expected a String, got int 1"),
            ("seamless", Bool(true), "expected a String, got bool true"),
            ("seamless", String("z".into()), "unknown axes \"z\""),
            ("prompt_syntax", String("a1111".into()), "unknown syntax \"a1111\""),
            ("negative_prompt", Other("Vector2".into()), "expected a String, got Vector2"),
            ("priority", Int(1 << 40), "out of range"),
        ];
        for (key, value, want) in cases {
            let e = err(&[(key, value.clone())]);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{key}={value:?}");
            let prefix = format!("options[\"{key}\"]: ");
            assert!(e.message().starts_with(&prefix) && e.message().contains(want), "{key}={value:?}: got {:?}, want {want:?}", e.message());
        }
    }

    #[test]
    fn sdxl_keys_reach_the_request() {
        use OptionValue::*;
        let o = parse(
            "p",
            &entries(&[
                ("prompt_2", String("metal".into())),
                ("negative_prompt_2", String("dark".into())),
                ("original_width", Int(160)),
                ("original_height", Float(128.0)),
                ("crop_top", Int(8)),
                ("crop_left", Int(16)),
                ("target_width", Int(96)),
                ("target_height", Int(64)),
                ("negative_original_width", Int(48)),
                ("negative_original_height", Int(32)),
                ("negative_crop_top", Int(1)),
                ("negative_crop_left", Int(4)),
                ("negative_target_width", Int(80)),
                ("negative_target_height", Int(48)),
                ("aesthetic_score", Float(7.5)),
                ("negative_aesthetic_score", Int(2)),
            ]),
        )
        .unwrap();
        let r = &o.request;
        assert_eq!((r.prompt_2.as_str(), r.negative_prompt_2.as_str()), ("metal", "dark"));
        let want = kiln::XlConditioning {
            original_size: Some([160, 128]),
            crop_top_left: [8, 16],
            target_size: Some([96, 64]),
            negative_original_size: Some([48, 32]),
            negative_crop_top_left: [1, 4],
            negative_target_size: Some([80, 48]),
            aesthetic_score: 7.5,
            negative_aesthetic_score: 2.0,
        };
        assert_eq!(r.xl, want);
        assert_eq!(parse("p", &[]).unwrap().request.xl, kiln::XlConditioning::default());
        let e = err(&[("original_width", Int(64))]);
        assert_eq!(e.message(), "options[\"original_height\"]: missing; \"original_width\" is given and SDXL sizes need both");
        let e = err(&[("negative_target_height", Int(64))]);
        assert!(e.message().starts_with("options[\"negative_target_width\"]: missing"), "{}", e.message());
        let e = err(&[("target_width", Int(0))]);
        assert!(e.message().contains("0 is out of range 1..=16384"), "{}", e.message());
        let e = err(&[("aesthetic_score", Float(f64::INFINITY))]);
        assert!(e.message().contains("expected a finite number"), "{}", e.message());
    }

    fn gray(width: usize, height: usize) -> ControlImage {
        ControlImage { width, height, channels: 1, data: vec![128; width * height] }
    }

    fn control_entry(list: &[(&str, OptionValue)]) -> OptionValue {
        OptionValue::Dictionary(entries(list))
    }

    #[test]
    fn controls_mirror_kiln_control() {
        use OptionValue::*;
        let o = parse(
            "p",
            &entries(&[
                (
                    "controls",
                    Array(vec![
                        control_entry(&[
                            ("controlnet", String("canny".into())),
                            ("image", Image(gray(64, 32))),
                            ("scale", Float(0.8)),
                            ("start", Float(0.1)),
                            ("end", Int(1)),
                            ("preprocess", String("canny".into())),
                            ("canny_low", Int(50)),
                            ("canny_high", Float(150.0)),
                        ]),
                        control_entry(&[("controlnet", String("tile".into())), ("image", Image(gray(8, 8))), ("preprocess", String("tile".into()))]),
                    ]),
                ),
                ("guess_mode", Bool(true)),
            ]),
        )
        .unwrap();
        let r = &o.request;
        assert!(r.guess_mode);
        assert_eq!(r.controls.len(), 2);
        let (a, b) = (&r.controls[0], &r.controls[1]);
        assert_eq!((a.controlnet.as_str(), a.image.width, a.image.height, a.image.channels), ("canny", 64, 32, 1));
        assert_eq!((a.scale, a.start, a.end), (0.8, 0.1, 1.0));
        assert_eq!(a.preprocess, Preprocess::Canny { low: 50.0, high: 150.0 });
        // Defaults are kiln_control_init's.
        let d = Control::new("tile", gray(8, 8));
        assert_eq!((b.controlnet.as_str(), b.scale, b.start, b.end, b.preprocess), ("tile", d.scale, d.start, d.end, Preprocess::Tile));
        let plain = parse("p", &entries(&[("controls", Array(vec![control_entry(&[("controlnet", String("x".into())), ("image", Image(gray(8, 8))), ("preprocess", String("canny".into()))])]))])).unwrap();
        assert_eq!(plain.request.controls[0].preprocess, Preprocess::Canny { low: 100.0, high: 200.0 });
        assert!(parse("p", &[]).unwrap().request.controls.is_empty());
    }

    #[test]
    fn control_mistakes_name_the_entry_and_key() {
        use OptionValue::*;
        let good = || vec![("controlnet", String("tiny".into())), ("image", Image(gray(8, 8)))];
        let with = |extra: (&str, OptionValue)| {
            let mut list = good();
            list.push(extra);
            Array(vec![control_entry(&good()), control_entry(&list)])
        };
        let cases: Vec<(OptionValue, &str)> = vec![
            (Int(3), "options[\"controls\"]: expected an Array of Dictionaries, got int 3"),
            (Array(vec![String("tiny".into())]), "options[\"controls[0]\"]: expected a Dictionary with controlnet, image"),
            (Array(vec![control_entry(&[("image", Image(gray(8, 8)))])]), "options[\"controls[0]\"]: missing \"controlnet\""),
            (Array(vec![control_entry(&[("controlnet", String("tiny".into()))])]), "options[\"controls[0]\"]: missing \"image\""),
            (with(("scle", Float(1.0))), "options[\"controls[1].scle\"]: unknown control key; known: controlnet, image, scale"),
            (with(("preprocess", String("depthmap".into()))), "options[\"controls[1].preprocess\"]: unknown preprocessor \"depthmap\""),
            (with(("scale", String("1".into()))), "options[\"controls[1].scale\"]: expected a number, got String \"1\""),
            (with(("end", Float(f64::NAN))), "options[\"controls[1].end\"]: expected a finite number"),
            (with(("image", Image(gray(8, 8)))), "options[\"controls[1].image\"]: given twice"),
            (Array(vec![control_entry(&[("controlnet", String("tiny".into())), ("image", String("edges.png".into()))])]), "options[\"controls[0].image\"]: expected an Image, got String"),
        ];
        for (value, want) in cases {
            let e = err(&[("controls", value.clone())]);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{value:?}");
            assert!(e.message().starts_with(want), "{value:?}: got {:?}, want {want:?}", e.message());
        }
        let e = err(&[("guess_mode", Int(1))]);
        assert_eq!(e.message(), "options[\"guess_mode\"]: expected a bool, got int 1");
    }

    fn rgba(width: usize, height: usize, px: [u8; 4]) -> ControlImage {
        ControlImage { width, height, channels: 4, data: px.repeat(width * height) }
    }

    #[test]
    fn img2img_and_inpainting_keys_reach_the_request() {
        use OptionValue::*;
        let o = parse(
            "p",
            &entries(&[
                ("init_image", Image(rgba(2, 1, [10, 20, 30, 0]))),
                ("strength", Float(0.35)),
                ("posterior_mean", Bool(true)),
                ("mask", Image(ControlImage { width: 2, height: 1, channels: 1, data: vec![0, 255] })),
            ]),
        )
        .unwrap();
        let r = &o.request;
        // Alpha dropped: the C API's RGBA init image reads the same way.
        assert_eq!(r.init_image, Some(InitImage { width: 2, height: 1, rgb: vec![10, 20, 30, 10, 20, 30] }));
        assert_eq!((r.strength, r.posterior_mean), (0.35, true));
        assert_eq!(r.mask, Some(Mask { width: 2, height: 1, data: vec![0, 255] }));
        // Kiln's defaults without them.
        let d = GenerateRequest::default();
        let plain = parse("p", &[]).unwrap().request;
        assert_eq!((plain.init_image, plain.mask, plain.strength, plain.posterior_mean), (None, None, d.strength, false));
        // Gray init images are spread to RGB; colour masks read as Rec. 601 luma.
        let gray = parse("p", &entries(&[("init_image", Image(ControlImage { width: 1, height: 1, channels: 1, data: vec![77] }))])).unwrap();
        assert_eq!(gray.request.init_image.unwrap().rgb, vec![77, 77, 77]);
        let rgb = ControlImage { width: 4, height: 1, channels: 3, data: vec![255, 255, 255, 255, 0, 0, 0, 255, 0, 0, 0, 255] };
        let o = parse("p", &entries(&[("init_image", Image(rgba(4, 1, [0, 0, 0, 255]))), ("mask", Image(rgb))])).unwrap();
        // PIL's convert("L") of white, red, green, blue.
        assert_eq!(o.request.mask.unwrap().data, vec![255, 76, 150, 29]);
        assert_eq!(parse("p", &entries(&[("init_image", Image(rgba(1, 1, [0; 4]))), ("strength", Int(1))])).unwrap().request.strength, 1.0);
    }

    #[test]
    fn img2img_and_inpainting_mistakes_name_the_key() {
        use OptionValue::*;
        let init = || ("init_image", Image(rgba(8, 8, [1, 2, 3, 4])));
        type Case<'a> = (Vec<(&'a str, OptionValue)>, ErrorKind, &'a str);
        let cases: Vec<Case> = vec![
            (vec![("init_image", String("res://wall.png".into()))], ErrorKind::InvalidArgument, "options[\"init_image\"]: expected an Image, got String \"res://wall.png\""),
            (vec![init(), ("strength", Float(1.5))], ErrorKind::InvalidArgument, "options[\"strength\"]: 1.5 is out of range 0..=1"),
            (vec![init(), ("strength", Float(-0.1))], ErrorKind::InvalidArgument, "options[\"strength\"]: -0.1 is out of range 0..=1"),
            (vec![init(), ("strength", String("0.5".into()))], ErrorKind::InvalidArgument, "options[\"strength\"]: expected a number, got String"),
            (vec![("strength", Float(0.5))], ErrorKind::InvalidArgument, "options[\"strength\"]: needs \"init_image\""),
            (vec![init(), ("posterior_mean", Int(1))], ErrorKind::InvalidArgument, "options[\"posterior_mean\"]: expected a bool, got int 1"),
            (vec![("posterior_mean", Bool(true))], ErrorKind::InvalidArgument, "options[\"posterior_mean\"]: needs \"init_image\""),
            (vec![("mask", Image(gray(8, 8)))], ErrorKind::InvalidArgument, "options[\"mask\"]: needs \"init_image\""),
            (vec![init(), ("mask", Nil)], ErrorKind::InvalidArgument, "options[\"mask\"]: expected an Image, got null"),
            (vec![init(), ("mask", Image(gray(8, 4)))], ErrorKind::InvalidSize, "options[\"mask\"]: the mask is 8x4 but \"init_image\" is 8x8; they must match"),
        ];
        for (list, kind, want) in cases {
            let e = err(&list);
            assert_eq!(e.kind(), kind, "{list:?}: {}", e.message());
            assert!(e.message().starts_with(want), "got {:?}, want {want:?}", e.message());
        }
    }

    fn dict(list: &[(&str, OptionValue)]) -> OptionValue {
        OptionValue::Dictionary(entries(list))
    }

    #[test]
    fn loras_and_embeddings_mirror_kiln_lora_and_kiln_embedding() {
        use OptionValue::*;
        let o = parse(
            "p",
            &entries(&[
                (
                    "loras",
                    Array(vec![
                        dict(&[("path", String("/m/style.safetensors".into())), ("scale", Float(0.5))]),
                        dict(&[("path", String("/m/detail.safetensors".into()))]),
                        dict(&[("path", String("/m/clip.safetensors".into())), ("scale", Float(0.8)), ("text_encoder_scale", Float(0.0))]),
                    ]),
                ),
                (
                    "embeddings",
                    Array(vec![dict(&[("path", String("/m/brick.safetensors".into())), ("token", String("<brick>".into()))]), dict(&[("path", String("/m/moss.safetensors".into()))])]),
                ),
            ]),
        )
        .unwrap();
        let a = &o.adapters;
        let lora = |p: &str, scale| LoraSpec::new(p, scale);
        // Scale 1.0 and the file's own token are kiln_lora_init's and kiln_embedding_init's defaults.
        let own = LoraSpec { text_encoder_scale: Some(0.0), ..lora("/m/clip.safetensors", 0.8) };
        assert_eq!(a.loras, vec![lora("/m/style.safetensors", 0.5), lora("/m/detail.safetensors", 1.0), own]);
        let emb = |p: &str, token: Option<&str>| EmbeddingSpec { path: p.into(), token: token.map(Into::into) };
        assert_eq!(a.embeddings, vec![emb("/m/brick.safetensors", Some("<brick>")), emb("/m/moss.safetensors", None)]);
        assert!(!a.allow_unmatched, "unmatched LoRA keys fail, as in the C API");
        assert_eq!(parse("p", &[]).unwrap().adapters, Adapters::default());
        let none = parse("p", &entries(&[("loras", Array(vec![])), ("embeddings", Array(vec![]))])).unwrap();
        assert_eq!(none.adapters, Adapters::default(), "empty lists are the plain model");
    }

    #[test]
    fn adapter_mistakes_name_the_entry_and_key() {
        use OptionValue::*;
        let good = || dict(&[("path", String("/m/a.safetensors".into()))]);
        let cases: Vec<(&str, OptionValue, &str)> = vec![
            ("loras", String("/m/a.safetensors".into()), "options[\"loras\"]: expected an Array of Dictionaries, got String"),
            ("loras", Array(vec![String("/m/a.safetensors".into())]), "options[\"loras[0]\"]: expected a Dictionary with path, scale, text_encoder_scale, got String"),
            ("loras", Array(vec![good(), dict(&[("scale", Float(0.5))])]), "options[\"loras[1]\"]: missing \"path\" (the LoRA's .safetensors file)"),
            ("loras", Array(vec![dict(&[("file", String("a".into()))])]), "options[\"loras[0].file\"]: unknown LoRA key; known: path, scale"),
            ("loras", Array(vec![dict(&[("path", String("".into()))])]), "options[\"loras[0].path\"]: is empty"),
            ("loras", Array(vec![dict(&[("path", Int(3))])]), "options[\"loras[0].path\"]: expected a String, got int 3"),
            ("loras", Array(vec![good(), dict(&[("path", String("b".into())), ("scale", Float(f64::INFINITY))])]), "options[\"loras[1].scale\"]: expected a finite number"),
            ("loras", Array(vec![dict(&[("path", String("b".into())), ("scale", Bool(true))])]), "options[\"loras[0].scale\"]: expected a number, got bool true"),
            ("embeddings", Int(1), "options[\"embeddings\"]: expected an Array of Dictionaries, got int 1"),
            ("embeddings", Array(vec![dict(&[("token", String("<x>".into()))])]), "options[\"embeddings[0]\"]: missing \"path\" (the embedding's .safetensors file)"),
            ("embeddings", Array(vec![good(), dict(&[("path", String("b".into())), ("token", String("two words".into()))])]), "options[\"embeddings[1].token\"]: \"two words\" is not a prompt word"),
            ("embeddings", Array(vec![dict(&[("path", String("b".into())), ("token", String("".into()))])]), "options[\"embeddings[0].token\"]: \"\" is not a prompt word"),
            ("embeddings", Array(vec![dict(&[("path", String("b".into())), ("scale", Float(1.0))])]), "options[\"embeddings[0].scale\"]: unknown embedding key; known: path, token"),
        ];
        for (key, value, want) in cases {
            let e = err(&[(key, value.clone())]);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{value:?}");
            assert!(e.message().starts_with(want), "{value:?}: got {:?}, want {want:?}", e.message());
        }
    }

    #[test]
    fn refiner_keys_mirror_the_c_fields() {
        use OptionValue::*;
        let o = parse("p", &entries(&[("refiner", String("/m/refiner".into())), ("refiner_start", Float(0.6))])).unwrap();
        assert_eq!(o.refiner, Some(RefinerChoice { path: "/m/refiner".into(), start: 0.6 }));
        let o = parse("p", &entries(&[("refiner", String("/m/refiner".into()))])).unwrap();
        assert_eq!(o.refiner.unwrap().start, DEFAULT_REFINER_START);
        assert!(parse("p", &[]).unwrap().refiner.is_none());
        let cases: Vec<(Vec<(&str, OptionValue)>, &str)> = vec![
            (vec![("refiner", Bool(true))], "options[\"refiner\"]: expected a String, got bool true"),
            (vec![("refiner", String("".into()))], "options[\"refiner\"]: is empty"),
            (vec![("refiner", String("r".into())), ("refiner_start", Float(1.0))], "options[\"refiner_start\"]: 1 must be strictly between 0 and 1"),
            (vec![("refiner", String("r".into())), ("refiner_start", Int(0))], "options[\"refiner_start\"]: 0 must be strictly between 0 and 1"),
            (vec![("refiner", String("r".into())), ("refiner_start", Float(f64::NAN))], "options[\"refiner_start\"]: expected a finite number"),
            (vec![("refiner_start", Float(0.5))], "options[\"refiner_start\"]: needs \"refiner\""),
        ];
        for (list, want) in cases {
            let e = err(&list);
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{list:?}");
            assert!(e.message().starts_with(want), "got {:?}, want {want:?}", e.message());
        }
    }

    #[test]
    fn map_paths_touches_only_path_options() {
        use OptionValue::*;
        let mut list = entries(&[
            ("refiner", String("res://refiner".into())),
            ("loras", Array(vec![dict(&[("path", String("res://a.safetensors".into())), ("scale", Float(1.0))]), String("res://not-an-entry".into())])),
            ("embeddings", Array(vec![dict(&[("path", String("user://e.safetensors".into())), ("token", String("res://t".into()))])])),
            ("negative_prompt", String("res://kept".into())),
            ("controls", Array(vec![dict(&[("controlnet", String("res://kept".into()))])])),
        ]);
        map_paths(&mut list, |p| p.replace("res://", "/game/").replace("user://", "/home/"));
        let want = entries(&[
            ("refiner", String("/game/refiner".into())),
            ("loras", Array(vec![dict(&[("path", String("/game/a.safetensors".into())), ("scale", Float(1.0))]), String("res://not-an-entry".into())])),
            ("embeddings", Array(vec![dict(&[("path", String("/home/e.safetensors".into())), ("token", String("res://t".into()))])])),
            ("negative_prompt", String("res://kept".into())),
            ("controls", Array(vec![dict(&[("controlnet", String("res://kept".into()))])])),
        ]);
        assert_eq!(list, want);
    }

    #[test]
    fn a_key_given_twice_is_rejected() {
        let e = err(&[("steps", OptionValue::Int(4)), ("steps", OptionValue::Int(5))]);
        assert_eq!(e.message(), "options[\"steps\"]: given twice");
    }
}
