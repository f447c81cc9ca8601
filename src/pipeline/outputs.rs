//! What the command-line tools (`generate`, `kiln-bake`) make of a generated
//! image: the post-processing in one fixed order, and the PNG text chunks that
//! record the settings. Shared so that both tools give the same pixels and the
//! same metadata for the same settings.
use std::path::Path;

use super::{GenerateRequest, PromptSyntax};
use crate::error::{Error, Result};
use crate::image::material::{material_maps, MaterialOptions};
use crate::image::pixel_art::{pixel_art, PixelArtOptions, Quantize};
use crate::image::Rgba8Image;
use crate::model::matting::{Matte, Matting};
use crate::model::upscaler::{UpscaleOptions, Upscaler};
use crate::model::seamless::Seamless;
use crate::model::Model;

/// Post-processing asked for one image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PostProcess {
    /// Upscale first with the upscaler given to [`finish`]; its `seamless`
    /// is replaced by `seamless` below, so a tileable texture stays tileable.
    pub upscale: Option<UpscaleOptions>,
    /// Cut out a sprite (matting graph when the model has one, else chroma key).
    pub sprite: bool,
    /// Snap to `cell`-pixel cells and quantize to this many colours (k-means).
    pub pixel_art: Option<(u32, u32)>,
    /// Also make a height map (of the generated image, before sprite and pixel art).
    pub height_map: bool,
    /// Also make an OpenGL normal map (likewise).
    pub normal_map: bool,
    /// The axes the texture tiles along; the material maps wrap when any.
    pub seamless: Seamless,
}

/// The post-processed image and the maps asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    /// The final image.
    pub image: Rgba8Image,
    /// Height map, when asked.
    pub height: Option<Rgba8Image>,
    /// Normal map, when asked.
    pub normal: Option<Rgba8Image>,
    /// For sprites: how the matte was made and the visible box, for a log line.
    pub sprite_note: Option<String>,
}

/// Applies `post` to a generated `image`: the upscale first (so everything
/// after it works at the final size), material maps from those pixels (so
/// they describe the surface, not the cut-out), then the sprite matte, then
/// pixel art. `upscaler` is used when `post.upscale` is set. Errors: as each
/// step's; INVALID_ARGUMENT for an upscale without an upscaler, or with pixel
/// art (which wants nearest-neighbour cells, not a super-resolution net).
pub fn finish(model: &Model, image: Rgba8Image, post: &PostProcess, upscaler: Option<&Upscaler>) -> Result<Finished> {
    let mut image = image;
    if let Some(options) = upscale_options(post)? {
        let upscaler = upscaler.ok_or_else(|| Error::invalid("an upscale was asked for without an upscaler"))?;
        image = upscaler.upscale(&image, &options)?;
    }
    finish_upscaled(model, image, post)
}

/// The upscale `post` asks for, with the texture's seamless axes (so a
/// tileable texture stays tileable); `None` without one. INVALID_ARGUMENT
/// with pixel art (which wants nearest-neighbour cells, not a
/// super-resolution net).
pub fn upscale_options(post: &PostProcess) -> Result<Option<UpscaleOptions>> {
    let Some(options) = post.upscale else { return Ok(None) };
    if post.pixel_art.is_some() {
        return Err(Error::invalid("upscale and pixel art do not combine: pixel art scales its cells itself"));
    }
    Ok(Some(UpscaleOptions { seamless: post.seamless, ..options }))
}

/// The steps of [`finish`] after the upscale, for a caller that ran the
/// upscale ([`upscale_options`]) itself, e.g. as a job.
pub fn finish_upscaled(model: &Model, image: Rgba8Image, post: &PostProcess) -> Result<Finished> {
    finish_with(SpriteMatte::Model(model), image, post)
}

