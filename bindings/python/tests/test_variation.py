"""``variation_seed`` / ``variation_strength``: AUTOMATIC1111's variation seeds. The starting noise is
A1111's spherical blend of the seed's draw and one draw of the same generator seeded with the
variation seed; every other draw stays the seed's. The golden is tests/fixtures/golden/variation
(tools/make_variation_golden.py: optimum's pipelines on tiny-sd started from the blend written in
torch float32; tests/variation.rs checks the same cases through Rust and C)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage

import kiln

#: tests/parity.rs' image bound, plus half an 8-bit step: the binding hands back 8-bit pixels
#: (test_noise_generator.py's bound).
IMAGE_TOL = 2e-3 + 0.5 / 255

VARIATION = "tests/fixtures/golden/variation"


def _cases(root: Path) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((root / VARIATION / "cases.json").read_text())["cases"]
    return cases


def _options(root: Path, case: dict[str, Any], variation: bool = True) -> kiln.GenerateOptions:
    """The golden's request as generation keywords (no noise passed: only the seeds); without
    ``variation``, the same request with the variation keywords left out."""
    options: kiln.GenerateOptions = {
        "negative_prompt": case["negative_prompt"], "width": case["width"], "height": case["height"],
        "steps": case["steps"], "guidance_scale": case["guidance_scale"], "scheduler": case["kiln_scheduler"],
        "seed": case["seed"], "noise_generator": case["noise"]}
    if case["kind"] == "img2img":
        options["init_image"] = PILImage.open(root / "tests/fixtures/golden/ddim_cfg.png").convert("RGB")
        options["strength"] = case["strength"]
    if variation:
        options["variation_seed"] = case["variation_seed"]
        options["variation_strength"] = case["variation_strength"]
    return options


def _diff(pixels: "np.ndarray[Any, Any]", want: "np.ndarray[Any, Any]") -> float:
    """Max |8-bit RGB / 255 - diffusers' float image|."""
    return float(np.abs(pixels[..., :3].astype(np.float64) / 255.0 - want).max())


def test_the_golden_cases_are_as_expected(root: Path) -> None:
    first = _cases(root)[0]
    assert first["name"] == "euler_a_64_cpu" and first["noise"] == "torch" and first["kiln_scheduler"] == "euler_a"
    assert (first["seed"], first["variation_seed"], first["variation_strength"]) == (2026, 7, 0.3)


@pytest.mark.parametrize("index", range(4))
def test_a_variation_gives_diffusers_image(root: Path, model: kiln.Model, index: int) -> None:
    """Each golden case (the first: euler_a_64_cpu, txt2img, PyTorch's CPU generator, strength 0.3)."""
    case = _cases(root)[index]
    name = case["name"]
    want = np.load(root / VARIATION / case["image"])  # (H, W, 3) float in [0, 1]
    got = model.generate(case["prompt"], **_options(root, case)).to_numpy()
    assert got.shape == want.shape[:2] + (4,)
    diff = _diff(got, want)
    plain = model.generate(case["prompt"], **_options(root, case, variation=False)).to_numpy()
    plain_diff = _diff(plain, want)
    print(f"\n{name} (variation_seed {case['variation_seed']}, strength {case['variation_strength']}): "
          f"max |8-bit image - diffusers'| = {diff:.3e} (bound {IMAGE_TOL:.3e}); without the variation {plain_diff:.3e}")
    assert diff <= IMAGE_TOL, name
    # Without the variation the seed makes another picture (else a dropped keyword would pass).
    assert plain_diff > 0.01, f"{name}: the variation changed nothing"


def test_every_entry_point_takes_the_variation(root: Path, model: kiln.Model) -> None:
    """generate_into, submit and the texture helpers share generate's options path: a job gives the
    blocking call's pixels."""
    case = _cases(root)[0]
    varied = model.generate(case["prompt"], **_options(root, case)).to_numpy()

    out = np.zeros_like(varied)
    model.generate_into(out, case["prompt"], **_options(root, case))
    assert np.array_equal(out, varied)
    with model.submit(case["prompt"], **_options(root, case)) as job:
        assert np.array_equal(job.result(60), varied)
    # Another variation seed in a job is another picture, and the blocking call's.
    other: kiln.GenerateOptions = {**_options(root, case), "variation_seed": 8}
    with model.submit(case["prompt"], **other) as job:
        other_pixels = job.result(60)
    assert not np.array_equal(other_pixels, varied)
    assert np.array_equal(model.generate(case["prompt"], **other).to_numpy(), other_pixels)

    # The texture helpers inpaint from noise (strength 1, DDIM, 2 steps): the variation changes what
    # they paint, and the job forms give the blocking bytes.
    texture: kiln.GenerateOptions = {"steps": 2, "strength": 1.0, "scheduler": "ddim", "seed": 2026}
    with_variation: kiln.GenerateOptions = {**texture, "variation_seed": 7, "variation_strength": 0.5}
    own = model.extend_texture(varied, "moss", right=16, **texture).to_numpy()
    extended = model.extend_texture(varied, "moss", right=16, **with_variation).to_numpy()
    assert extended.shape == (64, 80, 4) and not np.array_equal(own, extended)
    with model.submit_extend_texture(varied, "moss", right=16, **with_variation) as job:
        assert np.array_equal(job.result(60), extended)
    tile = model.make_tileable(varied, "moss", band=16, **with_variation).to_numpy()
    assert not np.array_equal(tile, model.make_tileable(varied, "moss", band=16, **texture).to_numpy())
    with model.submit_make_tileable(varied, "moss", band=16, **with_variation) as job:
        assert np.array_equal(job.result(60), tile)


