#!/usr/bin/env python3
"""Build the tiny SDXL refiner-style fixture (tests/fixtures/sdxl-refiner).

A refiner export, as optimum writes one for stabilityai/stable-diffusion-xl-refiner-1.0
(`StableDiffusionXLImg2ImgPipeline`, task `image-to-image`): no `text_encoder`/`tokenizer`,
only `text_encoder_2`/`tokenizer_2`; a U-Net whose cross-attention width is
`text_encoder_2`'s alone and whose time ids are 5 values (original size, crop
top-left, aesthetic score: `requires_aesthetics_score=True`), so
`projection_class_embeddings_input_dim` = 5 x `addition_time_embed_dim` + the pooled
width; `force_zeros_for_empty_prompt=False`, as the real refiner's model_index.json.

To keep the repository small, OUT holds only what differs from tests/fixtures/tiny-sdxl:
model_index.json, unet/ and scheduler/. The complete model folder is OUT over a copy of
tiny-sdxl's text_encoder_2/, tokenizer_2/, vae_decoder/ and vae_encoder/ (SHARED below);
`assemble()` builds it (tools/make_sdxl_refiner_golden.py uses it, and tests/sdxl_refiner.rs
does the same with tests/common's copy_tree). Those shared modules are rebuilt here with
make_sdxl_fixture.py's seeds, and the script checks that the exported copies compute what
tiny-sdxl's files compute, so the refiner really is the pipeline that was exported.

Usage (from the repo root):
    /work/venv/bin/python tools/make_sdxl_refiner_fixture.py [OUT]
    /work/venv/bin/python tools/make_sdxl_refiner_golden.py
Deterministic: torch.manual_seed before every module; OUT is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_sdxl_fixture as base  # noqa: E402

REPO = base.REPO
DEFAULT_OUT = REPO / "tests" / "fixtures" / "sdxl-refiner"
TINY_SDXL = base.DEFAULT_OUT
# Subfolders the refiner shares with tiny-sdxl (not stored in OUT).
SHARED = ("text_encoder_2", "tokenizer_2", "vae_decoder", "vae_encoder")
# Files OUT keeps from the refiner export.
KEEP = ("model_index.json", "unet", "scheduler")

TIME_EMBED = base.TIME_EMBED
TIME_IDS = 5  # original (h, w), crop (top, left), aesthetic score


def build_pipeline():
    import torch
    from diffusers import StableDiffusionXLImg2ImgPipeline, UNet2DConditionModel

    sdxl = base.build_pipeline()
    torch.manual_seed(3)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=base.TE2_WIDTH,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 1),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=TIME_IDS * TIME_EMBED + base.TE2_PROJECTION,
        norm_num_groups=8,
    )
    unet.to(torch.float32).eval()
    return StableDiffusionXLImg2ImgPipeline(
        vae=sdxl.vae,
        text_encoder=None,
        text_encoder_2=sdxl.text_encoder_2,
        tokenizer=None,
        tokenizer_2=sdxl.tokenizer_2,
        unet=unet,
        scheduler=sdxl.scheduler,
        requires_aesthetics_score=True,
        force_zeros_for_empty_prompt=False,
    )


def assemble(fixture: Path, dest: Path) -> Path:
    """The complete refiner folder: tiny-sdxl's shared subfolders, then `fixture`."""
    if dest.exists():
        shutil.rmtree(dest)
    for sub in SHARED:
        shutil.copytree(TINY_SDXL / sub, dest / sub)
    shutil.copytree(fixture, dest, dirs_exist_ok=True)
    return dest


