#!/usr/bin/env python3
"""Release packages an engine can vendor.

    python3 tools/package.py --target x86_64-unknown-linux-gnu --out dist
    python3 tools/package.py --target x86_64-pc-windows-gnu --out dist

writes DIR/kiln-<version>-<triple>/ and its archive (.tar.gz; .zip for Windows):

    include/kiln.h                      (+ kiln.hpp when bindings/cpp/kiln.hpp exists)
    lib/libkiln.so.<major>, lib/libkiln.so -> it     (Linux; stripped)
    bin/kiln.dll, lib/libkiln.dll.a                  (Windows; stripped DLL, MinGW import library)
    lib/kiln.lib, lib/kiln.def                       (Windows; MSVC import library, and its exports)
    debug/<library>.debug               split debug info (objcopy --only-keep-debug)
    lib/ or bin/ ONNX Runtime           the pinned release, beside libkiln where Kiln looks
    bin/kiln-bake[.exe]                 the bake tool (stripped, no debug file; Linux: bin/ links to lib/'s ONNX Runtime)
    lib/pkgconfig/kiln.pc               relocatable (${pcfiledir})
    lib/cmake/Kiln/KilnConfig.cmake     imported target Kiln::kiln (+ KilnConfigVersion.cmake)
    share/kiln/models/kiln-tiny-textures   the default model
    licenses/                           Kiln, ONNX Runtime (from its wheel), Rust dependencies (cargo-license)
    bindings/...                        what the bindings folders provide, when present

It builds with cargo first (release profile, `--target` when cross-building). Needs
Python 3.11+, binutils for the target (objcopy), pip, cargo-license (installed with
`cargo install --locked cargo-license` when missing), and for Windows llvm-dlltool
(Debian: llvm), which writes the MSVC import library.
"""
import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tarfile
import tomllib
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORT_VERSION = "1.31.1"  # tools/fetch_onnxruntime.py's pin
CARGO_LICENSE_VERSION = "0.7.0"
MODEL = "kiln-tiny-textures"


def run(cmd, **kw):
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run(cmd, check=True, **kw)


def host_triple():
    out = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout
    return next(line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("host: "))


class Platform:
    """What differs per target triple."""

    def __init__(self, triple):
        self.triple = triple
        self.windows = "windows" in triple
        self.linux = "linux" in triple
        if not (self.windows or self.linux):
            sys.exit(f"package.py: {triple}: only Linux and Windows targets are packaged")
        arch = triple.split("-")[0]
        self.wheel = {
            ("x86_64", True): "win_amd64",
            ("x86_64", False): "manylinux_2_28_x86_64",
            ("aarch64", False): "manylinux_2_28_aarch64",
        }.get((arch, self.windows))
        if self.wheel is None:
            sys.exit(f"package.py: no ONNX Runtime wheel known for {triple}")
        prefixes = {"x86_64-pc-windows-gnu": "x86_64-w64-mingw32-", "aarch64-unknown-linux-gnu": "aarch64-linux-gnu-"}
        self.objcopy = prefixes.get(triple, "") + "objcopy"
        if triple.endswith("-msvc"):
            sys.exit("package.py: MSVC targets are not packaged here (no MSVC toolchain on the build machine)")


def build(plat, cross):
    # With an example in the build, dev-dependency features unify as in `cargo
    # test`, so the library is the very artifact the test suite built and ran
    # (and CI does not compile the whole tree a second time, ~17 minutes on two
    # cores). The unified features add nothing that links into the library:
    # Cargo.toml keeps the dev-dependencies on the normal graph's flate2 backend.
    cmd = ["cargo", "build", "--release", "--lib", "--example", "generate", "--bin", "kiln-bake"]
    if cross:
        cmd += ["--target", plat.triple]
    run(cmd, cwd=ROOT)
    return os.path.join(ROOT, "target", plat.triple if cross else "", "release")


def strip_split(plat, built, dest, debug_dir):
    """Copies `built` to `dest` without debug info, the debug info to debug_dir."""
    os.makedirs(debug_dir, exist_ok=True)
    debug = os.path.join(debug_dir, os.path.basename(dest) + ".debug")
    run([plat.objcopy, "--only-keep-debug", built, debug])
    run([plat.objcopy, "--strip-debug", "--strip-unneeded", f"--add-gnu-debuglink={debug}", built, dest])
    return debug


