#!/usr/bin/env python3
"""Golden outputs for Kiln's SDXL base-to-refiner hand-off (diffusers'
"ensemble of expert denoisers"): optimum's ORTStableDiffusionXLPipeline on
tests/fixtures/tiny-sdxl with `denoising_end=f, output_type="latent"`, then
ORTStableDiffusionXLImg2ImgPipeline on the refiner-style fixture
(tests/fixtures/sdxl-refiner over tiny-sdxl's shared files) with
`image=<those latents>, denoising_start=f`, every random draw of both calls
recorded in order (the base's initial latents, its per-step noise, then the
refiner's per-step noise: with `denoising_start` the refiner adds no noise).

Writes tests/fixtures/golden/sdxl_handoff/<case>.{handoff,latents,image,draws}.npy
(`handoff`: the base's latents as the refiner receives them) and cases.json
(both stages' U-Net timesteps).

    /work/venv/bin/python tools/make_sdxl_handoff_golden.py
"""
import os
import sys
import tempfile
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
import handoff_golden  # noqa: E402
import make_sdxl_golden as sdxl_golden  # noqa: E402
import make_sdxl_refiner_fixture as refiner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/golden/sdxl_handoff"
PROMPT = "mossy stone brick wall"

# name, kiln scheduler, steps, guidance, hand-off fraction, extra kwargs for both pipelines
CASES = [
    ("euler_08", "euler", 10, 5.0, 0.8, {}),
    ("dpmpp_2m_07", "dpmpp_2m", 10, 6.0, 0.7, {"negative_prompt": "blurry"}),
    # Stochastic: the refiner's per-step draws follow the base's in the stream.
    ("euler_a_06", "euler_a", 8, 5.0, 0.6, {"negative_prompt": "blurry"}),
]


def run(base_folder, refiner_folder, kiln, steps, guidance, split, kwargs, prompt=PROMPT):
    from optimum.onnxruntime import ORTStableDiffusionXLImg2ImgPipeline, ORTStableDiffusionXLPipeline

    base = handoff_golden.ort_pipeline(ORTStableDiffusionXLPipeline, base_folder, kiln)
    ref = handoff_golden.ort_pipeline(ORTStableDiffusionXLImg2ImgPipeline, refiner_folder, kiln)
    assert ref.config.requires_aesthetics_score and ref.text_encoder is None
    draws = sdxl_golden.record_draws()
    both = dict(prompt=prompt, num_inference_steps=steps, guidance_scale=guidance, **kwargs)
    return handoff_golden.two_stages(base, ref, split, draws, both, {})


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln_handoff_golden_") as tmp:
        refiner_folder = refiner.assemble(refiner.DEFAULT_OUT, Path(tmp) / "refiner")
        handoff_golden.write(
            OUT, CASES,
            lambda c: run(sdxl_golden.FIXTURE, refiner_folder, *c[1:]),
            lambda c, a: {
                "name": c[0], "kiln_scheduler": c[1], "scheduler": sdxl_golden.SCHEDULERS[c[1]][0],
                "steps": c[2], "guidance_scale": c[3], "refiner_start": c[4], "prompt": PROMPT,
                "base_timesteps": a["base_t"], "refiner_timesteps": a["refiner_t"],
                "draws_len": int(a["draws"].size), **c[5],
            },
        )


if __name__ == "__main__":
    main()
