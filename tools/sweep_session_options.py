#!/usr/bin/env python3
"""ONNX Runtime session options against Kiln's settings, on one U-Net call.

Kiln creates every session with intra-op --threads, inter-op 1, spinning off,
graph optimisation "all", the CPU memory arena and memory patterns on (ONNX
Runtime's defaults). This script holds a session with those settings and, one
variant at a time, a second session that changes one option, then times
batch-2 U-Net calls alternately (Kiln's settings, variant, ...) and prints the
per-pair ratio variant / Kiln's settings and its median. A ratio below 1 would
be a setting worth changing in Kiln (src/model/graph.rs, `session_builder`).

Results: bench/<name>.json and bench/<name>.md.

    /work/venv/bin/python tools/sweep_session_options.py --model /work/models/sd15-random --size 256 --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from profile_unet import alternate, cpu_name, feeds

REPO = Path(__file__).resolve().parent.parent
LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}

# name, what it changes, the function that changes it.
VARIANTS = [
    ("optimization extended", "graph optimisation level EXTENDED instead of ALL (no NCHWc layout)",
     lambda o: setattr(o, "graph_optimization_level", LEVELS["extended"])),
    ("optimization basic", "graph optimisation level BASIC instead of ALL",
     lambda o: setattr(o, "graph_optimization_level", LEVELS["basic"])),
    ("no memory arena", "enable_cpu_mem_arena = False",
     lambda o: setattr(o, "enable_cpu_mem_arena", False)),
    ("no memory pattern", "enable_mem_pattern = False",
     lambda o: setattr(o, "enable_mem_pattern", False)),
]


def ratios(pairs: list[dict]) -> str:
    return ", ".join(f"{p['ratio']:.3f}" for p in pairs)


def options(threads: int, change=None) -> ort.SessionOptions:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.add_session_config_entry("session.inter_op.allow_spinning", "0")
    o.graph_optimization_level = LEVELS["all"]
    if change is not None:
        change(o)
    return o


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--name", default=None)
    a = ap.parse_args()
    unet = str(Path(a.model) / "unet" / "model.onnx")
    name = a.name or f"session-options-{Path(a.model).name}-{a.size}"
    started, load_start = time.strftime("%Y-%m-%d %H:%M:%S"), os.getloadavg()
    base = ort.InferenceSession(unet, options(a.threads), providers=["CPUExecutionProvider"])
    x = feeds(base, 2, a.size // 8, np.random.default_rng(0))
    base.run(None, x)
    base.run(None, x)
    results = []
    for vname, what, change in VARIANTS:
        t = time.perf_counter()
        variant = ort.InferenceSession(unet, options(a.threads, change), providers=["CPUExecutionProvider"])
        load_s = time.perf_counter() - t
        variant.run(None, x)
        variant.run(None, x)
        timed = alternate(lambda: base.run(None, x), lambda: variant.run(None, x), a.pairs)
        pairs = [{"kiln_settings_s": b, "variant_s": v, "ratio": v / b} for b, v in timed]
        med = statistics.median(p["ratio"] for p in pairs)
        print(f"{vname}: variant / Kiln's settings {ratios(pairs)} "
              f"(median {med:.3f}); session creation {load_s:.1f} s", flush=True)
        results.append({"variant": vname, "what": what, "session_load_s": load_s, "pairs": pairs, "ratio_median": med})
        del variant
    r = {"name": name, "started": started, "model": str(Path(a.model).resolve()), "size": a.size,
         "threads": a.threads, "onnxruntime": ort.__version__, "cpu": cpu_name(), "logical_cpus": os.cpu_count(),
         "load_avg": {"start": load_start, "end": os.getloadavg()}, "variants": results}
    out = REPO / "bench"
    (out / f"{name}.json").write_text(json.dumps(r, indent=2) + "\n")
    L = [f"# {name}", "",
         f"U-Net of `{r['model']}`, batch 2, {a.size}², ONNX Runtime {r['onnxruntime']} CPU, {a.threads} intra-op "
         f"threads; {r['cpu']}, {r['logical_cpus']} logical CPUs; started {started}, load average "
         f"{[round(v, 2) for v in load_start]} → {[round(v, 2) for v in r['load_avg']['end']]}. Made by "
         "`tools/sweep_session_options.py`: one session with Kiln's settings (optimisation ALL, arena and memory "
         "pattern on, spinning off) and one that changes a single option, timed alternately.", "",
         "| variant | what changes | variant / Kiln's settings per pair | median | variant's session creation s |",
         "| --- | --- | --- | --- | --- |"]
    for v in results:
        L.append(f"| {v['variant']} | {v['what']} | {ratios(v['pairs'])} | "
                 f"**{v['ratio_median']:.3f}** | {v['session_load_s']:.1f} |")
    (out / f"{name}.md").write_text("\n".join(L) + "\n")
    print("\n".join(L))


if __name__ == "__main__":
    main()
