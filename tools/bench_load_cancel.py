#!/usr/bin/env python3
"""How soon a model-load job ends after it is cancelled part-way, against how long the load had
left to run (what a cancelled load cost before Kiln passed the cancel to ONNX Runtime's session
creation: the load ran to its end, then the model was dropped).

First the whole load is timed (--loads runs, the median is T). Then, for each fraction f in
--fractions, a load job is submitted, cancelled f·T seconds later, and the seconds from the cancel
to the job's end are measured, next to T − f·T, what the load had left. A load the cancel missed
(it had already finished) is reported as such. Through the Python binding and the library this
checkout built; one job worker, the runtime's default threads. With --graph-cache DIR the runtime
loads through the optimized-graph cache (filled by one untimed load first), so the loads skip
ONNX Runtime's graph transformations, the longest stretches a cancel waits for.

    cargo build --release
    /work/venv/bin/python tools/make_sd15_random.py /work/models/sd15-random --exporter torch --no-check
    # any Python with numpy (the binding's one dependency), e.g. the fixture venv:
    KILN_LIBRARY=target/release/libkiln.so /work/venv/bin/python tools/bench_load_cancel.py \\
        /work/models/sd15-random --json bench/load-cancel-sd15.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bindings" / "python" / "src"))

import kiln  # noqa: E402


def timed_load(runtime: kiln.Runtime, model_dir: str) -> float:
    """Seconds a load job takes from submission to its end (the model is closed right after)."""
    started = time.perf_counter()
    with runtime.submit_load_model(model_dir) as job:
        state = job.wait(600)
        took = time.perf_counter() - started
        if state != kiln.JobState.SUCCEEDED:
            raise SystemExit(f"the load failed: {job.error_message}")
        job.model().close()
    return took


def cancelled_load(runtime: kiln.Runtime, model_dir: str, after: float) -> dict[str, object]:
    """Submits a load, cancels it `after` seconds later and measures how long it takes to end."""
    started = time.perf_counter()
    with runtime.submit_load_model(model_dir) as job:
        time.sleep(after)
        cancel_at = time.perf_counter()
        job.cancel()
        state = job.wait(600)
        ended = time.perf_counter()
        message = job.error_message if state != kiln.JobState.SUCCEEDED else ""
    return {
        "cancel_at_s": round(cancel_at - started, 3),
        "ended_after_cancel_s": round(ended - cancel_at, 3),
        "state": state.name,
        "stopped_in": message.split(" (")[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir")
    parser.add_argument("--loads", type=int, default=3, help="whole loads timed (median)")
    parser.add_argument("--fractions", default="0.05,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    parser.add_argument("--graph-cache", type=Path, help="load through this optimized-graph cache folder")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    runtime = kiln.Runtime(job_workers=1, graph_cache_dir=args.graph_cache)
    if args.graph_cache:
        print(f"filling the graph cache: {timed_load(runtime, args.model_dir):.2f} s")
    loads = [timed_load(runtime, args.model_dir) for _ in range(args.loads)]
    whole = statistics.median(loads)
    print(f"whole load: median {whole:.2f} s of {', '.join(f'{t:.2f}' for t in loads)}")
    rows = []
    print("| cancelled at | ended after the cancel | load had left | state | stopped in |")
    print("|---:|---:|---:|---|---|")
    for f in (float(x) for x in args.fractions.split(",")):
        row = cancelled_load(runtime, args.model_dir, f * whole)
        row["fraction"] = f
        row["load_left_s"] = round(max(whole - float(row["cancel_at_s"]), 0.0), 3)  # type: ignore[arg-type]
        rows.append(row)
        print(f"| {row['cancel_at_s']:.2f} s ({f:.0%}) | {row['ended_after_cancel_s']:.2f} s | "
              f"{row['load_left_s']:.2f} s | {row['state']} | {row['stopped_in']} |")
    stopped = [r for r in rows if r["state"] == "CANCELLED"]
    if stopped:
        waits = [float(r["ended_after_cancel_s"]) for r in stopped]  # type: ignore[arg-type]
        left = [float(r["load_left_s"]) for r in stopped]  # type: ignore[arg-type]
        print(f"cancelled loads: {len(stopped)} of {len(rows)}; ended after the cancel: median {statistics.median(waits):.2f} s, "
              f"max {max(waits):.2f} s; the load had left: median {statistics.median(left):.2f} s "
              f"(ratio of medians {statistics.median(waits) / statistics.median(left):.2f})")
    if args.json:
        args.json.write_text(json.dumps({
            "model": args.model_dir, "graph_cache": args.graph_cache is not None, "onnxruntime": runtime.onnxruntime_version, "whole_load_s": loads,
            "cancels": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
