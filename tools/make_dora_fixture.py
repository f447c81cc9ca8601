#!/usr/bin/env python3
"""DoRA LoRA files for tests/fixtures/tiny-sd and diffusers goldens for them.

What it makes (in OUT, default tests/fixtures/dora/):
  sheen.peft.safetensors   DoRA (weight-decomposed LoRA) as diffusers' save_lora_weights writes
                           it: unet./text_encoder. + lora_A/lora_B + lora_magnitude_vector,
                           `use_dora` and alpha in the lora_adapter_metadata JSON
  sheen.kohya.safetensors  the same tensors in the kohya-ss layout (lora_down/lora_up/.alpha +
                           `.dora_scale`, shaped [out, 1] / [out, 1, 1, 1] as kohya and LyCORIS
                           write a magnitude taken over each output)
  cases.json, <case>.latents.npy, <case>.image.npy, noise_1x4x8x8.npy   goldens
  README.md

The adapter is PEFT's LoRA with use_dora=True on the seeded PyTorch tiny pipeline
(tools/make_tiny_fixture.py, checked against the committed ONNX fixture) with random A and B;
PEFT starts the magnitude at the norm of each output row of W + scale * B A, which would make
DoRA equal plain LoRA at strength 1, so the magnitude is then scaled by 1 + 0.3 * N(0, 1) per row.

Goldens: diffusers `load_lora_weights` + `fuse_lora(lora_scale=S)` (several adapters:
set_adapters with per-adapter weights, fused in that order), exported with optimum's main_export
and run by the reference pipeline (tools/make_golden.py run_case), from the PEFT file: diffusers
drops a kohya file's `dora_scale` for SD 1.x ("a DoRA checkpoint that is not compatible"), so the
kohya twin has no reference of its own (Kiln checks that it merges to the PEFT file's weights at
strength 1, where every implementation agrees). Also checked here: the magnitude matters (the same
A and B without DoRA move the final latents by more than 2e-2), so a test that ignored it fails.

Usage (from repo root):
    /work/venv/bin/python tools/make_dora_fixture.py [--out tests/fixtures/dora]
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

# name, kiln scheduler, diffusers class, steps, guidance, prompt, negative, [(file, strength)] (kohya files;
# the PEFT twin is used for the golden and tested too)
CASES = [
    ("dora_ddim_s1", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("sheen", 1.0)]),
    ("dora_euler_s05", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("sheen", 0.5)]),
    ("lora_then_dora_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("../lora/style", 0.8), ("sheen", 1.0)]),
]


def random_dora(part, targets, rank, alpha, seed, std):
    """PEFT DoRA on a fresh pipeline's `part`: random A and B, magnitude perturbed per row.
    Returns (config, state dict with PEFT keys)."""
    import torch
    from peft import LoraConfig, get_peft_model_state_dict

    module = getattr(build_torch_pipe(), part)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False, use_dora=True)
    module.add_adapter(cfg, adapter_name="tmp")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if ".tmp" not in name:
                continue
            if "lora_A" in name or "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
        # The magnitude was set from the initial A and B; take the new ones' norm, then perturb it.
        for name, m in module.named_modules():
            if hasattr(m, "lora_magnitude_vector") and "tmp" in m.lora_magnitude_vector:
                dora = m.lora_magnitude_vector["tmp"]
                base = m.get_base_layer().weight
                norm = dora.get_weight_norm(base, m.get_delta_weight("tmp"), scaling=1)
                dora.weight.copy_(norm.reshape(dora.weight.shape) * (1 + 0.3 * torch.randn(dora.weight.shape, generator=g)))
    sd = get_peft_model_state_dict(module, adapter_name="tmp")
    if not any("lora_magnitude_vector" in k for k in sd):
        raise SystemExit(f"{part}: no DoRA magnitudes in the state dict")
    return cfg, {k: v.detach().clone().contiguous() for k, v in sd.items()}


def kohya_dict(unet_sd, te_sd, unet_alpha, te_alpha):
    """make_lora_fixture's kohya-ss layout plus `.dora_scale` as [out, 1(, 1, 1)]."""
    import make_lora_fixture

    def plain(sd):
        return {k: v for k, v in sd.items() if not k.endswith(".lora_magnitude_vector")}

    out = make_lora_fixture.kohya_dict(plain(unet_sd), plain(te_sd), unet_alpha, te_alpha)
    for prefix, sd in (("lora_unet_", unet_sd), ("lora_te_", te_sd)):
        for k, v in sd.items():
            if k.endswith(".lora_magnitude_vector"):
                m = v.reshape(-1)
                key = prefix + k[: -len(".lora_magnitude_vector")].replace(".", "_") + ".dora_scale"
                out[key] = m.reshape(-1, 1) if v.dim() == 1 else m.reshape(-1, 1, 1, 1)
    return out


def main() -> None:
    out = adapter_golden.output_folder(__doc__, REPO / "tests" / "fixtures" / "dora")
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import save_file

    import make_golden

    check_same_weights_as_fixture(build_torch_pipe())

    ucfg, usd = random_dora("unet", UNET_STYLE, rank=4, alpha=6, seed=31, std=0.1)
    tcfg, tsd = random_dora("text_encoder", TE_TARGETS, rank=2, alpha=3, seed=32, std=0.15)
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=usd, text_encoder_lora_layers=tsd, weight_name="sheen.peft.safetensors",
        unet_lora_adapter_metadata=ucfg.to_dict(), text_encoder_lora_adapter_metadata=tcfg.to_dict(),
    )
    kohya = kohya_dict(usd, tsd, 6, 3)
    save_file(kohya, str(out / "sheen.kohya.safetensors"))
    print("DoRA modules:", sum(k.endswith("magnitude_vector") for k in usd), "+", sum(k.endswith("magnitude_vector") for k in tsd))

    with tempfile.TemporaryDirectory(prefix="kiln_dora_") as tmp:
        tmp = Path(tmp)
        noise, plain, base_config = adapter_golden.reference_setup()
        # The same A and B without the magnitude: a plain LoRA file.
        no_dora = {n: v for n, v in kohya.items() if not n.endswith(".dora_scale")}
        save_file(no_dora, str(tmp / "no_dora.safetensors"))
        cases_json = []
        for i, (name, kiln, cls, steps, guidance, prompt, negative, loras) in enumerate(CASES):
            peft_files = [((out / f"{l}.peft.safetensors").resolve(), s) for l, s in loras]
            ref = make_golden.load_pipe(export(fused_state(peft_files, tmp), tmp, f"c{i}"))
            swapped = [((tmp / "no_dora.safetensors") if l == "sheen" else f, s) for (f, s), (l, _) in zip(peft_files, loras)]
            without_magnitude = make_golden.load_pipe(export(fused_state(swapped, tmp), tmp, f"n{i}"))
            case = (name, kiln, cls, steps, guidance, prompt, negative)
            entry_loras = [{"file": f"{l}.kohya.safetensors", "peft_file": f"{l}.peft.safetensors", "scale": s} for l, s in loras]
            cases_json.append(adapter_golden.golden_case(out, ref, plain, base_config, case, noise, entry_loras,
                                                         {"magnitude_effect": without_magnitude}))
    adapter_golden.write_index(out, cases_json, noise, "DoRA fixtures and goldens", "tools/make_dora_fixture.py")


if __name__ == "__main__":
    main()
