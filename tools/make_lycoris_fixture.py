#!/usr/bin/env python3
"""LyCORIS LoHa and LoKr files for tests/fixtures/tiny-sd and goldens for them.

What it makes (in OUT, default tests/fixtures/lycoris/):
  patina.loha.safetensors   LoHa (Hadamard product of two low-rank pairs) on the
                            U-Net's attention, feed-forward and projection layers,
                            one 3x3 resnet conv, and the text encoder's q/k/v/out,
                            fc1, fc2; LyCORIS/kohya layout (`lora_unet_...`,
                            `.hada_w1_a/.hada_w1_b/.hada_w2_a/.hada_w2_b`, `.alpha`), f32
  grain.lokr.safetensors    LoKr (Kronecker product; w1 full, w2 = w2_a @ w2_b) on
                            the same layers, stored as float16 as most shared
                            LyCORIS files are (`.lokr_w1`, `.lokr_w2_a`, `.lokr_w2_b`, `.alpha`)
  broken/*.safetensors      files Kiln must refuse with a specific status
  cases.json, <case>.latents.npy, <case>.image.npy, noise_1x4x8x8.npy   goldens
  README.md

The adapters are PEFT's LoHa and LoKr layers (peft.LoHaConfig/LoKrConfig, which
follow LyCORIS's definitions and cite its code) injected into the seeded PyTorch
tiny pipeline (tools/make_tiny_fixture.py build_pipeline; its weights are checked
against the committed ONNX fixture) with seeded random factors. Each adapted
layer's delta is PEFT's own `get_delta_weight` (scale alpha/r included); the
reference pipeline is a fresh copy of the PyTorch pipeline with
W += strength * delta for every adapter, exported with optimum's main_export
and run by tools/make_golden.py run_case (optimum's ORTStableDiffusionPipeline,
CPU EP) with the golden noise. The mixed case also fuses the plain LoRA
tests/fixtures/lora/style.peft.safetensors with diffusers' fuse_lora first.

Every LoKr layer here has w2 decomposed (w2_a @ w2_b), so LyCORIS's and PEFT's
scale agree (alpha / rank); LyCORIS files whose factors are both full carry no
rank, and Kiln (as LyCORIS and ComfyUI) applies them with scale 1, checked by a
unit test in src/model/lora/format.rs rather than here.

Usage (from repo root):
    /work/venv/bin/python tools/make_lycoris_fixture.py [--out tests/fixtures/lycoris]
Needs the fixture venv (tools/requirements-fixtures.txt, which includes peft).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import adapter_golden  # noqa: E402
from make_lora_fixture import TE_TARGETS, UNET_STYLE, build_torch_pipe, check_same_weights_as_fixture, export, fused_state  # noqa: E402

# name, kiln scheduler, diffusers class, steps, guidance, prompt, negative, [(file, strength)]
CASES = [
    ("loha_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("patina.loha.safetensors", 1.0)]),
    ("lokr_euler", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("grain.lokr.safetensors", 0.8)]),
    ("mixed_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry",
     [("patina.loha.safetensors", 0.6), ("grain.lokr.safetensors", -0.7), ("../lora/style.kohya.safetensors", 0.5)]),
]


def random_adapter(kind: str, part: str, targets, rank: int, alpha: float, seed: int, std: float, half: bool):
    """A PEFT LoHa/LoKr on a fresh pipeline's `part`, seeded random factors.
    Returns (kohya-layout tensors for the file, {module path: delta}) where
    delta is PEFT's get_delta_weight (alpha / r applied)."""
    import torch
    from peft import LoHaConfig, LoKrConfig, inject_adapter_in_model
    from peft.tuners.loha import LoHaLayer
    from peft.tuners.lokr import LoKrLayer

    module = getattr(build_torch_pipe(), part)
    if kind == "loha":
        cfg, layer_type = LoHaConfig(r=rank, alpha=alpha, target_modules=targets, init_weights=False), LoHaLayer
    else:
        cfg, layer_type = LoKrConfig(r=rank, alpha=alpha, target_modules=targets, init_weights=False, decompose_both=False), LoKrLayer
    module = inject_adapter_in_model(cfg, module, adapter_name="tmp")
    module.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if (".hada_" in name or ".lokr_" in name) and name.endswith(".tmp"):
                v = torch.randn(p.shape, generator=g) * std
                # The file stores f16: the reference uses exactly the stored values.
                p.copy_(v.half().float() if half else v)
    prefix = "lora_unet_" if part == "unet" else "lora_te_"
    tensors, deltas = {}, {}
    for name, m in module.named_modules():
        if not isinstance(m, layer_type) or "tmp" not in m.scaling:
            continue
        if kind == "lokr" and "tmp" in m.lokr_w2 and "tmp" in m.lokr_w1:
            raise SystemExit(f"{part} {name}: both LoKr factors full; pick a smaller rank so LyCORIS and PEFT scale alike")
        key = prefix + name.replace(".", "_")
        for pname, p in m.named_parameters():
            if pname.endswith(".tmp") and (pname.startswith("hada_") or pname.startswith("lokr_")):
                t = p.detach().clone().contiguous()
                tensors[f"{key}.{pname[: -len('.tmp')]}"] = t.half() if half else t
        tensors[f"{key}.alpha"] = torch.tensor(float(alpha))
        with torch.no_grad():
            deltas[name] = m.get_delta_weight("tmp").detach().clone()
    if not deltas:
        raise SystemExit(f"no {kind} layers on {part}")
    return tensors, deltas


