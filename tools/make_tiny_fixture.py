#!/usr/bin/env python3
"""Build the tiny Stable-Diffusion-1.x ONNX fixture used by Kiln's tests.

What it makes: an optimum-layout ONNX SD pipeline (model_index.json,
text_encoder/, unet/, vae_decoder/, vae_encoder/, tokenizer/, scheduler/) in
OUT (default tests/fixtures/tiny-sd), ~10-20 MB, plus a README.md describing
every graph's inputs/outputs.

Why: real SD checkpoints are gigabytes and cannot be fetched in CI. This
fixture has the real SD 1.x *architecture* (CLIP text encoder, cross-attention
U-Net, 8x-downsampling AutoencoderKL, PNDM scheduler config of SD 1.5) and the
real CLIP BPE vocabulary, but tiny seeded random weights. It is exported with
the same exporter (optimum) that people use for real models, so the Rust
runtime is exercised on graphs with the real I/O contract.

Deterministic: torch.manual_seed(0) before every module, fp32 weights.
Idempotent: OUT is wiped and rebuilt each run.

Usage (from repo root):
    /work/venv/bin/python tools/make_tiny_fixture.py [OUT]
Needs the fixture venv (tools/requirements-fixtures.txt) and the open_clip
BPE file: it is read from the open_clip_torch wheel (pip download --no-deps
open_clip_torch) or an installed open_clip; pass --bpe PATH to override.
"""

from __future__ import annotations

import argparse
import glob
import gzip
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "tiny-sd"

# SD 1.5's scheduler/scheduler_config.json (runwayml/stable-diffusion-v1-5).
SD15_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    num_train_timesteps=1000,
    steps_offset=1,
    skip_prk_steps=True,
    set_alpha_to_one=False,
    clip_sample=False,
    prediction_type="epsilon",
    timestep_spacing="leading",
    trained_betas=None,
)


# --------------------------------------------------------------------------
# CLIP vocabulary
# --------------------------------------------------------------------------
def find_bpe(explicit: str | None) -> bytes:
    """Return the raw bytes of open_clip's bpe_simple_vocab_16e6.txt.gz."""
    if explicit:
        return Path(explicit).read_bytes()
    try:  # installed open_clip
        import open_clip  # type: ignore

        p = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
        if p.exists():
            return p.read_bytes()
    except Exception:
        pass
    # a downloaded open_clip_torch wheel
    candidates = []
    for d in [os.environ.get("OPEN_CLIP_WHEEL_DIR", ""), "/tmp/oc", str(REPO / "tools"), "."]:
        if d:
            candidates += glob.glob(os.path.join(d, "open_clip_torch-*.whl"))
    if not candidates:
        tmp = tempfile.mkdtemp(prefix="oc_whl_")
        subprocess.check_call(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "open_clip_torch", "-d", tmp]
        )
        candidates = glob.glob(os.path.join(tmp, "open_clip_torch-*.whl"))
    with zipfile.ZipFile(sorted(candidates)[-1]) as z:
        return z.read("open_clip/bpe_simple_vocab_16e6.txt.gz")


