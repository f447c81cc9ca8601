//! The bindings' drift guard and example contract.
//!
//! Drift guard: the ground truth is read from include/kiln.h itself (names and
//! types parsed from the header; sizes, offsets and enum values printed by a C
//! program compiled against it) and compared with what every
//! `bindings/<lang>/abi-manifest.sh` prints, one line per function, struct,
//! field and enum constant:
//!
//! ```text
//! fn kiln_model_load(ptr,ptr,ptr) -> u32
//! struct kiln_rect size 16
//! field kiln_rect.x 0 u32
//! enum KILN_STATUS_OK 0
//! ```
//!
//! A binding fails when a line disagrees with the header, names something the
//! header lacks, when it lists a struct without all its fields, or when it
//! omits a function, struct or enum constant not named (with a `# reason`) in
//! `bindings/<lang>/abi-omitted.txt`. A binding whose toolchain is missing is
//! skipped with a notice, or fails under `KILN_REQUIRE_TOOLS=1` (as `.ci/run`
//! sets it); `KILN_SKIP_BINDINGS` (a comma list) skips the bindings it names.
//!
//! Example contract: every `bindings/<lang>/run-example.sh MODEL_DIR PROMPT
//! OUT.png` must write the pixels examples/c/txt2img.c writes.
mod common;

use common::programs::{command, lib_path, read_png_rgba, run_limited, scratch, skipped, soname_dir, transcript};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// Manifest lines keyed by what they describe: `fn NAME`, `struct NAME`,
/// `field STRUCT.FIELD`, `enum CONSTANT`.
type Manifest = BTreeMap<String, String>;

/// The key of a manifest line, or None when it is not one.
fn key_of(line: &str) -> Option<String> {
    let mut words = line.split_whitespace();
    let kind = words.next()?;
    let rest = words.next()?;
    match kind {
        "fn" => Some(format!("fn {}", rest.split('(').next()?)),
        "struct" | "field" | "enum" => Some(format!("{kind} {rest}")),
        _ => None,
    }
}

/// A C type as the manifest names it.
fn vocab(c_type: &str, fnptr_types: &BTreeSet<String>, enum_types: &BTreeSet<String>) -> String {
    if c_type.contains('*') {
        return "ptr".into();
    }
    let bare: Vec<&str> = c_type.split_whitespace().filter(|w| *w != "const" && *w != "struct" && *w != "enum").collect();
    let bare = bare.join(" ");
    let known = match bare.as_str() {
        "void" => "void",
        "uint8_t" => "u8",
        "int8_t" => "i8",
        "uint16_t" => "u16",
        "int16_t" => "i16",
        "uint32_t" => "u32",
        "int32_t" => "i32",
        "uint64_t" => "u64",
        "int64_t" => "i64",
        "size_t" => "usize",
        "float" => "f32",
        "double" => "f64",
        _ if fnptr_types.contains(&bare) => "fnptr",
        // cbindgen's enums are uint32_t typedefs in C (and `enum X : uint32_t` in C++).
        _ if enum_types.contains(&bare) => "u32",
        _ => return format!("unknown:{bare}"),
    };
    known.into()
}

/// Splits `type name` (the name possibly starting with `*`s) into (type, name).
fn split_decl(decl: &str) -> (String, String) {
    let decl = decl.trim();
    let at = decl.rfind(|c: char| c.is_whitespace() || c == '*').map(|i| i + 1).unwrap_or(0);
    (decl[..at].trim().to_string(), decl[at..].trim().to_string())
}

fn strip_comments(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else {
            let c = rest.chars().next().unwrap();
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

/// What the header declares: functions, structs with their fields, enums.
struct Header {
    /// name -> (return type, parameter types), C spelling.
    functions: Vec<(String, String, Vec<String>)>,
    /// struct name -> fields (type, name).
    structs: Vec<(String, Vec<(String, String)>)>,
    /// enum type name -> constant names.
    enums: Vec<(String, Vec<String>)>,
    fnptr_types: BTreeSet<String>,
}

/// Each `KEYWORD NAME ... { BODY }` in `code`: (NAME, BODY). Declarations without a body
/// (opaque `typedef struct kiln_image kiln_image;`) are skipped.
fn blocks<'a>(code: &'a str, keyword: &str) -> Vec<(&'a str, &'a str)> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(keyword) {
        rest = &rest[at + keyword.len()..];
        let name_end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let name = &rest[..name_end];
        let head_end = rest.find(';').unwrap_or(rest.len());
        if let Some(open) = rest[..head_end].find('{') {
            let close = open + rest[open..].find('}').expect("a closing brace");
            found.push((name, &rest[open + 1..close]));
            rest = &rest[close..];
        }
    }
    found
}

