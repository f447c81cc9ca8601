#!/usr/bin/env python3
"""One command for the README's Performance table: every workload, then the table.

    /work/venv/bin/python tools/bench_suite.py                 # everything (≈ 2 h on 2 cores)
    /work/venv/bin/python tools/bench_suite.py --only sd15-256-4-g1-r2 --only tiny-64-20-r2
    /work/venv/bin/python tools/bench_suite.py --table-only    # re-render from bench/*.json

Steps: builds Kiln's `bench` and `generate` examples (release) into --target-dir;
makes the SD 1.5-architecture export with seeded random weights if --sd15 does
not exist yet (tools/make_sd15_random.py, ≈ 4.3 GB, ≈ 9 min, no downloads);
runs tools/bench_compare.py once per row of SUITE below (Kiln against optimum's
ORTStableDiffusionPipeline, alternating pairs, bench/<name>.json and .md);
then writes bench/summary.md — the table the README shows, with each issue-#7
target marked met or missed — and prints it.

Needs the fixture venv (tools/requirements-fixtures.txt: torch, diffusers,
optimum-onnx, onnxruntime 1.31.1); run it with that venv's Python. Run it on a
quiet machine: the ratios come from alternating pairs, but a busy machine
still widens them (docs/benchmarks.md, "Caveats").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TINY = "tests/fixtures/tiny-sd"
BAKE = ["--kiln-args=--residency per-stage", "--kiln-baseline-args=", "--graph-cache", "{cache}"]

# name, model ("tiny" or "sd15"), size, steps, guidance, pairs, Kiln set-up label, extra bench_compare flags.
SUITE = [
    ("tiny-64-20-r2", "tiny", 64, 20, 7.5, 5, "default", []),
    ("sd15-256-20-r2", "sd15", 256, 20, 7.5, 3, "default", []),
    ("sd15-256-20-bake", "sd15", 256, 20, 7.5, 3, "bake", ["--skip", "warm", *BAKE]),
    ("sd15-256-4-g1-r2", "sd15", 256, 4, 1.0, 3, "default", []),
    ("sd15-256-4-g1-bake", "sd15", 256, 4, 1.0, 3, "bake", ["--skip", "warm", *BAKE]),
    ("sd15-512-4-g1", "sd15", 512, 4, 1.0, 3, "default", []),
    ("sd15-512-4-g1-bake", "sd15", 512, 4, 1.0, 3, "bake", ["--skip", "warm", *BAKE]),
]

# Issue #7's targets (Kiln / reference).
TARGETS = {"warm": 0.95, "cold": 0.7, "rss": 0.7}


def run(cmd: list[str], env: dict | None = None) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, cwd=REPO, env=env, check=True)


def row_numbers(name: str) -> dict | None:
    path = REPO / "bench" / f"{name}.json"
    if not path.is_file():
        return None
    r = json.loads(path.read_text())
    s = r["summary"]
    return {
        "warm": s.get("warm", {}).get("ratio_median"),
        "cold": s.get("cold", {}).get("ratio_median"),
        "rss": s.get("cold", {}).get("rss_ratio_median"),
        "load": r["loadavg"],
        "kiln_git": r["machine"].get("kiln_git"),
        "started": r["started"],
        "config": r["config"],
    }


def cell(value: float | None, target: float) -> str:
    if value is None:
        return ""
    mark = "met" if value <= target else "missed"
    return f"{value:.3f} ({mark})"


def table() -> str:
    L = ["# Kiln / reference, every workload of the README table", "",
         "Made by `tools/bench_suite.py` from `bench/<run>.json` (per-pair numbers in `bench/<run>.md`). Ratios are "
         "Kiln / optimum's `ORTStableDiffusionPipeline` on the same export and ONNX Runtime (< 1: Kiln faster or "
         f"smaller); each is marked against issue #7's targets (warm ≤ {TARGETS['warm']}, cold ≤ {TARGETS['cold']}, "
         f"peak RSS ≤ {TARGETS['rss']}). \"bake\" = `--residency per-stage --graph-cache DIR` (cache written by "
         "the warm-up run).", "",
         "| run | workload | Kiln set-up | warm image | cold: start → PNG | peak RSS (cold) | Kiln commit | started |",
         "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, model, size, steps, guidance, _pairs, setup, _extra in SUITE:
        n = row_numbers(name)
        what = f"{'tiny fixture' if model == 'tiny' else 'SD 1.5 arch.'}, {size}², {steps} steps, guidance {guidance:g}"
        if n is None:
            L.append(f"| `{name}` | {what} | {setup} | not run | | | | |")
            continue
        L.append(f"| `{name}` | {what} | {setup} | {cell(n['warm'], TARGETS['warm'])} | "
                 f"{cell(n['cold'], TARGETS['cold'])} | {cell(n['rss'], TARGETS['rss'])} | {n['kiln_git']} | "
                 f"{n['started']} |")
    return "\n".join(L) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sd15", default="/work/models/sd15-random",
                    help="the SD 1.5-architecture export (made here if missing); never inside the repository")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(REPO / "target")))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--only", action="append", default=[], metavar="NAME", help="run only these rows (repeatable)")
    ap.add_argument("--table-only", action="store_true", help="skip the runs; re-render bench/summary.md")
    a = ap.parse_args()

    names = [row[0] for row in SUITE]
    unknown = [n for n in a.only if n not in names]
    if unknown:
        sys.exit(f"unknown --only {unknown}; rows: {', '.join(names)}")
    if not a.table_only:
        env = dict(os.environ, CARGO_TARGET_DIR=str(Path(a.target_dir).resolve()))
        run(["cargo", "build", "--release", "--example", "bench", "--example", "generate"], env)
        rows = [r for r in SUITE if not a.only or r[0] in a.only]
        sd15 = Path(a.sd15)
        if any(r[1] == "sd15" for r in rows) and not (sd15 / "unet" / "model.onnx").is_file():
            run([sys.executable, "tools/make_sd15_random.py", str(sd15)])
        for name, model, size, steps, guidance, pairs, _setup, extra in rows:
            cache = Path(tempfile.mkdtemp(prefix="kiln_suite_cache_"))
            try:
                flags = [f.replace("{cache}", str(cache)) for f in extra]
                run([sys.executable, "tools/bench_compare.py", "--name", name,
                     "--model", str(REPO / TINY) if model == "tiny" else str(sd15),
                     "--size", str(size), "--steps", str(steps), "--guidance", str(guidance),
                     "--pairs", str(pairs), "--threads", str(a.threads), *flags,
                     "--note", "made by tools/bench_suite.py"], env)
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    text = table()
    (REPO / "bench" / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
