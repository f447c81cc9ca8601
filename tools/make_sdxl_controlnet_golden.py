"""Golden outputs for Kiln's ControlNet on SDXL: diffusers'
StableDiffusionXLControlNetPipeline, ...XLControlNetImg2ImgPipeline and
...XLControlNetInpaintPipeline on the torch modules of tests/fixtures/tiny-sdxl
+ tests/fixtures/sdxl-controlnet, rebuilt exactly as
tools/make_sdxl_controlnet_fixture.py makes them (seeded), with every random
draw recorded.

Writes tests/fixtures/golden/sdxl_controlnet/<case>.{latents,image,draws}.npy
and cases.json; the control images are tests/fixtures/golden/controlnet/control_{a,b}.png
and the init image tests/fixtures/golden/ddim_cfg.png. Draw order: txt2img draws
the initial latents; img2img the VAE posterior sample, then the start noise;
inpaint (4-channel U-Net) as diffusers' SDXL inpainting: the picture's
posterior sample, the start noise, then the masked picture's posterior sample.

    /work/venv/bin/python tools/make_sdxl_controlnet_golden.py
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/golden/sdxl_controlnet"
CONTROLS = REPO / "tests/fixtures/golden/controlnet"
MASK = REPO / "tests/fixtures/golden/inpaint/mask.png"
sys.path.insert(0, str(REPO / "tools"))

PROMPT, NEGATIVE = "mossy stone brick wall", "blurry"

# name, pipeline, Kiln scheduler, steps, guidance, controls [(image, scale, start, end)], guess mode, strength
CASES = [
    ("euler_one", "txt2img", "euler", 8, 5.0, [("control_a.png", 0.8, 0.0, 1.0)], False, None),
    ("ddim_one", "txt2img", "ddim", 8, 5.0, [("control_a.png", 0.8, 0.0, 1.0)], False, None),
    ("ddim_two", "txt2img", "ddim", 8, 5.0, [("control_a.png", 0.6, 0.0, 1.0), ("control_b.png", 0.3, 0.0, 1.0)], False, None),
    ("euler_window", "txt2img", "euler", 10, 5.0, [("control_a.png", 1.0, 0.2, 0.7)], False, None),
    ("euler_guess", "txt2img", "euler", 8, 5.0, [("control_a.png", 0.9, 0.0, 1.0)], True, None),
    ("euler_img2img", "img2img", "euler", 10, 5.0, [("control_b.png", 0.7, 0.0, 1.0)], False, 0.6),
    ("ddim_inpaint", "inpaint", "ddim", 10, 5.0, [("control_a.png", 0.8, 0.0, 1.0)], False, 0.75),
]

SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}


def main():
    import diffusers
    from diffusers import (StableDiffusionXLControlNetImg2ImgPipeline, StableDiffusionXLControlNetInpaintPipeline,
                           StableDiffusionXLControlNetPipeline)
    from make_controlnet_golden import record_draws
    from make_sdxl_controlnet_fixture import build_controlnet, build_pipeline

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    base = build_pipeline()
    controlnet = build_controlnet(base.unet)
    images = {n: Image.open(CONTROLS / n).convert("RGB") for n in ("control_a.png", "control_b.png")}
    init = Image.open(REPO / "tests/fixtures/golden/ddim_cfg.png").convert("RGB")
    index = []
    for name, kind, sched, steps, guidance, controls, guess, strength in CASES:
        nets = controlnet if len(controls) == 1 else [controlnet] * len(controls)
        cls = {"txt2img": StableDiffusionXLControlNetPipeline, "img2img": StableDiffusionXLControlNetImg2ImgPipeline,
               "inpaint": StableDiffusionXLControlNetInpaintPipeline}[kind]
        parts = dict(vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2,
                     tokenizer=base.tokenizer, tokenizer_2=base.tokenizer_2, unet=base.unet, controlnet=nets,
                     scheduler=getattr(diffusers, SCHEDULERS[sched]).from_config(base.scheduler.config),
                     force_zeros_for_empty_prompt=True)
        pipe = cls(**parts)
        pipe.set_progress_bar_config(disable=True)
        draws, restore = record_draws()
        captured = {"t": []}

        def on_end(p, i, t, kw):
            captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
            captured["t"].append(float(t))
            return kw

        one = len(controls) == 1
        pick = lambda k: [c[k] for c in controls][0] if one else [c[k] for c in controls]
        control = pick(0)
        control = images[control] if one else [images[c] for c in control]
        kwargs = dict(
            prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance,
            controlnet_conditioning_scale=pick(1), control_guidance_start=pick(2), control_guidance_end=pick(3),
            guess_mode=guess, generator=torch.Generator().manual_seed(777), output_type="np",
            callback_on_step_end=on_end, height=64, width=64,
        )
        with torch.no_grad():
            if kind == "txt2img":
                out = pipe(image=control, **kwargs)
            elif kind == "img2img":
                out = pipe(image=init, control_image=control, strength=strength, **kwargs)
            else:
                out = pipe(image=init, mask_image=Image.open(MASK), control_image=control, strength=strength, **kwargs)
        restore()
        flat = np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32)
        np.save(OUT / f"{name}.latents.npy", captured["latents"])
        np.save(OUT / f"{name}.image.npy", out.images[0].astype(np.float32))
        np.save(OUT / f"{name}.draws.npy", flat)
        index.append({
            "name": name, "kind": kind, "kiln_scheduler": sched, "steps": steps, "guidance_scale": guidance,
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "guess_mode": guess, "strength": strength,
            "init_image": "../ddim_cfg.png" if kind != "txt2img" else None,
            "mask": "../inpaint/mask.png" if kind == "inpaint" else None,
            "controls": [{"image": c[0], "scale": c[1], "start": c[2], "end": c[3]} for c in controls],
            "draws_len": int(flat.size), "unet_timesteps": captured["t"],
        })
        print(name, "draws", flat.size, "timesteps", captured["t"], "latents max", float(np.abs(captured["latents"]).max()))
    with open(OUT / "cases.json", "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
