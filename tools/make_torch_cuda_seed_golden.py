#!/usr/bin/env python3
"""Goldens for Kiln's CUDA-compatible noise (`NoiseGenerator::TorchCuda`):
what a seed gives with PyTorch's CUDA generator, and what diffusers' pipelines
make from it.

No GPU is needed, nor available where the goldens were made: the stream is
computed here by a small numpy model of what `torch.randn(shape,
device="cuda")` does after `torch.manual_seed(seed)` (cuRAND's Philox-4x32-10
keyed by the seed, counter `(k, 0, i, 0)` for value i of the k-th draw, the
first of cuRAND's float Box-Muller pair on its first two words). The model's
float steps follow cuRAND: u and v are rounded to float32 as cuRAND forms
them; log, sqrt and sin are then taken in float64 and the product rounded
once, so the model is the exact value on cuRAND's float inputs (the GPU's fast
`__sincosf` differs from it by about 1e-6).

Before writing anything, the model is checked against values the real GPU
gave (tests/fixtures/golden/torch-cuda-seed/published.json: a printout of
three draws in a row, so the per-draw counter offset is checked too, and
AUTOMATIC1111's documented values).

What it makes (in tests/fixtures/golden/torch-cuda-seed/):
  randn.npy       the model's draws for the seeds and shapes in cases.json
                  ("draws"), several draws per seed in a row, concatenated
  <case>.latents.npy / <case>.image.npy
                  optimum's ORT pipelines on tests/fixtures/tiny-sd (and the
                  SDXL one on tiny-sdxl for "sdxl_" cases), each of diffusers'
                  `randn_tensor` calls answered by the model in order, as a
                  CUDA generator would answer them: txt2img, img2img and
                  inpainting with the settings of the torch-seed, img2img and
                  inpaint goldens
  cases.json      every case's parameters and its number of draws

Usage (from repo root):
    /work/venv/bin/python tools/make_torch_cuda_seed_golden.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "fixtures" / "golden"
OUT = GOLDEN / "torch-cuda-seed"

M0, M1 = 0xD2511F53, 0xCD9E8D57
W0, W1 = 0x9E3779B9, 0xBB67AE85
MASK32 = 0xFFFFFFFF
TWO_POW32_INV = np.float32(2.3283064e-10)
TWO_POW32_INV_2PI = np.float32(TWO_POW32_INV * np.float32(6.2831855))


def philox(counter: list[np.ndarray], key: tuple[int, int]) -> list[np.ndarray]:
    """Philox-4x32-10 on uint64 arrays holding 32-bit words."""
    c = [w.astype(np.uint64) for w in counter]
    k0, k1 = key
    for r in range(10):
        if r:
            k0, k1 = (k0 + W0) & MASK32, (k1 + W1) & MASK32
        p0 = np.uint64(M0) * c[0]
        p1 = np.uint64(M1) * c[2]
        c = [((p1 >> np.uint64(32)) ^ c[1] ^ np.uint64(k0)) & np.uint64(MASK32), p1 & np.uint64(MASK32),
             ((p0 >> np.uint64(32)) ^ c[3] ^ np.uint64(k1)) & np.uint64(MASK32), p0 & np.uint64(MASK32)]
    return c


def box_muller(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cuRAND's float Box-Muller pair on two words, as the exact value on
    its float inputs: u exactly as float32 fma forms it (the product by
    2^-32 is exact), v rounded once from the exact product; then log, sqrt,
    sin and cos in float64. Returns (sin part, cos part), float64."""
    u = (x.astype(np.float32).astype(np.float64) * float(TWO_POW32_INV) + float(TWO_POW32_INV) / 2).astype(np.float32)
    v = (y.astype(np.float32).astype(np.float64) * float(TWO_POW32_INV_2PI) + float(TWO_POW32_INV_2PI) / 2).astype(np.float32)
    s = np.sqrt(-2.0 * np.log(u.astype(np.float64)))
    return s * np.sin(v.astype(np.float64)), s * np.cos(v.astype(np.float64))


