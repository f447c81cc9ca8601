#!/usr/bin/env python3
"""LyCORIS files made by LyCORIS itself (the `lycoris-lora` package) for
tests/fixtures/tiny-sd, with goldens from LyCORIS's own rebuild of each layer.

What it makes (in OUT, default tests/fixtures/lycoris_native/):
  relief.locon.safetensors  LoCon with Tucker cores (`use_tucker`): every 3x3 resnet conv
                            as `lora_down` [r, in, 1, 1] · `lora_mid` [r, r, 3, 3] ·
                            `lora_up` [out, r, 1, 1]; attention/feed-forward layers and the
                            text encoder as plain LoRA; f32
  weave.loha.safetensors    LoHa with Tucker cores on the 3x3 convs (`hada_t1`, `hada_t2`,
                            `hada_w*_a` [r, out], `hada_w*_b` [r, in]); f16
  knot.lokr.safetensors     LoKr with a Tucker w2 on the 3x3 convs (`lokr_t2`,
                            `lokr_w2_a` [r, b], `lokr_w2_b` [r, d]); f16
  gloss.loha.safetensors    LoHa + DoRA (`weight_decompose`, `dora_scale` [out, 1(, 1, 1)]),
                            Tucker on the convs; f32
  frost.lokr.safetensors    LoKr + DoRA; f32
  dust.locon.safetensors    LoCon + DoRA with the magnitude per input channel
                            (`wd_on_out=False`, `dora_scale` [1, in(, 1, 1)]); f32
  cases.json, <case>.latents.npy, <case>.image.npy, noise_1x4x8x8.npy   goldens
  README.md

Every layer is a LyCORIS module (LoConModule, LohaModule, LokrModule) built on the
seeded PyTorch tiny pipeline's layer (tools/make_tiny_fixture.py, checked against the
committed ONNX fixture), its factors set to seeded random values (rounded to the
file's dtype, so the reference uses the stored values) and, for DoRA, the magnitude
set to the norm of W + delta perturbed by 1 + 0.3 N(0, 1) per row or column
(LyCORIS starts it at the norm of W, where DoRA is close to plain LoRA). The file
holds each module's `custom_state_dict()` (what LyCORIS saves) under the kohya
names LyCORIS's kohya network writes (`lora_unet_...`, `lora_te_...`).

The reference weight of each layer is what the module's own forward pass uses:
W + multiplier · rebuild, or `apply_weight_decompose(W + rebuild, multiplier)` with
DoRA, where rebuild is `make_weight() · scale` (LoCon) or `get_weight(shape)`
(LoHa/LoKr; alpha / rank applied once). The script checks that the module's
forward on random inputs equals the layer run with that weight. It does not use
`get_merged_weight`: in lycoris-lora 4.1.3 that applies LoHa's and LoKr's
alpha / rank twice (get_weight already includes it), unlike the module's forward
and ComfyUI/AUTOMATIC1111. DoRA cases run at strength 1: off 1, LyCORIS,
ComfyUI/AUTOMATIC1111 and diffusers each have their own rule, and Kiln follows
ComfyUI/AUTOMATIC1111 for these kohya-layout files.

The reference pipeline is a fresh copy of the PyTorch pipeline with every layer
replaced by its reference weight (the strength scales each rebuild, as
LyCORIS's forward does), exported with optimum's main_export and run by
tools/make_golden.py run_case (optimum's ORTStableDiffusionPipeline, CPU EP)
with the golden noise.

Usage (from repo root):
    /work/venv/bin/python tools/make_lycoris_native_fixture.py [--out tests/fixtures/lycoris_native]
Needs the fixture venv (tools/requirements-fixtures.txt, which includes lycoris-lora).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import adapter_golden  # noqa: E402
from make_lora_fixture import TE_TARGETS, build_torch_pipe, check_same_weights_as_fixture, export  # noqa: E402

# Linear layers of the U-Net, and every 3x3 conv of its resnets (where Tucker cores apply).
UNET_LINEAR = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out"]
UNET_CONV = ["resnets.0.conv1", "resnets.0.conv2", "resnets.1.conv1", "resnets.1.conv2", "resnets.2.conv1", "resnets.2.conv2"]

# file: (algo, dtype, rank, alpha, seed, std, LyCORIS module options)
FILES = {
    "relief.locon.safetensors": ("locon", "f32", 4, 2.0, 41, 0.3, {"use_tucker": True}),
    "weave.loha.safetensors": ("loha", "f16", 4, 3.0, 42, 0.35, {"use_tucker": True}),
    "knot.lokr.safetensors": ("lokr", "f16", 2, 3.0, 43, 0.3, {"use_tucker": True, "decompose_both": False}),
    "gloss.loha.safetensors": ("loha", "f32", 4, 2.0, 44, 0.3, {"use_tucker": True, "weight_decompose": True}),
    "frost.lokr.safetensors": ("lokr", "f32", 2, 2.0, 45, 0.3, {"weight_decompose": True}),
    "dust.locon.safetensors": ("locon", "f32", 4, 2.0, 46, 0.2, {"weight_decompose": True, "wd_on_out": False}),
}

# name, kiln scheduler, diffusers class, steps, guidance, prompt, negative, [(file, strength)]
CASES = [
    ("locon_tucker_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("relief.locon.safetensors", 0.8)]),
    ("loha_tucker_euler", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("weave.loha.safetensors", 1.0)]),
    ("lokr_tucker_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("knot.lokr.safetensors", 1.0)]),
    ("tucker_mixed_euler", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry",
     [("relief.locon.safetensors", 0.5), ("weave.loha.safetensors", -0.6), ("knot.lokr.safetensors", 0.7)]),
    ("loha_dora_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("gloss.loha.safetensors", 1.0)]),
    ("lokr_dora_euler", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("frost.lokr.safetensors", 1.0)]),
    ("dora_per_input_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("dust.locon.safetensors", 1.0)]),
]


def lycoris_class(algo: str):
    from lycoris.modules.locon import LoConModule
    from lycoris.modules.loha import LohaModule
    from lycoris.modules.lokr import LokrModule

    return {"locon": LoConModule, "loha": LohaModule, "lokr": LokrModule}[algo]


def targets_of(module, names):
    """(name, layer) of every Linear/Conv2d of `module` whose path ends with one of `names`."""
    import torch.nn as nn

    for name, m in module.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)) and any(name.endswith(t) for t in names):
            yield name, m


def rebuild_of(lyc, shape):
    """The module's weight delta as its forward builds it: `make_weight() · scale`
    (LoCon) or `get_weight(shape)` (LoHa/LoKr, alpha / rank already in it)."""
    if lyc.__class__.__name__ == "LoConModule":
        return (lyc.make_weight() * lyc.scale).reshape(shape)
    return (lyc.get_weight(lyc.shape) * lyc.scalar).reshape(shape)


def reference_weight(lyc, layer, multiplier: float):
    """The weight LyCORIS's forward runs the layer with (see the docstring)."""
    import torch

    with torch.no_grad():
        w = layer.weight.detach().float()
        rebuild = rebuild_of(lyc, w.shape)
        if lyc.wd:
            return lyc.apply_weight_decompose(w + rebuild, multiplier)
        return w + rebuild * multiplier


