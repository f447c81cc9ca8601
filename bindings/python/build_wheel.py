"""Builds a wheel of the kiln package with a built libkiln inside (kiln/_native/), so it works
without the source tree:

    python bindings/python/build_wheel.py --lib target/release/libkiln.so --out dist/
    python bindings/python/build_wheel.py --lib target/release/libkiln.so \
        --onnxruntime path/to/libonnxruntime.so.1.31.1 --out dist/

With ``--onnxruntime`` the wheel also carries ONNX Runtime, which libkiln finds beside itself.
The package is copied to a scratch folder first, so the source tree is left as it was. Runs
``pip wheel --no-deps --no-build-isolation``: the running Python needs setuptools >= 61 and wheel
(no network is used). Prints the wheel's path.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def native_name() -> str:
    if sys.platform == "win32":
        return "kiln.dll"
    return "libkiln.dylib" if sys.platform == "darwin" else "libkiln.so"


def build(lib: Path, out: Path, onnxruntime: list[Path]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln-wheel-") as tmp:
        stage = Path(tmp) / "kiln"
        stage.mkdir()
        for name in ("pyproject.toml", "setup.py", "README.md"):
            shutil.copy2(HERE / name, stage / name)
        shutil.copytree(HERE / "src", stage / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        native = stage / "src" / "kiln" / "_native"
        shutil.copy2(lib, native / native_name())
        for ort in onnxruntime:
            shutil.copy2(ort, native / ort.name)
        before = set(out.glob("*.whl"))
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet", "-w", str(out), str(stage)],
            check=True,
        )
    made = sorted(set(out.glob("*.whl")) - before) or sorted(out.glob("kiln-*.whl"), key=lambda p: p.stat().st_mtime)[-1:]
    if not made:
        raise SystemExit("build_wheel.py: pip made no wheel")
    return made[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", type=Path, required=True, help="the built libkiln shared library")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the wheel into")
    parser.add_argument("--onnxruntime", type=Path, action="append", default=[],
                        help="an ONNX Runtime library file to bundle beside libkiln (repeatable)")
    args = parser.parse_args()
    if not args.lib.is_file():
        raise SystemExit(f"build_wheel.py: no library at {args.lib}")
    for ort in args.onnxruntime:
        if not ort.is_file():
            raise SystemExit(f"build_wheel.py: no ONNX Runtime library at {ort}")
    print(build(args.lib, args.out, args.onnxruntime))


if __name__ == "__main__":
    main()
