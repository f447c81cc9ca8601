#!/usr/bin/env python3
"""Quality report of kiln-tiny-textures, made by Kiln itself (examples/generate --batch).

For every texture family it generates images from captions the model never saw in training
(tools/texture_dataset.py holds ~12 % of the caption grammar out), then a small classifier trained
only on procedural images (never on generated ones) names each image's family. It also measures the
seam score with and without `--seamless xy` and the generation time per image at 64, 128 and 256 px,
and draws the contact sheet (one row per family) and a 2x2 tiling for the README.

    python tools/evaluate_default_model.py                 # writes docs/default-model/
    python tools/evaluate_default_model.py --sweep         # compare samplers/guidance on a subset
    python tools/evaluate_default_model.py --quantize-gate # int8 weights against float (quantize.md)

Needs the training venv (torch) for the classifier; it trains the classifier itself (a few minutes,
tools/train_default_model.py --stages data,classifier) when --work has none.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent))
import texture_dataset as TD  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
GENERATE = REPO / "target" / "release" / "examples" / "generate"


def heldout_prompts(per_family):
    """(family index, caption, seed) triples: per_family per family, cycling its held-out captions."""
    out = []
    for f, fam in enumerate(TD.FAMILIES):
        caps = sorted(c[0] for c in TD.caption_choices(fam) if TD.held_out(c[0]))
        for j in range(per_family):
            out.append((f, caps[j % len(caps)], 1000 + j))
    return out


def run_batch(model, items, out_dir, flags):
    """Generates every (caption, seed) with one Kiln process; returns per-image seconds and paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tsv = out_dir / "batch.tsv"
    paths = []
    with open(tsv, "w") as f:
        for i, (cap, seed) in enumerate(items):
            p = out_dir / f"{i:04d}.png"
            paths.append(p)
            f.write(f"{p}\t{seed}\t{cap}\n")
    cmd = [str(GENERATE), "--model", str(model), "--batch", str(tsv)] + flags
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"generate failed: {' '.join(cmd)}\n{res.stderr[-2000:]}")
    secs = [float(m) for m in re.findall(r"\) in ([0-9.]+)s", res.stdout)]
    return paths, secs


def load(paths):
    return np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])


def classify(work, images):
    import torch
    import train_default_model as TR

    clf = TR.load_classifier(work)
    x = TR.to_tensor(images)
    return TR.classify(clf, x).numpy()


def seam_score(img, axis):
    """Mean |difference| across the wrap edge / mean |difference| between adjacent interior lines."""
    a = img.astype(np.float64)
    if axis == "x":
        edge = np.abs(a[:, 0] - a[:, -1]).mean()
        inner = np.abs(np.diff(a, axis=1)).mean()
    else:
        edge = np.abs(a[0] - a[-1]).mean()
        inner = np.abs(np.diff(a, axis=0)).mean()
    return float(edge / max(inner, 1e-9))


