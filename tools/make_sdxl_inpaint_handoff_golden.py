#!/usr/bin/env python3
"""Golden outputs for Kiln's SDXL base-to-refiner hand-off with inpainting
(diffusers' documented inpainting ensemble): optimum's
ORTStableDiffusionXLInpaintPipeline on tests/fixtures/tiny-sdxl with
`image=<picture>, mask_image=<mask>, strength=s, denoising_end=f,
output_type="latent"`, then ORTStableDiffusionXLInpaintPipeline on the
refiner-style fixture (tests/fixtures/sdxl-refiner over tiny-sdxl's shared
files) with `image=<those latents>, mask_image=<the same mask>,
denoising_start=f`. Both U-Nets have 4 channels. Every random draw of both
calls is recorded in order: the base's picture posterior sample, its start
noise, its masked-picture posterior sample, its per-step noise; then the
refiner's one latent-shaped draw (`prepare_latents` with `add_noise=False`
draws the noise it re-noises the kept area with; its `image_latents`, the
kept area's content, are the base's latents as handed over) and its per-step
noise.

Writes tests/fixtures/golden/sdxl_inpaint_handoff/<case>.{handoff,latents,image,draws}.npy
and cases.json (both stages' U-Net timesteps). Picture
tests/fixtures/golden/ddim_cfg.png, mask tests/fixtures/golden/inpaint/mask.png.

    /work/venv/bin/python tools/make_sdxl_inpaint_handoff_golden.py
"""
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import handoff_golden  # noqa: E402
import make_sdxl_golden as sdxl_golden  # noqa: E402
import make_sdxl_refiner_fixture as refiner  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/golden/sdxl_inpaint_handoff"
INIT = ROOT / "tests/fixtures/golden/ddim_cfg.png"
MASK = ROOT / "tests/fixtures/golden/inpaint/mask.png"
PROMPT = "mossy stone brick wall"

# name, kiln scheduler, steps, guidance, hand-off fraction, base strength, extra kwargs for both pipelines
CASES = [
    ("euler_08", "euler", 10, 5.0, 0.8, 1.0, {}),
    ("dpmpp_2m_07", "dpmpp_2m", 10, 6.0, 0.7, 0.8, {"negative_prompt": "blurry"}),
    # Stochastic: the refiner's draws follow the base's in the stream.
    ("euler_a_06", "euler_a", 8, 5.0, 0.6, 1.0, {"negative_prompt": "blurry"}),
]


def run(base_folder, refiner_folder, kiln, steps, guidance, split, strength, kwargs):
    from optimum.onnxruntime import ORTStableDiffusionXLInpaintPipeline

    base = handoff_golden.ort_pipeline(ORTStableDiffusionXLInpaintPipeline, base_folder, kiln)
    ref = handoff_golden.ort_pipeline(ORTStableDiffusionXLInpaintPipeline, refiner_folder, kiln)
    init, mask = Image.open(INIT).convert("RGB"), Image.open(MASK)
    assert ref.config.requires_aesthetics_score and ref.text_encoder is None
    draws = sdxl_golden.record_draws()
    both = dict(prompt=PROMPT, mask_image=mask, height=64, width=64, num_inference_steps=steps, guidance_scale=guidance, **kwargs)
    return handoff_golden.two_stages(base, ref, split, draws, both, dict(image=init, strength=strength))


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="kiln_inpaint_handoff_golden_") as tmp:
        refiner_folder = refiner.assemble(refiner.DEFAULT_OUT, Path(tmp) / "refiner")
        handoff_golden.write(
            OUT, CASES,
            lambda c: run(sdxl_golden.FIXTURE, refiner_folder, *c[1:]),
            lambda c, a: {
                "name": c[0], "kiln_scheduler": c[1], "scheduler": sdxl_golden.SCHEDULERS[c[1]][0],
                "steps": c[2], "guidance_scale": c[3], "refiner_start": c[4], "strength": c[5], "prompt": PROMPT,
                "init_image": "../ddim_cfg.png", "mask": "../inpaint/mask.png",
                "base_timesteps": a["base_t"], "refiner_timesteps": a["refiner_t"],
                "draws_len": int(a["draws"].size), **c[6],
            },
        )


if __name__ == "__main__":
    main()