def merged_pipe(adapters, strengths, lora_files, tmp: Path):
    """A fresh pipeline (with diffusers-fused plain LoRAs, if any) plus
    strength * delta of every LyCORIS adapter."""
    import torch

    pipe = fused_state(lora_files, tmp) if lora_files else build_torch_pipe()
    with torch.no_grad():
        for (part_deltas, strength) in zip(adapters, strengths):
            for part, deltas in part_deltas.items():
                module = getattr(pipe, part)
                for name, d in deltas.items():
                    w = module.get_submodule(name).weight
                    w += strength * d.reshape(w.shape)
    return pipe


def write_broken(out: Path, loha: dict, lokr: dict) -> None:
    import torch
    from safetensors.torch import save_file

    b = out / "broken"
    b.mkdir(exist_ok=True)
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    hada = {n: t for n, t in loha.items() if n.startswith(k + ".")}
    kron = {n: t for n, t in lokr.items() if n.startswith(k + ".")}
    # Tucker cores added to plain LoHa/LoKr factors ([out, r] · [r, in]): the core's ranks
    # do not fit the modes a Tucker form needs ([r, out], [r, in]), a rank mismatch.
    save_file({**hada, k + ".hada_t1": torch.zeros(4, 4, 1, 1), k + ".hada_t2": torch.zeros(4, 4, 1, 1)}, str(b / "loha_tucker.safetensors"))
    save_file({**kron, k + ".lokr_t2": torch.zeros(2, 2, 1, 1)}, str(b / "lokr_tucker.safetensors"))
    # One module with both LoRA and LoHa tensors.
    save_file({**hada, k + ".lora_down.weight": torch.zeros(4, 32), k + ".lora_up.weight": torch.zeros(32, 4)}, str(b / "mixed_kinds.safetensors"))
    # LoHa factors whose inner ranks disagree.
    bad = dict(hada)
    bad[k + ".hada_w2_b"] = torch.zeros(hada[k + ".hada_w2_b"].shape[0] + 1, hada[k + ".hada_w2_b"].shape[1])
    save_file(bad, str(b / "loha_rank_mismatch.safetensors"))
    # A LoKr whose Kronecker product is wider than the layer (another architecture).
    wide = dict(kron)
    w2b = kron[k + ".lokr_w2_b"]
    wide[k + ".lokr_w2_b"] = torch.zeros(w2b.shape[0], w2b.shape[1] * 2, dtype=w2b.dtype)
    save_file(wide, str(b / "lokr_too_wide.safetensors"))
    # A LoKr with neither w2 nor w2_a/w2_b.
    save_file({n: t for n, t in kron.items() if ".lokr_w2" not in n}, str(b / "lokr_missing_w2.safetensors"))


def main() -> None:
    out = adapter_golden.output_folder(__doc__, REPO / "tests" / "fixtures" / "lycoris")
    from safetensors.torch import save_file

    import make_golden

    check_same_weights_as_fixture(build_torch_pipe())

    loha_unet, loha_unet_d = random_adapter("loha", "unet", UNET_STYLE, rank=4, alpha=2.0, seed=21, std=0.35, half=False)
    loha_te, loha_te_d = random_adapter("loha", "text_encoder", TE_TARGETS, rank=2, alpha=1.0, seed=22, std=0.5, half=False)
    lokr_unet, lokr_unet_d = random_adapter("lokr", "unet", UNET_STYLE, rank=2, alpha=3.0, seed=23, std=0.3, half=True)
    lokr_te, lokr_te_d = random_adapter("lokr", "text_encoder", TE_TARGETS, rank=1, alpha=1.5, seed=24, std=0.4, half=True)
    loha = {**loha_unet, **loha_te}
    lokr = {**lokr_unet, **lokr_te}
    save_file(loha, str(out / "patina.loha.safetensors"), metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "loha"}'})
    save_file(lokr, str(out / "grain.lokr.safetensors"), metadata={"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": "lokr"}'})
    deltas = {
        "patina.loha.safetensors": {"unet": loha_unet_d, "text_encoder": loha_te_d},
        "grain.lokr.safetensors": {"unet": lokr_unet_d, "text_encoder": lokr_te_d},
    }
    print("LoHa modules:", len(loha_unet_d), "+", len(loha_te_d), "| LoKr modules:", len(lokr_unet_d), "+", len(lokr_te_d))
    write_broken(out, loha, lokr)

    with tempfile.TemporaryDirectory(prefix="kiln_lycoris_") as tmp:
        tmp = Path(tmp)
        noise, plain, base_config = adapter_golden.reference_setup()
        cases_json = []
        for i, (name, kiln, cls, steps, guidance, prompt, negative, files) in enumerate(CASES):
            lycoris = [(deltas[f], s) for f, s in files if f in deltas]
            loras = [((out / f).resolve().with_name(Path(f).name.replace(".kohya.", ".peft.")), s) for f, s in files if f not in deltas]
            pipe = merged_pipe([d for d, _ in lycoris], [s for _, s in lycoris], loras, tmp)
            ref = make_golden.load_pipe(export(pipe, tmp, f"c{i}"))
            case = (name, kiln, cls, steps, guidance, prompt, negative)
            cases_json.append(adapter_golden.golden_case(out, ref, plain, base_config, case, noise, [{"file": f, "scale": s} for f, s in files]))
    adapter_golden.write_index(out, cases_json, noise, "LyCORIS (LoHa, LoKr) fixtures and goldens", "tools/make_lycoris_fixture.py")


if __name__ == "__main__":
    main()
