#!/usr/bin/env python3
"""Kiln against raw ONNX Runtime on a CUDA GPU, side by side, in one script.

    python3 tools/gpu_bench.py --bench BIN --models tiny=DIR[,sd15=DIR] [--runs 3] [--out DIR]
        [--kiln-variant NAME=FLAGS ...]

For every model and two workloads at 512x512 (20 Euler steps with classifier-
free guidance 7.5, and 1 step without guidance) it runs, each in a process of
its own:

- Kiln: the `bench` example (`--provider cuda`, CUDA required) once per Kiln
  variant. The default variants are the GPU math modes, `fast` (TF32, ONNX
  Runtime's default) and `exact` (`use_tf32=0`); `--kiln-variant NAME=FLAGS`
  adds others, e.g. `--kiln-variant "device=--gpu-math fast --device-latents"`
  or `--kiln-variant "static+device=--gpu-math fast --static-unet --device-latents"`
  (the row's `device_latent_steps` says whether the device loop ran).
- Raw ONNX Runtime (this script's `raw` mode): the same three graph files with
  the same session options (CUDA provider with the same `use_tf32`, graph
  optimization level "all"), I/O binding on every call, the latents, the
  guidance arithmetic and the Euler update kept on the GPU in torch tensors,
  and only the final image copied back. That is the fastest a plain ONNX
  Runtime loop gets without Kiln's levers.

Reported per run: first-image latency (session creation included), warm
seconds per image and images per second (mean of --runs after one untimed
warm-up), seconds per U-Net call, and peak device memory of the process (the
largest `used_memory` nvidia-smi reported for its pid, sampled every 50 ms).
Ratios are Kiln / raw for the same model, workload and GPU math, from runs
in this one script, never absolute numbers from elsewhere.

Needs: nvidia-smi; for the raw side, Python with numpy, torch (CUDA) and the
`onnxruntime-gpu` Python package importable (PYTHONPATH); for Kiln, ORT_DYLIB_PATH
and LD_LIBRARY_PATH as tools/gpu_check.sh sets them. Writes OUT/gpu-bench.json
and OUT/gpu-bench.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

SIZE = 512
WORKLOADS = {"cfg20": (20, 7.5), "one": (1, 0.0)}


class PeakGpuMemory:
    """Samples the device memory nvidia-smi reports for one process id."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peak_mib, self._stop = pid, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(
                    ["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                    capture_output=True, text=True, timeout=5).stdout
                for line in out.splitlines():
                    pid, mib = [x.strip() for x in line.split(",")]
                    if int(pid) == self.pid:
                        self.peak_mib = max(self.peak_mib, int(mib))
            except (OSError, ValueError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.05)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak_mib


def run_measured(cmd: list[str], log: Path) -> tuple[int, int, float]:
    """Runs cmd, returns (exit status, peak device MiB, wall seconds)."""
    t = time.time()
    with open(log, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        mem = PeakGpuMemory(p.pid)
        rc = p.wait()
    return rc, mem.stop(), time.time() - t


# ---------------------------------------------------------------- raw side
def euler_sigmas(model: Path, steps: int):
    """Euler's sigmas for `steps` (diffusers' EulerDiscreteScheduler, linspace spacing)."""
    import numpy as np

    cfg = json.loads((model / "scheduler" / "scheduler_config.json").read_text())
    n = cfg.get("num_train_timesteps", 1000)
    b0, b1 = cfg.get("beta_start", 0.00085), cfg.get("beta_end", 0.012)
    betas = np.linspace(b0 ** 0.5, b1 ** 0.5, n, dtype=np.float64) ** 2
    alphas = np.cumprod(1.0 - betas)
    sig = ((1 - alphas) / alphas) ** 0.5
    ts = np.linspace(0, n - 1, steps, dtype=np.float64)[::-1].copy()
    s = np.interp(ts, np.arange(n), sig)
    return ts.astype(np.float32), np.concatenate([s, [0.0]]).astype(np.float32)


def raw(args: argparse.Namespace) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    model, steps, guidance = Path(args.model), args.steps, args.guidance
    cfg = guidance > 1.0
    batch = 2 if cfg else 1
    # --device cpu dry-runs this loop on a machine without a GPU (same code path).
    where = args.device
    dev = torch.device(where, 0) if where == "cuda" else torch.device("cpu")
    sync = torch.cuda.synchronize if where == "cuda" else (lambda: None)
    t_start = time.time()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    prov = [("CUDAExecutionProvider", {"device_id": 0, "use_tf32": "1" if args.gpu_math == "fast" else "0"}),
            "CPUExecutionProvider"] if where == "cuda" else ["CPUExecutionProvider"]
    te, unet, vae = (ort.InferenceSession(str(model / g / "model.onnx"), so, providers=prov)
                     for g in ("text_encoder", "unet", "vae_decoder"))
    assert where == "cpu" or unet.get_providers()[0] == "CUDAExecutionProvider", unet.get_providers()
    scaling = json.loads((model / "vae_decoder" / "config.json").read_text()).get("scaling_factor", 0.18215)
    ts, sigmas = euler_sigmas(model, steps)
    h = w = args.size // 8
    unet_s = [0.0, 0]

    def bind(io, name, t):
        io.bind_input(name, where, 0, np.float32 if t.dtype == torch.float32 else np.int64, list(t.shape), t.data_ptr())

    def image(seed: int):
        # Text: the two prompts' token ids (the tokenizer is not what is measured).
        ids = torch.full((batch, 77), 49407, dtype=torch.int64, device=dev)
        ids[:, 0] = 49406
        io = te.io_binding()
        bind(io, "input_ids", ids)
        hidden = torch.empty((batch, 77, te.get_outputs()[0].shape[2]), dtype=torch.float32, device=dev)
        io.bind_output("last_hidden_state", where, 0, np.float32, list(hidden.shape), hidden.data_ptr())
        io.bind_output("pooler_output", where, 0)
        sync()
        te.run_with_iobinding(io)
        g = torch.Generator(device=dev).manual_seed(seed)
        latents = torch.randn((1, 4, h, w), generator=g, device=dev) * float(sigmas[0])
        sample = torch.empty((batch, 4, h, w), dtype=torch.float32, device=dev)
        out = torch.empty_like(sample)
        timestep = torch.empty((), dtype=torch.float32, device=dev)
        io = unet.io_binding()
        bind(io, "sample", sample)
        bind(io, "timestep", timestep)
        bind(io, "encoder_hidden_states", hidden)
        io.bind_output("out_sample", where, 0, np.float32, list(out.shape), out.data_ptr())
        for i in range(steps):
            s = float(sigmas[i])
            sample.copy_((latents / (s * s + 1) ** 0.5).expand(batch, -1, -1, -1))
            timestep.fill_(float(ts[i]))
            sync()
            t = time.perf_counter()
            unet.run_with_iobinding(io)
            unet_s[0] += time.perf_counter() - t
            unet_s[1] += 1
            eps = out[0:1] + guidance * (out[1:2] - out[0:1]) if cfg else out
            latents = latents + (float(sigmas[i + 1]) - s) * eps
        z = (latents / scaling).contiguous()
        img = torch.empty((1, 3, args.size, args.size), dtype=torch.float32, device=dev)
        io = vae.io_binding()
        bind(io, "latent_sample", z)
        io.bind_output("sample", where, 0, np.float32, list(img.shape), img.data_ptr())
        sync()
        vae.run_with_iobinding(io)
        # Only the final image comes back, as 8-bit RGB like Kiln's.
        return ((img[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    first = image(1)
    first_s = time.time() - t_start
    image(1)
    unet_s[:] = [0.0, 0]
    walls = []
    for _ in range(args.runs):
        t = time.time()
        image(1)
        walls.append(time.time() - t)
    warm = sum(walls) / len(walls)
    print(json.dumps({"first_image_s": first_s, "warm_image_s": warm, "images_per_s": 1 / warm,
                      "unet_per_call_s": unet_s[0] / max(unet_s[1], 1), "pixels_mean": float(first.mean())}))


# ---------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="mode")
    r = sub.add_parser("raw")
    r.add_argument("--model", required=True)
    r.add_argument("--steps", type=int, required=True)
    r.add_argument("--guidance", type=float, required=True)
    r.add_argument("--gpu-math", choices=("fast", "exact"), required=True)
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    r.add_argument("--size", type=int, default=SIZE)
    ap.add_argument("--bench", help="Kiln's bench example binary")
    ap.add_argument("--models", help="NAME=DIR[,NAME=DIR]")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default="gpu-bench")
    ap.add_argument("--kiln-variant", action="append", default=[], metavar="NAME=FLAGS",
                    help="an extra Kiln configuration: its name and bench flags (split on spaces)")
    ap.add_argument("--provider", choices=("cuda", "cpu"), default="cuda",
                    help="cpu rehearses the whole script on a machine without a GPU (figures mean nothing)")
    ap.add_argument("--size", type=int, default=SIZE, help="image side (512; a rehearsal makes it small)")
    args = ap.parse_args()
    if args.mode == "raw":
        raw(args)
        return
    if not args.bench or not args.models:
        ap.error("--bench and --models are required")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = [("fast", ["--gpu-math", "fast"]), ("exact", ["--gpu-math", "exact"])]
    for v in args.kiln_variant:
        name, _, flags = v.partition("=")
        variants.append((name, flags.split()))
    rows = []
    for spec in args.models.split(","):
        mname, _, mdir = spec.partition("=")
        for wname, (steps, guidance) in WORKLOADS.items():
            for math in ("fast", "exact"):
                tag = f"{mname}-{wname}-raw-{math}"
                cmd = [sys.executable, __file__, "raw", "--model", mdir, "--steps", str(steps), "--guidance",
                       str(guidance), "--gpu-math", math, "--runs", str(args.runs), "--device", args.provider,
                       "--size", str(args.size)]
                rc, mib, wall = run_measured(cmd, out / f"{tag}.log")
                row = {"model": mname, "workload": wname, "side": "raw ORT + I/O binding", "variant": math,
                       "rc": rc, "peak_gpu_mib": mib, "process_s": wall}
                if rc == 0:
                    row.update(json.loads((out / f"{tag}.log").read_text().strip().splitlines()[-1]))
                rows.append(row)
                print(json.dumps(row), flush=True)
            for vname, flags in variants:
                tag = f"{mname}-{wname}-kiln-{vname}"
                js = out / f"{tag}.json"
                cmd = [args.bench, "--model", mdir, "--size", str(args.size), "--steps", str(steps), "--guidance",
                       str(guidance), "--runs", str(args.runs), "--warmup", "1", "--provider", args.provider,
                       "--json", str(js), *flags]
                rc, mib, wall = run_measured(cmd, out / f"{tag}.log")
                row = {"model": mname, "workload": wname, "side": "Kiln", "variant": vname, "rc": rc,
                       "peak_gpu_mib": mib, "process_s": wall}
                if rc == 0:
                    j = json.loads(js.read_text())
                    row.update(first_image_s=j["cold"]["model_load_s"] + j["cold"]["first_image_s"],
                               warm_image_s=j["warm"]["image_s"], images_per_s=1 / j["warm"]["image_s"],
                               unet_per_call_s=j["warm"]["unet"]["per_call_s"], unet_provider=j.get("unet_provider"),
                               device_latent_steps=j.get("device_latent_steps"))
                rows.append(row)
                print(json.dumps(row), flush=True)
    (out / "gpu-bench.json").write_text(json.dumps(rows, indent=1))
    (out / "gpu-bench.md").write_text(table(rows))
    print(table(rows))


def table(rows: list[dict]) -> str:
    raw = {(r["model"], r["workload"], r["variant"]): r for r in rows if r["side"].startswith("raw") and r["rc"] == 0}
    lines = ["| model | workload | side | variant | first image (s) | warm image (s) | images/s | U-Net call (ms) "
             "| peak GPU MiB | warm vs raw (same math) |", "|" + " --- |" * 10]
    for r in rows:
        if r["rc"] != 0:
            lines.append(f"| {r['model']} | {r['workload']} | {r['side']} | {r['variant']} | failed (exit {r['rc']}) "
                         "| | | | | |")
            continue
        base = raw.get((r["model"], r["workload"], "exact" if "exact" in r["variant"] else "fast"))
        ratio = f"{r['warm_image_s'] / base['warm_image_s']:.3f}" if base and r["side"] == "Kiln" else ""
        lines.append(f"| {r['model']} | {r['workload']} | {r['side']} | {r['variant']} | {r['first_image_s']:.2f} "
                     f"| {r['warm_image_s']:.4f} | {r['images_per_s']:.2f} | {1e3 * r['unet_per_call_s']:.2f} "
                     f"| {r['peak_gpu_mib']} | {ratio} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
