"""Golden outputs for Kiln's inpainting with an ordinary (4-channel) U-Net:
optimum's ORTStableDiffusionInpaintPipeline on tests/fixtures/tiny-sd with
every random draw recorded. Writes tests/fixtures/golden/inpaint/.

Draw order (what Kiln consumes): the init image's posterior sample, the start
noise, the masked image's posterior sample (drawn even though a 4-channel
U-Net does not use it), then per-step noise.

    /work/venv/bin/python tools/make_inpaint_golden.py
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_img2img_golden import record_draws  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests/fixtures/tiny-sd")
OUT = os.path.join(ROOT, "tests/fixtures/golden/inpaint")
CASES = [("ddim_s075", "DDIMScheduler", 8, 0.75), ("euler_s1", "EulerDiscreteScheduler", 8, 1.0)]


def main():
    from diffusers import DDIMScheduler, EulerDiscreteScheduler
    from optimum.onnxruntime import ORTStableDiffusionInpaintPipeline

    os.makedirs(OUT, exist_ok=True)
    init = Image.open(os.path.join(ROOT, "tests/fixtures/golden/ddim_cfg.png")).convert("RGB")
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 20:56] = 255  # repaint this rectangle
    Image.fromarray(mask).save(os.path.join(OUT, "mask.png"))
    index = []
    for name, cls, steps, strength in CASES:
        pipe = ORTStableDiffusionInpaintPipeline.from_pretrained(FIXTURE, provider="CPUExecutionProvider")
        klass = {"DDIMScheduler": DDIMScheduler, "EulerDiscreteScheduler": EulerDiscreteScheduler}[cls]
        pipe.scheduler = klass.from_config(pipe.scheduler.config)
        draws = record_draws()
        captured = {}

        def on_end(p, i, t, kw):
            captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
            return kw

        out = pipe(
            prompt="mossy stone brick wall", negative_prompt="blurry", image=init,
            mask_image=Image.fromarray(mask), strength=strength, num_inference_steps=steps, guidance_scale=7.5,
            generator=torch.Generator().manual_seed(31), output_type="np", callback_on_step_end=on_end,
            height=64, width=64,
        )
        flat = np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32)
        np.save(os.path.join(OUT, f"{name}.latents.npy"), captured["latents"])
        np.save(os.path.join(OUT, f"{name}.image.npy"), out.images[0].astype(np.float32))
        np.save(os.path.join(OUT, f"{name}.draws.npy"), flat)
        index.append({"name": name, "scheduler": cls, "steps": steps, "strength": strength, "guidance_scale": 7.5,
                      "prompt": "mossy stone brick wall", "negative_prompt": "blurry", "draws": int(flat.size)})
        print(name, flat.size)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
