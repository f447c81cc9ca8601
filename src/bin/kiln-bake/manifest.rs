//! The bake manifest: a TOML file with `[defaults]`, one `[[asset]]` table per
//! asset and optional `[[atlas]]` tables. Everything is validated before
//! anything is generated; every error names the asset, the key and the line.
use std::collections::HashSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use kiln::model::attention::Attention;
use kiln::model::quantize::Quantization;
use kiln::model::seamless::Seamless;
use kiln::pipeline::outputs::PostProcess;
use kiln::pipeline::NoiseGenerator;
use kiln::SchedulerKind;
use serde::Deserialize;
use toml::Spanned;

/// Keys shared by `[defaults]` and `[[asset]]`. Every value keeps its span so
/// a bad one can be reported with its line.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    name: Option<Spanned<String>>,
    prompt: Option<Spanned<String>>,
    negative_prompt: Option<Spanned<String>>,
    prompt_2: Option<Spanned<String>>,
    negative_prompt_2: Option<Spanned<String>>,
    original_size: Option<Spanned<Vec<i64>>>,
    crop_top_left: Option<Spanned<Vec<i64>>>,
    target_size: Option<Spanned<Vec<i64>>>,
    model: Option<Spanned<String>>,
    quantize: Option<Spanned<String>>,
    attention: Option<Spanned<String>>,
    lora_slots: Option<Spanned<bool>>,
    refiner: Option<Spanned<String>>,
    refiner_start: Option<Spanned<f64>>,
    seed: Option<Spanned<i64>>,
    noise: Option<Spanned<String>>,
    variation_seed: Option<Spanned<i64>>,
    variation_strength: Option<Spanned<f64>>,
    variants: Option<Spanned<i64>>,
    steps: Option<Spanned<i64>>,
    scheduler: Option<Spanned<String>>,
    guidance: Option<Spanned<f64>>,
    size: Option<Spanned<Vec<i64>>>,
    seamless: Option<Spanned<String>>,
    lora: Option<Spanned<Lora>>,
    embedding: Option<Spanned<EmbeddingEntry>>,
    control: Option<Spanned<ControlEntry>>,
    init_image: Option<Spanned<toml::Value>>,
    strength: Option<Spanned<f64>>,
    mask: Option<Spanned<toml::Value>>,
    extend: Option<Spanned<toml::Value>>,
    make_tileable: Option<Spanned<toml::Value>>,
    upscale: Option<Spanned<toml::Value>>,
    sprite: Option<Spanned<bool>>,
    pixel_art: Option<Spanned<String>>,
    normal_map: Option<Spanned<bool>>,
    height_map: Option<Spanned<bool>>,
    format: Option<Spanned<String>>,
    mipmaps: Option<Spanned<bool>>,
    source: Option<Spanned<String>>,
}

/// Sorts every key of [`Table`] by what a `source` asset (a picture that is
/// the asset) does with it: `identity` keys name the asset, `finishing` keys
/// finish its picture (and `model` lends its matting graph), `generation`
/// keys describe a generation, which such an asset does not have. The
/// destructuring in `finishing_only` names every field with no `..`, so a
/// key added to `Table` and to no class here does not compile.
macro_rules! key_classes {
    (identity: $($i:ident),*; finishing: $($f:ident),*; generation: $($g:ident),*;) => {
        impl Table {
            /// Every key, as the manifest spells it.
            #[cfg(test)]
            const KEYS: &'static [&'static str] = &[$(stringify!($i),)* $(stringify!($f),)* $(stringify!($g),)*];
            /// The finishing keys, as the manifest spells them.
            #[cfg(test)]
            const FINISHING_KEYS: &'static [&'static str] = &[$(stringify!($f)),*];

            /// The finishing keys set here: a `source` asset's defaults.
            fn finishing_only(&self) -> Table {
                let Table { $($i: _,)* $($f,)* $($g: _,)* } = self;
                Table { $($f: $f.clone(),)* ..Table::default() }
            }

            /// The generation keys set here, with their spans.
            fn generation_keys(&self) -> Vec<(&'static str, Range<usize>)> {
                [$((stringify!($g), self.$g.as_ref().map(|v| v.span()))),*]
                    .into_iter()
                    .filter_map(|(key, span)| span.map(|s| (key, s)))
                    .collect()
            }
        }
    };
}

key_classes! {
    identity: name, source;
    finishing: model, seamless, upscale, sprite, pixel_art, normal_map, height_map, format, mipmaps;
    generation: prompt, negative_prompt, prompt_2, negative_prompt_2, original_size, crop_top_left, target_size, quantize,
        attention, lora_slots, refiner, refiner_start, seed, noise, variation_seed, variation_strength, variants, steps,
        scheduler, guidance, size, lora, embedding, control, init_image, strength, mask, extend, make_tileable;
}

impl Table {
    /// Whether `source` is a pattern (`painted/*.png`) rather than one file.
    fn source_is_pattern(&self) -> bool {
        self.source.as_ref().is_some_and(|v| v.get_ref().contains('*'))
    }
}

/// `lora = { path = "…", scale = 0.8 }` or a list of them (`[]` = none,
/// which turns a `[defaults]` LoRA off for one asset); `text_encoder_scale`
/// gives the text encoders their own strength.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Lora {
    One(LoraSpec),
    Many(Vec<LoraSpec>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoraSpec {
    path: String,
    scale: Option<f64>,
    text_encoder_scale: Option<f64>,
}

/// `embedding = { path = "…", token = "<tok>" }` or a list of them (`[]` =
/// none, which turns a `[defaults]` embedding off for one asset).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum EmbeddingEntry {
    One(EmbeddingSpec),
    Many(Vec<EmbeddingSpec>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct EmbeddingSpec {
    path: String,
    token: Option<String>,
}

/// `control = { controlnet = "canny", image = "edges.png", ... }` or a list of
/// them (`[]` = none, which turns a `[defaults]` control off for one asset).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ControlEntry {
    One(ControlSpec),
    Many(Vec<ControlSpec>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlSpec {
    controlnet: String,
    image: String,
    preprocess: Option<String>,
    scale: Option<f64>,
    start: Option<f64>,
    end: Option<f64>,
}

/// `upscale = { path = "upscalers/x4", tile = 256, context = 16 }`, or
/// `upscale = false` (turns a `[defaults]` upscale off for one asset). Read
/// from a plain TOML value so a bad one gets its own message, not "did not
/// match any variant".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpscaleSpec {
    path: String,
    tile: Option<i64>,
    context: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AtlasTable {
    name: Spanned<String>,
    assets: Spanned<Vec<Spanned<String>>>,
    padding: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    defaults: Option<Table>,
    #[serde(default)]
    asset: Vec<Spanned<Table>>,
    #[serde(default)]
    atlas: Vec<Spanned<AtlasTable>>,
}

/// Only the tables and their header spans, read first so that a type error
/// deep in an asset can still say which asset it is in.
#[derive(Debug, Deserialize)]
struct Outline {
    defaults: Option<Spanned<toml::Table>>,
    #[serde(default)]
    asset: Vec<Spanned<toml::Table>>,
    #[serde(default)]
    atlas: Vec<Spanned<toml::Table>>,
}

/// How an image is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// PNG with the settings in text chunks.
    Png,
    /// DDS, colour as BC1 (opaque, 4 bits per pixel).
    DdsBc1,
    /// DDS, colour as BC3 (with alpha, 8 bits per pixel).
    DdsBc3,
    /// DDS, colour as BC7 (best quality, 8 bits per pixel).
    DdsBc7,
}

impl Format {
    const NAMES: &'static str = "png, dds (= dds-bc7), dds-bc1, dds-bc3, dds-bc7";

    fn from_name(s: &str) -> Option<Self> {
        Some(match s {
            "png" => Self::Png,
            "dds" | "dds-bc7" => Self::DdsBc7,
            "dds-bc1" => Self::DdsBc1,
            "dds-bc3" => Self::DdsBc3,
            _ => return None,
        })
    }

    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            _ => "dds",
        }
    }
}

/// One LoRA merged into an asset's model.
#[derive(Debug, Clone, PartialEq)]
pub struct AssetLora {
    /// The `.safetensors` file (relative paths resolved against the manifest's folder).
    pub path: PathBuf,
    /// How strongly it is merged; 1.0 when not given.
    pub scale: f32,
    /// The strength of its text-encoder modules when given (`text_encoder_scale`); else `scale`.
    pub text_encoder_scale: Option<f32>,
}

/// One textual-inversion embedding added to an asset's model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AssetEmbedding {
    /// The `.safetensors` file (relative paths resolved against the manifest's folder).
    pub path: PathBuf,
    /// The prompt token; `None` = the one the file names, else its stem
    /// (as `generate --embedding FILE`).
    pub token: Option<String>,
}

/// One ControlNet guiding an asset (as `generate --controlnet NAME --control-image FILE ...`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AssetControl {
    /// A folder under the model's `controlnet/`.
    pub controlnet: String,
    /// The control image (a PNG; relative paths resolved against the manifest's
    /// folder). Not in the serialized settings: the content key holds the
    /// file's identity instead.
    #[serde(skip)]
    pub image: PathBuf,
    /// `none`, `canny`, `height` or `tile` (validated).
    pub preprocess: String,
    /// Conditioning scale.
    pub scale: f32,
    /// Fraction of the schedule before it starts.
    pub start: f32,
    /// Fraction of the schedule after which it stops.
    pub end: f32,
}

/// A super-resolution upscale of an asset (as `generate --upscale PATH
/// --upscale-tile N --upscale-context N`), before the sprite matte and the
/// material maps; it wraps on the asset's seamless axes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct AssetUpscale {
    /// The upscaler: a folder with `model.onnx` (+ `config.json`) or an ONNX
    /// file (+ the `.json` of its name); relative paths resolved against the
    /// manifest's folder. Like `model`, not in the serialized settings: the
    /// content key holds its identity.
    #[serde(skip)]
    pub path: PathBuf,
    /// Tile side in input pixels (0 = the whole image in one run).
    pub tile: u32,
    /// Pixels read around each tile and discarded.
    pub context: u32,
}

/// Largest `context` (as the C API's `kiln_upscale_options`).
const MAX_UPSCALE_CONTEXT: i64 = 1024;

/// Largest `tile`: an image side Kiln accepts.
const MAX_UPSCALE_TILE: i64 = 16384;

