#!/usr/bin/env python3
"""Build the VAE benchmark model: tiny-sd with an SD 1.5-size VAE decoder and a full-size TAESD.

What it makes in OUT (default /work/models/vae-bench; never commit it):

  every tiny-sd file but vae_decoder/ (small text encoder and U-Net: the benchmark decodes only)
  vae_decoder/model.onnx (+ model.onnx_data)      diffusers AutoencoderKL with SD 1.5's VAE config
                                                  (block_out_channels 128/256/512/512, 2 layers per
                                                  block, mid attention), decoder only, fp32, seeded
                                                  random weights: 49.5 M parameters, as SD 1.5's
  preview_decoder/model.onnx (+ model.onnx_data)  diffusers AutoencoderTiny with its default config
                                                  (TAESD's: 64 channels, 3 blocks per stage), decoder only
  */config.json                                   the configs, as diffusers saves them

The weights live in `model.onnx_data` beside each graph. The cost (time and memory) of a decode does
not depend on the weight values, so `--zero-weights-ok`: the benchmark may run with a data file of
zeros of the same size (tools/vae_memory.sh does that where the real file cannot be copied).

Usage (from the repo root):
    /work/venv/bin/python tools/make_vae_bench_model.py [OUT]
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "tests" / "fixtures" / "tiny-sd"

# runwayml/stable-diffusion-v1-5 vae/config.json (architecture keys).
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[128, 256, 512, 512],
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)


def export(module, path: Path, latent_hw=(8, 8)):
    import onnx
    import torch

    class Decode(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, latent_sample):
            return self.m.decode(latent_sample).sample

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / "tmp.onnx"
    with torch.no_grad():
        torch.onnx.export(
            Decode(module).eval(),
            (torch.randn(1, 4, *latent_hw),),
            str(tmp),
            input_names=["latent_sample"],
            output_names=["sample"],
            dynamic_axes={"latent_sample": {0: "batch", 2: "h", 3: "w"}, "sample": {0: "batch", 2: "H", 3: "W"}},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    m = onnx.load(str(tmp))
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="model.onnx_data", size_threshold=1024)
    tmp.unlink()
    for p in path.parent.glob("tmp.onnx*"):
        p.unlink()


def main() -> None:
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny

    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/work/models/vae-bench")
    if out.exists():
        shutil.rmtree(out)
    for p in BASE.rglob("*"):
        rel = p.relative_to(BASE)
        if p.is_file() and not rel.as_posix().startswith("vae_decoder/") and p.name != "README.md":
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, out / rel)
    torch.manual_seed(0)
    vae = AutoencoderKL(**SD15_VAE).eval()
    vae.encoder = None  # decoder only
    print("VAE decoder parameters:", sum(p.numel() for p in vae.parameters()))
    export(vae, out / "vae_decoder" / "model.onnx")
    vae.save_config(str(out / "vae_decoder"))
    torch.manual_seed(0)
    taesd = AutoencoderTiny().eval()
    print("TAESD decoder parameters:", sum(p.numel() for p in taesd.decoder.parameters()))
    export(taesd, out / "preview_decoder" / "model.onnx")
    taesd.save_config(str(out / "preview_decoder"))
    cfg = json.loads((out / "preview_decoder" / "config.json").read_text())
    print("TAESD scaling_factor", cfg.get("scaling_factor"))
    for p in sorted(out.rglob("*.onnx*")):
        print(f"{p.stat().st_size:>12}  {p.relative_to(out)}")


if __name__ == "__main__":
    main()
