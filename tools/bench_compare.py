#!/usr/bin/env python3
"""Kiln against the Python reference (optimum's ORTStableDiffusionPipeline), alternately.

Both sides run the same ONNX export on ONNX Runtime's CPU execution provider
with the same settings: intra-op threads = --threads, inter-op threads 1,
spinning off for both pools (what Kiln does by default), ORT's default graph
optimisation level, Euler scheduler, the same size / steps / guidance, prompt
"mossy stone brick wall", negative prompt "blurry".

Two comparisons, each as pairs run A B A B ... after one warm-up of each side:

* warm: one image with the model already loaded.
  - reference: a long-lived Python process (this script with --ref-server)
    loads the pipeline once, generates two warm-up images, then one image per
    "gen" line read on stdin; the time around the pipeline call (PIL output)
    is reported, plus the time spent inside InferenceSession.run.
  - Kiln: one `bench --warmup 1 --runs 1` process per pair; its warm image
    (the third of the process, RGBA8 conversion included) is used, with its stage
    breakdown, cold numbers and peak RSS (VmHWM).
* cold: fresh process start -> first PNG written (model load included),
  measured the same way for both: the PNG's mtime minus the spawn time.
  - reference: this script with --ref-once (imports, load, one image, PNG).
  - Kiln: `generate` (examples/generate.rs).
  Peak RSS of every child comes from wait4() (ru_maxrss); the reference also
  reports getrusage() from inside.
  With --graph-cache DIR (absent or empty), Kiln's processes keep ONNX
  Runtime's optimized graphs in DIR: the cold warm-up run writes them.
  --kiln-args ARGS adds flags to Kiln's processes (e.g. per-stage residency).
  With --graph-cache or --kiln-baseline-args ARGS (may be ""), every cold
  pair becomes a triple (reference, Kiln's baseline, Kiln): the baseline runs without the
  cache and with the baseline flags instead of --kiln-args, so one run gives
  the before / after ratios side by side.

Ratios are Kiln / reference per pair (< 1: Kiln faster / smaller) and their
median. Results go to bench/<name>.json and bench/<name>.md.

Usage (repo root; build first:
    CARGO_TARGET_DIR=/work/target-bench cargo build --release --example bench --example generate):
    /work/venv/bin/python tools/bench_compare.py --name tiny-64-20 --model tests/fixtures/tiny-sd \\
        --size 64 --steps 20 --pairs 5
    /work/venv/bin/python tools/bench_compare.py --name sd15-256-4 --model /work/models/sd15-random \\
        --size 256 --steps 4 --pairs 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PROMPT = "mossy stone brick wall"
NEGATIVE = "blurry"
SEED = 1
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
                 "tensorrt": "TensorrtExecutionProvider"}


# --------------------------------------------------------------------------
# The reference side (runs in child processes)
# --------------------------------------------------------------------------
def ref_view(model: Path) -> Path:
    """A folder of symlinks to the export without vae_encoder/ (Kiln does not load
    it for text-to-image, so neither does the reference)."""
    view = Path(tempfile.mkdtemp(prefix="kiln_ref_view_"))
    for p in model.iterdir():
        if p.name != "vae_encoder":
            (view / p.name).symlink_to(p.resolve())
    return view


def ref_load(model: str, threads: int, skip_vae_encoder: bool, provider: str = "cpu"):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import onnxruntime as ort
    from diffusers import EulerDiscreteScheduler
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    path = ref_view(Path(model)) if skip_vae_encoder else Path(model)
    providers = [ORT_PROVIDERS[provider]] + (["CPUExecutionProvider"] if provider != "cpu" else [])
    pipe = ORTStableDiffusionPipeline.from_pretrained(
        str(path), providers=providers, session_options=so, local_files_only=True
    )
    for name in ("unet", "text_encoder", "vae_decoder"):
        got = getattr(pipe, name).session.get_providers()[0]
        if got != providers[0]:
            sys.exit(f"reference {name} runs on {got}, not {providers[0]}")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def ref_generate(pipe, a):
    import torch

    return pipe(
        PROMPT,
        negative_prompt=NEGATIVE,
        height=a.size,
        width=a.size,
        num_inference_steps=a.steps,
        guidance_scale=a.guidance,
        generator=torch.Generator().manual_seed(SEED),
    ).images[0]


class RunTimer:
    """Accumulates the time spent in InferenceSession.run, per graph file."""

    def __init__(self):
        import onnxruntime as ort

        self.stats: dict[str, list[float]] = {}
        orig = ort.InferenceSession.run
        timer = self

        def run(sess, *args, **kw):
            t = time.perf_counter()
            try:
                return orig(sess, *args, **kw)
            finally:
                name = Path(getattr(sess, "_model_path", "") or "?").parent.name
                s = timer.stats.setdefault(name, [0, 0.0])
                s[0] += 1
                s[1] += time.perf_counter() - t

        ort.InferenceSession.run = run

    def take(self):
        out = {k: {"calls": v[0], "s": v[1]} for k, v in self.stats.items()}
        self.stats = {}
        return out


def maxrss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def ref_server(a) -> None:
    """Load once, make two warm-up images (as Kiln's bench does), then one image per 'gen' line on stdin."""
    timer = RunTimer()
    t = time.perf_counter()
    pipe = ref_load(a.model, a.threads, not a.ref_keep_vae_encoder, a.provider)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    ref_generate(pipe, a)
    first_s = time.perf_counter() - t
    ref_generate(pipe, a)
    timer.take()
    print(json.dumps({"ready": True, "model_load_s": load_s, "first_image_s": first_s}), flush=True)
    for line in sys.stdin:
        if line.strip() != "gen":
            break
        t = time.perf_counter()
        img = ref_generate(pipe, a)
        s = time.perf_counter() - t
        stages = timer.take()
        ort_s = sum(v["s"] for v in stages.values())
        print(json.dumps({"image_s": s, "inside_onnxruntime_s": ort_s, "overhead_s": s - ort_s,
                          "overhead_pct": 100 * (s - ort_s) / s, "stages": stages,
                          "size": list(img.size), "peak_rss_mib": maxrss_mib()}), flush=True)


def ref_once(a) -> None:
    """Cold: imports, load, one image, PNG."""
    import numpy as np

    t0 = time.perf_counter()
    pipe = ref_load(a.model, a.threads, not a.ref_keep_vae_encoder, a.provider)
    t1 = time.perf_counter()
    img = ref_generate(pipe, a)
    img.save(a.out)
    t2 = time.perf_counter()
    arr = np.asarray(img)
    print(json.dumps({"model_load_s": t1 - t0, "first_image_s": t2 - t1, "peak_rss_mib": maxrss_mib(),
                      "image_std": float(arr.std())}), flush=True)


# --------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------
def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=20).stdout.strip()
    except Exception:
        return ""


