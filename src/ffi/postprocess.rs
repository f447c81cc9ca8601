//! Game-asset post-processing of Kiln images in the C API: sprites with alpha
//! (chroma key, or a model's matting graph), pixel art, material maps (height
//! and normal), the seam score
//! of a tileable texture, and `kiln_image_create` to bring an engine's own
//! pixels in. Every call leaves its input untouched and returns new images
//! (a `kiln_image` is immutable), freed with `kiln_image_free`.
use super::boundary::{non_null, read_versioned};
use super::handles;
use super::image::kiln_image;
use super::model::kiln_model;
use super::status::kiln_status;
use crate::error::{Error, ErrorKind, Result};
use crate::image::material::{material_maps, MaterialOptions, NormalConvention};
use crate::image::pixel_art::{pixel_art, CellColor, PixelArtOptions, Quantize, MAX_COLORS};
use crate::image::seam::{seam_score, Axis};
use crate::image::sprite::{make_sprite, Rect, SpriteOptions};
use crate::image::limits::{check_image_size, try_with_capacity};
use crate::image::Rgba8Image;
use crate::model::matting::Matte;

/// A pixel rectangle. Empty (all fields 0) when it holds no pixel.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct kiln_rect {
    /// Left column.
    pub x: u32,
    /// Top row.
    pub y: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl From<Rect> for kiln_rect {
    fn from(r: Rect) -> Self {
        Self { x: r.x, y: r.y, width: r.width, height: r.height }
    }
}

/// Green channel convention of a normal map.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_normal_convention {
    /// Green is +Y up the image (OpenGL, Blender, Unity, Godot).
    Opengl = 0,
    /// Green is +Y down the image (DirectX, Unreal).
    Directx = 1,
}

/// Where a sprite's alpha comes from; the value goes in
/// `kiln_sprite_options.matte`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_matte {
    /// `kiln_model_make_sprite`: the model's matting graph when it has one
    /// (`kiln_model_info.has_matting`), else the chroma key.
    /// `kiln_image_make_sprite`: the chroma key.
    Auto = 0,
    /// The chroma key (colour distance to the key, despill), always.
    Key = 1,
    /// The model's matting graph; MODEL_NOT_FOUND when the model has none.
    /// Only `kiln_model_make_sprite` can use it.
    Graph = 2,
}

/// How a pixel-art cell's pixels become one colour.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum kiln_cell_color {
    /// Alpha-weighted mean in linear light; alpha is the mean alpha.
    Mean = 0,
    /// The most frequent RGBA value (first in row-major order on ties).
    Mode = 1,
}

// ---- kiln_image_create ----