/// Where [`finish_with`] takes a sprite's alpha from.
#[derive(Clone, Copy)]
pub enum SpriteMatte<'a> {
    /// The model's matting graph when it has one, else the chroma key (as
    /// `generate --sprite`).
    Model(&'a Model),
    /// This matting graph.
    Graph(&'a Matting),
    /// The chroma key ([`crate::image::sprite::make_sprite`]).
    Key,
}

/// [`finish_upscaled`] for a picture no model made (`kiln-bake`'s `source`
/// assets): the sprite's alpha comes from `matte`.
pub fn finish_with(matte: SpriteMatte<'_>, image: Rgba8Image, post: &PostProcess) -> Result<Finished> {
    let mut image = image;
    let (mut height, mut normal) = (None, None);
    if post.height_map || post.normal_map {
        let maps = material_maps(&image, &MaterialOptions { wrap: post.seamless != Seamless::None, ..Default::default() })?;
        height = post.height_map.then_some(maps.height);
        normal = post.normal_map.then_some(maps.normal);
    }
    let mut sprite_note = None;
    if post.sprite {
        let sprite = match matte {
            SpriteMatte::Model(model) => model.make_sprite(&image, &Default::default(), Matte::Auto)?,
            SpriteMatte::Graph(graph) => graph.make_sprite(&image, &Default::default())?,
            SpriteMatte::Key => crate::image::sprite::make_sprite(&image, &Default::default())?,
        };
        sprite_note = Some(match sprite.key {
            Some(key) => format!("sprite: chroma key {key:?}, visible box {:?}", sprite.bbox),
            None => format!("sprite: matting graph, visible box {:?}", sprite.bbox),
        });
        image = sprite.image;
    }
    if let Some((cell, colors)) = post.pixel_art {
        image = pixel_art(&image, &PixelArtOptions { cell, quantize: Quantize::KMeans(colors), ..Default::default() })?;
    }
    Ok(Finished { image, height, normal, sprite_note })
}

/// What a PNG records about how it was made, beyond the request itself.
#[derive(Debug, Clone, Copy)]
pub struct Provenance<'a> {
    /// The model folder.
    pub model: &'a Path,
    /// `--init-noise` file, if the latents came from one.
    pub init_noise: Option<&'a Path>,
    /// `--init-image` file, for img2img.
    pub init_image: Option<&'a Path>,
    /// What was done with `init_image` besides img2img, when anything.
    pub picture_job: Option<PictureJob<'a>>,
    /// The upscaler's graph, when the image was upscaled.
    pub upscaler: Option<&'a Path>,
    /// How the model's weights were stored (int8 pictures differ from float ones).
    pub quantization: crate::model::quantize::Quantization,
}

/// A job on the init image other than img2img, as the PNG records it.
#[derive(Debug, Clone, Copy)]
pub enum PictureJob<'a> {
    /// Inpainting with this mask file (`--mask`).
    Inpaint(&'a Path),
    /// Outpainting by these pixels (`--extend`).
    Extend(crate::pipeline::texture::Extend),
    /// Made tileable with a band this wide (`--make-tileable`).
    MakeTileable(usize),
}

impl<'a> PictureJob<'a> {
    /// The job a tool's mask, extend and make-tileable settings ask for (the
    /// tools refuse more than one); `None` for plain img2img or none.
    pub fn of(mask: Option<&'a Path>, extend: Option<crate::pipeline::texture::Extend>, make_tileable: Option<usize>) -> Option<Self> {
        match (mask, extend, make_tileable) {
            (Some(mask), _, _) => Some(Self::Inpaint(mask)),
            (_, Some(extend), _) => Some(Self::Extend(extend)),
            (_, _, Some(band)) => Some(Self::MakeTileable(band)),
            _ => None,
        }
    }
}