/// One asset with the defaults applied and every value checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Asset {
    /// Unique; the stem of its file names.
    pub name: String,
    /// The model folder.
    #[serde(skip)]
    pub model: PathBuf,
    /// Base-to-refiner hand-off: the refiner's model folder (`generate
    /// --refiner`). Like `model`, not in the serialized settings: the content
    /// key holds its identity.
    #[serde(skip)]
    pub refiner: Option<PathBuf>,
    /// With `refiner`: the fraction of the schedule `model` runs (default 0.8).
    /// Left out of the serialized settings without a refiner, so other assets
    /// keep their content keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refiner_start: Option<f32>,
    /// What to draw.
    pub prompt: String,
    /// What to avoid.
    pub negative_prompt: String,
    /// SDXL: the second text encoder's prompt ("" = `prompt`). Left out of the
    /// serialized settings when empty, so existing assets keep their content keys.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub prompt_2: String,
    /// SDXL: the second text encoder's negative prompt ("" = `negative_prompt`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub negative_prompt_2: String,
    /// SDXL `original_size` as `[W, H]`; None = the output size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_size: Option<[usize; 2]>,
    /// SDXL `crops_coords_top_left` as `[top, left]`.
    #[serde(skip_serializing_if = "is_origin")]
    pub crop_top_left: [usize; 2],
    /// SDXL `target_size` as `[W, H]`; None = the output size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_size: Option<[usize; 2]>,
    /// How the model (and refiner) is loaded: `quantize = "int8"` stores its
    /// matrix weights as int8 (`ModelOptions::quantization`). Left out of the
    /// serialized settings when off, so existing assets keep their content keys.
    #[serde(skip_serializing_if = "is_float", serialize_with = "quantization_name")]
    pub quantization: Quantization,
    /// How the U-Net's attention runs: `attention = "exported" | "fused" |
    /// "auto"` (`ModelOptions::attention`). Left out of the serialized
    /// settings when auto, so existing assets keep their content keys (the
    /// pictures differ by float rounding only).
    #[serde(skip_serializing_if = "is_auto_attention", serialize_with = "attention_name")]
    pub attention: Attention,
    /// `lora_slots = true`: the model is loaded with LoRA slots
    /// (`ModelOptions::lora_slots`), so switching between the assets' LoRA
    /// sets feeds them instead of merging each into new sessions. Left out of
    /// the serialized settings when off, so existing assets keep their
    /// content keys (fed pictures differ from merged ones by float rounding).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub lora_slots: bool,
    /// Seed of the noise.
    pub seed: u64,
    /// Which generator the seed drives ("kiln" or "torch"). Left out of the
    /// serialized settings when it is Kiln's, so existing assets keep their
    /// content keys.
    #[serde(skip_serializing_if = "is_kiln_noise", serialize_with = "noise_name")]
    pub noise: NoiseGenerator,
    /// AUTOMATIC1111's variation seed; with `variation_strength` 0 (no
    /// variation) both stay out of the serialized settings, so existing
    /// assets keep their content keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variation: Option<(u64, f32)>,
    /// Denoising steps.
    pub steps: usize,
    /// Scheduler name as written (validated).
    pub scheduler: String,
    /// Guidance scale.
    pub guidance: f32,
    /// Width and height; 0 = the model's native size.
    pub size: [usize; 2],
    /// Tiling axes.
    #[serde(serialize_with = "seamless_name")]
    pub seamless: Seamless,
    /// LoRAs merged into the model, in manifest order. Like `model`, not in the
    /// serialized settings: the content key holds each file's identity instead.
    #[serde(skip)]
    pub loras: Vec<AssetLora>,
    /// Textual-inversion embeddings, in manifest order; like `loras`, in the
    /// content key by identity. A refiner takes them too (SDXL's `clip_g`).
    #[serde(skip)]
    pub embeddings: Vec<AssetEmbedding>,
    /// ControlNets, in manifest order; their residuals add.
    pub controls: Vec<AssetControl>,
    /// The picture an asset starts from (`generate --init-image`): img2img,
    /// or with `mask`, `extend` or `make_tileable` what they work on; a PNG,
    /// relative paths resolved against the manifest's folder. Like the control
    /// images, not in the serialized settings: the content key holds the
    /// file's identity.
    #[serde(skip)]
    pub init_image: Option<PathBuf>,
    /// With `init_image`: how much of the schedule runs (`generate
    /// --strength`, default 0.8). `None` without a picture, and then left
    /// out of the serialized settings, so other assets keep their content keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strength: Option<f32>,
    /// Inpainting mask for `init_image` (`generate --mask`; white is
    /// repainted); in the content key by identity.
    #[serde(skip)]
    pub mask: Option<PathBuf>,
    /// Outpaint `init_image` by `[left, right, top, bottom]` pixels
    /// (`generate --extend`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extend: Option<[usize; 4]>,
    /// Make `init_image` tile, inpainting a band this many pixels wide over
    /// its offset seams (`generate --make-tileable`); `seamless` is then `xy`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub make_tileable: Option<usize>,
    /// Super-resolution upscale. Left out of the serialized settings when
    /// off, so other assets keep their content keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upscale: Option<AssetUpscale>,
    /// Cut out a sprite.
    pub sprite: bool,
    /// `(cell, colors)`.
    pub pixel_art: Option<(u32, u32)>,
    /// Also write `<name>_normal.*`.
    pub normal_map: bool,
    /// Also write `<name>_height.*`.
    pub height_map: bool,
    /// How images are stored.
    pub format: Format,
    /// Full mip chain in DDS files.
    pub mipmaps: bool,
    /// A picture that is the asset as it is (a PNG): nothing is generated, and
    /// only the finishing steps run on it (upscale, material maps, sprite,
    /// pixel art, the format and its mips). Its settings are then
    /// [`SourceSettings`]; the content key holds the file's identity.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

/// What a `source` asset's settings are, in its content key and key file:
/// the finishing steps only, so a change to a generation default never
/// re-bakes it.
#[derive(serde::Serialize)]
struct SourceSettings<'a> {
    name: &'a str,
    #[serde(serialize_with = "seamless_name")]
    seamless: Seamless,
    #[serde(skip_serializing_if = "Option::is_none")]
    upscale: Option<&'a AssetUpscale>,
    sprite: bool,
    pixel_art: Option<(u32, u32)>,
    normal_map: bool,
    height_map: bool,
    format: Format,
    mipmaps: bool,
}

fn is_float(q: &Quantization) -> bool {
    *q == Quantization::None
}

fn quantization_name<S: serde::Serializer>(q: &Quantization, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(q.name())
}

fn is_auto_attention(a: &Attention) -> bool {
    *a == Attention::Auto
}

fn attention_name<S: serde::Serializer>(a: &Attention, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(a.name())
}

fn is_kiln_noise(g: &NoiseGenerator) -> bool {
    *g == NoiseGenerator::Kiln
}

fn noise_name<S: serde::Serializer>(g: &NoiseGenerator, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(g.name())
}

fn is_origin(p: &[usize; 2]) -> bool {
    *p == [0, 0]
}

fn seamless_name<S: serde::Serializer>(s: &Seamless, ser: S) -> Result<S::Ok, S::Error> {
    ser.serialize_str(match s {
        Seamless::None => "none",
        Seamless::X => "x",
        Seamless::Y => "y",
        Seamless::Xy => "xy",
    })
}

impl Asset {
    /// The request for Kiln, exactly as `generate` builds it from the same flags.
    pub fn request(&self) -> kiln::GenerateRequest {
        kiln::GenerateRequest {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            seed: self.seed,
            noise: self.noise,
            variation_seed: self.variation.map_or(0, |v| v.0),
            variation_strength: self.variation.map_or(0.0, |v| v.1),
            steps: self.steps,
            scheduler: SchedulerKind::from_name(&self.scheduler).expect("validated"),
            guidance_scale: self.guidance,
            strength: self.strength.unwrap_or(kiln::GenerateRequest::default().strength),
            width: self.size[0],
            height: self.size[1],
            prompt_2: self.prompt_2.clone(),
            negative_prompt_2: self.negative_prompt_2.clone(),
            xl: kiln::XlConditioning {
                original_size: self.original_size,
                crop_top_left: self.crop_top_left,
                target_size: self.target_size,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// [`Asset::request`] with its pictures read from their files: the
    /// control images, the init image and the mask (as `generate` reads them).
    pub fn request_with_files(&self) -> Result<kiln::GenerateRequest, String> {
        let mut request = self.request();
        if let Some(path) = &self.init_image {
            request.init_image = Some(kiln::pipeline::inputs::read_init_image(path).map_err(|e| format!("init image: {e}"))?);
        }
        if let Some(path) = &self.mask {
            request.mask = Some(kiln::pipeline::inputs::read_mask(path).map_err(|e| format!("mask: {e}"))?);
        }
        for c in &self.controls {
            let rgb = kiln::pipeline::inputs::read_init_image(&c.image).map_err(|e| format!("control image: {e}"))?;
            let image = kiln::image::control::ControlImage { width: rgb.width, height: rgb.height, channels: 3, data: rgb.rgb };
            request.controls.push(kiln::pipeline::control::Control {
                preprocess: kiln::image::control::Preprocess::from_name(&c.preprocess).expect("validated"),
                scale: c.scale,
                start: c.start,
                end: c.end,
                ..kiln::pipeline::control::Control::new(c.controlnet.clone(), image)
            });
        }
        Ok(request)
    }

    /// What is done with the picture besides img2img, as the PNG records it.
    pub fn picture_job(&self) -> Option<kiln::pipeline::outputs::PictureJob<'_>> {
        let extend = self.extend.map(|[left, right, top, bottom]| kiln::pipeline::texture::Extend { left, right, top, bottom });
        kiln::pipeline::outputs::PictureJob::of(self.mask.as_deref(), extend, self.make_tileable)
    }

    /// The settings as JSON text, for the content key: the asset's fields,
    /// or a `source` asset's [`SourceSettings`].
    pub fn settings_text(&self) -> String {
        match &self.source {
            None => serde_json::to_string(self),
            Some(_) => serde_json::to_string(&self.source_settings()),
        }
        .expect("asset settings serialize")
    }

    /// The settings as a JSON value, for the key file (as [`Asset::settings_text`]).
    pub fn settings_value(&self) -> serde_json::Value {
        match &self.source {
            None => serde_json::to_value(self),
            Some(_) => serde_json::to_value(self.source_settings()),
        }
        .expect("asset settings serialize")
    }

    fn source_settings(&self) -> SourceSettings<'_> {
        SourceSettings {
            name: &self.name,
            seamless: self.seamless,
            upscale: self.upscale.as_ref(),
            sprite: self.sprite,
            pixel_art: self.pixel_art,
            normal_map: self.normal_map,
            height_map: self.height_map,
            format: self.format,
            mipmaps: self.mipmaps,
        }
    }

    /// The post-processing asked for.
    pub fn post(&self) -> PostProcess {
        PostProcess {
            upscale: self.upscale.as_ref().map(|u| kiln::model::upscaler::UpscaleOptions { tile: u.tile, context: u.context, ..Default::default() }),
            sprite: self.sprite,
            pixel_art: self.pixel_art,
            height_map: self.height_map,
            normal_map: self.normal_map,
            seamless: self.seamless,
        }
    }

    /// Output file names (relative to the output folder), main image first.
    pub fn outputs(&self) -> Vec<String> {
        let ext = self.format.extension();
        let mut out = vec![format!("{}.{ext}", self.name)];
        if self.normal_map {
            out.push(format!("{}_normal.{ext}", self.name));
        }
        if self.height_map {
            out.push(format!("{}_height.{ext}", self.name));
        }
        out
    }
}

/// Sprites packed into one sheet.
#[derive(Debug, Clone)]
pub struct Atlas {
    /// Stem of `<name>.png` and `<name>.json`.
    pub name: String,
    /// Member asset names, in packing order.
    pub assets: Vec<String>,
    /// Transparent pixels around each sprite.
    pub padding: u32,
}

impl Atlas {
    /// Output file names (relative to the output folder): the sheet, then its JSON.
    pub fn outputs(&self) -> Vec<String> {
        vec![format!("{}.png", self.name), format!("{}.json", self.name)]
    }
}

/// A validated manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Assets in file order.
    pub assets: Vec<Asset>,
    /// Atlases in file order.
    pub atlases: Vec<Atlas>,
}

