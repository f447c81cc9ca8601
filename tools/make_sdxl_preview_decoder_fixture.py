#!/usr/bin/env python3
"""Build the tiny TAESDXL-shaped preview decoder for tests/fixtures/tiny-sdxl:
tests/fixtures/sdxl-preview/.

TAESDXL (madebyollin/taesdxl) is a diffusers AutoencoderTiny with the same
config as TAESD (latent_channels 4, scaling_factor 1.0), trained on SDXL's
latents: it takes the SDXL U-Net's latents as they are (SDXL's VAE divides by
0.13025 first; TAESDXL does not). This script makes that shape with tiny
random weights, using tools/make_preview_decoder_fixture.py's config and
export (16-channel blocks, last conv weight x12 and bias 0.5 so the preview is
not black) with another seed, so the graph differs from the SD 1.5 one.

What it makes:
  sdxl-preview/preview_decoder/model.onnx   the decoder, input `latent_sample`, output `sample`
  sdxl-preview/preview_decoder/config.json  the AutoencoderTiny config (scaling_factor 1.0)
  sdxl-preview/golden/latents.npy           f32 [1,4,8,8]: np.random.default_rng(18).standard_normal * 2
  sdxl-preview/golden/preview.npy           f32 HWC [64,64,3]: torch (decode(latents).sample / 2 + 0.5).clamp(0, 1)
  sdxl-preview/README.md

Tests copy tiny-sdxl and preview_decoder/ into one folder (tests/sdxl_features.rs).

    /work/venv/bin/python tools/make_sdxl_preview_decoder_fixture.py
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_preview_decoder_fixture as sd15  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "fixtures" / "sdxl-preview"
SEED = 3
TOL = 1e-4


def build():
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(SEED)
    vae = AutoencoderTiny(**sd15.TINY_TAESD).eval()
    last = vae.decoder.layers[-1]
    assert isinstance(last, torch.nn.Conv2d) and last.out_channels == 3, last
    with torch.no_grad():
        last.weight.mul_(sd15.LAST_CONV_GAIN)
        last.bias.fill_(0.5)
    return vae


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    if OUT.exists():
        shutil.rmtree(OUT)
    pdir, gdir = OUT / "preview_decoder", OUT / "golden"
    pdir.mkdir(parents=True)
    gdir.mkdir(parents=True)
    vae = build()
    vae.save_config(str(pdir))
    cfg = json.loads((pdir / "config.json").read_text(encoding="utf-8"))
    assert cfg["_class_name"] == "AutoencoderTiny" and cfg["latent_channels"] == 4 and cfg["scaling_factor"] == 1.0, cfg
    onnx_path = pdir / "model.onnx"
    dummy = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(
            sd15.DecodeWrap(vae), (dummy,), str(onnx_path), input_names=["latent_sample"], output_names=["sample"],
            dynamic_axes={"latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"},
                          "sample": {0: "batch_size", 2: "latent_height * 8", 3: "latent_width * 8"}},
            do_constant_folding=True, opset_version=sd15.OPSET, dynamo=False,
        )
    latents = (np.random.default_rng(18).standard_normal((1, 4, 8, 8)) * 2.0).astype(np.float32)
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(latents)).sample.numpy()
    got = sd15.ort_session(onnx_path).run(["sample"], {"latent_sample": latents})[0]
    preview, preview_onnx = sd15.to_hwc01(ref), sd15.to_hwc01(got)
    diff = float(np.abs(preview - preview_onnx).max())
    clamped = float(np.mean((preview <= 0.0) | (preview >= 1.0)))
    print(f"preview |onnx - torch| max {diff:.3e}; mean {preview.mean():.3f} std {preview.std():.3f} clamped {clamped:.3f}")
    assert diff <= TOL
    assert clamped < 0.1 and preview.std() > 0.1, "degenerate preview"
    np.save(gdir / "latents.npy", latents)
    np.save(gdir / "preview.npy", preview)
    (OUT / "README.md").write_text(
        "# sdxl-preview\n\nA tiny TAESDXL-shaped preview decoder (diffusers AutoencoderTiny, latent_channels 4, "
        "scaling_factor 1.0, seeded random weights) for tests/fixtures/tiny-sdxl, and one golden decode from "
        "PyTorch. Made by `tools/make_sdxl_preview_decoder_fixture.py` (read it for the details).\n"
    )
    print("wrote", OUT, sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file()), "bytes")


if __name__ == "__main__":
    main()