fn parse_header(text: &str) -> Header {
    let code = strip_comments(text);
    // Preprocessor lines (include guard, the enums' `#if __cplusplus` underlying types) carry no API.
    let code: String = code.lines().filter(|l| !l.trim_start().starts_with('#')).map(|l| format!("{l}\n")).collect();
    let (decls, externs) = code.split_once("extern \"C\" {").expect("the header has an extern \"C\" block");
    let externs = externs.rsplit_once('}').expect("the extern \"C\" block closes").0;
    let structs = blocks(decls, "typedef struct ")
        .into_iter()
        .map(|(name, body)| (name.to_string(), body.split(';').filter(|f| !f.trim().is_empty()).map(split_decl).collect()))
        .collect();
    let enums = blocks(decls, "\nenum ")
        .into_iter()
        .map(|(name, body)| {
            let constants = body.split(',').map(|c| c.split('=').next().unwrap().trim()).filter(|c| !c.is_empty());
            (name.to_string(), constants.map(String::from).collect())
        })
        .collect();
    // `typedef void (*kiln_log_fn)(...);`
    let fnptr_types = decls
        .split(';')
        .filter(|d| d.trim_start().starts_with("typedef ") && d.contains("(*"))
        .map(|d| d.split("(*").nth(1).unwrap().split(')').next().unwrap().trim().to_string())
        .collect();
    let mut functions = Vec::new();
    for decl in externs.split(';') {
        let decl = decl.split_whitespace().collect::<Vec<_>>().join(" ");
        let Some((head, params)) = decl.split_once('(') else { continue };
        let (ret, name) = split_decl(head);
        let params = params.rsplit_once(')').expect("a parameter list closes").0.trim();
        let params = if params == "void" || params.is_empty() { vec![] } else { params.split(',').map(|p| split_decl(p).0).collect() };
        functions.push((name, ret, params));
    }
    Header { functions, structs, enums, fnptr_types }
}

/// The ground-truth manifest of a header: names and types from the text,
/// sizes, offsets and enum values from a C program compiled against it.
fn truth(header: &Path) -> Manifest {
    let h = parse_header(&std::fs::read_to_string(header).unwrap());
    assert!(!h.functions.is_empty() && !h.structs.is_empty() && !h.enums.is_empty(), "header parsed to nothing");
    let enum_types: BTreeSet<String> = h.enums.iter().map(|(n, _)| n.clone()).collect();
    let mut m = Manifest::new();
    for (name, ret, params) in &h.functions {
        let params: Vec<String> = params.iter().map(|p| vocab(p, &h.fnptr_types, &enum_types)).collect();
        m.insert(format!("fn {name}"), format!("fn {name}({}) -> {}", params.join(","), vocab(ret, &h.fnptr_types, &enum_types)));
    }
    let mut program = String::from("#include <stddef.h>\n#include <stdio.h>\n#include \"kiln.h\"\nint main(void) {\n");
    for (name, fields) in &h.structs {
        program += &format!("    printf(\"struct {name} size %zu\\n\", sizeof(struct {name}));\n");
        for (ty, field) in fields {
            let ty = vocab(ty, &h.fnptr_types, &enum_types);
            program += &format!("    printf(\"field {name}.{field} %zu {ty}\\n\", offsetof(struct {name}, {field}));\n");
        }
    }
    for (_, constants) in &h.enums {
        for c in constants {
            program += &format!("    printf(\"enum {c} %llu\\n\", (unsigned long long){c});\n");
        }
    }
    program += "    return 0;\n}\n";
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = scratch("abi-truth").join(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed).to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("truth.c"), program).unwrap();
    let out = command("cc")
        .args(["-std=c99", "-Wall", "-Werror", "-I"])
        .arg(header.parent().unwrap())
        .arg(dir.join("truth.c"))
        .arg("-o")
        .arg(dir.join("truth"))
        .output()
        .expect("cc runs");
    assert!(out.status.success(), "compiling the ground-truth program failed:\n{}", transcript(&out));
    let out = run_limited(&mut command(dir.join("truth")), 60);
    assert!(out.status.success(), "{}", transcript(&out));
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        m.insert(key_of(line).unwrap(), line.to_string());
    }
    assert!(!m.values().any(|l| l.contains("unknown:")), "a header type the guard cannot name: {:?}", m.values().filter(|l| l.contains("unknown:")).collect::<Vec<_>>());
    m
}

