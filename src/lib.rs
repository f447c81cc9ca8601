//! Kiln: an embeddable runtime that generates game textures with Stable Diffusion.
//!
//! Kiln loads a Stable Diffusion model exported to ONNX in the diffusers/optimum
//! layout and runs it through ONNX Runtime. The C ABI in [`ffi`] (mirrored by
//! `include/kiln.h`) is the product; the Rust API below is what it is built on and
//! is usable directly from Rust.
//!
//! Data flows one way: `ffi` → `pipeline` → (`scheduler`, `tokenizer`, `model`,
//! `runtime`) → `image`.
//!
//! ```no_run
//! use kiln::{Runtime, RuntimeOptions, Model, GenerateRequest};
//! let runtime = Runtime::new(&RuntimeOptions::default())?;
//! let model = Model::load(&runtime, "models/kiln-tiny-textures".as_ref())?;
//! let image = model.generate(&GenerateRequest { prompt: "mossy stone brick wall".into(), ..Default::default() })?;
//! image.to_rgba8().save_png("brick.png".as_ref())?;
//! # Ok::<(), kiln::Error>(())
//! ```
#![warn(missing_docs)]

pub mod error;
pub mod ffi;
#[doc(hidden)]
pub mod fuzzing;
pub mod image;
pub mod jobs;
pub mod model;
pub mod pipeline;
pub mod runtime;
pub mod scheduler;
pub mod tokenizer;

pub use error::{Error, ErrorKind, Result};
pub use image::{FloatImage, Rgba8Image};
pub use model::{Model, ModelOptions};
pub use pipeline::{GenerateRequest, InitialNoise, XlConditioning};
pub use runtime::{Runtime, RuntimeOptions};
pub use scheduler::SchedulerKind;

/// Kiln's version as written in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
