#!/usr/bin/env python3
"""LyCORIS full-difference files (`algo=full`: `.diff` and `.diff_b`) made by
LyCORIS itself (the `lycoris-lora` package) for tests/fixtures/tiny-sd, with
goldens from LyCORIS's own merged weights.

What it makes (in OUT, default tests/fixtures/lycoris_full/):
  sculpt.full.safetensors   a FullModule on every attention/feed-forward Linear, every
                            resnet 3x3 conv, conv_in and time_embedding.linear_1 of the
                            U-Net (so MatMul + Add, Conv and Gemm layers, with their
                            biases as `diff_b`) and on the text encoder's Linears; f16
  etch.locon.safetensors    a LyCORIS LoCon on the U-Net's attention layers (f32), to
                            stack with the full file on the same layers
  broken/shared_bias.safetensors   one text-encoder module with a `diff_b`: the tiny
                            text encoder's biases are all zero, and the exporter kept one
                            tensor for all of them, so Kiln must refuse it (see below)
  broken/bias_only.safetensors     a `diff_b` without its `diff`
  cases.json, <case>.latents.npy, <case>.image.npy, noise_1x4x8x8.npy   goldens
  README.md

Each FullModule is built on the seeded PyTorch tiny pipeline's layer
(tools/make_tiny_fixture.py, checked against the committed ONNX fixture), its
difference set to seeded random values (0.3 of the layer's weight spread, and
its bias spread for the bias; rounded to f16 so the reference uses the
stored values), then `apply_to()`'d as LyCORIS's network does, and the file
holds its `custom_state_dict()` under the kohya names LyCORIS writes
(`lora_unet_...`, `lora_te_...`).

The tiny text encoder's Linear biases are zero, and the optimum export
deduplicated them into one initializer read by every projection; a bias
difference for one of them cannot be applied without changing the others, so
the text-encoder modules of sculpt keep only their `diff` (as a file trained
with frozen text-encoder biases would) and broken/shared_bias.safetensors
checks the refusal. Real CLIP weights have distinct trained biases.

The reference weight of each layer at strength s is LyCORIS's own
`make_weight(s)`: W + s·diff and b + s·diff_b (the module's forward at
multiplier 1 is checked to equal the layer run with them). The reference
pipeline is a fresh copy of the PyTorch pipeline with those weights (and, when
stacked, the LoCon's rebuild added at its strength as
tools/make_lycoris_native_fixture.py does), exported with optimum's
main_export and run by tools/make_golden.py run_case (optimum's
ORTStableDiffusionPipeline, CPU EP) with the golden noise. Each case must move
the final latents by 2e-2 against the plain model and, for the full file,
against the same file with its `diff_b` left out (so a lost bias fails).

Usage (from repo root):
    /work/venv/bin/python tools/make_lycoris_full_fixture.py [--out tests/fixtures/lycoris_full]
Needs the fixture venv (tools/requirements-fixtures.txt, which includes lycoris-lora).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import adapter_golden  # noqa: E402
import make_lycoris_native_fixture as native  # noqa: E402
from make_lora_fixture import TE_TARGETS, build_torch_pipe, check_same_weights_as_fixture, export  # noqa: E402

UNET_FULL = native.UNET_LINEAR + native.UNET_CONV + ["conv_in", "time_embedding.linear_1"]
SEED = 51
WEIGHT_STD = 0.3
BIAS_STD = 1.0

# name, kiln scheduler, diffusers class, steps, guidance, prompt, negative, [(file, strength)]
CASES = [
    ("full_euler", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("sculpt.full.safetensors", 1.0)]),
    ("full_ddim_s06", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("sculpt.full.safetensors", 0.6)]),
    ("full_locon_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry",
     [("sculpt.full.safetensors", -0.5), ("etch.locon.safetensors", 0.8)]),
]


# (pipeline part, key prefix, target layers, the module path as the file names it)
SD_PARTS = [("unet", "lora_unet_", UNET_FULL, lambda name: name), ("text_encoder", "lora_te_", TE_TARGETS, lambda name: name)]


def make_full(path: Path, build=build_torch_pipe, parts=SD_PARTS, seed: int = SEED) -> dict:
    """The full-difference file on `parts` of fresh `build()` pipelines (the
    text encoders without `diff_b`, see the docstring); returns {part: {layer: applied FullModule}}."""
    import torch
    from lycoris.modules.full import FullModule
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    tensors, modules, worst = {}, {}, 0.0
    for part, prefix, names, file_name in parts:
        pipe_part = getattr(build(), part)
        modules[part] = {}
        for name, layer in native.targets_of(pipe_part, names):
            key = prefix + file_name(name).replace(".", "_")
            w, b = layer.weight.detach().float(), None if layer.bias is None else layer.bias.detach().float()
            lyc = FullModule(key, layer, multiplier=1.0)
            lyc.eval()
            with torch.no_grad():
                lyc.weight.copy_((torch.randn(w.shape, generator=g) * WEIGHT_STD * w.std()).half().float())
                if b is not None:
                    lyc.bias.copy_((torch.randn(b.shape, generator=g) * BIAS_STD * max(float(b.std()), 0.1)).half().float())
            lyc.apply_to()
            want_w, want_b = lyc.make_weight(1.0)
            worst = max(worst, check_forward(lyc, want_w, want_b, g))
            state = lyc.custom_state_dict()
            if part != "unet":
                state.pop("diff_b", None)
            for k, v in state.items():
                tensors[f"{key}.{k}"] = v.detach().half().contiguous()
            modules[part][name] = lyc
    save_file(tensors, str(path), metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": repr({"algo": "full"})})
    n_bias = sum(k.endswith(".diff_b") for k in tensors)
    print(f"{path.name}: {sum(len(m) for m in modules.values())} modules, {n_bias} with diff_b; forward check max rel {worst:.1e}")
    return modules


def check_forward(lyc, weight, bias, g) -> float:
    """The applied module's forward equals the layer run with `weight` and `bias`."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        if lyc.module_type == "linear":
            x = torch.randn(3, weight.shape[1], generator=g)
            want = F.linear(x, weight, bias)
        else:
            x = torch.randn(1, weight.shape[1], 6, 6, generator=g)
            want = F.conv2d(x, weight, bias, **lyc.kw_dict)
        got = lyc(x)
    rel = float((got - want).abs().max() / want.abs().max())
    if rel > 1e-5:
        raise SystemExit(f"{lyc.lora_name}: LyCORIS's forward differs from its merged weight by {rel:.3e}")
    return rel


