#!/usr/bin/env python3
"""Random SDXL LoRA files for tests/fixtures/tiny-sdxl and optimum goldens for them.

What it makes (in OUT, default tests/fixtures/sdxl-lora/):
  style.kohya.safetensors   kohya-ss SDXL layout, as sd-scripts writes it: U-Net keys in
                            the original SGM naming (`lora_unet_input_blocks_3_1_...`,
                            `middle_block_1`, `output_blocks_1_1`; resnet convs as
                            `in_layers_2`/`out_layers_3`/`emb_layers_1`), `lora_te1_`
                            (CLIP-L) and `lora_te2_` (the second encoder), `.alpha`
  style.peft.safetensors    the same tensors as diffusers' save_lora_weights writes them
                            (unet./text_encoder./text_encoder_2., alpha in the metadata)
  cases.json, <case>.{latents,image,draws}.npy   goldens
  README.md

"style" adapts, on the U-Net, every attention projection, ff, proj_in/proj_out of the
down, mid and up blocks, two resnet convolutions and a time-embedding projection
(LoCon-style); on both text encoders q/k/v/out_proj and fc1/fc2.

Goldens: the PyTorch tiny SDXL (tools/make_sdxl_fixture.py build_pipeline, the same
seeded weights as the committed ONNX fixture, checked here) gets
`load_lora_weights` + `fuse_lora(lora_scale=S)`, is exported with optimum's
main_export and run by optimum's ORTStableDiffusionXLPipeline with every random
draw recorded (tools/make_sdxl_golden.py run). Kiln loads the plain fixture plus
the LoRA file and must match. Also checked here: the kohya (SGM-named) and PEFT
files fuse to bit-identical weights in diffusers, so diffusers' own SGM → diffusers
key conversion agrees with the names written; and every case's LoRA moves the
final latents by far more than the test tolerance.

Usage (from the repo root):
    /work/venv/bin/python tools/make_sdxl_lora_fixture.py [--out tests/fixtures/sdxl-lora]
Needs the fixture venv plus `peft`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "tiny-sdxl"
sys.path.insert(0, str(REPO / "tools"))

UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out",
                "down_blocks.1.resnets.0.conv1", "mid_block.resnets.1.conv2", "up_blocks.0.resnets.1.time_emb_proj"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]

# name, kiln scheduler, steps, guidance, LoRA scale, extra pipeline kwargs
CASES = [
    ("style_euler_s1", "euler", 6, 5.0, 1.0, {"negative_prompt": "blurry"}),
    ("style_ddim_s05", "ddim", 6, 6.0, 0.5, {"negative_prompt": "blurry", "prompt_2": "rusty metal plate"}),
]


def build_torch_pipe():
    from make_sdxl_fixture import build_pipeline

    return build_pipeline()


def check_same_weights_as_fixture(pipe) -> None:
    """The seeded PyTorch modules must be the committed ONNX fixture's weights."""
    import onnx
    from onnx import numpy_helper

    for part in ("unet", "text_encoder", "text_encoder_2"):
        module = getattr(pipe, part)
        graph = onnx.load(str(FIXTURE / part / "model.onnx"))
        sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
        checked = 0
        for name, a in inits.items():
            if name in sd:
                if not np.array_equal(a, sd[name]):
                    raise SystemExit(f"{part}: {name} differs from the committed fixture; rebuild it first")
                checked += 1
        for node in graph.graph.node:
            if node.op_type == "MatMul" and node.input[1] in inits and node.name.endswith("/MatMul"):
                key = ".".join(node.name.split("/")[1:-1]) + ".weight"
                if key in sd:
                    if not np.array_equal(inits[node.input[1]], sd[key].T):
                        raise SystemExit(f"{part}: {key} differs from the committed fixture")
                    checked += 1
        if checked < 10:
            raise SystemExit(f"{part}: only {checked} named initializers to compare")
        print(f"{part}: {checked} named initializers equal the fixture's")


