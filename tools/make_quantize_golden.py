#!/usr/bin/env python3
"""Goldens for int8 weights (`ModelOptions::quantization`, `--quantize int8`).

The reference is ONNX Runtime's own quantizer, the tool users run today:
`onnxruntime.quantization.quantize_dynamic(model, out,
op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
reduce_range=True)` (7-bit weights, which no CPU's int8 kernel saturates on;
see src/model/quantize.rs) on each text
encoder and U-Net of a fixture (Gemm becomes MatMul first, as that function
does; convolutions and the VAE stay float), then optimum's ORT pipeline on the
quantized folder.

What it makes (in tests/fixtures/golden/quantize/):
  weights.json    per fixture graph: the quantizer's MatMulInteger count; its
                  nodes (each as op type, name, inputs, outputs and attribute
                  bytes; sorted, since the quantizer reorders the graph) as a
                  count and an FNV-1a 64 hash; and for every int8 weight it
                  wrote, its shape, the hash of its bytes and its scale (float32
                  bits as hex). Kiln's rewrite must give the same graph: the same
                  nodes wired the same way with the same weights, so it computes
                  what the quantizer's graph computes on any CPU
  <case>.latents.npy / <case>.image.npy
                  optimum's pipeline on the quantized folder, noise from a
                  seeded torch CPU generator (Kiln: `NoiseGenerator::Torch`)
  cases.json      the parameters; how far each case's int8 result is from the
                  float model's (what quantization itself changes); and how far
                  it moves, at most over six seeded draws, when the starting
                  latents move by 1e-6 (relative):
                  dynamic quantization rounds activations, so float noise that
                  small flips roundings and the int8 pipeline's result spreads
                  by about as much as quantization itself moves it

Cases: tiny-sd txt2img `euler` and `euler_a` (its step noise from the same
generator) with guidance; tiny-sd with tests/fixtures/lora's "style" LoRA (PEFT
file) fused by diffusers at scale 1, exported with optimum, then quantized
(Kiln quantizes its own merged weights the same way); tiny-sdxl txt2img
`euler` (both text encoders and the U-Net quantized).

Usage (from repo root; needs the fixture venv and `peft`):
    /work/venv/bin/python tools/make_quantize_golden.py
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
FIXTURES = REPO / "tests" / "fixtures"
OUT = FIXTURES / "golden" / "quantize"
PROMPT = "mossy stone brick wall"
NEGATIVE = "blurry"
QUANTIZED = ["text_encoder", "text_encoder_2", "unet"]
# Seeds of the 1e-6 jitters whose widest spread cases.json records.
JITTER_SEEDS = [5, 6, 7, 8, 9, 10]

# name, fixture, kiln scheduler, diffusers class, steps, guidance, seed, lora (file, scale) or None
CASES = [
    ("euler_cfg", "tiny-sd", "euler", "EulerDiscreteScheduler", 8, 7.5, 42, None),
    ("euler_a_cfg", "tiny-sd", "euler_a", "EulerAncestralDiscreteScheduler", 8, 7.5, 7, None),
    ("lora_style_ddim", "tiny-sd", "ddim", "DDIMScheduler", 8, 7.5, 42, ("style.peft.safetensors", 1.0)),
    ("sdxl_euler", "tiny-sdxl", "euler", "EulerDiscreteScheduler", 6, 5.0, 42, None),
]


def quantize_folder(src: Path, dest: Path) -> None:
    """A copy of model folder `src` with its text encoders and U-Net quantized."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    shutil.copytree(src, dest)
    for part in QUANTIZED:
        graph = dest / part / "model.onnx"
        if graph.is_file():
            quantized = dest / part / "model.int8.onnx"
            quantize_dynamic(str(graph), str(quantized), op_types_to_quantize=["MatMul"], weight_type=QuantType.QInt8,
                             reduce_range=True)
            quantized.replace(graph)