def dll_exports(path):
    """The names a PE DLL exports, read from its export directory."""
    with open(path, "rb") as f:
        data = f.read()
    pe = struct.unpack_from("<I", data, 0x3C)[0]
    if data[pe:pe + 4] != b"PE\0\0":
        sys.exit(f"package.py: {path} is not a PE file")
    coff = pe + 4
    nsections, = struct.unpack_from("<H", data, coff + 2)
    opt_size, = struct.unpack_from("<H", data, coff + 16)
    opt = coff + 20
    # The data directories follow the optional header's fixed part (PE32+: 112 bytes).
    magic, = struct.unpack_from("<H", data, opt)
    export_rva, = struct.unpack_from("<I", data, opt + (112 if magic == 0x20B else 96))
    # Each section header: virtual size, virtual address, raw size, raw offset at +8.
    sections = [struct.unpack_from("<IIII", data, opt + opt_size + 40 * i + 8) for i in range(nsections)]

    def offset(rva):
        for vsize, vaddr, rawsize, rawptr in sections:
            if vaddr <= rva < vaddr + max(vsize, rawsize):
                return rva - vaddr + rawptr
        sys.exit(f"package.py: {path}: address {rva:#x} is in no section")

    directory = offset(export_rva)
    count, names_rva = struct.unpack_from("<I", data, directory + 24)[0], struct.unpack_from("<I", data, directory + 32)[0]
    names = []
    for i in range(count):
        at = offset(struct.unpack_from("<I", data, offset(names_rva) + 4 * i)[0])
        names.append(data[at:data.index(b"\0", at)].decode("ascii"))
    return names


def msvc_import_library(dll, lib_dir):
    """lib/kiln.def (kiln.dll's exports) and lib/kiln.lib, the import library
    MSVC's link.exe (and lld-link) take, in the short import format lib.exe
    writes: MinGW's libkiln.dll.a is not what an MSVC toolchain expects."""
    # Debian's `llvm` links llvm-dlltool; a lone llvm-N package has only the versioned name.
    names = ["llvm-dlltool"] + [f"llvm-dlltool-{v}" for v in range(30, 13, -1)]
    dlltool = next(filter(None, map(shutil.which, names)), None)
    if dlltool is None:
        sys.exit("package.py: llvm-dlltool not found (Debian: apt-get install llvm); it writes lib/kiln.lib for MSVC")
    names = dll_exports(dll)
    if not names or any(not n.startswith("kiln_") for n in names):
        sys.exit(f"package.py: {dll} exports {len(names)} names, not only kiln_*: {names[:5]}")
    def_file = os.path.join(lib_dir, "kiln.def")
    with open(def_file, "w", newline="\r\n") as f:
        f.write("LIBRARY kiln.dll\nEXPORTS\n" + "".join(f"    {n}\n" for n in names))
    run([dlltool, "-m", "i386:x86-64", "-d", def_file, "-l", os.path.join(lib_dir, "kiln.lib")])
    return len(names)


def fetch_onnxruntime(plat, dest_dir, license_dir):
    tmp = os.path.join(ROOT, "target", "package-ort", plat.triple)
    out = run([sys.executable, os.path.join(ROOT, "tools", "fetch_onnxruntime.py"), "--dest", tmp,
               "--version", ORT_VERSION, "--platform", plat.wheel, "--license-dir", license_dir],
              capture_output=True, text=True).stdout
    lib = out.strip().splitlines()[-1]
    shutil.copy2(lib, os.path.join(dest_dir, os.path.basename(lib)))
    return os.path.basename(lib)


