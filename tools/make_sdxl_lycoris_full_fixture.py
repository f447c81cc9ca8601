#!/usr/bin/env python3
"""A LyCORIS full-difference file (`algo=full`: `.diff`, `.diff_b`) made by
LyCORIS for tests/fixtures/tiny-sdxl, in the kohya SDXL layout sd-scripts
writes, with a golden from LyCORIS's own merged weights.

What it makes (in OUT, default tests/fixtures/sdxl-lycoris-full/):
  chisel.full.safetensors   FullModules on the U-Net layers of
                            tools/make_sdxl_lora_fixture.py's UNET_TARGETS (attention,
                            feed-forward, proj_in/out, two resnet convs, a time-embedding
                            projection: MatMul + Add, Conv and Gemm layers, with `diff_b`),
                            named in SGM naming (`lora_unet_input_blocks_4_1_...`), and on
                            q/k/v/out_proj, fc1, fc2 of both text encoders (`lora_te1_`,
                            `lora_te2_`, `diff` only: the tiny encoders' biases are zero and
                            shared in the export, see tools/make_lycoris_full_fixture.py); f16
  cases.json, <case>.{latents,image,draws}.npy   goldens
  README.md

The modules, their seeded differences and reference weights are
tools/make_lycoris_full_fixture.py's (LyCORIS `make_weight(s)`: W + s·diff,
b + s·diff_b). The reference pipeline is the PyTorch tiny SDXL
(tools/make_sdxl_fixture.py, checked against the committed fixture) with those
weights, exported with optimum's main_export and run by
ORTStableDiffusionXLPipeline with every draw recorded (tools/make_sdxl_golden.py
run). Each case must move the final latents by 2e-2 against the plain model
and against the same file without its `diff_b`.

Usage (from the repo root):
    /work/venv/bin/python tools/make_sdxl_lycoris_full_fixture.py [--out tests/fixtures/sdxl-lycoris-full]
Needs the fixture venv (lycoris-lora included).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import adapter_golden  # noqa: E402
import make_lycoris_full_fixture as full_fixture  # noqa: E402
import make_sdxl_lycoris_fixture as sdxl_lycoris  # noqa: E402
from make_sdxl_lora_fixture import FIXTURE, build_torch_pipe, check_same_weights_as_fixture, export  # noqa: E402

FILE = "chisel.full.safetensors"
# name, kiln scheduler, steps, guidance, strength, extra pipeline kwargs
CASES = [
    ("full_euler", "euler", 6, 5.0, 1.0, {"negative_prompt": "blurry"}),
    ("full_ddim_s07", "ddim", 6, 6.0, 0.7, {"negative_prompt": "blurry", "prompt_2": "rusty metal plate"}),
]


def main() -> None:
    out = adapter_golden.output_folder(__doc__, REPO / "tests" / "fixtures" / "sdxl-lycoris-full")
    check_same_weights_as_fixture(build_torch_pipe())
    parts = sdxl_lycoris.kohya_sdxl_parts()
    full = full_fixture.make_full(out / FILE, build=build_torch_pipe, parts=parts, seed=61)

    cases = []
    with tempfile.TemporaryDirectory(prefix="kiln_sdxl_lycoris_full_") as tmp:
        tmp = Path(tmp)
        for name, kiln, steps, guidance, strength, kwargs in CASES:
            pipe = lambda with_bias: full_fixture.reference_pipe([(FILE, strength)], full, {}, with_bias, build_torch_pipe)  # noqa: E731
            ref_dir = export(pipe(True), tmp, name)
            controls = {"latent_effect": FIXTURE, "bias_effect": export(pipe(False), tmp, f"{name}_no_bias")}
            case = (name, kiln, steps, guidance, kwargs)
            cases.append(sdxl_lycoris.golden_case(out, case, ref_dir, controls, {"file": FILE, "scale": strength}))
    sdxl_lycoris.write_index(out, cases, "SDXL LyCORIS full-difference fixture (made by LyCORIS) and goldens",
                             "tools/make_sdxl_lycoris_full_fixture.py")


if __name__ == "__main__":
    main()
