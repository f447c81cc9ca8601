//! LoRA adapters and textual-inversion embeddings in the C API: `kiln_lora`,
//! `kiln_embedding`, `kiln_model_with_loras`, `kiln_model_with_adapters` and
//! the queries that list what a model has merged in.
use std::ffi::c_char;

use super::boundary::{non_null, utf8_arg, write_string};
use super::handles;
use super::model::kiln_model;
use super::status::kiln_status;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Adapters, EmbeddingSpec, LoraSpec};

/// One LoRA file and its strength. Fill with `kiln_lora_init`, then set
/// `path`. Versioned: fields are only ever appended.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_lora {
    /// `sizeof(kiln_lora)`, set by `kiln_lora_init`.
    pub struct_size: u32,
    /// Multiplies the LoRA's delta: 1.0 = as trained (the default), 0 = off,
    /// negative = inverted. Must be finite.
    pub scale: f32,
    /// Path of the `.safetensors` file (kohya-ss or diffusers/PEFT LoRA, LyCORIS LoHa/LoKr/full),
    /// UTF-8, NUL-terminated; borrowed for the call only.
    pub path: *const c_char,
    /// Nonzero: the LoRA's text-encoder modules (both encoders on SDXL) are
    /// merged at `text_encoder_scale` and its U-Net modules at `scale`
    /// (ComfyUI's `strength_clip` and `strength_model`). 0 (the default):
    /// `scale` for every module.
    pub has_text_encoder_scale: u32,
    /// The text encoders' strength when `has_text_encoder_scale` is nonzero
    /// (0 = the LoRA leaves the text encoders as they are); must be finite then.
    pub text_encoder_scale: f32,
}

/// `kiln_lora` before `has_text_encoder_scale` (one strength for every module).
const LORA_V1: usize = layout_before!(kiln_lora, has_text_encoder_scale);

fn default_lora() -> kiln_lora {
    kiln_lora {
        struct_size: std::mem::size_of::<kiln_lora>() as u32,
        scale: 1.0,
        path: std::ptr::null(),
        has_text_encoder_scale: 0,
        text_encoder_scale: 1.0,
    }
}

/// Fills `lora` with defaults (scale 1.0 for every module, no path),
/// including `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_lora_init(lora: *mut kiln_lora) {
    boundary_void!({
        if !lora.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { lora.write(default_lora()) };
        }
    })
}

/// Reads `count` versioned structs laid out `array[0].struct_size` bytes
/// apart (`name` is the C argument, for messages). Every entry must state the
/// same size, one this library published: `older` (oldest first) or `T`'s own.
///
/// # Safety
/// `array` must point to `count` structs of the size their first field states.
pub(crate) unsafe fn versioned_array<T: Copy>(array: *const T, count: usize, defaults: T, older: &[usize], name: &str) -> Result<Vec<T>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    non_null(array, name)?;
    // SAFETY: non-null; every entry starts with its u32 struct_size. Entry 0's
    // size is checked against the published ones by `read_versioned` below
    // before anything past it is read; later entries are `stride` apart.
    let stride = unsafe { *(array as *const u32) } as usize;
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        // SAFETY: the caller passes `count` entries of `stride` bytes.
        let entry = unsafe { (array as *const u8).add(i * stride) } as *const T;
        // SAFETY: as above; the size is checked against the first entry's.
        let e = unsafe { super::boundary::read_versioned(entry, defaults, older, &format!("{name}[{i}]"))? };
        // SAFETY: `e` is a copy of a versioned struct, which starts with its u32 struct_size.
        let size = unsafe { *(&e as *const T as *const u32) } as usize;
        if size != stride {
            return Err(Error::new(
                ErrorKind::StructSizeMismatch,
                format!("`{name}[{i}].struct_size` is {size} but `{name}[0].struct_size` is {stride}"),
            ));
        }
        out.push(e);
    }
    Ok(out)
}

/// Reads the `count` entries of a `kiln_lora` array.
///
/// # Safety
/// As [`versioned_array`].
pub(super) unsafe fn specs_from(loras: *const kiln_lora, count: usize) -> Result<Vec<LoraSpec>> {
    // SAFETY: the caller's promise, passed on.
    let entries = unsafe { versioned_array(loras, count, default_lora(), &[LORA_V1], "loras")? };
    let mut out = Vec::with_capacity(count);
    for (i, l) in entries.into_iter().enumerate() {
        // SAFETY: NUL-terminated per the header.
        let path = unsafe { utf8_arg(l.path, &format!("loras[{i}].path"))? };
        if !l.scale.is_finite() {
            return Err(Error::invalid(format!("`loras[{i}].scale` is {}; it must be finite", l.scale)));
        }
        let text_encoder_scale = (l.has_text_encoder_scale != 0).then_some(l.text_encoder_scale);
        if let Some(t) = text_encoder_scale.filter(|t| !t.is_finite()) {
            return Err(Error::invalid(format!("`loras[{i}].text_encoder_scale` is {t}; it must be finite")));
        }
        out.push(LoraSpec { path: path.into(), scale: l.scale, text_encoder_scale });
    }
    Ok(out)
}

