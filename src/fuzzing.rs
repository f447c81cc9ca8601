//! Entry points for the cargo-fuzz targets in `fuzz/` (issue 14): the parsers
//! and validators that take untrusted bytes but are private to the crate.
//! Hidden from the documentation and not part of Kiln's API; each function
//! runs the same code the library runs on that input, and returns its result
//! so a target can check properties of it.
use crate::error::{Error, ErrorKind, Result};
use crate::model::embedding::{Embedding, EmbeddingSpec};
use crate::model::lora::{add_bias, add_delta, sgm, GraphIndex, LoraFile, WeightLayout, WeightSlot};
use crate::ffi::model::kiln_generate_options;
use crate::ffi::postprocess::kiln_sprite_options;
use crate::ffi::runtime::kiln_runtime_options;
use crate::model::onnx_proto::{self, Message, TensorData};
use crate::pipeline::{InitImage, Mask};

/// `kiln_model_generate`'s validation of its options (everything before the
/// model is touched).
///
/// # Safety
/// As the header says for `kiln_generate_options`: NULL, or `struct_size`
/// readable bytes whose pointers are NULL or valid for their lengths.
pub unsafe fn generate_options(options: *const kiln_generate_options) -> Result<crate::GenerateRequest> {
    // SAFETY: forwarded contract.
    unsafe { crate::ffi::model::request_from(options) }
}

/// `kiln_runtime_create`'s validation of its options (everything before
/// ONNX Runtime is loaded).
///
/// # Safety
/// As [`generate_options`], for `kiln_runtime_options`.
pub unsafe fn runtime_options(options: *const kiln_runtime_options) -> Result<crate::RuntimeOptions> {
    // SAFETY: forwarded contract.
    unsafe { crate::ffi::runtime::runtime_options_from(options) }
}

/// The sprite calls' validation of `kiln_sprite_options`.
///
/// # Safety
/// As [`generate_options`], for `kiln_sprite_options`.
pub unsafe fn sprite_options(options: *const kiln_sprite_options) -> Result<()> {
    // SAFETY: forwarded contract.
    unsafe { crate::ffi::postprocess::read_sprite_options(options) }.map(|_| ())
}

/// What the pipeline makes of an img2img picture and an inpainting mask for
/// a `width` x `height` request with 8x latents: the `[1, 3, H, W]` tensor
/// (resized when sizes differ) and, with a mask, the binarized masks.
pub fn prepare_img2img(init: &InitImage, mask: Option<&Mask>, width: usize, height: usize) -> Result<()> {
    crate::pipeline::init_image_tensor(init, width, height)?;
    if let Some(mask) = mask {
        crate::pipeline::inpaint_mask(mask, init, width, height, 8, 4)?;
    }
    Ok(())
}

/// Kiln's protobuf reader on one buffer: the message parse, its lossless
/// re-serialization (returned, to compare with the input), the streaming
/// readers Kiln runs on every graph file at load, and the LoRA layer index
/// (weights and biases) built from a graph's summary.
pub fn onnx_reader(bytes: &[u8]) -> Result<Vec<u8>> {
    let _ = onnx_proto::declared_io(std::io::Cursor::new(bytes));
    if let Ok((nodes, initializers)) = onnx_proto::graph_summary(std::io::Cursor::new(bytes)) {
        let _ = GraphIndex::build(std::path::Path::new("fuzz.onnx"), &nodes, initializers);
    }
    Ok(Message::parse(bytes)?.to_bytes())
}

/// The LoRA-slot rewrite on a model file. When it adds slots, the result
/// parses, declares two factor inputs and a switch per slot in the layouts
/// the feeding code accepts (zero factors and an off switch are made for every one), and a second rewrite
/// adds none. Returns the number of slots added.
pub fn lora_slots(bytes: &[u8]) -> Result<usize> {
    use crate::model::lora::slots;
    let (Some(slotted), count) = slots::add_slots(bytes)? else { return Ok(0) };
    onnx_reader(&slotted).map_err(|e| Error::internal(format!("the slotted model does not parse: {}", e.message())))?;
    let (inputs, _) = onnx_proto::declared_io(std::io::Cursor::new(&slotted))?;
    let declared = inputs
        .iter()
        .filter(|i| slots::is_slot_input(&i.name))
        .map(|i| {
            use ort::value::TensorElementType as T;
            let ty = crate::model::graph::element_type(i.elem_type);
            if !matches!(ty, T::Float32 | T::Float16 | T::Bool) {
                return Err(Error::internal(format!("slot input `{}` declared with element type {}", i.name, i.elem_type)));
            }
            Ok(slots::SlotInput { name: i.name.clone(), ty, shape: i.dims.clone() })
        })
        .collect::<Result<Vec<_>>>()?;
    if declared.len() != 3 * count {
        return Err(Error::internal(format!("{count} slots added but {} slot inputs declared", declared.len())));
    }
    slots::feed_arrays("fuzz", &declared, &Default::default())
        .map_err(|e| Error::internal(format!("the rewrite's own slot inputs were refused: {}", e.message())))?;
    match slots::add_slots(&slotted)? {
        (None, 0) => Ok(count),
        (_, again) => Err(Error::internal(format!("a slotted model was slotted again ({again} slots)"))),
    }
}

