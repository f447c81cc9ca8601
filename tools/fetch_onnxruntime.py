#!/usr/bin/env python3
"""Fetch the ONNX Runtime shared library from its PyPI wheel.

Kiln loads ONNX Runtime dynamically and never downloads it at run time. This
script is the project's one setup step for machines where the caller has not
pointed Kiln at a runtime: `build.rs` runs it (into OUT_DIR) and engines can run
it by hand to get the library they ship beside libkiln.

    python3 tools/fetch_onnxruntime.py --dest DIR [--package onnxruntime-gpu] [--version 1.31.1]
                                       [--platform win_amd64|manylinux_2_28_aarch64|...]

`--platform` takes another platform's wheel (cross-building; `build.rs` passes the
target's). Without it pip picks the wheel for this machine.

It uses only pip and the standard library. It prints the path of the extracted
library on its last line and exits 0, or prints why it failed and exits 1.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

DEFAULT_PACKAGE = "onnxruntime"
DEFAULT_VERSION = "1.31.1"


def library_pattern(platform):
    """The runtime library's file name prefix on `platform` (a wheel tag or sys.platform)."""
    if platform.startswith("win"):
        return ("onnxruntime.dll",)
    if platform.startswith(("darwin", "macosx")):
        return ("libonnxruntime.",)  # libonnxruntime.1.31.1.dylib
    return ("libonnxruntime.so",)


def wanted(member):
    """Keep the runtime and the provider libraries that ship with it."""
    if "/capi/" not in member:
        return False
    base = member.rsplit("/", 1)[-1]
    if "pybind" in base:
        return False
    if base.startswith("libonnxruntime") or base.startswith("onnxruntime") or base == "DirectML.dll":
        return base.endswith((".so", ".dll", ".dylib")) or ".so." in base
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", required=True, help="folder that receives the libraries")
    ap.add_argument("--package", default=DEFAULT_PACKAGE,
                    help="onnxruntime (CPU), onnxruntime-gpu (CUDA/TensorRT), onnxruntime-directml (Windows)")
    ap.add_argument("--version", default=DEFAULT_VERSION)
    ap.add_argument("--platform", help="wheel platform tag, e.g. win_amd64 (default: this machine)")
    ap.add_argument("--license-dir", help="also copy the wheel's LICENSE and ThirdPartyNotices here")
    args = ap.parse_args()
    if args.platform == "unknown":
        print("fetch_onnxruntime: no ONNX Runtime wheel is known for this target", file=sys.stderr)
        return 1

    dest = os.path.abspath(args.dest)
    stamp = os.path.join(dest, f".{args.package}-{args.version}-{args.platform or 'native'}")
    main_lib = None
    if os.path.exists(stamp):
        # The stamp names the library relative to `dest` (older stamps held an
        # absolute path: only its file name is used), so a copied or moved
        # target directory finds its own copy, not the one it was copied from.
        with open(stamp) as f:
            main_lib = os.path.join(dest, os.path.basename(f.read().strip()))
        if os.path.exists(main_lib) and not args.license_dir:
            print(main_lib)
            return 0

    os.makedirs(dest, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-d", tmp, f"{args.package}=={args.version}"]
        if args.platform:
            cmd += ["--platform", args.platform]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout + proc.stderr)
            print(f"fetch_onnxruntime: pip could not download {args.package}=={args.version}", file=sys.stderr)
            return 1
        wheels = glob.glob(os.path.join(tmp, "*.whl"))
        if not wheels:
            print("fetch_onnxruntime: pip produced no wheel", file=sys.stderr)
            return 1
        prefix = library_pattern(args.platform or sys.platform)
        main_lib = None
        with zipfile.ZipFile(wheels[0]) as wheel:
            if args.license_dir:
                os.makedirs(args.license_dir, exist_ok=True)
                for member in wheel.namelist():
                    base = member.rsplit("/", 1)[-1]
                    if base in ("LICENSE", "ThirdPartyNotices.txt") and member.count("/") <= 1:
                        with wheel.open(member) as src, open(os.path.join(args.license_dir, base), "wb") as out:
                            shutil.copyfileobj(src, out)
            for member in wheel.namelist():
                if not wanted(member):
                    continue
                base = member.rsplit("/", 1)[-1]
                target = os.path.join(dest, base)
                with wheel.open(member) as src, open(target + ".part", "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(target + ".part", target)
                if base.startswith(prefix) and "providers" not in base and main_lib is None:
                    main_lib = target
    if main_lib is None:
        print("fetch_onnxruntime: the wheel holds no ONNX Runtime library for this platform", file=sys.stderr)
        return 1
    with open(stamp, "w") as f:
        f.write(os.path.basename(main_lib))
    print(main_lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
