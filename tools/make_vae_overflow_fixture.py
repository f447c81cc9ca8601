#!/usr/bin/env python3
"""Build tests/fixtures/variants/vae-fp16-overflow/: an fp16 VAE decoder that overflows.

What it makes:

  vae-fp16-overflow/vae_decoder/model.onnx   float16 weights and I/O: a seeded AutoencoderKL of
                                             tiny-sd's VAE config, one conv scaled so that fp16 overflows
  vae-fp16-overflow/vae_decoder/config.json  that VAE's config (tiny-sd's)
  vae-fp16-overflow/variant.json             every other file from tiny-sd
  vae-fp16-overflow/golden/latents.npy       f32 [1, 4, 16, 16] U-Net-scale latents (rng 5, x 1.5)
  vae-fp16-overflow/golden/image.npy         f32 [1, 3, 128, 128] raw decoder output, computed in
                                             float32 (torch) from the fp16-rounded weights:
                                             decode(latents / scaling_factor).sample

Why: SDXL's fp16 VAE overflows (activations above 65504 become inf, GroupNorm turns them into NaN)
and a pipeline that does not notice returns black pixels. Kiln retries such a decode in float32 by
upcasting the graph; this fixture makes the overflow happen on a tiny graph.

How the overflow is made: `up_blocks[-1].resnets[0].conv1` (weight and bias) is multiplied by
GAIN = 4e5. The GroupNorm right after it (norm2) normalizes its output, so in float32 the decode is
an ordinary image; in float16 the conv's outputs (std ~1e5) overflow to inf. The largest scaled
weight stays below 65504, so the fp16 file holds finite weights and upcasting it gives exactly the
float32 network of the golden. The script asserts both: onnxruntime's fp16 decode has non-finite
values, and the float32 decode is finite with a non-degenerate range.

Deterministic: torch.manual_seed(0) before the module. Idempotent: the folder is wiped and rebuilt.

Usage (from repo root):
    /work/venv/bin/python tools/make_vae_overflow_fixture.py
Needs the fixture venv (tools/requirements-fixtures.txt) and tests/fixtures/tiny-sd.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "tests" / "fixtures" / "tiny-sd"
VDIR = REPO / "tests" / "fixtures" / "variants" / "vae-fp16-overflow"
GAIN = 4.0e5
OPSET = 17


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import onnx
    import onnxruntime as ort
    import torch
    from diffusers import AutoencoderKL
    from onnxruntime.transformers.float16 import convert_float_to_float16

    torch.set_num_threads(1)
    if VDIR.exists():
        shutil.rmtree(VDIR)
    (VDIR / "vae_decoder").mkdir(parents=True)
    (VDIR / "golden").mkdir()

    cfg = json.loads((BASE / "vae_decoder" / "config.json").read_text())
    keys = {k: v for k, v in cfg.items() if not k.startswith("_")}
    torch.manual_seed(0)
    vae = AutoencoderKL(**keys).eval()
    conv = vae.decoder.up_blocks[-1].resnets[0].conv1
    with torch.no_grad():
        conv.weight.mul_(GAIN)
        conv.bias.mul_(GAIN)
        wmax = float(conv.weight.abs().max())
        assert wmax < 60000, f"scaled weight {wmax} would not fit in fp16"
        # The golden uses exactly the weights the fp16 file holds.
        for p in vae.parameters():
            p.copy_(p.half().float())

    class Decode(torch.nn.Module):
        def __init__(self, vae):
            super().__init__()
            self.vae = vae

        def forward(self, latent_sample):
            return self.vae.decode(latent_sample).sample

    sf = float(cfg["scaling_factor"])
    with tempfile.TemporaryDirectory() as t:
        f32 = Path(t) / "model.onnx"
        with torch.no_grad():
            torch.onnx.export(
                Decode(vae).eval(),
                (torch.randn(1, 4, 8, 8),),
                str(f32),
                input_names=["latent_sample"],
                output_names=["sample"],
                dynamic_axes={"latent_sample": {0: "batch", 2: "h", 3: "w"}, "sample": {0: "batch", 2: "H", 3: "W"}},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        m32 = onnx.load(str(f32))
        # ONNX Runtime's CPU provider has few float16 kernels: it runs such nodes in float32 and drops
        # the casts between them, so an all-fp16 graph never overflows on a CPU. The scaled conv is kept
        # in float32 (as mixed-precision exports keep some nodes), so its output goes through an
        # explicit Cast to float16 that every provider honours, and overflows there.
        scaled = [n.name for n in m32.graph.node if n.op_type == "Conv" and "up_blocks.3/resnets.0/conv1" in n.name]
        assert len(scaled) == 1, [n.name for n in m32.graph.node if n.op_type == "Conv"]
        m16 = convert_float_to_float16(m32, keep_io_types=False, disable_shape_infer=False, node_block_list=scaled)
    out = VDIR / "vae_decoder" / "model.onnx"
    onnx.save(m16, str(out))
    shutil.copyfile(BASE / "vae_decoder" / "config.json", VDIR / "vae_decoder" / "config.json")

    latents = (np.random.default_rng(5).standard_normal((1, 4, 16, 16)) * 1.5).astype(np.float32)
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(latents) / sf).sample.numpy()
    assert np.isfinite(ref).all(), "float32 decode is not finite"
    print(f"float32 decode range [{ref.min():.3f}, {ref.max():.3f}] std {ref.std():.3f}")
    assert ref.std() > 0.05
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    s = ort.InferenceSession(str(out), so, providers=["CPUExecutionProvider"])
    got = s.run(None, {"latent_sample": (latents / np.float32(sf)).astype(np.float16)})[0]
    bad = int((~np.isfinite(got.astype(np.float32))).sum())
    print(f"fp16 decode: {bad} of {got.size} values non-finite")
    assert bad > 0, "the fp16 decoder does not overflow"
    np.save(VDIR / "golden" / "latents.npy", latents)
    np.save(VDIR / "golden" / "image.npy", ref.astype(np.float32))

    from_base = sorted(
        p.relative_to(BASE).as_posix()
        for p in BASE.rglob("*")
        if p.is_file() and p.name != "README.md" and not p.relative_to(BASE).as_posix().startswith("vae_decoder/")
    )
    spec = {
        "base": "../../tiny-sd",
        "description": "tiny-sd with a float16 VAE decoder that overflows in float16 (inf, then NaN) but is an "
        "ordinary decoder in float32: the fp32-retry fixture",
        "how": f"seeded (torch.manual_seed(0)) AutoencoderKL of tiny-sd's VAE config, decoder "
        f"up_blocks[-1].resnets[0].conv1 weight and bias x {GAIN:g}, torch.onnx.export(opset {OPSET}) then "
        "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=False); golden/ holds "
        "latents and the float32 torch decode (tools/make_vae_overflow_fixture.py)",
        "from_base": from_base,
    }
    (VDIR / "variant.json").write_text(json.dumps(spec, indent=2) + "\n")
    total = sum(p.stat().st_size for p in VDIR.rglob("*") if p.is_file())
    print(f"{VDIR.relative_to(REPO)}: {total} bytes")
    assert total < 1_000_000


if __name__ == "__main__":
    sys.exit(main())