def random_lora(part, targets, rank, alpha, seed, std):
    """PEFT LoRA on a fresh pipeline's `part` with random A and B."""
    import torch
    from peft import LoraConfig, get_peft_model_state_dict

    module = getattr(build_torch_pipe(), part)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    module.add_adapter(cfg, adapter_name="tmp")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name and ".tmp." in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    sd = get_peft_model_state_dict(module, adapter_name="tmp")
    return cfg, {k: v.detach().clone().contiguous() for k, v in sd.items()}


RESNET_SGM = {"conv1": "in_layers.2", "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}


def sgm_name(module: str, layers_per_block: int) -> str:
    """A diffusers U-Net module path in the original SGM naming kohya's SDXL trainer uses."""
    per = layers_per_block + 1
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.*)", module)
    if m:
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "downsamplers":
            return f"input_blocks.{1 + b * per + layers_per_block}.0.op"
        inner = "0" if kind == "resnets" else "1"
        return f"input_blocks.{1 + b * per + i}.{inner}.{resnet_rest(kind, rest)}"
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.*)", module)
    if m:
        kind, i, rest = m[1], int(m[2]), m[3]
        block = {("resnets", 0): 0, ("attentions", 0): 1, ("resnets", 1): 2}[(kind, i)]
        return f"middle_block.{block}.{resnet_rest(kind, rest)}"
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.*)", module)
    if m:
        b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
        if kind == "upsamplers":
            return f"output_blocks.{b * per + layers_per_block}.2.conv"
        inner = "0" if kind == "resnets" else "1"
        return f"output_blocks.{b * per + i}.{inner}.{resnet_rest(kind, rest)}"
    raise SystemExit(f"no SGM name for {module}")


def resnet_rest(kind: str, rest: str) -> str:
    return RESNET_SGM.get(rest, rest) if kind == "resnets" else rest


def kohya_sdxl_dict(parts, layers_per_block):
    """PEFT state dicts → kohya SDXL keys: (prefix, state dict, alpha, SGM names?)."""
    import torch

    out = {}
    for prefix, sd, alpha, sgm in parts:
        for k, v in sd.items():
            stem, part = k.rsplit(".lora_", 1)
            module = sgm_name(stem, layers_per_block) if sgm else stem
            kk = prefix + module.replace(".", "_")
            if part == "A.weight":
                out[kk + ".lora_down.weight"] = v
                out[kk + ".alpha"] = torch.tensor(float(alpha))
            elif part == "B.weight":
                out[kk + ".lora_up.weight"] = v
            else:
                raise SystemExit(f"unexpected PEFT key {k}")
    return out


def fused(path: Path, scale: float):
    pipe = build_torch_pipe()
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name="a")
    pipe.set_adapters(["a"], adapter_weights=[scale])
    pipe.fuse_lora(components=["unet", "text_encoder", "text_encoder_2"], lora_scale=1.0, adapter_names=["a"])
    pipe.unload_lora_weights()
    return pipe


