"""Shared steps of the adapter golden scripts (tools/make_lycoris_fixture.py,
tools/make_dora_fixture.py): a fresh output folder, one golden case run by the
reference pipeline with its controls, and cases.json + README.md.

Every case is run twice (it must be deterministic) and against the plain
fixture; a case whose adapters barely move the final latents is refused, since
a test on it could not fail.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

import make_golden

WIDTH = HEIGHT = 64
NOISE_SEED = 1234
# Smallest relative move of the final latents an adapter (or a part of it) must cause.
MIN_EFFECT = 2e-2


def output_folder(doc: str, default: Path) -> Path:
    """`--out` (default `default`), emptied; also keeps the hub offline."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--out", default=str(default))
    out = Path(ap.parse_args().out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    return out


def noise() -> np.ndarray:
    return np.random.default_rng(NOISE_SEED).standard_normal((1, 4, 8, 8)).astype(np.float32)


def reference_setup():
    """What every case of an adapter golden script runs against: the golden
    noise, the plain fixture's reference pipeline and its scheduler config."""
    plain = make_golden.load_pipe(Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "tiny-sd")
    return noise(), plain, dict(plain.scheduler.config)


def relative_move(a: dict, b: dict) -> float:
    return float(np.abs(a["latents"] - b["latents"]).max() / np.abs(b["latents"]).max())


def golden_case(out: Path, ref, plain, base_config, case, noise_draws, loras: list[dict], controls: dict | None = None) -> dict:
    """Runs `case` (make_golden's tuple) on `ref`, saves its latents and image
    under its name in `out`, and returns its cases.json entry. `controls` maps
    an entry key to another pipeline whose output must be MIN_EFFECT away too
    (e.g. the same factors without a DoRA magnitude)."""
    name, kiln, cls, steps, guidance, prompt, negative = case
    r1 = make_golden.run_case(ref, base_config, case, noise_draws)
    r2 = make_golden.run_case(ref, base_config, case, noise_draws)
    if not np.array_equal(r1["latents"], r2["latents"]):
        raise SystemExit(f"{name}: not deterministic")
    effects = {"latent_effect": relative_move(make_golden.run_case(plain, base_config, case, noise_draws), r1)}
    for key, pipe in (controls or {}).items():
        effects[key] = relative_move(make_golden.run_case(pipe, base_config, case, noise_draws), r1)
    print(f"{name}: final latents moved relative to the golden by " + ", ".join(f"{k} {v:.3e}" for k, v in effects.items()) + " (test bound 1e-3)")
    if min(effects.values()) < MIN_EFFECT:
        raise SystemExit(f"{name}: {effects}: the adapter barely changes the output; a test could not fail")
    np.save(out / f"{name}.latents.npy", r1["latents"])
    np.save(out / f"{name}.image.npy", r1["image"])
    return make_golden.jsonable({
        "name": name, "kiln_scheduler": kiln, "scheduler": cls, "steps": steps, "guidance_scale": guidance,
        "prompt": prompt, "negative_prompt": negative, "width": WIDTH, "height": HEIGHT,
        "loras": loras,
        "scheduler_config": r1["meta"]["scheduler_config"],
        "unet_timestep_feed": r1["meta"]["unet_timestep_feed"],
        **effects,
        "files": {"latents": f"{name}.latents.npy", "image": f"{name}.image.npy"},
    })


def write_index(out: Path, cases_json: list[dict], noise_draws: np.ndarray, title: str, script: str, extra_versions: dict | None = None) -> None:
    """cases.json, the noise file and a README naming the script and versions."""
    import peft

    np.save(out / "noise_1x4x8x8.npy", noise_draws)
    (out / "cases.json").write_text(json.dumps(cases_json, indent=1) + "\n")
    v = make_golden.versions()
    v["peft"] = peft.__version__
    v.update(extra_versions or {})
    (out / "README.md").write_text(
        f"# {title}\n\nMade by `{script}` (see its docstring):\n\n"
        f"    /work/venv/bin/python {script}\n\n## Versions\n\n"
        + "".join(f"- {k} {val}\n" for k, val in v.items())
    )
    print("wrote", out)
