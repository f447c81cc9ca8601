#!/usr/bin/env python3
"""Build the tiny super-resolution (upscaler) fixtures in tests/fixtures/upscaler/ and their goldens.

What it makes:

  upscaler/image.npy           f32 [20, 24, 4]: the test picture, RGBA bytes stored as floats (a
                               smooth colour field with a sharp diagonal edge; alpha falls from 255
                               to 40 across the image, so the alpha path has work to do)
  upscaler/x4/model.onnx       an ESRGAN-architecture net (Wang et al. 2018, RRDB trunk: 16 channels,
                               growth 8, one RRDB of three dense blocks, two nearest-2x + conv stages,
                               HR conv, last conv), seeded weights, input `input` f32 [N, 3, H, W]
                               dynamic, output `output` [N, 3, 4H, 4W]. Its receptive field reaches
                               19 input pixels from the centre (17 convs at input resolution, the
                               rest after upsampling), so a context of 20 makes tiles exact.
  upscaler/x2-fixed.onnx       a small ESPCN-style net (conv 5x5, LeakyReLU, conv 3x3, pixel
                               shuffle 2) with the input size FIXED to [1, 3, 16, 16] (some
                               exports are), output [1, 3, 32, 32]; receptive field 3 pixels
  upscaler/x2-fixed.json       its settings file beside it: {"scale": 2}
  upscaler/x2-f16/model.onnx   the same x2 net (same weights) in float16 with dynamic sizes: f16 in
                               and out, so Kiln converts both ways; checked against x2_whole (f32)
  upscaler/golden/*.npy        f32 [3, h, w] planes (RGB in 0..1, or the alpha matte replicated):
    x4_whole        the x4 net in torch on the whole image (RGB / 255), zero padding at the borders
    x4_wrap_xy      the x4 net on the image padded circularly by 20 on both axes, cropped back:
                    what a tileable texture's upscale must be (it tiles too)
    x4_wrap_x       circular padding along x only (zero padding at the top and bottom)
    x4_alpha        the x4 net on the alpha plane replicated to three channels (alpha / 255)
    alpha_bilinear  F.interpolate(alpha, scale 4, bilinear, align_corners=False): the cheap path
    x2_whole        the x2 net (same weights, any size) on the whole image
    x2_small        the x2 net on a 12x10 crop edge-padded (replicate) to the fixed 16x16, cropped
                    back to 24x20: what Kiln must do with an image smaller than a fixed input
    x2_small_wrap   the x2 net on the same crop padded circularly by 3 (its receptive field) on
                    both axes, cropped back: the seamless upscale of an image smaller than the
                    fixed input

Kiln's tiled output must equal these within tests/upscaler.rs's stated tolerance: tiles with enough
context, circular windows for seamless axes, fixed-size windows, and the alpha paths all follow the
contract documented in src/model/upscaler.rs.

Deterministic: torch.manual_seed per net, one torch thread; rerunning gives the same numbers.
Idempotent: tests/fixtures/upscaler/ is wiped and rebuilt.

Usage (from repo root):
    /work/venv/bin/python tools/make_upscaler_fixture.py
    /work/venv/bin/python tools/make_upscaler_fixture.py --bench-graph DIR
The second form writes only DIR/model.onnx: the same architecture at ESRGAN's published size (64
channels, growth 32, 23 RRDBs; 16.7 M parameters, 67 MB) with seeded random weights, for
tools/bench_upscaler.py. Not committed.
Needs torch and onnx (tools/requirements-fixtures.txt).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/upscaler"
H, W = 20, 24
X4_CONTEXT = 20


def lrelu(x):
    return F.leaky_relu(x, 0.2)


class DenseBlock(nn.Module):
    """Five 3x3 convs, each seeing the block input and every earlier output; scaled residual."""

    def __init__(self, nf, gc):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, padding=1) for i in range(5))

    def forward(self, x):
        feats = [x]
        for i, conv in enumerate(self.convs):
            y = conv(torch.cat(feats, 1))
            if i < 4:
                feats.append(lrelu(y))
        return x + 0.2 * y


class Rrdb(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.blocks = nn.Sequential(*(DenseBlock(nf, gc) for _ in range(3)))

    def forward(self, x):
        return x + 0.2 * self.blocks(x)


class Esrgan(nn.Module):
    def __init__(self, nf=16, gc=8, nb=1):
        super().__init__()
        self.first = nn.Conv2d(3, nf, 3, padding=1)
        self.trunk = nn.Sequential(*(Rrdb(nf, gc) for _ in range(nb)))
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        self.up1 = nn.Conv2d(nf, nf, 3, padding=1)
        self.up2 = nn.Conv2d(nf, nf, 3, padding=1)
        self.hr = nn.Conv2d(nf, nf, 3, padding=1)
        self.last = nn.Conv2d(nf, 3, 3, padding=1)

    def forward(self, x):
        fea = self.first(x)
        fea = fea + self.trunk_conv(self.trunk(fea))
        fea = lrelu(self.up1(F.interpolate(fea, scale_factor=2, mode="nearest")))
        fea = lrelu(self.up2(F.interpolate(fea, scale_factor=2, mode="nearest")))
        # A skip from the input keeps outputs near the picture, so clamping to 0..1 rarely bites.
        base = F.interpolate(x, scale_factor=4, mode="nearest")
        return base + 0.1 * self.last(lrelu(self.hr(fea)))


class Espcn(nn.Module):
    def __init__(self, scale=2, nf=12):
        super().__init__()
        self.c1 = nn.Conv2d(3, nf, 5, padding=2)
        self.c2 = nn.Conv2d(nf, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        self.scale = scale

    def forward(self, x):
        base = F.interpolate(x, scale_factor=self.scale, mode="nearest")
        return base + 0.1 * self.shuffle(self.c2(lrelu(self.c1(x))))


def picture():
    """RGBA bytes [H, W, 4]: smooth colour, a sharp diagonal edge, alpha falling left to right."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    r = 128 + 100 * np.sin(x / 3.0) * np.cos(y / 5.0)
    g = 60 + 150 * (y / (H - 1))
    b = np.where(x + 0.7 * y > 18, 220.0, 30.0)
    a = 255 - 215 * (x / (W - 1))
    return np.clip(np.rint(np.stack([r, g, b, a], -1)), 0, 255).astype(np.float32)


