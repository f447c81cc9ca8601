#!/usr/bin/env python3
"""Golden for an SDXL textual-inversion embedding on the refiner-style fixture.

A refiner-style export has `text_encoder_2` as its one encoder, so of an SDXL
embedding file (tests/fixtures/sdxl-embedding/xl-brick.safetensors: `clip_l`
and `clip_g`) only `clip_g` applies, as diffusers loads it into a refiner:
`load_textual_inversion(state["clip_g"], token=T, text_encoder=pipe.text_encoder_2,
tokenizer=pipe.tokenizer_2)`.

The PyTorch refiner (tools/make_sdxl_refiner_fixture.py build_pipeline, whose
U-Net is checked against the committed fixture's) gets the embedding that way;
the pipeline (grown token table, tokenizer_2 with the added tokens) is exported
by optimum's main_export (task image-to-image) and run by
ORTStableDiffusionXLImg2ImgPipeline with every random draw recorded
(tools/make_sdxl_refiner_golden.py run). Checked here: tokenizer_2 turns the
prompt into ids holding both vectors of the token; the run is deterministic;
the embedding moves the final latents by far more than the test tolerance
(against the same prompt without the token, same draws).

Writes tests/fixtures/golden/sdxl_refiner_embedding/<case>.{latents,image,draws}.npy
and cases.json.

    /work/venv/bin/python tools/make_sdxl_refiner_embedding_golden.py
"""
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_sdxl_refiner_fixture as refiner  # noqa: E402
from adapter_golden import relative_move  # noqa: E402
import make_sdxl_refiner_golden as refiner_golden  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/golden/sdxl_refiner_embedding"
EMBEDDING = ROOT / "tests/fixtures/sdxl-embedding/xl-brick.safetensors"
TOKEN = "<xl-brick>"
PROMPT = "<xl-brick> wall, mossy"
PLAIN_PROMPT = "wall, mossy"
# name, kiln scheduler, steps, guidance, pipeline kwargs (as make_sdxl_refiner_golden's)
CASES = [
    ("embedding_euler", "euler", 10, 5.0, {"strength": 0.5, "negative_prompt": "blurry"}),
]


def export(pipe, tmp: Path) -> Path:
    """The refiner with its grown encoder as an optimum export (image-to-image)."""
    from optimum.exporters.onnx import main_export

    pt_dir, onnx_dir = tmp / "pt", tmp / "onnx"
    pipe.save_pretrained(str(pt_dir), safe_serialization=True)
    main_export(str(pt_dir), output=str(onnx_dir), task="image-to-image", device="cpu", do_validation=True,
                local_files_only=True)
    assert not (onnx_dir / "text_encoder").exists()
    return onnx_dir


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from safetensors.torch import load_file

    pipe = refiner.build_pipeline()
    # The U-Net is the committed fixture's (same seeds): checked on its graph.
    with tempfile.TemporaryDirectory(prefix="kiln_refiner_embedding_") as tmp:
        tmp = Path(tmp)
        folder = refiner.assemble(refiner.DEFAULT_OUT, tmp / "fixture")
        refiner.check_export(pipe, folder, folder)
        state = load_file(str(EMBEDDING))
        print(f"embedding: clip_g {tuple(state['clip_g'].shape)} into text_encoder_2 (clip_l {tuple(state['clip_l'].shape)} unused)")
        pipe.load_textual_inversion(state["clip_g"], token=TOKEN, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
        onnx_dir = export(pipe, tmp)

        from optimum.onnxruntime import ORTStableDiffusionXLImg2ImgPipeline

        ref = ORTStableDiffusionXLImg2ImgPipeline.from_pretrained(str(onnx_dir), provider="CPUExecutionProvider",
                                                                  local_files_only=True)
        expanded = ref.maybe_convert_prompt(PROMPT, ref.tokenizer_2)
        ids = ref.tokenizer_2(expanded, padding="max_length", max_length=77, truncation=True).input_ids
        print(f"tokenizer_2: {PROMPT!r} -> {expanded!r} -> {ids[:8]}")
        if len([i for i in ids if i >= 49408]) != 2:
            raise SystemExit("tokenizer_2: both embedding vectors should be in the prompt ids")
        del ref

        init = Image.open(ROOT / "tests/fixtures/golden/ddim_cfg.png").convert("RGB")
        if OUT.exists():
            shutil.rmtree(OUT)
        OUT.mkdir(parents=True)
        cases = []
        for name, kiln, steps, guidance, kwargs in CASES:
            refiner_golden.PROMPT = PROMPT
            a = refiner_golden.run(onnx_dir, kiln, steps, guidance, kwargs, init)
            b = refiner_golden.run(onnx_dir, kiln, steps, guidance, kwargs, init)
            for k in ("latents", "image", "draws"):
                if not np.array_equal(a[k], b[k]):
                    raise SystemExit(f"{name}: {k} not deterministic")
            refiner_golden.PROMPT = PLAIN_PROMPT
            p = refiner_golden.run(onnx_dir, kiln, steps, guidance, kwargs, init)
            if not np.array_equal(p["draws"], a["draws"]):
                raise SystemExit(f"{name}: the run without the token drew other noise")
            effect = relative_move(p, a)
            print(f"{name}: the embedding moves the final latents by {effect:.3e} relative (test bound 1e-3)")
            if effect < 2e-2:
                raise SystemExit(f"{name}: the embedding barely changes the output; a test could not fail")
            for k in ("latents", "image", "draws"):
                np.save(OUT / f"{name}.{k}.npy", a[k])
            cases.append({
                "name": name, "kiln_scheduler": kiln, "steps": steps, "guidance_scale": guidance,
                "prompt": PROMPT, "plain_prompt": PLAIN_PROMPT, "token": TOKEN,
                "file": "../../sdxl-embedding/xl-brick.safetensors", "init_image": "../ddim_cfg.png",
                "unet_timesteps": a["timesteps"], "input_ids_2": ids[:8], "latent_effect": effect, **kwargs,
            })
    (OUT / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    print("wrote", OUT, sum(p.stat().st_size for p in OUT.iterdir()), "bytes")


if __name__ == "__main__":
    main()