/// Makes a Kiln image from caller pixels (RGBA8, sRGB, straight alpha), e.g. an
/// engine texture to post-process. Row `y` starts `y * row_pitch` bytes into
/// `pixels` (`row_pitch` 0 = `width * 4`); the pixels are copied, so the
/// buffer is only borrowed for the call. Free the image with `kiln_image_free`.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (width or height 0 or over 16384,
/// pitch smaller than a row, or so large that
/// `row_pitch * (height - 1)` does not fit in `size_t`), BUFFER_TOO_SMALL
/// (`pixels_len` shorter than `row_pitch * (height - 1) + width * 4`),
/// OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_create(
    width: u32,
    height: u32,
    pixels: *const u8,
    pixels_len: usize,
    row_pitch: usize,
    image_out: *mut *mut kiln_image,
) -> kiln_status {
    boundary!({
        non_null(image_out, "image_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(image_out, std::ptr::null_mut()) };
        non_null(pixels, "pixels")?;
        let (w, h) = (width as usize, height as usize);
        if w == 0 || h == 0 {
            return Err(Error::invalid(format!("image size {width}x{height} is empty")));
        }
        // INVALID_ARGUMENT here, as this call has always reported sizes it cannot take.
        check_image_size(w, h, "the image").map_err(|e| Error::invalid(e.message()))?;
        let row = w * 4;
        let pitch = if row_pitch == 0 { row } else { row_pitch };
        if pitch < row {
            return Err(Error::invalid(format!("row pitch {pitch} is smaller than one row ({row} bytes)")));
        }
        let need = pitch
            .checked_mul(h - 1)
            .and_then(|n| n.checked_add(row))
            .ok_or_else(|| Error::invalid(format!("row pitch {pitch} times {height} rows is too large")))?;
        if pixels_len < need {
            return Err(Error::new(
                ErrorKind::BufferTooSmall,
                format!("`pixels` holds {pixels_len} bytes; a {width}x{height} RGBA8 image with row pitch {pitch} needs {need}"),
            ));
        }
        // SAFETY: the caller guarantees pixels_len readable bytes; need <= pixels_len.
        let src = unsafe { std::slice::from_raw_parts(pixels, need) };
        let mut data = try_with_capacity(row * h, "the image's pixels")?;
        for y in 0..h {
            data.extend_from_slice(&src[y * pitch..y * pitch + row]);
        }
        let img = Rgba8Image { width: w, height: h, pixels: data };
        // SAFETY: checked non-null.
        unsafe { handles::write_out(image_out, handles::into_raw::<kiln_image>(img)) };
        Ok(())
    })
}

// ---- Sprites ----

/// How `kiln_image_make_sprite` and `kiln_model_make_sprite` cut a sprite out
/// of an image: the key fields drive the chroma key, the rest applies to a
/// matting graph's matte too. Fill with `kiln_sprite_options_init`; NULL =
/// defaults. Accepted `struct_size`: `sizeof(kiln_sprite_options)` (40) or 36
/// (the layout before `matte`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_sprite_options {
    /// `sizeof(kiln_sprite_options)`, set by `kiln_sprite_options_init`.
    pub struct_size: u32,
    /// 1 (default): detect the key colour as the per-channel median of the
    /// border pixels; 0: use `key_rgb`. With a matting graph the key is only
    /// used for despill, and only when given (`auto_key` 0).
    pub auto_key: u32,
    /// The key colour as 0xRRGGBB (sRGB), used when `auto_key` is 0. Default
    /// 0x00FF00.
    pub key_rgb: u32,
    /// Oklab distance from the key at or below which a pixel is fully
    /// transparent (Oklab L runs 0..1; pure red and green are about 0.52
    /// apart). Default 0.10.
    pub inner_tolerance: f32,
    /// Oklab distance at or above which a pixel is fully opaque; alpha rises
    /// linearly in between. Must be ≥ `inner_tolerance`. Default 0.22.
    pub outer_tolerance: f32,
    /// 1 (default): remove the key's tint from partly transparent pixels
    /// (unmix the key in linear light, then clamp the key's dominant channels
    /// to the others); 0: off.
    pub despill: u32,
    /// Radius in pixels of a Gaussian blur of the alpha; 0 = off (default),
    /// at most 64.
    pub feather_radius: u32,
    /// 0 (default): straight alpha; 1: premultiplied (RGB × alpha in the
    /// stored sRGB values, so RGB ≤ alpha).
    pub premultiplied: u32,
    /// Pixels with alpha ≥ this (1..255; 0 counts as 1) make up the bounding
    /// box. Default 1.
    pub bbox_threshold: u32,
    /// A `kiln_matte` value: where the alpha comes from. Default
    /// `KILN_MATTE_AUTO`, which is also what a caller built before this field
    /// existed (a smaller `struct_size`) gets.
    pub matte: u32,
}

/// The first layout ended before `matte`.
const SPRITE_OPTIONS_V1: usize = layout_before!(kiln_sprite_options, matte);

fn default_sprite_options() -> kiln_sprite_options {
    kiln_sprite_options {
        struct_size: std::mem::size_of::<kiln_sprite_options>() as u32,
        auto_key: 1,
        key_rgb: 0x00FF00,
        inner_tolerance: 0.10,
        outer_tolerance: 0.22,
        despill: 1,
        feather_radius: 0,
        premultiplied: 0,
        bbox_threshold: 1,
        matte: kiln_matte::Auto as u32,
    }
}