fn header_truth() -> &'static Manifest {
    static T: OnceLock<Manifest> = OnceLock::new();
    T.get_or_init(|| truth(&common::root().join("include/kiln.h")))
}

/// Every binding directory with an abi-manifest.sh (or run-example.sh), sorted.
fn bindings_with(script: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(common::root().join("bindings"))
        .expect("bindings/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join(script).is_file())
        .collect();
    found.sort();
    found
}

fn binding_name(dir: &Path) -> String {
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// What a binding's abi-manifest.sh prints (run once per test process).
fn binding_manifest(dir: &Path) -> Vec<String> {
    static CACHE: Mutex<BTreeMap<PathBuf, Vec<String>>> = Mutex::new(BTreeMap::new());
    if let Some(lines) = CACHE.lock().unwrap().get(dir) {
        return lines.clone();
    }
    let out = run_limited(command("bash").arg(dir.join("abi-manifest.sh")).env("KILN_LIBRARY", lib_path()), 600);
    assert!(
        out.status.success(),
        "{}/abi-manifest.sh failed (KILN_SKIP_BINDINGS={} skips it):\n{}",
        dir.display(),
        binding_name(dir),
        transcript(&out)
    );
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    CACHE.lock().unwrap().insert(dir.to_path_buf(), lines.clone());
    lines
}

/// `abi-omitted.txt`: name -> reason. A line without a reason is a problem.
fn omitted(dir: &Path, problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(dir.join("abi-omitted.txt")) else { return names };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (name, reason) = line.split_once('#').unwrap_or((line, ""));
        if reason.trim().is_empty() {
            problems.push(format!("abi-omitted.txt: `{line}` gives no `# reason`"));
        }
        names.insert(name.trim().to_string(), reason.trim().to_string());
    }
    names
}

/// Everything in which a binding's manifest disagrees with the header's.
fn compare(truth: &Manifest, lines: &[String], omitted: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut listed = Manifest::new();
    for line in lines {
        let normal = line.split_whitespace().collect::<Vec<_>>().join(" ");
        match key_of(&normal) {
            None => problems.push(format!("not a manifest line: `{line}`")),
            Some(key) => {
                if listed.insert(key.clone(), normal).is_some() {
                    problems.push(format!("listed twice: {key}"));
                }
            }
        }
    }
    for (key, line) in &listed {
        match truth.get(key) {
            None => problems.push(format!("binding has `{line}`, which kiln.h does not have")),
            Some(t) if t != line => problems.push(format!("{key}: binding says `{line}`, kiln.h says `{t}`")),
            Some(_) => {}
        }
    }
    for (key, t) in truth {
        if listed.contains_key(key) {
            continue;
        }
        let (kind, name) = key.split_once(' ').unwrap();
        if kind == "field" {
            let st = name.split('.').next().unwrap();
            if listed.contains_key(&format!("struct {st}")) {
                problems.push(format!("binding's struct {st} lacks `{t}`"));
            }
        } else if !omitted.contains_key(name) {
            problems.push(format!("binding omits `{t}` (bind it, or name it in abi-omitted.txt with a # reason)"));
        }
    }
    let names: BTreeSet<&str> = truth.keys().filter(|k| !k.starts_with("field ")).map(|k| k.split_once(' ').unwrap().1).collect();
    for name in omitted.keys() {
        if !names.contains(name.as_str()) {
            problems.push(format!("abi-omitted.txt names `{name}`, which kiln.h does not have"));
        } else if listed.keys().any(|k| k.split_once(' ').unwrap().1 == name) {
            problems.push(format!("abi-omitted.txt names `{name}`, which the binding lists"));
        }
    }
    problems
}

/// Problems of one binding against a header's truth.
fn check_binding(dir: &Path, truth: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    let omitted = omitted(dir, &mut problems);
    problems.extend(compare(truth, &binding_manifest(dir), &omitted));
    problems
}

#[test]
fn header_truth_covers_the_api() {
    let t = header_truth();
    assert_eq!(t["fn kiln_model_load"], "fn kiln_model_load(ptr,ptr,ptr) -> u32");
    assert_eq!(t["fn kiln_version"], "fn kiln_version() -> u32");
    assert_eq!(t["fn kiln_job_poll"], "fn kiln_job_poll(u64,ptr) -> u32");
    assert_eq!(t["field kiln_rect.x"], "field kiln_rect.x 0 u32");
    assert_eq!(t["field kiln_runtime_options.log_callback"].split(' ').nth(3), Some("fnptr"));
    assert_eq!(t["field kiln_generate_options.initial_noise_len"].split(' ').nth(3), Some("usize"));
    assert_eq!(t["enum KILN_STATUS_INTERNAL"], "enum KILN_STATUS_INTERNAL 900");
    let count = |kind: &str| t.keys().filter(|k| k.starts_with(kind)).count();
    println!("kiln.h: {} functions, {} structs, {} fields, {} enum constants", count("fn "), count("struct "), count("field "), count("enum "));
    let exports = std::fs::read_to_string(common::root().join("include/kiln.h")).unwrap().matches("\nkiln_status kiln_").count();
    assert!(count("fn ") > exports, "every function parsed ({} fn lines, {exports} returning kiln_status)", count("fn "));
}

#[test]
fn comparison_reports_each_kind_of_disagreement() {
    let truth: Manifest = [
        "fn kiln_a(ptr,u32) -> u32",
        "fn kiln_b() -> void",
        "struct kiln_s size 8",
        "field kiln_s.x 0 u32",
        "field kiln_s.y 4 u32",
        "enum KILN_E_ONE 1",
    ]
    .iter()
    .map(|l| (key_of(l).unwrap(), l.to_string()))
    .collect();
    let lines = |ls: &[&str]| ls.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let all = lines(&["fn kiln_a(ptr,u32) -> u32", "fn kiln_b() -> void", "struct kiln_s size 8", "field kiln_s.x 0 u32", "field kiln_s.y 4 u32", "enum KILN_E_ONE 1"]);
    assert!(compare(&truth, &all, &BTreeMap::new()).is_empty());
    let p = compare(&truth, &lines(&["fn kiln_a(ptr,u64) -> u32", "struct kiln_s size 8", "field kiln_s.x 0 u32", "enum KILN_E_ONE 2", "enum KILN_E_TWO 2", "bogus"]), &BTreeMap::new());
    let joined = p.join("\n");
    for expected in ["fn kiln_a: binding says", "omits `fn kiln_b() -> void`", "lacks `field kiln_s.y 4 u32`", "enum KILN_E_ONE: binding says", "`enum KILN_E_TWO 2`, which kiln.h does not have", "not a manifest line: `bogus`"] {
        assert!(joined.contains(expected), "expected `{expected}` in:\n{joined}");
    }
    let omit: BTreeMap<String, String> = [("kiln_b".to_string(), "not needed".to_string()), ("kiln_gone".to_string(), "x".to_string())].into();
    let p = compare(&truth, &all[..1].iter().chain(&all[2..]).cloned().collect::<Vec<_>>(), &omit);
    assert_eq!(p, vec!["abi-omitted.txt names `kiln_gone`, which kiln.h does not have".to_string()]);
}

#[test]
fn every_binding_matches_the_header() {
    let bindings = bindings_with("abi-manifest.sh");
    assert!(!bindings.is_empty(), "no bindings/*/abi-manifest.sh found");
    let mut report = Vec::new();
    for dir in &bindings {
        let name = binding_name(dir);
        if skipped(&name) {
            continue;
        }
        let problems = check_binding(dir, header_truth());
        println!("{name}: {} manifest lines, {} problems", binding_manifest(dir).len(), problems.len());
        report.extend(problems.into_iter().map(|p| format!("{name}: {p}")));
    }
    assert!(report.is_empty(), "bindings disagree with include/kiln.h:\n{}", report.join("\n"));
}

/// A scratch copy of include/kiln.h with `edit` applied.
fn edited_header(name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let original = std::fs::read_to_string(common::root().join("include/kiln.h")).unwrap();
    let edited = edit(&original);
    assert_ne!(edited, original, "the edit changed nothing");
    let dir = scratch("abi-edit").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("kiln.h"), edited).unwrap();
    dir.join("kiln.h")
}