/// A manifest error: where, which asset and key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestError {
    /// 1-based line.
    pub line: usize,
    /// Asset name (or `[defaults]`, `atlas NAME`), when known.
    pub asset: Option<String>,
    /// Key, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(a) = &self.asset {
            write!(f, ", {a}")?;
        }
        if let Some(k) = &self.key {
            write!(f, ", key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Byte offset → 1-based line.
struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, offset: usize) -> usize {
        self.0[..offset.min(self.0.len())].bytes().filter(|&b| b == b'\n').count() + 1
    }
    /// The key written at the start of the line holding `offset` (`key = …`).
    fn key_at(&self, offset: usize) -> Option<String> {
        let start = self.0[..offset.min(self.0.len())].rfind('\n').map_or(0, |i| i + 1);
        let line = self.0[start..].lines().next()?;
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
    }
}

/// Reads and validates `path`. Relative model folders and LoRA files are
/// relative to the manifest's folder. All semantic errors are returned at once.
pub fn load(path: &Path) -> Result<Manifest, Vec<ManifestError>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![ManifestError { line: 0, asset: None, key: None, message: format!("cannot read {}: {e}", path.display()) }])?;
    let base = path.parent().unwrap_or(Path::new("."));
    parse(&text, base)
}

/// Validates manifest `text`; `base` is the folder relative model and LoRA paths start from.
pub fn parse(text: &str, base: &Path) -> Result<Manifest, Vec<ManifestError>> {
    let lines = Lines(text);
    let doc: Document = toml::from_str(text).map_err(|e| vec![syntax_error(text, &lines, &e)])?;
    let mut errors = Vec::new();
    let defaults = doc.defaults.unwrap_or_default();
    let own_keys = [("name", defaults.name.as_ref().map(|n| n.span())), ("variants", defaults.variants.as_ref().map(|n| n.span())), ("source", defaults.source.as_ref().map(|n| n.span()))];
    for (key, span) in own_keys {
        if let Some(span) = span {
            errors.push(ManifestError {
                line: lines.of(span.start),
                asset: Some("[defaults]".into()),
                key: Some(key.into()),
                message: format!("`{key}` belongs to an asset, not to [defaults]"),
            });
        }
    }
    let mut assets = Vec::new();
    let mut names = HashSet::new();
    // An asset with `variants = N` stands for its N variants in atlases.
    let mut variant_groups: Vec<(String, Vec<String>)> = Vec::new();
    for (i, table) in doc.asset.iter().enumerate() {
        let header = lines.of(table.span().start);
        let t = table.get_ref();
        let name_error = |name: &str, line: usize, message: String| ManifestError {
            line,
            asset: Some(format!("asset \"{name}\"")),
            key: Some("name".into()),
            message,
        };
        if let Some(n) = &t.name {
            if !names.insert(n.get_ref().clone()) {
                errors.push(name_error(n.get_ref(), lines.of(n.span().start), "an earlier asset has this name; names must be unique".into()));
            }
        }
        // A `source` pattern's files, read here once: listed as an error beside
        // the asset's others, and expanded below when the asset is valid.
        let pattern = t.source.as_ref().filter(|_| t.source_is_pattern()).map(|v| {
            let line = lines.of(v.span().start);
            let files = source_files(&base.join(v.get_ref()));
            if let Err(m) = &files {
                errors.push(ManifestError { line, asset: Some(asset_label(t, i)), key: Some("source".into()), message: m.clone() });
            }
            (files, line)
        });
        let asset = match resolve(t, &defaults, header, i, base, &lines) {
            Ok(asset) => asset,
            Err(mut e) => {
                errors.append(&mut e);
                continue;
            }
        };
        if let Some((files, line)) = pattern {
            // One asset per file the pattern matches, named by the name's `*`;
            // an atlas that lists the pattern name packs them all.
            let Ok(files) = files else { continue };
            let mut group = Vec::new();
            for (file, part) in files {
                let name = asset.name.replace('*', &part);
                let source_error = |message: String| ManifestError { line, asset: Some(format!("asset \"{name}\"")), key: Some("source".into()), message };
                if let Err(m) = check_name(&name) {
                    errors.push(source_error(format!("{}: {m}", file.display())));
                } else if !names.insert(name.clone()) {
                    errors.push(source_error(format!("{} gives a name that is already taken; names must be unique", file.display())));
                }
                group.push(name.clone());
                assets.push(Asset { name, source: Some(file), ..asset.clone() });
            }
            variant_groups.push((asset.name.clone(), group));
            continue;
        }
        let Some(v) = &t.variants else {
            assets.push(asset);
            continue;
        };
        let line = lines.of(v.span().start);
        let count = *v.get_ref();
        let variant_error = |message: String| ManifestError { line, asset: Some(format!("asset \"{}\"", asset.name)), key: Some("variants".into()), message };
        if !(1..=256).contains(&count) {
            errors.push(variant_error(format!("{count} is outside 1..=256")));
            continue;
        }
        let Some((first_seed, strength)) = asset.variation else {
            errors.push(variant_error("variants need a `variation_strength` above 0 (or they would all be the same picture)".into()));
            continue;
        };
        let mut group = Vec::new();
        for k in 0..count as u64 {
            let name = format!("{}_{}", asset.name, k + 1);
            if let Err(m) = check_name(&name) {
                errors.push(variant_error(m));
            }
            if !names.insert(name.clone()) {
                errors.push(name_error(&name, line, "a variant's name is already taken; names must be unique".into()));
            }
            group.push(name.clone());
            assets.push(Asset { name, variation: Some((first_seed.wrapping_add(k), strength)), ..asset.clone() });
        }
        variant_groups.push((asset.name.clone(), group));
    }
    if doc.asset.is_empty() {
        errors.push(ManifestError { line: 1, asset: None, key: None, message: "the manifest has no [[asset]] tables".into() });
    }
    let mut atlases = Vec::new();
    for table in &doc.atlas {
        let t = table.get_ref();
        let who = Some(format!("atlas \"{}\"", t.name.get_ref()));
        let err = |span: Range<usize>, key: &str, message: String| ManifestError {
            line: lines.of(span.start),
            asset: who.clone(),
            key: Some(key.into()),
            message,
        };
        let name = t.name.get_ref().clone();
        if let Err(m) = check_name(&name) {
            errors.push(err(t.name.span(), "name", m));
        }
        if !names.insert(name.clone()) {
            errors.push(err(t.name.span(), "name", "an asset or atlas already has this name".into()));
        }
        let mut members = Vec::new();
        for m in t.assets.get_ref() {
            // A name with variants packs all of them, in order.
            if let Some((_, group)) = variant_groups.iter().find(|(n, _)| n == m.get_ref()) {
                for v in group {
                    if members.contains(v) {
                        errors.push(err(m.span(), "assets", format!("\"{v}\" is listed twice")));
                    } else if assets.iter().any(|a| &a.name == v && a.format == Format::Png) {
                        members.push(v.clone());
                    } else {
                        errors.push(err(m.span(), "assets", format!("asset \"{v}\" is not PNG; atlases are packed from PNG assets")));
                    }
                }
                continue;
            }
            match assets.iter().find(|a| &a.name == m.get_ref()) {
                None => errors.push(err(m.span(), "assets", format!("no asset is named \"{}\"", m.get_ref()))),
                Some(a) if a.format != Format::Png => errors.push(err(
                    m.span(),
                    "assets",
                    format!("asset \"{}\" is {:?}; atlases are packed from PNG assets", a.name, a.format),
                )),
                Some(_) if members.contains(m.get_ref()) => errors.push(err(m.span(), "assets", format!("\"{}\" is listed twice", m.get_ref()))),
                Some(_) => members.push(m.get_ref().clone()),
            }
        }
        if t.assets.get_ref().is_empty() {
            errors.push(err(t.assets.span(), "assets", "an atlas needs at least one asset".into()));
        }
        let padding = match &t.padding {
            None => 1,
            Some(p) if (0..=64).contains(p.get_ref()) => *p.get_ref() as u32,
            Some(p) => {
                errors.push(err(p.span(), "padding", format!("{} is outside 0..=64", p.get_ref())));
                0
            }
        };
        atlases.push(Atlas { name, assets: members, padding });
    }
    if errors.is_empty() {
        Ok(Manifest { assets, atlases })
    } else {
        errors.sort_by_key(|e| e.line);
        Err(errors)
    }
}

/// A TOML or schema error from the deserializer, placed in its asset.
fn syntax_error(text: &str, lines: &Lines<'_>, e: &toml::de::Error) -> ManifestError {
    let span = e.span().unwrap_or(0..0);
    let mut asset = None;
    // The outline reads even when a value has the wrong type (it fails only on
    // broken TOML). A table's span is its header, so the error belongs to the
    // last header before it.
    if let Ok(outline) = toml::from_str::<Outline>(text) {
        let name_of = |t: &toml::Table, what: &str, i: usize| match t.get("name").and_then(|n| n.as_str()) {
            Some(n) => format!("{what} \"{n}\""),
            None => format!("{what} #{}", i + 1),
        };
        let mut headers: Vec<(usize, String)> = Vec::new();
        if let Some(d) = &outline.defaults {
            headers.push((d.span().start, "[defaults]".to_string()));
        }
        headers.extend(outline.asset.iter().enumerate().map(|(i, t)| (t.span().start, name_of(t.get_ref(), "asset", i))));
        headers.extend(outline.atlas.iter().enumerate().map(|(i, t)| (t.span().start, name_of(t.get_ref(), "atlas", i))));
        asset = headers.into_iter().filter(|(start, _)| *start <= span.start).max_by_key(|(start, _)| *start).map(|(_, who)| who);
    }
    let message = e.message().trim().to_string();
    // An unknown key's span covers the key itself; a bad value's span the value.
    let key = message
        .strip_prefix("unknown field `")
        .and_then(|m| m.split('`').next())
        .map(str::to_string)
        .or_else(|| lines.key_at(span.start));
    ManifestError { line: lines.of(span.start), asset, key, message }
}

