#!/usr/bin/env python3
"""Kiln's cold start with and without the optimized-graph cache, alternately.

Runs `generate` (examples/generate.rs) as fresh processes: one warm-up without
the cache, one that writes the cache (--graph-cache DIR, DIR fresh), then
--pairs pairs of (without, with) in alternation. For each process: wall time
from spawn to the PNG's mtime, the model load time `generate` reports, and the
CPU time (user + sys, from wait4) — the CPU time is the least disturbed by
other work on a shared machine. Prints per-pair ratios with / without and
their medians; --json writes every number. No Python dependencies.

    CARGO_TARGET_DIR=/work/target-bench cargo build --release --example generate
    python3 tools/bench_graph_cache.py --model tests/fixtures/tiny-sd --size 64 --steps 20 --pairs 9
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run(cmd: list[str], png: Path) -> dict:
    if png.exists():
        png.unlink()
    t_wall = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    err = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    m = re.search(r"model load ([0-9.]+)s", err)
    return {"to_png_s": png.stat().st_mtime - t_wall, "model_load_s": float(m.group(1)) if m else None,
            "cpu_s": ru.ru_utime + ru.ru_stime, "maxrss_mib": ru.ru_maxrss / 1024.0,
            "loadavg": list(os.getloadavg())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=str(REPO / "tests/fixtures/tiny-sd"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--seamless", default=None, help="x, y or xy: measure the seamless graphs")
    ap.add_argument("--cache", default=None, help="cache folder (default: a fresh temporary one, removed after)")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(REPO / "target")))
    ap.add_argument("--json", default=None)
    a = ap.parse_args()

    gen = Path(a.target_dir).resolve() / "release/examples/generate"
    if not gen.is_file():
        raise SystemExit(f"{gen} missing: build with CARGO_TARGET_DIR={a.target_dir} cargo build --release --example generate")
    tmp = Path(tempfile.mkdtemp(prefix="kiln_graph_cache_bench_"))
    cache = Path(a.cache).resolve() if a.cache else tmp / "cache"
    if cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"{cache} is not empty: the cache-writing run needs a fresh folder")
    png = tmp / "out.png"
    base = [str(gen), "--model", str(Path(a.model).resolve()), "--prompt", "mossy stone brick wall",
            "--negative-prompt", "blurry", "--width", str(a.size), "--height", str(a.size), "--steps", str(a.steps),
            "--guidance", str(a.guidance), "--scheduler", "euler", "--seed", "1", "--threads", str(a.threads),
            "--out", str(png)] + (["--seamless", a.seamless] if a.seamless else [])
    cached = base + ["--graph-cache", str(cache)]

    print(f"{a.model}: {a.size}x{a.size}, {a.steps} steps, {a.threads} threads, {a.pairs} pairs, load {os.getloadavg()}",
          flush=True)
    warmup = run(base, png)
    write = run(cached, png)
    print(f"warm-up without cache {warmup['to_png_s']:.2f} s; cache-writing run {write['to_png_s']:.2f} s "
          f"(load {write['model_load_s']} s, cache {sum(f.stat().st_size for f in cache.rglob('*') if f.is_file()) / 2**20:.1f} MiB)",
          flush=True)
    pairs = []
    for i in range(a.pairs):
        off, on = run(base, png), run(cached, png)
        r = {k: on[k] / off[k] for k in ("to_png_s", "model_load_s", "cpu_s") if off.get(k) and on.get(k) is not None}
        pairs.append({"without": off, "with": on, "ratio": r})
        print(f"pair {i + 1}: to PNG {off['to_png_s']:.2f} -> {on['to_png_s']:.2f} s ({r['to_png_s']:.3f}), "
              f"model load {off['model_load_s']:.2f} -> {on['model_load_s']:.2f} s ({r.get('model_load_s', float('nan')):.3f}), "
              f"CPU {off['cpu_s']:.2f} -> {on['cpu_s']:.2f} s ({r['cpu_s']:.3f})  load {on['loadavg'][0]:.2f}", flush=True)
    med = {k: statistics.median(p["ratio"][k] for p in pairs) for k in pairs[0]["ratio"]}
    medians = {f"{side}_{k}": statistics.median(p[side][k] for p in pairs) for side in ("without", "with")
               for k in ("to_png_s", "model_load_s", "cpu_s", "maxrss_mib")}
    print("median with / without: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    print("medians: " + ", ".join(f"{k} {v:.3f}" for k, v in medians.items()))
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "warmup": warmup, "cache_write": write, "pairs": pairs,
                                            "median_ratio": med, "medians": medians}, indent=2) + "\n")
    if not a.cache:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
