#!/usr/bin/env python3
"""Golden for an SDXL textual-inversion embedding through the base-to-refiner
hand-off: the token means the same thing to both stages.

Both PyTorch pipelines get tests/fixtures/sdxl-embedding/xl-brick.safetensors as
diffusers documents: the tiny SDXL base (tools/make_sdxl_lora_fixture.py
build_torch_pipe, the committed fixture's weights, checked) its `clip_l` into
text_encoder and `clip_g` into text_encoder_2; the refiner
(tools/make_sdxl_refiner_fixture.py build_pipeline, checked against the committed
refiner) its `clip_g` into its one encoder, text_encoder_2. Each is exported by
optimum's main_export and run as diffusers' "ensemble of expert denoisers"
(tools/handoff_golden.py two_stages: ORTStableDiffusionXLPipeline with
`denoising_end=f, output_type="latent"`, then ORTStableDiffusionXLImg2ImgPipeline
with `denoising_start=f`), every random draw recorded.

Checked here: the runs are deterministic, and the refiner's embedding matters:
the same hand-off to the plain refiner (the token's text split into ordinary
tokens there) with the same draws lands at least 2e-2 away.

Writes tests/fixtures/golden/sdxl_embedding_handoff/<case>.{handoff,latents,image,draws}.npy
and cases.json.

    /work/venv/bin/python tools/make_sdxl_embedding_handoff_golden.py
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import handoff_golden  # noqa: E402
import make_sdxl_golden as sdxl_golden  # noqa: E402
import make_sdxl_handoff_golden as handoff  # noqa: E402
import make_sdxl_refiner_embedding_golden as refiner_embedding  # noqa: E402
import make_sdxl_refiner_fixture as refiner  # noqa: E402
from adapter_golden import relative_move  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/golden/sdxl_embedding_handoff"
EMBEDDING = ROOT / "tests/fixtures/sdxl-embedding/xl-brick.safetensors"
TOKEN = "<xl-brick>"
PROMPT = "<xl-brick> wall, mossy"
# A hand-off early enough that the refiner's reading of the prompt shows.
# name, kiln scheduler, steps, guidance, hand-off fraction, kwargs for both pipelines
CASES = [
    ("embedding_euler_01", "euler", 10, 12.0, 0.1, {"negative_prompt": "blurry"}),
]


def run(base_folder, refiner_folder, kiln, steps, guidance, split, kwargs):
    return handoff.run(base_folder, refiner_folder, kiln, steps, guidance, split, kwargs, prompt=PROMPT)


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from safetensors.torch import load_file

    from make_sdxl_lora_fixture import build_torch_pipe, check_same_weights_as_fixture, export

    state = load_file(str(EMBEDDING))
    with tempfile.TemporaryDirectory(prefix="kiln_embedding_handoff_") as tmp:
        tmp = Path(tmp)
        base = build_torch_pipe()
        check_same_weights_as_fixture(base)
        base.load_textual_inversion(state["clip_l"], token=TOKEN, text_encoder=base.text_encoder, tokenizer=base.tokenizer)
        base.load_textual_inversion(state["clip_g"], token=TOKEN, text_encoder=base.text_encoder_2, tokenizer=base.tokenizer_2)
        base_onnx = export(base, tmp, "base")

        plain_refiner = refiner.assemble(refiner.DEFAULT_OUT, tmp / "refiner")
        ref = refiner.build_pipeline()
        refiner.check_export(ref, plain_refiner, plain_refiner)
        ref.load_textual_inversion(state["clip_g"], token=TOKEN, text_encoder=ref.text_encoder_2, tokenizer=ref.tokenizer_2)
        (tmp / "embedded_refiner").mkdir()
        refiner_onnx = refiner_embedding.export(ref, tmp / "embedded_refiner")

        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        index = []
        for name, kiln, steps, guidance, split, kwargs in CASES:
            a = run(base_onnx, refiner_onnx, kiln, steps, guidance, split, kwargs)
            b = run(base_onnx, refiner_onnx, kiln, steps, guidance, split, kwargs)
            for k in handoff_golden.ARRAYS:
                if not np.array_equal(a[k], b[k]):
                    raise SystemExit(f"{name}: {k} not deterministic")
            p = run(base_onnx, plain_refiner, kiln, steps, guidance, split, kwargs)
            if not (np.array_equal(p["draws"], a["draws"]) and np.array_equal(p["handoff"], a["handoff"])):
                raise SystemExit(f"{name}: the plain refiner's run drew other noise or got other latents")
            effect = relative_move(p, a)
            print(f"{name}: the refiner's embedding moves the final latents by {effect:.3e} relative (test bound 1e-3)")
            if effect < 2e-2:
                raise SystemExit(f"{name}: the refiner's embedding barely matters; a test could not fail")
            for k in handoff_golden.ARRAYS:
                np.save(OUT / f"{name}.{k}.npy", a[k])
            index.append({
                "name": name, "kiln_scheduler": kiln, "scheduler": sdxl_golden.SCHEDULERS[kiln][0],
                "steps": steps, "guidance_scale": guidance, "refiner_start": split, "prompt": PROMPT,
                "token": TOKEN, "file": "../../sdxl-embedding/xl-brick.safetensors",
                "base_timesteps": a["base_t"], "refiner_timesteps": a["refiner_t"],
                "draws_len": int(a["draws"].size), "refiner_embedding_effect": effect, **kwargs,
            })
            print(name, "base", a["base_t"], "refiner", a["refiner_t"], "draws", a["draws"].size)
    (OUT / "cases.json").write_text(json.dumps(index, indent=1) + "\n")
    print("wrote", OUT, sum(p.stat().st_size for p in OUT.iterdir()), "bytes")


if __name__ == "__main__":
    main()
