#!/usr/bin/env python3
"""Golden outputs for Kiln's SDXL tests: optimum's ORTStableDiffusionXLPipeline
(and ORTStableDiffusionXLImg2ImgPipeline) on tests/fixtures/tiny-sdxl, with
every random draw recorded so Kiln can replay it.

Writes tests/fixtures/golden/sdxl/<case>.{latents,image,draws}.npy, the first
U-Net call's conditioning (<case>.{encoder_hidden_states,text_embeds,time_ids}.npy)
and cases.json. Draw order: txt2img takes the initial latents, then the per-step
noise of stochastic schedulers; img2img the VAE posterior sample, the noise
added at the start timestep, then per-step noise.

    /work/venv/bin/python tools/make_sdxl_golden.py
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests/fixtures/tiny-sdxl")
OUT = os.path.join(ROOT, "tests/fixtures/golden/sdxl")
PROMPT = "mossy stone brick wall"

# Kiln scheduler name -> diffusers class and config overrides.
SCHEDULERS = {
    "euler": ("EulerDiscreteScheduler", {}),
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "euler_a": ("EulerAncestralDiscreteScheduler", {}),
}

# name, kiln scheduler, steps, guidance, turbo config?, pipeline kwargs (besides prompt/steps/guidance)
CASES = [
    ("euler_cfg", "euler", 8, 5.0, False, {}),
    ("ddim_negative", "ddim", 8, 6.0, False, {"negative_prompt": "blurry"}),
    ("dpmpp_2m_rescale", "dpmpp_2m", 8, 7.0, False, {"negative_prompt": "blurry", "guidance_rescale": 0.7}),
    ("turbo_1", "euler_a", 1, 0.0, True, {}),
    ("turbo_4", "euler_a", 4, 0.0, True, {}),
    ("prompt_2", "euler", 6, 5.0, False,
     {"prompt_2": "rusty metal plate", "negative_prompt": "blurry", "negative_prompt_2": "dark"}),
    ("nonsquare_sizes", "euler", 6, 5.0, False,
     {"width": 96, "height": 64, "original_size": (128, 160), "crops_coords_top_left": (8, 16),
      "negative_original_size": (32, 48), "negative_crops_coords_top_left": (0, 4),
      "negative_target_size": (48, 80)}),
    ("clip_skip_1", "euler", 6, 5.0, False, {"negative_prompt": "blurry", "clip_skip": 1}),
    ("img2img_s06", "euler", 10, 5.0, False, {"image": "init", "strength": 0.6, "negative_prompt": "blurry"}),
    # diffusers' SDXL img2img gives the negative row the positive crop on a base U-Net
    # (negative_crops_coords_top_left is read by refiners only): this case pins that.
    ("img2img_crops", "euler", 8, 5.0, False,
     {"image": "init", "strength": 0.6, "negative_prompt": "blurry", "original_size": (96, 80),
      "crops_coords_top_left": (8, 16), "negative_original_size": (32, 48),
      "negative_crops_coords_top_left": (0, 4)}),
]


def record_draws():
    """Wraps diffusers' randn_tensor wherever it was imported (replacing an
    earlier case's wrapper); returns the list of draws."""
    import diffusers.utils.torch_utils as tu

    draws = []
    original = getattr(tu, "_kiln_original_randn", tu.randn_tensor)
    tu._kiln_original_randn = original

    def recording(*args, **kwargs):
        t = original(*args, **kwargs)
        draws.append(t.detach().cpu().numpy().astype(np.float32).copy())
        return t

    recording.kiln_wrapper = True
    for name, module in list(sys.modules.items()):
        if not (name.startswith("diffusers") or name.startswith("optimum")):
            continue
        current = getattr(module, "randn_tensor", None)
        if current is original or getattr(current, "kiln_wrapper", False):
            module.randn_tensor = recording
    return draws


def run(name, kiln, steps, guidance, turbo, kwargs, init):
    import diffusers
    from optimum.onnxruntime import ORTStableDiffusionXLImg2ImgPipeline, ORTStableDiffusionXLPipeline

    kwargs = dict(kwargs)
    img2img = "image" in kwargs
    cls = ORTStableDiffusionXLImg2ImgPipeline if img2img else ORTStableDiffusionXLPipeline
    pipe = cls.from_pretrained(FIXTURE, provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    if turbo:
        with open(os.path.join(FIXTURE, "turbo_scheduler_config.json")) as f:
            config = json.load(f)
    else:
        config = dict(pipe.scheduler.config)
    sched_cls, extra = SCHEDULERS[kiln]
    pipe.scheduler = getattr(diffusers, sched_cls).from_config(config, **extra)
    if img2img:
        kwargs["image"] = init

    feeds = []
    orig_prepare = pipe.unet._prepare_onnx_inputs

    def spy(use_torch, model_inputs):
        f = orig_prepare(use_torch, model_inputs)
        feeds.append({k: np.asarray(f[k]).copy() for k in ("encoder_hidden_states", "text_embeds", "time_ids")})
        return f

    pipe.unet._prepare_onnx_inputs = spy
    draws = record_draws()
    captured = {"t": []}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        captured["t"].append(float(t))
        return kw

    out = pipe(
        prompt=PROMPT,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(777),
        output_type="np",
        callback_on_step_end=on_end,
        **kwargs,
    )
    return {
        "latents": captured["latents"],
        "image": out.images[0].astype(np.float32),
        "draws": np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32),
        "timesteps": captured["t"],
        "feeds": feeds[0],
        "calls": len(feeds),
        "vae_scaling_factor": float(pipe.vae_decoder.config.scaling_factor),
    }


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.makedirs(OUT, exist_ok=True)
    init = Image.open(os.path.join(ROOT, "tests/fixtures/golden/ddim_cfg.png")).convert("RGB")
    index = []
    for name, kiln, steps, guidance, turbo, kwargs in CASES:
        a = run(name, kiln, steps, guidance, turbo, kwargs, init)
        b = run(name, kiln, steps, guidance, turbo, kwargs, init)
        for k in ("latents", "image", "draws"):
            assert np.array_equal(a[k], b[k]), f"{name}: {k} not deterministic"
        for k in ("latents", "image", "draws"):
            np.save(os.path.join(OUT, f"{name}.{k}.npy"), a[k])
        for k, v in a["feeds"].items():
            np.save(os.path.join(OUT, f"{name}.{k}.npy"), v.astype(np.float32))
        entry = {
            "name": name, "kiln_scheduler": kiln, "scheduler": SCHEDULERS[kiln][0], "turbo_config": turbo,
            "steps": steps, "guidance_scale": guidance, "prompt": PROMPT,
            "unet_timesteps": a["timesteps"], "unet_calls": a["calls"], "draws_len": int(a["draws"].size),
            "vae_scaling_factor": a["vae_scaling_factor"],
            **{k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items() if k != "image"},
        }
        if "image" in kwargs:
            entry["init_image"] = "../ddim_cfg.png"
        index.append(entry)
        print(name, "draws", a["draws"].size, "timesteps", a["timesteps"], "time_ids", a["feeds"]["time_ids"].tolist())
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
