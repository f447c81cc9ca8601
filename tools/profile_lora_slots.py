#!/usr/bin/env python3
"""What LoRA slots cost per U-Net call, and where inside ONNX Runtime.

A model loaded with `lora_slots` runs every adaptable layer with a side path
`layer(x) + (x · down) · up` (src/model/lora/slots.rs) inside an `If` on a
switch input: off where no LoRA is fed (the layer's output passes on), on
where one is. This script:

1. writes the slotted U-Net beside the model's own (`examples/lora_slots_graph.rs`,
   the rewrite Kiln runs at load), unless it is there already;
2. times, in rounds (`--pairs`), a plain call, a slotted call with every slot
   off and one with every slot on (zero factors of rank 1, so all three give
   the same output, checked bit for bit), batch 2, with Kiln's CPU session
   settings (intra-op --threads, inter-op 1, spinning off, all graph
   optimisations), and prints the ratios to plain;
3. profiles `--runs` calls of the plain graph and of the slotted one with
   every slot on (ONNX Runtime's profiler) and splits the side paths' node
   time by node (down, up, add) and by layer kind (MatMul/Gemm layers, 3x3
   convolutions, 1x1 convolutions), plus the layout reorders the slots add;
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


def feeds(sess: ort.InferenceSession, latent: int, rank: int, on: bool) -> dict:
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
        elif i.name.startswith("kiln.lora_on."):
            # A slot's switch: off as Kiln feeds a layer no LoRA adapts; on runs its side path.
            out[i.name] = np.array(on)
        elif i.name.startswith("kiln.lora_"):
            # The rank is the one symbolic dimension; zero factors (on, they add exact zeros).
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


def profile(path: Path, threads: int, latent: int, rank: int, on: bool, runs: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="kiln_slots_") as tmp:
        sess = session(path, threads, Path(tmp))
        x = feeds(sess, latent, rank, on)
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
            if op == "If":
                # An If's time includes its branch's nodes: the slot's whole cost.
                by_kind[layer_kind(key)] += s
            else:
                by_node[f"{op} ({part})"] += s
    side_total = sum(by_kind.values())
    return {"ops": dict(by_op), "side_nodes": dict(by_node), "side_by_layer_kind": dict(by_kind),
            "side_total_s": side_total, "if_overhead_s": side_total - sum(by_node.values()),
            "node_total_s": sum(by_op.values()) - by_op.get("If", 0.0)}


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

    # 1. Alternating timed calls: plain, slotted with every slot off (the
    # plain model), slotted with every slot on (a LoRA on every layer).
    plain_s, slotted_s = session(plain, a.threads, None), session(slotted, a.threads, None)
    runs = {"plain": (plain_s, feeds(plain_s, latent, 1, False)), "off": (slotted_s, feeds(slotted_s, latent, 1, False)),
            "on": (slotted_s, feeds(slotted_s, latent, 1, True))}
    outputs = {k: s.run(None, x)[0] for k, (s, x) in runs.items()}
    for k in ("off", "on"):
        if not np.array_equal(outputs[k], outputs["plain"]):
            raise SystemExit(f"slotted, slots {k}, zero factors: not the plain output bit for bit")
    pairs = []
    for _ in range(a.pairs):
        t = {}
        for k, (s, x) in runs.items():
            start = time.perf_counter()
            s.run(None, x)
            t[k] = time.perf_counter() - start
        pairs.append({"plain_s": t["plain"], "off_s": t["off"], "on_s": t["on"], "off_ratio": t["off"] / t["plain"], "on_ratio": t["on"] / t["plain"]})
    del runs, plain_s, slotted_s

    # 2. Where the time goes.
    profiles = {"plain": profile(plain, a.threads, latent, 1, False, a.runs)}
    for r in ranks:
        profiles[f"slotted, every slot on, rank {r}"] = profile(slotted, a.threads, latent, r, True, a.runs)

    result = {"name": name, "model": str(Path(a.model).resolve()), "size": a.size, "threads": a.threads,
              "onnxruntime": ort.__version__, "cpu": cpu_name(), "started_load_avg": load_start,
              "ended_load_avg": os.getloadavg(), "pairs": pairs,
              "off_ratio_median": statistics.median(p["off_ratio"] for p in pairs),
              "on_ratio_median": statistics.median(p["on_ratio"] for p in pairs), "profiles": profiles}
    out = REPO / "bench"
    out.mkdir(exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result)
    (out / f"{name}.md").write_text(md)
    print(md)


def render(r: dict) -> str:
    L = [f"# {r['name']}", "",
         f"U-Net of `{r['model']}` at {r['size']}x{r['size']}, batch 2, plain against LoRA-slotted (zero factors of rank 1, "
         f"every slot switched off or on); "
         f"ONNX Runtime {r['onnxruntime']} CPU, {r['threads']} intra-op threads, spinning off, all optimisations; "
         f"{r['cpu']}; load average {[round(x, 2) for x in r['started_load_avg']]} → "
         f"{[round(x, 2) for x in r['ended_load_avg']]}. Made by `tools/profile_lora_slots.py`.", "",
         "| round | plain s | slots off s | slots on s | off / plain | on / plain |", "| --- | --- | --- | --- | --- | --- |"]
    for i, p in enumerate(r["pairs"], 1):
        L.append(f"| {i} | {p['plain_s']:.3f} | {p['off_s']:.3f} | {p['on_s']:.3f} | {p['off_ratio']:.3f} | {p['on_ratio']:.3f} |")
    L += ["", f"Medians: slots off / plain **{r['off_ratio_median']:.3f}** (the plain model loaded with slots), "
          f"slots on / plain **{r['on_ratio_median']:.3f}** (a LoRA on every slotted layer).", ""]
    plain_ops = r["profiles"]["plain"]["ops"]
    for label, p in r["profiles"].items():
        if label == "plain":
            continue
        L += [f"## {label}", "", f"Node time {p['node_total_s']:.3f} s per call, `If` nodes counted by their branches' nodes "
              f"(plain: {r['profiles']['plain']['node_total_s']:.3f} s); the slots' `If` nodes take {p['side_total_s']:.3f} s, "
              f"of which {p['if_overhead_s']:.3f} s is the `If` itself and the rest its branch's nodes:", "",
              "| side-path node | s per call |", "| --- | --- |"]
        L += [f"| {k} | {v:.4f} |" for k, v in sorted(p["side_nodes"].items(), key=lambda kv: -kv[1])]
        L += ["", "| layers | slots' `If` s per call |", "| --- | --- |"]
        L += [f"| {k} | {v:.4f} |" for k, v in sorted(p["side_by_layer_kind"].items(), key=lambda kv: -kv[1])]
        reorders = {op: p["ops"].get(op, 0.0) - plain_ops.get(op, 0.0) for op in ("ReorderInput", "ReorderOutput")}
        L += ["", "NCHWc layout reorders, slotted minus plain: "
              + ", ".join(f"{op} {d:+.4f} s" for op, d in reorders.items()) + ".", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
