#!/usr/bin/env python3
"""Goldens for variation seeds (`GenerateRequest::variation_seed` and
`variation_strength`): AUTOMATIC1111's blend of a seed's starting noise with a
variation seed's, then diffusers' pipeline from it.

A1111's blend (its `slerp(val, low, high)` on one image's noise, shape
[C, H, W]): both noises are normalised along dim 1 (the rows), per channel and
column; the cosine is the sum over the rows; if the cosines average above
0.9995 the result is `low * val + high * (1 - val)`, else with
omega = acos(cosine) it is `sin((1 - val) omega) / sin(omega) * low +
sin(val omega) / sin(omega) * high`. It is written here in torch float32 ops
from that description.

What it makes (in tests/fixtures/golden/variation/):
  blend.npy       for each entry of cases.json "blends": torch's CPU draws for
                  the seed and the variation seed (shape [1, 4, 6, 10]) and
                  their blend at that strength, concatenated (3 x 240 values)
  <case>.latents.npy / <case>.image.npy
                  optimum's ORT pipelines on tests/fixtures/tiny-sd: the seed's
                  generator draws the starting noise, the variation seed's own
                  generator (same kind) draws one more, the blend replaces the
                  starting noise (txt2img: `latents=`; img2img: the start
                  noise, diffusers' second draw), and every other draw comes
                  from the seed's generator as usual. "cuda" cases draw from
                  tools/make_torch_cuda_seed_golden.py's model of PyTorch's
                  CUDA generator.
  cases.json      the parameters

Usage (from repo root):
    /work/venv/bin/python tools/make_variation_golden.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_torch_cuda_seed_golden import CudaStream, patch_randn_tensor, randn_tensor_from  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "fixtures" / "golden"
OUT = GOLDEN / "variation"
PROMPT = "mossy stone brick wall"
NEGATIVE = "blurry"


def a1111_blend(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """A1111's slerp on one image's [C, H, W] noise (see the module docs)."""
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


def blend_batch(val: float, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """[1, C, H, W] latents: A1111 blends each image's [C, H, W]."""
    return a1111_blend(val, low[0], high[0])[None]


# seed, variation seed, strength (torch CPU draws of [1, 4, 6, 10])
BLENDS = [(2026, 7, 0.3), (2026, 7, 0.9), (5, 6, 0.5), (11, 11, 0.4)]  # the last: equal seeds take A1111's linear branch

# name, kind, generator, kiln scheduler, diffusers class, steps, guidance, width, height, seed, variation seed, strength, img2img strength
CASES = [
    ("euler_a_64_cpu", "txt2img", "torch", "euler_a", "EulerAncestralDiscreteScheduler", 6, 7.5, 64, 64, 2026, 7, 0.3, None),
    ("ddim_80x48_cpu", "txt2img", "torch", "ddim", "DDIMScheduler", 6, 7.5, 80, 48, 7, 99, 0.25, None),
    ("euler_a_64_cuda", "txt2img", "torch_cuda", "euler_a", "EulerAncestralDiscreteScheduler", 6, 7.5, 64, 64, 2026, 7, 0.6, None),
    ("img2img_euler_s06_cpu", "img2img", "torch", "euler", "EulerDiscreteScheduler", 10, 7.5, 64, 64, 777, 12, 0.5, 0.6),
]