def reference_pipe(files, full: dict, locon: dict, with_bias: bool = True, build=build_torch_pipe):
    """A fresh `build()` pipeline with each file's reference weights at its strength."""
    import torch

    pipe = build()
    with torch.no_grad():
        for f, strength in files:
            mods = full if f.endswith(".full.safetensors") else locon
            for part, layers in mods.items():
                module = getattr(pipe, part)
                for name, lyc in layers.items():
                    layer = module.get_submodule(name)
                    if isinstance(lyc, native.lycoris_class("locon")):
                        original = lyc.org_module[0].weight.detach().float()
                        layer.weight += native.reference_weight(lyc, lyc.org_module[0], strength) - original
                        continue
                    weight, bias = lyc.make_weight(strength)
                    layer.weight += weight - lyc.org_weight
                    if with_bias and bias is not None and part == "unet":
                        layer.bias += bias - lyc.org_bias[0]
    return pipe


def write_broken(out: Path, full: dict) -> None:
    from safetensors.torch import save_file

    b = out / "broken"
    b.mkdir()
    name, lyc = next(iter(full["text_encoder"].items()))
    key = "lora_te_" + name.replace(".", "_")
    state = lyc.custom_state_dict()
    save_file({f"{key}.{k}": v.contiguous() for k, v in state.items()}, str(b / "shared_bias.safetensors"))
    name, lyc = next((n, m) for n, m in full["unet"].items() if m.org_bias is not None)
    save_file({"lora_unet_" + name.replace(".", "_") + ".diff_b": lyc.custom_state_dict()["diff_b"].contiguous()}, str(b / "bias_only.safetensors"))
    print("broken:", sorted(p.name for p in b.iterdir()))


def main() -> None:
    out = adapter_golden.output_folder(__doc__, REPO / "tests" / "fixtures" / "lycoris_full")
    from importlib.metadata import version

    import make_golden

    check_same_weights_as_fixture(build_torch_pipe())
    full = make_full(out / "sculpt.full.safetensors")
    attention = [("unet", "lora_unet_", native.UNET_LINEAR[:4], lambda name: name)]
    locon = native.make_file(out / "etch.locon.safetensors", "locon", "f32", 4, 2.0, 52, 0.3, {}, parts=attention)
    write_broken(out, full)

    with tempfile.TemporaryDirectory(prefix="kiln_lycoris_full_") as tmp:
        tmp = Path(tmp)
        noise, plain, base_config = adapter_golden.reference_setup()
        cases_json = []
        for i, (name, kiln, cls, steps, guidance, prompt, negative, files) in enumerate(CASES):
            ref = make_golden.load_pipe(export(reference_pipe(files, full, locon), tmp, f"c{i}"))
            controls = {"bias_effect": make_golden.load_pipe(export(reference_pipe(files, full, locon, with_bias=False), tmp, f"n{i}"))}
            case = (name, kiln, cls, steps, guidance, prompt, negative)
            cases_json.append(adapter_golden.golden_case(out, ref, plain, base_config, case, noise, [{"file": f, "scale": s} for f, s in files], controls))
    adapter_golden.write_index(out, cases_json, noise, "LyCORIS full-difference files (diff, diff_b) made by LyCORIS, and goldens",
                               "tools/make_lycoris_full_fixture.py", {"lycoris-lora": version("lycoris-lora")})


if __name__ == "__main__":
    main()
