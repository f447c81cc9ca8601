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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ab import cli  # noqa: E402

if __name__ == "__main__":
    cli(__doc__, "bench_quantize.py", "int8 weights against float", [("float", []), ("int8", ["--quantize", "int8"])], size=256, steps=4, guidance=1.0, images=3)
