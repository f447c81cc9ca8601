//! Kiln for Godot 4: a GDExtension (built with gdext) whose `KilnGenerator`
//! node generates textures with Kiln's Rust API, polled once a frame so the
//! main thread never waits.
//!
//! The engine-independent parts are plain Rust with their own tests
//! (`cargo test` here needs no Godot): [`options`] (the options dictionary →
//! a Kiln request), [`tracker`] (a job's events, frame by frame), [`session`]
//! (model loading and job start off the main thread), [`loading`] (the
//! loads' progress, for the `loading` signal) and [`image_data`]
//! (RGBA8 → Godot image data). `generator` is the Godot node (`KilnGenerator`) over them.
#![warn(missing_docs)]

mod generator;
pub mod image_data;
pub mod loading;
pub mod options;
pub mod session;
pub mod tracker;

use godot::prelude::*;

/// The extension's entry point, `kiln_godot_init` in `kiln.gdextension`.
struct KilnExtension;

#[gdextension(entry_symbol = kiln_godot_init)]
unsafe impl ExtensionLibrary for KilnExtension {}
