"""LoRA adapters: the fixture LoRA (tests/fixtures/lora, made for tiny-sd) changes the image; a LyCORIS
LoKr and a DoRA file give their goldens, and so does a LoRA with a text-encoder strength of its own; a broken
file raises its own exception and leaves the base model usable."""

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
        path, scale, text_encoder_scale = styled.loras[0]
        assert path.endswith("style.kohya.safetensors") and scale == 1.0 and text_encoder_scale == 1.0
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


def golden_distance(model: kiln.Model, folder: Path, name: str, file_key: str = "file",
                    own_text_encoder_scale: bool = True) -> tuple[float, float]:
    """A case of tests/fixtures/<folder> (checked from Rust by tests/lora.rs) through with_loras, with the
    case's scheduler config: (its distance from the golden past 8-bit rounding, the plain model's). A
    LoRA's ``text_encoder_scale`` in the case goes in as the third entry unless ``own_text_encoder_scale``
    is False (then its ``scale`` is the strength of every module)."""
    case = next(c for c in json.loads((folder / "cases.json").read_text()) if c["name"] == name)
    assert case["kiln_scheduler"] in ("euler", "ddim")  # deterministic: the noise file is all they draw
    noise, want = np.load(folder / "noise_1x4x8x8.npy"), np.load(folder / f"{name}.image.npy")
    quantum = 0.5 / 255

    def run(m: kiln.Model) -> np.ndarray[Any, Any]:
        with m.generate(case["prompt"], negative_prompt=case["negative_prompt"], steps=case["steps"],
                        guidance_scale=case["guidance_scale"], scheduler=case["kiln_scheduler"], initial_noise=noise,
                        scheduler_overrides=case["scheduler_config"]) as image:
            return image.to_numpy()[..., :3].astype(np.float32) / 255

    loras = [(folder / lora[file_key], lora["scale"],
              lora.get("text_encoder_scale") if own_text_encoder_scale else None) for lora in case["loras"]]
    with model.with_loras(loras) as view:
        d = max(float(np.abs(run(view) - want).max()) - quantum, 0.0)
    return d, float(np.abs(run(model) - want).max()) - quantum


def test_lycoris_and_dora_give_the_golden_pixels(model: kiln.Model, root: Path) -> None:
    """LyCORIS LoKr (f16) at 0.8, a PEFT DoRA at 0.5 and a LyCORIS-made LoHa with Tucker cores (f16)
    through with_loras: each image within the parity bound (2e-3) past 8-bit rounding, the plain model
    far from it; Tucker cores that do not fit their modes are AdapterMismatchError with the model
    still usable."""
    fixtures = root / "tests" / "fixtures"
    for folder, name, key in [
        (fixtures / "lycoris", "lokr_euler", "file"),
        (fixtures / "dora", "dora_euler_s05", "peft_file"),
        (fixtures / "lycoris_native", "loha_tucker_euler", "file"),
    ]:
        d, control = golden_distance(model, folder, name, key)
        print(f"{name}: {d:.3e} from the golden past 8-bit rounding (bound 2e-3); plain model {control:.3e}")
        assert d <= 2e-3
        assert control > 2e-3, "the adapter barely matters here; this test would not catch it dropped"
    folder = fixtures / "lycoris"
    with pytest.raises(kiln.AdapterMismatchError, match="Tucker core") as e:
        model.with_loras([(folder / "broken" / "loha_tucker.safetensors", 1.0)])
    assert e.value.status == kiln.Status.ADAPTER_MISMATCH
    with model.generate("stone", steps=2) as image:
        assert image.width == 64


def test_a_text_encoder_strength_of_its_own_gives_the_golden_pixels(model: kiln.Model, root: Path) -> None:
    """The kohya fixture LoRA at U-Net strength 1.0 and text-encoder strength 0 (ComfyUI's strength_model and
    strength_clip) replays diffusers' DDIM golden (tests/fixtures/lora_component) within the parity bound
    (2e-3) past 8-bit rounding; the same LoRA at 1.0 for every module and the plain model do not. The view
    lists the text-encoder strength 0 (a LoRA without one: its scale), its list goes back into with_loras,
    and a non-finite text-encoder strength is ArgumentError (INVALID_ARGUMENT) with the model still usable."""
    folder = root / "tests" / "fixtures" / "lora_component"
    d, control = golden_distance(model, folder, "style_te0_ddim")
    one_strength, _ = golden_distance(model, folder, "style_te0_ddim", own_text_encoder_scale=False)
    print(f"style_te0_ddim: {d:.3e} from the golden past 8-bit rounding (bound 2e-3); the LoRA at one strength "
          f"{one_strength:.3e}; plain model {control:.3e}")
    assert d <= 2e-3
    assert one_strength > 2e-3, "the text-encoder strength barely matters here; this test would not catch it dropped"
    assert control > 2e-3

    lora = root / "tests" / "fixtures" / "lora" / "style.kohya.safetensors"
    with model.with_loras([(lora, 1.0, 0.0), (lora, 0.5)]) as view:
        assert [entry[1:] for entry in view.loras] == [(1.0, 0.0), (0.5, 0.5)]
        assert view.loras[0][0].endswith("style.kohya.safetensors")
        with model.with_loras(view.loras) as again:
            assert again.loras == view.loras
    for bad in (float("nan"), float("inf")):
        with pytest.raises(kiln.ArgumentError, match="text_encoder_scale") as e:
            model.with_loras([(lora, 1.0, bad)])
        assert e.value.status == kiln.Status.INVALID_ARGUMENT
    with pytest.raises(TypeError):
        model.with_loras([(lora, 1.0, 0.0, 0.0)])  # type: ignore[list-item]
    assert model.loras == []
    with model.generate("stone", steps=2) as image:
        assert image.width == 64
