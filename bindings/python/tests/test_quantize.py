"""``quantization``: int8 weights at load (``kiln_model_load_options.quantization``, reported back in
``kiln_model_info.quantization``). The golden is tests/fixtures/golden/quantize
(tools/make_quantize_golden.py: optimum's pipeline on the folder ONNX Runtime's ``quantize_dynamic``
made of tiny-sd; tests/quantize.rs checks the same cases through Rust and C).

Dynamic int8 quantization rounds every activation to 8 bits at run time, so the float differences
that separate any two float pipelines flip roundings and the picture spreads: cases.json records how
far the reference's own image moves (mean |difference|) when its starting latents move by 1e-6.
The bound is twice that, as tests/quantize.rs' image check."""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kiln
from kiln import _abi, _library

QUANTIZE = "tests/fixtures/golden/quantize"


def _case(root: Path, name: str) -> dict[str, Any]:
    cases: list[dict[str, Any]] = json.loads((root / QUANTIZE / "cases.json").read_text())
    return next(c for c in cases if c["name"] == name)


def _options(case: dict[str, Any]) -> kiln.GenerateOptions:
    """The golden's request as generation keywords: only the seed, drawn with PyTorch's CPU
    generator (KILN_NOISE_GENERATOR_TORCH_CPU), as diffusers drew it."""
    return {"negative_prompt": case["negative_prompt"], "width": 64, "height": 64, "steps": case["steps"],
            "guidance_scale": case["guidance_scale"], "scheduler": case["kiln_scheduler"], "seed": case["seed"],
            "noise_generator": "torch"}


def _mean_diff(pixels: "np.ndarray[Any, Any]", want: "np.ndarray[Any, Any]") -> float:
    """Mean |8-bit RGB / 255 - the golden's float image|."""
    return float(np.abs(pixels[..., :3].astype(np.float64) / 255.0 - want).mean())


def test_the_golden_case_is_as_expected(root: Path) -> None:
    case = _case(root, "euler_cfg")
    assert (case["fixture"], case["kiln_scheduler"], case["steps"], case["guidance_scale"], case["seed"]) == \
        ("tiny-sd", "euler", 8, 7.5, 42)
    assert (case["prompt"], case["negative_prompt"], case["lora"]) == ("mossy stone brick wall", "blurry", None)


def test_the_structs_carry_quantization() -> None:
    # kiln.h: sizeof(kiln_model_load_options) 32 on 64-bit targets (24 before ``attention``),
    # sizeof(kiln_model_info) 44 (40 before ``lora_slots``, 36 before ``fused_attention``); test_attention.py
    # and test_lora_slots.py check those fields.
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert ctypes.sizeof(_abi.ModelLoadOptions) == 32
    assert ctypes.sizeof(_abi.ModelInfo) == 44
    o = _abi.ModelLoadOptions()
    _library.lib().kiln_model_load_options_init(ctypes.byref(o))
    assert o.quantization == kiln.Quantization.NONE, "default: as exported"


def test_int8_load_reports_it_and_draws_the_quantized_golden(root: Path, runtime: kiln.Runtime,
                                                             model: kiln.Model) -> None:
    assert model.info.quantization is kiln.Quantization.NONE, "a default load keeps the weights as exported"
    case = _case(root, "euler_cfg")
    want = np.load(root / QUANTIZE / f"{case['name']}.image.npy")  # (H, W, 3) float in [0, 1]
    tiny = root / "tests" / "fixtures" / "tiny-sd"
    with runtime.load_model(tiny, quantization=kiln.Quantization.INT8) as int8:
        info = int8.info
        assert info.quantization is kiln.Quantization.INT8
        assert (info.default_size, info.has_vae_encoder) == (64, True), "the rest of the info is unchanged"
        got = int8.generate(case["prompt"], **_options(case)).to_numpy()
        assert got.shape == want.shape[:2] + (4,)
        # A seamless view of the handle is quantized too.
        with int8.seamless(kiln.Seamless.XY) as view:
            assert view.info.quantization is kiln.Quantization.INT8
    mean = _mean_diff(got, want)
    bound = 2.0 * case["int8_jittered_1e-6"]["image_mean_abs"]
    plain = model.generate(case["prompt"], **_options(case)).to_numpy()
    print(f"\n{case['name']}, quantization=INT8: mean |8-bit image - the int8 reference's| = {mean:.3e} "
          f"(bound {bound:.3e}: twice the reference's own spread); the float model's image: {_mean_diff(plain, want):.3e}")
    assert mean <= bound
    assert not np.array_equal(got, plain), "int8 weights change the picture (else the option never reached Kiln)"

    # The names, and the int, reach the same field, and a job's load is load_model's.
    for value in ("int8", "INT8", "Int8", 1):
        with runtime.load_model(tiny, quantization=value) as again:
            assert again.info.quantization is kiln.Quantization.INT8, value
            assert np.array_equal(again.generate(case["prompt"], **_options(case)).to_numpy(), got), value
    with runtime.submit_load_model(tiny, quantization="int8") as job, job.model(120) as queued:
        assert queued.info.quantization is kiln.Quantization.INT8
        assert np.array_equal(queued.generate(case["prompt"], **_options(case)).to_numpy(), got)
    for value in ("none", kiln.Quantization.NONE, 0):
        with runtime.load_model(tiny, quantization=value) as as_exported:
            assert as_exported.info.quantization is kiln.Quantization.NONE, value


def test_an_unknown_quantization_is_refused(root: Path, runtime: kiln.Runtime) -> None:
    tiny = root / "tests" / "fixtures" / "tiny-sd"
    # An int goes to Kiln, which refuses it with its own status and message, at load and at submit.
    with pytest.raises(kiln.ArgumentError) as bad:
        runtime.load_model(tiny, quantization=7)
    assert bad.value.status == kiln.Status.INVALID_ARGUMENT
    assert "options->quantization 7" in bad.value.message, bad.value.message
    with pytest.raises(kiln.ArgumentError) as bad_job:
        runtime.submit_load_model(tiny, quantization=2)  # the first value past INT8; nothing queued
    assert bad_job.value.status == kiln.Status.INVALID_ARGUMENT
    assert "quantization 2" in bad_job.value.message, bad_job.value.message
    # A name or an int that is no kiln_quantization is refused the same way before Kiln is called.
    for value in ("int4", "", -1, 1 << 32):
        with pytest.raises(kiln.ArgumentError) as refused:
            runtime.load_model(tiny, quantization=value)
        assert refused.value.status == kiln.Status.INVALID_ARGUMENT, value
        assert "quantization" in refused.value.message, value
        assert isinstance(refused.value, ValueError)
    # An unknown name's message lists the names that are taken.
    with pytest.raises(kiln.ArgumentError) as unknown:
        runtime.submit_load_model(tiny, quantization="fp16")
    assert "'fp16'" in unknown.value.message and "'none'" in unknown.value.message \
        and "'int8'" in unknown.value.message, unknown.value.message