/// A LoRA `.safetensors` file (LoRA, DoRA, LoHa or LoKr) as Kiln reads one, then what a merge does with
/// each module: SDXL's SGM names mapped for 1 to 3 layers per block, and the
/// delta added to a weight shaped as the module claims (in each layout an
/// export may store it), and refused by a weight one row bigger. Returns the
/// number of modules merged. An `INTERNAL` error means a merge disagreed
/// with the parser about a shape (a bug); any other error is the file's.
pub fn lora_file(bytes: &[u8]) -> Result<usize> {
    let file = LoraFile::parse(bytes)?;
    let mut merged = 0;
    for m in &file.modules {
        for layers_per_block in 1..=3 {
            let _ = sgm::to_diffusers(&m.key, layers_per_block);
        }
        let (out, inn) = (m.factors.out_features(), m.factors.in_features());
        // Big layers cost time, not coverage: the arithmetic is the same.
        if out.saturating_mul(inn) > 1 << 16 || m.factors.widest_rank() > 256 {
            continue;
        }
        let kernel = m.factors.kernel().map(<[usize]>::to_vec);
        let kernel_size: usize = kernel.as_ref().map_or(1, |k| k.iter().product());
        if kernel_size == 0 {
            continue;
        }
        let layouts: &[WeightLayout] = if kernel.is_some() { &[WeightLayout::OutIn] } else { &[WeightLayout::OutIn, WeightLayout::InOut] };
        for &layout in layouts {
            let (dims, out_axis) = match (&kernel, layout) {
                (Some(k), _) => ([vec![out, inn / kernel_size], k.clone()].concat(), 0),
                (None, WeightLayout::OutIn) => (vec![out, inn], 0),
                (None, WeightLayout::InOut) => (vec![inn, out], 1),
            };
            let slot = WeightSlot {
                initializer: "w".into(),
                layout,
                dims,
                data_type: 1,
                data: crate::model::onnx_proto::TensorData::Typed,
                users: vec![m.key.clone()],
            };
            let original = vec![1f32; out * inn];
            let mut weight = original.clone();
            match add_delta(&mut weight, &original, &slot, m, 1.0) {
                Ok(()) => {}
                // DoRA on a row or input channel whose merged norm is 0 or not finite: the file's values, refused.
                Err(e) if m.magnitude.is_some() && e.kind() == ErrorKind::AdapterMismatch && e.message().contains(" of the merged weight ") => {}
                Err(e) => {
                    return Err(Error::internal(format!("`{}`: a weight shaped as the LoRA claims refused its delta: {}", m.key, e.message())));
                }
            }
            let mut wrong = slot.clone();
            wrong.dims[out_axis] += 1;
            let bigger_original = vec![1f32; (out + 1) * inn];
            let mut bigger = bigger_original.clone();
            match add_delta(&mut bigger, &bigger_original, &wrong, m, 1.0) {
                Err(e) if e.kind() == ErrorKind::AdapterMismatch => {}
                other => {
                    return Err(Error::internal(format!("`{}`: a weight one row bigger was not refused: {other:?}", m.key)));
                }
            }
        }
        // A module LoRA slots can feed: its factors' product is the delta a
        // merge adds, so a fed and a merged switch change the layer alike.
        if let Some((down, up)) = crate::model::lora::slots::pair(m) {
            fed_matches_merged(m, &down, &up, out, inn, &kernel)?;
        }
        // A `diff_b` goes into a bias of the weight's outputs, and not into one of another length.
        for len in [out, out + 1] {
            let slot = WeightSlot { initializer: "b".into(), layout: WeightLayout::OutIn, dims: vec![len], data_type: 1, data: TensorData::Typed, users: vec![m.key.clone()] };
            match (add_bias(&mut vec![0f32; len], &slot, m, 1.0), len == out || m.bias.is_none()) {
                (Ok(()), true) => {}
                (Err(e), false) if e.kind() == ErrorKind::AdapterMismatch => {}
                (other, _) => return Err(Error::internal(format!("`{}`: a bias of {len} values for {out} outputs gave {other:?}", m.key))),
            }
        }
        merged += 1;
    }
    Ok(merged)
}

