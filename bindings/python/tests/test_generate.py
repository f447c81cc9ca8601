"""Generation, numpy/PIL interop, errors, post-processing and handle lifetimes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

import kiln



def test_library_and_version(root: Path) -> None:
    import os

    assert kiln.library_path() == os.environ["KILN_LIBRARY"]
    header = (root / "include" / "kiln.h").read_text()
    assert kiln.version() == re.search(r'#define KILN_VERSION_STRING "([^"]+)"', header).group(1)  # type: ignore[union-attr]
    assert kiln.Provider.CPU in kiln.providers_compiled()


def test_runtime_reports_onnxruntime(runtime: kiln.Runtime) -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", runtime.onnxruntime_version)
    assert Path(runtime.onnxruntime_path).exists()
    assert runtime.provider_available(kiln.Provider.CPU)


def test_model_info(model: kiln.Model) -> None:
    info = model.info
    assert info.default_size == 64 and info.size_multiple > 0 and info.has_vae_encoder


def test_generate_to_numpy_pil_and_png(model: kiln.Model, tmp_path: Path) -> None:
    with model.generate("weathered oak planks", steps=4, seed=7) as image:
        assert image.size == (64, 64)
        pixels = image.to_numpy()
        assert pixels.shape == (64, 64, 4) and pixels.dtype == np.uint8
        assert (pixels[..., 3] == 255).all()
        assert pixels[..., :3].std() > 0, "a real picture, not a flat fill"
        assert np.array_equal(np.asarray(image), pixels)
        assert np.array_equal(np.asarray(image.to_pil()), pixels)
        image.save(tmp_path / "out.png")
    assert np.array_equal(np.asarray(PIL.Image.open(tmp_path / "out.png").convert("RGBA")), pixels)


def test_same_seed_same_pixels_other_seed_other_pixels(model: kiln.Model) -> None:
    a = model.generate("brick", steps=4, seed=7).to_numpy()
    b = model.generate("brick", steps=4, seed=7).to_numpy()
    c = model.generate("brick", steps=4, seed=8).to_numpy()
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_generate_into_padded_rows_keeps_the_padding(model: kiln.Model) -> None:
    reference = model.generate("lava", steps=4, seed=7).to_numpy()
    engine = np.full((64, 64 + 5, 4), 0xAB, np.uint8)  # a wider texture; write into its left part
    model.generate_into(engine[:, :64], "lava", steps=4, seed=7)
    assert np.array_equal(engine[:, :64], reference)
    assert (engine[:, 64:] == 0xAB).all()


def test_options_reach_kiln(model: kiln.Model) -> None:
    base = model.generate("grass", steps=4, seed=7).to_numpy()
    for change in (dict(negative_prompt="blurry"), dict(guidance_scale=1.0), dict(scheduler="euler_a"),
                   dict(scheduler=kiln.Scheduler.DDIM)):
        other = model.generate("grass", steps=4, seed=7, **change).to_numpy()
        assert not np.array_equal(base, other), change
    small = model.generate("grass", width=32, height=48, steps=4, seed=7)
    assert small.size == (32, 48)


def test_img2img_and_inpainting(model: kiln.Model) -> None:
    start = model.generate("stone", steps=4, seed=7)
    varied = model.generate("mossy stone", init_image=start, strength=0.5, steps=4, seed=7).to_numpy()
    assert varied.shape == (64, 64, 4)
    mask = np.zeros((64, 64), np.uint8)
    mask[16:48, 16:48] = 255
    painted = model.generate("mossy stone", init_image=start.to_pil(), mask=mask, strength=1.0, steps=4, seed=7).to_numpy()
    kept = start.to_numpy()
    outside = mask < 128
    assert np.array_equal(painted[outside], kept[outside]), "kept pixels are pasted back exactly"
    assert not np.array_equal(painted[~outside], kept[~outside])


def test_errors_carry_status_and_message_and_leave_handles_usable(runtime: kiln.Runtime, model: kiln.Model) -> None:
    with pytest.raises(kiln.ModelNotFoundError) as missing:
        runtime.load_model("/nonexistent/kiln-model")
    assert missing.value.status == kiln.Status.MODEL_NOT_FOUND
    assert "/nonexistent/kiln-model" in missing.value.message
    assert str(missing.value).startswith("KILN_STATUS_MODEL_NOT_FOUND: ")
    assert isinstance(missing.value, kiln.ModelError) and isinstance(missing.value, kiln.KilnError)

    with pytest.raises(kiln.ArgumentError) as bad_size:
        model.generate("x", width=7, steps=1)
    assert bad_size.value.status == kiln.Status.INVALID_SIZE
    assert "7" in bad_size.value.message
    assert isinstance(bad_size.value, ValueError)

    with pytest.raises(kiln.ArgumentError) as syntax:
        model.generate("(unclosed", prompt_weighting=True, steps=1)
    assert "column 1" in syntax.value.message

    with pytest.raises(TypeError):
        model.generate("x", stepz=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        model.generate("a\0b", steps=1)
    assert model.generate("still works", steps=1).size == (64, 64)


def test_image_from_array_and_postprocessing() -> None:
    green = np.zeros((32, 32, 3), np.uint8)
    green[..., 1] = 255
    green[8:24, 10:20] = (200, 30, 30)
    with kiln.Image.from_array(green) as image:
        assert (image.to_numpy()[..., 3] == 255).all(), "RGB in gets alpha 255"
        sprite = image.make_sprite()
        alpha = sprite.image.to_numpy()[..., 3]
        assert alpha[0, 0] == 0 and alpha[16, 15] == 255
        assert sprite.bbox == kiln.Rect(10, 8, 10, 16)
        art = image.pixel_art(cell=4, colors=2)
        assert art.size == (8, 8)
        maps = image.material_maps(wrap=True)
        assert maps.height.size == maps.normal.size == (32, 32)
    flat = kiln.Image.from_array(np.full((8, 8, 4), 90, np.uint8))
    assert flat.seam_score(kiln.Seamless.X) == 1.0  # a flat image scores exactly 1 (kiln.h)
    with pytest.raises(kiln.ArgumentError):
        flat.seam_score(kiln.Seamless.XY)
    with pytest.raises(ValueError):
        kiln.Image.from_array(np.zeros((4, 4), np.uint8))


def test_close_is_idempotent_and_closed_handles_refuse_use(runtime: kiln.Runtime) -> None:
    image = kiln.Image.from_array(np.zeros((2, 2, 4), np.uint8))
    with image:
        pass
    image.close()
    with pytest.raises(ValueError):
        image.to_numpy()


def test_log_callback_receives_kiln_lines(root: Path) -> None:
    lines: list[tuple[kiln.LogLevel, str]] = []
    with kiln.Runtime(log=lambda level, text: lines.append((level, text)), log_level=kiln.LogLevel.DEBUG) as rt:
        with rt.load_model(root / "tests" / "fixtures" / "tiny-sd"):
            pass
    assert lines, "loading a model logs"
    assert all(isinstance(level, kiln.LogLevel) and isinstance(text, str) for level, text in lines)