/// Fills `options` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_sprite_options_init(options: *mut kiln_sprite_options) {
    boundary_void!({
        if !options.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { options.write(default_sprite_options()) };
        }
    })
}

fn sprite_options(o: &kiln_sprite_options) -> Result<(SpriteOptions, Matte)> {
    let matte = match o.matte {
        0 => Matte::Auto,
        1 => Matte::Key,
        2 => Matte::Graph,
        other => return Err(Error::invalid(format!("matte {other} is not a kiln_matte"))),
    };
    if o.key_rgb > 0xFF_FFFF {
        return Err(Error::invalid(format!("key_rgb 0x{:X} is not 0xRRGGBB", o.key_rgb)));
    }
    if o.bbox_threshold > 255 {
        return Err(Error::invalid(format!("bbox_threshold {} is over 255", o.bbox_threshold)));
    }
    let k = o.key_rgb;
    let options = SpriteOptions {
        key: (o.auto_key == 0).then_some([(k >> 16) as u8, (k >> 8) as u8, k as u8]),
        inner_tolerance: o.inner_tolerance,
        outer_tolerance: o.outer_tolerance,
        despill: o.despill != 0,
        feather_radius: o.feather_radius,
        premultiplied: o.premultiplied != 0,
        bbox_threshold: o.bbox_threshold as u8,
    };
    Ok((options, matte))
}

/// Reads the caller's sprite options (NULL = defaults).
///
/// # Safety
/// `options` is NULL or holds `struct_size` readable bytes.
pub(crate) unsafe fn read_sprite_options(options: *const kiln_sprite_options) -> Result<(SpriteOptions, Matte)> {
    let o = if options.is_null() {
        default_sprite_options()
    } else {
        // SAFETY: non-null; the caller's struct holds struct_size bytes.
        unsafe { read_versioned(options, default_sprite_options(), &[SPRITE_OPTIONS_V1], "options")? }
    };
    sprite_options(&o)
}

/// Writes a sprite to the out-parameters (both checked by the caller).
///
/// # Safety
/// `image_out` is writable; `bbox_out` is NULL or writable.
unsafe fn write_sprite(sprite: crate::image::sprite::Sprite, image_out: *mut *mut kiln_image, bbox_out: *mut kiln_rect) {
    // SAFETY: per this function's contract.
    unsafe {
        if !bbox_out.is_null() {
            handles::write_out(bbox_out, sprite.bbox.into());
        }
        handles::write_out(image_out, handles::into_raw::<kiln_image>(sprite.image));
    }
}

/// Zeroes the sprite out-parameters on entry.
///
/// # Safety
/// `image_out` is writable (checked non-null); `bbox_out` is NULL or writable.
unsafe fn clear_sprite_outs(image_out: *mut *mut kiln_image, bbox_out: *mut kiln_rect) -> Result<()> {
    non_null(image_out, "image_out")?;
    // SAFETY: checked non-null; bbox_out NULL or writable.
    unsafe {
        handles::write_out(image_out, std::ptr::null_mut());
        if !bbox_out.is_null() {
            handles::write_out(bbox_out, kiln_rect::default());
        }
    }
    Ok(())
}

