"""Golden outputs for ControlNet with LoRA adapters and textual-inversion embeddings:
diffusers' StableDiffusionControlNetPipeline on the torch modules of tests/fixtures/tiny-sd and
tests/fixtures/controlnet (rebuilt seeded, as tools/make_controlnet_golden.py does), with the LoRA
files of tests/fixtures/lora loaded by `load_lora_weights` and fused (`set_adapters` with
per-adapter weights, then `fuse_lora` into the U-Net and text encoder, never the ControlNet,
as diffusers does), or the embeddings loaded by `load_textual_inversion`. Every random draw is
recorded (txt2img: the initial latents only).

The PEFT files are used (diffusers' kohya converter fails on the text-encoder subset of
"detail"; tools/make_lora_fixture.py checks that both layouts of "style" fuse identically).

Writes tests/fixtures/golden/controlnet_lora/<case>.{latents,image,draws}.npy and cases.json;
the control images are tests/fixtures/golden/controlnet/control_{a,b}.png.

    /work/venv/bin/python tools/make_controlnet_lora_golden.py
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/golden/controlnet_lora"
LORAS = REPO / "tests/fixtures/lora"
CONTROLS = REPO / "tests/fixtures/golden/controlnet"
sys.path.insert(0, str(REPO / "tools"))

PROMPT, NEGATIVE = "mossy stone brick wall", "blurry"
EMBED_PROMPT = "<brick-style> wall, <moss>"

# name, scheduler, steps, guidance, prompt, [(lora, scale)], [embedding file, token], [(image, scale)]
CASES = [
    ("style_ddim", "ddim", 8, 7.5, PROMPT, [("style", 1.0)], [], [("control_a.png", 0.8)]),
    ("stack_euler", "euler", 8, 7.5, PROMPT, [("style", 0.8), ("detail", -0.6)], [], [("control_b.png", 1.0)]),
    ("style_half_two_nets", "ddim", 8, 7.5, PROMPT, [("style", 0.5)], [],
     [("control_a.png", 0.6), ("control_b.png", 0.3)]),
    ("embedding_ddim", "ddim", 8, 7.5, EMBED_PROMPT, [],
     [("brick-style.safetensors", "<brick-style>"), ("learned_embeds.safetensors", None)], [("control_a.png", 0.8)]),
]

SCHEDULERS = {"ddim": "DDIMScheduler", "euler": "EulerDiscreteScheduler"}


def main():
    import diffusers
    from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
    from make_controlnet_fixture import TINY, randomize
    from make_controlnet_golden import record_draws
    from make_tiny_fixture import build_pipeline

    OUT.mkdir(parents=True, exist_ok=True)
    plain = build_pipeline(TINY / "tokenizer")
    # The ControlNet is made from the plain U-Net, as the committed fixture was.
    controlnet = randomize(ControlNetModel.from_unet(plain.unet, conditioning_embedding_out_channels=(16, 16, 32, 32)), seed=17)
    images = {n: Image.open(CONTROLS / n).convert("RGB") for n in ("control_a.png", "control_b.png")}
    index = []
    for name, sched, steps, guidance, prompt, loras, embeddings, controls in CASES:
        base = build_pipeline(TINY / "tokenizer")
        if loras:
            names = []
            for i, (lora, scale) in enumerate(loras):
                base.load_lora_weights(str(LORAS), weight_name=f"{lora}.peft.safetensors", adapter_name=f"a{i}")
                names.append(f"a{i}")
            base.set_adapters(names, adapter_weights=[s for _, s in loras])
            base.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0, adapter_names=names)
            base.unload_lora_weights()
        for file, token in embeddings:
            base.load_textual_inversion(str(LORAS / file), **({"token": token} if token else {}))
        one = len(controls) == 1
        nets = controlnet if one else [controlnet] * len(controls)
        pipe = StableDiffusionControlNetPipeline(
            vae=base.vae, text_encoder=base.text_encoder, tokenizer=base.tokenizer, unet=base.unet, controlnet=nets,
            scheduler=getattr(diffusers, SCHEDULERS[sched]).from_config(base.scheduler.config),
            safety_checker=None, feature_extractor=None, requires_safety_checker=False)
        pipe.set_progress_bar_config(disable=True)
        draws, restore = record_draws()
        captured = {"t": []}

        def on_end(p, i, t, kw):
            captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
            captured["t"].append(float(t))
            return kw

        with torch.no_grad():
            out = pipe(
                prompt=prompt, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=guidance,
                image=images[controls[0][0]] if one else [images[c[0]] for c in controls],
                controlnet_conditioning_scale=controls[0][1] if one else [c[1] for c in controls],
                height=64, width=64, generator=torch.Generator().manual_seed(777), output_type="np",
                callback_on_step_end=on_end,
            )
        restore()
        flat = np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32)
        np.save(OUT / f"{name}.latents.npy", captured["latents"])
        np.save(OUT / f"{name}.image.npy", out.images[0].astype(np.float32))
        np.save(OUT / f"{name}.draws.npy", flat)
        index.append({
            "name": name, "kiln_scheduler": sched, "steps": steps, "guidance_scale": guidance, "prompt": prompt,
            "negative_prompt": NEGATIVE,
            "loras": [{"file": f"{l}.kohya.safetensors", "peft_file": f"{l}.peft.safetensors", "scale": s} for l, s in loras],
            "embeddings": [{"file": f, "token": t} for f, t in embeddings],
            "controls": [{"image": c[0], "scale": c[1]} for c in controls],
            "draws_len": int(flat.size), "unet_timesteps": captured["t"],
        })
        print(name, "draws", flat.size, "timesteps", captured["t"], "latents max", float(np.abs(captured["latents"]).max()))
    with open(OUT / "cases.json", "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