/// Makes a model handle whose weights are `model`'s original ones plus the
/// `count` LoRAs in `loras` (each delta times its scale, added together),
/// merged on the CPU when the sessions are created. The set replaces what
/// `model` has merged (a switch, not a stack); `count == 0` gives the plain
/// weights back. Only the graphs whose weights change (U-Net, text encoder)
/// get new sessions; the rest is shared. The new handle is freed with
/// `kiln_model_free`, independently of `model`; `model` is unchanged and
/// stays usable whatever happens. Seamless views (`kiln_model_seamless`) of
/// the new handle keep its LoRAs.
///
/// Entries are `loras[0].struct_size` bytes apart and all of that size.
/// Errors: NULL_ARGUMENT, STRUCT_SIZE_MISMATCH, INVALID_UTF8,
/// INVALID_ARGUMENT (a scale that is not finite), MODEL_NOT_FOUND (no such
/// file), MODEL_INVALID (not a readable safetensors LoRA, truncated),
/// UNSUPPORTED (norm adapters; a LyCORIS full `diff_b` for a bias the export
/// shares between layers, or without its `diff`), ADAPTER_MISMATCH (another
/// architecture, ranks that disagree, keys that match no layer: listed in the
/// message; a `diff_b` for a layer without a bias).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_with_loras(
    model: *const kiln_model,
    loras: *const kiln_lora,
    count: usize,
    model_out: *mut *mut kiln_model,
) -> kiln_status {
    boundary!({
        non_null(model_out, "model_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(model_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        // SAFETY: per the contract above.
        let specs = unsafe { specs_from(loras, count)? };
        let made = m.with_adapters(&Adapters { loras: specs, ..Default::default() })?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(model_out, handles::into_raw::<kiln_model>(made)) };
        Ok(())
    })
}

/// A textual-inversion embedding file and its prompt token. Fill with
/// `kiln_embedding_init`, then set `path`. Versioned: fields are only ever
/// appended.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct kiln_embedding {
    /// `sizeof(kiln_embedding)`, set by `kiln_embedding_init`.
    pub struct_size: u32,
    /// Path of the `.safetensors` file (AUTOMATIC1111 `emb_params` or
    /// diffusers `learned_embeds`), UTF-8, NUL-terminated; borrowed for the call.
    pub path: *const c_char,
    /// The word prompts use for it, UTF-8, no spaces; NULL = the file's own
    /// (diffusers: its tensor's name; AUTOMATIC1111: the file name without
    /// extension). Borrowed for the call.
    pub token: *const c_char,
}

const EMBEDDING_V1: usize = std::mem::size_of::<kiln_embedding>();

fn default_embedding() -> kiln_embedding {
    kiln_embedding { struct_size: EMBEDDING_V1 as u32, path: std::ptr::null(), token: std::ptr::null() }
}

/// Fills `embedding` with defaults (no path, the file's token), including
/// `struct_size`. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn kiln_embedding_init(embedding: *mut kiln_embedding) {
    boundary_void!({
        if !embedding.is_null() {
            // SAFETY: non-null; the caller passes a writable struct.
            unsafe { embedding.write(default_embedding()) };
        }
    })
}

/// Reads the `count` entries of a `kiln_embedding` array.
///
/// # Safety
/// As [`versioned_array`].
pub(super) unsafe fn embeddings_from(embeddings: *const kiln_embedding, count: usize) -> Result<Vec<EmbeddingSpec>> {
    // SAFETY: the caller's promise, passed on.
    let entries = unsafe { versioned_array(embeddings, count, default_embedding(), &[], "embeddings")? };
    let mut out = Vec::with_capacity(count);
    for (i, e) in entries.into_iter().enumerate() {
        // SAFETY: NUL-terminated per the header.
        let path = unsafe { utf8_arg(e.path, &format!("embeddings[{i}].path"))? };
        // SAFETY: NULL or NUL-terminated per the header.
        let token = unsafe { super::boundary::utf8_opt(e.token, &format!("embeddings[{i}].token"))? };
        out.push(EmbeddingSpec { path: path.into(), token: token.map(str::to_string) });
    }
    Ok(out)
}