/// Cuts a sprite with alpha out of `image`, an image generated on a flat key
/// background (e.g. "… on a plain green background"): soft matte by Oklab
/// distance to the key, despill, colour bleeding under transparent pixels
/// (so filtering never pulls the key back in), optional feathering, straight
/// or premultiplied output. `image` is left as it is; the sprite is a new
/// image of the same size in `*image_out`, freed with `kiln_image_free`.
/// `*bbox_out` receives the bounding box of the pixels with alpha ≥
/// `bbox_threshold` (all 0 when there are none); `bbox_out` may be NULL.
/// `options` NULL = defaults. To use a matting graph instead of the key, call
/// `kiln_model_make_sprite`. Errors: NULL_ARGUMENT, STRUCT_SIZE_MISMATCH,
/// INVALID_ARGUMENT (tolerances negative, non-finite or `outer < inner`,
/// feather radius over 64, `key_rgb` over 0xFFFFFF, `bbox_threshold` over
/// 255, an unknown `matte`, or `KILN_MATTE_GRAPH`, which needs a model).
#[no_mangle]
pub unsafe extern "C" fn kiln_image_make_sprite(
    image: *const kiln_image,
    options: *const kiln_sprite_options,
    image_out: *mut *mut kiln_image,
    bbox_out: *mut kiln_rect,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller passes writable out-parameters (NULL checked).
        unsafe { clear_sprite_outs(image_out, bbox_out)? };
        // SAFETY: NULL or a live handle.
        let img = unsafe { handles::borrow(image)? };
        // SAFETY: NULL or a struct of struct_size bytes.
        let (opts, matte) = unsafe { read_sprite_options(options)? };
        if matte == Matte::Graph {
            return Err(Error::invalid(
                "matte KILN_MATTE_GRAPH needs a model's matting graph: call kiln_model_make_sprite",
            ));
        }
        let sprite = make_sprite(img, &opts)?;
        // SAFETY: checked above.
        unsafe { write_sprite(sprite, image_out, bbox_out) };
        Ok(())
    })
}

/// Cuts a sprite with alpha out of `image` (typically one `model` generated)
/// using the model's matting graph: `matting/model.onnx` in the model folder,
/// or the graph named by `kiln_model_load_options.matting_path`. With
/// `options->matte` AUTO (the default) a model without one keys as
/// `kiln_image_make_sprite` does, so one call serves both kinds of model;
/// `kiln_model_info.has_matting` says which it is. KEY forces the key,
/// GRAPH requires the graph.
///
/// With the graph: the image's RGB goes in (resized to a fixed input size,
/// normalized by the graph's settings file or ImageNet's mean and std), the
/// matte comes out, is resized back bilinearly and becomes the alpha (times
/// the input's alpha); then colour bleeding, feathering, straight or
/// premultiplied output and the bounding box as for keyed sprites. Despill
/// needs a background colour, so it runs only when `auto_key` is 0 (against
/// `key_rgb`); the tolerances are unused. The graph is loaded on the first
/// call (with the runtime's providers and threads) and kept with the model;
/// a failed load is retried on the next call, and the model stays usable.
///
/// Ownership and out-parameters as `kiln_image_make_sprite`. Thread-safe
/// like generation: calls on one model may come from several threads (the
/// graph runs one call at a time). Errors: NULL_ARGUMENT,
/// STRUCT_SIZE_MISMATCH, INVALID_ARGUMENT (as `kiln_image_make_sprite`, an
/// empty image), MODEL_NOT_FOUND (GRAPH asked of a model without a matting
/// graph, or `matting/` without `model.onnx`), MODEL_INVALID (the file is not
/// an ONNX graph with one float `[1, 3, H, W]` input and a `[1, 1, h, w]`,
/// `[1, h, w]` or `[h, w]` output, a bad settings file, NaN output), IO,
/// INFERENCE_FAILED (ONNX Runtime failed running it).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_make_sprite(
    model: *const kiln_model,
    image: *const kiln_image,
    options: *const kiln_sprite_options,
    image_out: *mut *mut kiln_image,
    bbox_out: *mut kiln_rect,
) -> kiln_status {
    boundary!({
        // SAFETY: the caller passes writable out-parameters (NULL checked).
        unsafe { clear_sprite_outs(image_out, bbox_out)? };
        // SAFETY: NULL or live handles.
        let m = unsafe { handles::borrow(model)? };
        let img = unsafe { handles::borrow(image)? };
        // SAFETY: NULL or a struct of struct_size bytes.
        let (opts, matte) = unsafe { read_sprite_options(options)? };
        let sprite = m.make_sprite(img, &opts, matte)?;
        // SAFETY: checked above.
        unsafe { write_sprite(sprite, image_out, bbox_out) };
        Ok(())
    })
}

