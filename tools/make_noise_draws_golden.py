"""Goldens for `generate --noise-draws FILE.npz`: diffusers' own random draws, recorded
as the CLI reads them, and the images they give.

For each case this runs optimum's ORT pipeline on tests/fixtures/tiny-sd with every
`randn_tensor` draw recorded (tools/make_img2img_golden.py's recorder), then writes
tests/fixtures/golden/noise_draws/:
  <case>.draws.npz    arrays draw_0, draw_1, ... in the order diffusers asked for them,
                      after the txt2img initial latents (those go to --init-noise):
                      img2img: the VAE posterior sample, the add-noise draw, then the
                      stochastic sampler's per-step draws; txt2img: the per-step draws
  <case>.init.npy     txt2img only: the initial latents (draw 0 of the pipeline)
  <case>.latents.npy, <case>.image.npy   the reference result
  cases.json

    /work/venv/bin/python tools/make_noise_draws_golden.py
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_img2img_golden import make_scheduler, record_draws  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests/fixtures/tiny-sd")
OUT = os.path.join(ROOT, "tests/fixtures/golden/noise_draws")
INIT_IMAGE = "tests/fixtures/golden/ddim_cfg.png"

# name, pipeline, Kiln scheduler, steps, strength, guidance, seed
CASES = [
    ("euler_a_txt2img", "txt2img", "euler_a", 8, None, 5.0, 123),
    ("dpmpp_2m_sde_img2img", "img2img", "dpmpp_2m_sde", 10, 0.6, 5.0, 321),
]
EXTRA = {"euler_a": ("EulerAncestralDiscreteScheduler", {})}


def scheduler_for(kiln_name, config):
    if kiln_name in EXTRA:
        import diffusers

        cls, extra = EXTRA[kiln_name]
        return getattr(diffusers, cls).from_config(config, **extra)
    return make_scheduler(kiln_name, config)


def run(kind, kiln_name, steps, strength, guidance, seed):
    from optimum.onnxruntime import ORTStableDiffusionImg2ImgPipeline, ORTStableDiffusionPipeline

    cls = ORTStableDiffusionPipeline if kind == "txt2img" else ORTStableDiffusionImg2ImgPipeline
    pipe = cls.from_pretrained(FIXTURE, provider="CPUExecutionProvider")
    pipe.scheduler = scheduler_for(kiln_name, pipe.scheduler.config)
    draws = record_draws()
    captured = {}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        return kw

    args = dict(prompt="mossy stone brick wall", negative_prompt="blurry", num_inference_steps=steps,
                guidance_scale=guidance, generator=torch.Generator().manual_seed(seed), output_type="np",
                callback_on_step_end=on_end)
    if kind == "img2img":
        args.update(image=Image.open(os.path.join(ROOT, INIT_IMAGE)).convert("RGB"), strength=strength)
    out = pipe(**args)
    return captured["latents"], out.images[0].astype(np.float32), [d.copy() for d in draws]


def main():
    os.makedirs(OUT, exist_ok=True)
    index = []
    for name, kind, kiln_name, steps, strength, guidance, seed in CASES:
        a = run(kind, kiln_name, steps, strength, guidance, seed)
        b = run(kind, kiln_name, steps, strength, guidance, seed)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]), f"{name}: not deterministic"
        latents, image, draws = a
        entry = {"name": name, "pipeline": kind, "kiln_scheduler": kiln_name, "steps": steps,
                 "guidance_scale": guidance, "prompt": "mossy stone brick wall", "negative_prompt": "blurry",
                 "draws": f"{name}.draws.npz"}
        if kind == "txt2img":
            np.save(os.path.join(OUT, f"{name}.init.npy"), draws[0])
            entry["init_noise"] = f"{name}.init.npy"
            draws = draws[1:]
        else:
            entry["strength"] = strength
            entry["init_image"] = INIT_IMAGE
        np.savez(os.path.join(OUT, f"{name}.draws.npz"), **{f"draw_{i}": d for i, d in enumerate(draws)})
        np.save(os.path.join(OUT, f"{name}.latents.npy"), latents)
        np.save(os.path.join(OUT, f"{name}.image.npy"), image)
        entry["draw_count"] = len(draws)
        index.append(entry)
        print(name, "draws", len(draws))
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
