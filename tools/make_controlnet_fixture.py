#!/usr/bin/env python3
"""Export ControlNets and a residual-taking U-Net in Kiln's ControlNet layout.

optimum has no ControlNet export task, so Kiln defines the layout (README,
"ControlNet") and this script writes it:

    unet_controlnet/model.onnx      sample, timestep, encoder_hidden_states,
                                    down_block_additional_residual_0..N-1,
                                    mid_block_additional_residual -> out_sample
    controlnet/<name>/model.onnx    sample, timestep, encoder_hidden_states,
                                    controlnet_cond ([B, 3, H, W] in [0, 1]),
                                    conditioning_scale (rank 0)
                                    -> down_block_res_sample_0..N-1, mid_block_res_sample
    controlnet/<name>/config.json   the diffusers ControlNetModel config

Three modes:

  * fixture (default): the tiny test fixture. The torch tiny-sd pipeline is
    rebuilt exactly as tools/make_tiny_fixture.py builds it (seeded), checked
    against tests/fixtures/tiny-sd's ONNX graphs, and a ControlNet is made
    with ``ControlNetModel.from_unet`` and then randomized (seeded: every
    weight perturbed, the zero convolutions made non-zero, so the control
    image matters). Also two small broken ControlNets for the error tests:
    ``wide-text`` (64-wide text embeddings: another base architecture) and
    ``few-residuals`` (one layer per block: 4 residuals instead of 6).
    Writes tests/fixtures/controlnet/.

  * ``--diffusers MODEL --controlnet NAME=CN_MODEL ... --out DIR``: exports a
    real diffusers U-Net and ControlNets (folders or hub ids, e.g.
    ``lllyasviel/control_v11p_sd15_canny``) into an existing optimum export DIR.

  * ``--sd15-random DIR``: a full-size SD 1.5-architecture ControlNet with
    seeded random weights (``from_unet`` on the U-Net that
    tools/make_sd15_random.py builds with the same seed, then randomized),
    plus its ``unet_controlnet``, added to DIR, an export made by
    tools/make_sd15_random.py (--exporter torch or optimum). For measuring what
    a ControlNet costs per step (examples/controlnet_bench.rs): compute does
    not depend on weight values. About 5 GB; keep it outside the repository.

    /work/venv/bin/python tools/make_controlnet_fixture.py
    /work/venv/bin/python tools/make_controlnet_fixture.py --inpaint9
    /work/venv/bin/python tools/make_sd15_random.py /work/tmp/sd15-cn --exporter torch --no-check
    /work/venv/bin/python tools/make_controlnet_fixture.py --sd15-random /work/tmp/sd15-cn
    /work/venv/bin/python tools/make_controlnet_fixture.py --diffusers runwayml/stable-diffusion-v1-5 \\
        --controlnet canny=lllyasviel/control_v11p_sd15_canny --out sd15-onnx
    /work/venv/bin/python tools/make_controlnet_fixture.py --diffusers stabilityai/stable-diffusion-xl-base-1.0 \\
        --controlnet canny=diffusers/controlnet-canny-sdxl-1.0 --out sdxl-onnx

  * ``--inpaint9``: ``unet_controlnet`` for the 9-channel inpainting variant
    (tests/fixtures/variants/inpaint9, made by tools/make_variant_fixtures.py),
    taking the residuals of the ``few-residuals`` ControlNet, whose
    architecture is that U-Net's. Writes tests/fixtures/controlnet-inpaint9/.

An SDXL U-Net (``addition_embed_type="text_time"``) gets the SDXL layout of
tools/make_sdxl_controlnet_fixture.py: the ControlNet and ``unet_controlnet``
also take ``text_embeds`` and ``time_ids``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "fixtures" / "tiny-sd"
OUT = REPO / "tests" / "fixtures" / "controlnet"
INPAINT9 = REPO / "tests" / "fixtures" / "variants" / "inpaint9"
sys.path.insert(0, str(REPO / "tools"))


class ControlNetGraph(torch.nn.Module):
    """A ControlNet with flat outputs: the down residuals, then the mid one."""

    def __init__(self, controlnet):
        super().__init__()
        self.controlnet = controlnet

    def forward(self, sample, timestep, encoder_hidden_states, controlnet_cond, conditioning_scale):
        down, mid = self.controlnet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, controlnet_cond=controlnet_cond,
            conditioning_scale=conditioning_scale, return_dict=False,
        )
        return (*down, mid)


class ResidualUnet(torch.nn.Module):
    """A U-Net taking the ControlNet residuals as separate inputs."""

    def __init__(self, unet, count):
        super().__init__()
        self.unet = unet
        self.count = count

    def forward(self, sample, timestep, encoder_hidden_states, *residuals):
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states,
            down_block_additional_residuals=list(residuals[: self.count]),
            mid_block_additional_residual=residuals[self.count], return_dict=False,
        )[0]


def residual_count(controlnet):
    sample, t, ehs, cond = example_inputs(controlnet.config, 1, 8, 8)
    with torch.no_grad():
        down, _ = controlnet(sample, t, ehs, cond, return_dict=False)
    return len(down)


def example_inputs(cfg, batch, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    sample = torch.randn(batch, cfg["in_channels"], h, w, generator=g)
    ehs = torch.randn(batch, 77, cfg["cross_attention_dim"], generator=g)
    cond = torch.rand(batch, 3, h * 8, w * 8, generator=g)
    return sample, torch.tensor(901.0), ehs, cond


def write_config(path: Path, cfg: dict):
    """A diffusers config as JSON, byte-stable across runs: diffusers keeps
    `_use_default_values` as a list made from a set, whose order changes with
    Python's string hashing, so it is sorted."""
    cfg = dict(cfg)
    if isinstance(cfg.get("_use_default_values"), (list, set, tuple)):
        cfg["_use_default_values"] = sorted(cfg["_use_default_values"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True, default=list) + "\n")