// ---- Pixel art ----

/// How `kiln_image_pixel_art` makes pixel art. Fill with
/// `kiln_pixel_art_options_init`; NULL = defaults. The palette is borrowed for
/// the call only. Accepted `struct_size`: `sizeof(kiln_pixel_art_options)` only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_pixel_art_options {
    /// `sizeof(kiln_pixel_art_options)`, set by `kiln_pixel_art_options_init`.
    pub struct_size: u32,
    /// Cell size in source pixels; each cell becomes one output colour. The
    /// grid is `ceil(width / cell) x ceil(height / cell)`. Default 8; 0 is
    /// INVALID_ARGUMENT.
    pub cell: u32,
    /// Output pixels per cell (nearest neighbour): the output is `grid x
    /// scale`. Default 1; 0 is INVALID_ARGUMENT.
    pub scale: u32,
    /// Quantize to at most this many colours by k-means in Oklab
    /// (deterministic: same input, same output); 0 = keep every cell's
    /// colour. Default 16, at most 256. Ignored when a palette is given.
    pub colors: u32,
    /// A `kiln_cell_color` value. Default `KILN_CELL_COLOR_MEAN`.
    pub cell_color: u32,
    /// 1..255: binary alpha, a cell is opaque if its alpha ≥ this, else fully
    /// transparent; 0 = keep the cell's alpha (default).
    pub alpha_threshold: u32,
    /// Optional caller palette, `palette_len / 3` sRGB colours as R, G, B
    /// bytes; each cell takes the nearest in Oklab. NULL = none (default).
    pub palette_rgb: *const u8,
    /// Bytes at `palette_rgb`: a multiple of 3, 3..=768 when `palette_rgb` is
    /// set (a non-NULL palette of 0 colours is INVALID_ARGUMENT).
    pub palette_len: usize,
}

const PIXEL_ART_OPTIONS_V1: usize = std::mem::size_of::<kiln_pixel_art_options>();

fn default_pixel_art_options() -> kiln_pixel_art_options {
    kiln_pixel_art_options {
        struct_size: PIXEL_ART_OPTIONS_V1 as u32,
        cell: 8,
        scale: 1,
        colors: 16,
        cell_color: kiln_cell_color::Mean as u32,
        alpha_threshold: 0,
        palette_rgb: std::ptr::null(),
        palette_len: 0,
    }
}

/// Fills `options` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_pixel_art_options_init(options: *mut kiln_pixel_art_options) {
    boundary_void!({
        if !options.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { options.write(default_pixel_art_options()) };
        }
    })
}

/// # Safety
/// `o.palette_rgb` must be NULL or valid for `o.palette_len` bytes.
unsafe fn pixel_art_options(o: &kiln_pixel_art_options) -> Result<PixelArtOptions> {
    let cell_color = match o.cell_color {
        0 => CellColor::Mean,
        1 => CellColor::Mode,
        other => return Err(Error::invalid(format!("cell_color {other} is not a kiln_cell_color"))),
    };
    if o.alpha_threshold > 255 {
        return Err(Error::invalid(format!("alpha_threshold {} is over 255", o.alpha_threshold)));
    }
    let quantize = if o.palette_rgb.is_null() {
        if o.palette_len != 0 {
            return Err(Error::new(
                ErrorKind::NullArgument,
                format!("`options->palette_rgb` is NULL but palette_len is {}", o.palette_len),
            ));
        }
        match o.colors {
            0 => Quantize::None,
            k => Quantize::KMeans(k),
        }
    } else {
        if o.palette_len == 0 || !o.palette_len.is_multiple_of(3) || o.palette_len > 3 * MAX_COLORS {
            return Err(Error::invalid(format!(
                "palette_len is {} bytes; it must be a multiple of 3 from 3 to {} (1..={MAX_COLORS} colours)",
                o.palette_len,
                3 * MAX_COLORS
            )));
        }
        // SAFETY: per this function's contract.
        let bytes = unsafe { std::slice::from_raw_parts(o.palette_rgb, o.palette_len) };
        Quantize::Palette(bytes.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect())
    };
    Ok(PixelArtOptions {
        cell: o.cell,
        scale: o.scale,
        cell_color,
        quantize,
        alpha_threshold: (o.alpha_threshold != 0).then_some(o.alpha_threshold as u8),
    })
}

