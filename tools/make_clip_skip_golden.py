"""Golden text embeddings with CLIP skip, from the PyTorch text encoder that
tools/make_tiny_fixture.py builds (same seed, so the same weights as the
exported tests/fixtures/tiny-sd/text_encoder/model.onnx; checked below).

diffusers' semantics: with clip_skip = k, the embeddings are
final_layer_norm(hidden_states[-(k + 1)]), i.e. the output of the k-th layer
from the end, normalized by the final LayerNorm.

    /work/venv/bin/python tools/make_clip_skip_golden.py
"""
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import make_tiny_fixture as fixture  # noqa: E402

OUT = ROOT / "tests/fixtures/golden/clip_skip"
PROMPTS = ["mossy stone brick wall", "", "weathered oak planks, highly detailed"]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    pipe = fixture.build_pipeline(ROOT / "tests/fixtures/tiny-sd/tokenizer")
    te, tok = pipe.text_encoder.eval(), pipe.tokenizer
    sess = ort.InferenceSession(str(ROOT / "tests/fixtures/tiny-sd/text_encoder/model.onnx"), providers=["CPUExecutionProvider"])
    index = []
    for i, prompt in enumerate(PROMPTS):
        ids = tok(prompt, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        with torch.no_grad():
            out = te(ids, output_hidden_states=True)
            onnx_last = sess.run(["last_hidden_state"], {"input_ids": ids.numpy().astype(np.int64)})[0]
            assert np.abs(out.last_hidden_state.numpy() - onnx_last).max() < 1e-5, "rebuilt encoder differs from the export"
            for k in (1,):
                emb = te.text_model.final_layer_norm(out.hidden_states[-(k + 1)]).numpy().astype(np.float32)
                name = f"p{i}.skip{k}.npy"
                np.save(OUT / name, emb)
                index.append({"prompt": prompt, "clip_skip": k, "file": name})
    (OUT / "index.json").write_text(json.dumps(index, indent=1))
    print(json.dumps(index, indent=1))


if __name__ == "__main__":
    main()