def export(pipe, tmp: Path, name: str) -> Path:
    from optimum.exporters.onnx import main_export

    pt = tmp / f"{name}_pt"
    pipe.save_pretrained(str(pt), safe_serialization=True)
    onnx_dir = tmp / f"{name}_onnx"
    main_export(str(pt), output=str(onnx_dir), task="text-to-image", device="cpu", do_validation=False, local_files_only=True)
    return onnx_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "sdxl-lora"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import save_file

    import make_sdxl_golden

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pipe = build_torch_pipe()
    check_same_weights_as_fixture(pipe)
    lpb = pipe.unet.config.layers_per_block

    ucfg, usd = random_lora("unet", UNET_TARGETS, rank=4, alpha=6, seed=1, std=0.1)
    t1cfg, t1sd = random_lora("text_encoder", TE_TARGETS, rank=2, alpha=3, seed=2, std=0.2)
    t2cfg, t2sd = random_lora("text_encoder_2", TE_TARGETS, rank=3, alpha=2, seed=3, std=0.2)
    StableDiffusionXLPipeline.save_lora_weights(
        str(out), unet_lora_layers=usd, text_encoder_lora_layers=t1sd, text_encoder_2_lora_layers=t2sd,
        weight_name="style.peft.safetensors", unet_lora_adapter_metadata=ucfg.to_dict(),
        text_encoder_lora_adapter_metadata=t1cfg.to_dict(), text_encoder_2_lora_adapter_metadata=t2cfg.to_dict(),
    )
    kohya = kohya_sdxl_dict([("lora_unet_", usd, 6, True), ("lora_te1_", t1sd, 3, False), ("lora_te2_", t2sd, 2, False)], lpb)
    save_file(kohya, str(out / "style.kohya.safetensors"))
    print("LoRA modules: unet", len(usd) // 2, "te1", len(t1sd) // 2, "te2", len(t2sd) // 2)
    print("e.g.", sorted(k for k in kohya if "blocks" in k)[:3])

    with tempfile.TemporaryDirectory(prefix="kiln_sdxl_lora_") as tmp:
        tmp = Path(tmp)
        a = fused(out / "style.peft.safetensors", 1.0)
        b = fused(out / "style.kohya.safetensors", 1.0)
        plain = build_torch_pipe()
        worst, changed = 0.0, {}
        for part in ("unet", "text_encoder", "text_encoder_2"):
            sa, sb, sp = getattr(a, part).state_dict(), getattr(b, part).state_dict(), getattr(plain, part).state_dict()
            for k in sa:
                worst = max(worst, float((sa[k] - sb[k]).abs().max()))
                if not np.array_equal(sa[k].numpy(), sp[k].numpy()):
                    changed[part] = changed.get(part, 0) + 1
        print(f"style: kohya (SGM names) vs PEFT fused weights max |diff| {worst:.3e}; changed tensors {changed}")
        if worst > 1e-6:
            raise SystemExit("the kohya and PEFT files fuse differently in diffusers")
        want = {"unet": len(usd) // 2, "text_encoder": len(t1sd) // 2, "text_encoder_2": len(t2sd) // 2}
        if changed != want:
            raise SystemExit(f"diffusers fused {changed} tensors, the LoRA has {want} modules")

        init = None
        cases = []
        for name, kiln, steps, guidance, scale, kwargs in CASES:
            onnx_dir = export(fused(out / "style.peft.safetensors", scale), tmp, name)
            make_sdxl_golden.FIXTURE = str(onnx_dir)
            r1 = make_sdxl_golden.run(name, kiln, steps, guidance, False, kwargs, init)
            r2 = make_sdxl_golden.run(name, kiln, steps, guidance, False, kwargs, init)
            for k in ("latents", "image", "draws"):
                if not np.array_equal(r1[k], r2[k]):
                    raise SystemExit(f"{name}: {k} not deterministic")
            make_sdxl_golden.FIXTURE = str(FIXTURE)
            p = make_sdxl_golden.run(name, kiln, steps, guidance, False, kwargs, init)
            if not np.array_equal(p["draws"], r1["draws"]):
                raise SystemExit(f"{name}: the plain run drew other noise")
            effect = float(np.abs(p["latents"] - r1["latents"]).max() / np.abs(r1["latents"]).max())
            print(f"{name}: the LoRA moves the final latents by {effect:.3e} relative (test bound 1e-3)")
            if effect < 2e-2:
                raise SystemExit(f"{name}: the LoRA barely changes the output; a test could not fail")
            for k in ("latents", "image", "draws"):
                np.save(out / f"{name}.{k}.npy", r1[k])
            cases.append({
                "name": name, "kiln_scheduler": kiln, "steps": steps, "guidance_scale": guidance,
                "prompt": make_sdxl_golden.PROMPT, "scale": scale, "unet_timesteps": r1["timesteps"],
                "latent_effect": effect, **kwargs,
            })
    (out / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    import make_golden

    v = make_golden.versions()
    import peft

    v["peft"] = peft.__version__
    (out / "README.md").write_text(
        "# SDXL LoRA fixtures and goldens\n\nFor tests/fixtures/tiny-sdxl; made by `tools/make_sdxl_lora_fixture.py` "
        "(see its docstring):\n\n    /work/venv/bin/python tools/make_sdxl_lora_fixture.py\n\n## Versions\n\n"
        + "".join(f"- {k} {val}\n" for k, val in v.items())
    )
    print("wrote", out, sum(p.stat().st_size for p in out.iterdir()), "bytes")


if __name__ == "__main__":
    main()
