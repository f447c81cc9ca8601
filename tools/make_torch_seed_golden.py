#!/usr/bin/env python3
"""Goldens for Kiln's PyTorch-compatible noise (`NoiseGenerator::TorchCpu`):
what a seed gives in PyTorch and in diffusers, with no noise passed in.

What it makes (in tests/fixtures/golden/torch-seed/):
  randn.npy       torch.randn draws from torch.Generator("cpu").manual_seed(seed),
                  several draws per generator in a row, flattened and
                  concatenated per generator in the order of DRAWS (shapes
                  in cases.json); counts that are and are not multiples of 16
  <case>.latents.npy / <case>.image.npy
                  optimum's ORTStableDiffusionPipeline (diffusers' loop over
                  tests/fixtures/tiny-sd's ONNX graphs, CPU EP; "sdxl_" cases its
                  SDXL pipeline on tests/fixtures/tiny-sdxl) called with only
                  `generator=torch.Generator("cpu").manual_seed(seed)`: the
                  initial latents and every stochastic draw come from the seed
  cases.json      every case's parameters (read by tests/torch_seed.rs)

Each pipeline case runs twice and must be bitwise identical. Torch's CPU
kernels differ by CPU capability in the last bits (its AVX2/AVX-512 kernels
form Box-Muller's angle in float, its scalar one in double); the capability
used is recorded in cases.json.

Usage (from repo root):
    /work/venv/bin/python tools/make_torch_seed_golden.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "tiny-sd"
SDXL_FIXTURE = REPO / "tests" / "fixtures" / "tiny-sdxl"
OUT = REPO / "tests" / "fixtures" / "golden" / "torch-seed"

# seed, shapes drawn in a row from one generator
DRAWS = [
    (0, [[1, 4, 8, 8]]),
    (42, [[1, 4, 9, 9], [1, 4, 9, 9], [1, 4, 8, 8]]),  # 324 = 20 blocks + 4: the tail is redrawn
      (2**32 + 5, [[1, 4, 16, 16]]),  # only the low 32 bits seed the generator
    (123456789, [[1, 4, 64, 64], [1, 4, 3, 7]]),
]

# name, kiln scheduler, diffusers class, overrides, steps, guidance, width, height, seed
# (names starting "sdxl_" run ORTStableDiffusionXLPipeline on tests/fixtures/tiny-sdxl)
CASES = [
    ("euler_a_64", "euler_a", "EulerAncestralDiscreteScheduler", {}, 6, 7.5, 64, 64, 2026),
    ("ddim_80x48", "ddim", "DDIMScheduler", {}, 6, 7.5, 80, 48, 7),
    ("dpmpp_2m_sde_48x80", "dpmpp_2m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, 6, 7.5, 48, 80, 99),
    ("sdxl_euler_a_64", "euler_a", "EulerAncestralDiscreteScheduler", {}, 6, 5.0, 64, 64, 314),
]
PROMPT = "mossy stone brick wall"
NEGATIVE = "blurry"


def run(case):
    import diffusers
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    from optimum.onnxruntime import ORTStableDiffusionXLPipeline

    name, _kiln, cls, overrides, steps, guidance, width, height, seed = case
    pipeline, fixture = (ORTStableDiffusionXLPipeline, SDXL_FIXTURE) if name.startswith("sdxl_") else (ORTStableDiffusionPipeline, FIXTURE)
    pipe = pipeline.from_pretrained(str(fixture), provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config, **overrides)
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance, width=width, height=height)
    latents = pipe(**common, generator=torch.Generator("cpu").manual_seed(seed), output_type="latent").images
    image = pipe(**common, generator=torch.Generator("cpu").manual_seed(seed), output_type="np").images[0]
    return np.asarray(latents, dtype=np.float32), np.asarray(image, dtype=np.float32)


def main() -> None:
    import importlib.metadata as md

    OUT.mkdir(parents=True, exist_ok=True)
    values = []
    draws = []
    for seed, shapes in DRAWS:
        g = torch.Generator("cpu").manual_seed(seed)
        for shape in shapes:
            values.append(torch.randn(shape, generator=g).numpy().reshape(-1))
        draws.append({"seed": seed, "shapes": shapes})
    np.save(OUT / "randn.npy", np.concatenate(values).astype(np.float32))

    cases = []
    for case in CASES:
        a, b = run(case), run(case)
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), f"{case[0]}: not deterministic"
        latents, image = a
        name, kiln, cls, overrides, steps, guidance, width, height, seed = case
        np.save(OUT / f"{name}.latents.npy", latents)
        np.save(OUT / f"{name}.image.npy", image)
        cases.append({
            "name": name, "kiln_scheduler": kiln, "scheduler": cls, "scheduler_overrides": overrides, "steps": steps,
            "guidance_scale": guidance, "width": width, "height": height, "seed": seed, "prompt": PROMPT, "negative_prompt": NEGATIVE,
            "latents": f"{name}.latents.npy", "image": f"{name}.image.npy",
        })
        print(f"{name}: latents {latents.shape} max|.| {np.abs(latents).max():.4f}, image mean {image.mean():.6f}")
    meta = {
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "versions": {p: md.version(p) for p in ["torch", "diffusers", "optimum", "optimum-onnx", "onnxruntime", "numpy"]},
        "draws": draws,
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
