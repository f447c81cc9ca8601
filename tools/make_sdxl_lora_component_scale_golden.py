#!/usr/bin/env python3
"""Golden for an SDXL LoRA with its own text-encoder strength (ComfyUI's
`strength_clip`, which applies to both SDXL encoders), from diffusers'
per-component adapter weights.

The LoRA is tests/fixtures/sdxl-lora/style.peft.safetensors (U-Net and both
encoders). The PyTorch tiny SDXL (tools/make_sdxl_lora_fixture.py, checked
against the committed fixture) gets `load_lora_weights`, `set_adapters(["a"],
[{"unet": s, "text_encoder": t, "text_encoder_2": t}])` and `fuse_lora`
(tools/make_sdxl_lora_fixture.py fused); the pipeline is exported with
optimum's main_export and run by ORTStableDiffusionXLPipeline with every draw
recorded. The case must move the final latents by 2e-2 against the plain
model and against the same LoRA at `s` for every part.

Writes tests/fixtures/sdxl-lora-component/{cases.json,<case>.{latents,image,draws}.npy,README.md};
the case names the LoRA files in ../sdxl-lora.

    /work/venv/bin/python tools/make_sdxl_lora_component_scale_golden.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import adapter_golden  # noqa: E402
import make_sdxl_lycoris_fixture as sdxl_lycoris  # noqa: E402
from make_sdxl_lora_fixture import FIXTURE, build_torch_pipe, check_same_weights_as_fixture, export, fused  # noqa: E402

LORA = REPO / "tests" / "fixtures" / "sdxl-lora" / "style.peft.safetensors"
# name, kiln scheduler, steps, guidance, U-Net strength, text-encoder strength, extra pipeline kwargs
CASES = [
    ("style_te0_euler", "euler", 6, 5.0, 1.0, 0.0, {"negative_prompt": "blurry"}),
]


def main() -> None:
    out = adapter_golden.output_folder(__doc__, REPO / "tests" / "fixtures" / "sdxl-lora-component")
    check_same_weights_as_fixture(build_torch_pipe())
    cases = []
    with tempfile.TemporaryDirectory(prefix="kiln_sdxl_lora_component_") as tmp:
        tmp = Path(tmp)
        for name, kiln, steps, guidance, s, t, kwargs in CASES:
            ref_dir = export(fused(LORA, {"unet": s, "text_encoder": t, "text_encoder_2": t}), tmp, name)
            controls = {"latent_effect": FIXTURE, "one_strength_effect": export(fused(LORA, s), tmp, f"{name}_one")}
            entry = {"file": "../sdxl-lora/style.kohya.safetensors", "peft_file": "../sdxl-lora/style.peft.safetensors", "scale": s, "text_encoder_scale": t}
            cases.append(sdxl_lycoris.golden_case(out, (name, kiln, steps, guidance, kwargs), ref_dir, controls, entry))
    sdxl_lycoris.write_index(out, cases, "An SDXL LoRA with its own text-encoder strength: diffusers golden",
                             "tools/make_sdxl_lora_component_scale_golden.py")


if __name__ == "__main__":
    main()
