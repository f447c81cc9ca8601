#!/usr/bin/env python3
"""LyCORIS files made by LyCORIS itself for tests/fixtures/tiny-sdxl, in the kohya SDXL
layout sd-scripts writes, with goldens from LyCORIS's own rebuild of each layer.

What it makes (in OUT, default tests/fixtures/sdxl-lycoris/):
  sheen.loha.safetensors   LoHa + DoRA (`weight_decompose`), Tucker cores on the 3x3 resnet
                           convs; f32
  knot.lokr.safetensors    LoKr, a Tucker w2 on the convs; f16
  cases.json, <case>.{latents,image,draws}.npy   goldens
  README.md

Both adapt, on the U-Net, every attention projection, ff, proj_in/proj_out, two resnet
convolutions and a time-embedding projection (tools/make_sdxl_lora_fixture.py's
UNET_TARGETS), named in the original SGM naming (`lora_unet_input_blocks_4_1_...`,
`middle_block_2_out_layers_3`, `output_blocks_1_0_emb_layers_1`) as kohya's SDXL
trainer writes them, and q/k/v/out_proj, fc1, fc2 of both text encoders
(`lora_te1_`, `lora_te2_`).

The modules, their seeded factors, DoRA magnitudes and reference weights are
tools/make_lycoris_native_fixture.py's (see its docstring: the weight LyCORIS's
forward uses, checked against that forward). The reference pipeline is the
PyTorch tiny SDXL (tools/make_sdxl_fixture.py, checked against the committed
fixture) with those weights, exported with optimum's main_export and run by
ORTStableDiffusionXLPipeline with every draw recorded (tools/make_sdxl_golden.py run).

Usage (from the repo root):
    /work/venv/bin/python tools/make_sdxl_lycoris_fixture.py [--out tests/fixtures/sdxl-lycoris]
Needs the fixture venv (lycoris-lora included).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import adapter_golden  # noqa: E402
import make_lycoris_native_fixture as native  # noqa: E402
from make_sdxl_lora_fixture import FIXTURE, TE_TARGETS, UNET_TARGETS, build_torch_pipe, check_same_weights_as_fixture, export, sgm_name  # noqa: E402

# file: (algo, dtype, rank, alpha, seed, std, LyCORIS module options)
FILES = {
    "sheen.loha.safetensors": ("loha", "f32", 4, 2.0, 51, 0.25, {"use_tucker": True, "weight_decompose": True}),
    "knot.lokr.safetensors": ("lokr", "f16", 2, 3.0, 52, 0.25, {"use_tucker": True, "decompose_both": False}),
}

# name, kiln scheduler, steps, guidance, file, strength, extra pipeline kwargs
CASES = [
    ("loha_dora_euler", "euler", 6, 5.0, "sheen.loha.safetensors", 1.0, {"negative_prompt": "blurry"}),
    ("lokr_ddim_s07", "ddim", 6, 6.0, "knot.lokr.safetensors", 0.7, {"negative_prompt": "blurry", "prompt_2": "rusty metal plate"}),
]


def kohya_sdxl_parts() -> list:
    """(pipeline part, key prefix, target layers, file name of a module path) as
    kohya's SDXL trainer writes them: SGM U-Net names, `lora_te1_`/`lora_te2_`."""
    lpb = build_torch_pipe().unet.config.layers_per_block
    return [
        ("unet", "lora_unet_", UNET_TARGETS, lambda name: sgm_name(name, lpb)),
        ("text_encoder", "lora_te1_", TE_TARGETS, lambda name: name),
        ("text_encoder_2", "lora_te2_", TE_TARGETS, lambda name: name),
    ]


def golden_case(out: Path, case, ref_dir: Path, controls: dict, entry: dict) -> dict:
    """Runs SDXL `case` (name, kiln scheduler, steps, guidance, kwargs) on the
    reference export `ref_dir` twice (the runs must agree) and on each folder of
    `controls` (effect key → folder; `FIXTURE` for the plain model), which must
    draw the same noise and land `adapter_golden.MIN_EFFECT` away; saves the
    arrays in `out` and returns the cases.json entry, `entry` after the prompt."""
    import make_sdxl_golden

    name, kiln, steps, guidance, kwargs = case

    def run_on(pipe_dir):
        make_sdxl_golden.FIXTURE = str(pipe_dir)
        return make_sdxl_golden.run(name, kiln, steps, guidance, False, kwargs, None)

    ref, again = run_on(ref_dir), run_on(ref_dir)
    for k in ("latents", "image", "draws"):
        if not np.array_equal(ref[k], again[k]):
            raise SystemExit(f"{name}: {k} not deterministic")
    runs = {key: run_on(folder) for key, folder in controls.items()}
    make_sdxl_golden.FIXTURE = str(FIXTURE)
    effects = {}
    for key, r in runs.items():
        if not np.array_equal(r["draws"], ref["draws"]):
            raise SystemExit(f"{name}: the {key} run drew other noise")
        effects[key] = float(np.abs(r["latents"] - ref["latents"]).max() / np.abs(ref["latents"]).max())
    print(f"{name}: final latents moved relative to the golden by " + ", ".join(f"{k} {v:.3e}" for k, v in effects.items()) + " (test bound 1e-3)")
    if min(effects.values()) < adapter_golden.MIN_EFFECT:
        raise SystemExit(f"{name}: {effects}: the adapter barely changes the output; a test could not fail")
    for k in ("latents", "image", "draws"):
        np.save(out / f"{name}.{k}.npy", ref[k])
    return {
        "name": name, "kiln_scheduler": kiln, "steps": steps, "guidance_scale": guidance,
        "prompt": make_sdxl_golden.PROMPT, **entry, "unet_timesteps": ref["timesteps"],
        **effects, **kwargs,
    }


def write_index(out: Path, cases: list, title: str, script: str) -> None:
    """cases.json and a README naming the script and the versions."""
    from importlib.metadata import version

    import make_golden

    (out / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    v = make_golden.versions()
    v["lycoris-lora"] = version("lycoris-lora")
    (out / "README.md").write_text(
        f"# {title}\n\nMade by `{script}` (see its docstring):\n\n"
        f"    /work/venv/bin/python {script}\n\n## Versions\n\n" + "".join(f"- {k} {val}\n" for k, val in v.items())
    )
    print("wrote", out)


def main() -> None:
    out = adapter_golden.output_folder(__doc__, REPO / "tests" / "fixtures" / "sdxl-lycoris")
    check_same_weights_as_fixture(build_torch_pipe())
    parts = kohya_sdxl_parts()
    adapters = {f: native.make_file(out / f, *spec, build=build_torch_pipe, parts=parts) for f, spec in FILES.items()}

    cases = []
    with tempfile.TemporaryDirectory(prefix="kiln_sdxl_lycoris_") as tmp:
        tmp = Path(tmp)
        for name, kiln, steps, guidance, file, strength, kwargs in CASES:
            ref_dir = export(native.merged_pipe([(file, strength)], adapters, build_torch_pipe), tmp, name)
            controls = {"latent_effect": FIXTURE}
            if FILES[file][6].get("weight_decompose"):
                controls["magnitude_effect"] = export(native.without_magnitude(file, adapters, build_torch_pipe), tmp, f"{name}_plain")
            case = (name, kiln, steps, guidance, kwargs)
            cases.append(golden_case(out, case, ref_dir, controls, {"file": file, "scale": strength}))
    write_index(out, cases, "SDXL LyCORIS fixtures (made by LyCORIS) and goldens", "tools/make_sdxl_lycoris_fixture.py")


if __name__ == "__main__":
    main()
