#!/usr/bin/env python3
"""Golden outputs for img2img and inpainting with the `lcm` scheduler, every
random draw recorded (the VAE posterior sample, the start noise, [inpainting:
the masked picture's posterior sample,] then LCM's per-step noise):

- an LCM-distilled U-Net (tests/fixtures/variants/lcm-unet, `timestep_cond`)
  through optimum's ORTLatentConsistencyModelImg2ImgPipeline: diffusers'
  LCMScheduler.set_timesteps(steps, strength=s) takes the schedule from the
  first int(original_inference_steps * s) distillation timesteps and runs
  every one of the `steps` steps;
- a plain U-Net (tiny-sd, as with an LCM-LoRA) with LCMScheduler through
  ORTStableDiffusionImg2ImgPipeline and ORTStableDiffusionInpaintPipeline:
  the full LCM schedule, trimmed by the strength as for every scheduler.

Writes tests/fixtures/golden/lcm_img2img/<case>.{latents,image,draws}.npy and
cases.json. Init image: tests/fixtures/golden/ddim_cfg.png; inpainting mask:
tests/fixtures/golden/inpaint/mask.png.

    /work/venv/bin/python tools/make_lcm_img2img_golden.py
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_sdxl_golden as draws_helper  # noqa: E402  (record_draws)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/golden/lcm_img2img"
PROMPT = "mossy stone brick wall"

# name, model ("lcm-unet" or "tiny-sd"), pipeline, steps, strength, guidance, negative prompt
CASES = [
    ("lcm_unet_s06", "lcm-unet", "lcm_img2img", 4, 0.6, 8.0, None),
    ("lcm_unet_s03_6steps", "lcm-unet", "lcm_img2img", 6, 0.3, 8.0, None),
    ("plain_unet_s05", "tiny-sd", "img2img", 4, 0.5, 1.5, "blurry"),
    ("plain_unet_inpaint_s075", "tiny-sd", "inpaint", 4, 0.75, 1.5, "blurry"),
]


def assemble_variant(name: str, dest: Path) -> Path:
    """The variant folder as tests/common assembles it: the base's files, then the variant's."""
    vdir = ROOT / "tests/fixtures/variants" / name
    spec = json.loads((vdir / "variant.json").read_text())
    base = (vdir / spec["base"]).resolve()
    for rel in spec["from_base"]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(base / rel, dest / rel)
    for p in vdir.rglob("*"):
        rel = p.relative_to(vdir)
        if p.is_file() and str(rel) not in ("variant.json", "README.md"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(p, dest / rel)
    return dest


def run(folder, pipeline, steps, strength, guidance, negative, init, mask):
    import diffusers
    from optimum.onnxruntime import (ORTLatentConsistencyModelImg2ImgPipeline, ORTStableDiffusionImg2ImgPipeline,
                                     ORTStableDiffusionInpaintPipeline)

    cls = {"lcm_img2img": ORTLatentConsistencyModelImg2ImgPipeline, "img2img": ORTStableDiffusionImg2ImgPipeline,
           "inpaint": ORTStableDiffusionInpaintPipeline}[pipeline]
    pipe = cls.from_pretrained(str(folder), provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = diffusers.LCMScheduler.from_config(dict(pipe.scheduler.config))
    draws = draws_helper.record_draws()
    captured = {"t": []}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        captured["t"].append(float(t))
        return kw

    kwargs = {"mask_image": mask} if pipeline == "inpaint" else {}
    if negative is not None:
        kwargs["negative_prompt"] = negative
    out = pipe(prompt=PROMPT, image=init, strength=strength, num_inference_steps=steps, guidance_scale=guidance,
               generator=torch.Generator().manual_seed(777), output_type="np", callback_on_step_end=on_end, **kwargs)
    return {
        "latents": captured["latents"],
        "image": out.images[0].astype(np.float32),
        "draws": np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32),
        "timesteps": captured["t"],
    }


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    init = Image.open(ROOT / "tests/fixtures/golden/ddim_cfg.png").convert("RGB")
    mask = Image.open(ROOT / "tests/fixtures/golden/inpaint/mask.png").convert("L")
    index = []
    with tempfile.TemporaryDirectory(prefix="kiln_lcm_golden_") as tmp:
        folders = {"lcm-unet": assemble_variant("lcm-unet", Path(tmp) / "lcm-unet"), "tiny-sd": ROOT / "tests/fixtures/tiny-sd"}
        for name, model, pipeline, steps, strength, guidance, negative in CASES:
            a = run(folders[model], pipeline, steps, strength, guidance, negative, init, mask)
            b = run(folders[model], pipeline, steps, strength, guidance, negative, init, mask)
            for k in ("latents", "image", "draws"):
                assert np.array_equal(a[k], b[k]), f"{name}: {k} not deterministic"
                np.save(OUT / f"{name}.{k}.npy", a[k])
            index.append({
                "name": name, "model": model, "pipeline": pipeline, "steps": steps, "strength": strength,
                "guidance_scale": guidance, "prompt": PROMPT, "negative_prompt": negative or "",
                "init_image": "../ddim_cfg.png", **({"mask": "../inpaint/mask.png"} if pipeline == "inpaint" else {}),
                "unet_timesteps": a["timesteps"], "draws_len": int(a["draws"].size),
            })
            print(name, "timesteps", a["timesteps"], "draws", a["draws"].size)
    with open(OUT / "cases.json", "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
