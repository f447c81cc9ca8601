#!/usr/bin/env python3
"""Writes tests/fixtures/external-data-matting/: the fixed-size matting graph of
tests/fixtures/matting/fixed saved with its weights in an external data file
(model.onnx + model.onnx_data, every initializer external), for the fault
tests of missing or short external weights (tests/faults.rs). A few KB.
Run from the repository root: /work/venv/bin/python tools/make_external_data_matting_fixture.py
"""
import pathlib
import shutil

import onnx

ROOT = pathlib.Path(__file__).resolve().parent.parent
src = ROOT / "tests" / "fixtures" / "matting" / "fixed"
dst = ROOT / "tests" / "fixtures" / "external-data-matting"
dst.mkdir(parents=True, exist_ok=True)
model = onnx.load(src / "model.onnx")
onnx.save_model(model, dst / "model.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
                location="model.onnx_data", size_threshold=0)
shutil.copy(src / "config.json", dst / "config.json")
for f in sorted(dst.iterdir()):
    print(f.name, f.stat().st_size)
