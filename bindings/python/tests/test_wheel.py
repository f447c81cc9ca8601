"""The wheel from build_wheel.py works on its own: installed offline into a fresh venv, run from an
empty folder with no KILN_LIBRARY and no source tree on the path, the example draws the same pixels
as from the source tree, with libkiln and ONNX Runtime loaded from inside the installed package."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import PIL
import PIL.Image

import kiln

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent


def run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout}{result.stderr}"
    return result  # type: ignore[no-any-return]


def test_wheel_installs_offline_and_runs_the_example(runtime: kiln.Runtime, root: Path, tmp_path: Path) -> None:
    lib = Path(os.environ["KILN_LIBRARY"])
    ort = Path(runtime.onnxruntime_path)
    dist = tmp_path / "dist"
    wheel = Path(run([sys.executable, str(PACKAGE / "build_wheel.py"), "--lib", str(lib), "--onnxruntime", str(ort),
                      "--out", str(dist)]).stdout.strip().splitlines()[-1])
    assert wheel.name.startswith("kiln-") and wheel.name.endswith(".whl") and "none-any" not in wheel.name

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    # This interpreter's pip installs into the venv (pip >= 22.3), which saves bootstrapping one there.
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps", "--quiet", str(wheel)])
    # numpy and Pillow come from this interpreter's site-packages (no network): a .pth file adds the
    # folders that hold them, after the venv's own site-packages, where the wheel put kiln.
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    deps = {str(Path(np.__file__).resolve().parents[1]), str(Path(PIL.__file__).resolve().parents[1])}
    (site / "kiln-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")

    clean = tmp_path / "clean"
    clean.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("KILN_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH", "ORT_DYLIB_PATH")}
    out = clean / "wheel.png"
    probe = run([str(python), "-c", "import kiln; r = kiln.Runtime(); print(kiln.__file__); print(kiln.library_path()); "
                 "print(r.onnxruntime_path)"], cwd=clean, env=env).stdout.splitlines()
    print("\n".join(probe))
    assert all(line.startswith(str(env_dir)) for line in probe), "kiln, libkiln and ONNX Runtime all from the wheel"

    example = clean / "txt2img.py"
    example.write_text((PACKAGE / "examples" / "txt2img.py").read_text())
    run([str(python), str(example), str(root / "models" / "kiln-tiny-textures"), "mossy stone brick wall", str(out)],
        cwd=clean, env=env)
    source_png = tmp_path / "source.png"
    with runtime.load_model(root / "models" / "kiln-tiny-textures") as m:
        m.generate("mossy stone brick wall", seed=42).save(source_png)
    assert np.array_equal(np.asarray(PIL.Image.open(out)), np.asarray(PIL.Image.open(source_png)))
