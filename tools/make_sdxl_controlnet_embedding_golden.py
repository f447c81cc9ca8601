#!/usr/bin/env python3
"""Goldens of an SDXL textual-inversion embedding used with an SDXL ControlNet.

diffusers' StableDiffusionXLControlNetPipeline on the torch modules of
tests/fixtures/tiny-sdxl + tests/fixtures/sdxl-controlnet (rebuilt, seeded, as
tools/make_sdxl_controlnet_fixture.py does) after `load_textual_inversion` of
tests/fixtures/sdxl-embedding/xl-brick.safetensors: `clip_l` into text_encoder
and tokenizer, `clip_g` into text_encoder_2 and tokenizer_2, as diffusers
documents for SDXL (the ControlNet fixture shares tiny-sdxl's encoders, so the
same file fits). The ControlNet reads the same prompt embeddings as the U-Net,
so the embedding reaches it too. Every random draw recorded (txt2img: the
initial latents). Checked here: the embedding moves the final latents far
past the test bound (against the same prompt without the token).

Writes tests/fixtures/golden/sdxl_controlnet_embedding/<case>.{latents,image,draws}.npy
and cases.json.

    /work/venv/bin/python tools/make_sdxl_controlnet_embedding_golden.py
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/golden/sdxl_controlnet_embedding"
CONTROLS = REPO / "tests/fixtures/golden/controlnet"
EMBEDDING = REPO / "tests/fixtures/sdxl-embedding/xl-brick.safetensors"
sys.path.insert(0, str(REPO / "tools"))

import make_sdxl_controlnet_fixture as cnfix  # noqa: E402
import make_sdxl_controlnet_lora_golden as controlnet_lora_golden  # noqa: E402

TOKEN = "<xl-brick>"
PROMPT, PLAIN_PROMPT, NEGATIVE = "<xl-brick> wall, mossy", "wall, mossy", "blurry"
# name, Kiln scheduler, steps, guidance, controls [(image, scale)]
CASES = [
    ("embedding_euler", "euler", 8, 8.0, [("control_a.png", 0.8)]),
    ("embedding_ddim_two", "ddim", 8, 9.0, [("control_a.png", 0.6), ("control_b.png", 0.4)]),
]


def with_embedding(pipe):
    from safetensors.torch import load_file

    state = load_file(str(EMBEDDING))
    pipe.load_textual_inversion(state["clip_l"], token=TOKEN, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token=TOKEN, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    return pipe


def prompt_ids(pipe, prompt):
    """Both tokenizers' ids for `prompt` with the embedding's token expanded, as the pipeline does."""
    return {name: getattr(pipe, name)(pipe.maybe_convert_prompt(prompt, getattr(pipe, name))).input_ids
            for name in ("tokenizer", "tokenizer_2")}


def run(controlnet, sched, steps, guidance, prompt, controls, images):
    base = with_embedding(cnfix.build_pipeline())
    result = controlnet_lora_golden.run(base, controlnet, sched, steps, guidance, controls, images, prompt=prompt, negative=NEGATIVE)
    return {**result, "ids": prompt_ids(base, prompt)}


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    controlnet = cnfix.build_controlnet(cnfix.build_pipeline().unet)  # from the plain U-Net, as the fixture's
    images = {n: Image.open(CONTROLS / n).convert("RGB") for n in ("control_a.png", "control_b.png")}
    index = []
    for name, sched, steps, guidance, controls in CASES:
        a = run(controlnet, sched, steps, guidance, PROMPT, controls, images)
        b = run(controlnet, sched, steps, guidance, PROMPT, controls, images)
        for k in ("latents", "image", "draws"):
            if not np.array_equal(a[k], b[k]):
                raise SystemExit(f"{name}: {k} not deterministic")
        for tname, ids in a["ids"].items():
            if len([i for i in ids if i >= 49408]) != 2:
                raise SystemExit(f"{name}: {tname} should give both embedding vectors: {ids}")
        plain = run(controlnet, sched, steps, guidance, PLAIN_PROMPT, controls, images)
        if not np.array_equal(plain["draws"], a["draws"]):
            raise SystemExit(f"{name}: the run without the token drew other noise")
        effect = float(np.abs(plain["latents"] - a["latents"]).max() / np.abs(a["latents"]).max())
        print(f"{name}: the embedding moves the final latents by {effect:.3e} relative (test bound 1e-3); ids {a['ids']}")
        if effect < 1e-2:  # ten times the latent bound, what the test asserts
            raise SystemExit(f"{name}: the embedding barely changes the output; a test could not fail")
        for k in ("latents", "image", "draws"):
            np.save(OUT / f"{name}.{k}.npy", a[k])
        index.append({
            "name": name, "kiln_scheduler": sched, "steps": steps, "guidance_scale": guidance, "prompt": PROMPT,
            "plain_prompt": PLAIN_PROMPT, "negative_prompt": NEGATIVE, "token": TOKEN,
            "file": "../../sdxl-embedding/xl-brick.safetensors", "latent_effect": effect,
            "controls": [{"image": c[0], "scale": c[1]} for c in controls], "unet_timesteps": a["t"],
            "input_ids": {k: v[:8] for k, v in a["ids"].items()},
        })
    (OUT / "cases.json").write_text(json.dumps(index, indent=1) + "\n")
    print("wrote", OUT, sum(p.stat().st_size for p in OUT.iterdir()), "bytes")


if __name__ == "__main__":
    main()
