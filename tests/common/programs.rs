//! Helpers for tests that build and run programs outside Rust: the freshly built
//! libkiln, a time-limited child process, the binding-skip list, PNG decoding.
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The shared library's file name on this platform.
pub fn lib_name() -> &'static str {
    if cfg!(target_os = "macos") {
        "libkiln.dylib"
    } else {
        "libkiln.so"
    }
}

/// The libkiln cargo built for this test run: target/<profile>/deps/ (beside the
/// test executable), or target/<profile>/ after a `cargo build`.
pub fn lib_path() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap().to_path_buf();
    let lib = if deps.join(lib_name()).exists() { deps.join(lib_name()) } else { deps.parent().unwrap().join(lib_name()) };
    assert!(lib.exists(), "libkiln shared library not found at {}", lib.display());
    lib
}

/// A folder holding `libkiln.so.<major>`, a link to [`lib_path`]. Programs
/// linked against libkiln ask the loader for that SONAME, which cargo does not
/// create; pass this folder in the rpath beside the library's own.
pub fn soname_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("soname");
        #[cfg(target_os = "linux")]
        {
            let link = dir.join(format!("libkiln.so.{}", env!("CARGO_PKG_VERSION_MAJOR")));
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(lib_path(), &link).unwrap();
        }
        dir
    })
    .clone()
}

/// A scratch folder for this test process.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A command whose library search cannot pick up a stale libkiln: cargo puts
/// target/<profile> on LD_LIBRARY_PATH, which outranks RUNPATH.
pub fn command(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env_remove("LD_LIBRARY_PATH").env_remove("DYLD_LIBRARY_PATH");
    // The Python binding's test packages, where python_ready() had to install them.
    let deps = python_deps_dir();
    if deps.is_dir() {
        let mut path = std::ffi::OsString::from(&deps);
        if let Some(old) = std::env::var_os("PYTHONPATH").filter(|p| !p.is_empty()) {
            path.push(":");
            path.push(old);
        }
        c.env("PYTHONPATH", path);
    }
    c
}

/// True when `binding`'s tests do not run here: `KILN_SKIP_BINDINGS` (a comma
/// list) names it, or a tool it needs is missing (see [`tools_present`]).
/// Installs the Python binding's test packages when the interpreter lacks them.
pub fn skipped(binding: &str) -> bool {
    let list = std::env::var("KILN_SKIP_BINDINGS").unwrap_or_default();
    if list.split(',').any(|b| b.trim() == binding) {
        announce_skip(&format!("binding {binding}"), &format!("KILN_SKIP_BINDINGS={list}"));
        return true;
    }
    match binding {
        "csharp" => !tools_present("binding csharp", &["mcs", "mono"], "apt-get install mono-mcs mono-runtime"),
        "cpp" => !tools_present("binding cpp", &["g++"], "apt-get install g++"),
        "python" => !python_ready(),
        _ => false,
    }
}

