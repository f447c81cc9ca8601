#!/usr/bin/env python3
"""Probe: does a second ONNX Runtime session of the same graph cost memory when
both take their weights as shared initializers (AddInitializer)?

What a ControlNet model's two U-Net sessions (unet/ and unet_controlnet/, the
same weights) would save by sharing. Opens GRAPH twice, either plainly or with
every initializer added from one set of OrtValues, at optimization level
"all" (Kiln's default: includes the x86 NCHWc layout transformer) or
"extended", and prints resident memory after each session, whether the two
sessions agree, and one run's time. Needs numpy, onnx and onnxruntime (the
fixture venv). Usage:
    python tools/probe_shared_weights.py GRAPH {plain,shared} {all,extended}
"""
import gc
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper


def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) // 1024
    return -1


def main():
    path, mode, level = sys.argv[1], sys.argv[2], sys.argv[3]
    levels = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}

    def options():
        o = ort.SessionOptions()
        o.intra_op_num_threads = 1
        o.graph_optimization_level = levels[level]
        return o

    start = rss_mb()
    shared = {}
    if mode == "shared":
        model = onnx.load(path)
        shared = {i.name: ort.OrtValue.ortvalue_from_numpy(numpy_helper.to_array(i)) for i in model.graph.initializer}
        del model
        gc.collect()
        print(f"weights held by the caller: {rss_mb() - start} MB")
    sessions = []
    for k in range(2):
        o = options()
        for name, value in shared.items():
            o.add_initializer(name, value)
        sessions.append(ort.InferenceSession(path, o, providers=["CPUExecutionProvider"]))
        print(f"after session {k + 1}: {rss_mb() - start} MB")
    inp = sessions[0].get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    shape[-2:] = [32, 32]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    a = sessions[0].run(None, {inp.name: x})[0]
    b = sessions[1].run(None, {inp.name: x})[0]
    t = time.perf_counter()
    sessions[0].run(None, {inp.name: x})
    print(f"after runs: {rss_mb() - start} MB; sessions differ by {float(np.abs(a - b).max())}; "
          f"one run {time.perf_counter() - t:.2f} s")


if __name__ == "__main__":
    main()