def machine(threads: int, target: Path) -> dict:
    lscpu = {}
    for line in sh("lscpu").splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            lscpu[k.strip()] = v.strip()
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    import importlib.metadata as md

    vers = {}
    for p in ["onnxruntime", "onnxruntime-gpu", "optimum-onnx", "optimum", "diffusers", "transformers", "torch", "numpy"]:
        try:
            vers[p] = md.version(p)
        except md.PackageNotFoundError:
            vers[p] = "-"
    try:
        import onnxruntime

        ort_version = onnxruntime.__version__
    except ImportError:
        ort_version = "-"
    return {
        "cpu": lscpu.get("Model name", platform.processor()),
        "onnxruntime": ort_version,
        "logical_cpus": os.cpu_count(),
        "threads_per_core": lscpu.get("Thread(s) per core"),
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "packages": vers,
        "intra_op_threads": threads,
        "inter_op_threads": 1,
        "spinning": "off (session.intra_op.allow_spinning=0, session.inter_op.allow_spinning=0)",
        "kiln_git": sh(f"git -C {shlex.quote(str(REPO))} rev-parse --short HEAD")
        + (" (dirty)" if sh(f"git -C {shlex.quote(str(REPO))} status --porcelain --untracked-files=no") else ""),
        "kiln_binaries": str(target),
    }


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def spawn_wait4(cmd: list[str], png: Path | None, timeout=3600) -> dict:
    """Run a child, reap it with os.wait4 (its own ru_maxrss); wall time and spawn -> PNG mtime."""
    if png is not None and png.exists():
        png.unlink()
    with tempfile.TemporaryFile("w+") as fo, tempfile.TemporaryFile("w+") as fe:
        t_wall = time.time()
        t = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=fo, stderr=fe, text=True)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0)
        fe.seek(0)
        out, err = fo.read(), fe.read()
    r = {"wall_s": wall, "rc": p.returncode, "maxrss_mib": ru.ru_maxrss / 1024.0,
         "stdout": out, "stderr": err[-4000:]}
    if png is not None and png.exists():
        r["to_png_s"] = png.stat().st_mtime - t_wall
    if p.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({p.returncode}):\n{err[-4000:]}")
    return r


