#!/usr/bin/env python3
"""A ControlNet export without a `conditioning_scale` input, from one with it.

Exports made outside optimum's layout often leave the scale out of the graph
(diffusers applies it to the residuals in Python). Kiln then scales the
residuals itself. This makes such a graph from a committed fixture so that a
test can check Kiln's scaling against the same weights with the scale inside
the graph: the input becomes an initializer holding 1, so every node that
multiplied by the scale now multiplies by 1.

    python3 tools/make_unscaled_controlnet.py SRC_DIR DEST_DIR

SRC_DIR holds model.onnx (with a `conditioning_scale` input) and config.json;
DEST_DIR receives both, the graph rewritten. Needs the `onnx` package only.
Made with it: tests/fixtures/controlnet-unscaled/xl-unscaled, from
tests/fixtures/sdxl-controlnet/controlnet/xl.
"""
import argparse
import os
import shutil

import numpy as np
import onnx
from onnx import numpy_helper


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dest")
    args = ap.parse_args()

    model = onnx.load(os.path.join(args.src, "model.onnx"))
    graph = model.graph
    scale = next((i for i in graph.input if i.name == "conditioning_scale"), None)
    if scale is None:
        raise SystemExit(f"{args.src}/model.onnx has no conditioning_scale input")
    rank = len(scale.type.tensor_type.shape.dim)
    graph.input.remove(scale)
    graph.initializer.append(numpy_helper.from_array(np.ones([1] * rank, dtype=np.float32), "conditioning_scale"))
    onnx.checker.check_model(model)

    os.makedirs(args.dest, exist_ok=True)
    onnx.save(model, os.path.join(args.dest, "model.onnx"))
    shutil.copy(os.path.join(args.src, "config.json"), os.path.join(args.dest, "config.json"))
    print(f"wrote {args.dest}: conditioning_scale (rank {rank}) is now an initializer of 1")


if __name__ == "__main__":
    main()
