#!/usr/bin/env python3
"""Goldens for a LoRA with its own text-encoder strength (ComfyUI's
`strength_model` / `strength_clip`), from diffusers' per-component adapter
weights.

The LoRA is tests/fixtures/lora/style (tools/make_lora_fixture.py: U-Net and
text-encoder modules). The PyTorch tiny pipeline (tools/make_tiny_fixture.py,
checked against the committed ONNX fixture) gets `load_lora_weights` of its
PEFT file, `set_adapters(["style"], adapter_weights=[{"unet": s, "text_encoder": t}])`
and `fuse_lora`; that pipeline is exported with optimum's main_export and run
by tools/make_golden.py run_case (optimum's ORTStableDiffusionPipeline, CPU EP)
with the golden noise. Each case must move the final latents by 2e-2 against
the plain model and against the same LoRA at `s` for both parts (so a test
that ignored the text-encoder strength would fail).

Writes tests/fixtures/lora_component/{cases.json,<case>.latents.npy,<case>.image.npy,
noise_1x4x8x8.npy,README.md}; the cases name the LoRA files in ../lora.

    /work/venv/bin/python tools/make_lora_component_scale_golden.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import adapter_golden  # noqa: E402
from make_lora_fixture import build_torch_pipe, check_same_weights_as_fixture, export  # noqa: E402

LORA = REPO / "tests" / "fixtures" / "lora" / "style.peft.safetensors"
# name, kiln scheduler, diffusers class, steps, guidance, prompt, negative, U-Net strength, text-encoder strength
CASES = [
    ("style_te0_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", 1.0, 0.0),
    ("style_te15_euler", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry", 0.5, 1.5),
]


def fused(unet: float, text_encoder: float):
    """The PyTorch pipeline with style fused at these per-component strengths."""
    pipe = build_torch_pipe()
    pipe.load_lora_weights(str(LORA.parent), weight_name=LORA.name, adapter_name="style")
    pipe.set_adapters(["style"], adapter_weights=[{"unet": unet, "text_encoder": text_encoder}])
    pipe.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0, adapter_names=["style"])
    pipe.unload_lora_weights()
    return pipe


def main() -> None:
    out = adapter_golden.output_folder(__doc__, REPO / "tests" / "fixtures" / "lora_component")
    import make_golden

    check_same_weights_as_fixture(build_torch_pipe())
    with tempfile.TemporaryDirectory(prefix="kiln_lora_component_") as tmp:
        tmp = Path(tmp)
        noise, plain, base_config = adapter_golden.reference_setup()
        cases_json = []
        for i, (name, kiln, cls, steps, guidance, prompt, negative, s, t) in enumerate(CASES):
            ref = make_golden.load_pipe(export(fused(s, t), tmp, f"c{i}"))
            controls = {"one_strength_effect": make_golden.load_pipe(export(fused(s, s), tmp, f"o{i}"))}
            case = (name, kiln, cls, steps, guidance, prompt, negative)
            lora = {"file": "../lora/style.kohya.safetensors", "peft_file": "../lora/style.peft.safetensors", "scale": s, "text_encoder_scale": t}
            cases_json.append(adapter_golden.golden_case(out, ref, plain, base_config, case, noise, [lora], controls))
    adapter_golden.write_index(out, cases_json, noise, "A LoRA with its own text-encoder strength: diffusers goldens",
                               "tools/make_lora_component_scale_golden.py")


if __name__ == "__main__":
    main()
