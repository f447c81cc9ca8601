"""``attention``: how the U-Net's (and ControlNets') attention layers run
(``kiln_model_load_options.attention``; ``kiln_model_info.fused_attention`` counts the U-Net's that run
as one fused ONNX Runtime ``MultiHeadAttention`` node). AUTO, the default, fuses them when the graphs
run on the CPU provider (this CPU runtime does not), EXPORTED runs the graphs as exported,
FUSED fuses whatever the providers. tiny-sd has 12 attention layers in its U-Net.

Fused and exported pictures differ by float rounding only: the check is at most 2 in any 8-bit
channel, and the measured maximum is printed. They are not compared byte for byte either way."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import kiln
from kiln import _abi, _library

#: tiny-sd's U-Net attention layers (self- and cross-attention of its transformer blocks).
TINY_SD_ATTENTION_LAYERS = 12


def _request(m: kiln.Model) -> "np.ndarray[Any, Any]":
    """The same 64x64, 4-step, seed-7 request's RGBA8 pixels from model ``m``."""
    with m.generate("weathered oak planks", width=64, height=64, steps=4, seed=7) as image:
        return image.to_numpy()


def test_the_structs_carry_attention() -> None:
    # kiln.h: attention and lora_slots (once reserved) follow quantization; the layout before attention is 24 bytes on
    # 64-bit targets (16 on 32-bit ones), kiln_model_info's before fused_attention 36.
    assert _abi.ModelLoadOptions.attention.offset == _abi.ModelLoadOptions.quantization.offset + 4
    assert _abi.ModelLoadOptions.lora_slots.offset == _abi.ModelLoadOptions.attention.offset + 4
    assert _abi.ModelInfo.fused_attention.offset == 36
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert (ctypes.sizeof(_abi.ModelLoadOptions), _abi.ModelLoadOptions.attention.offset) == (32, 20)
    o = _abi.ModelLoadOptions()
    _library.lib().kiln_model_load_options_init(ctypes.byref(o))
    assert (o.struct_size, o.attention, o.lora_slots) == (ctypes.sizeof(o), kiln.Attention.AUTO, 0)
    assert [(m.name, int(m)) for m in kiln.Attention] == [("AUTO", 0), ("EXPORTED", 1), ("FUSED", 2)]


def test_the_older_info_layout_leaves_fused_attention_alone(model: kiln.Model) -> None:
    i = _abi.ModelInfo()
    i.struct_size = _abi.ModelInfo.fused_attention.offset  # 36: the layout before the field
    i.fused_attention = 0xABCD
    assert _library.lib().kiln_model_get_info(model.handle, ctypes.byref(i)) == kiln.Status.OK
    assert (i.fused_attention, i.default_size) == (0xABCD, 64)


def test_auto_and_fused_fuse_exported_does_not(root: Path, runtime: kiln.Runtime, model: kiln.Model) -> None:
    tiny = root / "tests" / "fixtures" / "tiny-sd"
    assert model.info.fused_attention == TINY_SD_ATTENTION_LAYERS, "a default load fuses (AUTO, on the CPU provider)"
    assert model.info.quantization is kiln.Quantization.NONE
    # The names, the members and the ints reach the same field.
    for value in ("exported", "EXPORTED", "Exported", kiln.Attention.EXPORTED, 1):
        with runtime.load_model(tiny, attention=value) as exported:
            assert exported.info.fused_attention == 0, value
    for value in ("auto", kiln.Attention.AUTO, 0, "fused", kiln.Attention.FUSED, 2):
        with runtime.load_model(tiny, attention=value) as fused:
            assert fused.info.fused_attention == TINY_SD_ATTENTION_LAYERS, value
    # A job's load is load_model's.
    with runtime.submit_load_model(tiny, attention="exported") as job, job.model(120) as queued:
        assert queued.info.fused_attention == 0
    with runtime.submit_load_model(tiny, attention=kiln.Attention.FUSED) as job, job.model(120) as queued:
        assert queued.info.fused_attention == TINY_SD_ATTENTION_LAYERS


def test_fused_pictures_are_the_exported_ones_up_to_rounding(root: Path, runtime: kiln.Runtime,
                                                             model: kiln.Model) -> None:
    tiny = root / "tests" / "fixtures" / "tiny-sd"
    with runtime.load_model(tiny, attention="exported") as exported:
        plain = _request(exported)
    with runtime.load_model(tiny, attention="fused") as forced:
        forced_pixels = _request(forced)
    fused = _request(model)
    assert plain.shape == fused.shape == forced_pixels.shape == (64, 64, 4)
    worst = int(np.abs(plain.astype(np.int16) - fused.astype(np.int16)).max())
    forced_worst = int(np.abs(plain.astype(np.int16) - forced_pixels.astype(np.int16)).max())
    differing = int(np.count_nonzero(plain != fused))
    print(f"\nattention: exported vs fused (default load) max 8-bit difference {worst} (bound 2), "
          f"{differing} of {plain.size} bytes differ; exported vs FUSED max {forced_worst}")
    assert worst <= 2
    assert forced_worst <= 2


def test_an_unknown_attention_is_refused(root: Path, runtime: kiln.Runtime, model: kiln.Model) -> None:
    tiny = root / "tests" / "fixtures" / "tiny-sd"
    # An int goes to Kiln, which refuses it with its own status and message, at load and at submit.
    with pytest.raises(kiln.ArgumentError) as bad:
        runtime.load_model(tiny, attention=9)
    assert bad.value.status == kiln.Status.INVALID_ARGUMENT
    assert "options->attention 9" in bad.value.message, bad.value.message
    with pytest.raises(kiln.ArgumentError) as bad_job:
        runtime.submit_load_model(tiny, attention=3)  # the first value past FUSED; nothing queued
    assert bad_job.value.status == kiln.Status.INVALID_ARGUMENT
    assert "options->attention 3" in bad_job.value.message, bad_job.value.message
    # A name or an int that is no kiln_attention is refused the same way before Kiln is called.
    for value in ("flash", "", -1, 1 << 32):
        with pytest.raises(kiln.ArgumentError) as refused:
            runtime.load_model(tiny, attention=value)
        assert refused.value.status == kiln.Status.INVALID_ARGUMENT, value
        assert "attention" in refused.value.message, value
        assert isinstance(refused.value, ValueError)
    # An unknown name's message lists the names that are taken.
    with pytest.raises(kiln.ArgumentError) as unknown:
        runtime.submit_load_model(tiny, attention="sdpa")
    assert all(f"'{name}'" in unknown.value.message for name in ("sdpa", "auto", "exported", "fused")), \
        unknown.value.message
    assert model.info.fused_attention == TINY_SD_ATTENTION_LAYERS, "the loaded model is untouched"
