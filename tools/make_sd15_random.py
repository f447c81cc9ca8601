#!/usr/bin/env python3
"""Build a full-size SD 1.5-architecture ONNX pipeline with seeded random weights.

What it makes: an optimum-layout ONNX export (model_index.json, text_encoder/,
unet/, vae_decoder/, vae_encoder/, tokenizer/, scheduler/) in OUT (default
/work/models/sd15-random, ~4.3 GB: the U-Net alone is 3.4 GB of fp32 weights,
stored as external data next to unet/model.onnx).

Why: benchmarks need the real cost of SD 1.5, and the cost of a graph does not
depend on its weight values. Nothing is downloaded: the architecture comes from
the SD 1.5 configs written out below, the tokenizer and scheduler config from
the repository's tiny fixture (tests/fixtures/tiny-sd: the real CLIP BPE
vocabulary and SD 1.5's scheduler_config.json). Images are noise.

Never commit the output; keep it outside the repository.

Weights: torch's default initialisation after torch.manual_seed(SEED) per
module (fp32). With --check (default on) the exported pipeline is run once
through optimum's ORTStableDiffusionPipeline at 128x128, 2 steps, and every
value of the decoded image must be finite.

Usage (from the repo root):
    /work/venv/bin/python tools/make_sd15_random.py [OUT] [--seed 0] [--no-check]
    python3 tools/make_sd15_random.py OUT --exporter torch [--small]

`--exporter torch` needs only torch, transformers and diffusers (no optimum):
it writes the same layout (graph names, input/output names, dynamic axes and
configs) with `torch.onnx.export` (TorchScript), for machines where optimum
cannot be installed, such as the GPU machine tools/gpu_bench.py runs on; the
check then only runs when optimum is importable. `--small` shrinks every
width (a quick test of the exporter itself, not a benchmark model).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "tiny-sd"
DEFAULT_OUT = Path("/work/models/sd15-random")

# runwayml/stable-diffusion-v1-5 unet/config.json (architecture keys).
SD15_UNET = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    center_input_sample=False,
    flip_sin_to_cos=True,
    freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    downsample_padding=1,
    mid_block_scale_factor=1,
    act_fn="silu",
    norm_num_groups=32,
    norm_eps=1e-5,
    cross_attention_dim=768,
    attention_head_dim=8,
)

# runwayml/stable-diffusion-v1-5 vae/config.json.
SD15_VAE = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(128, 256, 512, 512),
    layers_per_block=2,
    act_fn="silu",
    latent_channels=4,
    norm_num_groups=32,
    sample_size=512,
    scaling_factor=0.18215,
)

# openai/clip-vit-large-patch14 text_config (SD 1.5's text encoder).
SD15_CLIP = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    projection_dim=768,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=0,
    eos_token_id=2,
    pad_token_id=1,
)


def small_configs() -> None:
    """Narrow every module (same block structure), to test the exporter quickly."""
    SD15_UNET.update(block_out_channels=(32, 64, 64, 64), cross_attention_dim=64, attention_head_dim=4)
    SD15_VAE.update(block_out_channels=(32, 32, 64, 64))
    SD15_CLIP.update(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, projection_dim=64)


def build_pipeline(seed: int, small: bool = False):
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(FIXTURE / "tokenizer"))
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    sched_cfg = json.loads((FIXTURE / "scheduler" / "scheduler_config.json").read_text())
    sched_cfg = {k: v for k, v in sched_cfg.items() if not k.startswith("_")}
    scheduler = PNDMScheduler.from_config(sched_cfg)

    t = time.time()
    torch.manual_seed(seed)
    text_encoder = CLIPTextModel(CLIPTextConfig(**SD15_CLIP))
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**SD15_VAE)
    for m in (text_encoder, unet, vae):
        m.to(torch.float32).eval()
    n = {k: sum(p.numel() for p in m.parameters()) for k, m in
         (("text_encoder", text_encoder), ("unet", unet), ("vae", vae))}
    print(f"built modules in {time.time() - t:.1f} s; parameters: {n}", flush=True)
    # SD 1.5: text encoder 123.06 M, U-Net 859.52 M, VAE 83.65 M.
    if small:
        return StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
    assert 850e6 < n["unet"] < 870e6, n
    assert 120e6 < n["text_encoder"] < 126e6, n
    assert 80e6 < n["vae"] < 86e6, n

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


def torch_export(pipe, out: Path, opset: int) -> None:
    """optimum's text-to-image layout written with torch.onnx.export (TorchScript)."""
    import torch

    # The wrappers' attributes name the exported nodes' outer scope: Kiln's
    # graph index drops a `/unet/` or `/text_encoder/` scope (as in the legacy
    # diffusers script's exports), so LoRA modules and the ControlNet layout's
    # `unet_controlnet` (tools/make_controlnet_fixture.py) match these graphs.
    class TextEncoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.text_encoder = m

        def forward(self, input_ids):
            o = self.text_encoder(input_ids=input_ids, return_dict=True)
            return o.last_hidden_state, o.pooler_output

    class Unet(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.unet = m

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    class VaeDecoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, latent_sample):
            return self.m.decode(latent_sample, return_dict=False)[0]

    class VaeEncoder(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, sample):
            # The posterior's moments (mean and log-variance), as optimum exports them.
            return self.m.encode(sample, return_dict=False)[0].parameters

    hidden = pipe.text_encoder.config.hidden_size
    jobs = [
        ("text_encoder", TextEncoder(pipe.text_encoder), (torch.ones(1, 77, dtype=torch.int64),),
         ["input_ids"], ["last_hidden_state", "pooler_output"],
         {"input_ids": {0: "batch_size", 1: "sequence_length"},
          "last_hidden_state": {0: "batch_size", 1: "sequence_length"}, "pooler_output": {0: "batch_size"}}),
        ("unet", Unet(pipe.unet), (torch.randn(2, 4, 64, 64), torch.tensor(999.0), torch.randn(2, 77, hidden)),
         ["sample", "timestep", "encoder_hidden_states"], ["out_sample"],
         {"sample": {0: "batch_size", 2: "height", 3: "width"},
          "encoder_hidden_states": {0: "batch_size", 1: "sequence_length"},
          "out_sample": {0: "batch_size", 2: "height", 3: "width"}}),
        ("vae_decoder", VaeDecoder(pipe.vae), (torch.randn(1, 4, 64, 64),), ["latent_sample"], ["sample"],
         {"latent_sample": {0: "batch_size", 2: "latent_height", 3: "latent_width"},
          "sample": {0: "batch_size", 2: "height", 3: "width"}}),
        ("vae_encoder", VaeEncoder(pipe.vae), (torch.randn(1, 3, 512, 512),), ["sample"], ["latent_parameters"],
         {"sample": {0: "batch_size", 2: "height", 3: "width"},
          "latent_parameters": {0: "batch_size", 2: "latent_height", 3: "latent_width"}}),
    ]
    for name, module, args, inputs, outputs, axes in jobs:
        t = time.time()
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        with torch.no_grad():
            torch.onnx.export(module.eval(), args, str(d / "model.onnx"), input_names=inputs, output_names=outputs,
                              dynamic_axes=axes, opset_version=opset, do_constant_folding=True, dynamo=False)
        print(f"exported {name} in {time.time() - t:.1f} s", flush=True)
    pipe.text_encoder.config.to_json_file(str(out / "text_encoder" / "config.json"))
    pipe.unet.save_config(str(out / "unet"))
    for sub in ("vae_decoder", "vae_encoder"):
        pipe.vae.save_config(str(out / sub))
    shutil.copytree(FIXTURE / "tokenizer", out / "tokenizer")
    shutil.copytree(FIXTURE / "scheduler", out / "scheduler")
    shutil.copy(FIXTURE / "model_index.json", out / "model_index.json")