def rust_licenses(plat, dest_dir):
    """The Rust dependencies linked into the library for this target: cargo-license
    lists each crate's license expression and authors; each crate's own license
    files (from its published source) go beside it."""
    if shutil.which("cargo-license") is None:
        run(["cargo", "install", "--locked", "cargo-license", "--version", CARGO_LICENSE_VERSION])
    os.makedirs(dest_dir, exist_ok=True)
    listing = run(["cargo", "license", "--json", "--avoid-dev-deps", "--avoid-build-deps",
                   "--filter-platform", plat.triple, "--manifest-path", os.path.join(ROOT, "Cargo.toml")],
                  capture_output=True, text=True).stdout
    crates = [c for c in json.loads(listing) if c["name"] != "kiln"]
    # Every platform's packages: a MinGW kiln-bake links intel_tex_2's kernels
    # (build.rs) although the crate is no dependency on that target.
    meta = json.loads(run(["cargo", "metadata", "--format-version", "1", "--locked",
                           "--manifest-path", os.path.join(ROOT, "Cargo.toml")],
                          capture_output=True, text=True).stdout)
    if plat.windows and plat.triple.endswith("-gnu") and not any(c["name"] == "intel_tex_2" for c in crates):
        crates += [{"name": p["name"], "version": p["version"], "license": p.get("license"), "authors": p.get("authors")}
                   for p in meta["packages"] if p["name"] == "intel_tex_2"]
    with open(os.path.join(dest_dir, "dependencies.json"), "w") as f:
        json.dump(crates, f, indent=1)
    sources = {(p["name"], p["version"]): os.path.dirname(p["manifest_path"]) for p in meta["packages"]}
    missing = []
    lines = []
    for c in sorted(crates, key=lambda c: (c["name"], c["version"])):
        src = sources.get((c["name"], c["version"]))
        texts = [f for f in sorted(os.listdir(src)) if f.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE"))
                 and os.path.isfile(os.path.join(src, f))] if src else []
        if texts:
            crate_dir = os.path.join(dest_dir, f"{c['name']}-{c['version']}")
            os.makedirs(crate_dir, exist_ok=True)
            for t in texts:
                shutil.copy(os.path.join(src, t), os.path.join(crate_dir, t))
        else:
            missing.append(f"{c['name']} {c['version']}")
        lines.append(f"{c['name']} {c['version']}: {c.get('license') or 'unknown'}"
                     f"{'' if texts else ' (the crate ships no license file)'}")
    with open(os.path.join(dest_dir, "README.txt"), "w") as f:
        f.write("Rust crates linked into Kiln for this target, listed by cargo-license "
                "(dependencies.json), with the license files each crate publishes in its folder.\n\n")
        f.write("\n".join(lines) + "\n")
    print(f"package.py: {len(crates)} Rust dependencies, {len(missing)} without a license file: {missing}")


def kiln_license(dest_dir, spdx):
    files = [f for f in sorted(os.listdir(ROOT)) if f.upper().startswith(("LICENSE", "COPYING"))]
    for f in files:
        shutil.copy2(os.path.join(ROOT, f), os.path.join(dest_dir, f))
    if not files:
        # The repository has no license file yet: say what Cargo.toml declares.
        print("package.py: warning: no LICENSE file in the repository; writing the SPDX expression only",
              file=sys.stderr)
        with open(os.path.join(dest_dir, "LICENSE"), "w") as f:
            f.write(f"Kiln is licensed under {spdx} (SPDX expression from Cargo.toml).\n")


def bake_tool(plat, built, stage, ort_file):
    """kiln-bake, for build machines that should not need a Rust toolchain. It
    links Kiln statically and looks for ONNX Runtime beside itself, as libkiln
    does: on Windows that is bin/ already; on Linux a link in bin/ points at
    lib/'s copy, so the package holds one runtime."""
    exe = "kiln-bake.exe" if plat.windows else "kiln-bake"
    os.makedirs(os.path.join(stage, "bin"), exist_ok=True)
    dest = os.path.join(stage, "bin", exe)
    # No split debug info: it would be 77 MB (Linux) for a tool no engine links.
    run([plat.objcopy, "--strip-debug", "--strip-unneeded", os.path.join(built, exe), dest])
    if not plat.windows:
        os.symlink(os.path.join("..", "lib", ort_file), os.path.join(stage, "bin", ort_file))
    return dest


def pkg_config(version, plat):
    return f"""prefix=${{pcfiledir}}/../..
libdir=${{prefix}}/lib
includedir=${{prefix}}/include
bindir=${{prefix}}/bin

Name: kiln
Description: Stable Diffusion texture generation for game engines (C API)
Version: {version}
Cflags: -I${{includedir}}
Libs: -L${{libdir}} -lkiln
"""


