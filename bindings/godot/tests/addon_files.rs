//! The addon's text files agree with the code they describe: the entry
//! symbol, the Godot API level, the ONNX Runtime version and the library
//! names build-addon.sh writes. A change to one side that forgets the other fails here.
use std::path::PathBuf;

fn read(rel: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `key = "value"` from an INI-style file (the first match).
fn value<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"'))
        .unwrap_or_else(|| panic!("no {key} in the file"))
}

#[test]
fn entry_symbol_matches_the_extension_macro() {
    let ext = read("addon/kiln.gdextension");
    let symbol = value(&ext, "entry_symbol");
    let lib = read("src/lib.rs");
    assert!(lib.contains(&format!("#[gdextension(entry_symbol = {symbol})]")), "src/lib.rs must export {symbol}");
}

#[test]
fn compatibility_minimum_is_the_api_level_built_against() {
    let ext = read("addon/kiln.gdextension");
    let minimum = value(&ext, "compatibility_minimum");
    let feature = format!("\"api-{}\"", minimum.replace('.', "-"));
    let manifest = read("Cargo.toml");
    assert!(manifest.contains(&feature), "Cargo.toml must build the godot crate with {feature} (compatibility_minimum {minimum})");
    let project = read("demo/project.godot");
    assert!(project.contains(&format!("PackedStringArray(\"{minimum}\")")), "the demo targets Godot {minimum}");
}

#[test]
fn shipped_onnxruntime_is_the_pinned_version() {
    let fetch = read("../../tools/fetch_onnxruntime.py");
    let version = value(&fetch, "DEFAULT_VERSION");
    let ext = read("addon/kiln.gdextension");
    let linux = format!("res://addons/kiln/bin/libonnxruntime.so.{version}");
    assert!(ext.contains(&linux), "[dependencies] must name {linux}");
    let script = read("build-addon.sh");
    assert!(script.contains(&format!("want=\"libonnxruntime.so.{version}\"")), "build-addon.sh must copy ONNX Runtime {version}");
}

#[test]
fn library_paths_are_what_build_addon_writes() {
    let ext = read("addon/kiln.gdextension");
    assert_eq!(value(&ext, "linux.release.x86_64"), "res://addons/kiln/bin/libkiln_godot.so");
    assert_eq!(value(&ext, "linux.debug.x86_64"), "res://addons/kiln/bin/libkiln_godot.so");
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("name = \"kiln_godot\""), "the cdylib is libkiln_godot.so");
    let script = read("build-addon.sh");
    assert!(script.contains("out=\"$(cd \"$1\" && pwd)/addons/kiln\""), "build-addon.sh writes OUT_DIR/addons/kiln");
}