/// Turns `image` into pixel art: snaps it to a grid of `cell`-pixel cells
/// (one colour each), reduces the colours (k-means in Oklab, or the nearest
/// colour of a caller palette), optionally makes alpha binary, and scales the
/// grid by `scale` with nearest-neighbour sampling. The result is a new image
/// of `ceil(width / cell) * scale x ceil(height / cell) * scale` pixels in
/// `*image_out`, freed with `kiln_image_free`. `options` NULL = defaults.
/// Errors: NULL_ARGUMENT (also a NULL `palette_rgb` with a non-zero
/// `palette_len`), STRUCT_SIZE_MISMATCH, INVALID_ARGUMENT (cell or scale 0,
/// more than 256 colours, a palette of 0 colours or whose length is not a
/// multiple of 3, an unknown `cell_color`, an alpha threshold over 255),
/// INVALID_SIZE (an output over 16384 pixels a side: `scale` too large for the
/// grid; checked before any work), OUT_OF_MEMORY.
#[no_mangle]
pub unsafe extern "C" fn kiln_image_pixel_art(
    image: *const kiln_image,
    options: *const kiln_pixel_art_options,
    image_out: *mut *mut kiln_image,
) -> kiln_status {
    boundary!({
        non_null(image_out, "image_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(image_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle.
        let img = unsafe { handles::borrow(image)? };
        let o = if options.is_null() {
            default_pixel_art_options()
        } else {
            // SAFETY: non-null; the caller's struct holds struct_size bytes.
            unsafe { read_versioned(options, default_pixel_art_options(), &[], "options")? }
        };
        // SAFETY: the caller guarantees the palette pointer and length.
        let opts = unsafe { pixel_art_options(&o)? };
        let out = pixel_art(img, &opts)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(image_out, handles::into_raw::<kiln_image>(out)) };
        Ok(())
    })
}

// ---- Material maps ----

/// How `kiln_image_material_maps` derives height and normal maps. Fill with
/// `kiln_material_options_init`; NULL = defaults. Accepted `struct_size`:
/// `sizeof(kiln_material_options)` only.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_material_options {
    /// `sizeof(kiln_material_options)`, set by `kiln_material_options_init`.
    pub struct_size: u32,
    /// Radius in pixels of the Gaussian blur of the height (σ = radius / 2);
    /// 0 = none. Default 1, at most 256.
    pub blur_radius: u32,
    /// Multiplies the height gradient (height in [0, 1], per pixel) before
    /// normalizing: larger is bumpier, 0 is flat. Finite, ≥ 0. Default 4.
    pub strength: f32,
    /// A `kiln_normal_convention` value. Default `KILN_NORMAL_CONVENTION_OPENGL`.
    pub convention: u32,
    /// 1: sample across the edges by wrapping around, so the maps of a
    /// seamless texture tile too; 0 (default): clamp at the edges.
    pub wrap: u32,
    /// 1: bright is low; 0 (default): bright is high.
    pub invert_height: u32,
}

const MATERIAL_OPTIONS_V1: usize = std::mem::size_of::<kiln_material_options>();

fn default_material_options() -> kiln_material_options {
    kiln_material_options {
        struct_size: MATERIAL_OPTIONS_V1 as u32,
        blur_radius: 1,
        strength: 4.0,
        convention: kiln_normal_convention::Opengl as u32,
        wrap: 0,
        invert_height: 0,
    }
}

