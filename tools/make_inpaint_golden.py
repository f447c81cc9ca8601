"""Golden outputs for Kiln's inpainting: optimum's ORTStableDiffusionInpaintPipeline
with every random draw recorded. Writes tests/fixtures/golden/inpaint/.

Two kinds of U-Net:
- ordinary (4-channel), tests/fixtures/tiny-sd: the pipeline blends the
  latents with the re-noised init picture after every step;
- inpainting (9-channel: latents, mask, masked picture's latents),
  tests/fixtures/variants/inpaint9 (tools/make_variant_fixtures.py), assembled
  the way tests/common assembles it: the U-Net sees the mask and the masked
  picture at every call; no blending, and the decoded image is returned as
  is (no paste-back: `padding_mask_crop` is not used).

Draw order (what Kiln consumes): the init image's posterior sample (not
drawn by a 9-channel U-Net at strength 1, which starts from pure noise), the
start noise, the masked image's posterior sample (drawn even though a
4-channel U-Net does not use it), then per-step noise.

    /work/venv/bin/python tools/make_inpaint_golden.py
"""
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_img2img_golden import make_scheduler, record_draws, SCHEDULERS  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests/fixtures/tiny-sd")
INPAINT9 = Path(ROOT) / "tests/fixtures/variants/inpaint9"
OUT = os.path.join(ROOT, "tests/fixtures/golden/inpaint")
CASES = [
    # name, model ("tiny-sd" | "inpaint9"), Kiln scheduler, steps, strength, guidance
    ("ddim_s075", "tiny-sd", "ddim", 8, 0.75, 7.5),
    ("euler_s1", "tiny-sd", "euler", 8, 1.0, 7.5),
    # multistep schedulers with the 4-channel latent blend
    ("dpmpp_2m_s075", "tiny-sd", "dpmpp_2m", 8, 0.75, 7.5),
    ("heun_s06", "tiny-sd", "heun", 5, 0.6, 7.5),
    # 9-channel inpainting U-Net
    ("inpaint9_ddim_s075", "inpaint9", "ddim", 8, 0.75, 7.5),
    ("inpaint9_euler_s1", "inpaint9", "euler", 8, 1.0, 7.5),
    ("inpaint9_unipc_s06_noguide", "inpaint9", "unipc", 8, 0.6, 1.0),
    ("inpaint9_dpmpp_2m_sde_s1", "inpaint9", "dpmpp_2m_sde", 6, 1.0, 7.5),
]


def main():
    from make_variant_fixtures import materialize
    from optimum.onnxruntime import ORTStableDiffusionInpaintPipeline

    os.makedirs(OUT, exist_ok=True)
    init = Image.open(os.path.join(ROOT, "tests/fixtures/golden/ddim_cfg.png")).convert("RGB")
    mask = np.zeros((64, 64), np.uint8)
    mask[8:40, 20:56] = 255  # repaint this rectangle
    Image.fromarray(mask).save(os.path.join(OUT, "mask.png"))
    index = []
    with tempfile.TemporaryDirectory(prefix="kiln_inpaint9_") as tmp:
        models = {"tiny-sd": FIXTURE, "inpaint9": str(materialize(INPAINT9, Path(tmp) / "inpaint9"))}
        for name, model, kiln_name, steps, strength, guidance in CASES:
            pipe = ORTStableDiffusionInpaintPipeline.from_pretrained(models[model], provider="CPUExecutionProvider")
            assert pipe.unet.config.in_channels == (9 if model == "inpaint9" else 4)
            pipe.scheduler = make_scheduler(kiln_name, pipe.scheduler.config)
            draws = record_draws()
            captured = {"t": []}

            def on_end(p, i, t, kw):
                captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
                captured["t"].append(float(t))
                return kw

            negative = "blurry" if guidance > 1 else None
            out = pipe(
                prompt="mossy stone brick wall", negative_prompt=negative, image=init,
                mask_image=Image.fromarray(mask), strength=strength, num_inference_steps=steps,
                guidance_scale=guidance, generator=torch.Generator().manual_seed(31), output_type="np",
                callback_on_step_end=on_end, height=64, width=64,
            )
            flat = np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32)
            np.save(os.path.join(OUT, f"{name}.latents.npy"), captured["latents"])
            np.save(os.path.join(OUT, f"{name}.image.npy"), out.images[0].astype(np.float32))
            np.save(os.path.join(OUT, f"{name}.draws.npy"), flat)
            index.append({"name": name, "model": model, "scheduler": SCHEDULERS[kiln_name][0],
                          "kiln_scheduler": kiln_name, "steps": steps, "strength": strength,
                          "guidance_scale": guidance, "prompt": "mossy stone brick wall",
                          "negative_prompt": negative or "", "draws": int(flat.size),
                          "unet_timesteps": captured["t"]})
            print(name, flat.size, captured["t"])
    with open(os.path.join(OUT, "cases.json"), "w") as f:
        json.dump(index, f, indent=1)


if __name__ == "__main__":
    main()
