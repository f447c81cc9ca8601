#!/usr/bin/env python3
"""A tiny SDXL textual-inversion embedding for tests/fixtures/tiny-sdxl and an optimum golden for it.

What it makes (in OUT, default tests/fixtures/sdxl-embedding/):
  xl-brick.safetensors   the common SDXL layout (AUTOMATIC1111 / civitai): `clip_l` [2, 8]
                         for text_encoder and `clip_g` [2, 16] for text_encoder_2 (the tiny
                         fixture's encoder widths; real SDXL: 768 and 1280), seeded random
  cases.json, <case>.{latents,image,draws}.npy   goldens
  README.md

Golden: the PyTorch tiny SDXL (tools/make_sdxl_fixture.py build_pipeline, the committed
fixture's weights, checked) gets the embedding as diffusers documents for SDXL:
`load_textual_inversion(state["clip_l"], token=T, text_encoder=pipe.text_encoder,
tokenizer=pipe.tokenizer)` and the same with `clip_g`, text_encoder_2 and tokenizer_2; the
pipeline (grown token tables, tokenizers with the added tokens) is exported by optimum's
main_export and run by ORTStableDiffusionXLPipeline with every random draw recorded
(tools/make_sdxl_golden.py run). Checked here: both tokenizers turn the prompt into ids
with both vectors of the token; the run is deterministic; the embedding moves the final
latents by far more than the test tolerance (vs the same prompt without the token).

Usage (from the repo root):
    /work/venv/bin/python tools/make_sdxl_embedding_fixture.py [--out tests/fixtures/sdxl-embedding]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "tiny-sdxl"
sys.path.insert(0, str(REPO / "tools"))

TOKEN = "<xl-brick>"
PROMPT = "<xl-brick> wall, mossy"
PLAIN_PROMPT = "wall, mossy"
# name, kiln scheduler, steps, guidance, extra pipeline kwargs
CASES = [
    ("xl_embedding_euler", "euler", 6, 5.0, {"negative_prompt": "blurry"}),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "sdxl-embedding"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from safetensors.torch import load_file, save_file

    import make_sdxl_golden
    from make_sdxl_lora_fixture import build_torch_pipe, check_same_weights_as_fixture, export

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pipe = build_torch_pipe()
    check_same_weights_as_fixture(pipe)
    w1 = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    w2 = pipe.text_encoder_2.get_input_embeddings().weight.shape[1]
    g = torch.Generator().manual_seed(21)
    # Scaled like the fixture's own token embeddings so the vectors matter without saturating.
    s1 = float(pipe.text_encoder.get_input_embeddings().weight.std()) * 3
    s2 = float(pipe.text_encoder_2.get_input_embeddings().weight.std()) * 3
    state = {"clip_l": torch.randn(2, w1, generator=g) * s1, "clip_g": torch.randn(2, w2, generator=g) * s2}
    save_file(state, str(out / "xl-brick.safetensors"))
    state = load_file(str(out / "xl-brick.safetensors"))
    print(f"embedding: clip_l {tuple(state['clip_l'].shape)} (std {s1:.3g}), clip_g {tuple(state['clip_g'].shape)} (std {s2:.3g})")
    pipe.load_textual_inversion(state["clip_l"], token=TOKEN, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(state["clip_g"], token=TOKEN, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)

    with tempfile.TemporaryDirectory(prefix="kiln_sdxl_embedding_") as tmp:
        onnx_dir = export(pipe, Path(tmp), "embedded")
        from optimum.onnxruntime import ORTStableDiffusionXLPipeline

        ref = ORTStableDiffusionXLPipeline.from_pretrained(str(onnx_dir), provider="CPUExecutionProvider", local_files_only=True)
        ids_by_tokenizer = {}
        for tname in ("tokenizer", "tokenizer_2"):
            tok = getattr(ref, tname)
            expanded = ref.maybe_convert_prompt(PROMPT, tok)
            ids = tok(expanded, padding="max_length", max_length=77, truncation=True).input_ids
            print(f"{tname}: {PROMPT!r} -> {expanded!r} -> {ids[:8]}")
            if len([i for i in ids if i >= 49408]) != 2:
                raise SystemExit(f"{tname}: both embedding vectors should be in the prompt ids")
            ids_by_tokenizer[tname] = ids[:8]
        cases = []
        for name, kiln, steps, guidance, kwargs in CASES:
            make_sdxl_golden.FIXTURE = str(onnx_dir)
            make_sdxl_golden.PROMPT = PROMPT
            r1 = make_sdxl_golden.run(name, kiln, steps, guidance, False, kwargs, None)
            r2 = make_sdxl_golden.run(name, kiln, steps, guidance, False, kwargs, None)
            for k in ("latents", "image", "draws"):
                if not np.array_equal(r1[k], r2[k]):
                    raise SystemExit(f"{name}: {k} not deterministic")
            make_sdxl_golden.PROMPT = PLAIN_PROMPT
            p = make_sdxl_golden.run(name, kiln, steps, guidance, False, kwargs, None)
            if not np.array_equal(p["draws"], r1["draws"]):
                raise SystemExit(f"{name}: the run without the token drew other noise")
            effect = float(np.abs(p["latents"] - r1["latents"]).max() / np.abs(r1["latents"]).max())
            print(f"{name}: the embedding moves the final latents by {effect:.3e} relative (test bound 1e-3)")
            if effect < 2e-2:
                raise SystemExit(f"{name}: the embedding barely changes the output; a test could not fail")
            for k in ("latents", "image", "draws"):
                np.save(out / f"{name}.{k}.npy", r1[k])
            cases.append({
                "name": name, "kiln_scheduler": kiln, "steps": steps, "guidance_scale": guidance,
                "prompt": PROMPT, "plain_prompt": PLAIN_PROMPT, "token": TOKEN, "file": "xl-brick.safetensors",
                "unet_timesteps": r1["timesteps"], "input_ids": ids_by_tokenizer, "latent_effect": effect, **kwargs,
            })
    (out / "cases.json").write_text(json.dumps(cases, indent=1) + "\n")
    import make_golden

    v = make_golden.versions()
    (out / "README.md").write_text(
        "# SDXL textual-inversion fixture and golden\n\nFor tests/fixtures/tiny-sdxl; made by "
        "`tools/make_sdxl_embedding_fixture.py` (see its docstring):\n\n"
        "    /work/venv/bin/python tools/make_sdxl_embedding_fixture.py\n\n## Versions\n\n"
        + "".join(f"- {k} {val}\n" for k, val in v.items())
    )
    print("wrote", out, sum(p.stat().st_size for p in out.iterdir()), "bytes")


if __name__ == "__main__":
    main()
