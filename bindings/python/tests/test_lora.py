"""LoRA adapters: the fixture LoRA (tests/fixtures/lora, made for tiny-sd) changes the image; LyCORIS
LoHa/LoKr files give their golden; a broken file raises its own exception and leaves the base model usable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

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


def test_lycoris_loha_and_lokr_give_the_golden_pixels(model: kiln.Model, root: Path) -> None:
    """LyCORIS files through with_loras (tests/fixtures/lycoris, checked from Rust by tests/lora.rs): the
    Euler case's image within the parity bound past 8-bit rounding, and a Tucker-decomposed LoHa is
    UnsupportedError with the model still usable."""
    folder = root / "tests" / "fixtures" / "lycoris"
    case = next(c for c in json.loads((folder / "cases.json").read_text()) if c["name"] == "lokr_euler")
    noise, want = np.load(folder / "noise_1x4x8x8.npy"), np.load(folder / "lokr_euler.image.npy")
    quantum, bound = 0.5 / 255, 2e-3

    def run(m: kiln.Model) -> np.ndarray[Any, Any]:
        with m.generate(case["prompt"], negative_prompt=case["negative_prompt"], steps=case["steps"],
                        guidance_scale=case["guidance_scale"], scheduler="euler", initial_noise=noise) as image:
            return image.to_numpy()[..., :3].astype(np.float32) / 255

    loras = [(folder / lora["file"], lora["scale"]) for lora in case["loras"]]
    with model.with_loras(loras) as view:
        d = max(float(np.abs(run(view) - want).max()) - quantum, 0.0)
    control = float(np.abs(run(model) - want).max()) - quantum
    print(f"lycoris lokr_euler: {d:.3e} from the golden past 8-bit rounding (bound {bound:.0e}); plain model {control:.3e}")
    assert d <= bound
    assert control > bound, "the LoKr barely matters here; this test would not catch it dropped"
    with pytest.raises(kiln.UnsupportedError, match="Tucker") as e:
        model.with_loras([(folder / "broken" / "loha_tucker.safetensors", 1.0)])
    assert e.value.status == kiln.Status.UNSUPPORTED
    with model.generate("stone", steps=2) as image:
        assert image.width == 64
