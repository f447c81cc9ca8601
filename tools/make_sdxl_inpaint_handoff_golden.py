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
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
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


def pipeline(cls, folder, kiln):
    import diffusers

    pipe = cls.from_pretrained(str(folder), provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    sched_cls, extra = sdxl_golden.SCHEDULERS[kiln]
    pipe.scheduler = getattr(diffusers, sched_cls).from_config(dict(pipe.scheduler.config), **extra)
    return pipe


def run(base_folder, refiner_folder, kiln, steps, guidance, split, strength, kwargs):
    from optimum.onnxruntime import ORTStableDiffusionXLInpaintPipeline

    base = pipeline(ORTStableDiffusionXLInpaintPipeline, base_folder, kiln)
    ref = pipeline(ORTStableDiffusionXLInpaintPipeline, refiner_folder, kiln)
    init, mask = Image.open(INIT).convert("RGB"), Image.open(MASK)
    assert ref.config.requires_aesthetics_score and ref.text_encoder is None
    draws = sdxl_golden.record_draws()
    captured = {"base_t": [], "refiner_t": []}

    def on_end(key):
        def cb(p, i, t, kw):
            captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
            captured[key].append(float(t))
            return kw
        return cb

    handoff = base(
        prompt=PROMPT, image=init, mask_image=mask, strength=strength, height=64, width=64, num_inference_steps=steps, guidance_scale=guidance, denoising_end=split,
        output_type="latent", generator=torch.Generator().manual_seed(777),
        callback_on_step_end=on_end("base_t"), **kwargs,
    ).images
    handoff_np = handoff.detach().cpu().numpy().astype(np.float32).copy()
    out = ref(
        prompt=PROMPT, image=handoff, mask_image=mask, height=64, width=64, num_inference_steps=steps, guidance_scale=guidance,
        denoising_start=split, output_type="np", generator=torch.Generator().manual_seed(778),
        callback_on_step_end=on_end("refiner_t"), **kwargs,
    )
    return {
        "handoff": handoff_np,
        "latents": captured["latents"],
        "image": out.images[0].astype(np.float32),
        "draws": np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32),
        "base_t": captured["base_t"],
        "refiner_t": captured["refiner_t"],
    }


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    index = []
    with tempfile.TemporaryDirectory(prefix="kiln_inpaint_handoff_golden_") as tmp:
        refiner_folder = refiner.assemble(refiner.DEFAULT_OUT, Path(tmp) / "refiner")
        for name, kiln, steps, guidance, split, strength, kwargs in CASES:
            a = run(sdxl_golden.FIXTURE, refiner_folder, kiln, steps, guidance, split, strength, kwargs)
            b = run(sdxl_golden.FIXTURE, refiner_folder, kiln, steps, guidance, split, strength, kwargs)
            for k in ("handoff", "latents", "image", "draws"):
                assert np.array_equal(a[k], b[k]), f"{name}: {k} not deterministic"
                np.save(OUT / f"{name}.{k}.npy", a[k])
            index.append({
                "name": name, "kiln_scheduler": kiln, "scheduler": sdxl_golden.SCHEDULERS[kiln][0],
                "steps": steps, "guidance_scale": guidance, "refiner_start": split, "strength": strength, "prompt": PROMPT,
                "init_image": "../ddim_cfg.png", "mask": "../inpaint/mask.png",
                "base_timesteps": a["base_t"], "refiner_timesteps": a["refiner_t"],
                "draws_len": int(a["draws"].size), **kwargs,
            })
            print(name, "base", a["base_t"], "refiner", a["refiner_t"], "draws", a["draws"].size)
    with open(OUT / "cases.json", "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
