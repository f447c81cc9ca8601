#!/usr/bin/env python3
"""Build the tiny SDXL ONNX fixture used by Kiln's SDXL tests.

What it makes: an optimum-layout SDXL pipeline in OUT (default
tests/fixtures/tiny-sdxl): model_index.json, text_encoder/ (CLIPTextModel),
text_encoder_2/ (CLIPTextModelWithProjection), tokenizer/ and tokenizer_2/
(tokenizer_2 pads with "!", as SDXL's does), unet/ (UNet2DConditionModel with
`addition_embed_type="text_time"`, so the graph takes `text_embeds` and
`time_ids`), vae_decoder/, vae_encoder/ (SDXL's VAE scaling factor 0.13025)
and scheduler/ (SDXL 1.0's EulerDiscreteScheduler config). Seeded random fp32
weights, tiny widths; the real CLIP vocabulary (copied from
tests/fixtures/tiny-sd/tokenizer, so git stores those files once).

Also writes OUT/turbo_scheduler_config.json: SDXL-Turbo's scheduler config
(EulerAncestral, trailing spacing). SDXL-Turbo differs from SDXL only in its
weights and that file, so the Turbo-style tests use these same graphs with
that scheduler config swapped in.

Usage (from the repo root):
    /work/venv/bin/python tools/make_sdxl_fixture.py [OUT]
    /work/venv/bin/python tools/make_sdxl_golden.py
Deterministic: torch.manual_seed(0) before every module; OUT is rebuilt.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "fixtures" / "tiny-sdxl"
TOKENIZER_SRC = REPO / "tests" / "fixtures" / "tiny-sd" / "tokenizer"

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SDXL_SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    sample_max_value=1.0,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    timestep_spacing="leading",
    trained_betas=None,
    use_karras_sigmas=False,
)

# stabilityai/sdxl-turbo scheduler/scheduler_config.json
TURBO_SCHEDULER = dict(
    _class_name="EulerAncestralDiscreteScheduler",
    _diffusers_version="0.24.0.dev0",
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    interpolation_type="linear",
    num_train_timesteps=1000,
    prediction_type="epsilon",
    sample_max_value=1.0,
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    timestep_spacing="trailing",
    trained_betas=None,
    use_karras_sigmas=False,
)

TE1_WIDTH = 8
TE2_WIDTH = 16
TE2_PROJECTION = 16
TIME_EMBED = 8


def text_config(width: int, projection: int, pad: int):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=49408,
        hidden_size=width,
        intermediate_size=2 * width + 5,
        num_hidden_layers=3,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=projection,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=pad,
    )


def build_pipeline():
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(str(TOKENIZER_SRC))
    # SDXL's second tokenizer (laion CLIP-bigG) pads with "!" (id 0).
    tokenizer_2 = CLIPTokenizer.from_pretrained(str(TOKENIZER_SRC), pad_token="!")
    assert tokenizer_2.pad_token_id == 0

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_config(TE1_WIDTH, TE1_WIDTH, 49407))
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(text_config(TE2_WIDTH, TE2_PROJECTION, 0))
    # Random LayerNorm/linear biases so the embeddings have a sizeable mean
    # (A1111 weighting's mean restoration is ill-conditioned without one).
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for enc in (text_encoder, text_encoder_2):
            for name, p in enc.named_parameters():
                if name.endswith("bias"):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TE1_WIDTH + TE2_WIDTH,
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + TE2_PROJECTION,
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
        scaling_factor=0.13025,
        force_upcast=True,
    )

    scheduler = EulerDiscreteScheduler.from_config(dict(SDXL_SCHEDULER))
    for m in (text_encoder, text_encoder_2, unet, vae):
        m.to(torch.float32).eval()
    return StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
    )


def parity_check(pipe, out: Path) -> None:
    """Each exported graph against its PyTorch module on seeded inputs."""
    import numpy as np
    import onnxruntime as ort
    import torch

    g = torch.Generator().manual_seed(42)

    def sess(name):
        return ort.InferenceSession(str(out / name / "model.onnx"), providers=["CPUExecutionProvider"])

    ids = torch.tensor([pipe.tokenizer("mossy stone brick wall", padding="max_length", max_length=77).input_ids])
    ids2 = torch.tensor([pipe.tokenizer_2("mossy stone brick wall", padding="max_length", max_length=77).input_ids])
    sample = torch.randn(2, 4, 8, 8, generator=g)
    ehs = torch.randn(2, 77, TE1_WIDTH + TE2_WIDTH, generator=g)
    te = torch.randn(2, TE2_PROJECTION, generator=g)
    tid = torch.tensor([[64.0, 64, 0, 0, 64, 64], [96.0, 48, 8, 4, 64, 64]])
    lat = torch.randn(1, 4, 8, 8, generator=g)
    with torch.no_grad():
        h1 = pipe.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
        h2 = pipe.text_encoder_2(ids2, output_hidden_states=True)
        unet_ref = pipe.unet(sample, torch.tensor(901.0), ehs, added_cond_kwargs={"text_embeds": te, "time_ids": tid}).sample
        checks = [
            ("text_encoder", h1, {"input_ids": ids.numpy().astype(np.int64)}, "hidden_states.2"),
            ("text_encoder_2", h2.hidden_states[-2], {"input_ids": ids2.numpy().astype(np.int64)}, "hidden_states.2"),
            ("text_encoder_2", h2.text_embeds, {"input_ids": ids2.numpy().astype(np.int64)}, "text_embeds"),
            ("unet", unet_ref,
             {"sample": sample.numpy(), "timestep": np.array(901.0, np.float32), "encoder_hidden_states": ehs.numpy(),
              "text_embeds": te.numpy(), "time_ids": tid.numpy()}, "out_sample"),
            ("vae_decoder", pipe.vae.decode(lat).sample, {"latent_sample": lat.numpy()}, "sample"),
        ]
        for name, ref, feeds, output in checks:
            got = sess(name).run([output], feeds)[0]
            err = float(np.abs(got - ref.numpy()).max())
            print(f"parity {name}.{output}: max |onnx - torch| = {err:.3e} (ref max |x| {float(ref.abs().max()):.3e})")
            assert err < 1e-4, name


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    pipe = build_pipeline()
    with tempfile.TemporaryDirectory(prefix="kiln_tiny_sdxl_") as tmp:
        pt_dir = Path(tmp) / "pt"
        pipe.save_pretrained(str(pt_dir), safe_serialization=True)
        if out.exists():
            shutil.rmtree(out)
        from optimum.exporters.onnx import main_export

        main_export(str(pt_dir), output=str(out), task="text-to-image", device="cpu", do_validation=True,
                    local_files_only=True)

    parity_check(pipe, out)

    for js in sorted(out.rglob("*.json")):
        d = json.loads(js.read_text(encoding="utf-8"))
        if isinstance(d, dict) and "_name_or_path" in d:
            sub = js.parent.relative_to(out).as_posix()
            d["_name_or_path"] = "kiln/tiny-sdxl" + ("" if sub == "." else "/" + sub)
            js.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (out / "turbo_scheduler_config.json").write_text(json.dumps(TURBO_SCHEDULER, indent=2, sort_keys=True) + "\n")

    # The tokenizer files are the tiny-sd ones (byte-identical, so git keeps one copy).
    for sub in ("tokenizer", "tokenizer_2"):
        for f in ("vocab.json", "merges.txt"):
            assert (out / sub / f).read_bytes() == (TOKENIZER_SRC / f).read_bytes(), (sub, f)

    import onnxruntime as ort

    lines = ["# tiny-sdxl fixture", "",
             "Tiny SDXL-architecture pipeline with seeded random weights, exported with optimum",
             "(`task=text-to-image`) by `tools/make_sdxl_fixture.py` (read it for the exact configs).",
             f"text_encoder: CLIPTextModel width {TE1_WIDTH}, 3 layers; text_encoder_2: CLIPTextModelWithProjection",
             f"width {TE2_WIDTH}, projection {TE2_PROJECTION}, 3 layers; tokenizer_2 pads with `!`. U-Net: channels (32, 64),",
             f"cross-attention width {TE1_WIDTH + TE2_WIDTH}, `addition_embed_type=text_time`, time embedding {TIME_EMBED}.",
             "VAE: 4 levels of 32 channels, scaling factor 0.13025. Scheduler: SDXL 1.0's EulerDiscrete config;",
             "`turbo_scheduler_config.json` is SDXL-Turbo's (used by the Turbo-style tests).", "", "## Graphs", ""]
    for model in sorted(out.glob("*/model.onnx")):
        s = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        lines.append(f"- `{model.relative_to(out)}` ({model.stat().st_size} bytes): inputs "
                     + ", ".join(f"`{v.name}` {v.type} {v.shape}" for v in s.get_inputs())
                     + "; outputs " + ", ".join(f"`{v.name}`" for v in s.get_outputs()))
    (out / "README.md").write_text("\n".join(lines) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print("wrote", out, total, "bytes")


if __name__ == "__main__":
    sys.exit(main())
