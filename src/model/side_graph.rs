//! Graphs that sit beside a model or stand alone (matting graphs, upscalers):
//! the folder-or-file convention they share, their settings file, and their
//! one image input.
//!
//! A path names either a folder holding `model.onnx` and an optional
//! `config.json`, or an ONNX file whose settings, if any, are in the `.json`
//! of the same name beside it (`rmbg.onnx` → `rmbg.json`; a `config.json`
//! next to a bare file is not read, since exported repositories often keep
//! an unrelated one there).
use std::path::{Path, PathBuf};

use ort::value::TensorElementType;

use super::graph::{Graph, TensorSpec};
use crate::error::{Error, ErrorKind, Result};

/// The ONNX file of a path: `path/model.onnx` for a folder, else `path`.
pub(crate) fn graph_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("model.onnx")
    } else {
        path.to_path_buf()
    }
}

/// The settings file of a path: `path/config.json` for a folder, else the
/// file's name with `.json`.
pub(crate) fn settings_file(path: &Path) -> PathBuf {
    if path.is_dir() {
        path.join("config.json")
    } else {
        path.with_extension("json")
    }
}

/// [`graph_file`], or MODEL_NOT_FOUND naming `what` when it does not exist.
pub(crate) fn existing_graph_file(path: &Path, what: &str) -> Result<PathBuf> {
    let file = graph_file(path);
    if !file.is_file() {
        return Err(Error::new(ErrorKind::ModelNotFound, format!("{what} {} is missing", file.display())));
    }
    Ok(file)
}

/// The path's settings parsed by `parse`, or `None` when it has no settings
/// file. Errors: IO (unreadable), `parse`'s own with the file named.
pub(crate) fn read_settings<T>(path: &Path, parse: impl FnOnce(&str) -> Result<T>) -> Result<Option<T>> {
    let file = settings_file(path);
    if !file.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&file).map_err(|e| Error::new(ErrorKind::Io, format!("cannot read {}: {e}", file.display())))?;
    parse(&text).map(Some).map_err(|e| e.context(file.display()))
}

/// The graph's one input, a float `[1, 3, H, W]` image (batch and channels
/// may be symbolic). `kind` names the graph in the message ("a matting
/// graph"); `bad` words the MODEL_INVALID error.
pub(crate) fn image_input<'g>(graph: &'g Graph, kind: &str, bad: &dyn Fn(String) -> Error) -> Result<&'g TensorSpec> {
    let [input] = graph.inputs.as_slice() else {
        return Err(bad(format!("it takes {} inputs; {kind} takes one image", graph.inputs.len())));
    };
    if !matches!(input.ty, TensorElementType::Float32 | TensorElementType::Float16 | TensorElementType::Float64) {
        return Err(bad(format!("input `{}` is {:?}; expected float", input.name, input.ty)));
    }
    let s = &input.shape;
    if s.len() != 4 || !(s[0] == 1 || s[0] < 0) || !(s[1] == 3 || s[1] < 0) {
        return Err(bad(format!("input `{}` has shape {s:?}; expected [1, 3, H, W]", input.name)));
    }
    Ok(input)
}