def check_export(pipe, exported: Path, out: Path) -> None:
    """The stored U-Net against PyTorch, and the freshly exported shared
    graphs against tiny-sdxl's (same modules, same seeds)."""
    import numpy as np
    import onnxruntime as ort
    import torch

    def sess(path):
        return ort.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])

    g = torch.Generator().manual_seed(42)
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 77, base.TE2_WIDTH, generator=g)
    te = torch.randn(2, base.TE2_PROJECTION, generator=g)
    tid = torch.tensor([[64.0, 64, 0, 0, 6.0], [96.0, 48, 8, 4, 2.5]])
    with torch.no_grad():
        ref = pipe.unet(sample, torch.tensor(901.0), ehs, added_cond_kwargs={"text_embeds": te, "time_ids": tid}).sample
    got = sess(out / "unet").run(["out_sample"], {
        "sample": sample.numpy(), "timestep": np.array(901.0, np.float32), "encoder_hidden_states": ehs.numpy(),
        "text_embeds": te.numpy(), "time_ids": tid.numpy()})[0]
    err = float(np.abs(got - ref.numpy()).max())
    print(f"parity unet.out_sample: max |onnx - torch| = {err:.3e} (ref max |x| {float(ref.abs().max()):.3e})")
    assert err < 1e-4

    ids = np.array([pipe.tokenizer_2("mossy stone brick wall", padding="max_length", max_length=77).input_ids], np.int64)
    lat = torch.randn(1, 4, 8, 8, generator=g).numpy()
    img = torch.rand(1, 3, 64, 64, generator=g).numpy() * 2 - 1
    for sub, feeds in (("text_encoder_2", {"input_ids": ids}), ("vae_decoder", {"latent_sample": lat}),
                       ("vae_encoder", {"sample": img})):
        a, b = sess(exported / sub), sess(TINY_SDXL / sub)
        names = [o.name for o in a.get_outputs()]
        assert names == [o.name for o in b.get_outputs()], sub
        for name, x, y in zip(names, a.run(None, feeds), b.run(None, feeds)):
            d = float(np.abs(x - y).max())
            print(f"shared {sub}.{name}: max |refiner export - tiny-sdxl| = {d:.3e}")
            assert d < 1e-5, (sub, name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    pipe = build_pipeline()
    with tempfile.TemporaryDirectory(prefix="kiln_sdxl_refiner_") as tmp:
        pt_dir, exported = Path(tmp) / "pt", Path(tmp) / "onnx"
        pipe.save_pretrained(str(pt_dir), safe_serialization=True)
        from optimum.exporters.onnx import main_export

        main_export(str(pt_dir), output=str(exported), task="image-to-image", device="cpu", do_validation=True,
                    local_files_only=True)
        assert not (exported / "text_encoder").exists() and not (exported / "tokenizer").exists()
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for name in KEEP:
            src = exported / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, out / name)
        check_export(pipe, exported, out)

    for js in sorted(out.rglob("*.json")):
        d = json.loads(js.read_text(encoding="utf-8"))
        if isinstance(d, dict) and "_name_or_path" in d:
            sub = js.parent.relative_to(out).as_posix()
            d["_name_or_path"] = "kiln/sdxl-refiner" + ("" if sub == "." else "/" + sub)
            js.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    index = json.loads((out / "model_index.json").read_text())
    assert index["requires_aesthetics_score"] is True and index["force_zeros_for_empty_prompt"] is False, index
    assert index["text_encoder"] == [None, None] and index["tokenizer"] == [None, None], index

    import onnxruntime as ort

    lines = ["# sdxl-refiner fixture", "",
             "Tiny SDXL refiner-style pipeline (`StableDiffusionXLImg2ImgPipeline`, no `text_encoder`,",
             "`requires_aesthetics_score=True`, `force_zeros_for_empty_prompt=False`) with seeded random weights,",
             "exported with optimum (`task=image-to-image`) by `tools/make_sdxl_refiner_fixture.py`.",
             "This folder holds only model_index.json, scheduler/ and unet/; the model is this folder over",
             f"tests/fixtures/tiny-sdxl's {', '.join(SHARED)} (the same modules, checked by the script).",
             f"U-Net: channels (16, 32), cross-attention width {base.TE2_WIDTH} (text_encoder_2 only),",
             f"`addition_embed_type=text_time`, time embedding {TIME_EMBED}, {TIME_IDS} time ids.", "", "## Graphs", ""]
    s = ort.InferenceSession(str(out / "unet" / "model.onnx"), providers=["CPUExecutionProvider"])
    lines.append(f"- `unet/model.onnx` ({(out / 'unet' / 'model.onnx').stat().st_size} bytes): inputs "
                 + ", ".join(f"`{v.name}` {v.type} {v.shape}" for v in s.get_inputs())
                 + "; outputs " + ", ".join(f"`{v.name}`" for v in s.get_outputs()))
    (out / "README.md").write_text("\n".join(lines) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print("wrote", out, total, "bytes")


if __name__ == "__main__":
    sys.exit(main())