/// Fills `options` with defaults, including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_material_options_init(options: *mut kiln_material_options) {
    boundary_void!({
        if !options.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { options.write(default_material_options()) };
        }
    })
}

/// Derives material maps from a colour texture. Height: Rec. 709 luminance of
/// the linear-light colour, blurred, stored as grey RGB `round(h * 255)`
/// (linear data) with alpha 255. Normal: Sobel on the (unquantized) height
/// times `strength`, tangent space, RGB = `round((n * 0.5 + 0.5) * 255)`,
/// alpha 255; flat is (128, 128, 255). Each map is a new image of the input's
/// size, freed with `kiln_image_free`. Either of `height_out` and `normal_out`
/// may be NULL when that map is not wanted, not both. `options` NULL =
/// defaults. Errors: NULL_ARGUMENT, STRUCT_SIZE_MISMATCH, INVALID_ARGUMENT
/// (unknown convention, negative or non-finite strength, blur radius over 256).
#[no_mangle]
pub unsafe extern "C" fn kiln_image_material_maps(
    image: *const kiln_image,
    options: *const kiln_material_options,
    height_out: *mut *mut kiln_image,
    normal_out: *mut *mut kiln_image,
) -> kiln_status {
    boundary!({
        if height_out.is_null() && normal_out.is_null() {
            return Err(Error::new(ErrorKind::NullArgument, "`height_out` and `normal_out` are both NULL"));
        }
        // SAFETY: each is NULL or writable.
        unsafe {
            for out in [height_out, normal_out] {
                if !out.is_null() {
                    handles::write_out(out, std::ptr::null_mut());
                }
            }
        }
        // SAFETY: NULL or a live handle.
        let img = unsafe { handles::borrow(image)? };
        let o = if options.is_null() {
            default_material_options()
        } else {
            // SAFETY: non-null; the caller's struct holds struct_size bytes.
            unsafe { read_versioned(options, default_material_options(), &[], "options")? }
        };
        let convention = match o.convention {
            0 => NormalConvention::OpenGl,
            1 => NormalConvention::DirectX,
            other => return Err(Error::invalid(format!("convention {other} is not a kiln_normal_convention"))),
        };
        let maps = material_maps(
            img,
            &MaterialOptions {
                blur_radius: o.blur_radius,
                strength: o.strength,
                convention,
                wrap: o.wrap != 0,
                invert_height: o.invert_height != 0,
            },
        )?;
        // SAFETY: each is NULL or writable.
        unsafe {
            if !height_out.is_null() {
                handles::write_out(height_out, handles::into_raw::<kiln_image>(maps.height));
            }
            if !normal_out.is_null() {
                handles::write_out(normal_out, handles::into_raw::<kiln_image>(maps.normal));
            }
        }
        Ok(())
    })
}

// ---- Seam score ----

/// How visible the wrap seam of a tileable texture is along `axis`
/// (`KILN_SEAMLESS_X`: last column against first; `KILN_SEAMLESS_Y`: last row
/// against first): the mean absolute RGBA difference across the wrap edge
/// divided by the mean absolute difference between adjacent columns (rows)
/// inside the image. About 1 or below: tiles cleanly; much more than 1: a
/// visible seam. A flat image scores 1. Errors: NULL_ARGUMENT,
/// INVALID_ARGUMENT (`axis` not X or Y, fewer than 2 pixels along it).
#[no_mangle]
pub unsafe extern "C" fn kiln_image_seam_score(image: *const kiln_image, axis: u32, score_out: *mut f32) -> kiln_status {
    boundary!({
        non_null(score_out, "score_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(score_out, 0.0) };
        // SAFETY: NULL or a live handle.
        let img = unsafe { handles::borrow(image)? };
        let axis = match axis {
            1 => Axis::X,
            2 => Axis::Y,
            other => {
                return Err(Error::invalid(format!("axis {other} is not KILN_SEAMLESS_X (1) or KILN_SEAMLESS_Y (2)")))
            }
        };
        let score = seam_score(img, axis)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(score_out, score) };
        Ok(())
    })
}
