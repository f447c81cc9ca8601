#!/usr/bin/env python3
"""Kiln's upscaler against raw ONNX Runtime on the same graph, in one script.

Raw side: onnxruntime-python runs the graph once on the whole image (the baseline: no tiles, no
context, nothing Kiln adds), with Kiln's session settings (intra-op threads = --threads, inter-op 1,
sequential, spinning off). Kiln side: `examples/upscale.rs` as a fresh process per setting, timing
--repeat runs in-process after a warm-up (it reports their mean). Settings: the whole image (tile 0:
the graph runs once, so the ratio shows Kiln's own cost: conversion, windows, quantizing) and each
--tiles value with --context pixels around each tile (what bounded memory costs in recomputed
context). Prints seconds, the ratio to the raw run and each Kiln process's peak resident memory
(what tiling is for); --json writes every number.

    /work/venv/bin/python tools/make_upscaler_fixture.py --bench-graph /tmp/esrgan-full
    cargo build --release --example upscale
    /work/venv/bin/python tools/bench_upscaler.py --graph /tmp/esrgan-full --size 128 --tiles 64,128

Needs numpy, Pillow and onnxruntime (the version Kiln loads, for a fair comparison).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def picture(size: int) -> np.ndarray:
    """A smooth, seeded RGB picture (bytes, HWC)."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = [np.sin(2 * np.pi * (f1 * x + f2 * y) + p) for f1, f2, p in rng.uniform(0.5, 4, (3, 3))]
    return np.clip(np.rint(127.5 + 100 * np.stack(rgb, -1) + rng.normal(0, 8, (size, size, 3))), 0, 255).astype(np.uint8)


def raw(graph: Path, rgb: np.ndarray, threads: int, repeat: int) -> tuple[list[float], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    session = ort.InferenceSession(str(graph / "model.onnx" if graph.is_dir() else graph), so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    x = (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[None].copy()
    times, out = [], None
    for _ in range(repeat + 1):  # the first run warms up
        t = time.perf_counter()
        out = session.run(None, {name: x})[0]
        times.append(time.perf_counter() - t)
    return times[1:], out[0]


def kiln(exe: Path, graph: Path, png: Path, out: Path, tile: int, context: int, threads: int, repeat: int) -> tuple[float, float]:
    """Mean warm seconds, and the process's peak resident memory in MiB as it reports it (VmHWM;
    wait4's ru_maxrss would count this process's size at the fork)."""
    args = [str(exe), "--graph", str(graph), "--in", str(png), "--out", str(out), "--tile", str(tile),
            "--context", str(context), "--threads", str(threads), "--repeat", str(repeat + 1)]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    stdout = r.stdout
    m = re.search(r"in ([0-9.]+)s \(mean of (\d+) run", stdout)
    if not m:
        raise SystemExit(f"cannot read the time from: {stdout}")
    peak = re.search(r"peak RSS (\d+) MiB", stdout)
    return float(m.group(1)), float(peak.group(1)) if peak else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--graph", type=Path, required=True)
    ap.add_argument("--size", type=int, default=128, help="input side in pixels (default 128)")
    ap.add_argument("--tiles", default="64,128", help="tile sides to time besides the whole image")
    ap.add_argument("--context", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per setting after one warm-up")
    ap.add_argument("--exe", type=Path, default=REPO / "target/release/examples/upscale")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    rgb = picture(a.size)
    work = Path(tempfile.mkdtemp(prefix="kiln-bench-upscaler-"))
    png = work / "in.png"
    Image.fromarray(rgb).save(png)

    raw_times, raw_out = raw(a.graph, rgb, a.threads, a.repeat)
    base = statistics.mean(raw_times)
    rows = [{"setting": "raw ONNX Runtime, whole image", "seconds": base, "ratio": 1.0}]
    settings = [0] + [int(t) for t in a.tiles.split(",") if t]
    for tile in settings:
        out = work / f"kiln-{tile}.png"
        s, rss = kiln(a.exe, a.graph, png, out, tile, a.context, a.threads, a.repeat)
        label = "Kiln, whole image" if tile == 0 else f"Kiln, tiles {tile} + context {a.context}"
        row = {"setting": label, "seconds": s, "ratio": s / base, "peak_rss_mib": rss}
        # The whole-image run must be the raw output, rounded (Kiln's bytes vs raw floats).
        got = np.asarray(Image.open(out).convert("RGB"), dtype=np.float32) / 255.0
        want = np.clip(raw_out.transpose(1, 2, 0), 0, 1)
        row["max_abs_vs_raw"] = float(np.abs(got - want).max())
        rows.append(row)

    scale = raw_out.shape[1] // a.size
    print(f"{a.graph}: {a.size}x{a.size} -> {a.size * scale}x{a.size * scale}, {a.threads} threads, "
          f"mean of {a.repeat} warm runs per setting")
    print(f"{'setting':40} {'seconds':>9} {'ratio':>7} {'peak RSS MiB':>13} {'max |Kiln - raw|':>17}")
    for r in rows:
        diff = f"{r['max_abs_vs_raw']:.2e}" if "max_abs_vs_raw" in r else ""
        rss = f"{r['peak_rss_mib']:.0f}" if "peak_rss_mib" in r else ""
        print(f"{r['setting']:40} {r['seconds']:9.3f} {r['ratio']:7.3f} {rss:>13} {diff:>17}")
    if a.json:
        a.json.write_text(json.dumps({"graph": str(a.graph), "size": a.size, "scale": scale, "threads": a.threads,
                                      "repeat": a.repeat, "context": a.context, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
