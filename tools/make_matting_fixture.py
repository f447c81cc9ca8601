#!/usr/bin/env python3
"""Build the tiny matting-graph fixtures in tests/fixtures/matting/ and their goldens.

What it makes:

  matting/image.npy               f32 [40, 48, 4]: the test picture, RGBA bytes stored as floats
                                  (a red blob with a soft edge on a blue-grey gradient; the last 4
                                  columns have alpha 200, so the input alpha is multiplied in)
  matting/fixed/model.onnx        a seeded conv net, input `image` f32 [1, 3, 32, 32] (FIXED size,
                                  so Kiln resizes 48x40 -> 32x32 and the matte back), output
                                  `alpha` f32 [1, 1, 32, 32] in 0..1 (sigmoid inside the graph)
  matting/fixed/config.json       RMBG-1.4's pre/post-processing: mean 0.5, std 1.0, minmax
  matting/dynamic/model.onnx      a seeded conv net, input `pixel_values` f32 [1, 3, H, W] (dynamic),
                                  outputs `features` [1, 4, H/2, W/2] (a decoy, first) and
                                  `logits` [1, H/2, W/2] (rank 3, before the sigmoid)
  matting/dynamic/config.json     {"sigmoid": true, "multiple": 16, "output": "logits"}; default
                                  (ImageNet) mean/std, so 48x40 goes in as 48x48 and 24x24 comes out
  matting/<v>/golden/input.npy    the graph input: Kiln's documented pre-processing done in torch
                                  (RGB / 255, F.interpolate bilinear align_corners=False to the
                                  graph's size, (x - mean) / std)
  matting/<v>/golden/output.npy   onnxruntime-python's output on that input (the named output)
  matting/<v>/golden/matte.npy    f32 [40, 48]: Kiln's documented post-processing in torch
                                  (sigmoid if asked, F.interpolate bilinear back to 40x48,
                                  min-max if asked, clamp to 0..1)

Kiln's alpha must equal matte.npy (tests/matting.rs states the tolerance); the graphs check that
the resize path (fixed size), the rounding to a multiple (dynamic), output selection by name, rank-3
logits and min-max all follow the documented contract.

Deterministic: torch.manual_seed per net, one torch / onnxruntime thread; rerunning gives the same
numbers. Idempotent: tests/fixtures/matting/ is wiped and rebuilt.

Usage (from repo root):
    /work/venv/bin/python tools/make_matting_fixture.py
Needs torch, onnx and onnxruntime (tools/requirements-fixtures.txt).
"""
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/matting"
H, W = 40, 48
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

torch.set_num_threads(1)


def test_image() -> np.ndarray:
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    d = np.hypot((x - 22) / 14.0, (y - 19) / 11.0)
    cover = np.clip((1.15 - d) / 0.3, 0, 1)  # soft edge
    bg = np.stack([60 + 40 * x / W, 80 + 30 * y / H, 150 + 50 * x / W], -1)
    fg = np.stack([210 - 20 * y / H, 40 + 10 * x / W, 30 + 0 * x], -1)
    rgb = np.round(cover[..., None] * fg + (1 - cover[..., None]) * bg)
    alpha = np.full((H, W, 1), 255.0)
    alpha[:, -4:] = 200.0
    return np.concatenate([rgb, alpha], -1).astype(np.float32)


class FixedNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.c = torch.nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, image):
        x = F.relu(self.a(image))
        x = F.relu(self.b(x))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return torch.sigmoid(40.0 * self.c(x))


class DynamicNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.b = torch.nn.Conv2d(8, 4, 3, stride=2, padding=1)
        self.c = torch.nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, pixel_values):
        x = F.relu(self.a(pixel_values))
        features = F.relu(self.b(x))
        logits = 40.0 * self.c(features)[:, 0]
        return features, logits


def export(net, path: Path, input_name, output_names, example, dynamic):
    path.parent.mkdir(parents=True, exist_ok=True)
    axes = None
    if dynamic:
        axes = {input_name: {2: "height", 3: "width"}}
        for n in output_names:
            axes[n] = {1 if n == "logits" else 2: "out_h", 2 if n == "logits" else 3: "out_w"}
    torch.onnx.export(
        net, (example,), str(path), input_names=[input_name], output_names=output_names,
        dynamic_axes=axes, opset_version=17, dynamo=False,
    )
    onnx.checker.check_model(onnx.load(str(path)))


def preprocess(image, size, mean, std):
    x = torch.from_numpy(image[..., :3].copy()).permute(2, 0, 1)[None] / 255.0
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    m = torch.tensor(mean, dtype=torch.float32)[None, :, None, None]
    s = torch.tensor(std, dtype=torch.float32)[None, :, None, None]
    return ((x - m) / s).numpy()


def postprocess(out, sigmoid, minmax):
    t = torch.from_numpy(out)
    t = t.reshape(1, 1, t.shape[-2], t.shape[-1])
    if sigmoid:
        t = torch.sigmoid(t)
    t = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=False)
    if minmax:
        lo, hi = t.min(), t.max()
        t = (t - lo) / (hi - lo)
    return t.clamp(0, 1)[0, 0].numpy().astype(np.float32)


def build(name, net, input_name, output_names, size, dynamic, config, mean, std, sigmoid, minmax, pick):
    d = OUT / name
    export(net, d / "model.onnx", input_name, output_names, torch.zeros(1, 3, *size), dynamic)
    (d / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    x = preprocess(test_image(), size, mean, std)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(d / "model.onnx"), so, providers=["CPUExecutionProvider"])
    out = sess.run([pick], {input_name: x})[0].astype(np.float32)
    with torch.no_grad():
        ref = dict(zip(output_names, net(torch.from_numpy(x)) if len(output_names) > 1 else [net(torch.from_numpy(x))]))
    err = float(np.abs(ref[pick].numpy() - out).max())
    assert err < 1e-5, f"{name}: torch and onnxruntime differ by {err}"
    matte = postprocess(out, sigmoid, minmax)
    g = d / "golden"
    g.mkdir()
    np.save(g / "input.npy", x.astype(np.float32))
    np.save(g / "output.npy", out)
    np.save(g / "matte.npy", matte)
    print(f"{name}: input {x.shape}, output {out.shape} in [{out.min():.3f}, {out.max():.3f}], "
          f"matte in [{matte.min():.3f}, {matte.max():.3f}], mean {matte.mean():.3f}; torch vs ORT {err:.1e}")


def main():
    if OUT.exists():
        shutil.rmtree(OUT)
    OUT.mkdir(parents=True)
    np.save(OUT / "image.npy", test_image())

    torch.manual_seed(0)
    fixed = FixedNet().eval()
    build("fixed", fixed, "image", ["alpha"], (32, 32), False,
          {"mean": [0.5, 0.5, 0.5], "std": [1.0, 1.0, 1.0], "minmax": True},
          [0.5] * 3, [1.0] * 3, sigmoid=False, minmax=True, pick="alpha")

    torch.manual_seed(1)
    dynamic = DynamicNet().eval()
    # 48x40 rounded up to multiples of 16: 48x48.
    build("dynamic", dynamic, "pixel_values", ["features", "logits"], (48, 48), True,
          {"sigmoid": True, "multiple": 16, "output": "logits"},
          IMAGENET_MEAN, IMAGENET_STD, sigmoid=True, minmax=False, pick="logits")


if __name__ == "__main__":
    main()