#[test]
fn guard_reports_a_field_added_to_a_struct_for_every_binding() {
    // Append a field to every struct, as a header change the bindings did not follow.
    let header = edited_header("field", |h| {
        let mut out = String::new();
        for line in h.lines() {
            if line.starts_with("} kiln_") && line.ends_with(';') {
                out += "    uint32_t drift_probe;\n";
            }
            out += line;
            out.push('\n');
        }
        out
    });
    let edited = truth(&header);
    assert_eq!(edited["field kiln_job_progress.drift_probe"], "field kiln_job_progress.drift_probe 28 u32");
    for dir in bindings_with("abi-manifest.sh") {
        let name = binding_name(&dir);
        if skipped(&name) {
            continue;
        }
        let problems = check_binding(&dir, &edited);
        let structs: Vec<String> = binding_manifest(&dir).iter().filter_map(|l| l.strip_prefix("struct ")).map(|l| l.split(' ').next().unwrap().to_string()).collect();
        assert!(!structs.is_empty(), "{name} lists no struct");
        for st in &structs {
            assert!(
                problems.iter().any(|p| p.contains(&format!("struct {st} lacks `field {st}.drift_probe"))),
                "{name}: no report of the field added to {st}:\n{}",
                problems.join("\n")
            );
        }
        if structs.iter().any(|s| s == "kiln_job_progress") {
            assert!(problems.iter().any(|p| p.starts_with("struct kiln_job_progress: binding says `struct kiln_job_progress size 28`, kiln.h says `struct kiln_job_progress size 32`")), "{name}: {problems:?}");
        }
        println!("{name}: {} problems reported against the edited header, e.g. {}", problems.len(), problems[0]);
    }
}

