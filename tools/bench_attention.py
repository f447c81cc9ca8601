#!/usr/bin/env python3
"""Fused attention against the exported graph on one model: load time, warm image time, peak memory.

Runs Kiln's CLI (`generate --batch`) in alternating pairs, `--attention
exported` first then `--attention fused` (tools/bench_ab.py: medians of the
pairs, the first image of each process its warm-up, peak = the process's
maximum resident set; ratios fused / exported, below 1: fused smaller or
faster).

    python tools/bench_attention.py --model /work/models/sd15-random --size 512 --steps 2 --guidance 7.5 \\
        --images 2 --pairs 2 --out bench/attention-sd15-random-512.md

The SD 1.5-architecture export comes from tools/make_sd15_random.py (random
weights: timings and memory are the real model's, pictures are noise).
With guidance above 1 each step runs the U-Net on a batch of 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ab import cli  # noqa: E402

if __name__ == "__main__":
    modes = [("exported", ["--attention", "exported"]), ("fused", ["--attention", "fused"])]
    cli(__doc__, "bench_attention.py", "Fused attention against exported", modes, size=512, steps=2, guidance=7.5, images=2)
