//! The shared library's ELF face: it exports only `kiln_*` symbols (nothing of
//! Rust's std or the dependencies that could clash with an engine's own), and
//! its SONAME is `libkiln.so.<major>`. Linux only (binutils' nm and readelf).
#![cfg(target_os = "linux")]
use std::path::PathBuf;
use std::process::Command;

fn library() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let lib = deps.join("libkiln.so");
    assert!(lib.is_file(), "no libkiln.so in {}", deps.display());
    lib
}

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name).args(args).arg(library()).output().unwrap_or_else(|e| panic!("{name} runs: {e}"));
    assert!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn exports_only_kiln_symbols() {
    let listing = tool("nm", &["-D", "--defined-only"]);
    let names: Vec<&str> = listing.lines().filter_map(|l| l.split_whitespace().nth(2)).collect();
    let foreign: Vec<&&str> = names.iter().filter(|n| !n.starts_with("kiln_")).collect();
    println!("{} defined dynamic symbols, {} not kiln_*", names.len(), foreign.len());
    assert!(names.len() > 40, "expected the C API, got {names:?}");
    assert!(foreign.is_empty(), "exports outside kiln_*: {foreign:?}");
}

#[test]
fn soname_carries_the_major_version() {
    let dynamic = tool("readelf", &["-d"]);
    let want = format!("[libkiln.so.{}]", env!("CARGO_PKG_VERSION_MAJOR"));
    let line = dynamic.lines().find(|l| l.contains("(SONAME)")).unwrap_or("no SONAME");
    println!("{}", line.trim());
    assert!(line.contains(&want), "{line}");
}
