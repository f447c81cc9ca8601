//! The committed C header is exactly what cbindgen generates from src/ffi, it
//! compiles cleanly as C99 and C++ (two translation units, one binary), its
//! version macros match Cargo.toml, and every export sits behind a panic
//! boundary. `KILN_BLESS=1 cargo test --test header header_is_fresh` rewrites the header.
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn version_macros() -> String {
    let (ma, mi, pa): (u32, u32, u32) = (
        env!("CARGO_PKG_VERSION_MAJOR").parse().unwrap(),
        env!("CARGO_PKG_VERSION_MINOR").parse().unwrap(),
        env!("CARGO_PKG_VERSION_PATCH").parse().unwrap(),
    );
    format!(
        "\n/* Version of this header; compare KILN_VERSION with kiln_version() at run time. */\n\
         #define KILN_VERSION_MAJOR {ma}\n#define KILN_VERSION_MINOR {mi}\n#define KILN_VERSION_PATCH {pa}\n\
         #define KILN_VERSION ((KILN_VERSION_MAJOR << 16) | (KILN_VERSION_MINOR << 8) | KILN_VERSION_PATCH)\n\
         #define KILN_VERSION_STRING \"{}\"\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn generate() -> String {
    let mut config = cbindgen::Config::from_file(root().join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(version_macros());
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root())
        .with_config(config)
        .generate()
        .expect("cbindgen generates")
        .write(&mut out);
    String::from_utf8(out).unwrap()
}

#[test]
fn header_is_fresh() {
    let generated = generate();
    let path = root().join("include/kiln.h");
    if std::env::var("KILN_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "include/kiln.h is stale: run `KILN_BLESS=1 cargo test --test header header_is_fresh` and commit it"
    );
}

fn compile(compiler: &str, args: &[&str], sources: &[(&str, &str)], out: &Path) {
    let dir = out.parent().unwrap();
    let mut cmd = Command::new(compiler);
    cmd.args(args).arg("-I").arg(root().join("include")).arg("-o").arg(out);
    for (name, text) in sources {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        cmd.arg(p);
    }
    let result = cmd.output().unwrap_or_else(|e| panic!("cannot run {compiler}: {e}"));
    assert!(result.status.success(), "{compiler} failed:\n{}", String::from_utf8_lossy(&result.stderr));
}

#[test]
fn header_compiles_as_c99_and_cpp_under_strict_warnings() {
    let dir = std::env::temp_dir().join(format!("kiln-header-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let strict = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"];
    let tu = "#include \"kiln.h\"\nint kiln_tu_a(void) { return (int)sizeof(kiln_generate_options) + KILN_STATUS_OK; }\n";
    let tu2 = "#include \"kiln.h\"\n#include \"kiln.h\"\nint kiln_tu_a(void);\nint main(void) { return kiln_tu_a() > 0 && KILN_VERSION > 0 ? 0 : 1; }\n";
    let mut c_args = vec!["-std=c99", "-c"];
    c_args.extend(strict);
    // Compile-only (no link) for C: two TUs each build alone, then link them together.
    let obj = dir.join("a.o");
    compile("cc", &c_args, &[("a.c", tu)], &obj);
    let mut link = vec!["-std=c99"];
    link.extend(strict);
    let mut cmd = Command::new("cc");
    cmd.args(&link).arg("-I").arg(root().join("include")).arg(&obj);
    std::fs::write(dir.join("b.c"), tu2).unwrap();
    cmd.arg(dir.join("b.c")).arg("-o").arg(dir.join("c_bin"));
    let r = cmd.output().unwrap();
    assert!(r.status.success(), "C link failed:\n{}", String::from_utf8_lossy(&r.stderr));
    assert!(Command::new(dir.join("c_bin")).status().unwrap().success());

    let mut cpp = vec!["-std=c++17"];
    cpp.extend(strict);
    let tu_cpp = tu.replace("int kiln_tu_a", "extern \"C\" int kiln_tu_a");
    let tu2_cpp = tu2.replace("int kiln_tu_a(void);", "extern \"C\" int kiln_tu_a(void);");
    compile("c++", &cpp, &[("a.cpp", &tu_cpp), ("b.cpp", &tu2_cpp)], &dir.join("cpp_bin"));
    assert!(Command::new(dir.join("cpp_bin")).status().unwrap().success());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn version_macros_match_the_library() {
    let header = std::fs::read_to_string(root().join("include/kiln.h")).unwrap();
    let v = env!("CARGO_PKG_VERSION");
    assert!(header.contains(&format!("#define KILN_VERSION_STRING \"{v}\"")));
    let expected = (env!("CARGO_PKG_VERSION_MAJOR").parse::<u32>().unwrap() << 16)
        | (env!("CARGO_PKG_VERSION_MINOR").parse::<u32>().unwrap() << 8)
        | env!("CARGO_PKG_VERSION_PATCH").parse::<u32>().unwrap();
    assert_eq!(kiln::ffi::version::kiln_version(), expected);
    let s = unsafe { std::ffi::CStr::from_ptr(kiln::ffi::version::kiln_version_string()) };
    assert_eq!(s.to_str().unwrap(), v);
}

/// Every `extern "C"` function in src/ffi must start its body with a boundary
/// macro, so no panic can unwind into the host.
#[test]
fn every_export_is_behind_a_panic_boundary() {
    let mut checked = 0;
    for entry in std::fs::read_dir(root().join("src/ffi")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("extern \"C\" fn ") {
            let after = &rest[i..];
            let name: String = after["extern \"C\" fn ".len()..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let body_start = after.find('{').expect("function body");
            let body = after[body_start + 1..].trim_start();
            assert!(
                body.starts_with("boundary!(") || body.starts_with("boundary_void!(") || body.starts_with("boundary_value!("),
                "{}: `{name}` does not start with a boundary macro",
                path.display()
            );
            assert!(after[..body_start].contains(&name), "parse error near {name}");
            let preceding = &rest[..i];
            assert!(
                preceding.trim_end().ends_with("pub unsafe") || preceding.trim_end().ends_with("pub"),
                "`{name}` must be pub"
            );
            assert!(preceding[preceding.len().saturating_sub(200)..].contains("#[no_mangle]"), "`{name}` lacks #[no_mangle]");
            checked += 1;
            rest = &after[body_start..];
        }
    }
    assert!(checked >= 15, "found only {checked} exports; the scan is broken");
}

/// Every object-like macro of the header expands to something a C and a C++
/// compiler accept (a `Provider_ALL` naming undeclared constants once slipped
/// in), and every name the header declares carries Kiln's prefix.
#[test]
fn every_macro_expands_and_every_name_is_prefixed() {
    let header = std::fs::read_to_string(root().join("include/kiln.h")).unwrap();
    let mut uses = String::new();
    let mut names = Vec::new();
    for line in header.lines() {
        let Some(rest) = line.strip_prefix("#define ") else { continue };
        let (name, value) = rest.split_once(' ').unwrap_or((rest, ""));
        names.push(name.to_string());
        if name == "KILN_H" || name.contains('(') {
            continue;
        }
        let i = names.len();
        let value = value.trim();
        uses += &if value.starts_with('{') {
            format!("    const unsigned int v{i}[] = {name};\n    sum += (long long)v{i}[0];\n")
        } else if value.starts_with('"') {
            format!("    const char *v{i} = {name};\n    sum += (long long)v{i}[0];\n")
        } else {
            format!("    sum += (long long)({name});\n")
        };
    }
    assert!(names.len() >= 6, "found only {names:?}: the scan is broken");
    let ident = |t: &str| t.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut declared = Vec::new();
    for line in header.lines().map(str::trim_start).filter(|l| !l.starts_with("//") && !l.starts_with('*')) {
        for word in ["enum ", "struct "] {
            for (i, _) in line.match_indices(word) {
                let before = line[..i].chars().last();
                if before.is_none_or(|c| !(c.is_alphanumeric() || c == '_')) {
                    declared.push((ident(&line[i + word.len()..]), line.to_string()));
                }
            }
        }
        if line.starts_with("typedef ") && !line.ends_with('{') {
            let name = match line.find("(*") {
                Some(i) => ident(&line[i + 2..]),
                None => line.trim_end_matches(';').rsplit(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("").to_string(),
            };
            declared.push((name, line.to_string()));
        }
    }
    assert!(declared.len() >= 20, "found only {} declarations: the scan is broken", declared.len());
    for (name, line) in &declared {
        assert!(name.starts_with("kiln_") || name.starts_with("KILN_"), "unprefixed name `{name}` in the header: {line}");
    }
    for name in &names {
        assert!(name.starts_with("KILN_"), "unprefixed macro {name}");
    }
    let program = format!("#include \"kiln.h\"\nint main(void) {{\n    long long sum = 0;\n{uses}    return sum > 0 ? 0 : 1;\n}}\n");
    let dir = std::env::temp_dir().join(format!("kiln-macros-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let strict = ["-Wall", "-Wextra", "-Wpedantic", "-Werror"];
    let mut c = vec!["-std=c99"];
    c.extend(strict);
    compile("cc", &c, &[("macros.c", &program)], &dir.join("macros_c"));
    assert!(Command::new(dir.join("macros_c")).status().unwrap().success());
    let mut cpp = vec!["-std=c++17"];
    cpp.extend(strict);
    compile("c++", &cpp, &[("macros.cpp", &program)], &dir.join("macros_cpp"));
    assert!(Command::new(dir.join("macros_cpp")).status().unwrap().success());
    std::fs::remove_dir_all(&dir).ok();
}

/// The boundary lint's second half: no export takes or returns a Rust reference
/// (`&T`, `&mut T`, `Option<&T>`) where a checked raw pointer belongs, none is
/// generic or takes Rust-only types, and every `kiln_*` symbol the built
/// library exports is one the scan above checked (so an export made another
/// way, e.g. by a macro, cannot slip past the panic-boundary check).
#[test]
fn exports_take_raw_pointers_and_the_scan_sees_every_symbol() {
    let mut scanned = Vec::new();
    for entry in std::fs::read_dir(root().join("src/ffi")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("extern \"C\" fn ") {
            let after = &rest[i + "extern \"C\" fn ".len()..];
            let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            let signature = &after[..after.find('{').expect("function body")];
            assert!(!signature.contains('&'), "{}: `{name}` takes a Rust reference: {signature}", path.display());
            let tokens: Vec<&str> = signature.split(|c: char| !(c.is_alphanumeric() || c == '_')).collect();
            for banned in ["str", "String", "Vec", "Box", "Arc", "impl", "dyn", "bool", "char"] {
                assert!(!tokens.contains(&banned), "{}: `{name}` has Rust-only `{banned}` in its signature: {signature}", path.display());
            }
            assert!(!signature.starts_with(&format!("{name}<")), "`{name}` is generic");
            scanned.push(name);
            rest = after;
        }
    }
    // The cdylib beside this test (target/<profile>/deps or target/<profile>).
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let lib = [deps.join("libkiln.so"), deps.parent().unwrap().join("libkiln.so")].into_iter().find(|p| p.exists());
    let Some(lib) = lib else {
        println!("no libkiln.so beside the test (not Linux?); symbol cross-check skipped");
        return;
    };
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(&lib).output().expect("nm runs (binutils)");
    assert!(out.status.success(), "nm failed: {}", String::from_utf8_lossy(&out.stderr));
    let symbols: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("kiln_"))
        .map(str::to_string)
        .collect();
    assert!(symbols.len() >= 40, "only {} kiln_ symbols in {}", symbols.len(), lib.display());
    let unscanned: Vec<&String> = symbols.iter().filter(|s| !scanned.contains(s)).collect();
    assert!(unscanned.is_empty(), "exported but not checked by the boundary scan: {unscanned:?}");
    println!("{} exports scanned, {} kiln_ symbols in {}", scanned.len(), symbols.len(), lib.display());
}