def fnv1a64(data: bytes) -> str:
    """FNV-1a, 64 bits (what the Rust test computes without a hashing crate)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def weight_digests(graph: Path) -> dict:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(graph))
    weights = {}
    for init in model.graph.initializer:
        a = numpy_helper.to_array(init)
        if init.name.endswith("_quantized"):
            assert a.dtype == np.int8, (init.name, a.dtype)
            weights[init.name] = {"shape": list(a.shape), "fnv1a64": fnv1a64(a.tobytes())}
        elif init.name.endswith("_scale"):
            weights[init.name] = {"f32_bits": struct.pack("<f", float(a)).hex()}
    count = sum(1 for n in model.graph.node if n.op_type == "MatMulInteger")
    return {"matmul_integer": count, "initializers": weights, **node_digest(model)}


def node_key(node) -> str:
    """One node as the Rust test writes it: op|name|inputs|outputs|attribute bytes."""
    attributes = ",".join(a.SerializeToString().hex() for a in node.attribute)
    return "|".join([node.op_type, node.name, ",".join(node.input), ",".join(node.output), attributes])


def node_digest(model) -> dict:
    keys = sorted(node_key(n) for n in model.graph.node)
    return {"nodes": len(keys), "nodes_fnv1a64": fnv1a64("\n".join(keys).encode())}


def run(folder: Path, case, perturb: float = 0.0, jitter_seed: int = 5) -> dict:
    import diffusers
    import torch
    from optimum.onnxruntime import ORTDiffusionPipeline

    name, _fixture, _kiln, sched_cls, steps, guidance, seed, _lora = case
    pipe = ORTDiffusionPipeline.from_pretrained(str(folder), provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = getattr(diffusers, sched_cls).from_config(dict(pipe.scheduler.config))
    captured = {}

    def on_end(p, i, t, kw):
        captured["latents"] = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
        return kw

    generator = torch.Generator().manual_seed(seed)
    extra = {}
    if perturb:
        # The pipeline's own first draw, made here and moved by `perturb`
        # (relative, seeded); the generator then goes on as in the plain run.
        channels = pipe.unet.config.in_channels
        side = pipe.unet.config.sample_size
        latents = torch.randn((1, channels, side, side), generator=generator)
        jitter = torch.randn(latents.shape, generator=torch.Generator().manual_seed(jitter_seed))
        extra["latents"] = latents * (1 + perturb * jitter)
    out = pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        num_inference_steps=steps,
        guidance_scale=guidance,
        generator=generator,
        output_type="np",
        callback_on_step_end=on_end,
        **extra,
    )
    return {"latents": captured["latents"], "image": out.images[0].astype(np.float32)}


def lora_folder(tmp: Path, lora: tuple[str, float]) -> Path:
    """tiny-sd with `lora` fused by diffusers, exported by optimum."""
    from make_lora_fixture import check_same_weights_as_fixture, export, fused_state

    file, scale = lora
    pipe = fused_state([(FIXTURES / "lora" / file, scale)], tmp)
    plain = fused_state([(FIXTURES / "lora" / file, 0.0)], tmp)
    check_same_weights_as_fixture(plain)
    return export(pipe, tmp, "lora")


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        digests = {}
        for fixture in ["tiny-sd", "tiny-sdxl"]:
            quantize_folder(FIXTURES / fixture, tmp / f"{fixture}-int8")
            for part in QUANTIZED:
                graph = tmp / f"{fixture}-int8" / part / "model.onnx"
                if graph.is_file():
                    digests[f"{fixture}/{part}"] = weight_digests(graph)
        (OUT / "weights.json").write_text(json.dumps(digests, indent=1, sort_keys=True) + "\n")

        cases = []
        for case in CASES:
            name, fixture, kiln, sched_cls, steps, guidance, seed, lora = case
            float_folder = FIXTURES / fixture
            if lora is not None:
                float_folder = lora_folder(tmp, lora)
            int8_folder = tmp / f"{name}-int8"
            quantize_folder(float_folder, int8_folder)
            q = run(int8_folder, case)
            f = run(float_folder, case)
            jittered = [run(int8_folder, case, perturb=1e-6, jitter_seed=j) for j in JITTER_SEEDS]
            np.save(OUT / f"{name}.latents.npy", q["latents"])
            np.save(OUT / f"{name}.image.npy", q["image"])
            scale = float(np.abs(q["latents"]).max())

            def distance(other):
                d = np.abs(q["latents"] - other["latents"])
                return float(d.max()) / scale, float(d.mean()) / scale, float(np.abs(q["image"] - other["image"]).mean())

            effect = distance(f)
            # The widest of the jittered runs, each measure on its own.
            sensitivity = tuple(max(v) for v in zip(*(distance(j) for j in jittered)))
            print(f"{name}: int8 vs float latents max/mean rel {effect[0]:.3e}/{effect[1]:.3e}, image mean abs {effect[2]:.3e}; "
                  f"int8 with 1e-6 jitter {sensitivity[0]:.3e}/{sensitivity[1]:.3e}, {sensitivity[2]:.3e}")
            cases.append({
                "name": name,
                "fixture": fixture,
                "kiln_scheduler": kiln,
                "diffusers_scheduler": sched_cls,
                "steps": steps,
                "guidance_scale": guidance,
                "seed": seed,
                "prompt": PROMPT,
                "negative_prompt": NEGATIVE,
                "lora": None if lora is None else {"file": lora[0], "scale": lora[1]},
                "int8_vs_float": {"latents_max_rel": effect[0], "latents_mean_rel": effect[1], "image_mean_abs": effect[2]},
                "int8_jittered_1e-6": {"latents_max_rel": sensitivity[0], "latents_mean_rel": sensitivity[1], "image_mean_abs": sensitivity[2]},
            })
        (OUT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
