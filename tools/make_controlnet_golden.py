"""Golden outputs for Kiln's ControlNet: diffusers' StableDiffusionControlNetPipeline
(and ...ControlNetImg2ImgPipeline, ...ControlNetInpaintPipeline) on the torch modules of tests/fixtures/tiny-sd and
tests/fixtures/controlnet, rebuilt exactly as tools/make_tiny_fixture.py and
tools/make_controlnet_fixture.py make them (seeded), with every random draw recorded.

Writes tests/fixtures/golden/controlnet/<case>.{latents,image,draws}.npy,
control_a.png, control_b.png and cases.json. Draw order: txt2img draws the
initial latents only (deterministic schedulers); img2img the VAE posterior
sample, then the start noise; inpaint (4-channel U-Net, the latents blended
with the re-noised picture after each step, mask tests/fixtures/golden/inpaint/mask.png)
the picture's posterior sample, the start noise, then the masked picture's
posterior sample (drawn although a 4-channel U-Net does not use it).

With --inpaint9: diffusers' StableDiffusionControlNetInpaintPipeline with the
9-channel inpainting U-Net of tests/fixtures/variants/inpaint9 and the
ControlNet of its architecture (tools/make_controlnet_fixture.py --inpaint9),
written to tests/fixtures/golden/controlnet-inpaint9/. At full strength the
picture is not encoded for the latents: the start noise, then the masked
picture's posterior sample.

    /work/venv/bin/python tools/make_controlnet_golden.py
    /work/venv/bin/python tools/make_controlnet_golden.py --inpaint9
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/golden/controlnet"
sys.path.insert(0, str(REPO / "tools"))

PROMPT, NEGATIVE = "mossy stone brick wall", "blurry"

# name, pipeline, Kiln scheduler, steps, guidance, controls [(image, scale, start, end)], guess mode, strength
CASES = [
    ("ddim_one", "txt2img", "ddim", 8, 7.5, [("control_a.png", 0.8, 0.0, 1.0)], False, None),
    ("euler_one", "txt2img", "euler", 8, 7.5, [("control_a.png", 0.8, 0.0, 1.0)], False, None),
    ("ddim_two", "txt2img", "ddim", 8, 7.5, [("control_a.png", 0.6, 0.0, 1.0), ("control_b.png", 0.3, 0.0, 1.0)], False, None),
    ("ddim_window", "txt2img", "ddim", 10, 7.5, [("control_a.png", 1.0, 0.2, 0.7)], False, None),
    ("ddim_guess", "txt2img", "ddim", 8, 7.5, [("control_a.png", 0.9, 0.0, 1.0)], True, None),
    ("ddim_noguide", "txt2img", "ddim", 8, 1.0, [("control_b.png", 1.0, 0.0, 1.0)], False, None),
    ("ddim_img2img", "img2img", "ddim", 10, 7.5, [("control_b.png", 0.7, 0.0, 1.0)], False, 0.6),
    ("ddim_inpaint", "inpaint", "ddim", 10, 7.5, [("control_a.png", 0.8, 0.0, 1.0)], False, 0.75),
    ("euler_inpaint_full", "inpaint", "euler", 8, 7.5, [("control_b.png", 1.0, 0.0, 1.0)], False, 1.0),
]

# With tests/fixtures/variants/inpaint9's 9-channel U-Net (latents, mask,
# masked picture's latents) and the 4-channel ControlNet of its architecture
# (tools/make_controlnet_fixture.py --inpaint9): the net sees the latents
# without the mask channels.
INPAINT9_CASES = [
    ("ddim_inpaint9", "inpaint", "ddim", 8, 7.5, [("control_a.png", 0.8, 0.0, 1.0)], False, 1.0),
    ("euler_inpaint9_window", "inpaint", "euler", 8, 7.5, [("control_b.png", 1.0, 0.0, 0.6)], False, 0.75),
    ("ddim_inpaint9_two", "inpaint", "ddim", 8, 7.5, [("control_a.png", 0.6, 0.0, 1.0), ("control_b.png", 0.4, 0.0, 1.0)],
     False, 1.0),
    ("ddim_inpaint9_guess", "inpaint", "ddim", 8, 7.5, [("control_a.png", 0.9, 0.0, 1.0)], True, 1.0),
]
OUT_INPAINT9 = REPO / "tests/fixtures/golden/controlnet-inpaint9"

MASK = REPO / "tests/fixtures/golden/inpaint/mask.png"

SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}


def control_images():
    """Two 64x64 pictures with structure (edges, a disc, a ramp)."""
    y, x = np.mgrid[0:64, 0:64]
    a = np.zeros((64, 64, 3), np.uint8)
    a[(x // 8 + y // 8) % 2 == 0] = (255, 255, 255)  # checker edges
    a[((x - 40) ** 2 + (y - 24) ** 2) < 150] = (0, 0, 0)
    b = np.stack([x * 4, y * 4, ((x + y) * 2) % 256], -1).astype(np.uint8)
    b[20:44, 8:56] = (255, 128, 0)
    return Image.fromarray(a), Image.fromarray(b)


def record_draws():
    import diffusers.utils.torch_utils as tu

    draws = []
    original = tu.randn_tensor

    def recording(*args, **kwargs):
        t = original(*args, **kwargs)
        draws.append(t.detach().cpu().numpy().astype(np.float32).copy())
        return t

    for name, module in list(sys.modules.items()):
        if name.startswith("diffusers") and getattr(module, "randn_tensor", None) is original:
            module.randn_tensor = recording
    tu.randn_tensor = recording
    return draws, lambda: [setattr(m, "randn_tensor", original) for n, m in list(sys.modules.items())
                           if n.startswith("diffusers") and getattr(m, "randn_tensor", None) is recording]


def main():
    from diffusers import ControlNetModel
    from make_controlnet_fixture import TINY, inpaint9_unet, randomize, small_controlnet
    from make_tiny_fixture import build_pipeline

    base = build_pipeline(TINY / "tokenizer")
    if "--inpaint9" in sys.argv[1:]:
        # The 9-channel inpainting variant's U-Net (text encoder and VAE are
        # tiny-sd's) with the ControlNet of its architecture.
        run_cases(INPAINT9_CASES, OUT_INPAINT9, base, inpaint9_unet(), small_controlnet())
    else:
        controlnet = randomize(ControlNetModel.from_unet(base.unet, conditioning_embedding_out_channels=(16, 16, 32, 32)), seed=17)
        run_cases(CASES, OUT, base, base.unet, controlnet)


def run_cases(cases, out_dir, base, unet, controlnet):
    import diffusers
    from diffusers import (StableDiffusionControlNetImg2ImgPipeline, StableDiffusionControlNetInpaintPipeline,
                           StableDiffusionControlNetPipeline)

    out_dir.mkdir(parents=True, exist_ok=True)
    a, b = control_images()
    if out_dir == OUT:  # the tests read them from there for every case set
        a.save(out_dir / "control_a.png")
        b.save(out_dir / "control_b.png")
    images = {"control_a.png": a, "control_b.png": b}
    init = Image.open(REPO / "tests/fixtures/golden/ddim_cfg.png").convert("RGB")
    index = []
    for name, kind, sched, steps, guidance, controls, guess, strength in cases:
        nets = controlnet if len(controls) == 1 else [controlnet] * len(controls)
        cls = {"txt2img": StableDiffusionControlNetPipeline, "img2img": StableDiffusionControlNetImg2ImgPipeline,
               "inpaint": StableDiffusionControlNetInpaintPipeline}[kind]
        pipe = cls(vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=unet, controlnet=nets,
                   scheduler=getattr(diffusers, SCHEDULERS[sched]).from_config(base.scheduler.config),
                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
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
            prompt=PROMPT, negative_prompt=NEGATIVE if guidance > 1 else None, num_inference_steps=steps,
            guidance_scale=guidance, controlnet_conditioning_scale=pick(1), control_guidance_start=pick(2),
            control_guidance_end=pick(3), guess_mode=guess, generator=torch.Generator().manual_seed(777),
            output_type="np", callback_on_step_end=on_end,
        )
        with torch.no_grad():
            if kind == "txt2img":
                out = pipe(image=control, height=64, width=64, **kwargs)
            elif kind == "img2img":
                out = pipe(image=init, control_image=control, strength=strength, height=64, width=64, **kwargs)
            else:
                mask = Image.open(MASK)
                out = pipe(image=init, mask_image=mask, control_image=control, strength=strength, height=64, width=64,
                           **kwargs)
        restore()
        flat = np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32)
        np.save(out_dir / f"{name}.latents.npy", captured["latents"])
        np.save(out_dir / f"{name}.image.npy", out.images[0].astype(np.float32))
        np.save(out_dir / f"{name}.draws.npy", flat)
        index.append({
            "name": name, "kind": kind, "kiln_scheduler": sched, "steps": steps, "guidance_scale": guidance,
            "prompt": PROMPT, "negative_prompt": NEGATIVE if guidance > 1 else "", "guess_mode": guess,
            "strength": strength, "init_image": "../ddim_cfg.png" if kind != "txt2img" else None,
            "mask": "../inpaint/mask.png" if kind == "inpaint" else None,
            "controls": [{"image": c[0], "scale": c[1], "start": c[2], "end": c[3]} for c in controls],
            "draws_len": int(flat.size), "unet_timesteps": captured["t"],
        })
        print(name, "draws", flat.size, "timesteps", captured["t"], "latents max", float(np.abs(captured["latents"]).max()))
    with open(out_dir / "cases.json", "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