/// `up · down · alpha/rank` (what a LoRA slot is fed, before the strength)
/// against the delta a merge at strength 1 adds to a zero weight. They may
/// differ by rounding only: each entry within (rank + 2) float32 roundings
/// of the sum of its terms' magnitudes, plus what products too small for
/// float32 lose.
fn fed_matches_merged(m: &crate::model::lora::LoraModule, down: &ndarray::Array2<f32>, up: &ndarray::Array2<f32>, out: usize, inn: usize, kernel: &Option<Vec<usize>>) -> Result<()> {
    if up.nrows() != out || down.ncols() != inn || up.ncols() != down.nrows() {
        return Err(Error::internal(format!(
            "`{}`: slot factors {:?} and {:?} for a {out}x{inn} layer",
            m.key,
            up.dim(),
            down.dim()
        )));
    }
    let dims = match kernel {
        Some(k) => [vec![out, inn / k.iter().product::<usize>()], k.clone()].concat(),
        None => vec![out, inn],
    };
    let slot = WeightSlot { initializer: "w".into(), layout: WeightLayout::OutIn, dims, data_type: 1, data: TensorData::Typed, users: vec![m.key.clone()] };
    let zeros = vec![0f32; out * inn];
    let mut merged = zeros.clone();
    add_delta(&mut merged, &zeros, &slot, m, 1.0).map_err(|e| Error::internal(format!("`{}`: a slot-shaped module did not merge: {}", m.key, e.message())))?;
    let alpha = m.alpha_scale();
    let rank = up.ncols();
    for o in 0..out {
        for i in 0..inn {
            let (mut fed, mut magnitude) = (0f64, 0f64);
            for k in 0..rank {
                let term = f64::from(up[[o, k]]) * f64::from(down[[k, i]]) * f64::from(alpha);
                fed += term;
                magnitude += term.abs();
            }
            let got = f64::from(merged[o * inn + i]);
            if !(fed.is_finite() && got.is_finite() && magnitude.is_finite()) {
                continue;
            }
            // Relative roundings, plus products below float32's range (the merge
            // multiplies by alpha after the product, so each may lose 2^-149 · |alpha|).
            let underflow = (rank as f64 + 2.0) * 2f64.powi(-149) * f64::from(alpha.abs()).max(1.0);
            let bound = (rank as f64 + 2.0) * f64::from(f32::EPSILON) * magnitude + underflow;
            if (fed - got).abs() > bound {
                return Err(Error::internal(format!("`{}` [{o}, {i}]: fed factors give {fed:e}, the merge {got:e}", m.key)));
            }
        }
    }
    Ok(())
}

/// A textual-inversion `.safetensors` file as Kiln reads one for `token`
/// (`None`: the file's own), named `fuzz.safetensors`. Returns the number
/// of vectors; every vector of one encoder must have the same width.
pub fn embedding_file(bytes: &[u8], token: Option<&str>) -> Result<usize> {
    let spec = EmbeddingSpec { path: "fuzz.safetensors".into(), token: token.map(str::to_string) };
    let e = Embedding::parse(bytes, &spec)?;
    for rows in std::iter::once(&e.vectors).chain(e.vectors_2.as_ref()) {
        if rows.is_empty() || rows.iter().any(|r| r.is_empty() || r.len() != rows[0].len()) {
            return Err(Error::internal(format!("an embedding was read with rows of widths {:?}", rows.iter().map(Vec::len).collect::<Vec<_>>())));
        }
    }
    Ok(e.vectors.len())
}

#[cfg(test)]
mod tests {
    /// The `adapters` target's properties hold on every LoRA file the tests
    /// use (kohya, PEFT, LoCon, LoHa, LoKr, full, DoRA; SD 1.x and SDXL): a
    /// property that real files break would be a false alarm, not a find.
    #[test]
    fn the_lora_fixtures_keep_the_adapters_targets_properties() {
        let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures"));
        let mut files = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() && !p.ends_with("broken") {
                    dirs.push(p);
                } else if p.extension().is_some_and(|x| x == "safetensors") {
                    files.push(p);
                }
            }
        }
        let (mut lora_files, mut modules) = (0, 0);
        for f in &files {
            match super::lora_file(&std::fs::read(f).unwrap()) {
                Ok(n) => {
                    lora_files += 1;
                    modules += n;
                }
                Err(e) => assert_ne!(e.kind(), crate::ErrorKind::Internal, "{}: {}", f.display(), e.message()),
            }
        }
        eprintln!("{lora_files} LoRA files, {modules} modules checked");
        assert!(lora_files >= 20 && modules > 1000, "{lora_files} files, {modules} modules");
    }
}
