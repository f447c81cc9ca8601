#!/usr/bin/env python3
"""Two ways of loading one model against each other: load time, warm image time, peak memory.

The shared engine of tools/bench_quantize.py (float against int8 weights) and
tools/bench_attention.py (exported against fused attention). Runs Kiln's CLI
(`generate --batch`) in alternating pairs, mode A first then mode B, each
process loading the model and drawing IMAGES images of one prompt; the first
image of a process is its warm-up, the median of the others its warm time.
Peak memory is each process's maximum resident set (wait4's ru_maxrss).
Reports medians over the pairs and the B / A ratios (below 1: B smaller or
faster).
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATE = REPO / "target" / "release" / "examples" / "generate"


def run(model: str, flags: list[str], images: int, tmp: Path) -> dict:
    tsv = tmp / "batch.tsv"
    with open(tsv, "w") as f:
        for i in range(images):
            f.write(f"{tmp / f'{i}.png'}\t{i + 1}\tmossy stone brick wall\n")
    cmd = [str(GENERATE), "--model", model, "--batch", str(tsv)] + flags
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"generate failed: {' '.join(cmd)}\n{err[-2000:]}")
    text = out + err
    secs = [float(s) for s in re.findall(r"\) in ([0-9.]+)s", text)]
    load = re.search(r"model load ([0-9.]+)s", text)
    if len(secs) != images or load is None:
        raise SystemExit(f"unexpected output of {' '.join(cmd)}:\n{text[-2000:]}")
    return {"load_s": float(load.group(1)), "warm_s": statistics.median(secs[1:]), "peak_mib": usage.ru_maxrss / 1024}


def compare(model: str, common: list[str], modes: list[tuple[str, list[str]]], images: int, pairs: int, title: str, command: str) -> str:
    """Runs the pairs and returns the Markdown report."""
    (a_name, _), (b_name, _) = modes
    rows: dict[str, list[dict]] = {name: [] for name, _ in modes}
    with tempfile.TemporaryDirectory() as t:
        for pair in range(pairs):
            for name, extra in modes:
                r = run(model, common + extra, images, Path(t))
                rows[name].append(r)
                print(f"pair {pair + 1} {name}: load {r['load_s']:.2f} s, warm image {r['warm_s']:.3f} s, peak {r['peak_mib']:.0f} MiB", flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("load_s", "warm_s", "peak_mib")} for m, rs in rows.items()}
    ratio = {k: med[b_name][k] / med[a_name][k] for k in med[a_name]}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [
        f"# {title}",
        "",
        f"`{command}`; {os.cpu_count()} cores ({cpu}); Kiln CLI, "
        "ONNX Runtime CPU provider. Medians of the pairs; warm = median of each process's images after its first.",
        "",
        f"| | {a_name} | {b_name} | {b_name} / {a_name} |",
        "| --- | ---: | ---: | ---: |",
        f"| model load (s) | {med[a_name]['load_s']:.2f} | {med[b_name]['load_s']:.2f} | {ratio['load_s']:.3f} |",
        f"| warm image (s) | {med[a_name]['warm_s']:.3f} | {med[b_name]['warm_s']:.3f} | {ratio['warm_s']:.3f} |",
        f"| peak memory (MiB) | {med[a_name]['peak_mib']:.0f} | {med[b_name]['peak_mib']:.0f} | {ratio['peak_mib']:.3f} |",
        "",
        "Per process:",
        "",
    ]
    for mode, rs in rows.items():
        for i, r in enumerate(rs):
            lines.append(f"- {mode} {i + 1}: load {r['load_s']:.2f} s, warm image {r['warm_s']:.3f} s, peak {r['peak_mib']:.0f} MiB")
    return "\n".join(lines) + "\n"


def cli(doc: str, script: str, what: str, modes: list[tuple[str, list[str]]], size: int, steps: int, guidance: float, images: int) -> None:
    """The command line both benchmarks share; `what` heads the report."""
    import argparse

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=size)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--guidance", type=float, default=guidance)
    ap.add_argument("--images", type=int, default=images)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    common = ["--width", str(a.size), "--height", str(a.size), "--steps", str(a.steps), "--guidance", str(a.guidance), "--threads", str(a.threads)]
    command = (
        f"python tools/{script} --model {a.model} --size {a.size} --steps {a.steps} --guidance {a.guidance} "
        f"--images {a.images} --pairs {a.pairs} --threads {a.threads}"
    )
    title = f"{what}: {Path(a.model).name}, {a.size}², {a.steps} steps, guidance {a.guidance}"
    text = compare(a.model, common, modes, a.images, a.pairs, title, command)
    print(text)
    if a.out:
        a.out.write_text(text)
