#!/usr/bin/env python3
"""The SDXL ControlNet test fixture: tests/fixtures/sdxl-controlnet.

Kiln's ControlNet layout (README, "ControlNet"; tools/make_controlnet_fixture.py)
on an SDXL model. An SDXL ControlNet takes the U-Net's added conditioning
(`text_embeds`, `time_ids`) as well, and so does the residual-taking U-Net:

    unet/model.onnx                 sample, timestep, encoder_hidden_states, text_embeds, time_ids
                                    -> out_sample
    unet_controlnet/model.onnx      the same, then down_block_additional_residual_0..N-1,
                                    mid_block_additional_residual -> out_sample
    controlnet/xl/model.onnx        sample, timestep, encoder_hidden_states, text_embeds, time_ids,
                                    controlnet_cond ([B, 3, H, W] in [0, 1]), conditioning_scale
                                    -> down_block_res_sample_0..N-1, mid_block_res_sample

The U-Net here is a smaller SDXL-architecture U-Net (channels (8, 16), 4
groups, `addition_embed_type="text_time"`) than tiny-sdxl's (5.5 MB), so
that the three graphs together stay well under a megabyte; the tests copy
tests/fixtures/tiny-sdxl (text encoders, tokenizers, VAE, scheduler) and put
these folders over it. The text encoders are rebuilt exactly as
tools/make_sdxl_fixture.py builds them (seeded) and checked against
tiny-sdxl's graphs; the goldens (tools/make_sdxl_controlnet_golden.py) run
diffusers on the same modules. The ControlNet is ``ControlNetModel.from_unet``
on that U-Net, then randomized as tools/make_controlnet_fixture.py does
(seeded; the zero convolutions made non-zero, so the control image matters).

    /work/venv/bin/python tools/make_sdxl_controlnet_fixture.py
    /work/venv/bin/python tools/make_sdxl_controlnet_golden.py
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TINY_SDXL = REPO / "tests" / "fixtures" / "tiny-sdxl"
OUT = REPO / "tests" / "fixtures" / "sdxl-controlnet"
sys.path.insert(0, str(REPO / "tools"))

from make_controlnet_fixture import check_against_onnx, randomize, write_config  # noqa: E402
from make_sdxl_fixture import TE1_WIDTH, TE2_PROJECTION, TE2_WIDTH, TIME_EMBED  # noqa: E402

COND_CHANNELS = (8, 8, 16, 16)  # the control image's embedding: 8x down to the latents


def build_unet():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(3)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TE1_WIDTH + TE2_WIDTH, attention_head_dim=(2, 2), transformer_layers_per_block=(1, 1),
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=TIME_EMBED,
        projection_class_embeddings_input_dim=6 * TIME_EMBED + TE2_PROJECTION, norm_num_groups=4,
    ).to(torch.float32).eval()


def build_controlnet(unet):
    from diffusers import ControlNetModel

    return randomize(ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=COND_CHANNELS), seed=23)


def build_pipeline():
    """tiny-sdxl's text encoders, tokenizers, VAE and scheduler with this fixture's U-Net."""
    from make_sdxl_fixture import build_pipeline as tiny_sdxl

    pipe = tiny_sdxl()
    pipe.unet = build_unet()
    return pipe


class PlainUnet(torch.nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.unet = unet

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids):
        return self.unet(sample, timestep, encoder_hidden_states,
                         added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids}, return_dict=False)[0]


class ResidualUnet(torch.nn.Module):
    def __init__(self, unet, count):
        super().__init__()
        self.unet, self.count = unet, count

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids, *residuals):
        return self.unet(
            sample, timestep, encoder_hidden_states, added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
            down_block_additional_residuals=list(residuals[: self.count]),
            mid_block_additional_residual=residuals[self.count], return_dict=False,
        )[0]


class ControlNetGraph(torch.nn.Module):
    def __init__(self, controlnet):
        super().__init__()
        self.controlnet = controlnet

    def forward(self, sample, timestep, encoder_hidden_states, text_embeds, time_ids, controlnet_cond, conditioning_scale):
        down, mid = self.controlnet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, controlnet_cond=controlnet_cond,
            conditioning_scale=conditioning_scale, added_cond_kwargs={"text_embeds": text_embeds, "time_ids": time_ids},
            return_dict=False,
        )
        return (*down, mid)


def example_inputs(cfg, seed=0, batch=2):
    """Example SDXL inputs shaped by a U-Net or ControlNet config (base models' 6 time ids)."""
    g = torch.Generator().manual_seed(seed)
    pooled = cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"]
    sample = torch.randn(batch, cfg["in_channels"], 8, 8, generator=g)
    ehs = torch.randn(batch, 77, cfg["cross_attention_dim"], generator=g)
    te = torch.randn(batch, pooled, generator=g)
    tid = torch.tensor([[64.0, 64, 0, 0, 64, 64], [96.0, 48, 8, 4, 64, 64]])[:batch]
    cond = torch.rand(batch, 3, 64, 64, generator=g)
    return sample, torch.tensor(901.0), ehs, te, tid, cond


BASE_AXES = {"sample": {0: "batch", 2: "height", 3: "width"}, "encoder_hidden_states": {0: "batch", 1: "sequence"},
             "text_embeds": {0: "batch"}, "time_ids": {0: "batch"}}
BASE_INPUTS = ["sample", "timestep", "encoder_hidden_states", "text_embeds", "time_ids"]


def export(module, args, path: Path, inputs, outputs, axes, opset=18):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module.eval(), args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                      opset_version=opset, dynamo=False)