class CudaStream:
    """torch.manual_seed(seed), then one randn per call, as on an NVIDIA GPU
    that runs a thread per value."""

    def __init__(self, seed: int):
        self.key = (seed & MASK32, (seed >> 32) & MASK32)
        self.draws = 0

    def randn(self, shape) -> np.ndarray:
        n = int(np.prod(shape))
        idx = np.arange(n, dtype=np.uint64)
        zero = np.zeros(n, dtype=np.uint64)
        k = self.draws
        x, y, _, _ = philox([zero + (k & MASK32), zero + (k >> 32), idx, zero], self.key)
        self.draws += 1
        return box_muller(x, y)[0].astype(np.float32).reshape(shape)


def check_against_the_gpu() -> None:
    pub = json.loads((OUT / "published.json").read_text())
    p = pub["cuda_printout"]
    g = CudaStream(p["seed"])
    a = g.randn(p["a_shape"]).reshape(-1)
    b = g.randn(p["a_shape"]).reshape(-1)
    bias = g.randn([1, p["a_shape"][1]]).reshape(-1)
    half = 0.5 * 10.0 ** -p["a_decimals"]
    err_a = np.abs(a - np.array(p["a_printed"])).max()
    assert err_a <= half + 1e-6, f"first draw: {err_a}"
    out = np.maximum(a.astype(np.float64) + 0.5 * b + np.tile(bias, p["a_shape"][0]), 0.0)
    want = np.array(p["out_printed"])
    scale = np.where(want > 0, 10.0 ** (np.floor(np.log10(np.maximum(want, 1e-30))) - (p["out_significant_digits"] - 1)), 0.0)
    err_out = np.abs(out - want) - 0.5 * scale
    assert err_out.max() <= 1e-5, f"second and third draws: {err_out.max()}"
    d = pub["a1111_docstring"]
    err_doc = np.abs(CudaStream(d["seed"]).randn(d["shape"]).reshape(-1) - np.array(d["values"])).max()
    # A1111 forms u and v in float64 where cuRAND rounds them to float32:
    # v's rounding (half an ulp of up to 2pi) moves sin by up to 2.4e-7,
    # times sqrt(-2 ln u).
    assert err_doc <= 1e-6, f"A1111's documented values: {err_doc}"
    print(f"model vs the GPU's printout: first draw {err_a:.2e} (print step {2 * half:g}), "
          f"a + b/2 + bias within {max(err_out.max(), 0):.2e} past its rounding; vs A1111's values {err_doc:.2e}")


def randn_tensor_from(stream_box: dict):
    """A randn_tensor that draws from stream_box["g"] (a CudaStream)."""
    import torch

    def from_model(shape, generator=None, device=None, dtype=None, layout=None):
        assert generator is not None, "every draw in these cases has a generator"
        return torch.from_numpy(stream_box["g"].randn(tuple(shape))).to(dtype=dtype or torch.float32)
    return from_model


def patch_randn_tensor(replacement) -> None:
    """Every diffusers/optimum module's randn_tensor becomes `replacement`."""
    import diffusers.utils.torch_utils as tu

    current = tu.randn_tensor
    for name, module in list(sys.modules.items()):
        if (name.startswith("diffusers") or name.startswith("optimum")) and getattr(module, "randn_tensor", None) is current:
            module.randn_tensor = replacement
    tu.randn_tensor = replacement


# seed, shapes drawn in a row from one generator
DRAWS = [
    (0, [[1, 4, 8, 8], [1, 4, 8, 8]]),
    (42, [[1, 4, 9, 9], [1, 4, 3, 7], [1, 4, 8, 8]]),
    (2**32 + 5, [[1, 4, 16, 16]]),  # the seed's high word keys the generator
    (123456789, [[1, 4, 64, 64]]),
]

