#!/usr/bin/env python3
"""Where a U-Net call's time goes inside ONNX Runtime, and batch-2 vs two batch-1 calls.

Kiln's warm image time is the sum of its ONNX Runtime run calls to within
0.2 % (examples/bench.rs), so what is left to win lies inside those calls.
This script opens the model's U-Net in ONNX Runtime's Python API with the
session settings Kiln and tools/bench_compare.py use (intra-op --threads,
inter-op 1, spinning off, default graph optimisation) and:

1. profiles --runs calls at batch 2 (classifier-free guidance) and sums the
   node time per operator type (ONNX Runtime's own profiler), so the table
   says which operators the time is spent in;
2. times --pairs alternating (one batch-2 call, two batch-1 calls) on the
   same inputs and prints the per-pair ratio and its median — the
   "CFG batch-2 call vs two calls" question of tuning.

Results: bench/<name>.json and bench/<name>.md.

    /work/venv/bin/python tools/profile_unet.py --model /work/models/sd15-random --size 256 --runs 3 --pairs 5
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

REPO = Path(__file__).resolve().parent.parent

NUMPY_OF = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
            "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def session(path: Path, threads: int, profile_dir: Path | None) -> ort.InferenceSession:
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.add_session_config_entry("session.intra_op.allow_spinning", "0")
    o.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if profile_dir is not None:
        o.enable_profiling = True
        o.profile_file_prefix = str(profile_dir / "unet")
    return ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])


def feeds(sess: ort.InferenceSession, batch: int, latent: int, rng: np.random.Generator) -> dict:
    out = {}
    for i in sess.get_inputs():
        dt = NUMPY_OF[i.type]
        if i.name == "sample":
            channels = i.shape[1] if isinstance(i.shape[1], int) else 4
            out[i.name] = rng.standard_normal((batch, channels, latent, latent)).astype(dt)
        elif i.name == "timestep":
            shape = () if len(i.shape) == 0 else (batch,)
            out[i.name] = np.full(shape, 500, dtype=dt)
        elif i.name == "encoder_hidden_states":
            tokens = i.shape[1] if isinstance(i.shape[1], int) else 77
            width = i.shape[2] if isinstance(i.shape[2], int) else 768
            out[i.name] = rng.standard_normal((batch, tokens, width)).astype(dt)
        else:
            raise SystemExit(f"U-Net input {i.name} ({i.type}, {i.shape}) is not one this script knows")
    return out


def alternate(first, second, pairs: int) -> list[tuple[float, float]]:
    """Seconds of first() and second(), called alternately `pairs` times."""
    out = []
    for _ in range(pairs):
        t = time.perf_counter()
        first()
        a = time.perf_counter() - t
        t = time.perf_counter()
        second()
        out.append((a, time.perf_counter() - t))
    return out


def split(inputs: dict) -> tuple[dict, dict]:
    """The batch-2 feeds as two batch-1 feeds (a rank-0 timestep is shared)."""
    a, b = {}, {}
    for k, v in inputs.items():
        if v.ndim == 0:
            a[k] = b[k] = v
        else:
            a[k], b[k] = v[:1], v[1:]
    return a, b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a diffusers/optimum ONNX model folder")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=3, help="profiled batch-2 calls (after one warm-up)")
    ap.add_argument("--pairs", type=int, default=5, help="alternating batch-2 / 2 x batch-1 timings")
    ap.add_argument("--name", default=None, help="results go to bench/<name>.json and .md")
    a = ap.parse_args()

    unet = Path(a.model) / "unet" / "model.onnx"
    latent = a.size // 8
    name = a.name or f"unet-profile-{Path(a.model).name}-{a.size}"
    rng = np.random.default_rng(0)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    load_avg_start = os.getloadavg()

    # 1. Operator profile.
    with tempfile.TemporaryDirectory(prefix="kiln_profile_") as tmp:
        t = time.perf_counter()
        sess = session(unet, a.threads, Path(tmp))
        load_s = time.perf_counter() - t
        x2 = feeds(sess, 2, latent, rng)
        sess.run(None, x2)  # warm-up (first-run allocations)
        call_s = []
        for _ in range(a.runs):
            t = time.perf_counter()
            sess.run(None, x2)
            call_s.append(time.perf_counter() - t)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    by_op: dict[str, float] = collections.defaultdict(float)
    count: dict[str, int] = collections.Counter()
    runs_seen = 0
    for ev in trace:
        if ev.get("cat") == "Session" and ev.get("name") == "model_run":
            runs_seen += 1
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        op = ev.get("args", {}).get("op_name", "?")
        by_op[op] += ev["dur"] / 1e6
        count[op] += 1
    # The trace holds the warm-up too: average over every run it recorded.
    runs_in_trace = max(runs_seen, 1)
    node_total = sum(by_op.values()) / runs_in_trace
    per_call = statistics.median(call_s)
    ops = sorted(((op, s / runs_in_trace, count[op] // runs_in_trace) for op, s in by_op.items()), key=lambda r: -r[1])
    del sess

    # 2. CFG: one batch-2 call against two batch-1 calls, alternating.
    sess = session(unet, a.threads, None)
    x1a, x1b = split(x2)
    sess.run(None, x2)
    sess.run(None, x1a)
    timed = alternate(lambda: sess.run(None, x2), lambda: (sess.run(None, x1a), sess.run(None, x1b)), a.pairs)
    pairs = [{"batch2_s": b2, "two_batch1_s": b1, "ratio": b1 / b2} for b2, b1 in timed]

    result = {
        "name": name, "started": started, "model": str(Path(a.model).resolve()), "size": a.size, "latent": latent,
        "threads": a.threads, "onnxruntime": ort.__version__, "cpu": cpu_name(), "logical_cpus": os.cpu_count(),
        "kernel": platform.release(), "load_avg": {"start": load_avg_start, "end": os.getloadavg()},
        "session_load_s": load_s, "batch2_call_s": call_s, "batch2_call_s_median": per_call,
        "node_time_s_per_call": node_total,
        "ops": [{"op": op, "s_per_call": s, "share": s / node_total, "nodes": n} for op, s, n in ops],
        "cfg_pairs": pairs, "cfg_ratio_median": statistics.median(p["ratio"] for p in pairs),
    }
    out = REPO / "bench"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result)
    (out / f"{name}.md").write_text(md)
    print(md)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def render(r: dict) -> str:
    L = [f"# {r['name']}", "",
         f"U-Net of `{r['model']}` at {r['size']}x{r['size']} (latent {r['latent']}x{r['latent']}), batch 2 "
         f"(classifier-free guidance), ONNX Runtime {r['onnxruntime']} CPU, {r['threads']} intra-op threads, inter-op 1, "
         f"spinning off, default graph optimisation; {r['cpu']}, {r['logical_cpus']} logical CPUs; started "
         f"{r['started']}, load average {[round(x, 2) for x in r['load_avg']['start']]} → "
         f"{[round(x, 2) for x in r['load_avg']['end']]}. Made by `tools/profile_unet.py`.", "",
         f"One batch-2 call: median {r['batch2_call_s_median']:.3f} s over {len(r['batch2_call_s'])} profiled calls; "
         f"node time {r['node_time_s_per_call']:.3f} s per call "
         f"({100 * r['node_time_s_per_call'] / r['batch2_call_s_median']:.1f} % of the call; the rest is ONNX "
         f"Runtime's executor between nodes and the profiler).", "",
         "| operator | s per call | share of node time | nodes |", "| --- | --- | --- | --- |"]
    shown = 0.0
    for o in r["ops"][:12]:
        L.append(f"| {o['op']} | {o['s_per_call']:.3f} | {100 * o['share']:.1f} % | {o['nodes']} |")
        shown += o["share"]
    if len(r["ops"]) > 12:
        L.append(f"| {len(r['ops']) - 12} other operator types | | {100 * (1 - shown):.1f} % | |")
    L += ["", "Classifier-free guidance as one batch-2 call or two batch-1 calls (alternating, same inputs):", "",
          "| pair | batch 2 s | 2 × batch 1 s | two calls / one |", "| --- | --- | --- | --- |"]
    for i, p in enumerate(r["cfg_pairs"], 1):
        L.append(f"| {i} | {p['batch2_s']:.3f} | {p['two_batch1_s']:.3f} | {p['ratio']:.3f} |")
    L += ["", f"Median two calls / one call: **{r['cfg_ratio_median']:.3f}**.", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
