#!/usr/bin/env python3
"""An SDXL LoRA for the small U-Net of tests/fixtures/sdxl-controlnet (plus tiny-sdxl's text
encoders), and goldens of diffusers' StableDiffusionXLControlNetPipeline with it fused.

The LoRA is made with tools/make_sdxl_lora_fixture.py's own helpers (random seeded PEFT
adapters, the kohya SGM-named copy), on the pipeline of tools/make_sdxl_controlnet_fixture.py
instead of tiny-sdxl's. Goldens: `load_lora_weights` + `fuse_lora` into the U-Net and both
text encoders, never the ControlNet (which is built from the plain U-Net, as the committed
fixture was), every random draw recorded (txt2img: the initial latents only).

Writes tests/fixtures/sdxl-controlnet-lora/: style.{kohya,peft}.safetensors,
<case>.{latents,image,draws}.npy, cases.json. Checks: the kohya and PEFT files fuse to the
same weights; each case's LoRA moves the final latents far past the test bound.

    /work/venv/bin/python tools/make_sdxl_controlnet_lora_golden.py
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/sdxl-controlnet-lora"
CONTROLS = REPO / "tests/fixtures/golden/controlnet"
sys.path.insert(0, str(REPO / "tools"))

import make_sdxl_controlnet_fixture as cnfix  # noqa: E402
import make_sdxl_lora_fixture as lorafix  # noqa: E402

# The LoRA helpers build their modules through this: point them at the small U-Net's pipeline.
lorafix.build_torch_pipe = cnfix.build_pipeline

PROMPT, NEGATIVE = "mossy stone brick wall", "blurry"
# name, Kiln scheduler, steps, guidance, LoRA scale, controls [(image, scale)]
CASES = [
    ("style_euler", "euler", 8, 5.0, 1.0, [("control_a.png", 0.8)]),
    ("style_half_ddim_two", "ddim", 8, 5.0, 0.5, [("control_a.png", 0.6), ("control_b.png", 0.3)]),
]
SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}


def run(base, controlnet, sched, steps, guidance, controls, images, prompt=PROMPT, negative=NEGATIVE):
    """diffusers' SDXL ControlNet txt2img pipeline on `base`'s modules with `controlnet` once per
    control [(image, scale)], every draw recorded; the final latents, image, draws and timesteps."""
    import diffusers
    from diffusers import StableDiffusionXLControlNetPipeline
    from make_controlnet_golden import record_draws

    one = len(controls) == 1
    pipe = StableDiffusionXLControlNetPipeline(
        vae=base.vae, text_encoder=base.text_encoder, text_encoder_2=base.text_encoder_2, tokenizer=base.tokenizer,
        tokenizer_2=base.tokenizer_2, unet=base.unet, controlnet=controlnet if one else [controlnet] * len(controls),
        scheduler=getattr(diffusers, SCHEDULERS[sched]).from_config(base.scheduler.config),
        force_zeros_for_empty_prompt=True)
    pipe.set_progress_bar_config(disable=True)
    draws, restore = record_draws()
    captured = {"t": []}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        captured["t"].append(float(t))
        return kw

    with torch.no_grad():
        out = pipe(prompt=prompt, negative_prompt=negative, num_inference_steps=steps, guidance_scale=guidance,
                   image=images[controls[0][0]] if one else [images[c[0]] for c in controls],
                   controlnet_conditioning_scale=controls[0][1] if one else [c[1] for c in controls],
                   height=64, width=64, generator=torch.Generator().manual_seed(777), output_type="np",
                   callback_on_step_end=on_end)
    restore()
    return {"latents": captured["latents"], "image": out.images[0].astype(np.float32),
            "draws": np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32), "t": captured["t"]}


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file

    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    plain = cnfix.build_pipeline()
    lpb = plain.unet.config.layers_per_block
    ucfg, usd = lorafix.random_lora("unet", lorafix.UNET_TARGETS, rank=4, alpha=6, seed=11, std=0.15)
    t1cfg, t1sd = lorafix.random_lora("text_encoder", lorafix.TE_TARGETS, rank=2, alpha=3, seed=12, std=0.2)
    t2cfg, t2sd = lorafix.random_lora("text_encoder_2", lorafix.TE_TARGETS, rank=2, alpha=2, seed=13, std=0.2)
    StableDiffusionXLPipeline.save_lora_weights(
        str(OUT), unet_lora_layers=usd, text_encoder_lora_layers=t1sd, text_encoder_2_lora_layers=t2sd,
        weight_name="style.peft.safetensors", unet_lora_adapter_metadata=ucfg.to_dict(),
        text_encoder_lora_adapter_metadata=t1cfg.to_dict(), text_encoder_2_lora_adapter_metadata=t2cfg.to_dict())
    kohya = lorafix.kohya_sdxl_dict([("lora_unet_", usd, 6, True), ("lora_te1_", t1sd, 3, False), ("lora_te2_", t2sd, 2, False)], lpb)
    save_file(kohya, str(OUT / "style.kohya.safetensors"))
    print("LoRA modules: unet", len(usd) // 2, "te1", len(t1sd) // 2, "te2", len(t2sd) // 2)

    a, b = lorafix.fused(OUT / "style.peft.safetensors", 1.0), lorafix.fused(OUT / "style.kohya.safetensors", 1.0)
    worst, changed = 0.0, {}
    for part in ("unet", "text_encoder", "text_encoder_2"):
        sa, sb, sp = getattr(a, part).state_dict(), getattr(b, part).state_dict(), getattr(plain, part).state_dict()
        for k in sa:
            worst = max(worst, float((sa[k] - sb[k]).abs().max()))
            if not np.array_equal(sa[k].numpy(), sp[k].numpy()):
                changed[part] = changed.get(part, 0) + 1
    print(f"kohya (SGM names) vs PEFT fused weights max |diff| {worst:.3e}; changed tensors {changed}")
    want = {"unet": len(usd) // 2, "text_encoder": len(t1sd) // 2, "text_encoder_2": len(t2sd) // 2}
    if worst > 1e-6 or changed != want:
        raise SystemExit(f"the kohya and PEFT files fuse differently, or not every module: {changed} vs {want}")

    controlnet = cnfix.build_controlnet(plain.unet)  # from the plain U-Net, as the fixture's
    images = {n: Image.open(CONTROLS / n).convert("RGB") for n in ("control_a.png", "control_b.png")}
    index = []
    for name, sched, steps, guidance, scale, controls in CASES:
        with_lora = run(lorafix.fused(OUT / "style.peft.safetensors", scale), controlnet, sched, steps, guidance, controls, images)
        without = run(cnfix.build_pipeline(), controlnet, sched, steps, guidance, controls, images)
        if not np.array_equal(with_lora["draws"], without["draws"]):
            raise SystemExit(f"{name}: the plain run drew other noise")
        peak = np.abs(with_lora["latents"]).max()
        effect = float(np.abs(with_lora["latents"] - without["latents"]).max() / peak)
        print(f"{name}: the LoRA moves the final latents by {effect:.3e} relative (test bound 1e-3)")
        if effect < 2e-2:
            raise SystemExit(f"{name}: the LoRA barely changes the output; a test could not fail")
        for k in ("latents", "image", "draws"):
            np.save(OUT / f"{name}.{k}.npy", with_lora[k])
        index.append({
            "name": name, "kiln_scheduler": sched, "steps": steps, "guidance_scale": guidance, "prompt": PROMPT,
            "negative_prompt": NEGATIVE, "lora_scale": scale, "latent_effect": effect,
            "controls": [{"image": c[0], "scale": c[1]} for c in controls], "unet_timesteps": with_lora["t"],
        })
    (OUT / "cases.json").write_text(json.dumps(index, indent=1) + "\n")
    print("wrote", OUT, sum(p.stat().st_size for p in OUT.iterdir()), "bytes")


if __name__ == "__main__":
    main()
