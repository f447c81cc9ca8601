#!/usr/bin/env python3
"""int8 weights against float on one model: load time, warm image time, peak memory.

Runs Kiln's CLI (`generate --batch`) in alternating pairs, float first then
`--quantize int8`, each process loading the model and drawing IMAGES images
of one prompt list; the first image of a process is its warm-up, the median
of the others its warm time. Peak memory is each process's maximum resident
set (wait4's ru_maxrss). Reports medians over the pairs and the int8 / float
ratios (below 1: int8 smaller or faster).

    python tools/bench_quantize.py --model /work/models/sd15-random --size 256 --steps 4 --guidance 1 \\
        --out bench/quantize-sd15-random-256.md

The SD 1.5-architecture export comes from tools/make_sd15_random.py (random
weights: timings and memory are the real model's, pictures are noise).
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=1.0)
    ap.add_argument("--images", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    common = ["--width", str(a.size), "--height", str(a.size), "--steps", str(a.steps), "--guidance", str(a.guidance), "--threads", str(a.threads)]
    rows: dict[str, list[dict]] = {"float": [], "int8": []}
    with tempfile.TemporaryDirectory() as t:
        for pair in range(a.pairs):
            for mode, extra in (("float", []), ("int8", ["--quantize", "int8"])):
                r = run(a.model, common + extra, a.images, Path(t))
                rows[mode].append(r)
                print(f"pair {pair + 1} {mode}: load {r['load_s']:.2f} s, warm image {r['warm_s']:.3f} s, peak {r['peak_mib']:.0f} MiB", flush=True)
    med = {m: {k: statistics.median(r[k] for r in rs) for k in ("load_s", "warm_s", "peak_mib")} for m, rs in rows.items()}
    ratio = {k: med["int8"][k] / med["float"][k] for k in med["float"]}
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
    lines = [
        f"# int8 weights against float: {Path(a.model).name}, {a.size}², {a.steps} steps, guidance {a.guidance}",
        "",
        f"`python tools/bench_quantize.py --model {a.model} --size {a.size} --steps {a.steps} --guidance {a.guidance} "
        f"--images {a.images} --pairs {a.pairs} --threads {a.threads}`; {os.cpu_count()} cores ({cpu}); Kiln CLI, "
        "ONNX Runtime CPU provider. Medians of the pairs; warm = median of each process's images after its first.",
        "",
        "| | float | int8 | int8 / float |",
        "| --- | ---: | ---: | ---: |",
        f"| model load (s) | {med['float']['load_s']:.2f} | {med['int8']['load_s']:.2f} | {ratio['load_s']:.3f} |",
        f"| warm image (s) | {med['float']['warm_s']:.3f} | {med['int8']['warm_s']:.3f} | {ratio['warm_s']:.3f} |",
        f"| peak memory (MiB) | {med['float']['peak_mib']:.0f} | {med['int8']['peak_mib']:.0f} | {ratio['peak_mib']:.3f} |",
        "",
        "Per process:",
        "",
    ]
    for mode, rs in rows.items():
        for i, r in enumerate(rs):
            lines.append(f"- {mode} {i + 1}: load {r['load_s']:.2f} s, warm image {r['warm_s']:.3f} s, peak {r['peak_mib']:.0f} MiB")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        a.out.write_text(text)


if __name__ == "__main__":
    main()
