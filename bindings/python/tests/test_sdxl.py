"""SDXL through the Python binding: tests/fixtures/tiny-sdxl with the second prompt and diffusers-ordered
size/crop tuples gives the pixels of optimum's goldens (tests/fixtures/golden/sdxl, checked from Rust by
tests/sdxl.rs); an SD 1.x model refuses the SDXL arguments."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

import kiln

# The binding returns uint8 pixels, within half a step of the float image; what exceeds that must be
# within the parity bound of tests/sdxl.rs.
QUANTUM = 0.5 / 255
BOUND = 2e-3


@pytest.fixture(scope="module")
def sdxl(runtime: kiln.Runtime, root: Path) -> Iterator[kiln.Model]:
    with runtime.load_model(root / "tests" / "fixtures" / "tiny-sdxl") as m:
        yield m


def golden(root: Path, name: str) -> tuple[dict[str, Any], np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    folder = root / "tests" / "fixtures" / "golden" / "sdxl"
    case = next(c for c in json.loads((folder / "cases.json").read_text()) if c["name"] == name)
    assert case["kiln_scheduler"] == "euler"  # deterministic: the draws are the initial noise
    return case, np.load(folder / f"{name}.draws.npy"), np.load(folder / f"{name}.image.npy")


def run(sdxl: kiln.Model, case: dict[str, Any], draws: np.ndarray[Any, Any], **xl: Any) -> np.ndarray[Any, Any]:
    width, height = case.get("width", 64), case.get("height", 64)
    with sdxl.generate(case["prompt"], negative_prompt=case.get("negative_prompt"), width=width, height=height,
                       steps=case["steps"], guidance_scale=case["guidance_scale"], scheduler="euler",
                       initial_noise=draws.reshape(1, 4, height // 8, width // 8), **xl) as image:
        return image.to_numpy()[..., :3].astype(np.float32) / 255


@pytest.mark.parametrize("name, keys", [
    ("prompt_2", ["prompt_2", "negative_prompt_2"]),
    ("nonsquare_sizes", ["original_size", "crops_coords_top_left", "negative_original_size",
                         "negative_crops_coords_top_left", "negative_target_size"]),
])
def test_sdxl_arguments_give_the_golden_pixels(sdxl: kiln.Model, root: Path, name: str, keys: list[str]) -> None:
    case, draws, want = golden(root, name)
    # cases.json holds diffusers' own arguments, tuples in its order: passed through unchanged.
    got = run(sdxl, case, draws, **{k: case[k] for k in keys})
    d = max(float(np.abs(got - want).max()) - QUANTUM, 0.0)
    control = float(np.abs(run(sdxl, case, draws) - want).max()) - QUANTUM
    print(f"{name}: {d:.3e} from the golden past 8-bit rounding (bound {BOUND:.0e}); "
          f"without the SDXL arguments {control:.3e}")
    assert d <= BOUND
    assert control > BOUND, "the SDXL arguments barely matter here; this test would not catch them dropped"


def test_sd1_model_refuses_sdxl_arguments(model: kiln.Model) -> None:
    with pytest.raises(kiln.ArgumentError, match="options->prompt_2") as e:
        model.generate("stone", steps=2, prompt_2="metal")
    assert e.value.status == kiln.Status.INVALID_ARGUMENT
    with pytest.raises(kiln.ArgumentError, match="options->original_width/original_height"):
        model.generate("stone", steps=2, original_size=(128, 96))
    with model.generate("stone", steps=2) as image:
        assert image.width == 64


def test_sdxl_embedding_gives_the_golden_pixels_and_sd1_embeddings_are_refused(sdxl: kiln.Model, root: Path) -> None:
    """kiln_model_with_adapters on SDXL: a `clip_l`/`clip_g` embedding extends both encoders
    (tests/fixtures/sdxl-embedding, checked from Rust by tests/sdxl_embedding.rs); an SD 1.x embedding
    is AdapterMismatchError and the model stays usable."""
    folder = root / "tests" / "fixtures" / "sdxl-embedding"
    case = json.loads((folder / "cases.json").read_text())[0]
    draws, want = np.load(folder / f"{case['name']}.draws.npy"), np.load(folder / f"{case['name']}.image.npy")
    with sdxl.with_loras([], embeddings=[(folder / case["file"], case["token"])]) as view:
        d = max(float(np.abs(run(view, case, draws) - want).max()) - QUANTUM, 0.0)
    plain = run(sdxl, case, draws)
    control = float(np.abs(plain - want).max()) - QUANTUM
    print(f"sdxl embedding: {d:.3e} from the golden past 8-bit rounding (bound {BOUND:.0e}); "
          f"the plain model {control:.3e}")
    assert d <= BOUND
    assert control > BOUND, "the embedding barely matters here; this test would not catch it dropped"
    with pytest.raises(kiln.AdapterMismatchError, match="SD 1.x/2.x") as e:
        sdxl.with_loras([], embeddings=[root / "tests" / "fixtures" / "lora" / "learned_embeds.safetensors"])
    assert e.value.status == kiln.Status.ADAPTER_MISMATCH
    assert np.array_equal(run(sdxl, case, draws), plain)


def test_refiner_hand_off_gives_the_golden_pixels(runtime: kiln.Runtime, sdxl: kiln.Model, model: kiln.Model,
                                                  root: Path, tmp_path: Path) -> None:
    """refiner= hands the latents to a second model part-way (tests/sdxl_handoff.rs has the Rust checks)."""
    import shutil

    folder = tmp_path / "refiner"
    for sub in ("text_encoder_2", "tokenizer_2", "vae_decoder", "vae_encoder"):
        shutil.copytree(root / "tests" / "fixtures" / "tiny-sdxl" / sub, folder / sub)
    shutil.copytree(root / "tests" / "fixtures" / "sdxl-refiner", folder, dirs_exist_ok=True)
    golden_dir = root / "tests" / "fixtures" / "golden" / "sdxl_handoff"
    case = next(c for c in json.loads((golden_dir / "cases.json").read_text()) if c["name"] == "euler_08")
    draws, want = np.load(golden_dir / "euler_08.draws.npy"), np.load(golden_dir / "euler_08.image.npy")
    with runtime.load_model(folder) as refiner:
        got = run(sdxl, case, draws, refiner=refiner, refiner_start=case["refiner_start"])
        d = max(float(np.abs(got - want).max()) - QUANTUM, 0.0)
        control = float(np.abs(run(sdxl, case, draws) - want).max()) - QUANTUM
        print(f"hand-off: {d:.3e} from the golden past 8-bit rounding (bound {BOUND:.0e}); base alone {control:.3e}")
        assert d <= BOUND
        assert control > BOUND
        with pytest.raises(kiln.ArgumentError, match="options->refiner"):
            run(sdxl, case, draws, refiner=model)