def last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON in output: {text[-2000:]}")


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", default=None, help="results go to bench/<name>.json and .md")
    ap.add_argument("--model", default=str(REPO / "tests/fixtures/tiny-sd"))
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--provider", choices=sorted(ORT_PROVIDERS), default="cpu",
                    help="execution provider for both sides (GPU: Kiln built with KILN_ORT_PACKAGE=onnxruntime-gpu "
                         "and --features cuda, onnxruntime-gpu 1.31.1 in the Python env); Kiln's bench example "
                         "has no provider flag, so the warm comparison runs only on cpu")
    ap.add_argument("--skip", choices=["none", "warm", "cold"], default="none", help="leave one comparison out")
    ap.add_argument("--target-dir", default=os.environ.get("CARGO_TARGET_DIR", str(REPO / "target")),
                    help="cargo target dir holding release/examples/{bench,generate}")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--ref-keep-vae-encoder", action="store_true",
                    help="let the reference load vae_encoder too (optimum's default; Kiln does not load it)")
    ap.add_argument("--note", default="", help="free text stored with the results (e.g. machine load)")
    ap.add_argument("--graph-cache", default=None, metavar="DIR",
                    help="Kiln keeps ONNX Runtime's optimized graphs in DIR (must be absent or empty: the cold "
                         "warm-up run fills it); each cold pair also runs Kiln without it, for before/after ratios")
    ap.add_argument("--kiln-args", default="", metavar="ARGS",
                    help="extra flags for Kiln's processes, cold and warm (e.g. '--residency per-stage')")
    ap.add_argument("--kiln-baseline-args", default=None, metavar="ARGS",
                    help="each cold pair also runs Kiln with these flags instead of --kiln-args and without "
                         "--graph-cache (e.g. '--sequential-load'), for before/after ratios in one run")
    # internal modes
    ap.add_argument("--ref-server", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ref-once", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.ref_server:
        return ref_server(a)
    if a.ref_once:
        return ref_once(a)

    name = a.name or f"{Path(a.model).name}-{a.size}-{a.steps}-g{a.guidance:g}"
    target = Path(a.target_dir).resolve()
    bench_bin = target / "release/examples/bench"
    gen_bin = target / "release/examples/generate"
    for b in (bench_bin, gen_bin):
        if not b.is_file():
            sys.exit(f"{b} missing: build with CARGO_TARGET_DIR={target} cargo build --release --example bench --example generate")
    model = str(Path(a.model).resolve())
    cache_args = []
    if a.graph_cache:
        cache = Path(a.graph_cache).resolve()
        if cache.exists() and any(cache.iterdir()):
            sys.exit(f"--graph-cache {cache} is not empty: give an absent or empty folder (the warm-up run fills it)")
        cache_args = ["--graph-cache", str(cache)]
    tmp = Path(tempfile.mkdtemp(prefix="kiln_bench_"))
    common = ["--model", model, "--size", str(a.size), "--steps", str(a.steps), "--guidance", str(a.guidance),
              "--threads", str(a.threads)]
    if a.provider != "cpu" and a.skip != "warm":
        print("note: examples/bench has no --provider flag; skipping the warm comparison", flush=True)
        a.skip = "warm"
    ref_common = common + (["--ref-keep-vae-encoder"] if a.ref_keep_vae_encoder else []) + ["--provider", a.provider]
    ref_once_cmd = [a.python, str(Path(__file__).resolve()), "--ref-once", *ref_common, "--out", str(tmp / "ref.png")]
    kiln_cold_cmd = [str(gen_bin), "--model", model, "--prompt", PROMPT, "--negative-prompt", NEGATIVE,
                     "--width", str(a.size), "--height", str(a.size), "--steps", str(a.steps),
                     "--guidance", str(a.guidance), "--scheduler", "euler", "--seed", str(SEED),
                     "--threads", str(a.threads), "--out", str(tmp / "kiln.png")]
    if a.provider != "cpu":
        kiln_cold_cmd += ["--provider", a.provider, "--require-provider"]
    extra = shlex.split(a.kiln_args)
    baseline = cache_args or a.kiln_baseline_args is not None
    kiln_baseline_cmd = kiln_cold_cmd + shlex.split(a.kiln_baseline_args or "") if baseline else None
    kiln_cold_cmd = kiln_cold_cmd + cache_args + extra
    kiln_warm_cmd = [str(bench_bin), *common, "--warmup", "1", "--runs", "1", "--json", str(tmp / "kiln.json"), *cache_args, *extra]
    command = shlex.join([a.python, *sys.argv])
    mach = machine(a.threads, target)
    print(f"{name}: {a.size}x{a.size}, {a.steps} steps, guidance {a.guidance}, {a.threads} threads, "
          f"{a.pairs} pairs; {mach['cpu']}, load {loadavg()}", flush=True)

    results = {"name": name, "command": command, "machine": mach, "note": a.note,
               "config": {"model": model, "size": a.size, "steps": a.steps, "guidance": a.guidance,
                          "threads": a.threads, "provider": a.provider, "scheduler": "euler", "prompt": PROMPT,
                          "negative_prompt": NEGATIVE, "pairs": a.pairs,
                          "reference_loads_vae_encoder": a.ref_keep_vae_encoder,
                          "graph_cache": cache_args[1] if cache_args else None,
                          "kiln_args": a.kiln_args, "kiln_baseline_args": a.kiln_baseline_args},
               "commands": {"reference_cold": shlex.join(ref_once_cmd), "kiln_cold": shlex.join(kiln_cold_cmd),
                            "kiln_warm": shlex.join(kiln_warm_cmd),
                            "kiln_cold_baseline": shlex.join(kiln_baseline_cmd) if baseline else None,
                            "reference_warm": shlex.join([a.python, str(Path(__file__).resolve()), "--ref-server", *ref_common])},
               "started": time.strftime("%Y-%m-%d %H:%M:%S"), "loadavg": {"start": loadavg()},
               "warm": [], "cold": []}

    def ref_cold():
        r = spawn_wait4(ref_once_cmd, tmp / "ref.png")
        j = last_json(r["stdout"])
        return {"to_png_s": r.get("to_png_s"), "process_wall_s": r["wall_s"], "maxrss_mib": r["maxrss_mib"],
                "inner": j, "loadavg": loadavg()}

    def kiln_cold(cmd=kiln_cold_cmd):
        r = spawn_wait4(cmd, tmp / "kiln.png")
        return {"to_png_s": r.get("to_png_s"), "process_wall_s": r["wall_s"], "maxrss_mib": r["maxrss_mib"],
                "loadavg": loadavg()}

    def kiln_warm():
        r = spawn_wait4(kiln_warm_cmd, None)
        j = json.loads((tmp / "kiln.json").read_text())
        return {"image_s": j["warm"]["image_s"], "maxrss_mib": r["maxrss_mib"], "process_wall_s": r["wall_s"],
                "bench": j, "loadavg": loadavg()}

    t_start = time.perf_counter()
    if a.skip != "cold":
        print("warm-up: cold reference, cold Kiln", flush=True)
        results["cold_warmup"] = {"reference": ref_cold(), "kiln": kiln_cold()}
        print(f"  reference {results['cold_warmup']['reference']['to_png_s']:.2f} s, "
              f"kiln {results['cold_warmup']['kiln']['to_png_s']:.2f} s"
              + (" (writing the graph cache)" if cache_args else ""), flush=True)

    server = None
    if a.skip != "warm":
        server = subprocess.Popen([a.python, str(Path(__file__).resolve()), "--ref-server", *ref_common],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = json.loads(server.stdout.readline())
        results["reference_server"] = ready
        print(f"reference server: load {ready['model_load_s']:.2f} s, warm-up image {ready['first_image_s']:.2f} s",
              flush=True)
        kw = kiln_warm()  # Kiln's warm-up process
        results["kiln_warmup"] = kw
        print(f"kiln warm-up process: warm image {kw['image_s']:.3f} s", flush=True)

    for i in range(a.pairs):
        if server is not None:
            server.stdin.write("gen\n")
            server.stdin.flush()
            rw = json.loads(server.stdout.readline())
            rw["loadavg"] = loadavg()
            kw = kiln_warm()
            ratio = kw["image_s"] / rw["image_s"]
            results["warm"].append({"reference": rw, "kiln": kw, "ratio": ratio})
            b = kw["bench"]["warm"]
            print(f"pair {i + 1} warm: reference {rw['image_s']:.3f} s (overhead {rw['overhead_pct']:.1f} %), "
                  f"kiln {kw['image_s']:.3f} s (overhead {b['kiln_overhead_pct']:.1f} %), "
                  f"kiln/ref {ratio:.3f}  load {loadavg()}", flush=True)
        if a.skip != "cold":
            rc = ref_cold()
            ku = kiln_cold(kiln_baseline_cmd) if baseline else None
            kc = kiln_cold()
            ratio = kc["to_png_s"] / rc["to_png_s"]
            rss = kc["maxrss_mib"] / rc["maxrss_mib"]
            entry = {"reference": rc, "kiln": kc, "ratio": ratio, "rss_ratio": rss}
            extra = ""
            if ku is not None:
                entry.update({"kiln_baseline": ku, "ratio_baseline": ku["to_png_s"] / rc["to_png_s"],
                              "over_baseline": kc["to_png_s"] / ku["to_png_s"],
                              "rss_over_baseline": kc["maxrss_mib"] / ku["maxrss_mib"]})
                extra = (f", baseline {ku['to_png_s']:.2f} s ({ku['maxrss_mib']:.0f} MiB, kiln/ref "
                         f"{entry['ratio_baseline']:.3f}), kiln/baseline {entry['over_baseline']:.3f}")
            results["cold"].append(entry)
            print(f"pair {i + 1} cold: reference {rc['to_png_s']:.2f} s ({rc['maxrss_mib']:.0f} MiB), "
                  f"kiln {kc['to_png_s']:.2f} s ({kc['maxrss_mib']:.0f} MiB), kiln/ref {ratio:.3f}, "
                  f"rss {rss:.3f}{extra}  load {loadavg()}", flush=True)
    if server is not None:
        server.stdin.write("quit\n")
        server.stdin.flush()
        server.wait(timeout=120)

    results["loadavg"]["end"] = loadavg()
    results["elapsed_s"] = time.perf_counter() - t_start
    W, C = results["warm"], results["cold"]
    summary = {}
    if W:
        summary["warm"] = {
            "reference_image_s_median": med([w["reference"]["image_s"] for w in W]),
            "kiln_image_s_median": med([w["kiln"]["image_s"] for w in W]),
            "ratio_per_pair": [w["ratio"] for w in W],
            "ratio_median": med([w["ratio"] for w in W]),
            "reference_overhead_pct_median": med([w["reference"]["overhead_pct"] for w in W]),
            "kiln_overhead_pct_median": med([w["kiln"]["bench"]["warm"]["kiln_overhead_pct"] for w in W]),
            "reference_unet_s_median": med([w["reference"]["stages"].get("unet", {}).get("s") for w in W]),
            "kiln_unet_s_median": med([w["kiln"]["bench"]["warm"]["unet"]["s"] for w in W]),
            "reference_server_peak_rss_mib": W[-1]["reference"]["peak_rss_mib"],
            "kiln_bench_peak_rss_mib_median": med([w["kiln"]["bench"]["peak_rss_mib"] for w in W]),
        }
        ru = summary["warm"]["reference_unet_s_median"]
        if ru:
            summary["warm"]["unet_ratio_median"] = med(
                [w["kiln"]["bench"]["warm"]["unet"]["s"] / w["reference"]["stages"]["unet"]["s"] for w in W])
    if C:
        summary["cold"] = {
            "reference_to_png_s_median": med([c["reference"]["to_png_s"] for c in C]),
            "kiln_to_png_s_median": med([c["kiln"]["to_png_s"] for c in C]),
            "ratio_per_pair": [c["ratio"] for c in C],
            "ratio_median": med([c["ratio"] for c in C]),
            "reference_maxrss_mib_median": med([c["reference"]["maxrss_mib"] for c in C]),
            "kiln_maxrss_mib_median": med([c["kiln"]["maxrss_mib"] for c in C]),
            "rss_ratio_per_pair": [c["rss_ratio"] for c in C],
            "rss_ratio_median": med([c["rss_ratio"] for c in C]),
        }
        if baseline:
            summary["cold"].update({
                "kiln_baseline_to_png_s_median": med([c["kiln_baseline"]["to_png_s"] for c in C]),
                "ratio_baseline_per_pair": [c["ratio_baseline"] for c in C],
                "ratio_baseline_median": med([c["ratio_baseline"] for c in C]),
                "over_baseline_per_pair": [c["over_baseline"] for c in C],
                "over_baseline_median": med([c["over_baseline"] for c in C]),
                "kiln_baseline_maxrss_mib_median": med([c["kiln_baseline"]["maxrss_mib"] for c in C]),
                "rss_over_baseline_median": med([c["rss_over_baseline"] for c in C]),
                "warmup_kiln_to_png_s": results["cold_warmup"]["kiln"]["to_png_s"],
            })
    results["summary"] = summary
    for w in W:  # keep the files small: drop the big bench copies' repeated fields
        w["kiln"]["bench"].pop("model", None)

    out_dir = REPO / "bench"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    md = render_md(results)
    (out_dir / f"{name}.md").write_text(md)
    print()
    print(md)


def render_md(r: dict) -> str:
    m, c, s = r["machine"], r["config"], r["summary"]
    L = [f"# {r['name']}", "",
         f"{c['size']}x{c['size']}, {c['steps']} steps, guidance {c['guidance']:g}, Euler, {c['threads']} intra-op threads, "
         f"provider {c.get('provider', 'cpu')}, "
         f"model `{c['model']}`. Kiln / reference ratios: < 1 means Kiln is faster (or smaller).", "",
         f"- machine: {m['cpu']}, {m['logical_cpus']} logical CPUs ({m['threads_per_core']} thread(s)/core), "
         f"{m['ram_gib']} GiB RAM, Linux {m['kernel']}",
         f"- ONNX Runtime {m.get('onnxruntime', m['packages']['onnxruntime'])} on both sides, inter-op 1, spinning off; "
         f"optimum-onnx {m['packages']['optimum-onnx']}, diffusers {m['packages']['diffusers']}, Python {m['python']}",
         f"- Kiln {m['kiln_git']}; run started {r['started']}, took {r['elapsed_s']:.0f} s; "
         f"load average at start {r['loadavg']['start']}, at end {r['loadavg']['end']}",
         f"- command: `{r['command']}`"]
    if r.get("note"):
        L.append(f"- note: {r['note']}")
    L.append("")
    if r["warm"]:
        L += ["## Warm (model loaded, one image)", "",
              "| pair | reference s | Kiln s | Kiln / ref | ref U-Net s | Kiln U-Net s | ref overhead % | Kiln overhead % | load avg |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for i, w in enumerate(r["warm"], 1):
            rw, kb = w["reference"], w["kiln"]["bench"]["warm"]
            L.append(f"| {i} | {rw['image_s']:.3f} | {w['kiln']['image_s']:.3f} | **{w['ratio']:.3f}** | "
                     f"{rw['stages'].get('unet', {}).get('s', 0):.3f} | {kb['unet']['s']:.3f} | "
                     f"{rw['overhead_pct']:.1f} | {kb['kiln_overhead_pct']:.1f} | {w['kiln']['loadavg'][0]:.2f} |")
        sw = s["warm"]
        L += ["", f"Median Kiln / reference: **{sw['ratio_median']:.3f}** (U-Net time only: "
              f"{sw.get('unet_ratio_median', float('nan')):.3f}). Peak RSS: reference server "
              f"{sw['reference_server_peak_rss_mib']:.0f} MiB, Kiln bench process {sw['kiln_bench_peak_rss_mib_median']:.0f} MiB.", ""]
        kb = r["warm"][-1]["kiln"]["bench"]["warm"]
        rs = r["warm"][-1]["reference"]["stages"]
        L += ["Stage breakdown of the last pair (seconds inside ONNX Runtime run calls):", "",
              "| stage | reference calls | reference s | Kiln calls | Kiln s |", "| --- | --- | --- | --- | --- |"]
        for st in ("text_encoder", "unet", "vae_decoder"):
            L.append(f"| {st} | {rs.get(st, {}).get('calls', 0)} | {rs.get(st, {}).get('s', 0):.4f} | "
                     f"{kb[st]['calls']:.0f} | {kb[st]['s']:.4f} |")
        rw = r["warm"][-1]["reference"]
        L.append(f"| outside ONNX Runtime | | {rw['overhead_s']:.4f} ({rw['overhead_pct']:.1f} %) | | "
                 f"{kb['kiln_overhead_s']:.4f} ({kb['kiln_overhead_pct']:.1f} %) |")
        L.append("")
    if r["cold"]:
        L += ["## Cold (process start to PNG written, model load included)", "",
              "| pair | reference s | Kiln s | Kiln / ref | reference peak RSS MiB | Kiln peak RSS MiB | RSS Kiln / ref | load avg |",
              "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for i, cc in enumerate(r["cold"], 1):
            L.append(f"| {i} | {cc['reference']['to_png_s']:.2f} | {cc['kiln']['to_png_s']:.2f} | **{cc['ratio']:.3f}** | "
                     f"{cc['reference']['maxrss_mib']:.0f} | {cc['kiln']['maxrss_mib']:.0f} | {cc['rss_ratio']:.3f} | "
                     f"{cc['kiln']['loadavg'][0]:.2f} |")
        sc = s["cold"]
        ri = [cc["reference"]["inner"] for cc in r["cold"]]
        L += ["", f"Median Kiln / reference: **{sc['ratio_median']:.3f}**; peak RSS ratio median "
              f"**{sc['rss_ratio_median']:.3f}**. Inside the reference process: imports of "
              f"optimum/diffusers + pipeline load {med([x['model_load_s'] for x in ri]):.2f} s, first image + PNG "
              f"{med([x['first_image_s'] for x in ri]):.2f} s.", ""]
        if "ratio_baseline_median" in sc:
            tuned = " ".join(x for x in [f"--graph-cache {c['graph_cache']}" if c.get("graph_cache") else "",
                                         c.get("kiln_args") or ""] if x) or "no extra flags"
            base = c.get("kiln_baseline_args") or "no extra flags, no graph cache"
            L += [f"Before/after in the same run: each pair also ran Kiln's baseline (`{base}`) between the reference "
                  f"and the Kiln of the table (`{tuned}`).", "",
                  "| pair | baseline s | baseline / ref | Kiln / ref | Kiln / baseline | baseline peak RSS MiB | RSS Kiln / baseline |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
            for i, cc in enumerate(r["cold"], 1):
                L.append(f"| {i} | {cc['kiln_baseline']['to_png_s']:.2f} | {cc['ratio_baseline']:.3f} | {cc['ratio']:.3f} | "
                         f"**{cc['over_baseline']:.3f}** | {cc['kiln_baseline']['maxrss_mib']:.0f} | {cc['rss_over_baseline']:.3f} |")
            L += ["", f"Medians: baseline / reference **{sc['ratio_baseline_median']:.3f}**, Kiln / reference "
                  f"**{sc['ratio_median']:.3f}**, Kiln / baseline **{sc['over_baseline_median']:.3f}** (peak RSS "
                  f"{sc['rss_over_baseline_median']:.3f}). The warm-up Kiln run"
                  + (" (which wrote the graph cache)" if c.get("graph_cache") else "")
                  + f" took {sc['warmup_kiln_to_png_s']:.2f} s to its PNG.", ""]
    return "\n".join(L)


if __name__ == "__main__":
    main()