/// As `kiln_model_with_loras`, with textual-inversion embeddings too: their
/// tokens are added to the prompt vocabulary and their vectors to the text
/// encoder's token embeddings (on SDXL, an embedding's `clip_l` vectors to
/// `text_encoder` and `clip_g` to `text_encoder_2`, each tokenizer learning the
/// token; a refiner-style export's one encoder, `text_encoder_2`, takes
/// `clip_g`). The set (LoRAs and embeddings) replaces what `model` has; both
/// counts 0 give the plain model back. Either array may be NULL when its count
/// is 0. Errors: as `kiln_model_with_loras`, and INVALID_ARGUMENT (a token
/// already in the vocabulary, or with spaces), UNSUPPORTED (a pickled `.pt`
/// file: convert it to .safetensors), ADAPTER_MISMATCH (an embedding of
/// another width, an SDXL embedding on an SD 1.x/2.x model or the reverse).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_with_adapters(
    model: *const kiln_model,
    loras: *const kiln_lora,
    lora_count: usize,
    embeddings: *const kiln_embedding,
    embedding_count: usize,
    model_out: *mut *mut kiln_model,
) -> kiln_status {
    boundary!({
        non_null(model_out, "model_out")?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(model_out, std::ptr::null_mut()) };
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        // SAFETY: per the contract above.
        let loras = unsafe { specs_from(loras, lora_count)? };
        // SAFETY: per the contract above.
        let embeddings = unsafe { embeddings_from(embeddings, embedding_count)? };
        let made = m.with_adapters(&Adapters { loras, embeddings, ..Default::default() })?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(model_out, handles::into_raw::<kiln_model>(made)) };
        Ok(())
    })
}

/// Writes how many LoRAs are merged into `model` (0 for a plain model) to
/// `*count_out`. Errors: NULL_ARGUMENT.
#[no_mangle]
pub unsafe extern "C" fn kiln_model_lora_count(model: *const kiln_model, count_out: *mut usize) -> kiln_status {
    boundary!({
        non_null(count_out, "count_out")?;
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        // SAFETY: checked non-null.
        unsafe { handles::write_out(count_out, m.adapters().loras.len()) };
        Ok(())
    })
}

/// LoRA `index` of a model's list, or INVALID_ARGUMENT naming the list's length.
fn lora_at(loras: &[LoraSpec], index: usize) -> Result<&LoraSpec> {
    loras.get(index).ok_or_else(|| Error::invalid(format!("LoRA index {index} is out of range: the model has {}", loras.len())))
}

/// Writes the strength LoRA `index` (0-based, below `kiln_model_lora_count`)
/// of `model` merges its text-encoder modules with to `*scale_out`: its
/// `text_encoder_scale` when it was given one, else its `scale`.
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (index out of range).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_lora_text_encoder_scale(model: *const kiln_model, index: usize, scale_out: *mut f32) -> kiln_status {
    boundary!({
        non_null(scale_out, "scale_out")?;
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        let loras = &m.adapters().loras;
        let l = lora_at(loras, index)?;
        // SAFETY: checked non-null.
        unsafe { handles::write_out(scale_out, l.scale_for(crate::model::lora::Component::TextEncoder)) };
        Ok(())
    })
}

/// Describes LoRA `index` (0-based, below `kiln_model_lora_count`) of
/// `model`: its scale to `*scale_out` (may be NULL) and its path into
/// `path_buf` with the string convention of `kiln_last_error_message`
/// (`path_buf` NULL = size query, `*path_len_out` = length without the NUL).
/// Errors: NULL_ARGUMENT, INVALID_ARGUMENT (index out of range),
/// BUFFER_TOO_SMALL (a truncated copy was written).
#[no_mangle]
pub unsafe extern "C" fn kiln_model_lora_get(
    model: *const kiln_model,
    index: usize,
    scale_out: *mut f32,
    path_buf: *mut c_char,
    path_buf_len: usize,
    path_len_out: *mut usize,
) -> kiln_status {
    boundary!({
        // SAFETY: NULL or a live handle.
        let m = unsafe { handles::borrow(model)? };
        let loras = &m.adapters().loras;
        let l = lora_at(loras, index)?;
        if !scale_out.is_null() {
            // SAFETY: non-null, writable per the contract.
            unsafe { handles::write_out(scale_out, l.scale) };
        }
        // SAFETY: forwarded caller contract.
        unsafe { write_string(&l.path.to_string_lossy(), path_buf, path_buf_len, path_len_out) }
    })
}