def test_strength_zero_is_no_variation_and_one_is_the_variation_seeds_noise(root: Path, model: kiln.Model) -> None:
    case = _cases(root)[0]
    plain = model.generate(case["prompt"], **_options(root, case, variation=False)).to_numpy()
    for strength in (0, 0.0):
        off: kiln.GenerateOptions = {**_options(root, case), "variation_strength": strength}
        assert np.array_equal(model.generate(case["prompt"], **off).to_numpy(), plain), strength
        with model.submit(case["prompt"], **off) as job:
            assert np.array_equal(job.result(60), plain), strength
    # A variation seed alone (strength left at 0) changes nothing either.
    seed_only: kiln.GenerateOptions = {**_options(root, case, variation=False), "variation_seed": case["variation_seed"]}
    assert np.array_equal(model.generate(case["prompt"], **seed_only).to_numpy(), plain)

    # A deterministic scheduler, so only the starting noise differs: at strength 1 the blend is the
    # variation seed's draw exactly (tests/variation.rs' check, here for each generator).
    for generator in ("kiln", "torch", "torch_cuda"):
        base: kiln.GenerateOptions = {"steps": 4, "scheduler": "ddim", "seed": 5, "noise_generator": generator}
        nine_seed: kiln.GenerateOptions = {**base, "seed": 9}
        full_variation: kiln.GenerateOptions = {**base, "variation_seed": 9, "variation_strength": 1.0}
        half_variation: kiln.GenerateOptions = {**base, "variation_seed": 9, "variation_strength": 0.5}
        full = model.generate("mossy stone brick wall", **full_variation).to_numpy()
        nine = model.generate("mossy stone brick wall", **nine_seed).to_numpy()
        assert np.array_equal(full, nine), f"{generator}: strength 1 is the variation seed's picture"
        five = model.generate("mossy stone brick wall", **base).to_numpy()
        half = model.generate("mossy stone brick wall", **half_variation).to_numpy()
        assert not np.array_equal(half, five) and not np.array_equal(half, nine), generator

    # The whole uint64 range reaches the field: the largest variation seed is another picture.
    largest: kiln.GenerateOptions = {**_options(root, case), "variation_seed": 2**64 - 1}
    top = model.generate(case["prompt"], **largest).to_numpy()
    assert not np.array_equal(top, plain)


def _refused(model: kiln.Model, submit: bool = False, **options: Any) -> kiln.ArgumentError:
    with pytest.raises(kiln.ArgumentError) as refused:
        if submit:
            model.submit("x", steps=1, **options).close()
        else:
            model.generate("x", steps=1, **options)
    assert refused.value.status == kiln.Status.INVALID_ARGUMENT, (options, refused.value)
    assert isinstance(refused.value, ValueError)
    return refused.value


def test_a_bad_strength_is_refused_and_the_model_still_generates(model: kiln.Model) -> None:
    # Kiln refuses a strength outside 0..=1 with its own status and message.
    bad = _refused(model, variation_seed=3, variation_strength=1.5)
    assert "variation_strength 1.5" in bad.message, bad.message
    bad_job = _refused(model, submit=True, variation_seed=3, variation_strength=1.5)
    assert "variation_strength 1.5" in bad_job.message, bad_job.message
    for strength in (-0.1, 2, math.nan, math.inf, -math.inf, 1e300):
        assert "variation_strength" in _refused(model, variation_strength=strength).message, strength
    # A value the float32 field would round into 0..=1 is refused the same way before Kiln is called.
    for strength in (1 + 1e-12, -1e-50):
        message = _refused(model, variation_strength=strength).message
        assert "variation_strength" in message and repr(strength) in message, (strength, message)
    # A variation blends seeded noise: with the caller's own noise it is refused.
    noise = np.zeros((1, 4, 8, 8), np.float32)
    assert "variation_strength" in _refused(model, initial_noise=noise, variation_strength=0.5).message
    # A variation seed the uint64 field cannot hold (which ctypes would wrap) is refused, naming it.
    for seed in (-1, 2**64):
        assert "variation_seed" in _refused(model, variation_seed=seed, variation_strength=0.5).message, seed

    # The model still generates, with and without a variation.
    assert model.generate("still works", steps=1, variation_seed=3, variation_strength=0.5).size == (64, 64)
    assert model.generate("still works", steps=1).size == (64, 64)
    with model.submit("still works", steps=1, variation_seed=3, variation_strength=1.0) as job:
        assert job.result(60).shape == (64, 64, 4)


def test_initial_noise_with_strength_zero_is_allowed(model: kiln.Model) -> None:
    """Strength 0 is no variation, so the caller's own noise still goes (a variation seed set or not)."""
    noise = np.random.default_rng(1).standard_normal((1, 4, 8, 8)).astype(np.float32)
    given = model.generate("x", steps=1, initial_noise=noise).to_numpy()
    off = model.generate("x", steps=1, initial_noise=noise, variation_seed=3, variation_strength=0.0).to_numpy()
    assert np.array_equal(off, given)