def run(case, box):
    import diffusers
    from optimum.onnxruntime import ORTStableDiffusionImg2ImgPipeline, ORTStableDiffusionPipeline
    from PIL import Image

    name, kind, gen, _kiln, cls, steps, guidance, width, height, seed, vseed, vstrength, strength = case
    pipeline = ORTStableDiffusionPipeline if kind == "txt2img" else ORTStableDiffusionImg2ImgPipeline
    pipe = pipeline.from_pretrained(str(REPO / "tests/fixtures/tiny-sd"), provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = getattr(diffusers, cls).from_config(pipe.scheduler.config)
    shape = (1, 4, height // 8, width // 8)
    args = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance)
    captured = {}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        return kw

    if gen == "torch":
        g = torch.Generator("cpu").manual_seed(seed)
        variation = torch.randn(shape, generator=torch.Generator("cpu").manual_seed(vseed))
    else:
        box["g"] = CudaStream(seed)
        variation = torch.from_numpy(CudaStream(vseed).randn(shape))
        g = torch.Generator("cpu")  # a token: the draws come from box["g"]
    if kind == "txt2img":
        start = torch.randn(shape, generator=g) if gen == "torch" else torch.from_numpy(box["g"].randn(shape))
        args.update(width=width, height=height, latents=blend_batch(vstrength, start, variation))
    else:
        # diffusers' img2img draws the posterior sample, then the start noise:
        # the second draw is blended.
        import diffusers.utils.torch_utils as tu
        inner = tu.randn_tensor
        calls = {"n": 0}

        def blending(shape_, generator=None, device=None, dtype=None, layout=None):
            t = inner(shape_, generator=generator, device=device, dtype=dtype, layout=layout)
            calls["n"] += 1
            return blend_batch(vstrength, t, variation) if calls["n"] == 2 else t
        patch_randn_tensor(blending)
        args.update(image=Image.open(GOLDEN / "ddim_cfg.png").convert("RGB"), strength=strength)
    try:
        image = pipe(**args, generator=g, output_type="np", callback_on_step_end=on_end).images[0]
    finally:
        if kind != "txt2img":
            patch_randn_tensor(inner)
    return captured["latents"], np.asarray(image, dtype=np.float32)


def main() -> None:
    import importlib.metadata as md

    import diffusers  # noqa: F401  (load the modules to patch)
    import optimum.onnxruntime  # noqa: F401

    OUT.mkdir(parents=True, exist_ok=True)
    values = []
    for seed, vseed, strength in BLENDS:
        low = torch.randn((1, 4, 6, 10), generator=torch.Generator("cpu").manual_seed(seed))
        high = torch.randn((1, 4, 6, 10), generator=torch.Generator("cpu").manual_seed(vseed))
        values += [low.reshape(-1), high.reshape(-1), blend_batch(strength, low, high).reshape(-1)]
    np.save(OUT / "blend.npy", torch.cat(values).numpy().astype(np.float32))

    import diffusers.utils.torch_utils as tu

    box: dict = {}
    torch_draws, model_draws = tu.randn_tensor, randn_tensor_from(box)
    cases = []
    for case in CASES:
        name, kind, gen, kiln, cls, steps, guidance, width, height, seed, vseed, vstrength, strength = case
        # The CPU cases draw with torch itself; the CUDA ones from the model.
        patch_randn_tensor(torch_draws if gen == "torch" else model_draws)
        a, b = run(case, box), run(case, box)
        assert all(np.array_equal(x, y) for x, y in zip(a, b)), f"{name}: not deterministic"
        latents, image = a
        np.save(OUT / f"{name}.latents.npy", latents)
        np.save(OUT / f"{name}.image.npy", image)
        cases.append({
            "name": name, "kind": kind, "noise": gen, "kiln_scheduler": kiln, "scheduler": cls, "steps": steps,
            "guidance_scale": guidance, "width": width, "height": height, "seed": seed, "variation_seed": vseed,
            "variation_strength": vstrength, "strength": strength, "prompt": PROMPT, "negative_prompt": NEGATIVE,
            "latents": f"{name}.latents.npy", "image": f"{name}.image.npy",
        })
        print(f"{name}: latents max|.| {np.abs(latents).max():.4f}, image mean {image.mean():.6f}")
    meta = {
        "versions": {p: md.version(p) for p in ["torch", "diffusers", "optimum", "optimum-onnx", "onnxruntime", "numpy"]},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "blends": [{"seed": s, "variation_seed": v, "strength": k, "shape": [1, 4, 6, 10]} for s, v, k in BLENDS],
        "cases": cases,
    }
    (OUT / "cases.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
