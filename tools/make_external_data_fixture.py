#!/usr/bin/env python3
"""The tiny fixture's U-Net and text encoder re-saved with external-data weights.

Large exports keep their weights outside `model.onnx` (protobuf's 2 GB limit):
optimum writes one `model.onnx_data` next to each graph
(`onnx.save(..., save_as_external_data=True, all_tensors_to_one_file=True,
location="model.onnx_data", size_threshold=100, convert_attribute=True)`, see
optimum/exporters/onnx/convert.py), and torch.onnx.export / `onnx.save(...,
all_tensors_to_one_file=False)` write one file per tensor. Kiln must load both
and merge LoRAs into them.

What it makes (OUT, default tests/fixtures/external-data/):
  unet/model.onnx            tiny-sd's U-Net, optimum's layout (data in model.onnx_data)
  text_encoder/model.onnx    tiny-sd's text encoder, one file per tensor
  data-files.json            how to rebuild every data file from the plain fixture
  README.md

The data files themselves are NOT committed (they are the plain fixture's 11 MB
of weights again). data-files.json lists, per data file, its length, its
FNV-1a 64 hash as onnx.save wrote it, and its pieces: (offset in the data file,
length, offset of the same bytes in tests/fixtures/tiny-sd/<part>/model.onnx).
tests/lora.rs rebuilds the files from those pieces and checks the
hash, so the test runs on exactly the bytes onnx.save wrote.

Checked here: ONNX Runtime (Python) gives bit-identical outputs for the plain
and the external-data graphs on a random input, and the graphs hold no raw
weights above the threshold.

Usage (from the repo root):
    /work/venv/bin/python tools/make_external_data_fixture.py [--out tests/fixtures/external-data]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

REPO = Path(__file__).resolve().parent.parent
PLAIN = REPO / "tests" / "fixtures" / "tiny-sd"


def fnv1a64(data: bytes) -> str:
    """FNV-1a 64 (what the Rust test computes); about 1 s per MB here."""
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def tensors_with_external_data(model: onnx.ModelProto):
    from onnx.external_data_helper import _get_all_tensors

    for t in _get_all_tensors(model):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            yield t


def save(part: str, out: Path, one_file: bool) -> list[dict]:
    """Re-saves PLAIN/part with external data in OUT/part; returns its data-file records."""
    src = PLAIN / part / "model.onnx"
    plain_bytes = src.read_bytes()
    model = onnx.load(str(src))
    dest = out / part
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    if one_file:
        # optimum's call, verbatim in its arguments.
        onnx.save(model, str(dest / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="model.onnx_data", convert_attribute=True, size_threshold=100)
    else:
        onnx.save(model, str(dest / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=False)
    saved = onnx.load(str(dest / "model.onnx"), load_external_data=False)
    files: dict[str, list[list[int]]] = {}
    for t in tensors_with_external_data(saved):
        info = {e.key: e.value for e in t.external_data}
        offset, length = int(info.get("offset", 0)), int(info["length"])
        raw = (dest / info["location"]).read_bytes()[offset:offset + length]
        at = plain_bytes.find(raw)
        if at < 0:
            raise SystemExit(f"{part}: {t.name}'s bytes are not in the plain graph")
        files.setdefault(info["location"], []).append([offset, length, at])
    records = []
    for name, pieces in sorted(files.items()):
        data = (dest / name).read_bytes()
        rebuilt = bytearray(len(data))
        for offset, length, at in pieces:
            rebuilt[offset:offset + length] = plain_bytes[at:at + length]
        if bytes(rebuilt) != data:
            raise SystemExit(f"{part}/{name}: the pieces do not rebuild the file")
        records.append({"file": name, "length": len(data), "fnv1a64": fnv1a64(data), "pieces": sorted(pieces)})
    check_same_outputs(src, dest / "model.onnx")
    print(f"{part}: graph {(dest / 'model.onnx').stat().st_size} bytes, {len(records)} data file(s), "
          f"{sum(r['length'] for r in records)} bytes of external data")
    return records


def check_same_outputs(plain: Path, external: Path) -> None:
    import onnxruntime as ort

    feeds = {}
    a = ort.InferenceSession(str(plain), providers=["CPUExecutionProvider"])
    b = ort.InferenceSession(str(external), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for i in a.get_inputs():
        shape = [d if isinstance(d, int) else (1 if n == 0 else 8) for n, d in enumerate(i.shape)]
        if "int" in i.type:
            feeds[i.name] = rng.integers(0, 1000, size=shape).astype(np.int64 if "int64" in i.type else np.int32)
        else:
            feeds[i.name] = rng.standard_normal(shape).astype(np.float32)
    for x, y in zip(a.run(None, feeds), b.run(None, feeds)):
        if not np.array_equal(x, y):
            raise SystemExit(f"{external}: outputs differ from the plain graph's")
    print(f"{external.parent.name}: ONNX Runtime gives bit-identical outputs for both files")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "external-data"))
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        manifest = {"unet": save("unet", work, one_file=True), "text_encoder": save("text_encoder", work, one_file=False)}
        for part in manifest:
            (out / part).mkdir(parents=True, exist_ok=True)
            shutil.copy(work / part / "model.onnx", out / part / "model.onnx")
    (out / "data-files.json").write_text(json.dumps(manifest, indent=1) + "\n")
    (out / "README.md").write_text(
        "# tiny-sd with external-data weights\n\n"
        "Made by `tools/make_external_data_fixture.py` (see its docstring) from `tests/fixtures/tiny-sd`:\n\n"
        "    /work/venv/bin/python tools/make_external_data_fixture.py\n\n"
        "- `unet/model.onnx`: optimum's layout, every tensor of 100 bytes or more in `model.onnx_data`.\n"
        "- `text_encoder/model.onnx`: one data file per tensor (`onnx.save(..., all_tensors_to_one_file=False)`).\n\n"
        "The data files are not committed: `data-files.json` says how to rebuild each from the plain\n"
        f"fixture's bytes, with the hash of what onnx {onnx.__version__} wrote; `tests/lora.rs` rebuilds them.\n"
    )


if __name__ == "__main__":
    main()