def contact_sheet(images, families, per_row, scale, path):
    h, w = images.shape[1:3]
    label_w = 110
    sheet = Image.new("RGB", (label_w + per_row * w * scale, len(TD.FAMILIES) * h * scale), "white")
    draw = ImageDraw.Draw(sheet)
    for f, fam in enumerate(TD.FAMILIES):
        idx = [i for i in range(len(families)) if families[i] == f][:per_row]
        draw.text((6, f * h * scale + h * scale // 2 - 6), fam.key, fill="black")
        for c, i in enumerate(idx):
            tile = Image.fromarray(images[i]).resize((w * scale, h * scale), Image.NEAREST)
            sheet.paste(tile, (label_w + c * w * scale, f * h * scale))
    sheet.save(path)


def ensure_generate():
    subprocess.run(["cargo", "build", "--release", "--example", "generate"], cwd=REPO, check=True)


def ensure_classifier(work):
    if not (Path(work) / "classifier.pt").exists():
        subprocess.run([sys.executable, str(REPO / "tools" / "train_default_model.py"), "--work", str(work), "--stages", "data,classifier"], check=True)


def sampler_flags(a):
    return ["--steps", str(a.steps), "--guidance", str(a.guidance), "--scheduler", a.scheduler]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(REPO / "models" / "kiln-tiny-textures"))
    ap.add_argument("--work", default=os.environ.get("KILN_TRAIN_DIR", "/work/kiln-train"))
    ap.add_argument("--out", default=str(REPO / "docs" / "default-model"))
    ap.add_argument("--per-family", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--scheduler", default="default")
    ap.add_argument("--sweep", action="store_true", help="compare sampler settings on 4 images per family")
    ap.add_argument("--no-build", action="store_true", help="use target/release/examples/generate as it is")
    ap.add_argument("--quantize-gate", action="store_true", help="int8 weights against float on the held-out prompts; writes quantize.md")
    a = ap.parse_args()
    work = Path(a.work)
    if not a.no_build:
        ensure_generate()
    ensure_classifier(work)

    if a.quantize_gate:
        quantize_gate(a, work)
        return

    if a.sweep:
        prompts = heldout_prompts(4)
        truth = np.array([p[0] for p in prompts])
        for sched, steps, g in [("default", 20, 7.5), ("default", 20, 4.0), ("dpmpp_2m", 20, 5.0), ("euler_a", 20, 5.0), ("ddim", 10, 5.0), ("dpmpp_2m", 12, 3.0)]:
            with tempfile.TemporaryDirectory() as tmp:
                paths, secs = run_batch(a.model, [(c, s) for _, c, s in prompts], Path(tmp), ["--steps", str(steps), "--guidance", str(g), "--scheduler", sched, "--seamless", "xy"])
                acc = float((classify(work, load(paths)) == truth).mean())
            print(f"{sched:10s} steps {steps:3d} guidance {g:4.1f}: accuracy {acc:.3f}  ({statistics.median(secs):.3f} s/image)", flush=True)
        return

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    prompts = heldout_prompts(a.per_family)
    truth = np.array([p[0] for p in prompts])
    report = {"model": str(Path(a.model).resolve().relative_to(REPO)) if str(a.model).startswith(str(REPO)) else a.model,
              "sampler": {"scheduler": a.scheduler, "steps": a.steps, "guidance": a.guidance},
              "images_per_family": a.per_family, "families": TD.FAMILY_KEYS}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        results = {}
        for mode, extra in (("seamless_xy", ["--seamless", "xy"]), ("plain", [])):
            paths, secs = run_batch(a.model, [(c, s) for _, c, s in prompts], tmp / mode, sampler_flags(a) + extra)
            imgs = load(paths)
            pred = classify(work, imgs)
            per_family = {TD.FAMILIES[f].key: float((pred[truth == f] == f).mean()) for f in range(len(TD.FAMILIES))}
            confusion = np.zeros((len(TD.FAMILIES),) * 2, int)
            for t, p in zip(truth, pred):
                confusion[t, p] += 1
            seams = {ax: float(np.mean([seam_score(im, ax) for im in imgs])) for ax in ("x", "y")}
            results[mode] = {"accuracy": float((pred == truth).mean()), "per_family": per_family, "seam_score": seams,
                             "median_seconds_per_image_64px": statistics.median(secs[1:] or secs), "confusion": confusion.tolist()}
            if mode == "seamless_xy":
                contact_sheet(imgs, truth, 8, 2, out / "contact-sheet.png")
                examples = [{"prompt": c, "seed": s, "predicted": TD.FAMILY_KEYS[p]} for (f, c, s), p in zip(prompts, pred)]
                report["examples"] = examples
            print(mode, json.dumps({k: v for k, v in results[mode].items() if k != "confusion"}), flush=True)
        report["results"] = results
        # time per image at the sizes a game would use (first image of each batch is a warm-up)
        timing = {}
        for size in (64, 128, 256):
            items = [("mossy red brick wall", 1 + i) for i in range(5)]
            _, secs = run_batch(a.model, items, tmp / f"t{size}", sampler_flags(a) + ["--seamless", "xy", "--width", str(size), "--height", str(size)])
            timing[f"{size}px"] = statistics.median(secs[1:])
        report["seconds_per_image"] = timing
        report["machine"] = f"{os.cpu_count()} CPU cores ({platform_cpu()}), Kiln CLI, ONNX Runtime CPU provider"
        print("timing", timing, flush=True)
        # the README's picture: the first command's texture, tiled 2x2
        p, _ = run_batch(a.model, [("mossy stone brick wall", 7)], tmp / "readme", sampler_flags(a) + ["--seamless", "xy"])
        tex = Image.open(p[0]).convert("RGB")
        tiled = Image.new("RGB", (tex.width * 2, tex.height * 2))
        for dy in (0, 1):
            for dx in (0, 1):
                tiled.paste(tex, (dx * tex.width, dy * tex.height))
        tiled.resize((tiled.width * 3, tiled.height * 3), Image.NEAREST).save(out / "brick-tiled-2x2.png")
        report["readme_texture_seam_score"] = {ax: seam_score(np.asarray(tex), ax) for ax in ("x", "y")}
    json.dump(report, open(out / "quality.json", "w"), indent=1)
    write_markdown(report, out / "quality.md")
    print("wrote", out)


def ssim(a, b):
    """Mean SSIM (Wang et al. 2004: Gaussian window sigma 1.5, 11 taps; K1 0.01, K2 0.03;
    data range 255) over the RGB channels of two uint8 images."""
    from scipy.ndimage import gaussian_filter

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    out = []
    for ch in range(3):
        x, y = a[..., ch].astype(np.float64), b[..., ch].astype(np.float64)
        blur = lambda v: gaussian_filter(v, 1.5, truncate=3.5, mode="wrap")  # noqa: E731 (textures tile)
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        out.append(((2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))).mean())
    return float(np.mean(out))


# The gate: int8 keeps the float model's family accuracy within this many points,
# and its pictures stay this close to the float ones at the same seed.
GATE_ACCURACY_POINTS = 5.0
GATE_MEAN_SSIM = 0.90


def quantize_gate(a, work):
    """int8 weights (`--quantize int8`) against float, same held-out prompts and seeds,
    the report's sampler with --seamless xy: family accuracy of each, SSIM and mean
    |difference| between each pair of pictures, seam score of the int8 ones. Writes
    quantize.json and quantize.md to --out; exits 1 when the gate fails."""
    out = Path(a.out)
    prompts = heldout_prompts(a.per_family)
    truth = np.array([p[0] for p in prompts])
    items = [(c, s) for _, c, s in prompts]
    flags = sampler_flags(a) + ["--seamless", "xy"]
    with tempfile.TemporaryDirectory() as tmp:
        fp, fsecs = run_batch(a.model, items, Path(tmp) / "float", flags)
        qp, qsecs = run_batch(a.model, items, Path(tmp) / "int8", flags + ["--quantize", "int8"])
        f_imgs, q_imgs = load(fp), load(qp)
    f_acc = float((classify(work, f_imgs) == truth).mean())
    q_acc = float((classify(work, q_imgs) == truth).mean())
    ssims = [ssim(x, y) for x, y in zip(f_imgs, q_imgs)]
    diffs = [float(np.abs(x.astype(np.float64) - y.astype(np.float64)).mean()) for x, y in zip(f_imgs, q_imgs)]
    seams = {ax: float(np.mean([seam_score(im, ax) for im in q_imgs])) for ax in ("x", "y")}
    r = {
        "sampler": {"scheduler": a.scheduler, "steps": a.steps, "guidance": a.guidance, "seamless": "xy"},
        "images": len(items),
        "accuracy": {"float": f_acc, "int8": q_acc},
        "ssim": {"mean": float(np.mean(ssims)), "min": float(np.min(ssims)), "p10": float(np.percentile(ssims, 10))},
        "mean_abs_difference_8bit": {"mean": float(np.mean(diffs)), "max": float(np.max(diffs))},
        "int8_seam_score": seams,
        "median_seconds_per_image_64px": {"float": statistics.median(fsecs[1:]), "int8": statistics.median(qsecs[1:])},
        "gate": {"accuracy_points": GATE_ACCURACY_POINTS, "mean_ssim": GATE_MEAN_SSIM},
    }
    passed = (f_acc - q_acc) * 100 <= GATE_ACCURACY_POINTS and r["ssim"]["mean"] >= GATE_MEAN_SSIM
    r["gate"]["passed"] = passed
    json.dump(r, open(out / "quantize.json", "w"), indent=1)
    lines = [
        "# kiln-tiny-textures: int8 weights against float",
        "",
        f"Made by `tools/evaluate_default_model.py --quantize-gate`: the quality report's {len(items)} held-out prompts and seeds, "
        f"sampler `{a.scheduler}`, {a.steps} steps, guidance {a.guidance}, `--seamless xy`, once as exported and once with "
        "`--quantize int8` (the text encoder's and U-Net's matrix weights as int8, ONNX Runtime's dynamic quantization).",
        "",
        "| | float | int8 |",
        "| --- | ---: | ---: |",
        f"| family accuracy | {f_acc * 100:.1f} % | {q_acc * 100:.1f} % |",
        f"| seam score x / y | | {seams['x']:.2f} / {seams['y']:.2f} |",
        f"| median seconds per 64 px image | {r['median_seconds_per_image_64px']['float']:.3f} | {r['median_seconds_per_image_64px']['int8']:.3f} |",
        "",
        f"Same seed, float against int8: SSIM mean {r['ssim']['mean']:.3f} (10th percentile {r['ssim']['p10']:.3f}, "
        f"lowest {r['ssim']['min']:.3f}); mean |difference| {r['mean_abs_difference_8bit']['mean']:.2f} of 255 "
        f"(largest image {r['mean_abs_difference_8bit']['max']:.2f}).",
        "",
        f"Gate: int8 accuracy at most {GATE_ACCURACY_POINTS:.0f} points below float, and mean SSIM at least {GATE_MEAN_SSIM}: "
        f"**{'passed' if passed else 'FAILED'}**.",
    ]
    (out / "quantize.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    if not passed:
        raise SystemExit(1)


def platform_cpu():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def write_markdown(r, path):
    s, p = r["results"]["seamless_xy"], r["results"]["plain"]
    lines = [
        "# kiln-tiny-textures: quality report",
        "",
        f"Made by `tools/evaluate_default_model.py` with Kiln's own CLI (`generate --batch`): sampler `{r['sampler']['scheduler']}`, "
        f"{r['sampler']['steps']} steps, guidance {r['sampler']['guidance']}, {r['images_per_family']} images per family from captions "
        "held out of training; the family of each image is named by a classifier trained only on procedural images.",
        "",
        f"**Family accuracy: {s['accuracy'] * 100:.1f} % with `--seamless xy`, {p['accuracy'] * 100:.1f} % without.**",
        "",
        "| family | accuracy (seamless xy) | accuracy (plain) |",
        "| --- | ---: | ---: |",
    ]
    for k in r["families"]:
        lines.append(f"| {k} | {s['per_family'][k] * 100:.0f} % | {p['per_family'][k] * 100:.0f} % |")
    lines += [
        "",
        "Seam score (mean |difference| across the wrap edge ÷ mean |difference| between adjacent interior "
        "columns or rows; 1.0 = the seam is as smooth as any interior line):",
        "",
        "| mode | x | y |",
        "| --- | ---: | ---: |",
        f"| `--seamless xy` | {s['seam_score']['x']:.2f} | {s['seam_score']['y']:.2f} |",
        f"| plain | {p['seam_score']['x']:.2f} | {p['seam_score']['y']:.2f} |",
        "",
        f"Generation time per image (median, model loaded, {r['machine']}):",
        "",
        "| size | seconds |",
        "| --- | ---: |",
    ]
    for k, v in r["seconds_per_image"].items():
        lines.append(f"| {k} | {v:.3f} |")
    lines += ["", "![contact sheet: one row per family](contact-sheet.png)", ""]
    Path(path).write_text("\n".join(lines))


if __name__ == "__main__":
    main()
