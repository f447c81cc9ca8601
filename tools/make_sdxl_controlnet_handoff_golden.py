#!/usr/bin/env python3
"""Golden outputs for Kiln's SDXL base-to-refiner hand-off with a ControlNet on
the base (diffusers' common workflow): StableDiffusionXLControlNetPipeline on
the torch modules of tests/fixtures/tiny-sdxl + tests/fixtures/sdxl-controlnet
(rebuilt, seeded, as tools/make_sdxl_controlnet_golden.py does) with
`denoising_end=f, output_type="latent"`, then optimum's
ORTStableDiffusionXLImg2ImgPipeline on the refiner-style fixture
(tests/fixtures/sdxl-refiner over tiny-sdxl's shared files) with
`image=<those latents>, denoising_start=f` and no ControlNet, every random
draw of both calls recorded in order (the base's initial latents, then any
per-step noise of either stage).

The ControlNet's `control_guidance_start/end` window is a fraction of the
whole schedule: diffusers computes `controlnet_keep` over all timesteps
before `denoising_end` cuts them (the `euler_window` case ends the window
inside the base's part, where a window over the cut schedule would differ).

Writes tests/fixtures/golden/sdxl_controlnet_handoff/<case>.{handoff,latents,image,draws}.npy
and cases.json (both stages' U-Net timesteps; the control images are
tests/fixtures/golden/controlnet/control_{a,b}.png).

    /work/venv/bin/python tools/make_sdxl_controlnet_handoff_golden.py
"""
import os
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/golden/sdxl_controlnet_handoff"
CONTROLS = REPO / "tests/fixtures/golden/controlnet"
sys.path.insert(0, str(REPO / "tools"))

import handoff_golden  # noqa: E402
import make_sdxl_golden as sdxl_golden  # noqa: E402
import make_sdxl_refiner_fixture as refiner_fixture  # noqa: E402

PROMPT, NEGATIVE = "mossy stone brick wall", "blurry"

# name, Kiln scheduler, steps, guidance, hand-off fraction, control (image, scale, start, end)
CASES = [
    ("euler_08", "euler", 10, 5.0, 0.8, ("control_a.png", 0.8, 0.0, 1.0)),
    ("dpmpp_2m_07", "dpmpp_2m", 10, 6.0, 0.7, ("control_b.png", 0.9, 0.0, 1.0)),
    # The window ends at 0.6 of 10 steps (steps 1..5 kept): over the base's
    # 8 cut steps it would keep steps 1..3 only.
    ("euler_window", "euler", 10, 5.0, 0.8, ("control_a.png", 1.0, 0.1, 0.6)),
]


def scheduler(kiln, config):
    import diffusers

    cls, extra = sdxl_golden.SCHEDULERS[kiln]
    return getattr(diffusers, cls).from_config(dict(config), **extra)


def run(parts, base_config, refiner_folder, kiln, steps, guidance, split, control):
    from diffusers import StableDiffusionXLControlNetPipeline
    from optimum.onnxruntime import ORTStableDiffusionXLImg2ImgPipeline

    base = StableDiffusionXLControlNetPipeline(**parts, scheduler=scheduler(kiln, base_config))
    base.set_progress_bar_config(disable=True)
    ref = ORTStableDiffusionXLImg2ImgPipeline.from_pretrained(
        str(refiner_folder), provider="CPUExecutionProvider", local_files_only=True)
    ref.set_progress_bar_config(disable=True)
    ref.scheduler = scheduler(kiln, ref.scheduler.config)
    assert ref.config.requires_aesthetics_score and ref.text_encoder is None
    draws = sdxl_golden.record_draws()
    image, scale, start, end = control
    both = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance)
    control_args = dict(
        image=Image.open(CONTROLS / image).convert("RGB"), controlnet_conditioning_scale=scale,
        control_guidance_start=start, control_guidance_end=end, height=64, width=64,
    )
    return handoff_golden.two_stages(base, ref, split, draws, both, control_args)


def main():
    # Import every pipeline module before wrapping randn_tensor in them.
    from diffusers import StableDiffusionXLControlNetPipeline  # noqa: F401
    from optimum.onnxruntime import ORTStableDiffusionXLImg2ImgPipeline  # noqa: F401
    from make_sdxl_controlnet_fixture import build_controlnet, build_pipeline

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    pipe = build_pipeline()
    parts = dict(vae=pipe.vae, text_encoder=pipe.text_encoder, text_encoder_2=pipe.text_encoder_2,
                 tokenizer=pipe.tokenizer, tokenizer_2=pipe.tokenizer_2, unet=pipe.unet,
                 controlnet=build_controlnet(pipe.unet), force_zeros_for_empty_prompt=True)
    with tempfile.TemporaryDirectory(prefix="kiln_cn_handoff_golden_") as tmp:
        refiner_folder = refiner_fixture.assemble(refiner_fixture.DEFAULT_OUT, Path(tmp) / "refiner")
        handoff_golden.write(
            OUT, CASES,
            lambda c: run(parts, pipe.scheduler.config, refiner_folder, *c[1:]),
            lambda c, a: {
                "name": c[0], "kiln_scheduler": c[1], "scheduler": sdxl_golden.SCHEDULERS[c[1]][0],
                "steps": c[2], "guidance_scale": c[3], "refiner_start": c[4],
                "prompt": PROMPT, "negative_prompt": NEGATIVE,
                "controls": [{"image": c[5][0], "scale": c[5][1], "start": c[5][2], "end": c[5][3]}],
                "base_timesteps": a["base_t"], "refiner_timesteps": a["refiner_t"], "draws_len": int(a["draws"].size),
            },
        )


if __name__ == "__main__":
    main()