/// The PNG `tEXt` chunks (key, value) for an image of `width` × `height` made
/// from `request` with `post`: `prompt`, `negative_prompt`, (SDXL, when
/// given) `prompt_2` and `negative_prompt_2`, `kiln:settings` (with the SDXL
/// size conditioning when it is not the default), `kiln:model` and `Software`.
pub fn png_text(request: &GenerateRequest, post: &PostProcess, from: &Provenance<'_>, width: usize, height: usize) -> Vec<(&'static str, String)> {
    let path_or_none = |p: Option<&Path>| p.map_or("none".to_string(), path_text);
    let syntax: PromptSyntax = request.prompt_syntax;
    let settings = format!(
        "steps={} guidance={} scheduler={:?} seed={} size={}x{} init_noise={} prompt_syntax={:?} seamless={:?} init_image={} strength={} sprite={} pixel_art={:?}",
        request.steps,
        request.guidance_scale,
        request.scheduler,
        request.seed,
        width,
        height,
        path_or_none(from.init_noise),
        syntax,
        post.seamless,
        path_or_none(from.init_image),
        request.strength,
        post.sprite,
        post.pixel_art,
    );
    let mut settings = settings;
    // The generator only when it is not Kiln's, so other images keep their text exactly.
    if request.noise != crate::pipeline::NoiseGenerator::Kiln {
        settings.push_str(&format!(" noise={}", request.noise.name()));
    }
    if request.variation_strength > 0.0 {
        settings.push_str(&format!(" variation_seed={} variation_strength={}", request.variation_seed, request.variation_strength));
    }
    // SDXL conditioning only when given, so other images keep their text exactly.
    let xl = &request.xl;
    if *xl != crate::pipeline::XlConditioning::default() {
        settings.push_str(&format!(
            " xl_original_size={:?} xl_crop_top_left={:?} xl_target_size={:?} xl_negative_original_size={:?} xl_negative_crop_top_left={:?} xl_negative_target_size={:?} xl_aesthetic_score={} xl_negative_aesthetic_score={}",
            xl.original_size,
            xl.crop_top_left,
            xl.target_size,
            xl.negative_original_size,
            xl.negative_crop_top_left,
            xl.negative_target_size,
            xl.aesthetic_score,
            xl.negative_aesthetic_score,
        ));
    }
    if let Some(r) = &request.refiner {
        settings.push_str(&format!(" refiner={} refiner_start={}", path_text(&r.model.layout().root), r.start));
    }
    // Only when used, so other images keep their text exactly.
    match from.picture_job {
        None => {}
        Some(PictureJob::Inpaint(mask)) => settings.push_str(&format!(" mask={}", path_text(mask))),
        Some(PictureJob::Extend(e)) => settings.push_str(&format!(" extend={},{},{},{}", e.left, e.right, e.top, e.bottom)),
        Some(PictureJob::MakeTileable(band)) => settings.push_str(&format!(" make_tileable={band}")),
    }
    if from.quantization != crate::model::quantize::Quantization::None {
        settings.push_str(&format!(" quantization={}", from.quantization.name()));
    }
    settings.push_str(&upscale_text(post, from.upscaler));
    let mut text = vec![("prompt", request.prompt.clone()), ("negative_prompt", request.negative_prompt.clone())];
    for (key, value) in [("prompt_2", &request.prompt_2), ("negative_prompt_2", &request.negative_prompt_2)] {
        if !value.is_empty() {
            text.push((key, value.clone()));
        }
    }
    text.extend([
        ("kiln:settings", settings),
        ("kiln:model", path_text(from.model)),
        ("Software", concat!("Kiln ", env!("CARGO_PKG_VERSION")).to_string()),
    ]);
    text
}

/// The PNG `tEXt` chunks for a picture that no model made but that was
/// finished from the file `source` (`kiln-bake`'s `source` assets), at
/// `width` × `height`: `kiln:settings` (`source=PATH`, the size and the
/// post-processing) and `Software`. No prompt and no model: nothing was drawn.
pub fn source_png_text(source: &Path, post: &PostProcess, upscaler: Option<&Path>, width: usize, height: usize) -> Vec<(&'static str, String)> {
    let settings = format!(
        "source={} size={width}x{height} seamless={:?} sprite={} pixel_art={:?}{}",
        path_text(source),
        post.seamless,
        post.sprite,
        post.pixel_art,
        upscale_text(post, upscaler)
    );
    vec![("kiln:settings", settings), ("Software", concat!("Kiln ", env!("CARGO_PKG_VERSION")).to_string())]
}

/// The upscale's part of `kiln:settings`: empty without one, so other
/// images keep their text exactly.
fn upscale_text(post: &PostProcess, upscaler: Option<&Path>) -> String {
    match &post.upscale {
        None => String::new(),
        Some(u) => format!(" upscaler={} upscale_tile={} upscale_context={}", upscaler.map_or("none".to_string(), path_text), u.tile, u.context),
    }
}

/// A path as text in one style on every platform: `/` separators (Windows
/// accepts them), so PNG metadata and messages never mix `\` and `/`.
pub fn path_text(p: &Path) -> String {
    let text = p.display().to_string();
    if cfg!(windows) {
        text.replace('\\', "/")
    } else {
        text
    }
}
