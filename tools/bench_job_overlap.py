#!/usr/bin/env python3
"""A generation and an upscale a game wants at the same time: queued as two Kiln jobs (with one
job worker they run one after the other; --workers 2 runs them at once), against the generation as a job and the upscale as a
blocking call on a thread of the game's own (what an engine had to do before upscales were jobs),
so both run at once, each with its own ONNX Runtime thread pool on the same cores.

Measures, per arrangement: when the generation's image is ready, when the upscale's is, and when
both are (wall seconds from submission), each the median of --pairs runs, the arrangements
alternating so drift hits both. Through the Python binding and the library this checkout built.

    cargo build --release
    /work/venv/bin/python tools/make_upscaler_fixture.py --bench-graph /tmp/esrgan-full
    KILN_LIBRARY=target/release/libkiln.so /work/venv/bin/python tools/bench_job_overlap.py \\
        --upscaler /tmp/esrgan-full --size 256 --upscale-size 128 --steps 20 --pairs 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bindings" / "python" / "src"))

import kiln  # noqa: E402


def picture(size: int) -> np.ndarray:
    """A smooth, seeded RGBA picture to upscale."""
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:size, 0:size] / size
    rgb = [np.sin(2 * np.pi * (f1 * x + f2 * y) + p) for f1, f2, p in rng.uniform(0.5, 4, (3, 3))]
    rgb = np.clip(np.rint(127.5 + 100 * np.stack(rgb, -1)), 0, 255).astype(np.uint8)
    return np.concatenate([rgb, np.full((size, size, 1), 255, np.uint8)], -1)


def ended(job: kiln.Job) -> bool:
    return job.poll().state not in (kiln.JobState.QUEUED, kiln.JobState.RUNNING)


def as_jobs(model: kiln.Model, upscaler: kiln.Upscaler, args: argparse.Namespace, image: np.ndarray) -> dict[str, float]:
    """Both as jobs on the one worker: the generation, then the upscale."""
    t0 = time.perf_counter()
    jobs = {"generation": model.submit(args.prompt, width=args.size, height=args.size, steps=args.steps, seed=1),
            "upscale": upscaler.submit(image, tile=args.tile)}
    done: dict[str, float] = {}
    while len(done) < len(jobs):  # the game's frame loop
        for name, job in jobs.items():
            if name not in done and ended(job):
                done[name] = time.perf_counter() - t0
        time.sleep(0.002)
    for job in jobs.values():
        job.result()
        job.close()
    done["both"] = max(done.values())
    return done


def as_thread(model: kiln.Model, upscaler: kiln.Upscaler, args: argparse.Namespace, image: np.ndarray) -> dict[str, float]:
    """The generation as a job, the upscale blocking on a thread of the game's own."""
    t0 = time.perf_counter()
    done: dict[str, float] = {}

    def upscale() -> None:
        upscaler.upscale(image, tile=args.tile).close()
        done["upscale"] = time.perf_counter() - t0

    gen = model.submit(args.prompt, width=args.size, height=args.size, steps=args.steps, seed=1)
    thread = threading.Thread(target=upscale)
    thread.start()
    while not ended(gen):
        time.sleep(0.002)
    done["generation"] = time.perf_counter() - t0
    gen.result()
    gen.close()
    thread.join()
    done["both"] = max(done.values())
    return done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "models" / "kiln-tiny-textures"))
    ap.add_argument("--upscaler", required=True)
    ap.add_argument("--prompt", default="mossy stone brick wall")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--upscale-size", type=int, default=128)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads per graph (0 = Kiln's default)")
    ap.add_argument("--workers", type=int, default=1, help="job workers (1: the two jobs run one after the other)")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    image = picture(args.upscale_size)
    with kiln.Runtime(intra_op_threads=args.threads, job_workers=args.workers) as rt, \
            rt.load_model(args.model) as model, rt.load_upscaler(args.upscaler) as upscaler:
        # Warm-up: first runs allocate and pick kernels.
        as_jobs(model, upscaler, args, image)
        runs: dict[str, list[dict[str, float]]] = {"jobs": [], "thread": []}
        for _ in range(args.pairs):
            runs["jobs"].append(as_jobs(model, upscaler, args, image))
            runs["thread"].append(as_thread(model, upscaler, args, image))
    median = {k: {m: statistics.median(r[m] for r in v) for m in ("generation", "upscale", "both")} for k, v in runs.items()}
    print(f"{args.size}² x {args.steps} steps + {args.upscale_size}² upscale (tile {args.tile}), "
          f"threads per graph {args.threads or 'default'}, job workers {args.workers}, median of {args.pairs}:")
    for k in ("jobs", "thread"):
        m = median[k]
        print(f"  {k:>6}: generation ready {m['generation']:6.2f} s, upscale ready {m['upscale']:6.2f} s, both {m['both']:6.2f} s")
    j, t = median["jobs"], median["thread"]
    print(f"  thread / jobs: generation {t['generation'] / j['generation']:.2f}x, upscale {t['upscale'] / j['upscale']:.2f}x, "
          f"both {t['both'] / j['both']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "median": median}, indent=1) + "\n")


if __name__ == "__main__":
    main()