def cmake_config(version, major, plat, ort_file):
    if plat.windows:
        # MSVC and clang-cl link lib.exe's format; MinGW its own.
        target = f"""    if(MSVC OR CMAKE_C_SIMULATE_ID STREQUAL "MSVC" OR CMAKE_CXX_SIMULATE_ID STREQUAL "MSVC")
        set(_kiln_implib "${{_kiln_prefix}}/lib/kiln.lib")
    else()
        set(_kiln_implib "${{_kiln_prefix}}/lib/libkiln.dll.a")
    endif()
    set_target_properties(Kiln::kiln PROPERTIES
        IMPORTED_LOCATION "${{_kiln_prefix}}/bin/kiln.dll"
        IMPORTED_IMPLIB "${{_kiln_implib}}"
        INTERFACE_INCLUDE_DIRECTORIES "${{_kiln_prefix}}/include")
    unset(_kiln_implib)"""
        ort = f"${{_kiln_prefix}}/bin/{ort_file}"
    else:
        target = f"""    set_target_properties(Kiln::kiln PROPERTIES
        IMPORTED_LOCATION "${{_kiln_prefix}}/lib/libkiln.so.{major}"
        IMPORTED_SONAME "libkiln.so.{major}"
        INTERFACE_INCLUDE_DIRECTORIES "${{_kiln_prefix}}/include")"""
        ort = f"${{_kiln_prefix}}/lib/{ort_file}"
    return f"""# Kiln {version} ({plat.triple}): find_package(Kiln CONFIG REQUIRED) gives the
# imported target Kiln::kiln. Kiln loads ONNX Runtime at run time from the folder
# holding the Kiln library; ship Kiln_RUNTIME_FILES beside your executable's copy
# of it. The package is relocatable: every path is relative to this file.
get_filename_component(_kiln_prefix "${{CMAKE_CURRENT_LIST_DIR}}/../../.." ABSOLUTE)
if(NOT TARGET Kiln::kiln)
    add_library(Kiln::kiln SHARED IMPORTED)
{target}
endif()
set(Kiln_VERSION "{version}")
set(Kiln_INCLUDE_DIR "${{_kiln_prefix}}/include")
set(Kiln_ONNXRUNTIME_LIBRARY "{ort}")
set(Kiln_RUNTIME_FILES "$<TARGET_FILE:Kiln::kiln>" "{ort}")
set(Kiln_DEFAULT_MODEL_DIR "${{_kiln_prefix}}/share/kiln/models/{MODEL}")
unset(_kiln_prefix)
"""


def cmake_version(version):
    major, minor, _ = version.split(".")
    # 0.x: a minor release may break the ABI, so 0.MINOR must match; from 1.0 on,
    # the major must match.
    same = "MINOR" if major == "0" else "MAJOR"
    return f"""# Kiln {version}: compatible with a request for the same {"0.MINOR" if same == "MINOR" else "MAJOR"} that is not newer.
set(PACKAGE_VERSION "{version}")
if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif(NOT PACKAGE_FIND_VERSION_MAJOR STREQUAL "{major}")
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
elseif("{same}" STREQUAL "MINOR" AND NOT PACKAGE_FIND_VERSION_MINOR STREQUAL "{minor}")
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
else()
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
    if(PACKAGE_FIND_VERSION STREQUAL PACKAGE_VERSION)
        set(PACKAGE_VERSION_EXACT TRUE)
    endif()
endif()
if(NOT CMAKE_SIZEOF_VOID_P STREQUAL "" AND NOT CMAKE_SIZEOF_VOID_P STREQUAL "8")
    set(PACKAGE_VERSION "${{PACKAGE_VERSION}} (64-bit)")
    set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
"""


def bindings(plat, stage, lib_files):
    """Whatever the bindings folders provide; none of it is required."""
    b = os.path.join(ROOT, "bindings")
    if not os.path.isdir(b):
        return
    out = os.path.join(stage, "bindings")
    hpp = os.path.join(b, "cpp", "kiln.hpp")
    if os.path.isfile(hpp):
        shutil.copy2(hpp, os.path.join(stage, "include", "kiln.hpp"))
    # The Unity package is bindings/csharp itself (package.json, Runtime/, Samples~/,
    # Plugins/); its tests, tools and build script stay behind. The native libraries go
    # where bindings/csharp/Plugins/README.md says, per platform.
    csharp = os.path.join(b, "csharp")
    if os.path.isfile(os.path.join(csharp, "package.json")):
        dest = os.path.join(out, "unity", "com.kiln.runtime")
        os.makedirs(dest, exist_ok=True)
        for item in ("package.json", "README.md", "Runtime", "Samples~", "Plugins"):
            src = os.path.join(csharp, item)
            if os.path.isdir(src):
                shutil.copytree(src, os.path.join(dest, item), dirs_exist_ok=True)
            elif os.path.isfile(src):
                shutil.copy2(src, dest)
        arch = "x86_64" if plat.triple.startswith("x86_64") else "arm64"
        folder = ("Windows", arch) if plat.windows else ("Linux", arch)
        plugins = os.path.join(dest, "Plugins", *folder)
        os.makedirs(plugins, exist_ok=True)
        for f in lib_files:
            shutil.copy2(f, plugins)
    lib, ort = lib_files[0], lib_files[1]
    optional = [
        ("godot", os.path.join(b, "godot", "build-addon.sh"), lambda s, d: ["bash", s, d]),
        ("python", os.path.join(b, "python", "build_wheel.py"),
         lambda s, d: [sys.executable, s, "--lib", lib, "--onnxruntime", ort, "--out", d]),
    ]
    for name, script, cmd in optional:
        # Both build for the machine they run on: Linux packages only.
        if os.path.isfile(script) and plat.linux:
            dest = os.path.join(out, name)
            os.makedirs(dest, exist_ok=True)
            try:
                run(cmd(script, dest), cwd=ROOT)
            except subprocess.CalledProcessError as e:
                print(f"package.py: warning: {script} failed ({e}); {name} is left out", file=sys.stderr)
                shutil.rmtree(dest, ignore_errors=True)


