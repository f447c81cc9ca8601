"""LoRA adapters: the fixture LoRA (tests/fixtures/lora, made for tiny-sd) changes the image; a broken
file raises its own exception and leaves the base model usable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import kiln


def test_with_loras_changes_the_image_and_bad_files_raise(model: kiln.Model, root: Path) -> None:
    lora_dir = root / "tests" / "fixtures" / "lora"
    with model.generate("mossy stone brick wall", steps=4, seed=11) as image:
        base = image.to_numpy()
    with model.with_loras([(lora_dir / "style.kohya.safetensors", 1.0)]) as styled:
        assert len(styled.loras) == 1
        path, scale = styled.loras[0]
        assert path.endswith("style.kohya.safetensors") and scale == 1.0
        with styled.generate("mossy stone brick wall", steps=4, seed=11) as image:
            pixels = image.to_numpy()
    differing = int(np.count_nonzero(pixels != base))
    print(f"lora: {differing} of {base.size} bytes differ from the base model's image (need > 0)")
    assert pixels.shape == base.shape and differing > 0
    assert model.loras == []

    with pytest.raises(kiln.AdapterMismatchError, match="rank mismatch") as mismatch:
        model.with_loras([(lora_dir / "broken" / "rank_mismatch.safetensors", 1.0)])
    assert mismatch.value.status == kiln.Status.ADAPTER_MISMATCH and isinstance(mismatch.value, kiln.ModelError)
    with pytest.raises(kiln.ModelError) as invalid:
        model.with_loras([(lora_dir / "broken" / "truncated.safetensors", 1.0)])
    assert invalid.value.status == kiln.Status.MODEL_INVALID
    with model.generate("mossy stone brick wall", steps=4, seed=11) as image:
        assert np.array_equal(image.to_numpy(), base)


def test_new_statuses_map_to_their_exceptions() -> None:
    assert kiln.errors.error_class(kiln.Status.ADAPTER_MISMATCH) is kiln.AdapterMismatchError
    assert kiln.errors.error_class(kiln.Status.OUT_OF_MEMORY) is kiln.OutOfMemoryError
    assert issubclass(kiln.OutOfMemoryError, MemoryError)