def run(net, planes):
    with torch.no_grad():
        return net(torch.from_numpy(planes)[None]).numpy()[0]


def wrap_run(net, planes, pad, scale, wrap_x, wrap_y):
    """net on planes padded circularly by `pad` along the wrapping axes, cropped back."""
    t = torch.from_numpy(planes)[None]
    px, py = (pad if wrap_x else 0), (pad if wrap_y else 0)
    t = F.pad(t, (px, px, py, py), mode="circular")
    with torch.no_grad():
        out = net(t).numpy()[0]
    h, w = planes.shape[1:]
    return out[:, py * scale : (py + h) * scale, px * scale : (px + w) * scale]


def export(net, path, size, dynamic):
    dummy = torch.rand(1, 3, *size)
    axes = {"input": {0: "batch", 2: "height", 3: "width"}, "output": {0: "batch", 2: "oh", 3: "ow"}} if dynamic else None
    torch.onnx.export(net, dummy, str(path), input_names=["input"], output_names=["output"], dynamic_axes=axes,
                      opset_version=17, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))


def bench_graph(dest):
    torch.manual_seed(0)
    net = Esrgan(nf=64, gc=32, nb=23).eval()
    Path(dest).mkdir(parents=True, exist_ok=True)
    export(net, Path(dest) / "model.onnx", (32, 32), True)
    print(f"{dest}/model.onnx: {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters")


def export_half(net, path):
    import copy
    half = copy.deepcopy(net).half()
    axes = {"input": {2: "height", 3: "width"}, "output": {2: "oh", 3: "ow"}}
    torch.onnx.export(half, torch.rand(1, 3, 16, 16).half(), str(path), input_names=["input"], output_names=["output"],
                      dynamic_axes=axes, opset_version=17, dynamo=False)
    onnx.checker.check_model(onnx.load(str(path)))


def main():
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "--bench-graph":
        return bench_graph(sys.argv[2])
    torch.set_num_threads(1)
    if OUT.exists():
        shutil.rmtree(OUT)
    (OUT / "x4").mkdir(parents=True)
    (OUT / "golden").mkdir()

    img = picture()
    np.save(OUT / "image.npy", img)
    rgb = np.ascontiguousarray(img[..., :3].transpose(2, 0, 1) / 255.0, dtype=np.float32)
    alpha = np.ascontiguousarray(np.repeat(img[None, ..., 3] / 255.0, 3, 0), dtype=np.float32)

    torch.manual_seed(4)
    x4 = Esrgan().eval()
    export(x4, OUT / "x4/model.onnx", (32, 32), True)
    torch.manual_seed(2)
    x2 = Espcn().eval()
    export(x2, OUT / "x2-fixed.onnx", (16, 16), False)
    (OUT / "x2-fixed.json").write_text(json.dumps({"scale": 2}) + "\n")
    (OUT / "x2-f16").mkdir()
    export_half(x2, OUT / "x2-f16/model.onnx")

    goldens = {
        "x4_whole": run(x4, rgb),
        "x4_wrap_xy": wrap_run(x4, rgb, X4_CONTEXT, 4, True, True),
        "x4_wrap_x": wrap_run(x4, rgb, X4_CONTEXT, 4, True, False),
        "x4_alpha": run(x4, alpha),
        "alpha_bilinear": F.interpolate(torch.from_numpy(alpha[:1])[None], scale_factor=4, mode="bilinear",
                                        align_corners=False).numpy()[0],
        "x2_whole": run(x2, rgb),
    }
    small = np.ascontiguousarray(rgb[:, :10, :12])
    with torch.no_grad():
        padded = x2(F.pad(torch.from_numpy(small)[None], (0, 4, 0, 6), mode="replicate")).numpy()[0]
    goldens["x2_small"] = padded[:, :20, :24]
    goldens["x2_small_wrap"] = wrap_run(x2, small, 3, 2, True, True)
    for name, arr in goldens.items():
        np.save(OUT / "golden" / f"{name}.npy", np.ascontiguousarray(arr, dtype=np.float32))
        print(f"{name}: {arr.shape} range {arr.min():.3f}..{arr.max():.3f}")


if __name__ == "__main__":
    main()