def archive(stage, windows):
    parent, name = os.path.split(stage)
    if windows:
        path = stage + ".zip"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, strict_timestamps=False) as z:
            for dirpath, _, files in os.walk(stage):
                for f in sorted(files):
                    full = os.path.join(dirpath, f)
                    z.write(full, os.path.relpath(full, parent))
    else:
        path = stage + ".tar.gz"
        with tarfile.open(path, "w:gz") as t:
            t.add(stage, arcname=name)
    return path


def size(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs
               if not os.path.islink(os.path.join(d, f)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    host = host_triple()
    ap.add_argument("--target", default=host, help=f"Rust target triple (default: {host})")
    ap.add_argument("--out", required=True, help="folder that receives the package and its archive")
    args = ap.parse_args()

    plat = Platform(args.target)
    with open(os.path.join(ROOT, "Cargo.toml"), "rb") as f:
        package = tomllib.load(f)["package"]
    version, major = package["version"], package["version"].split(".")[0]
    built = build(plat, cross=args.target != host)

    stage = os.path.join(os.path.abspath(args.out), f"kiln-{version}-{plat.triple}")
    shutil.rmtree(stage, ignore_errors=True)
    for d in ("include", "lib/pkgconfig", "lib/cmake/Kiln", "debug", "licenses/onnxruntime", "share/kiln/models"):
        os.makedirs(os.path.join(stage, d))
    shutil.copy2(os.path.join(ROOT, "include", "kiln.h"), os.path.join(stage, "include"))

    if plat.windows:
        os.makedirs(os.path.join(stage, "bin"), exist_ok=True)
        lib = os.path.join(stage, "bin", "kiln.dll")
        strip_split(plat, os.path.join(built, "kiln.dll"), lib, os.path.join(stage, "debug"))
        shutil.copy2(os.path.join(built, "libkiln.dll.a"), os.path.join(stage, "lib"))
        exports = msvc_import_library(lib, os.path.join(stage, "lib"))
        print(f"import libraries: lib/libkiln.dll.a (MinGW), lib/kiln.lib (MSVC, {exports} exports in lib/kiln.def)")
        runtime_dir = os.path.join(stage, "bin")
    else:
        lib = os.path.join(stage, "lib", f"libkiln.so.{major}")
        strip_split(plat, os.path.join(built, "libkiln.so"), lib, os.path.join(stage, "debug"))
        os.symlink(f"libkiln.so.{major}", os.path.join(stage, "lib", "libkiln.so"))
        runtime_dir = os.path.join(stage, "lib")
    ort_file = fetch_onnxruntime(plat, runtime_dir, os.path.join(stage, "licenses", "onnxruntime"))
    bake = bake_tool(plat, built, stage, ort_file)

    with open(os.path.join(stage, "lib", "pkgconfig", "kiln.pc"), "w") as f:
        f.write(pkg_config(version, plat))
    with open(os.path.join(stage, "lib", "cmake", "Kiln", "KilnConfig.cmake"), "w") as f:
        f.write(cmake_config(version, major, plat, ort_file))
    with open(os.path.join(stage, "lib", "cmake", "Kiln", "KilnConfigVersion.cmake"), "w") as f:
        f.write(cmake_version(version))

    shutil.copytree(os.path.join(ROOT, "models", MODEL), os.path.join(stage, "share", "kiln", "models", MODEL))
    os.makedirs(os.path.join(stage, "licenses", "kiln"))
    kiln_license(os.path.join(stage, "licenses", "kiln"), package.get("license", "unknown"))
    rust_licenses(plat, os.path.join(stage, "licenses", "rust"))
    bindings(plat, stage, [lib, os.path.join(runtime_dir, ort_file)])

    path = archive(stage, plat.windows)
    mb = 1e6
    print(f"package: {stage} ({size(stage) / mb:.1f} MB unpacked; library {size(lib) / mb:.1f} MB, "
          f"kiln-bake {size(bake) / mb:.1f} MB, debug info {size(os.path.join(stage, 'debug')) / mb:.1f} MB, ONNX Runtime "
          f"{size(os.path.join(runtime_dir, ort_file)) / mb:.1f} MB, model "
          f"{size(os.path.join(stage, 'share')) / mb:.1f} MB)")
    print(f"archive: {path} ({size(path) / mb:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