/// Reads an `upscale` value: `false` (none) or `{ path, tile, context }`,
/// with the path resolved against `base` and checked to be an upscaler (and
/// its settings file, when there is one, valid), before anything bakes.
fn upscale_spec(v: &toml::Value, base: &Path) -> Result<Option<AssetUpscale>, String> {
    let table = match v {
        toml::Value::Boolean(false) => return Ok(None),
        toml::Value::Table(t) => t.clone(),
        toml::Value::Boolean(true) => return Err("`true` names no upscaler; write { path = \"…\", tile = 256, context = 16 }, or false for none".into()),
        other => return Err(format!("{other} is not {{ path = \"…\", tile = N, context = N }} or false")),
    };
    let spec: UpscaleSpec = table.try_into().map_err(|e: toml::de::Error| e.message().trim().to_string())?;
    let mut problems = Vec::new();
    let defaults = kiln::model::upscaler::UpscaleOptions::default();
    let mut number = |v: Option<i64>, what: &str, max: i64, default: u32| match v {
        None => default,
        Some(n) if (0..=max).contains(&n) => n as u32,
        Some(n) => {
            problems.push(format!("{what} {n} is outside 0..={max}"));
            default
        }
    };
    let tile = number(spec.tile, "tile", MAX_UPSCALE_TILE, defaults.tile);
    let context = number(spec.context, "context", MAX_UPSCALE_CONTEXT, defaults.context);
    let path = base.join(&spec.path);
    // The library's convention (as matting graphs): a folder with model.onnx
    // and an optional config.json, or an ONNX file and the .json of its name.
    let (graph, settings) = if path.is_dir() { (path.join("model.onnx"), path.join("config.json")) } else { (path.clone(), path.with_extension("json")) };
    if !graph.is_file() {
        problems.push(format!("{} is not an upscaler (a folder with model.onnx, or an ONNX file)", path.display()));
    } else if settings.is_file() {
        let checked = std::fs::read_to_string(&settings)
            .map_err(|e| e.to_string())
            .and_then(|text| kiln::model::upscaler::UpscalerConfig::from_json(&text).map(drop).map_err(|e| e.to_string()));
        if let Err(e) = checked {
            problems.push(format!("{}: {e}", settings.display()));
        }
    }
    if problems.is_empty() {
        Ok(Some(AssetUpscale { path, tile, context }))
    } else {
        Err(problems.join("; "))
    }
}

/// The files a `source` pattern matches, with the part each gives its
/// `*`, sorted by file name. The one `*` is in the file name (`painted/*.png`,
/// `ui/icon_*.png`) and matches any run of characters; hidden files are left
/// out. Errors: more than one `*`, one in a folder name, an unreadable folder,
/// or no match.
fn source_files(pattern: &Path) -> Result<Vec<(PathBuf, String)>, String> {
    let shown = pattern.display();
    let file = pattern.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let dir = pattern.parent().unwrap_or(Path::new(""));
    let (prefix, suffix) = match file.split_once('*') {
        Some((p, s)) if !s.contains('*') && !dir.to_string_lossy().contains('*') => (p, s),
        _ => return Err(format!("{shown}: a pattern has one `*`, in the file name (like painted/*.png)")),
    };
    let entries = std::fs::read_dir(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }).map_err(|e| format!("{shown}: cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<(PathBuf, String)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let matches = !name.starts_with('.') && name.len() >= prefix.len() + suffix.len() && name.starts_with(prefix) && name.ends_with(suffix);
            matches.then(|| (dir.join(&name), name[prefix.len()..name.len() - suffix.len()].to_string()))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!("{shown} matches no file"));
    }
    Ok(files)
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a usable file name: use 1-128 of A-Z a-z 0-9 _ - . (not starting with .)"))
    }
}

/// How errors name the asset of table `t`, the `index`th (0-based).
fn asset_label(t: &Table, index: usize) -> String {
    match &t.name {
        Some(n) => format!("asset \"{}\"", n.get_ref()),
        None => format!("asset #{}", index + 1),
    }
}