def check_forward(lyc, layer, weight, g) -> float:
    """LyCORIS's forward equals the layer run with `weight`; returns the max relative difference."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        if isinstance(layer, torch.nn.Linear):
            x = torch.randn(3, layer.in_features, generator=g)
            want = F.linear(x, weight, layer.bias)
        else:
            x = torch.randn(1, layer.in_channels, 6, 6, generator=g)
            want = F.conv2d(x, weight, layer.bias, layer.stride, layer.padding, layer.dilation, layer.groups)
        got = lyc(x)
    rel = float((got - want).abs().max() / want.abs().max())
    if rel > 1e-5:
        raise SystemExit(f"{lyc.lora_name}: LyCORIS's forward differs from the reference weight by {rel:.3e}")
    return rel


# (pipeline part, key prefix, target layers, the module path as the file names it)
SD_PARTS = [("unet", "lora_unet_", UNET_LINEAR + UNET_CONV, lambda name: name), ("text_encoder", "lora_te_", TE_TARGETS, lambda name: name)]


def make_file(path: Path, algo: str, dtype: str, rank: int, alpha: float, seed: int, std: float, options: dict,
              build=build_torch_pipe, parts=SD_PARTS):
    """Builds LyCORIS modules on `parts` of a fresh `build()` pipeline, writes the file;
    returns {part: {layer: LyCORIS module}}."""
    import torch
    from safetensors.torch import save_file

    torch_dtype = {"f32": torch.float32, "f16": torch.float16}[dtype]
    cls = lycoris_class(algo)
    g = torch.Generator().manual_seed(seed)
    tensors, modules, worst, kinds = {}, {}, 0.0, set()
    for part, prefix, names, file_name in parts:
        pipe_part = getattr(build(), part)
        modules[part] = {}
        for name, layer in targets_of(pipe_part, names):
            key = prefix + file_name(name).replace(".", "_")
            lyc = cls(key, layer, multiplier=1.0, lora_dim=rank, alpha=alpha, **options)
            lyc.eval()
            with torch.no_grad():
                for pname, p in lyc.named_parameters():
                    if pname != "dora_scale":
                        p.copy_((torch.randn(p.shape, generator=g) * std).to(torch_dtype).float())
                if lyc.wd:
                    # The norm DoRA would start from for these factors, perturbed so DoRA matters.
                    w = layer.weight.detach().float()
                    v = w + rebuild_of(lyc, w.shape)
                    if lyc.wd_on_out:
                        norm = v.reshape(v.shape[0], -1).norm(dim=1)
                    else:
                        norm = v.transpose(0, 1).reshape(v.shape[1], -1).norm(dim=1)
                    ds = lyc.dora_scale
                    ds.copy_((norm.reshape(ds.shape) * (1 + 0.3 * torch.randn(ds.shape, generator=g))).to(torch_dtype).float())
            worst = max(worst, check_forward(lyc, layer, reference_weight(lyc, layer, 1.0), g))
            for k, v in lyc.custom_state_dict().items():
                tensors[f"{key}.{k}"] = v.detach().to(torch_dtype).contiguous()
            kinds.add(tuple(sorted(k for k in lyc.custom_state_dict() if k not in ("alpha", "dora_scale"))))
            modules[part][name] = lyc
    save_file(tensors, str(path), metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": repr({"algo": algo, **options})})
    print(f"{path.name}: {sum(len(m) for m in modules.values())} modules, tensor sets {sorted(kinds)}; forward check max rel {worst:.1e}")
    return modules


def merged_pipe(files, adapters, build=build_torch_pipe):
    """A fresh `build()` pipeline with each file's reference weights at its strength."""
    import torch

    pipe = build()
    with torch.no_grad():
        for f, strength in files:
            for part, mods in adapters[f].items():
                module = getattr(pipe, part)
                for name, lyc in mods.items():
                    if lyc.wd and strength != 1.0:
                        raise SystemExit(f"{f}: DoRA cases run at strength 1 (see the docstring)")
                    layer = module.get_submodule(name)
                    original = lyc.org_module[0].weight.detach().float()
                    layer.weight += reference_weight(lyc, lyc.org_module[0], strength) - original
    return pipe