def export_controlnet(controlnet, out_dir: Path, opset: int):
    out_dir.mkdir(parents=True, exist_ok=True)
    n = residual_count(controlnet)
    sample, t, ehs, cond = example_inputs(controlnet.config, 2, 8, 8)
    outputs = [f"down_block_res_sample_{i}" for i in range(n)] + ["mid_block_res_sample"]
    axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "encoder_hidden_states": {0: "batch", 1: "sequence"},
            "controlnet_cond": {0: "batch", 2: "image_height", 3: "image_width"}}
    for o in outputs:
        axes[o] = {0: "batch", 2: f"{o}_h", 3: f"{o}_w"}
    torch.onnx.export(
        ControlNetGraph(controlnet).eval(), (sample, t, ehs, cond, torch.tensor(1.0)), str(out_dir / "model.onnx"),
        input_names=["sample", "timestep", "encoder_hidden_states", "controlnet_cond", "conditioning_scale"],
        output_names=outputs, dynamic_axes=axes, opset_version=opset, dynamo=False,
    )
    cfg = dict(controlnet.config)
    cfg["_class_name"] = "ControlNetModel"
    write_config(out_dir / "config.json", cfg)
    return n


def export_residual_unet(unet, controlnet, out_dir: Path, opset: int):
    out_dir.mkdir(parents=True, exist_ok=True)
    n = residual_count(controlnet)
    sample, t, ehs, cond = example_inputs(controlnet.config, 2, 8, 8)
    with torch.no_grad():
        down, mid = controlnet(sample, t, ehs, cond, return_dict=False)
    if unet.config.in_channels != sample.shape[1]:
        # A 9-channel inpainting U-Net with a 4-channel ControlNet.
        sample = torch.randn(2, unet.config.in_channels, 8, 8, generator=torch.Generator().manual_seed(1))
    inputs = ["sample", "timestep", "encoder_hidden_states"] + [f"down_block_additional_residual_{i}" for i in range(n)] + [
        "mid_block_additional_residual"]
    axes = {"sample": {0: "batch", 2: "height", 3: "width"}, "encoder_hidden_states": {0: "batch", 1: "sequence"},
            "out_sample": {0: "batch", 2: "height", 3: "width"}}
    for name in inputs[3:]:
        axes[name] = {0: "batch", 2: f"{name}_h", 3: f"{name}_w"}
    torch.onnx.export(
        ResidualUnet(unet, n).eval(), (sample, t, ehs, *down, mid), str(out_dir / "model.onnx"),
        input_names=inputs, output_names=["out_sample"], dynamic_axes=axes, opset_version=opset, dynamo=False,
    )
    write_config(out_dir / "config.json", dict(unet.config))


