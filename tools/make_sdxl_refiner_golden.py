#!/usr/bin/env python3
"""Golden outputs for Kiln's SDXL refiner tests: optimum's
ORTStableDiffusionXLImg2ImgPipeline (the refiner is an img2img model) on the
refiner-style fixture (tests/fixtures/sdxl-refiner over tiny-sdxl's shared
files, assembled as tools/make_sdxl_refiner_fixture.py describes), with every
random draw recorded as tools/make_sdxl_golden.py records them: the VAE
posterior sample, the noise added at the start timestep, then per-step noise.

Writes tests/fixtures/golden/sdxl_refiner/<case>.{latents,image,draws}.npy, the
first U-Net call's conditioning (<case>.{encoder_hidden_states,text_embeds,time_ids}.npy)
and cases.json. The init image is tests/fixtures/golden/ddim_cfg.png (64x64).

    /work/venv/bin/python tools/make_sdxl_refiner_golden.py
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

M64 = (1 << 64) - 1

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/golden/sdxl_refiner"
PROMPT = "mossy stone brick wall"

# name, kiln scheduler, steps, guidance, pipeline kwargs (besides prompt/steps/guidance/image)
CASES = [
    # The defaults: aesthetic scores 6.0 / 2.5, the empty negative prompt encoded
    # (the refiner's force_zeros_for_empty_prompt is False).
    ("euler_s03", "euler", 10, 5.0, {"strength": 0.3}),
    ("ddim_aesthetic", "ddim", 10, 6.0,
     {"strength": 0.5, "negative_prompt": "blurry", "aesthetic_score": 7.0, "negative_aesthetic_score": 2.0}),
    # diffusers pairs the refiner's only encoder with `prompt` (zip of
    # [prompt, prompt_2] with [text_encoder_2]): prompt_2 is not used.
    ("prompt_2_ignored", "euler", 10, 5.0,
     {"strength": 0.4, "prompt_2": "rusty metal plate", "negative_prompt": "blurry", "negative_prompt_2": "dark"}),
]

# Cases whose draws come from Kiln's own seeded noise (src/pipeline/noise.rs)
# instead of torch's generator: the C API cannot replay an img2img run's draws,
# but with `seed` it draws these same values, so the C route meets the golden.
# name -> (seed, the case whose settings it repeats)
KILN_SEEDED = {"ddim_aesthetic_kiln_seed": (777, "ddim_aesthetic")}


def kiln_normals(seed, count):
    """Kiln's portable noise, as src/pipeline/noise.rs documents it: SplitMix64
    seeds xoshiro256**, Box-Muller pairs in f64, rounded to f32."""
    import math

    def splitmix(state):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        return state, z ^ (z >> 31)

    rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & M64  # noqa: E731
    s, sm = [], seed
    for _ in range(4):
        sm, v = splitmix(sm)
        s.append(v)

    def next_u64():
        result = (rotl((s[1] * 5) & M64, 7) * 9) & M64
        t = (s[1] << 17) & M64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    out = []
    while len(out) < count:
        u1 = 1.0 - (next_u64() >> 11) * (1.0 / (1 << 53))
        u2 = (next_u64() >> 11) * (1.0 / (1 << 53))
        r = math.sqrt(-2.0 * math.log(u1))
        theta = 2.0 * math.pi * u2
        out += [r * math.cos(theta), r * math.sin(theta)]
    return np.array(out[:count], np.float64).astype(np.float32)


def use_kiln_noise(seed):
    """Every diffusers randn_tensor draw from Kiln's stream for `seed`, in order
    (after record_draws, so the draws are still recorded)."""
    import diffusers.utils.torch_utils as tu

    if not hasattr(tu, "_kiln_original_randn"):
        sdxl_golden.record_draws()  # installs the wrappers that call _kiln_original_randn
    stream = kiln_normals(seed, 1 << 14)
    used = [0]
    original = tu._kiln_original_randn

    def kiln(shape, generator=None, device=None, dtype=None, layout=None):
        n = int(np.prod(shape))
        assert used[0] + n <= stream.size, "Kiln noise stream too short"
        t = torch.from_numpy(stream[used[0]:used[0] + n].reshape(shape).copy())
        used[0] += n
        return t.to(dtype=dtype or torch.float32)

    tu._kiln_original_randn = kiln
    return lambda: setattr(tu, "_kiln_original_randn", original)


def run(folder, kiln, steps, guidance, kwargs, init, kiln_seed=None):
    import diffusers
    from optimum.onnxruntime import ORTStableDiffusionXLImg2ImgPipeline

    pipe = ORTStableDiffusionXLImg2ImgPipeline.from_pretrained(str(folder), provider="CPUExecutionProvider",
                                                               local_files_only=True)
    assert pipe.config.requires_aesthetics_score and pipe.text_encoder is None
    pipe.set_progress_bar_config(disable=True)
    sched_cls, extra = sdxl_golden.SCHEDULERS[kiln]
    pipe.scheduler = getattr(diffusers, sched_cls).from_config(dict(pipe.scheduler.config), **extra)

    feeds = []
    orig_prepare = pipe.unet._prepare_onnx_inputs

    def spy(use_torch, model_inputs):
        f = orig_prepare(use_torch, model_inputs)
        feeds.append({k: np.asarray(f[k]).copy() for k in ("encoder_hidden_states", "text_embeds", "time_ids")})
        return f

    pipe.unet._prepare_onnx_inputs = spy
    restore = use_kiln_noise(kiln_seed) if kiln_seed is not None else (lambda: None)
    draws = sdxl_golden.record_draws()
    captured = {"t": []}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        captured["t"].append(float(t))
        return kw

    out = pipe(
        prompt=PROMPT,
        image=init,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(777),
        output_type="np",
        callback_on_step_end=on_end,
        **kwargs,
    )
    restore()
    return {
        "latents": captured["latents"],
        "image": out.images[0].astype(np.float32),
        "draws": np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32),
        "timesteps": captured["t"],
        "feeds": feeds[0],
        "calls": len(feeds),
    }


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    init = Image.open(ROOT / "tests/fixtures/golden/ddim_cfg.png").convert("RGB")
    index = []
    with tempfile.TemporaryDirectory(prefix="kiln_refiner_golden_") as tmp:
        folder = refiner.assemble(refiner.DEFAULT_OUT, Path(tmp) / "model")
        by_name = {c[0]: c for c in CASES}
        seeded = [(name, *by_name[of][1:], seed) for name, (seed, of) in KILN_SEEDED.items()]
        for name, kiln, steps, guidance, kwargs, *seed in [(*c, None) for c in CASES] + seeded:
            seed = seed[0]
            a = run(folder, kiln, steps, guidance, kwargs, init, seed)
            b = run(folder, kiln, steps, guidance, kwargs, init, seed)
            if seed is not None:
                assert np.array_equal(a["draws"], kiln_normals(seed, a["draws"].size)), name
            for k in ("latents", "image", "draws"):
                assert np.array_equal(a[k], b[k]), f"{name}: {k} not deterministic"
                np.save(OUT / f"{name}.{k}.npy", a[k])
            for k, v in a["feeds"].items():
                np.save(OUT / f"{name}.{k}.npy", v.astype(np.float32))
            index.append({
                "name": name, "kiln_scheduler": kiln, "scheduler": sdxl_golden.SCHEDULERS[kiln][0],
                "steps": steps, "guidance_scale": guidance, "prompt": PROMPT, "init_image": "../ddim_cfg.png",
                "unet_timesteps": a["timesteps"], "unet_calls": a["calls"], "draws_len": int(a["draws"].size),
                **({"kiln_seed": seed} if seed is not None else {}),
                **kwargs,
            })
            print(name, "draws", a["draws"].size, "timesteps", a["timesteps"], "time_ids", a["feeds"]["time_ids"].tolist())
    with open(OUT / "cases.json", "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
