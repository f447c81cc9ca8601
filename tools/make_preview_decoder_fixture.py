#!/usr/bin/env python3
"""Build the tiny TAESD-style preview-decoder fixture tests/fixtures/variants/taesd-preview/.

What it makes:

  taesd-preview/preview_decoder/model.onnx   decoder of a seeded, tiny diffusers
                                             AutoencoderTiny (TAESD architecture)
  taesd-preview/preview_decoder/config.json  that AutoencoderTiny's config, as diffusers saves it
  taesd-preview/variant.json                 from_base = every tiny-sd file, so the assembled
                                             folder is tiny-sd + preview_decoder/
  taesd-preview/golden/latents.npy           f32 [1,4,8,8]: np.random.default_rng(99).standard_normal * 3.0
  taesd-preview/golden/preview.npy           f32 HWC [64,64,3]: torch AutoencoderTiny
                                             (decode(latents / scaling_factor).sample / 2 + 0.5).clamp(0, 1)
  taesd-preview/golden/preview_onnx.npy      the same from onnxruntime on the exported graph
                                             (asserted equal to preview.npy within 1e-4)

and it (re)writes the `## taesd-preview` section at the end of tests/fixtures/variants/README.md.

The graph's contract (what Kiln relies on): input `latent_sample` f32 [batch, 4, h, w] holding
U-Net-space latents divided by config.json's `scaling_factor` (1.0, as for real TAESD); output
`sample` f32 [batch, 3, 8h, 8w], an image in roughly [-1, 1] like the VAE decoder's, so the
post-processing is the VAE's: (x / 2 + 0.5).clamp(0, 1). diffusers 0.39's DecoderTiny.forward does
`tanh(x / 3) * 3`, its conv stack (whose last conv gives TAESD's [0, 1] image), then
`x.mul(2).sub(1)`; all of that is inside the exported graph.

Tiny config: latent_channels 4 (tiny-sd's), 16 channels everywhere, 4 decoder stages (3 nearest
2x upsamples = 8x, like TAESD) with one AutoencoderTinyBlock each (the class allows 0, but then
the graph would have none of TAESD's residual blocks). Default-initialised random weights would
decode everything to ~black, so the decoder's last conv (3 outputs, TAESD's [0, 1] image) has its
weight scaled by 12 and its bias set to 0.5: the golden preview then spans [0, 1] with ~2% clamped
pixels and distinct channel means. The encoder exists in the module (the class
always builds one) but is not exported.

Deterministic: torch.manual_seed(0) before the module, one torch / onnxruntime thread; rerunning
gives byte-identical files. Idempotent: taesd-preview/ is wiped and rebuilt.

Usage (from repo root):
    /work/venv/bin/python tools/make_preview_decoder_fixture.py
Needs the fixture venv (tools/requirements-fixtures.txt) and tests/fixtures/tiny-sd.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BASE = REPO / "tests" / "fixtures" / "tiny-sd"
VARIANTS = REPO / "tests" / "fixtures" / "variants"
NAME = "taesd-preview"
VDIR = VARIANTS / NAME
BASE_REL = "../../tiny-sd"
OPSET = 17
TOL = 1e-4
LAST_CONV_GAIN = 12.0

TINY_TAESD = dict(
    in_channels=3,
    out_channels=3,
    encoder_block_out_channels=(16, 16, 16, 16),
    decoder_block_out_channels=(16, 16, 16, 16),
    act_fn="relu",
    upsample_fn="nearest",
    latent_channels=4,
    upsampling_scaling_factor=2,
    num_encoder_blocks=(1, 1, 1, 1),
    num_decoder_blocks=(1, 1, 1, 1),
    latent_magnitude=3,
    latent_shift=0.5,
    force_upcast=False,
    scaling_factor=1.0,
    shift_factor=0.0,
)

DESCRIPTION = (
    "tiny-sd plus an optional TAESD-style preview decoder: preview_decoder/model.onnx "
    "(latent_sample f32 [batch, 4, h, w] = U-Net latents / scaling_factor -> sample f32 [batch, 3, 8h, 8w] in [-1, 1], "
    "post-processed like the VAE decoder: (x/2+0.5).clamp(0,1)) and preview_decoder/config.json "
    "(diffusers AutoencoderTiny, scaling_factor 1.0)"
)
HOW = (
    f"torch.onnx.export(dynamo=False, opset {OPSET}) of AutoencoderTiny.decode(latents).sample of a seeded "
    "(torch.manual_seed(0)) diffusers AutoencoderTiny with 16-channel blocks, num_decoder_blocks (1, 1, 1, 1) "
    "and latent_channels 4 (decoder's last conv: weight x12, bias 0.5, so the random preview is not black); config.json via save_config; every other file is tiny-sd's; "
    "golden/ holds one decode checked against torch (tools/make_preview_decoder_fixture.py)"
)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()[:16]


def base_files() -> list[str]:
    return sorted(p.relative_to(BASE).as_posix() for p in BASE.rglob("*") if p.is_file() and p.name != "README.md")


def build():
    import torch
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    vae = AutoencoderTiny(**TINY_TAESD).eval()
    # With PyTorch's default init the signal shrinks ~0.6x per conv, so the random decoder's
    # [0, 1] image sits at ~0 (a black, 37%-clamped preview that hides scaling / channel bugs).
    # Fixed rule: last conv weight x LAST_CONV_GAIN, bias 0.5 (mid-grey).
    last = vae.decoder.layers[-1]
    assert isinstance(last, torch.nn.Conv2d) and last.out_channels == 3, last
    with torch.no_grad():
        last.weight.mul_(LAST_CONV_GAIN)
        last.bias.fill_(0.5)
    return vae


class DecodeWrap:
    """nn.Module wrapper exporting AutoencoderTiny.decode(latents).sample."""

    def __new__(cls, vae):
        import torch

        class _W(torch.nn.Module):
            def __init__(self, vae):
                super().__init__()
                self.vae = vae

            def forward(self, latent_sample):
                return self.vae.decode(latent_sample).sample

        return _W(vae).eval()


def to_hwc01(x) -> "np.ndarray":  # noqa: F821
    import numpy as np

    x = np.clip(x / 2.0 + 0.5, 0.0, 1.0)
    return np.ascontiguousarray(x[0].transpose(1, 2, 0)).astype(np.float32)


def ort_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def graph_table(path: Path, rel: str) -> list[str]:
    import onnx

    s = ort_session(path)
    opset = [o.version for o in onnx.load(str(path)).opset_import if o.domain in ("", "ai.onnx")]
    lines = [f"#### {rel}  (opset {opset[0]})", "", "| kind | name | dtype | shape |", "| --- | --- | --- | --- |"]
    for kind, vals in (("input", s.get_inputs()), ("output", s.get_outputs())):
        for v in vals:
            lines.append(f"| {kind} | `{v.name}` | {v.type} | {v.shape} |")
    return lines + [""]


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    if not (BASE / "unet" / "model.onnx").is_file():
        sys.exit("tests/fixtures/tiny-sd is missing: run tools/make_tiny_fixture.py first")
    if VDIR.exists():
        shutil.rmtree(VDIR)
    pdir = VDIR / "preview_decoder"
    gdir = VDIR / "golden"
    pdir.mkdir(parents=True)
    gdir.mkdir(parents=True)

    vae = build()
    vae.save_config(str(pdir))
    cfg = json.loads((pdir / "config.json").read_text(encoding="utf-8"))
    assert cfg["_class_name"] == "AutoencoderTiny" and cfg["latent_channels"] == 4, cfg
    sf = float(cfg["scaling_factor"])
    assert sf == 1.0, sf

    # ---- export the decoder only
    onnx_path = pdir / "model.onnx"
    wrap = DecodeWrap(vae)
    dummy = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.onnx.export(
            wrap,
            (dummy,),
            str(onnx_path),
            input_names=["latent_sample"],
            output_names=["sample"],
            dynamic_axes={
                "latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"},
                "sample": {0: "batch_size", 2: "latent_height * 8", 3: "latent_width * 8"},
            },
            do_constant_folding=True,
            opset_version=OPSET,
            dynamo=False,
        )
    import onnx

    m = onnx.load(str(onnx_path))
    onnx.checker.check_model(m)
    assert not any(i.name == "encoder" or "encoder." in i.name for i in m.graph.initializer), "encoder exported"

    # ---- golden: one decode, torch vs onnxruntime
    latents = (np.random.default_rng(99).standard_normal((1, 4, 8, 8)) * 3.0).astype(np.float32)
    with torch.no_grad():
        ref = vae.decode(torch.from_numpy(latents) / sf).sample.numpy()
    assert ref.shape == (1, 3, 64, 64), ref.shape
    sess = ort_session(onnx_path)
    got = sess.run(["sample"], {"latent_sample": latents / np.float32(sf)})[0]
    assert got.shape == (1, 3, 64, 64), got.shape
    raw = float(np.abs(got - ref).max())
    preview, preview_onnx = to_hwc01(ref), to_hwc01(got)
    diff = float(np.abs(preview - preview_onnx).max())
    print(f"raw decode |onnx - torch| max {raw:.3e}; preview |onnx - torch| max {diff:.3e}")
    assert diff <= TOL, f"onnxruntime and torch previews differ by {diff}"
    clamped = float(np.mean((preview <= 0.0) | (preview >= 1.0)))
    print(
        f"raw decode range [{ref.min():.3f}, {ref.max():.3f}] mean {ref.mean():.3f} std {ref.std():.3f}; "
        f"preview mean {preview.mean():.3f} std {preview.std():.3f}; clamped fraction {clamped:.3f}"
    )
    assert 0.0 < clamped < 0.1 and preview.std() > 0.1, "degenerate preview"
    print("preview channel means", [round(float(c), 3) for c in preview.mean((0, 1))])

    # dynamic batch / height / width
    rng = np.random.default_rng(7)
    x2 = rng.standard_normal((2, 4, 16, 8)).astype(np.float32)
    y2 = sess.run(["sample"], {"latent_sample": x2})[0]
    assert y2.shape == (2, 3, 128, 64), y2.shape
    with torch.no_grad():
        r2 = vae.decode(torch.from_numpy(x2)).sample.numpy()
    e2 = float(np.abs(y2 - r2).max())
    print(f"batch 2, 16x8 latents -> {list(y2.shape)}; |onnx - torch| max {e2:.3e}")
    assert e2 <= TOL

    np.save(gdir / "latents.npy", latents)
    np.save(gdir / "preview.npy", preview)
    np.save(gdir / "preview_onnx.npy", preview_onnx)

    # ---- variant.json: every tiny-sd file
    from_base = base_files()
    for rel in from_base:
        assert not (VDIR / rel).exists(), rel
    spec = {"base": BASE_REL, "description": DESCRIPTION, "how": HOW, "from_base": from_base}
    (VDIR / "variant.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")

    # ---- the assembled folder loads the preview decoder (same overlay as tests/variants.rs)
    with tempfile.TemporaryDirectory(prefix="kiln_taesd_") as t:
        dest = Path(t) / NAME
        for rel in from_base:
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(BASE / rel, dest / rel)
        for p in sorted(VDIR.rglob("*")):
            rel = p.relative_to(VDIR).as_posix()
            if p.is_file() and rel not in ("variant.json", "README.md"):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dest / rel)
        assert (dest / "unet" / "model.onnx").is_file() and (dest / "preview_decoder" / "model.onnx").is_file()
        y = ort_session(dest / "preview_decoder" / "model.onnx").run(None, {"latent_sample": latents})[0]
        assert np.array_equal(y, got)

    files = [(p.stat().st_size, p.relative_to(VDIR).as_posix()) for p in sorted(VDIR.rglob("*")) if p.is_file()]
    total = sum(s for s, _ in files)
    assert total < 1_000_000, total
    for s, r in files:
        print(f"{s:>10}  {NAME}/{r}  {sha(VDIR / r)}")
    print(f"{total:>10}  TOTAL")
    write_readme_section(onnx_path, cfg, files, total, raw, diff)


def write_readme_section(onnx_path: Path, cfg: dict, files, total: int, raw: float, diff: float) -> None:
    """(Re)write the `## taesd-preview` section at the end of variants/README.md.

    tools/make_variant_fixtures.py rewrites that README without this section: rerun this script after it.
    """
    readme = VARIANTS / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    # Replace our own section in place (up to the next "## " heading), else append it at the end;
    # other sections (possibly added after ours) are left as they are.
    marker = f"\n## {NAME}\n"
    rest = ""
    if marker in text:
        start = text.index(marker)
        nxt = text.find("\n## ", start + len(marker))
        rest = "" if nxt < 0 else text[nxt:]
        text = text[:start]
    text = text.rstrip("\n") + "\n"
    keys = [
        "latent_channels",
        "scaling_factor",
        "shift_factor",
        "decoder_block_out_channels",
        "num_decoder_blocks",
        "upsampling_scaling_factor",
        "upsample_fn",
        "act_fn",
        "latent_magnitude",
        "latent_shift",
    ]
    lines = [
        "",
        f"## {NAME}",
        "",
        DESCRIPTION + ".",
        "",
        "How: " + HOW + ".",
        "",
        "Regenerate: `/work/venv/bin/python tools/make_preview_decoder_fixture.py` (after",
        "tools/make_variant_fixtures.py, which rewrites this README without this section).",
        "",
        "Contract of `preview_decoder/`: feed `latent_sample` = U-Net-space latents / `scaling_factor`",
        "(config.json; 1.0 as for real TAESD, so the latents go in unchanged); `sample` is",
        "`DecoderTiny`'s `tanh(x/3)*3` -> conv stack -> `x*2-1`, an image in about [-1, 1]; the preview is",
        "`(sample/2 + 0.5).clamp(0, 1)` exactly as after the VAE decoder. The module's encoder is not exported.",
        "",
        "config.json: " + ", ".join(f"`{k}` {json.dumps(cfg[k])}" for k in keys) + ".",
        "",
        "Graph (onnxruntime get_inputs / get_outputs):",
        "",
        *graph_table(onnx_path, "preview_decoder/model.onnx"),
        "Golden (`golden/`, not part of a model folder's meaning; the overlay copies it along harmlessly):",
        "",
        "- `latents.npy`: f32 [1, 4, 8, 8] = `np.random.default_rng(99).standard_normal((1,4,8,8)) * 3.0`.",
        "- `preview.npy`: f32 HWC [64, 64, 3] = torch `(AutoencoderTiny.decode(latents / scaling_factor).sample / 2 + 0.5).clamp(0, 1)`.",
        f"- `preview_onnx.npy`: the same through onnxruntime (CPU) on `preview_decoder/model.onnx`; max |difference| to `preview.npy` {diff:.1e} (raw `sample` {raw:.1e}, asserted <= {TOL:g}).",
        "",
        "Own files:",
        "",
        "```",
        *[f"{s:>10}  {r}" for s, r in files],
        f"{total:>10}  TOTAL",
        "```",
        "",
        "From tiny-sd: every file (`from_base` lists them all), so the assembled folder is tiny-sd + `preview_decoder/`.",
        "",
    ]
    section = "\n".join(lines)
    if rest:
        section = section.rstrip("\n") + "\n" + rest
    readme.write_text(text + section, encoding="utf-8")


if __name__ == "__main__":
    main()