def without_magnitude(f: str, adapters, build=build_torch_pipe):
    """The same factors without DoRA: the plain rebuild at strength 1."""
    mods = adapters[f]
    saved = {id(l): l.wd for part in mods.values() for l in part.values()}
    for part in mods.values():
        for lyc in part.values():
            lyc.wd = False
    pipe = merged_pipe([(f, 1.0)], adapters, build)
    for part in mods.values():
        for lyc in part.values():
            lyc.wd = saved[id(lyc)]
    return pipe


def main() -> None:
    out = adapter_golden.output_folder(__doc__, REPO / "tests" / "fixtures" / "lycoris_native")
    from importlib.metadata import version

    import make_golden

    check_same_weights_as_fixture(build_torch_pipe())
    adapters = {f: make_file(out / f, *spec) for f, spec in FILES.items()}

    with tempfile.TemporaryDirectory(prefix="kiln_lycoris_native_") as tmp:
        tmp = Path(tmp)
        noise, plain, base_config = adapter_golden.reference_setup()
        cases_json = []
        for i, (name, kiln, cls, steps, guidance, prompt, negative, files) in enumerate(CASES):
            ref = make_golden.load_pipe(export(merged_pipe(files, adapters), tmp, f"c{i}"))
            controls = {}
            dora = [f for f, _ in files if FILES[f][6].get("weight_decompose")]
            if dora:
                controls["magnitude_effect"] = make_golden.load_pipe(export(without_magnitude(dora[0], adapters), tmp, f"n{i}"))
            case = (name, kiln, cls, steps, guidance, prompt, negative)
            cases_json.append(adapter_golden.golden_case(out, ref, plain, base_config, case, noise, [{"file": f, "scale": s} for f, s in files], controls))
    adapter_golden.write_index(out, cases_json, noise, "LyCORIS files made by LyCORIS (Tucker, DoRA on LoHa/LoKr, per-input DoRA) and goldens",
                               "tools/make_lycoris_native_fixture.py", {"lycoris-lora": version("lycoris-lora")})


if __name__ == "__main__":
    main()
