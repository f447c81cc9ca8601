#!/usr/bin/env python3
"""What LoRA slots cost per U-Net call, and where inside ONNX Runtime.

A model loaded with `lora_slots` runs every adaptable layer with a side path
`layer(x) + (x · down) · up` (src/model/lora/slots.rs). With no LoRA fed the
factors are zeros of rank 1, so the pictures are the plain model's, and the
price is the side path's nodes. This script:

1. writes the slotted U-Net beside the model's own (`examples/lora_slots_graph.rs`,
   the rewrite Kiln runs at load), unless it is there already;
2. times plain and slotted batch-2 calls alternately (`--pairs`), each in its
   own session with Kiln's CPU settings (intra-op --threads, inter-op 1,
   spinning off, all graph optimisations), and prints the ratio;
3. profiles `--runs` calls of each (ONNX Runtime's profiler) and splits the
   side paths' node time by node (down, up, add) and by layer kind (MatMul/Gemm
   layers, 3x3 convolutions, 1x1 convolutions), plus the layout reorders the
   slotted graph adds;
4. optionally (`--ranks 1,8,16`) feeds zero factors of other ranks, to see
   whether a rank that fills the CPU's NCHWc blocks is cheaper.

    /work/venv/bin/python tools/profile_lora_slots.py --model /work/models/sd15-random --size 256

Results: bench/<name>.json and .md.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

# Kiln's CPU session settings and the CPU's name, as the U-Net profile uses them.
from profile_unet import cpu_name, session

REPO = Path(__file__).resolve().parent.parent
CONV3 = ("conv1", "conv2", "downsamplers", "upsamplers", "conv_in", "conv_out")
CONV1 = ("proj_in", "proj_out", "conv_shortcut")


def feeds(sess: ort.InferenceSession, latent: int, rank: int) -> dict:
    rng = np.random.default_rng(0)
    out = {}
    for i in sess.get_inputs():
        dt = np.float16 if i.type == "tensor(float16)" else np.float32
        if i.name == "sample":
            out[i.name] = rng.standard_normal((2, 4, latent, latent)).astype(dt)
        elif i.name == "timestep":
            ty = np.int64 if i.type == "tensor(int64)" else dt
            out[i.name] = np.full((2,) if i.shape else (), 500, dtype=ty)
        elif i.name == "encoder_hidden_states":
            out[i.name] = rng.standard_normal((2, 77, i.shape[2] if isinstance(i.shape[2], int) else 768)).astype(dt)
        elif i.name.startswith("kiln.lora_"):
            # The rank is the one symbolic dimension; zeros, as Kiln feeds an unused slot.
            out[i.name] = np.zeros([d if isinstance(d, int) else rank for d in i.shape], dtype=dt)
        else:
            raise SystemExit(f"U-Net input {i.name} ({i.type}, {i.shape}) is not one this script knows")
    return out


def layer_kind(key: str) -> str:
    if any(c in key for c in CONV3):
        return "3x3 convolutions"
    if any(c in key for c in CONV1):
        return "1x1 convolutions"
    return "MatMul/Gemm layers"


def profile(path: Path, threads: int, latent: int, rank: int, runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="kiln_slots_") as tmp:
        sess = session(path, threads, Path(tmp))
        x = feeds(sess, latent, rank)
        sess.run(None, x)
        for _ in range(runs):
            sess.run(None, x)
        trace = json.loads(Path(sess.end_profiling()).read_text())
    runs_seen = sum(1 for e in trace if e.get("cat") == "Session" and e.get("name") == "model_run") or 1
    by_op, by_node, by_kind = collections.Counter(), collections.Counter(), collections.Counter()
    for ev in trace:
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        s = ev["dur"] / 1e6 / runs_seen
        op = ev.get("args", {}).get("op_name", "?")
        by_op[op] += s
        name = ev["name"]
        # Side-path nodes are named /kiln.lora/<module key>/{down,up,add}; the
        # layer itself keeps its own name (its output is renamed .../kiln.lora_base).
        if "/kiln.lora/" in name:
            key, part = name.split("/kiln.lora/", 1)[1].rsplit("_kernel_time", 1)[0].rsplit("/", 1)
            by_node[f"{op} ({part})"] += s
            by_kind[layer_kind(key)] += s
    return {"ops": dict(by_op), "side_nodes": dict(by_node), "side_by_layer_kind": dict(by_kind),
            "side_total_s": sum(by_node.values()), "node_total_s": sum(by_op.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="a diffusers/optimum ONNX model folder")
    ap.add_argument("--size", type=int, default=256, help="image size in pixels (latent = size / 8)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--pairs", type=int, default=4, help="alternating plain / slotted timed calls")
    ap.add_argument("--runs", type=int, default=3, help="profiled calls per graph (after one warm-up)")
    ap.add_argument("--ranks", default="1", help="zero-factor ranks to profile the slotted graph with")
    ap.add_argument("--name", default=None, help="results go to bench/<name>.json and .md")
    a = ap.parse_args()

    plain = Path(a.model) / "unet" / "model.onnx"
    slotted = plain.with_name("model_lora_slots.onnx")
    if not slotted.exists():
        subprocess.run(["cargo", "run", "--release", "--quiet", "--example", "lora_slots_graph", "--", str(plain), str(slotted)],
                       cwd=REPO, check=True)
    latent = a.size // 8
    ranks = [int(r) for r in a.ranks.split(",")]
    name = a.name or f"lora-slots-profile-{Path(a.model).name}-{a.size}"
    load_start = os.getloadavg()

    # 1. Alternating timed calls, both sessions open.
    sessions = {"plain": session(plain, a.threads, None), "slotted": session(slotted, a.threads, None)}
    inputs = {k: feeds(s, latent, 1) for k, s in sessions.items()}
    for k, s in sessions.items():
        s.run(None, inputs[k])
    pairs = []
    for _ in range(a.pairs):
        t = {}
        for k, s in sessions.items():
            start = time.perf_counter()
            s.run(None, inputs[k])
            t[k] = time.perf_counter() - start
        pairs.append({"plain_s": t["plain"], "slotted_s": t["slotted"], "ratio": t["slotted"] / t["plain"]})
    del sessions

    # 2. Where the time goes.
    profiles = {"plain": profile(plain, a.threads, latent, 1, a.runs)}
    for r in ranks:
        profiles[f"slotted, rank {r}"] = profile(slotted, a.threads, latent, r, a.runs)

    result = {"name": name, "model": str(Path(a.model).resolve()), "size": a.size, "threads": a.threads,
              "onnxruntime": ort.__version__, "cpu": cpu_name(), "started_load_avg": load_start,
              "ended_load_avg": os.getloadavg(), "pairs": pairs,
              "ratio_median": statistics.median(p["ratio"] for p in pairs), "profiles": profiles}
    out = REPO / "bench"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result)
    (out / f"{name}.md").write_text(md)
    print(md)


def render(r: dict) -> str:
    L = [f"# {r['name']}", "",
         f"U-Net of `{r['model']}` at {r['size']}x{r['size']}, batch 2, plain against LoRA-slotted with zero factors; "
         f"ONNX Runtime {r['onnxruntime']} CPU, {r['threads']} intra-op threads, spinning off, all optimisations; "
         f"{r['cpu']}; load average {[round(x, 2) for x in r['started_load_avg']]} → "
         f"{[round(x, 2) for x in r['ended_load_avg']]}. Made by `tools/profile_lora_slots.py`.", "",
         "| pair | plain s | slotted s | slotted / plain |", "| --- | --- | --- | --- |"]
    for i, p in enumerate(r["pairs"], 1):
        L.append(f"| {i} | {p['plain_s']:.3f} | {p['slotted_s']:.3f} | {p['ratio']:.3f} |")
    L += ["", f"Median slotted / plain: **{r['ratio_median']:.3f}**.", ""]
    plain_ops = r["profiles"]["plain"]["ops"]
    for label, p in r["profiles"].items():
        if label == "plain":
            continue
        L += [f"## {label}", "", f"Node time {p['node_total_s']:.3f} s per call (plain: {r['profiles']['plain']['node_total_s']:.3f} s); "
              f"side-path nodes {p['side_total_s']:.3f} s.", "",
              "| side-path node | s per call |", "| --- | --- |"]
        L += [f"| {k} | {v:.4f} |" for k, v in sorted(p["side_nodes"].items(), key=lambda kv: -kv[1])]
        L += ["", "| layers | side-path s per call |", "| --- | --- |"]
        L += [f"| {k} | {v:.4f} |" for k, v in sorted(p["side_by_layer_kind"].items(), key=lambda kv: -kv[1])]
        reorders = {op: p["ops"].get(op, 0.0) - plain_ops.get(op, 0.0) for op in ("ReorderInput", "ReorderOutput")}
        L += ["", "NCHWc layout reorders, slotted minus plain: "
              + ", ".join(f"{op} {d:+.4f} s" for op, d in reorders.items()) + ".", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