# name, kind, kiln scheduler, diffusers class, overrides, steps, guidance, width, height, seed, strength
CASES = [
    ("euler_a_64", "txt2img", "euler_a", "EulerAncestralDiscreteScheduler", {}, 6, 7.5, 64, 64, 2026, None),
    ("dpmpp_2m_sde_48x80", "txt2img", "dpmpp_2m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, 6, 7.5, 48, 80, 99, None),
    ("sdxl_euler_a_64", "sdxl", "euler_a", "EulerAncestralDiscreteScheduler", {}, 6, 5.0, 64, 64, 314, None),
    ("img2img_euler_s06", "img2img", "euler", "EulerDiscreteScheduler", {}, 10, 7.5, 64, 64, 777, 0.6),
    ("img2img_dpmpp_2m_sde_s06", "img2img", "dpmpp_2m_sde", "DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}, 10, 7.5, 64, 64, 777, 0.6),
    ("inpaint_ddim_s075", "inpaint", "ddim", "DDIMScheduler", {}, 8, 7.5, 64, 64, 31, 0.75),
]
PROMPT = "mossy stone brick wall"
NEGATIVE = "blurry"


def run(case, stream_box):
    import diffusers
    import torch
    from optimum.onnxruntime import (ORTStableDiffusionImg2ImgPipeline, ORTStableDiffusionInpaintPipeline,
                                     ORTStableDiffusionPipeline, ORTStableDiffusionXLPipeline)
    from PIL import Image

    name, kind, _kiln, cls, overrides, steps, guidance, width, height, seed, strength = case
    pipeline, fixture = {
        "txt2img": (ORTStableDiffusionPipeline, "tiny-sd"),
        "sdxl": (ORTStableDiffusionXLPipeline, "tiny-sdxl"),
        "img2img": (ORTStableDiffusionImg2ImgPipeline, "tiny-sd"),
        "inpaint": (ORTStableDiffusionInpaintPipeline, "tiny-sd"),
    }[kind]
    pipe = pipeline.from_pretrained(str(REPO / "tests/fixtures" / fixture), provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config, **overrides)
    args = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance)
    if kind in ("txt2img", "sdxl", "inpaint"):
        args.update(width=width, height=height)
    if kind in ("img2img", "inpaint"):
        args.update(image=Image.open(GOLDEN / "ddim_cfg.png").convert("RGB"), strength=strength)
    if kind == "inpaint":
        args.update(mask_image=Image.open(GOLDEN / "inpaint/mask.png"))
    captured = {}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        return kw

    # The generator only says "seeded"; its draws come from the model.
    stream_box["g"] = CudaStream(seed)
    image = pipe(**args, generator=torch.Generator("cpu"), output_type="np", callback_on_step_end=on_end).images[0]
    return captured["latents"], np.asarray(image, dtype=np.float32), stream_box["g"].draws


def main() -> None:
    import importlib.metadata as md

    check_against_the_gpu()
    values, draws = [], []
    for seed, shapes in DRAWS:
        g = CudaStream(seed)
        values += [g.randn(s).reshape(-1) for s in shapes]
        draws.append({"seed": seed, "shapes": shapes})
    np.save(OUT / "randn.npy", np.concatenate(values).astype(np.float32))

    stream_box: dict = {}
    import diffusers  # noqa: F401  (load the modules to patch)
    import optimum.onnxruntime  # noqa: F401
    patch_randn_tensor(randn_tensor_from(stream_box))
    cases = []
    for case in CASES:
        a, b = run(case, stream_box), run(case, stream_box)
        assert all(np.array_equal(x, y) for x, y in zip(a[:2], b[:2])), f"{case[0]}: not deterministic"
        latents, image, n_draws = a
        name, kind, kiln, cls, overrides, steps, guidance, width, height, seed, strength = case
        np.save(OUT / f"{name}.latents.npy", latents)
        np.save(OUT / f"{name}.image.npy", image)
        cases.append({
            "name": name, "kind": kind, "kiln_scheduler": kiln, "scheduler": cls, "scheduler_overrides": overrides,
            "steps": steps, "guidance_scale": guidance, "width": width, "height": height, "seed": seed,
            "strength": strength, "prompt": PROMPT, "negative_prompt": NEGATIVE, "draws": n_draws,
            "latents": f"{name}.latents.npy", "image": f"{name}.image.npy",
        })
        print(f"{name}: {n_draws} draws, latents {latents.shape} max|.| {np.abs(latents).max():.4f}, image mean {image.mean():.6f}")
    meta = {
        "versions": {p: md.version(p) for p in ["torch", "diffusers", "optimum", "optimum-onnx", "onnxruntime", "numpy"]},
        "draws": draws,
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