def export_controlnet(controlnet, out_dir: Path, opset=18):
    """An SDXL ControlNet in Kiln's layout; returns its down-residual count."""
    sample, t, ehs, te, tid, cond = example_inputs(controlnet.config)
    with torch.no_grad():
        down, _ = controlnet(sample, t, ehs, cond, added_cond_kwargs={"text_embeds": te, "time_ids": tid}, return_dict=False)
    n = len(down)
    outputs = [f"down_block_res_sample_{i}" for i in range(n)] + ["mid_block_res_sample"]
    axes = dict(BASE_AXES, controlnet_cond={0: "batch", 2: "image_height", 3: "image_width"})
    axes.update({o: {0: "batch", 2: f"{o}_h", 3: f"{o}_w"} for o in outputs})
    export(ControlNetGraph(controlnet), (sample, t, ehs, te, tid, cond, torch.tensor(1.0)), out_dir / "model.onnx",
           BASE_INPUTS + ["controlnet_cond", "conditioning_scale"], outputs, axes, opset)
    cfg = dict(controlnet.config)
    cfg["_class_name"] = "ControlNetModel"
    write_config(out_dir / "config.json", cfg)
    return n


def export_residual_unet(unet, controlnet, out_dir: Path, opset=18):
    """An SDXL U-Net taking `controlnet`'s residuals (`unet_controlnet/`); returns the input names of the residuals."""
    sample, t, ehs, te, tid, cond = example_inputs(unet.config)
    with torch.no_grad():
        down, mid = controlnet(sample, t, ehs, cond, added_cond_kwargs={"text_embeds": te, "time_ids": tid}, return_dict=False)
    n = len(down)
    residual_names = [f"down_block_additional_residual_{i}" for i in range(n)] + ["mid_block_additional_residual"]
    axes = dict(BASE_AXES, out_sample={0: "batch", 2: "height", 3: "width"})
    axes.update({r: {0: "batch", 2: f"{r}_h", 3: f"{r}_w"} for r in residual_names})
    export(ResidualUnet(unet, n), (sample, t, ehs, te, tid, *down, mid), out_dir / "model.onnx",
           BASE_INPUTS + residual_names, ["out_sample"], axes, opset)
    write_config(out_dir / "config.json", dict(unet.config))
    return residual_names


def main():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pipe = build_pipeline()
    # The rebuilt text encoders must be tiny-sdxl's.
    ids = torch.tensor([pipe.tokenizer_2("mossy stone brick wall", padding="max_length", max_length=77).input_ids])
    with torch.no_grad():
        te2 = pipe.text_encoder_2(ids, output_hidden_states=True)
        te1 = pipe.text_encoder(ids, output_hidden_states=True)
    feeds = {"input_ids": ids.numpy().astype(np.int64)}
    check_against_onnx("rebuilt text_encoder_2 vs tiny-sdxl", [te2.text_embeds], TINY_SDXL / "text_encoder_2" / "model.onnx", feeds)
    check_against_onnx("rebuilt text_encoder vs tiny-sdxl", [te1.last_hidden_state], TINY_SDXL / "text_encoder" / "model.onnx", feeds)

    if OUT.exists():
        shutil.rmtree(OUT)
    unet = pipe.unet
    controlnet = build_controlnet(unet)
    n = export_controlnet(controlnet, OUT / "controlnet" / "xl")

    sample, t, ehs, te, tid, _ = example_inputs(unet.config)
    axes = dict(BASE_AXES, out_sample={0: "batch", 2: "height", 3: "width"})
    export(PlainUnet(unet), (sample, t, ehs, te, tid), OUT / "unet" / "model.onnx", BASE_INPUTS, ["out_sample"], axes)
    write_config(OUT / "unet" / "config.json", dict(unet.config))
    residual_names = export_residual_unet(unet, controlnet, OUT / "unet_controlnet")

    # Checks: every export against torch, and that the control image and the
    # residuals matter.
    sample, t, ehs, te, tid, cond = example_inputs(unet.config, seed=9)
    added = {"text_embeds": te, "time_ids": tid}
    with torch.no_grad():
        down, mid = controlnet(sample, t, ehs, cond, conditioning_scale=0.7, added_cond_kwargs=added, return_dict=False)
        down_other, _ = controlnet(sample, t, ehs, torch.flip(cond, [3]), conditioning_scale=0.7, added_cond_kwargs=added,
                                   return_dict=False)
        controlled = unet(sample, t, ehs, added_cond_kwargs=added, down_block_additional_residuals=down,
                          mid_block_additional_residual=mid).sample
        plain = unet(sample, t, ehs, added_cond_kwargs=added).sample
    base = {"sample": sample.numpy(), "timestep": np.array(901.0, np.float32), "encoder_hidden_states": ehs.numpy(),
            "text_embeds": te.numpy(), "time_ids": tid.numpy()}
    check_against_onnx("unet", [plain], OUT / "unet" / "model.onnx", base)
    check_against_onnx("controlnet/xl", [*down, mid], OUT / "controlnet" / "xl" / "model.onnx",
                       dict(base, controlnet_cond=cond.numpy(), conditioning_scale=np.array(0.7, np.float32)))
    ufeeds = dict(base)
    ufeeds.update({name: r.numpy() for name, r in zip(residual_names, [*down, mid])})
    check_against_onnx("unet_controlnet", [controlled], OUT / "unet_controlnet" / "model.onnx", ufeeds)
    image_effect = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(down, down_other))
    unet_effect = float((controlled - plain).abs().max() / plain.abs().max())
    print(f"{n} down residuals; flipping the control image changes a residual by {image_effect:.3f} of its size; "
          f"the residuals change the U-Net output by {unet_effect:.3f} of its size")
    assert image_effect > 0.01 and unet_effect > 0.01
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>10}  {p.relative_to(OUT)}")


if __name__ == "__main__":
    main()