/// Applies the defaults to one asset table and checks every value.
fn resolve(t: &Table, d: &Table, header: usize, index: usize, base: &Path, lines: &Lines<'_>) -> Result<Asset, Vec<ManifestError>> {
    let mut errors = Vec::new();
    let who = asset_label(t, index);
    let err = |line: usize, key: &str, message: String| ManifestError { line, asset: Some(who.clone()), key: Some(key.into()), message };
    let pattern = t.source_is_pattern();
    // A `source` asset is a picture that exists: nothing is generated, so only
    // the keys that finish a picture apply, from [defaults] too.
    let finishing_defaults;
    let d = match &t.source {
        None => d,
        Some(_) => {
            finishing_defaults = d.finishing_only();
            &finishing_defaults
        }
    };
    let source = t.source.as_ref().map(|v| {
        let path = base.join(v.get_ref());
        // A pattern's files are read and checked in `parse`.
        if !pattern && !path.is_file() {
            errors.push(err(lines.of(v.span().start), "source", format!("{} is not a file", path.display())));
        }
        for (key, span) in t.generation_keys() {
            errors.push(err(lines.of(span.start), key, "describes a generation, and a `source` asset is its picture as it is: drop this key or `source`".into()));
        }
        path
    });
    // The asset's own value, else the default's.
    macro_rules! pick {
        ($field:ident) => {
            t.$field.as_ref().or(d.$field.as_ref()).map(|v| (v.get_ref(), lines.of(v.span().start)))
        };
    }
    let name = match &t.name {
        Some(n) => {
            // With a `source` pattern, the name's one `*` takes each file's part.
            let stars = n.get_ref().matches('*').count();
            let checked = if pattern && stars == 1 { n.get_ref().replace('*', "x") } else { n.get_ref().clone() };
            let line = lines.of(n.span().start);
            if pattern && stars != 1 {
                errors.push(err(line, "name", "a `source` pattern needs one `*` in `name`, for each file's part of it".into()));
            } else if let Err(m) = check_name(&checked) {
                errors.push(err(line, "name", m));
            }
            n.get_ref().clone()
        }
        None => {
            errors.push(err(header, "name", "every asset needs a `name`".into()));
            String::new()
        }
    };
    let model = match pick!(model) {
        Some((m, line)) => {
            let dir = base.join(m);
            if !dir.join("model_index.json").is_file() {
                errors.push(err(line, "model", format!("{} is not a model folder (no model_index.json)", dir.display())));
            }
            dir
        }
        // A `source` asset needs none: a sprite then takes the chroma key.
        None if source.is_some() => PathBuf::new(),
        None => {
            errors.push(err(header, "model", "no `model` folder (set it in [defaults] or in the asset)".into()));
            PathBuf::new()
        }
    };
    let refiner = pick!(refiner).map(|(m, line)| {
        let dir = base.join(m);
        if !dir.join("model_index.json").is_file() {
            errors.push(err(line, "refiner", format!("{} is not a model folder (no model_index.json)", dir.display())));
        }
        dir
    });
    let refiner_start = match pick!(refiner_start) {
        None => refiner.as_ref().map(|_| 0.8),
        Some((&f, line)) => {
            if refiner.is_none() {
                errors.push(err(line, "refiner_start", "needs a `refiner` model folder to hand the latents to".into()));
            }
            if !(f > 0.0 && f < 1.0) {
                errors.push(err(line, "refiner_start", format!("{f} is not strictly between 0 and 1")));
            }
            Some(f as f32)
        }
    };
    let prompt = pick!(prompt).map_or(String::new(), |(p, _)| p.clone());
    let negative_prompt = pick!(negative_prompt).map_or(String::new(), |(p, _)| p.clone());
    let prompt_2 = pick!(prompt_2).map_or(String::new(), |(p, _)| p.clone());
    let negative_prompt_2 = pick!(negative_prompt_2).map_or(String::new(), |(p, _)| p.clone());
    // SDXL conditioning pairs: whole numbers in 0..=16384 (sizes at least 1).
    let mut pair = |v: Option<(&Vec<i64>, usize)>, key: &str, what: &str, min: i64| match v {
        None => None,
        Some((p, line)) => match p[..] {
            [a, b] if (min..=16384).contains(&a) && (min..=16384).contains(&b) => Some([a as usize, b as usize]),
            _ => {
                errors.push(err(line, key, format!("{p:?} is not {what} with each in {min}..=16384")));
                None
            }
        },
    };
    let original_size = pair(pick!(original_size), "original_size", "[W, H]", 1);
    let crop_top_left = pair(pick!(crop_top_left), "crop_top_left", "[TOP, LEFT]", 0).unwrap_or([0, 0]);
    let target_size = pair(pick!(target_size), "target_size", "[W, H]", 1);
    let seed = match pick!(seed) {
        None => 0,
        Some((&s, _)) if s >= 0 => s as u64,
        Some((s, line)) => {
            errors.push(err(line, "seed", format!("{s} is negative")));
            0
        }
    };
    let quantization = match pick!(quantize) {
        None => Quantization::None,
        Some((s, line)) => Quantization::from_name(s).unwrap_or_else(|| {
            errors.push(err(line, "quantize", format!("unknown {s:?}; one of none, int8")));
            Quantization::None
        }),
    };
    let attention = match pick!(attention) {
        None => Attention::Auto,
        Some((s, line)) => Attention::from_name(s).unwrap_or_else(|| {
            errors.push(err(line, "attention", format!("unknown {s:?}; one of auto, exported, fused")));
            Attention::Auto
        }),
    };
    let lora_slots = pick!(lora_slots).is_some_and(|(b, _)| *b);
    let noise = match pick!(noise) {
        None => NoiseGenerator::Kiln,
        Some((s, line)) => NoiseGenerator::from_name(s).unwrap_or_else(|| {
            errors.push(err(line, "noise", format!("unknown {s:?}; one of {}", NoiseGenerator::NAMES.join(", "))));
            NoiseGenerator::Kiln
        }),
    };
    let variation_strength = match pick!(variation_strength) {
        None => 0.0,
        Some((&f, _)) if (0.0..=1.0).contains(&f) => f as f32,
        Some((f, line)) => {
            errors.push(err(line, "variation_strength", format!("{f} is outside 0..=1")));
            0.0
        }
    };
    let variation = match pick!(variation_seed) {
        Some((&s, _)) if s >= 0 => (variation_strength > 0.0).then_some((s as u64, variation_strength)),
        Some((s, line)) => {
            errors.push(err(line, "variation_seed", format!("{s} is negative")));
            None
        }
        // `variants` without a variation seed start at seed + 1 (see `parse`).
        None if t.variants.is_some() => (variation_strength > 0.0).then_some((seed.wrapping_add(1), variation_strength)),
        None => {
            if let Some((_, line)) = pick!(variation_strength).filter(|_| variation_strength > 0.0) {
                errors.push(err(line, "variation_strength", "needs a `variation_seed` to blend towards".into()));
            }
            None
        }
    };
    let steps = match pick!(steps) {
        None => kiln::GenerateRequest::default().steps,
        Some((&s, _)) if (1..=1000).contains(&s) => s as usize,
        Some((s, line)) => {
            errors.push(err(line, "steps", format!("{s} is outside 1..=1000")));
            1
        }
    };
    let scheduler = match pick!(scheduler) {
        None => "default".to_string(),
        Some((s, _)) if SchedulerKind::from_name(s).is_some() => s.clone(),
        Some((s, line)) => {
            errors.push(err(line, "scheduler", format!("unknown {s:?}; one of {}", SchedulerKind::NAMES.join(", "))));
            "default".to_string()
        }
    };
    let guidance = match pick!(guidance) {
        None => kiln::GenerateRequest::default().guidance_scale,
        Some((&g, _)) if g.is_finite() && (0.0..=100.0).contains(&g) => g as f32,
        Some((g, line)) => {
            errors.push(err(line, "guidance", format!("{g} is outside 0..=100")));
            1.0
        }
    };
    let mut size = match pick!(size) {
        None => [0, 0],
        Some((s, line)) => match s[..] {
            [w, h] if (8..=8192).contains(&w) && (8..=8192).contains(&h) && w % 8 == 0 && h % 8 == 0 => [w as usize, h as usize],
            _ => {
                errors.push(err(line, "size", format!("{s:?} is not [W, H] with each a multiple of 8 in 8..=8192")));
                [0, 0]
            }
        },
    };
    let mut seamless = match pick!(seamless) {
        None => Seamless::None,
        Some((s, line)) => match s.as_str() {
            "x" | "y" | "xy" | "none" => Seamless::from_name(s).expect("known name"),
            _ => {
                errors.push(err(line, "seamless", format!("{s:?} is not \"x\", \"y\", \"xy\" or \"none\"")));
                Seamless::None
            }
        },
    };
    let mut loras = Vec::new();
    if let Some((lora, line)) = pick!(lora) {
        let specs = match lora {
            Lora::One(s) => std::slice::from_ref(s),
            Lora::Many(v) => v.as_slice(),
        };
        for spec in specs {
            let path = base.join(&spec.path);
            if !path.is_file() {
                errors.push(err(line, "lora", format!("{} is not a file", path.display())));
            }
            let scale = spec.scale.unwrap_or(1.0);
            // The library rejects a non-finite scale; say so here, before anything bakes.
            for (what, s) in [("scale", Some(scale)), ("text_encoder_scale", spec.text_encoder_scale)] {
                if let Some(s) = s.filter(|s| !(s.is_finite() && (*s as f32).is_finite())) {
                    errors.push(err(line, "lora", format!("{what} {s} of {} is not a finite number", spec.path)));
                }
            }
            loras.push(AssetLora { path, scale: scale as f32, text_encoder_scale: spec.text_encoder_scale.map(|t| t as f32) });
        }
    }
    let mut embeddings = Vec::new();
    if let Some((embedding, line)) = pick!(embedding) {
        let specs = match embedding {
            EmbeddingEntry::One(s) => std::slice::from_ref(s),
            EmbeddingEntry::Many(v) => v.as_slice(),
        };
        for spec in specs {
            let path = base.join(&spec.path);
            if !path.is_file() {
                errors.push(err(line, "embedding", format!("{} is not a file", path.display())));
            }
            // The library refuses these too; say so here, before anything bakes.
            if let Some(t) = spec.token.as_deref().filter(|t| t.is_empty() || t.chars().any(char::is_whitespace)) {
                errors.push(err(line, "embedding", format!("token {t:?} of {} must be one word", spec.path)));
            }
            embeddings.push(AssetEmbedding { path, token: spec.token.clone() });
        }
    }
    let mut controls = Vec::new();
    if let Some((control, line)) = pick!(control) {
        let specs = match control {
            ControlEntry::One(s) => std::slice::from_ref(s),
            ControlEntry::Many(v) => v.as_slice(),
        };
        for spec in specs {
            let mut fail = |m: String| errors.push(err(line, "control", m));
            let name = &spec.controlnet;
            if name.is_empty() || name.contains(['/', '\\']) || name == "." || name == ".." {
                fail(format!("controlnet {name:?} is not a folder name under the model's controlnet/"));
            } else if model.join("model_index.json").is_file() && !model.join("controlnet").join(name).join("model.onnx").is_file() {
                fail(format!("{} has no ControlNet {name:?} (no controlnet/{name}/model.onnx)", model.display()));
            }
            let image = base.join(&spec.image);
            if !image.is_file() {
                fail(format!("control image {} is not a file", image.display()));
            }
            let preprocess = spec.preprocess.clone().unwrap_or_else(|| "none".into());
            if kiln::image::control::Preprocess::from_name(&preprocess).is_none() {
                fail(format!("preprocess {preprocess:?} is not \"none\", \"canny\", \"height\" or \"tile\""));
            }
            let (scale, start, end) = (spec.scale.unwrap_or(1.0), spec.start.unwrap_or(0.0), spec.end.unwrap_or(1.0));
            if !(scale.is_finite() && (scale as f32).is_finite()) {
                fail(format!("scale {scale} of controlnet {name:?} is not a finite number"));
            }
            if !(0.0..=1.0).contains(&start) || !(0.0..=1.0).contains(&end) || start >= end {
                fail(format!("start {start} and end {end} of controlnet {name:?} are not 0 <= start < end <= 1"));
            }
            controls.push(AssetControl { controlnet: name.clone(), image, preprocess, scale: scale as f32, start: start as f32, end: end as f32 });
        }
    }
    // The picture the asset starts from, and what is done with it. The keys
    // that work on a picture apply, from [defaults], to the assets that have
    // one; an asset's own needs one. `false` turns a default off.
    let is_off = |v: &toml::Value| matches!(v, toml::Value::Boolean(false));
    let picture_file = |v: &toml::Value, what: &str| match v {
        toml::Value::String(s) => {
            let path = base.join(s);
            if path.is_file() {
                Ok(Some(path))
            } else {
                Err(format!("{what} {} is not a file", path.display()))
            }
        }
        v if is_off(v) => Ok(None),
        other => Err(format!("{other} is not a PNG file (relative to the manifest), or false for none")),
    };
    let has_picture = pick!(init_image).is_some_and(|(v, _)| !is_off(v));
    let init_image = pick!(init_image).and_then(|(v, line)| picture_file(v, "init image").unwrap_or_else(|m| {
        errors.push(err(line, "init_image", m));
        None
    }));
    if !has_picture {
        let own = |v: &Option<Spanned<toml::Value>>| v.as_ref().filter(|v| !is_off(v.get_ref())).map(|v| v.span());
        let keys = [("strength", t.strength.as_ref().map(|v| v.span())), ("mask", own(&t.mask)), ("extend", own(&t.extend)), ("make_tileable", own(&t.make_tileable))];
        for (key, span) in keys.into_iter().filter_map(|(k, s)| s.map(|s| (k, s))) {
            errors.push(err(lines.of(span.start), key, "works on a picture: set `init_image` (a PNG) too".into()));
        }
    }
    let strength = match (has_picture, pick!(strength)) {
        (false, _) => None,
        (true, None) => Some(kiln::GenerateRequest::default().strength),
        (true, Some((&f, _))) if (0.0..=1.0).contains(&f) => Some(f as f32),
        (true, Some((f, line))) => {
            errors.push(err(line, "strength", format!("{f} is outside 0..=1")));
            None
        }
    };
    let mask = match (has_picture, pick!(mask)) {
        (true, Some((v, line))) => picture_file(v, "mask").unwrap_or_else(|m| {
            errors.push(err(line, "mask", m));
            None
        }),
        _ => None,
    };
    let max_side = kiln::pipeline::MAX_GENERATE_SIDE as i64;
    let extend = match (has_picture, pick!(extend)) {
        (true, Some((v, _))) if is_off(v) => None,
        (true, Some((v, line))) => {
            let sides: Vec<i64> = v.as_array().map_or(vec![], |a| a.iter().map_while(toml::Value::as_integer).collect());
            let whole = v.as_array().is_some_and(|a| a.len() == sides.len());
            match sides[..] {
                [left, right, top, bottom] if whole && sides.iter().all(|n| (0..=max_side).contains(n)) && sides.iter().any(|&n| n > 0) => {
                    Some([left as usize, right as usize, top as usize, bottom as usize])
                }
                _ => {
                    errors.push(err(line, "extend", format!("{v} is not [LEFT, RIGHT, TOP, BOTTOM] pixels, each in 0..={max_side} and not all 0, or false for none")));
                    None
                }
            }
        }
        _ => None,
    };
    let make_tileable = match (has_picture, pick!(make_tileable)) {
        (true, Some((v, _))) if is_off(v) => None,
        (true, Some((toml::Value::Integer(n), _))) if (1..=max_side / 2).contains(n) => Some(*n as usize),
        (true, Some((v, line))) => {
            errors.push(err(line, "make_tileable", format!("{v} is not a band width in pixels (1..={}), or false for none", max_side / 2)));
            None
        }
        _ => None,
    };
    let line_of = |v: Option<(&toml::Value, usize)>| v.map_or(header, |(_, line)| line);
    let picture_jobs = [
        ("mask", mask.is_some(), line_of(pick!(mask))),
        ("extend", extend.is_some(), line_of(pick!(extend))),
        ("make_tileable", make_tileable.is_some(), line_of(pick!(make_tileable))),
    ];
    if let [(first, ..), (second, _, line), ..] = picture_jobs.into_iter().filter(|(_, on, _)| *on).collect::<Vec<_>>()[..] {
        errors.push(err(line, second, format!("`{first}` and `{second}` are different jobs on the picture; an asset does one")));
    }
    if extend.is_some() || make_tileable.is_some() {
        // The picture (and `extend`) gives the size; one from [defaults] does not apply.
        if let Some(s) = &t.size {
            errors.push(err(lines.of(s.span().start), "size", "the picture (and `extend`) sets this asset's size; drop `size`".into()));
        }
        size = [0, 0];
    }
    if make_tileable.is_some() {
        // The result tiles on both axes: its mips, material maps and upscale wrap so.
        match seamless {
            Seamless::None | Seamless::Xy => seamless = Seamless::Xy,
            _ => errors.push(err(
                pick!(seamless).map_or(header, |(_, line)| line),
                "seamless",
                "`make_tileable` makes the picture tile on both axes: seamless must be \"xy\" or unset".into(),
            )),
        }
    }
    let sprite = pick!(sprite).is_some_and(|(b, _)| *b);
    let pixel_art = match pick!(pixel_art) {
        None => None,
        Some((s, line)) => {
            let parsed = s.split_once(':').and_then(|(c, n)| Some((c.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)));
            match parsed {
                Some((c, n)) if (1..=256).contains(&c) && (1..=256).contains(&n) => Some((c, n)),
                _ => {
                    errors.push(err(line, "pixel_art", format!("{s:?} is not \"CELL:COLORS\" with CELL and COLORS in 1..=256")));
                    None
                }
            }
        }
    };
    let upscale = match pick!(upscale) {
        None => None,
        Some((v, line)) => {
            let upscale = upscale_spec(v, base).map_err(|m| errors.push(err(line, "upscale", m))).ok().flatten();
            if let (Some(_), Some((_, pixel_line))) = (&upscale, pick!(pixel_art)) {
                errors.push(err(
                    line,
                    "upscale",
                    format!("does not combine with `pixel_art` (line {pixel_line}): pixel art snaps to cells itself; drop one, or set `upscale = false` for this asset"),
                ));
            }
            upscale
        }
    };
    let normal_map = pick!(normal_map).is_some_and(|(b, _)| *b);
    let height_map = pick!(height_map).is_some_and(|(b, _)| *b);
    let format = match pick!(format) {
        None => Format::Png,
        Some((s, line)) => match Format::from_name(s) {
            Some(f) => {
                if f == Format::DdsBc1 && sprite {
                    errors.push(err(line, "format", "BC1 keeps no smooth alpha; a sprite needs dds-bc3 or dds-bc7".into()));
                }
                f
            }
            None => {
                errors.push(err(line, "format", format!("{s:?} is not one of {}", Format::NAMES)));
                Format::Png
            }
        },
    };
    let mipmaps = match pick!(mipmaps) {
        None => format != Format::Png,
        Some((&m, line)) => {
            if m && format == Format::Png {
                errors.push(err(line, "mipmaps", "mip chains are stored in DDS files; set format = \"dds\" or drop mipmaps".into()));
            }
            m
        }
    };
    if errors.is_empty() {
        Ok(Asset {
            name,
            model,
            refiner,
            refiner_start,
            prompt,
            negative_prompt,
            prompt_2,
            negative_prompt_2,
            original_size,
            crop_top_left,
            target_size,
            quantization,
            attention,
            lora_slots,
            seed,
            noise,
            variation,
            steps,
            scheduler,
            guidance,
            size,
            seamless,
            loras,
            embeddings,
            controls,
            init_image,
            strength,
            mask,
            extend,
            make_tileable,
            upscale,
            sprite,
            pixel_art,
            normal_map,
            height_map,
            format,
            mipmaps,
            source,
        })
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
    }

    fn errors(text: &str) -> Vec<ManifestError> {
        parse(text, &model_dir()).expect_err("should be rejected")
    }

    #[test]
    fn defaults_apply_and_assets_override() {
        let m = parse(
            "[defaults]\nmodel = \"tiny-sd\"\nsteps = 4\nformat = \"dds\"\n\n[[asset]]\nname = \"a\"\nprompt = \"moss\"\n\n[[asset]]\nname = \"b\"\nsteps = 2\nformat = \"png\"\nsize = [32, 16]\n",
            &model_dir(),
        )
        .unwrap();
        let (a, b) = (&m.assets[0], &m.assets[1]);
        assert_eq!((a.steps, a.format, a.mipmaps), (4, Format::DdsBc7, true));
        assert_eq!((b.steps, b.format, b.mipmaps, b.size), (2, Format::Png, false, [32, 16]));
        assert_eq!(b.outputs(), vec!["b.png".to_string()]);
    }

    #[test]
    fn unknown_keys_name_asset_key_and_line() {
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n\n[[asset]]\nname = \"grass\"\ncolour = \"green\"\n");
        assert_eq!(e.len(), 1);
        assert_eq!((e[0].line, e[0].asset.as_deref(), e[0].key.as_deref()), (6, Some("asset \"grass\""), Some("colour")), "{}", e[0]);
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n\n[[asset]]\nname = \"grass\"\nsteps = \"many\"\n");
        assert_eq!((e[0].line, e[0].asset.as_deref(), e[0].key.as_deref()), (6, Some("asset \"grass\""), Some("steps")), "{}", e[0]);
        let e = errors("[defualts]\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (1, Some("defualts")), "{}", e[0]);
    }

    #[test]
    fn bad_values_are_all_reported_with_lines() {
        let e = errors(
            "[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nseamless = \"diagonal\"\npixel_art = \"8\"\n[[asset]]\nname = \"a\"\nscheduler = \"warp\"\nmipmaps = true\nsize = [30, 32]\n",
        );
        let got: Vec<(usize, &str)> = e.iter().map(|e| (e.line, e.key.as_deref().unwrap())).collect();
        assert_eq!(got, vec![(5, "seamless"), (6, "pixel_art"), (8, "name"), (9, "scheduler"), (10, "mipmaps"), (11, "size")], "{e:?}");
    }

    #[test]
    fn sdxl_keys_reach_the_request_and_stay_out_of_plain_content_keys() {
        let m = parse(
            "[defaults]\nmodel = \"tiny-sdxl\"\ncrop_top_left = [8, 16]\n\
             [[asset]]\nname = \"a\"\nprompt = \"moss\"\nprompt_2 = \"metal\"\nnegative_prompt_2 = \"dark\"\noriginal_size = [160, 128]\ntarget_size = [96, 64]\n\
             [[asset]]\nname = \"b\"\ncrop_top_left = [0, 0]\n",
            &model_dir(),
        )
        .unwrap();
        let r = m.assets[0].request();
        assert_eq!((r.prompt_2.as_str(), r.negative_prompt_2.as_str()), ("metal", "dark"));
        assert_eq!((r.xl.original_size, r.xl.crop_top_left, r.xl.target_size), (Some([160, 128]), [8, 16], Some([96, 64])));
        // An asset without SDXL settings serializes as before, so its content key is unchanged.
        let plain = serde_json::to_value(&m.assets[1]).unwrap();
        for key in ["prompt_2", "negative_prompt_2", "original_size", "crop_top_left", "target_size"] {
            assert!(plain.get(key).is_none(), "{key} in {plain}");
        }
        assert_eq!(serde_json::to_value(&m.assets[0]).unwrap()["original_size"], serde_json::json!([160, 128]));
        let e = errors("[defaults]\nmodel = \"tiny-sdxl\"\n[[asset]]\nname = \"a\"\noriginal_size = [0, 64]\ncrop_top_left = [1]\n");
        let got: Vec<(usize, &str)> = e.iter().map(|e| (e.line, e.key.as_deref().unwrap())).collect();
        assert_eq!(got, vec![(5, "original_size"), (6, "crop_top_left")], "{e:?}");
    }

    #[test]
    fn noise_reaches_the_request_and_stays_out_of_kiln_noise_content_keys() {
        let m = parse(
            "[defaults]\nmodel = \"tiny-sd\"\nnoise = \"torch\"\n[[asset]]\nname = \"a\"\n[[asset]]\nname = \"b\"\nnoise = \"kiln\"\n",
            &model_dir(),
        )
        .unwrap();
        assert_eq!(m.assets[0].request().noise, NoiseGenerator::TorchCpu);
        assert_eq!(serde_json::to_value(&m.assets[0]).unwrap()["noise"], "torch");
        assert_eq!(m.assets[1].request().noise, NoiseGenerator::Kiln);
        // Kiln's noise serializes as before, so existing assets keep their content keys.
        assert!(serde_json::to_value(&m.assets[1]).unwrap().get("noise").is_none());
        let m = parse("[defaults]\nmodel = \"tiny-sd\"\nnoise = \"torch_cuda\"\n[[asset]]\nname = \"a\"\n", &model_dir()).unwrap();
        assert_eq!(m.assets[0].request().noise, NoiseGenerator::TorchCuda);
        assert_eq!(serde_json::to_value(&m.assets[0]).unwrap()["noise"], "torch_cuda");
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nnoise = \"numpy\"\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (5, Some("noise")), "{}", e[0]);
        assert!(e[0].to_string().contains("one of kiln, torch, torch_cuda"), "{}", e[0]);
    }

    #[test]
    fn lora_slots_load_with_slots_and_stay_out_of_other_assets_keys() {
        let m = parse("[defaults]\nmodel = \"tiny-sd\"\nlora_slots = true\n[[asset]]\nname = \"a\"\n[[asset]]\nname = \"b\"\nlora_slots = false\n", &model_dir()).unwrap();
        assert!(m.assets[0].lora_slots);
        assert_eq!(serde_json::to_value(&m.assets[0]).unwrap()["lora_slots"], true);
        assert!(!m.assets[1].lora_slots);
        assert!(serde_json::to_value(&m.assets[1]).unwrap().get("lora_slots").is_none());
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nlora_slots = \"yes\"\n");
        assert!(!e.is_empty(), "a string is not a bool");
    }

    #[test]
    fn attention_picks_the_mode_and_stays_out_of_auto_assets_keys() {
        let m = parse("[defaults]\nmodel = \"tiny-sd\"\nattention = \"exported\"\n[[asset]]\nname = \"a\"\n[[asset]]\nname = \"b\"\nattention = \"auto\"\n", &model_dir()).unwrap();
        assert_eq!(m.assets[0].attention, Attention::Exported);
        assert_eq!(serde_json::to_value(&m.assets[0]).unwrap()["attention"], "exported");
        assert_eq!(m.assets[1].attention, Attention::Auto);
        assert!(serde_json::to_value(&m.assets[1]).unwrap().get("attention").is_none());
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nattention = \"flash\"\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (5, Some("attention")), "{}", e[0]);
    }

    #[test]
    fn quantize_picks_int8_weights_and_stays_out_of_float_assets_keys() {
        let m = parse("[defaults]\nmodel = \"tiny-sd\"\nquantize = \"int8\"\n[[asset]]\nname = \"a\"\n[[asset]]\nname = \"b\"\nquantize = \"none\"\n", &model_dir()).unwrap();
        assert_eq!(m.assets[0].quantization, Quantization::Int8);
        assert_eq!(serde_json::to_value(&m.assets[0]).unwrap()["quantization"], "int8");
        assert_eq!(m.assets[1].quantization, Quantization::None);
        // Float assets serialize as before, so existing assets keep their content keys.
        assert!(serde_json::to_value(&m.assets[1]).unwrap().get("quantization").is_none());
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nquantize = \"int4\"\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (5, Some("quantize")), "{}", e[0]);
        assert!(e[0].message.contains("none, int8"), "{}", e[0]);
    }

    #[test]
    fn variants_expand_into_assets_with_their_own_variation_seeds_and_fill_atlases() {
        let m = parse(
            "[defaults]\nmodel = \"tiny-sd\"\nseed = 40\n\
             [[asset]]\nname = \"gem\"\nvariants = 3\nvariation_strength = 0.2\n\
             [[asset]]\nname = \"rock\"\nvariants = 2\nvariation_seed = 100\nvariation_strength = 0.5\n\
             [[asset]]\nname = \"plain\"\n\
             [[atlas]]\nname = \"gems\"\nassets = [\"gem\", \"plain\", \"rock_2\"]\n",
            &model_dir(),
        )
        .unwrap();
        let got: Vec<(&str, u64, u64, f32)> =
            m.assets.iter().map(|a| (a.name.as_str(), a.seed, a.request().variation_seed, a.request().variation_strength)).collect();
        assert_eq!(
            got,
            [("gem_1", 40, 41, 0.2), ("gem_2", 40, 42, 0.2), ("gem_3", 40, 43, 0.2), ("rock_1", 40, 100, 0.5), ("rock_2", 40, 101, 0.5), ("plain", 40, 0, 0.0)]
        );
        assert_eq!(m.atlases[0].assets, ["gem_1", "gem_2", "gem_3", "plain", "rock_2"]);
        // A variant's name may not collide, and [defaults] cannot have variants.
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a_1\"\n[[asset]]\nname = \"a\"\nvariants = 2\nvariation_strength = 0.3\n");
        assert!(e.iter().any(|e| e.key.as_deref() == Some("name") && e.message.contains("variant")), "{e:?}");
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\nvariants = 2\n[[asset]]\nname = \"a\"\n");
        assert!(e.iter().any(|e| e.key.as_deref() == Some("variants") && e.asset.as_deref() == Some("[defaults]")), "{e:?}");
    }

    #[test]
    fn a_variation_reaches_the_request_and_only_then_the_content_key() {
        let m = parse(
            "[defaults]\nmodel = \"tiny-sd\"\nvariation_strength = 0.25\n[[asset]]\nname = \"a\"\nvariation_seed = 9\n[[asset]]\nname = \"b\"\nvariation_seed = 9\nvariation_strength = 0.0\n",
            &model_dir(),
        )
        .unwrap();
        let r = m.assets[0].request();
        assert_eq!((r.variation_seed, r.variation_strength), (9, 0.25));
        assert_eq!(serde_json::to_value(&m.assets[0]).unwrap()["variation"], serde_json::json!([9, 0.25]));
        // Strength 0 is no variation: the settings (and content key) are a plain asset's.
        assert_eq!(m.assets[1].request().variation_strength, 0.0);
        assert!(serde_json::to_value(&m.assets[1]).unwrap().get("variation").is_none());
        for (body, key) in [
            ("variation_seed = 1\nvariation_strength = 1.5\n", "variation_strength"),
            ("variation_seed = -1\nvariation_strength = 0.5\n", "variation_seed"),
            ("variation_strength = 0.5\n", "variation_strength"),
            ("variants = 3\n", "variants"),
            ("variants = 0\nvariation_strength = 0.5\n", "variants"),
        ] {
            let e = errors(&format!("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\n{body}"));
            assert!(e.iter().any(|e| e.key.as_deref() == Some(key)), "{body}: {e:?}");
        }
    }

    #[test]
    fn picture_keys_apply_from_defaults_only_with_a_picture_and_stay_out_of_plain_keys() {
        // model_dir() holds golden/inpaint/mask.png: a PNG to stand for both files.
        let m = parse(
            "[defaults]\nmodel = \"tiny-sd\"\nstrength = 0.6\nmask = \"golden/inpaint/mask.png\"\n\
             [[asset]]\nname = \"plain\"\n\
             [[asset]]\nname = \"inpainted\"\ninit_image = \"golden/inpaint/mask.png\"\n\
             [[asset]]\nname = \"restyled\"\ninit_image = \"golden/inpaint/mask.png\"\nmask = false\nstrength = 0.3\n\
             [[asset]]\nname = \"tiled\"\ninit_image = \"golden/inpaint/mask.png\"\nmask = false\nmake_tileable = 8\n\
             [[asset]]\nname = \"wider\"\ninit_image = \"golden/inpaint/mask.png\"\nmask = false\nextend = [8, 0, 16, 0]\n",
            &model_dir(),
        )
        .unwrap();
        let [plain, inpainted, restyled, tiled, wider] = &m.assets[..] else { panic!("five assets") };
        // Without a picture the defaults' picture keys do not apply, and the
        // settings (hence the content key) are what they were before those keys.
        assert_eq!((plain.init_image.as_ref(), plain.strength, plain.mask.as_ref()), (None, None, None));
        let settings = serde_json::to_value(plain).unwrap();
        for key in ["init_image", "strength", "mask", "extend", "make_tileable"] {
            assert!(settings.get(key).is_none(), "{key} in {settings}");
        }
        assert_eq!(plain.request().strength, 0.8, "generate's default strength, as before");
        let mask = model_dir().join("golden/inpaint/mask.png");
        assert_eq!((inpainted.mask.as_ref(), inpainted.strength), (Some(&mask), Some(0.6)));
        assert_eq!(inpainted.request().strength, 0.6);
        assert_eq!((restyled.mask.as_ref(), restyled.strength), (None, Some(0.3)));
        assert_eq!((tiled.make_tileable, tiled.seamless, tiled.size), (Some(8), Seamless::Xy, [0, 0]));
        assert_eq!(wider.extend, Some([8, 0, 16, 0]));
        let s = serde_json::to_value(wider).unwrap();
        assert_eq!((&s["extend"], s["strength"].as_f64().map(|f| f as f32)), (&serde_json::json!([8, 0, 16, 0]), Some(0.6)));
        assert!(s.get("init_image").is_none(), "paths stay out of the settings: the key holds the files' identities");
        for (body, key) in [
            ("make_tileable = 8\n", "make_tileable"),
            ("strength = 0.5\n", "strength"),
            ("init_image = 3\n", "init_image"),
            ("init_image = \"golden/inpaint/mask.png\"\nmake_tileable = 0\n", "make_tileable"),
            ("init_image = \"golden/inpaint/mask.png\"\nmake_tileable = 5000\n", "make_tileable"),
            ("init_image = \"golden/inpaint/mask.png\"\nextend = [0, 0, 0, 0]\n", "extend"),
            ("init_image = \"golden/inpaint/mask.png\"\nextend = [-8, 0, 0, 0]\n", "extend"),
            ("init_image = \"golden/inpaint/mask.png\"\nextend = [8, 0, 0, 0.5]\n", "extend"),
            ("init_image = \"golden/inpaint/mask.png\"\nextend = [8, 0, 0, 0]\nmake_tileable = 8\n", "make_tileable"),
            ("init_image = \"golden/inpaint/mask.png\"\nmask = \"nowhere.png\"\n", "mask"),
        ] {
            let e = errors(&format!("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\n{body}"));
            assert!(e.iter().any(|e| e.key.as_deref() == Some(key)), "{body}: {e:?}");
        }
    }

    #[test]
    fn source_assets_take_only_finishing_defaults_and_keep_their_settings_when_generation_defaults_change() {
        // model_dir() holds golden/inpaint/mask.png: a PNG to stand for the picture.
        let manifest = |steps: u32| {
            format!(
                "[defaults]\nmodel = \"tiny-sd\"\nprompt = \"stone\"\nsteps = {steps}\nstrength = 0.5\ninit_image = \"golden/inpaint/mask.png\"\n\
                 format = \"dds\"\nseamless = \"xy\"\nnormal_map = true\n\
                 [[asset]]\nname = \"painted\"\nsource = \"golden/inpaint/mask.png\"\n\
                 [[asset]]\nname = \"cutout\"\nsource = \"golden/inpaint/mask.png\"\nseamless = \"none\"\nsprite = true\nformat = \"png\"\nnormal_map = false\n\
                 [[asset]]\nname = \"generated\"\n"
            )
        };
        let m = parse(&manifest(12), &model_dir()).unwrap();
        let [painted, cutout, generated] = &m.assets[..] else { panic!("three assets") };
        let picture = model_dir().join("golden/inpaint/mask.png");
        assert_eq!(painted.source.as_ref(), Some(&picture));
        // The finishing defaults apply; the generation defaults do not.
        assert_eq!((painted.format, painted.seamless, painted.normal_map, painted.mipmaps), (Format::DdsBc7, Seamless::Xy, true, true));
        assert_eq!((painted.prompt.as_str(), painted.init_image.as_ref(), painted.strength), ("", None, None));
        assert_eq!((cutout.format, cutout.seamless, cutout.sprite, cutout.normal_map), (Format::Png, Seamless::None, true, false));
        assert_eq!(generated.init_image.as_ref(), Some(&picture));
        // Its settings are the finishing steps alone, so a new generation
        // default changes the generated asset's settings and not the picture's.
        let settings: serde_json::Value = serde_json::from_str(&painted.settings_text()).unwrap();
        assert_eq!(
            settings,
            serde_json::json!({"name": "painted", "seamless": "xy", "sprite": false, "pixel_art": null, "normal_map": true, "height_map": false, "format": "dds-bc7", "mipmaps": true})
        );
        assert_eq!(painted.settings_value(), settings);
        let m13 = parse(&manifest(13), &model_dir()).unwrap();
        assert_eq!(m13.assets[0].settings_text(), painted.settings_text());
        assert_ne!(m13.assets[2].settings_text(), generated.settings_text());
        // A generated asset's settings are what they always were.
        assert_eq!(generated.settings_text(), serde_json::to_string(generated).unwrap());
        // No model is needed for a picture.
        let m = parse("[[asset]]\nname = \"p\"\nsource = \"golden/inpaint/mask.png\"\nsprite = true\n", &model_dir()).unwrap();
        assert_eq!(m.assets[0].model, PathBuf::new());
        for (body, key) in [
            ("source = \"nowhere.png\"\n", "source"),
            ("source = \"golden/inpaint/mask.png\"\nprompt = \"x\"\n", "prompt"),
            ("source = \"golden/inpaint/mask.png\"\nsteps = 4\n", "steps"),
            ("source = \"golden/inpaint/mask.png\"\nsize = [64, 64]\n", "size"),
            ("source = \"golden/inpaint/mask.png\"\ninit_image = \"golden/inpaint/mask.png\"\n", "init_image"),
            ("source = \"golden/inpaint/mask.png\"\nvariants = 2\nvariation_strength = 0.5\n", "variants"),
            ("source = \"golden/inpaint/mask.png\"\nlora = []\n", "lora"),
        ] {
            let e = errors(&format!("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\n{body}"));
            assert!(e.iter().any(|e| e.key.as_deref() == Some(key)), "{body}: {e:?}");
        }
        let e = errors("[defaults]\nsource = \"golden/inpaint/mask.png\"\n[[asset]]\nname = \"a\"\nsource = \"golden/inpaint/mask.png\"\n");
        assert!(e.iter().any(|e| e.key.as_deref() == Some("source") && e.line == 2), "{e:?}");
    }

    /// The backticked words of `text` that are key names (`matting/` is not).
    fn backticked_keys(text: &str) -> Vec<&str> {
        text.split('`').skip(1).step_by(2).filter(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())).collect()
    }

    #[test]
    fn the_readme_documents_every_key_and_the_finishing_keys_of_a_source_asset() {
        let readme = std::fs::read_to_string(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
        let table = readme.split("| key | value | default |").nth(1).expect("the README's manifest key table");
        let rows: Vec<&str> = table.lines().skip(2).take_while(|l| l.starts_with('|')).collect();
        let mut documented: Vec<&str> = rows.iter().flat_map(|r| backticked_keys(r.split('|').nth(1).unwrap())).collect();
        documented.sort_unstable();
        let mut keys = Table::KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(documented, keys, "the README's manifest table against Table's keys");

        let source_row = rows.iter().find(|r| r.starts_with("| `source` |")).expect("a `source` row");
        let list = source_row.split("only the finishing keys apply to it (").nth(1).and_then(|s| s.split(')').next()).expect("its list of finishing keys");
        let mut said = backticked_keys(list);
        said.sort_unstable();
        let mut finishing = Table::FINISHING_KEYS.to_vec();
        finishing.sort_unstable();
        assert_eq!(said, finishing, "the `source` row's finishing keys against Table's");
    }

    #[test]
    fn a_source_pattern_gives_one_asset_per_file_and_an_atlas_group() {
        let m = parse(
            "[defaults]\nformat = \"png\"\n[[asset]]\nname = \"edges_*\"\nsource = \"golden/canny/*.edges.png\"\nsprite = true\n\
             [[atlas]]\nname = \"sheet\"\nassets = [\"edges_*\"]\n",
            &model_dir(),
        )
        .unwrap();
        let names: Vec<&str> = m.assets.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["edges_brick", "edges_brick_low", "edges_drawn", "edges_material", "edges_noise"], "sorted by file name");
        let dir = model_dir().join("golden/canny");
        assert_eq!(m.assets[1].source.as_ref(), Some(&dir.join("brick_low.edges.png")));
        assert!(m.assets.iter().all(|a| a.sprite), "the pattern's settings apply to every file");
        assert_eq!(m.atlases[0].assets, names, "an atlas listing the pattern name packs them all");
        let name_of = |e: &ManifestError| e.key.clone().unwrap_or_default();
        for (body, key) in [
            ("name = \"edges\"\nsource = \"golden/canny/*.png\"\n", "name"),
            ("name = \"e_*_*\"\nsource = \"golden/canny/*.png\"\n", "name"),
            ("name = \"e_*\"\nsource = \"golden/canny/*.nothing\"\n", "source"),
            ("name = \"e_*\"\nsource = \"golden/*/brick.png\"\n", "source"),
            ("name = \"e_*\"\nsource = \"golden/canny/**.png\"\n", "source"),
            ("name = \"e_*\"\nsource = \"nowhere/*.png\"\n", "source"),
            // brick.png as `*` = "brick" gives the name of the asset before it.
            ("name = \"brick\"\nsource = \"golden/canny/brick.png\"\n[[asset]]\nname = \"*\"\nsource = \"golden/canny/*.png\"\n", "source"),
        ] {
            let e = errors(&format!("[[asset]]\n{body}"));
            assert!(e.iter().any(|e| name_of(e) == key), "{body}: {e:?}");
        }
    }

    #[test]
    fn loras_resolve_against_the_manifest_with_defaults_and_overrides() {
        let m = parse(
            "[defaults]\nmodel = \"tiny-sd\"\nlora = { path = \"lora/style.kohya.safetensors\" }\n\
             [[asset]]\nname = \"a\"\n\
             [[asset]]\nname = \"b\"\nlora = [{ path = \"lora/style.peft.safetensors\", scale = 0.5 }, { path = \"lora/detail.kohya.safetensors\", scale = -1 }]\n\
             [[asset]]\nname = \"c\"\nlora = []\n\
             [[asset]]\nname = \"d\"\nlora = { path = \"lora/style.kohya.safetensors\", scale = 0.8, text_encoder_scale = 0 }\n",
            &model_dir(),
        )
        .unwrap();
        let lora = |f: &str, scale: f32, text_encoder_scale: Option<f32>| AssetLora { path: model_dir().join("lora").join(f), scale, text_encoder_scale };
        assert_eq!(m.assets[0].loras, vec![lora("style.kohya.safetensors", 1.0, None)], "default scale 1.0 from [defaults]");
        assert_eq!(
            m.assets[1].loras,
            vec![lora("style.peft.safetensors", 0.5, None), lora("detail.kohya.safetensors", -1.0, None)],
            "an asset's list replaces the default, in order, integer scales accepted"
        );
        assert!(m.assets[2].loras.is_empty(), "`lora = []` turns the default off");
        assert_eq!(m.assets[3].loras, vec![lora("style.kohya.safetensors", 0.8, Some(0.0))], "the text encoders' own strength");
    }

    #[test]
    fn bad_loras_name_asset_key_and_line() {
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nlora = { path = \"lora/missing.safetensors\", scale = 0.7 }\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!((e[0].line, e[0].asset.as_deref(), e[0].key.as_deref()), (5, Some("asset \"a\""), Some("lora")), "{}", e[0]);
        assert!(e[0].message.contains("missing.safetensors") && e[0].message.contains("not a file"), "{}", e[0]);
        // A folder is not a LoRA file.
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\nlora = { path = \"lora\" }\n[[asset]]\nname = \"b\"\n");
        assert_eq!((e[0].line, e[0].asset.as_deref(), e[0].key.as_deref()), (3, Some("asset \"b\""), Some("lora")), "{}", e[0]);
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nlora = { path = \"lora/style.kohya.safetensors\", scale = nan }\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (5, Some("lora")), "{}", e[0]);
        assert!(e[0].message.contains("not a finite number"), "{}", e[0]);
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nlora = { path = \"lora/style.kohya.safetensors\", scale = 1e39 }\n");
        assert!(e[0].message.contains("not a finite number"), "too big for f32: {}", e[0]);
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nlora = { path = \"lora/style.kohya.safetensors\", text_encoder_scale = inf }\n");
        assert!(e[0].message.contains("text_encoder_scale inf") && e[0].message.contains("not a finite number"), "{}", e[0]);
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nlora = { file = \"x\" }\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (5, Some("lora")), "a malformed lora is a shape error: {}", e[0]);
    }

    #[test]
    fn embeddings_resolve_with_defaults_overrides_and_errors() {
        let m = parse(
            "[defaults]\nmodel = \"tiny-sd\"\nembedding = { path = \"lora/learned_embeds.safetensors\" }\n\
             [[asset]]\nname = \"a\"\n\
             [[asset]]\nname = \"b\"\nembedding = [{ path = \"lora/brick-style.safetensors\", token = \"<brick>\" }]\n\
             [[asset]]\nname = \"c\"\nembedding = []\n",
            &model_dir(),
        )
        .unwrap();
        let file = |f: &str| model_dir().join("lora").join(f);
        assert_eq!(m.assets[0].embeddings, vec![AssetEmbedding { path: file("learned_embeds.safetensors"), token: None }]);
        assert_eq!(m.assets[1].embeddings, vec![AssetEmbedding { path: file("brick-style.safetensors"), token: Some("<brick>".into()) }]);
        assert!(m.assets[2].embeddings.is_empty(), "`embedding = []` turns the default off");
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nembedding = { path = \"lora/missing.safetensors\" }\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (5, Some("embedding")), "{}", e[0]);
        assert!(e[0].message.contains("not a file"), "{}", e[0]);
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nembedding = { path = \"lora/brick-style.safetensors\", token = \"two words\" }\n");
        assert!(e[0].message.contains("must be one word"), "{}", e[0]);
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nembedding = { file = \"x\" }\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (5, Some("embedding")), "a malformed embedding is a shape error: {}", e[0]);
    }

    #[test]
    fn upscale_resolves_with_defaults_overrides_and_errors() {
        let m = parse(
            "[defaults]\nmodel = \"tiny-sd\"\nupscale = { path = \"upscaler/x4\", context = 20 }\n\
             [[asset]]\nname = \"a\"\n\
             [[asset]]\nname = \"b\"\nupscale = false\npixel_art = \"4:8\"\n\
             [[asset]]\nname = \"c\"\nupscale = { path = \"upscaler/x2-fixed.onnx\", tile = 0 }\n",
            &model_dir(),
        )
        .unwrap();
        let dir = model_dir().join("upscaler");
        assert_eq!(m.assets[0].upscale, Some(AssetUpscale { path: dir.join("x4"), tile: 256, context: 20 }), "library default tile");
        assert_eq!(m.assets[1].upscale, None, "`upscale = false` turns the default off (and allows pixel art)");
        assert_eq!(m.assets[2].upscale, Some(AssetUpscale { path: dir.join("x2-fixed.onnx"), tile: 0, context: 16 }), "library default context");
        let post = m.assets[0].post().upscale.unwrap();
        assert_eq!((post.tile, post.context), (256, 20));
        assert!(m.assets[1].post().upscale.is_none());
        // Tile and context are in the settings (so in the key), the path is not
        // (its identity is); an asset without an upscale serializes as before.
        assert_eq!(serde_json::to_value(&m.assets[0]).unwrap()["upscale"], serde_json::json!({"tile": 256, "context": 20}));
        assert!(serde_json::to_value(&m.assets[1]).unwrap().get("upscale").is_none());

        let e = errors(
            "[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nupscale = { path = \"upscaler/x4\", context = 1025, tile = -1 }\n\
             [[asset]]\nname = \"b\"\nupscale = { path = \"upscaler/nothing.onnx\" }\n\
             [[asset]]\nname = \"c\"\nupscale = { path = \"upscaler/x4\", alpha = \"graph\" }\n\
             [[asset]]\nname = \"d\"\npixel_art = \"4:8\"\nupscale = { path = \"upscaler/x4\" }\n\
             [[asset]]\nname = \"e\"\nupscale = \"upscaler/x4\"\n",
        );
        let got: Vec<(usize, &str, &str)> = e.iter().map(|e| (e.line, e.asset.as_deref().unwrap(), e.key.as_deref().unwrap())).collect();
        assert_eq!(
            got,
            vec![(5, "asset \"a\"", "upscale"), (8, "asset \"b\"", "upscale"), (11, "asset \"c\"", "upscale"), (15, "asset \"d\"", "upscale"), (18, "asset \"e\"", "upscale")],
            "{e:?}"
        );
        assert!(e[0].message.contains("context 1025 is outside 0..=1024") && e[0].message.contains("tile -1"), "{}", e[0]);
        assert!(e[1].message.contains("nothing.onnx is not an upscaler"), "{}", e[1]);
        assert!(e[2].message.contains("unknown field `alpha`"), "{}", e[2]);
        assert!(e[3].message.contains("does not combine with `pixel_art` (line 14)"), "{}", e[3]);
    }

    #[test]
    fn missing_models_and_bad_atlases() {
        let e = errors("[[asset]]\nname = \"a\"\nmodel = \"nowhere\"\n");
        assert_eq!((e[0].line, e[0].key.as_deref()), (3, Some("model")));
        let e = errors("[defaults]\nmodel = \"tiny-sd\"\n[[asset]]\nname = \"a\"\nformat = \"dds\"\n[[atlas]]\nname = \"sheet\"\nassets = [\"a\", \"b\"]\n");
        let got: Vec<(usize, &str)> = e.iter().map(|e| (e.line, e.key.as_deref().unwrap())).collect();
        assert_eq!(got, vec![(8, "assets"), (8, "assets")], "{e:?}");
    }
}