#[test]
fn guard_reports_a_changed_signature_and_enum_value() {
    let header = edited_header("signature", |h| {
        h.replace("kiln_status kiln_job_cancel(uint64_t job);", "kiln_status kiln_job_cancel(uint64_t job, uint32_t reason);")
            .replace("KILN_JOB_STATE_CANCELLED = 4,", "KILN_JOB_STATE_CANCELLED = 40,")
    });
    let edited = truth(&header);
    assert_eq!(edited["fn kiln_job_cancel"], "fn kiln_job_cancel(u64,u32) -> u32");
    for dir in bindings_with("abi-manifest.sh") {
        let name = binding_name(&dir);
        if skipped(&name) {
            continue;
        }
        let lines = binding_manifest(&dir);
        let problems = check_binding(&dir, &edited).join("\n");
        if lines.iter().any(|l| l.starts_with("fn kiln_job_cancel(")) {
            assert!(problems.contains("fn kiln_job_cancel: binding says `fn kiln_job_cancel(u64) -> u32`"), "{name}:\n{problems}");
        }
        if lines.iter().any(|l| l.starts_with("enum KILN_JOB_STATE_CANCELLED ")) {
            assert!(problems.contains("enum KILN_JOB_STATE_CANCELLED: binding says"), "{name}:\n{problems}");
        }
    }
}

#[test]
fn every_binding_example_draws_the_c_examples_pixels() {
    let root = common::root();
    let lib = lib_path();
    let dir = scratch("example-contract");
    let c_bin = dir.join("txt2img-c");
    let out = command("cc")
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-I"])
        .arg(root.join("include"))
        .arg(root.join("examples/c/txt2img.c"))
        .arg("-o")
        .arg(&c_bin)
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", soname_dir().display()))
        .arg(format!("-Wl,-rpath,{}", lib.parent().unwrap().display()))
        .output()
        .expect("cc runs");
    assert!(out.status.success(), "{}", transcript(&out));
    let model = root.join("models/kiln-tiny-textures");
    let prompt = "mossy stone brick wall";
    let c_png = dir.join("c.png");
    let out = run_limited(command(&c_bin).arg(&model).arg(prompt).arg(&c_png), 300);
    assert!(out.status.success(), "the C example failed:\n{}", transcript(&out));
    let (cw, ch, c_pixels) = read_png_rgba(&c_png);

    let bindings = bindings_with("run-example.sh");
    assert!(!bindings.is_empty(), "no bindings/*/run-example.sh found");
    for binding in bindings {
        let name = binding_name(&binding);
        if skipped(&name) {
            continue;
        }
        let png = dir.join(format!("{name}.png"));
        let out = run_limited(
            command("bash").arg(binding.join("run-example.sh")).arg(&model).arg(prompt).arg(&png).env("KILN_LIBRARY", &lib),
            600,
        );
        assert!(out.status.success(), "{name}/run-example.sh failed:\n{}", transcript(&out));
        let (w, h, pixels) = read_png_rgba(&png);
        assert_eq!((w, h), (cw, ch), "{name}: size differs from the C example's");
        let differing = pixels.chunks_exact(4).zip(c_pixels.chunks_exact(4)).filter(|(a, b)| a != b).count();
        println!("{name}: {w}x{h}, {differing} of {} pixels differ from the C example's (bound: 0)", w * h);
        assert_eq!(differing, 0, "{name}: pixels differ from examples/c/txt2img.c");
    }
}