/// `.ci/run` sets `KILN_REQUIRE_TOOLS=1` once it has installed every tool the
/// suite uses, so that in CI a missing tool fails its tests instead of skipping them.
fn tools_required() -> bool {
    std::env::var("KILN_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// Tells the terminal that `what` did not run and why. Written to stderr
/// directly, past the test harness's capture, so a passing run still shows it.
pub fn announce_skip(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {what}: {why}");
}

/// True when every program in `tools` starts here. On a machine without one
/// (a fresh clone, a workstation) the test announces the skip with `install`,
/// the way to get it, and passes; under `KILN_REQUIRE_TOOLS=1` it fails.
pub fn tools_present(what: &str, tools: &[&str], install: &str) -> bool {
    let runs = |tool: &str| Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok();
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !runs(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("{} not found (`{install}`; .ci/run installs it)", missing.join(", "));
    assert!(!tools_required(), "{what}: {why}; with KILN_REQUIRE_TOOLS=1 a missing tool is a failure");
    announce_skip(what, &why);
    false
}

/// The interpreter the Python binding's tests run: `$KILN_PYTHON`, else python3.
pub fn python() -> String {
    std::env::var("KILN_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// What the Python binding and its tests import beyond the standard library.
const PYTHON_TEST_IMPORTS: &str = "import numpy, PIL, pytest, setuptools, wheel";
const PYTHON_TEST_PACKAGES: [&str; 5] = ["numpy", "pillow", "pytest", "setuptools", "wheel"];

/// target/python-test-deps: where the Python test packages go when the
/// interpreter lacks them; [`command`] puts it on PYTHONPATH.
fn python_deps_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap().join("python-test-deps")
}

/// True when the interpreter can import the Python binding's test packages,
/// installing them with pip into [`python_deps_dir`] first if it cannot (as
/// build.rs fetches ONNX Runtime), so the README's test command runs the
/// Python tests on a fresh machine too. Without pip or a registry the tests
/// are skipped as for a missing tool.
fn python_ready() -> bool {
    static READY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let ready = READY.get_or_init(|| {
        let py = python();
        let imports = || command(&py).args(["-c", PYTHON_TEST_IMPORTS]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
        if imports() {
            return Ok(());
        }
        // Installed beside, then renamed into place: a test process that
        // starts meanwhile never sees half a folder.
        let dir = python_deps_dir();
        let partial = dir.with_extension(format!("partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        let out = Command::new(&py)
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&partial)
            .args(PYTHON_TEST_PACKAGES)
            .output()
            .map_err(|e| format!("{py} does not start: {e}"))?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!("`{py} -m pip install {}` failed:\n{}", PYTHON_TEST_PACKAGES.join(" "), transcript(&out)));
        }
        let _ = std::fs::remove_dir_all(&dir);
        if std::fs::rename(&partial, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        if imports() {
            Ok(())
        } else {
            Err(format!("{py} cannot import the test packages installed in {}", dir.display()))
        }
    });
    match ready {
        Ok(()) => true,
        Err(why) => {
            assert!(!tools_required(), "binding python: {why}");
            announce_skip("binding python", why);
            false
        }
    }
}

/// Runs `cmd` to completion with its output captured, killing it after `secs`
/// so a hung program fails the test instead of hanging the suite.
pub fn run_limited(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    // Readers append as bytes arrive, so what the program wrote is here once it
    // has exited even if its pipes never close: under Wine a helper process
    // the program started (explorer.exe /desktop) can inherit and hold them.
    fn reader(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&buf);
        let handle = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n) = pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        (buf, handle)
    }
    let (out, out_reader) = reader(child.stdout.take().unwrap());
    let (err, err_reader) = reader(child.stderr.take().unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{:?} did not finish within {secs} s", cmd.get_program());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    // The program has exited: give the readers a moment to drain the pipes,
    // then take what they have (a reader still blocked is left behind).
    let grace = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !(out_reader.is_finished() && err_reader.is_finished()) && std::time::Instant::now() < grace {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let take = |b: &Arc<Mutex<Vec<u8>>>| std::mem::take(&mut *b.lock().unwrap());
    Output { status, stdout: take(&out), stderr: take(&err) }
}

/// stdout and stderr of a finished program, for failure messages.
pub fn transcript(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// A PNG decoded to 8-bit RGBA: (width, height, pixels).
pub fn read_png_rgba(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = png::Decoder::new(std::io::BufReader::new(file));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let frame = reader.next_frame(&mut buf).unwrap();
    buf.truncate(frame.buffer_size());
    let rgba = match frame.color_type {
        png::ColorType::Rgba => buf,
        png::ColorType::Rgb => buf.chunks_exact(3).flat_map(|p| [p[0], p[1], p[2], 255]).collect(),
        png::ColorType::GrayscaleAlpha => buf.chunks_exact(2).flat_map(|p| [p[0], p[0], p[0], p[1]]).collect(),
        png::ColorType::Grayscale => buf.iter().flat_map(|&g| [g, g, g, 255]).collect(),
        png::ColorType::Indexed => unreachable!("EXPAND turns palettes into RGB(A)"),
    };
    (frame.width, frame.height, rgba)
}
