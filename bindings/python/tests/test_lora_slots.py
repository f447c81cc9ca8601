"""``lora_slots``: a LoRA slot beside every adaptable layer of the U-Net and text encoders
(``kiln_model_load_options.lora_slots``; ``kiln_model_info.lora_slots`` counts the U-Net's slotted
layers), so that ``Model.with_loras`` feeds plain low-rank LoRAs at run time instead of merging them.
tiny-sd has 121 slotted U-Net layers.

A slotted model's plain pictures, and those of its empty LoRA set, are the unslotted model's bit for
bit. A fed LoRA's pictures are the merged LoRA's to float rounding: the check is at most 2 in any 8-bit
channel, and the measured maximum is printed."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import kiln
from kiln import _abi, _library
from kiln.errors import check
from kiln.job import submit

#: tiny-sd's U-Net layers with a LoRA slot when loaded with ``lora_slots=True``.
TINY_SD_SLOTTED_LAYERS = 121


def _request(m: kiln.Model) -> "np.ndarray[Any, Any]":
    """The same 64x64, 4-step, seed-11 request's RGBA8 pixels from model ``m``."""
    with m.generate("mossy stone brick wall", width=64, height=64, steps=4, seed=11) as image:
        return image.to_numpy()


def _tiny(root: Path) -> Path:
    return root / "tests" / "fixtures" / "tiny-sd"


def _style(root: Path) -> Path:
    return root / "tests" / "fixtures" / "lora" / "style.kohya.safetensors"


@pytest.fixture(scope="module")
def slotted(root: Path, runtime: kiln.Runtime) -> Iterator[kiln.Model]:
    """tiny-sd loaded with LoRA slots."""
    with runtime.load_model(_tiny(root), lora_slots=True) as m:
        yield m


def test_the_structs_carry_lora_slots() -> None:
    # kiln.h: lora_slots takes the place of reserved (after attention), so the options stay 32 bytes on
    # 64-bit targets; kiln_model_info's lora_slots follows fused_attention (44 bytes, 40 before it).
    assert _abi.ModelLoadOptions.lora_slots.offset == _abi.ModelLoadOptions.attention.offset + 4
    assert _abi.ModelInfo.lora_slots.offset == 40
    assert ctypes.sizeof(_abi.ModelInfo) == 44
    if ctypes.sizeof(ctypes.c_void_p) == 8:
        assert ctypes.sizeof(_abi.ModelLoadOptions) == 32
    o = _abi.ModelLoadOptions()
    _library.lib().kiln_model_load_options_init(ctypes.byref(o))
    assert (o.struct_size, o.lora_slots) == (ctypes.sizeof(o), 0), "default: no slots"


def test_the_older_info_layout_leaves_lora_slots_alone(model: kiln.Model) -> None:
    i = _abi.ModelInfo()
    i.struct_size = _abi.ModelInfo.lora_slots.offset  # 40: the layout before the field
    i.lora_slots = 0xABCD
    assert _library.lib().kiln_model_get_info(model.handle, ctypes.byref(i)) == kiln.Status.OK
    assert (i.lora_slots, i.default_size, i.fused_attention) == (0xABCD, 64, model.info.fused_attention)


def test_a_default_load_has_no_slots_and_a_slotted_one_counts_them(root: Path, runtime: kiln.Runtime,
                                                                   model: kiln.Model, slotted: kiln.Model) -> None:
    assert model.info.lora_slots == 0
    with runtime.load_model(_tiny(root), lora_slots=False) as plain:
        assert plain.info.lora_slots == 0
    print(f"\nlora_slots: {slotted.info.lora_slots} U-Net layers with a LoRA slot")
    assert slotted.info.lora_slots == TINY_SD_SLOTTED_LAYERS
    # The other options combine with it.
    with runtime.load_model(_tiny(root), lora_slots=True, attention="exported") as exported:
        assert (exported.info.lora_slots, exported.info.fused_attention) == (TINY_SD_SLOTTED_LAYERS, 0)
    # A job's load is load_model's.
    with runtime.submit_load_model(_tiny(root), lora_slots=True) as job, job.model(120) as queued:
        assert queued.info.lora_slots == TINY_SD_SLOTTED_LAYERS


def test_a_plain_slotted_model_draws_the_unslotted_pictures(model: kiln.Model, slotted: kiln.Model) -> None:
    plain = _request(model)
    assert np.array_equal(_request(slotted), plain), "bit for bit"
    with slotted.with_loras([]) as empty:
        assert empty.loras == []
        assert np.array_equal(_request(empty), plain), "the empty LoRA set too"


def test_a_fed_lora_changes_the_picture_as_the_merged_one_does(root: Path, model: kiln.Model,
                                                              slotted: kiln.Model) -> None:
    plain = _request(model)
    with model.with_loras([(_style(root), 1.0)]) as m:
        merged = _request(m)
    with slotted.with_loras([(_style(root), 1.0)]) as styled:
        assert styled.info.lora_slots == TINY_SD_SLOTTED_LAYERS
        assert len(styled.loras) == 1 and styled.loras[0][0].endswith("style.kohya.safetensors")
        fed = _request(styled)
        assert np.array_equal(_request(styled), fed), "the same request twice: the same bytes"
    with slotted.submit_with_loras([(_style(root), 1.0)]) as job, job.model(120) as queued:
        assert np.array_equal(_request(queued), fed), "a job's LoRA set is with_loras'"
    differing = int(np.count_nonzero(fed != plain))
    worst = int(np.abs(fed.astype(np.int16) - merged.astype(np.int16)).max())
    print(f"\nlora_slots: the fed style LoRA changes {differing} of {plain.size} bytes (need > 0); "
          f"fed vs merged max 8-bit difference {worst} (bound 2)")
    assert differing > 0
    assert worst <= 2


def test_lora_slots_other_than_0_or_1_are_refused(root: Path, runtime: kiln.Runtime, model: kiln.Model) -> None:
    # load_model's keyword is a bool; the C struct's field takes any uint32_t, and Kiln refuses 2.
    lib, path = _library.lib(), os.fsencode(_tiny(root))
    o = _abi.ModelLoadOptions()
    lib.kiln_model_load_options_init(ctypes.byref(o))
    o.lora_slots = 2
    out = ctypes.c_void_p()
    with pytest.raises(kiln.ArgumentError) as bad:
        check(lib.kiln_model_load_with(runtime.handle, path, ctypes.byref(o), ctypes.byref(out)))
    assert bad.value.status == kiln.Status.INVALID_ARGUMENT
    assert "lora_slots" in bad.value.message, bad.value.message
    assert out.value is None
    print(f"\nlora_slots 2: {bad.value.message}")
    handle = runtime.handle
    with pytest.raises(kiln.ArgumentError) as bad_job:  # refused at submit; nothing queued
        submit(lambda jo, job: lib.kiln_job_submit_model_load(handle, path, ctypes.byref(o), jo, job))
    assert bad_job.value.status == kiln.Status.INVALID_ARGUMENT
    assert "lora_slots" in bad_job.value.message, bad_job.value.message
    assert model.info.lora_slots == 0, "the loaded model is untouched"
