"""Canny goldens from OpenCV for Kiln's own Canny (src/image/control.rs).

For a few pictures (the bundled default model's brick texture, the
material-maps strip, the tiny fixture's noisy golden, a drawn control
image), writes the input as a small PNG and cv2.Canny's edges on
cv2.cvtColor(RGB2GRAY) of it, with the thresholds, to
tests/fixtures/golden/canny/. Needs opencv-python-headless in the tools venv.

    /work/venv/bin/python tools/make_canny_golden.py
"""
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests/fixtures/golden/canny"

CASES = [
    # name, source, crop box (or None), thresholds
    ("brick", "docs/default-model/brick-tiled-2x2.png", (0, 0, 192, 192), (100, 200)),
    ("brick_low", "docs/default-model/brick-tiled-2x2.png", (96, 96, 288, 224), (30, 90)),
    ("material", "docs/default-model/material-maps.png", (0, 0, 392, 192), (50, 150)),
    ("noise", "tests/fixtures/golden/ddim_cfg.png", None, (100, 200)),
    ("drawn", "tests/fixtures/golden/controlnet/control_b.png", None, (100, 200)),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    index = []
    for name, source, box, (low, high) in CASES:
        img = Image.open(REPO / source).convert("RGB")
        if box:
            img = img.crop(box)
        img.save(OUT / f"{name}.png")
        gray = cv2.cvtColor(np.asarray(img), cv2.COLOR_RGB2GRAY)
        edges = cv2.Canny(gray, low, high)
        Image.fromarray(edges).save(OUT / f"{name}.edges.png")
        index.append({"name": name, "low": low, "high": high, "edge_pixels": int((edges > 0).sum())})
        print(name, img.size, "edges", int((edges > 0).sum()))
    (OUT / "cases.json").write_text(json.dumps({"opencv": cv2.__version__, "cases": index}, indent=1) + "\n")


if __name__ == "__main__":
    main()
