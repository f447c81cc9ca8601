#!/usr/bin/env python3
"""Golden outputs for Kiln's SDXL inpainting: optimum's
ORTStableDiffusionXLInpaintPipeline on tests/fixtures/tiny-sdxl (a 4-channel
U-Net, so the pipeline blends the latents with the re-noised init picture
after every step), every random draw recorded (tools/make_sdxl_golden.py
record_draws). Same init picture and mask as the SD 1.5 inpainting goldens
(tests/fixtures/golden/ddim_cfg.png, golden/inpaint/mask.png).

Writes tests/fixtures/golden/sdxl_inpaint/<case>.{latents,image,draws}.npy
and cases.json.

    /work/venv/bin/python tools/make_sdxl_inpaint_golden.py
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_sdxl_golden import FIXTURE, PROMPT, SCHEDULERS, record_draws  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests/fixtures/golden/sdxl_inpaint")
# name, Kiln scheduler, steps, strength, guidance
CASES = [
    ("euler_s075", "euler", 8, 0.75, 5.0),
    ("ddim_s1", "ddim", 6, 1.0, 6.0),
]


def run(name, kiln, steps, strength, guidance, init, mask):
    import diffusers
    from optimum.onnxruntime import ORTStableDiffusionXLInpaintPipeline

    pipe = ORTStableDiffusionXLInpaintPipeline.from_pretrained(FIXTURE, provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = getattr(diffusers, SCHEDULERS[kiln][0]).from_config(dict(pipe.scheduler.config))
    draws = record_draws()
    captured = {"t": []}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        captured["t"].append(float(t))
        return kw

    out = pipe(
        prompt=PROMPT, negative_prompt="blurry", image=init, mask_image=mask, strength=strength,
        num_inference_steps=steps, guidance_scale=guidance, generator=torch.Generator().manual_seed(31),
        output_type="np", callback_on_step_end=on_end, height=64, width=64,
    )
    return {
        "latents": captured["latents"],
        "image": out.images[0].astype(np.float32),
        "draws": np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32),
        "timesteps": captured["t"],
    }


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.makedirs(OUT, exist_ok=True)
    init = Image.open(os.path.join(ROOT, "tests/fixtures/golden/ddim_cfg.png")).convert("RGB")
    mask = Image.open(os.path.join(ROOT, "tests/fixtures/golden/inpaint/mask.png"))
    index = []
    for name, kiln, steps, strength, guidance in CASES:
        a = run(name, kiln, steps, strength, guidance, init, mask)
        b = run(name, kiln, steps, strength, guidance, init, mask)
        for k in ("latents", "image", "draws"):
            assert np.array_equal(a[k], b[k]), f"{name}: {k} not deterministic"
            np.save(os.path.join(OUT, f"{name}.{k}.npy"), a[k])
        index.append({"name": name, "kiln_scheduler": kiln, "scheduler": SCHEDULERS[kiln][0], "steps": steps,
                      "strength": strength, "guidance_scale": guidance, "prompt": PROMPT, "negative_prompt": "blurry",
                      "draws": int(a["draws"].size), "unet_timesteps": a["timesteps"]})
        print(name, a["draws"].size, a["timesteps"])
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
