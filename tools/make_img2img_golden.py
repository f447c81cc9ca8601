"""Golden outputs for Kiln's img2img: optimum's ORTStableDiffusionImg2ImgPipeline
on tests/fixtures/tiny-sd, with every random draw recorded so Kiln can replay it.

Writes tests/fixtures/golden/img2img/<case>.{latents,image,draws}.npy,
<case>.timesteps.json and cases.json. The init image is golden/ddim_cfg.png
(64x64). Draw order (what Kiln must consume, in this order): the VAE
posterior sample noise, then the noise added at the start timestep, then any
per-step noise of stochastic schedulers.

    /work/venv/bin/python tools/make_img2img_golden.py
"""
import json
import os
import sys

import numpy as np
import torch
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests/fixtures/tiny-sd")
OUT = os.path.join(ROOT, "tests/fixtures/golden/img2img")

CASES = [
    # name, Kiln scheduler name, steps, strength, guidance
    ("ddim_s06", "ddim", 10, 0.6, 7.5),
    ("euler_s06", "euler", 10, 0.6, 7.5),
    ("ddim_s10", "ddim", 6, 1.0, 7.5),
    ("euler_s03_noguide", "euler", 10, 0.3, 1.0),
    # The multistep schedulers start part-way through their schedule via
    # set_begin_index (diffusers' get_timesteps).
    ("dpmpp_2m_s06", "dpmpp_2m", 10, 0.6, 7.5),
    ("dpmpp_2m_karras_s05", "dpmpp_2m_karras", 10, 0.5, 7.5),
    ("dpmpp_2m_sde_s06", "dpmpp_2m_sde", 10, 0.6, 7.5),
    ("unipc_s06", "unipc", 10, 0.6, 7.5),
    ("unipc_s1_noguide", "unipc", 6, 1.0, 1.0),
    ("pndm_s06", "pndm", 10, 0.6, 7.5),
    ("lms_s06", "lms", 10, 0.6, 7.5),
    ("heun_s05", "heun", 6, 0.5, 7.5),  # order 2: timesteps[t_start * 2:]
]

# Kiln scheduler name -> diffusers class and config overrides.
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler", {}),
    "dpmpp_2m_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "dpmpp_2m_sde": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "lms": ("LMSDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
}


def make_scheduler(kiln_name, config):
    import diffusers

    cls, extra = SCHEDULERS[kiln_name]
    return getattr(diffusers, cls).from_config(config, **extra)


def record_draws():
    """Wraps diffusers' randn_tensor wherever it was imported; returns the list of draws."""
    import diffusers.utils.torch_utils as tu

    draws = []
    original = tu.randn_tensor

    def recording(*args, **kwargs):
        t = original(*args, **kwargs)
        draws.append(t.detach().cpu().numpy().astype(np.float32).copy())
        return t

    for name, module in list(sys.modules.items()):
        if (name.startswith("diffusers") or name.startswith("optimum")) and getattr(module, "randn_tensor", None) is original:
            module.randn_tensor = recording
    tu.randn_tensor = recording
    return draws


def main():
    from optimum.onnxruntime import ORTStableDiffusionImg2ImgPipeline

    os.makedirs(OUT, exist_ok=True)
    init = Image.open(os.path.join(ROOT, "tests/fixtures/golden/ddim_cfg.png")).convert("RGB")
    index = []
    for name, kiln_name, steps, strength, guidance in CASES:
        cls = SCHEDULERS[kiln_name][0]
        results = []
        for _ in range(2):  # determinism check
            pipe = ORTStableDiffusionImg2ImgPipeline.from_pretrained(FIXTURE, provider="CPUExecutionProvider")
            pipe.scheduler = make_scheduler(kiln_name, pipe.scheduler.config)
            draws = record_draws()
            captured = {"t": []}

            def on_end(p, i, t, kw):
                captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
                captured["t"].append(float(t))
                return kw

            out = pipe(
                prompt="mossy stone brick wall",
                negative_prompt="blurry" if guidance > 1 else None,
                image=init,
                strength=strength,
                num_inference_steps=steps,
                guidance_scale=guidance,
                generator=torch.Generator().manual_seed(777),
                output_type="np",
                callback_on_step_end=on_end,
            )
            timesteps = [float(t) for t in pipe.scheduler.timesteps]
            t_start = steps - min(int(steps * strength), steps)
            used = timesteps[t_start * pipe.scheduler.order:]
            assert used == captured["t"], (name, used, captured["t"])
            results.append((captured["latents"], out.images[0].astype(np.float32), np.concatenate([d.reshape(-1) for d in draws]), used))
        a, b = results
        assert all(np.array_equal(x, y) for x, y in zip(a[:3], b[:3])), f"{name}: not deterministic"
        latents, image, draws, used = a
        np.save(os.path.join(OUT, f"{name}.latents.npy"), latents)
        np.save(os.path.join(OUT, f"{name}.image.npy"), image)
        np.save(os.path.join(OUT, f"{name}.draws.npy"), draws.astype(np.float32))
        with open(os.path.join(OUT, f"{name}.timesteps.json"), "w") as f:
            json.dump(used, f)
        index.append({
            "name": name, "scheduler": cls, "kiln_scheduler": kiln_name, "steps": steps, "strength": strength, "guidance_scale": guidance,
            "prompt": "mossy stone brick wall", "negative_prompt": "blurry" if guidance > 1 else "",
            "init_image": "../ddim_cfg.png", "draws_len": int(draws.size), "unet_timesteps": used,
        })
        print(name, "draws", draws.size, "timesteps", used)
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
