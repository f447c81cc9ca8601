"""``noise_generator``: which generator the seed drives. With PyTorch's CPU generator a seed gives
diffusers' image for ``generator=torch.Generator("cpu").manual_seed(seed)``; the golden is
tests/fixtures/golden/torch-seed (tools/make_torch_seed_golden.py; tests/torch_seed.rs checks the
same case through Rust and C). With PyTorch's CUDA generator (computed on the host) it gives
diffusers' image for ``generator=torch.Generator("cuda").manual_seed(seed)`` (AUTOMATIC1111's default
seeds); that golden is tests/fixtures/golden/torch-cuda-seed (tools/make_torch_cuda_seed_golden.py),
whose first case is the same request."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Union

import numpy as np
import pytest

import kiln

#: tests/parity.rs' image bound, plus half an 8-bit step: the binding hands back 8-bit pixels.
IMAGE_TOL = 2e-3 + 0.5 / 255


#: The goldens' folders: PyTorch's CPU generator's and its CUDA generator's.
TORCH_SEED = "tests/fixtures/golden/torch-seed"
TORCH_CUDA_SEED = "tests/fixtures/golden/torch-cuda-seed"


def _case(root: Path, name: str, folder: str = TORCH_SEED) -> dict[str, Any]:
    cases = json.loads((root / folder / "cases.json").read_text())
    case: dict[str, Any] = next(c for c in cases["cases"] if c["name"] == name)
    return case


Generator = Union[kiln.NoiseGenerator, int, str, None]


def _options(case: dict[str, Any], noise_generator: Generator = None) -> kiln.GenerateOptions:
    """The golden's diffusers call as generation keywords (no noise passed: only the seed), with
    ``noise_generator`` when one is given (None: Kiln's default)."""
    assert not case["scheduler_overrides"], "this case needs no overrides"
    options: kiln.GenerateOptions = {
        "negative_prompt": case["negative_prompt"], "width": case["width"], "height": case["height"],
        "steps": case["steps"], "guidance_scale": case["guidance_scale"], "scheduler": case["kiln_scheduler"],
        "seed": case["seed"]}
    if noise_generator is not None:
        options["noise_generator"] = noise_generator
    return options


def _texture(noise_generator: Generator = None) -> kiln.GenerateOptions:
    """The texture helpers inpaint from noise (strength 1): DDIM, 2 steps (test_jobs.py's TEXTURE, shorter)."""
    options: kiln.GenerateOptions = {"steps": 2, "strength": 1.0, "scheduler": "ddim", "seed": 2026}
    if noise_generator is not None:
        options["noise_generator"] = noise_generator
    return options


def test_torch_seed_gives_diffusers_image(root: Path, model: kiln.Model) -> None:
    case = _case(root, "euler_a_64")
    want = np.load(root / TORCH_SEED / case["image"])  # (H, W, 3) float in [0, 1]
    torch = model.generate(case["prompt"], **_options(case, kiln.NoiseGenerator.TORCH_CPU)).to_numpy()
    assert torch.shape == want.shape[:2] + (4,)
    diff = float(np.abs(torch[..., :3].astype(np.float64) / 255.0 - want).max())
    print(f"\neuler_a_64, noise_generator=TORCH_CPU: max |8-bit image - diffusers'| = {diff:.3e} (bound {IMAGE_TOL:.3e})")
    assert diff <= IMAGE_TOL

    # The names, and the int, reach the same field.
    for name in ("torch", "torch_cpu", "TORCH", 1):
        assert np.array_equal(model.generate(case["prompt"], **_options(case, name)).to_numpy(), torch), name

    # Kiln's own generator, the default, makes another picture from the same seed.
    own = model.generate(case["prompt"], **_options(case)).to_numpy()
    for name in ("kiln", kiln.NoiseGenerator.KILN, 0):
        assert np.array_equal(model.generate(case["prompt"], **_options(case, name)).to_numpy(), own), name
    own_diff = float(np.abs(own[..., :3].astype(np.float64) / 255.0 - want).max())
    print(f"the same seed with Kiln's generator (the default): {own_diff:.3e} from diffusers' image")
    assert own_diff > 0.05, "Kiln's stream is not torch's"


def test_torch_cuda_seed_gives_diffusers_image(root: Path, model: kiln.Model) -> None:
    case = _case(root, "euler_a_64", TORCH_CUDA_SEED)
    cpu_case = _case(root, "euler_a_64")
    for key in ("prompt", "negative_prompt", "kiln_scheduler", "steps", "guidance_scale", "width", "height", "seed"):
        assert case[key] == cpu_case[key], f"the CUDA golden's euler_a_64 is the CPU golden's request ({key})"
    want = np.load(root / TORCH_CUDA_SEED / case["image"])  # (H, W, 3) float in [0, 1]
    cuda = model.generate(case["prompt"], **_options(case, kiln.NoiseGenerator.TORCH_CUDA)).to_numpy()
    assert cuda.shape == want.shape[:2] + (4,)
    diff = float(np.abs(cuda[..., :3].astype(np.float64) / 255.0 - want).max())
    print(f"\neuler_a_64, noise_generator=TORCH_CUDA: max |8-bit image - diffusers' (CUDA generator)| = {diff:.3e} "
          f"(bound {IMAGE_TOL:.3e})")
    assert diff <= IMAGE_TOL

    # The names, and the int, reach the same field.
    for name in ("torch_cuda", "TORCH_CUDA", "Torch_Cuda", 2):
        assert np.array_equal(model.generate(case["prompt"], **_options(case, name)).to_numpy(), cuda), name

    # The CPU generator gives another picture from the same seed, far from this golden (else this test
    # would not catch torch_cuda read as torch_cpu), and so does Kiln's own.
    cpu = model.generate(case["prompt"], **_options(case, "torch_cpu")).to_numpy()
    differing = int(np.count_nonzero(cpu != cuda))
    cpu_diff = float(np.abs(cpu[..., :3].astype(np.float64) / 255.0 - want).max())
    own = model.generate(case["prompt"], **_options(case)).to_numpy()
    own_diff = float(np.abs(own[..., :3].astype(np.float64) / 255.0 - want).max())
    print(f"the same seed with torch_cpu: {cpu_diff:.3e} from it ({differing} of {cpu.size} bytes differ); "
          f"with Kiln's generator: {own_diff:.3e}")
    assert differing > 0 and cpu_diff > 0.05, "the CUDA stream is not the CPU one"
    assert own_diff > 0.05, "Kiln's stream is not torch's CUDA one"


def test_every_entry_point_takes_the_generator(root: Path, model: kiln.Model) -> None:
    """generate_into, submit and the texture helpers share generate's options path."""
    case = _case(root, "euler_a_64")
    torch = model.generate(case["prompt"], **_options(case, "torch")).to_numpy()

    out = np.zeros_like(torch)
    model.generate_into(out, case["prompt"], **_options(case, "torch"))
    assert np.array_equal(out, torch)
    with model.submit(case["prompt"], **_options(case, kiln.NoiseGenerator.TORCH_CPU)) as job:
        assert np.array_equal(job.result(60), torch)

    # PyTorch's CUDA generator through the same entry points: a job gives the blocking call's pixels.
    cuda = model.generate(case["prompt"], **_options(case, kiln.NoiseGenerator.TORCH_CUDA)).to_numpy()
    assert not np.array_equal(cuda, torch)
    out_cuda = np.zeros_like(cuda)
    model.generate_into(out_cuda, case["prompt"], **_options(case, "torch_cuda"))
    assert np.array_equal(out_cuda, cuda)
    with model.submit(case["prompt"], **_options(case, "torch_cuda")) as job:
        assert np.array_equal(job.result(60), cuda)
    with model.submit(case["prompt"], **_options(case, kiln.NoiseGenerator.TORCH_CUDA)) as job:
        assert np.array_equal(job.result(60), cuda)

    # The texture helpers: the generator changes what they paint, and the job forms give the blocking bytes.
    own = model.extend_texture(torch, "moss", right=16, **_texture()).to_numpy()
    extended = model.extend_texture(torch, "moss", right=16, **_texture("torch")).to_numpy()
    assert extended.shape == (64, 80, 4) and not np.array_equal(own, extended)
    with model.submit_extend_texture(torch, "moss", right=16, **_texture("torch")) as job:
        assert np.array_equal(job.result(60), extended)
    extended_cuda = model.extend_texture(torch, "moss", right=16, **_texture("torch_cuda")).to_numpy()
    assert not np.array_equal(extended_cuda, extended) and not np.array_equal(extended_cuda, own)
    with model.submit_extend_texture(torch, "moss", right=16, **_texture(kiln.NoiseGenerator.TORCH_CUDA)) as job:
        assert np.array_equal(job.result(60), extended_cuda)
    tile = model.make_tileable(torch, "moss", band=16, **_texture("torch")).to_numpy()
    assert not np.array_equal(tile, model.make_tileable(torch, "moss", band=16, **_texture()).to_numpy())
    with model.submit_make_tileable(torch, "moss", band=16, **_texture("torch")) as job:
        assert np.array_equal(job.result(60), tile)


def test_an_unknown_generator_is_refused_and_the_model_still_generates(model: kiln.Model) -> None:
    # An int goes to Kiln, which refuses it with its own status and message.
    with pytest.raises(kiln.ArgumentError) as bad:
        model.generate("x", steps=1, noise_generator=7)
    assert bad.value.status == kiln.Status.INVALID_ARGUMENT
    assert "noise_generator 7" in bad.value.message, bad.value.message
    with pytest.raises(kiln.ArgumentError) as bad_job:
        model.submit("x", steps=1, noise_generator=3)  # the first value past TORCH_CUDA (2)
    assert bad_job.value.status == kiln.Status.INVALID_ARGUMENT and "noise_generator 3" in bad_job.value.message
    # A name or an int that is no kiln_noise_generator is refused the same way before Kiln is called.
    for value in ("philox", "", -1, 1 << 32):
        with pytest.raises(kiln.ArgumentError) as refused:
            model.generate("x", steps=1, noise_generator=value)
        assert refused.value.status == kiln.Status.INVALID_ARGUMENT, value
        assert "noise_generator" in refused.value.message, value
        assert isinstance(refused.value, ValueError)
    # An unknown name's message lists the names that are taken.
    with pytest.raises(kiln.ArgumentError) as unknown:
        model.generate("x", steps=1, noise_generator="cuda")
    assert "'cuda'" in unknown.value.message, unknown.value.message
    for name in ("'kiln'", "'torch'", "'torch_cpu'", "'torch_cuda'"):
        assert name in unknown.value.message, (name, unknown.value.message)
    assert model.generate("still works", steps=1, noise_generator="torch").size == (64, 64)
    assert model.generate("still works", steps=1, noise_generator="torch_cuda").size == (64, 64)
    assert model.generate("still works", steps=1).size == (64, 64)
