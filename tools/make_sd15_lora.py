#!/usr/bin/env python3
"""Random full-size LoRAs for the SD 1.5-architecture export (tools/make_sd15_random.py).

What it makes (OUT, default /work/models/sd15-random-loras; never commit them):
  a.kohya.safetensors, a.peft.safetensors   LoRA "a", kohya-ss and diffusers/PEFT layouts
  b.kohya.safetensors, b.peft.safetensors   LoRA "b" (other seed, same shapes): switch target

Each adapts every attention projection of SD 1.5: in the U-Net, to_q, to_k, to_v
and to_out.0 of attn1 and attn2 in all 16 transformer blocks (128 modules); in
the text encoder, q_proj, k_proj, v_proj and out_proj of all 12 layers (48
modules). Rank 16, alpha 8 (a common trainer setting), float32 values drawn
from a seeded normal distribution (down N(0, 1/in), up N(0, 0.01)). For the
cost benchmark (examples/lora_bench.rs) only the shapes matter: the apply cost
is the same for any values.

The module shapes come from diffusers' UNet2DConditionModel and transformers'
CLIPTextModel built with tools/make_sd15_random.py's configs on the meta device
(no weights allocated).

Usage (from the repo root):
    /work/venv/bin/python tools/make_sd15_lora.py [OUT] [--rank 16] [--alpha 8]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))


def attention_modules():
    """[(component, dotted module path, in, out)] for every attention projection."""
    import torch
    from diffusers import UNet2DConditionModel
    from make_sd15_random import SD15_CLIP, SD15_UNET
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**SD15_UNET)
        text = CLIPTextModel(CLIPTextConfig(**SD15_CLIP))
    out = []
    for name, m in unet.named_modules():
        if isinstance(m, torch.nn.Linear) and (".attn1." in name or ".attn2." in name) and name.split(".attn")[1][2:] in ("to_q", "to_k", "to_v", "to_out.0"):
            out.append(("unet", name, m.in_features, m.out_features))
    for name, m in text.named_modules():
        if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("q_proj", "k_proj", "v_proj", "out_proj"):
            out.append(("text_encoder", name, m.in_features, m.out_features))
    n_unet = sum(1 for c, *_ in out if c == "unet")
    assert n_unet == 128 and len(out) - n_unet == 48, (n_unet, len(out))
    return out


def write(out: Path, label: str, modules, rank: int, alpha: float, seed: int) -> None:
    from safetensors.numpy import save_file

    rng = np.random.default_rng(seed)
    kohya, peft = {}, {}
    for component, name, n_in, n_out in modules:
        down = (rng.standard_normal((rank, n_in)) / np.sqrt(n_in)).astype(np.float32)
        up = (rng.standard_normal((n_out, rank)) * 0.01).astype(np.float32)
        prefix = "lora_unet_" if component == "unet" else "lora_te_"
        k = prefix + name.replace(".", "_")
        kohya[f"{k}.lora_down.weight"] = down
        kohya[f"{k}.lora_up.weight"] = up
        kohya[f"{k}.alpha"] = np.array(alpha, dtype=np.float32)
        peft[f"{component}.{name}.lora_A.weight"] = down
        peft[f"{component}.{name}.lora_B.weight"] = up
    meta = {f"{c}.{k}": v for c in ("unet", "text_encoder") for k, v in (("r", rank), ("lora_alpha", alpha))}
    save_file(kohya, str(out / f"{label}.kohya.safetensors"))
    save_file(peft, str(out / f"{label}.peft.safetensors"), metadata={"lora_adapter_metadata": json.dumps(meta)})
    size = (out / f"{label}.kohya.safetensors").stat().st_size
    print(f"{label}: {len(modules)} modules, rank {rank}, alpha {alpha}, {size / 2**20:.1f} MiB per file")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default="/work/models/sd15-random-loras")
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--alpha", type=float, default=8.0)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    modules = attention_modules()
    for label, seed in (("a", 1), ("b", 2)):
        write(out, label, modules, args.rank, args.alpha, seed)


if __name__ == "__main__":
    main()