def check(out: Path) -> None:
    """Run the export once with optimum's pipeline; the image must be finite."""
    import numpy as np
    from diffusers import EulerDiscreteScheduler
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    t = time.time()
    pipe = ORTStableDiffusionPipeline.from_pretrained(str(out), provider="CPUExecutionProvider")
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    print(f"check: loaded in {time.time() - t:.1f} s", flush=True)
    t = time.time()
    img = pipe("mossy stone brick wall", negative_prompt="blurry", height=128, width=128,
               num_inference_steps=2, guidance_scale=7.5, output_type="np").images[0]
    print(f"check: 128x128, 2 steps in {time.time() - t:.1f} s; image min {img.min():.4f} "
          f"max {img.max():.4f} mean {img.mean():.4f} std {img.std():.4f}", flush=True)
    if not np.isfinite(img).all():
        sys.exit("check failed: the image has non-finite values")


def listing(out: Path) -> str:
    rows, total = [], 0
    for p in sorted(out.rglob("*")):
        if p.is_file():
            s = p.stat().st_size
            total += s
            rows.append(f"{s:>12}  {p.relative_to(out)}")
    rows.append(f"{total:>12}  TOTAL")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--opset", type=int, default=None)
    ap.add_argument("--no-check", action="store_true", help="skip the finite-image check")
    ap.add_argument("--validate", action="store_true", help="run optimum's export validation (slow)")
    ap.add_argument("--exporter", choices=("optimum", "torch"), default="optimum")
    ap.add_argument("--small", action="store_true", help="narrow widths: tests the exporter, not a benchmark model")
    args = ap.parse_args()
    if args.small:
        small_configs()
    out = Path(args.out).resolve()
    if REPO in out.parents or out == REPO:
        sys.exit(f"{out} is inside the repository; put the ~4.3 GB export elsewhere")

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    t0 = time.time()
    if args.exporter == "torch":
        if out.exists():
            shutil.rmtree(out)
        torch_export(build_pipeline(args.seed, args.small), out, args.opset or 17)
        print(f"exported at {time.time() - t0:.0f} s", flush=True)
        print(listing(out), flush=True)
        try:
            import optimum.onnxruntime  # noqa: F401
        except ImportError:
            print("optimum is not installed: skipping the check", flush=True)
            return
        if not args.no_check:
            check(out)
        return
    with tempfile.TemporaryDirectory(prefix="kiln_sd15_random_", dir=str(out.parent) if out.parent.exists() else None) as tmp:
        pipe = build_pipeline(args.seed, args.small)
        pt_dir = Path(tmp) / "pt"
        pipe.save_pretrained(str(pt_dir), safe_serialization=True)
        del pipe
        print(f"saved PyTorch pipeline at {time.time() - t0:.0f} s", flush=True)

        if out.exists():
            shutil.rmtree(out)
        from optimum.exporters.onnx import main_export

        main_export(
            str(pt_dir),
            output=str(out),
            task="text-to-image",
            opset=args.opset,
            device="cpu",
            do_validation=args.validate,
            local_files_only=True,
        )
    print(f"exported at {time.time() - t0:.0f} s", flush=True)

    for js in sorted(out.rglob("*.json")):
        d = json.loads(js.read_text(encoding="utf-8"))
        if isinstance(d, dict) and "_name_or_path" in d:
            sub = js.parent.relative_to(out).as_posix()
            d["_name_or_path"] = "kiln/sd15-random" + ("" if sub == "." else "/" + sub)
            js.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    required = ["model_index.json", "text_encoder/model.onnx", "unet/model.onnx", "vae_decoder/model.onnx",
                "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"]
    missing = [r for r in required if not (out / r).is_file()]
    if missing:
        sys.exit(f"export incomplete, missing: {missing}")

    (out / "README.md").write_text(
        "# sd15-random\n\nSD 1.5 architecture, seeded random weights (torch default init, seed "
        f"{args.seed}), made by Kiln's tools/make_sd15_random.py for benchmarks. Images are noise. "
        "Do not commit.\n\n```\n" + listing(out) + "\n```\n",
        encoding="utf-8",
    )
    print(listing(out), flush=True)
    if not args.no_check:
        check(out)
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