def bytes_to_unicode() -> dict[int, str]:
    """Same table as openai/CLIP simple_tokenizer.py and GPT-2."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def write_clip_vocab(bpe_gz: bytes, out_dir: Path) -> None:
    """vocab.json + merges.txt exactly as openai/clip-vit-large-patch14 has them."""
    lines = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    assert len(merges) == 48894 and all(len(m) == 2 for m in merges)
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(out_dir / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")


# --------------------------------------------------------------------------
# The tiny pipeline
# --------------------------------------------------------------------------
def build_pipeline(vocab_dir: Path):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer(
        str(vocab_dir / "vocab.json"),
        str(vocab_dir / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=77,
    )
    ids = tokenizer("a photo of a cat").input_ids
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407], ids

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )

    torch.manual_seed(0)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.18215,
    )

    torch.manual_seed(0)
    # from_config (not the constructor) so that keys PNDM itself ignores but
    # SD 1.5's file carries (clip_sample, set_alpha_to_one, ...) are kept in
    # scheduler_config.json, exactly as in the real checkpoint; DDIM/Euler
    # .from_config(pipe.scheduler.config) then pick them up.
    scheduler = PNDMScheduler.from_config(dict(SD15_SCHEDULER))
    cfg = dict(scheduler.config)
    for k, v in SD15_SCHEDULER.items():
        assert cfg.get(k, "MISSING") == v, (k, cfg.get(k, "MISSING"), v)

    for m in (text_encoder, unet, vae):
        m.to(torch.float32).eval()

    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


# --------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------
def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for p in ["torch", "diffusers", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime", "numpy"]:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "-"
    return out


def graph_summary(out: Path) -> str:
    import onnx
    import onnxruntime as ort

    lines = []
    for model in sorted(out.glob("*/model.onnx")):
        sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        opset = [o.version for o in onnx.load(str(model), load_external_data=False).opset_import if o.domain in ("", "ai.onnx")]
        lines.append(f"### {model.relative_to(out)}  (opset {opset[0] if opset else '?'})")
        lines.append("")
        lines.append("| kind | name | dtype | shape |")
        lines.append("| --- | --- | --- | --- |")
        for kind, vals in (("input", sess.get_inputs()), ("output", sess.get_outputs())):
            for v in vals:
                lines.append(f"| {kind} | `{v.name}` | {v.type} | {v.shape} |")
        lines.append("")
    return "\n".join(lines)


def listing(out: Path) -> str:
    rows = []
    total = 0
    for p in sorted(out.rglob("*")):
        if p.is_file():
            s = p.stat().st_size
            total += s
            rows.append(f"{s:>10}  {p.relative_to(out)}")
    rows.append(f"{total:>10}  TOTAL")
    return "\n".join(rows)


def parity_check(pipe, out: Path) -> None:
    """Compare each exported graph with its PyTorch module on seeded inputs."""
    import numpy as np
    import onnxruntime as ort
    import torch

    g = torch.Generator().manual_seed(42)

    def sess(name):
        return ort.InferenceSession(str(out / name / "model.onnx"), providers=["CPUExecutionProvider"])

    ids = torch.tensor([pipe.tokenizer("mossy stone brick wall", padding="max_length", max_length=77).input_ids])
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 77, 32, generator=g)
    lat = torch.randn(1, 4, 8, 8, generator=g)
    img = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        checks = [
            ("text_encoder", pipe.text_encoder(ids)[0], {"input_ids": ids.numpy().astype(np.int64)}),
            ("unet", pipe.unet(sample, torch.tensor(901.0), ehs).sample,
             {"sample": sample.numpy(), "timestep": np.array(901.0, np.float32), "encoder_hidden_states": ehs.numpy()}),
            ("vae_decoder", pipe.vae.decode(lat).sample, {"latent_sample": lat.numpy()}),
            ("vae_encoder", pipe.vae.encode(img).latent_dist.parameters, {"sample": img.numpy()}),
        ]
        for name, ref, feeds in checks:
            got = sess(name).run(None, feeds)[0]
            err = float(np.abs(got - ref.numpy()).max())
            print(f"parity {name}: max |onnx - torch| = {err:.3e} (ref max |x| {float(ref.abs().max()):.3e})")
            assert err < 1e-3, name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    ap.add_argument("--bpe", default=None, help="path to bpe_simple_vocab_16e6.txt.gz")
    ap.add_argument("--opset", type=int, default=None)
    args = ap.parse_args()
    out = Path(args.out).resolve()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    bpe = find_bpe(args.bpe)
    with tempfile.TemporaryDirectory(prefix="kiln_tiny_sd_") as tmp:
        tmp = Path(tmp)
        write_clip_vocab(bpe, tmp / "vocab")
        pipe = build_pipeline(tmp / "vocab")
        pt_dir = tmp / "pt"
        pipe.save_pretrained(str(pt_dir), safe_serialization=True)

        if out.exists():
            shutil.rmtree(out)
        from optimum.exporters.onnx import main_export

        main_export(
            str(pt_dir),
            output=str(out),
            task="text-to-image",
            opset=args.opset,
            device="cpu",
            do_validation=True,
            local_files_only=True,
        )

    # Independent check that the ONNX graphs match the PyTorch modules.
    parity_check(pipe, out)

    # The exporter records the temp dir as _name_or_path; make it stable so
    # reruns are byte-identical.
    for js in sorted(out.rglob("*.json")):
        d = json.loads(js.read_text(encoding="utf-8"))
        if isinstance(d, dict) and "_name_or_path" in d:
            sub = js.parent.relative_to(out).as_posix()
            d["_name_or_path"] = "kiln/tiny-sd" + ("" if sub == "." else "/" + sub)
            js.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    # drop anything the exporter leaves that we don't need (none expected)
    for junk in list(out.rglob("*.onnx_data")) + list(out.rglob("*.tmp")):
        print("note: exporter left", junk, junk.stat().st_size)

    required = [
        "model_index.json",
        "text_encoder/model.onnx",
        "text_encoder/config.json",
        "unet/model.onnx",
        "unet/config.json",
        "vae_decoder/model.onnx",
        "vae_decoder/config.json",
        "vae_encoder/model.onnx",
        "vae_encoder/config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
        "scheduler/scheduler_config.json",
    ]
    missing = [r for r in required if not (out / r).is_file()]
    if missing:
        sys.exit(f"export incomplete, missing: {missing}")

    # sanity: exported tokenizer reproduces the CLIP ids
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(out / "tokenizer"))
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]

    summary = graph_summary(out)
    vers = versions()
    readme = [
        "# tiny-sd fixture",
        "",
        "Tiny Stable Diffusion 1.x-architecture pipeline with **seeded random weights**",
        "(torch.manual_seed(0) before each module), real CLIP BPE vocabulary (49408 tokens,",
        "from open_clip's bpe_simple_vocab_16e6.txt.gz, laid out as openai/clip-vit-large-patch14),",
        "SD 1.5's PNDM scheduler config, exported to ONNX with optimum (`task=text-to-image`).",
        "Images are meaningless noise; the fixture exists to test the I/O contract and numerics.",
        "",
        "Regenerate (from the repo root, with the venv of tools/requirements-fixtures.txt):",
        "",
        "    /work/venv/bin/python tools/make_tiny_fixture.py",
        "    /work/venv/bin/python tools/make_golden.py   # golden outputs depend on these weights",
        "",
        "Architecture: CLIPTextModel(hidden 32, 2 layers, 4 heads, ffn 37, quick_gelu, 77 positions);",
        "UNet2DConditionModel(sample 8, channels (32, 64), 2 layers/block, CrossAttnDown+Down / Up+CrossAttnUp,",
        "cross_attention_dim 32, 8 heads); AutoencoderKL(4 blocks of 32 ch -> 8x downsampling, latent 4 ch,",
        "scaling_factor 0.18215). Default image 64x64 (latent 8x8).",
        "",
        "## Versions",
        "",
        *[f"- {k} {v}" for k, v in vers.items()],
        "",
        "## Graphs (onnxruntime get_inputs / get_outputs)",
        "",
        summary,
        "## Files",
        "",
        "```",
        listing(out),
        "```",
        "",
    ]
    (out / "README.md").write_text("\n".join(readme), encoding="utf-8")
    print(listing(out))
    print()
    print(summary)


if __name__ == "__main__":
    main()
