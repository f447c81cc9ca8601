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
    c
}

/// True when `KILN_SKIP_BINDINGS` (a comma list) names `binding`; prints why.
pub fn skipped(binding: &str) -> bool {
    let list = std::env::var("KILN_SKIP_BINDINGS").unwrap_or_default();
    let skip = list.split(',').any(|b| b.trim() == binding);
    if skip {
        eprintln!("binding {binding} skipped: KILN_SKIP_BINDINGS={list}");
    }
    skip
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