def randomize(controlnet, seed):
    """Perturbs every weight; the zero convolutions become non-zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in controlnet.named_parameters():
            if name.startswith("controlnet_cond_embedding"):
                # The control image's way in: re-drawn with a He-style gain
                # so its features keep their spatial detail to the output
                # instead of fading to the biases.
                if name.endswith("weight"):
                    fan_in = p[0].numel()
                    p.copy_(torch.randn(p.shape, generator=g) * (1.5 * (2.0 / fan_in) ** 0.5))
                else:
                    p.copy_(torch.randn(p.shape, generator=g) * 0.02)
                continue
            if name.startswith(("controlnet_down_blocks", "controlnet_mid_block")):
                std = 0.05  # the zero convolutions
            else:
                std = 0.02 * float(p.std()) if p.numel() > 1 else 0.02
            p.add_(torch.randn(p.shape, generator=g) * std)
    return controlnet.eval()


def check_against_onnx(name, torch_out, path, feeds):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, feeds)
    worst = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(got, torch_out))
    print(f"parity {name}: max |onnx - torch| = {worst:.3e}")
    assert worst < 1e-4, name


def make_fixture(opset: int):
    from diffusers import ControlNetModel
    from make_tiny_fixture import build_pipeline

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pipe = build_pipeline(TINY / "tokenizer")
    # The rebuilt torch U-Net must be the one in the fixture.
    g = torch.Generator().manual_seed(5)
    sample, ehs = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        ref = pipe.unet(sample, torch.tensor(501.0), ehs).sample
    check_against_onnx("rebuilt unet vs tiny-sd/unet", [ref], TINY / "unet" / "model.onnx",
                       {"sample": sample.numpy(), "timestep": np.array(501.0, np.float32), "encoder_hidden_states": ehs.numpy()})

    small = dict(conditioning_embedding_out_channels=(16, 16, 32, 32))
    controlnet = randomize(ControlNetModel.from_unet(pipe.unet, **small), seed=17)
    n = export_controlnet(controlnet, OUT / "controlnet" / "tiny", opset)
    export_residual_unet(pipe.unet, controlnet, OUT / "unet_controlnet", opset)

    # Another base architecture (64-wide text embeddings) and a ControlNet
    # with fewer residuals than the U-Net takes (4, not 6): only the error
    # tests use them, so they are as small as diffusers allows.
    torch.manual_seed(0)
    wide = ControlNetModel(block_out_channels=(32, 32), layers_per_block=1, cross_attention_dim=64, attention_head_dim=8,
                           norm_num_groups=32, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), **small)
    export_controlnet(randomize(wide, 3), OUT / "controlnet" / "wide-text", opset)
    export_controlnet(small_controlnet(), OUT / "controlnet" / "few-residuals", opset)

    # Checks: the exports against torch, and that the control image and the
    # residuals matter (a ControlNet that changes nothing tests nothing).
    sample, t, ehs, cond = example_inputs(controlnet.config, 2, 8, 8, seed=9)
    with torch.no_grad():
        down, mid = controlnet(sample, t, ehs, cond, conditioning_scale=0.7, return_dict=False)
        down_other, _ = controlnet(sample, t, ehs, torch.flip(cond, [3]), conditioning_scale=0.7, return_dict=False)
        controlled = pipe.unet(sample, t, ehs, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        plain = pipe.unet(sample, t, ehs).sample
    feeds = {"sample": sample.numpy(), "timestep": np.array(901.0, np.float32), "encoder_hidden_states": ehs.numpy(),
             "controlnet_cond": cond.numpy(), "conditioning_scale": np.array(0.7, np.float32)}
    check_against_onnx("controlnet/tiny", [*down, mid], OUT / "controlnet" / "tiny" / "model.onnx", feeds)
    ufeeds = {"sample": sample.numpy(), "timestep": np.array(901.0, np.float32), "encoder_hidden_states": ehs.numpy()}
    ufeeds.update({f"down_block_additional_residual_{i}": d.numpy() for i, d in enumerate(down)})
    ufeeds["mid_block_additional_residual"] = mid.numpy()
    check_against_onnx("unet_controlnet", [controlled], OUT / "unet_controlnet" / "model.onnx", ufeeds)
    image_effect = max(float((a - b).abs().max() / a.abs().max()) for a, b in zip(down, down_other))
    unet_effect = float((controlled - plain).abs().max() / plain.abs().max())
    print(f"{n} down residuals; flipping the control image changes a residual by {image_effect:.3f} of its size; "
          f"the residuals change the U-Net output by {unet_effect:.3f} of its size")
    assert image_effect > 0.01 and unet_effect > 0.01
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>10}  {p.relative_to(OUT)}")


def small_controlnet():
    """The ControlNet of tests/fixtures/controlnet/controlnet/few-residuals:
    the architecture of tools/make_variant_fixtures.py's small U-Net (32/32
    channels, one layer per block: 4 down residuals), seeded. tiny-sd's error
    tests use it as a mismatch; for the 9-channel inpainting variant, whose
    U-Net has that architecture, it is the matching ControlNet."""
    from diffusers import ControlNetModel

    torch.manual_seed(0)
    few = ControlNetModel(block_out_channels=(32, 32), layers_per_block=1, cross_attention_dim=32, attention_head_dim=8,
                          norm_num_groups=32, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                          conditioning_embedding_out_channels=(16, 16, 32, 32))
    return randomize(few, 4)


def inpaint9_unet():
    """tests/fixtures/variants/inpaint9's U-Net (9 input channels), rebuilt as
    tools/make_variant_fixtures.py builds it (seeded) and checked against its
    ONNX graph."""
    from make_variant_fixtures import small_unet

    unet = small_unet(in_channels=9)
    g = torch.Generator().manual_seed(5)
    sample, ehs = torch.randn(2, 9, 8, 8, generator=g), torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        ref = unet(sample, torch.tensor(501.0), ehs).sample
    check_against_onnx("rebuilt unet vs variants/inpaint9/unet", [ref], INPAINT9 / "unet" / "model.onnx",
                       {"sample": sample.numpy(), "timestep": np.array(501.0, np.float32), "encoder_hidden_states": ehs.numpy()})
    return unet


def make_inpaint9_fixture(opset: int):
    """`unet_controlnet/` for the 9-channel inpainting variant: its U-Net
    taking the residuals of `small_controlnet()` (a 4-channel ControlNet: as
    in diffusers' StableDiffusionControlNetInpaintPipeline, the net sees the
    latents without the mask channels). Writes tests/fixtures/controlnet-inpaint9/;
    the tests assemble variants/inpaint9 + this + controlnet/few-residuals
    (as controlnet/small)."""
    unet = inpaint9_unet()
    controlnet = small_controlnet()
    out = REPO / "tests" / "fixtures" / "controlnet-inpaint9"
    export_residual_unet(unet, controlnet, out / "unet_controlnet", opset)
    # The export against torch, and the residuals must matter.
    sample, t, ehs, cond = example_inputs(controlnet.config, 2, 8, 8, seed=9)
    unet_sample = torch.cat([sample, torch.rand(2, 5, 8, 8, generator=torch.Generator().manual_seed(3))], 1)
    with torch.no_grad():
        down, mid = controlnet(sample, t, ehs, cond, conditioning_scale=0.7, return_dict=False)
        controlled = unet(unet_sample, t, ehs, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
        plain = unet(unet_sample, t, ehs).sample
    check_against_onnx("controlnet/few-residuals", [*down, mid], OUT / "controlnet" / "few-residuals" / "model.onnx",
                       {"sample": sample.numpy(), "timestep": np.array(901.0, np.float32),
                        "encoder_hidden_states": ehs.numpy(), "controlnet_cond": cond.numpy(),
                        "conditioning_scale": np.array(0.7, np.float32)})
    ufeeds = {"sample": unet_sample.numpy(), "timestep": np.array(901.0, np.float32), "encoder_hidden_states": ehs.numpy()}
    ufeeds.update({f"down_block_additional_residual_{i}": d.numpy() for i, d in enumerate(down)})
    ufeeds["mid_block_additional_residual"] = mid.numpy()
    check_against_onnx("controlnet-inpaint9/unet_controlnet", [controlled], out / "unet_controlnet" / "model.onnx", ufeeds)
    unet_effect = float((controlled - plain).abs().max() / plain.abs().max())
    print(f"the residuals change the 9-channel U-Net's output by {unet_effect:.3f} of its size")
    assert unet_effect > 0.01
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"{p.stat().st_size:>10}  {p.relative_to(out)}")


def export_real(model: str, controlnets: list[str], out: Path, opset: int):
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet").eval()
    # SDXL (added conditioning `text_time`): the ControlNet and the residual
    # U-Net also take `text_embeds` and `time_ids`.
    if unet.config.get("addition_embed_type") == "text_time":
        import make_sdxl_controlnet_fixture as xl

        export_cn, export_unet = xl.export_controlnet, xl.export_residual_unet
    else:
        export_cn, export_unet = export_controlnet, export_residual_unet
    first = None
    for spec in controlnets:
        name, _, source = spec.partition("=")
        cn = ControlNetModel.from_pretrained(source).eval()
        if cn.config.get("addition_embed_type") != unet.config.get("addition_embed_type"):
            sys.exit(f"{source}: its addition_embed_type {cn.config.get('addition_embed_type')!r} is not the U-Net's "
                     f"{unet.config.get('addition_embed_type')!r} (a ControlNet for another base model)")
        export_cn(cn, out / "controlnet" / name, opset)
        first = first or cn
    if first is None:
        sys.exit("--controlnet NAME=MODEL is needed at least once")
    export_unet(unet, first, out / "unet_controlnet", opset)


def export_sd15_random(out: Path, seed: int, opset: int):
    """A random SD 1.5-size ControlNet and residual U-Net next to make_sd15_random.py's export."""
    import time

    from diffusers import ControlNetModel, UNet2DConditionModel
    from make_sd15_random import SD15_UNET

    if not (out / "unet" / "model.onnx").is_file():
        sys.exit(f"{out} has no unet/model.onnx: make it first with tools/make_sd15_random.py")
    if REPO in out.resolve().parents:
        sys.exit(f"{out} is inside the repository; put the ~5 GB export elsewhere")
    t = time.time()
    torch.manual_seed(seed)  # as make_sd15_random.build_pipeline seeds the U-Net: the same weights
    unet = UNet2DConditionModel(**SD15_UNET).to(torch.float32).eval()
    controlnet = randomize(ControlNetModel.from_unet(unet), seed=17)
    print(f"built in {time.time() - t:.0f} s; ControlNet parameters: "
          f"{sum(p.numel() for p in controlnet.parameters()) / 1e6:.2f} M", flush=True)
    n = export_controlnet(controlnet, out / "controlnet" / "sd15", opset)
    print(f"exported controlnet/sd15 ({n} down residuals) at {time.time() - t:.0f} s", flush=True)
    export_residual_unet(unet, controlnet, out / "unet_controlnet", opset)
    print(f"exported unet_controlnet at {time.time() - t:.0f} s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--diffusers", help="a diffusers SD 1.x/2.x or SDXL model (folder or hub id) whose U-Net to export")
    ap.add_argument("--controlnet", action="append", default=[], help="NAME=MODEL, repeatable")
    ap.add_argument("--out", type=Path, help="the optimum export to add the ControlNet layout to")
    ap.add_argument("--sd15-random", type=Path, metavar="DIR",
                    help="add a random SD 1.5-size ControlNet to tools/make_sd15_random.py's export in DIR")
    ap.add_argument("--seed", type=int, default=0, help="--sd15-random: the seed make_sd15_random.py used")
    ap.add_argument("--inpaint9", action="store_true",
                    help="write tests/fixtures/controlnet-inpaint9 (unet_controlnet for the 9-channel inpainting variant)")
    ap.add_argument("--opset", type=int, default=18)
    args = ap.parse_args()
    if args.inpaint9:
        make_inpaint9_fixture(args.opset)
    elif args.sd15_random:
        export_sd15_random(args.sd15_random, args.seed, args.opset)
    elif args.diffusers:
        if not args.out:
            sys.exit("--out DIR is needed with --diffusers")
        export_real(args.diffusers, args.controlnet, args.out, args.opset)
    else:
        make_fixture(args.opset)


if __name__ == "__main__":
    main()
