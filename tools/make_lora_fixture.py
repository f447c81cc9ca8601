#!/usr/bin/env python3
"""Random LoRA files for tests/fixtures/tiny-sd and diffusers goldens for them.

What it makes (in OUT, default tests/fixtures/lora/):
  style.peft.safetensors     LoRA "style" as diffusers' save_lora_weights writes it
                             (unet./text_encoder. + lora_A/lora_B, alpha in the
                             lora_adapter_metadata JSON)
  style.kohya.safetensors    the same tensors in kohya-ss layout (lora_unet_/lora_te_,
                             lora_down/lora_up, .alpha)
  detail.{kohya,peft}.safetensors   a second LoRA (attention + text encoder), for stacking
  lcm_shaped.{kohya,peft}.safetensors  a LoRA on every U-Net Linear and Conv that
                             LCM-LoRA for SD 1.5 adapts (resnets, time embedding, samplers)
  brick-style.safetensors    textual inversion, AUTOMATIC1111 layout (emb_params [2, 32])
  learned_embeds.safetensors textual inversion, diffusers layout (token "<moss>", [32])
  broken/*.safetensors       bad files for error tests (rank mismatch, an incomplete LoHa, SDXL keys,
                             unknown keys, truncated)
  cases.json, <case>.latents.npy, <case>.image.npy   goldens
  README.md

"style" adapts attn1/attn2 to_q/k/v/to_out.0, ff.net.0.proj, ff.net.2, proj_in,
proj_out, one 3x3 resnet conv (LoCon), and the text encoder's q/k/v/out_proj, fc1,
fc2; rank 4 / alpha 6 on the U-Net, rank 2 / alpha 3 on the text encoder.

Goldens: the PyTorch tiny pipeline (tools/make_tiny_fixture.py build_pipeline, the
same seeded weights as the committed ONNX fixture, checked here) gets
`load_lora_weights` + `fuse_lora(lora_scale=S)` (several adapters: set_adapters
with per-adapter weights, then fuse), is exported with optimum's main_export, and
run by the reference pipeline (tools/make_golden.py run_case: optimum's
ORTStableDiffusionPipeline, CPU EP) with the golden noise. Kiln loads the plain
fixture plus the LoRA file(s) and must match.

Goldens are made from the PEFT files (diffusers' kohya converter fails on the
text-encoder subset of "detail"). Also checked here: the kohya and PEFT files of
"style" fuse to bit-identical weights in diffusers (so one golden covers both layouts), and every LoRA changes the final
latents by well over the test tolerance (so the tests can fail).

Usage (from repo root):
    /work/venv/bin/python tools/make_lora_fixture.py [--out tests/fixtures/lora]
Needs the fixture venv plus `peft` (pip install peft).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "tiny-sd"
sys.path.insert(0, str(REPO / "tools"))

UNET_STYLE = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "down_blocks.0.resnets.0.conv1"]
TE_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"]
UNET_DETAIL = ["attn2.to_k", "attn2.to_v", "attn1.to_out.0"]
# What latent-consistency/lcm-lora-sdv1-5 adapts: every Linear and Conv of the U-Net's blocks.
UNET_LCM = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2", "proj_in", "proj_out", "conv1", "conv2",
            "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj"]

# name, kiln scheduler, diffusers class, steps, guidance, prompt, negative, [(lora, layout, scale)]
CASES = [
    ("style_ddim_s1", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("style", 1.0)]),
    ("style_euler_s1", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("style", 1.0)]),
    ("style_ddim_s05", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("style", 0.5)]),
    ("style_euler_s05", "euler", "EulerDiscreteScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("style", 0.5)]),
    ("stack_ddim", "ddim", "DDIMScheduler", 8, 7.5, "mossy stone brick wall", "blurry", [("style", 0.8), ("detail", -0.6)]),
    ("lcm_shaped", "lcm", "LCMScheduler", 4, 1.0, "mossy stone brick wall", None, [("lcm_shaped", 1.0)]),
]
WIDTH = HEIGHT = 64
NOISE_SEED = 1234
STEP_NOISE_SEED = 4321


def build_torch_pipe():
    from make_tiny_fixture import build_pipeline

    return build_pipeline(FIXTURE / "tokenizer")


def check_same_weights_as_fixture(pipe) -> None:
    """The seeded PyTorch modules must be the committed ONNX fixture's weights."""
    import onnx
    from onnx import numpy_helper

    for part, module in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        graph = onnx.load(str(FIXTURE / part / "model.onnx"))
        sd = {k: v.detach().numpy() for k, v in module.state_dict().items()}
        checked = 0
        inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
        for name, a in inits.items():
            if name in sd:
                if not np.array_equal(a, sd[name]):
                    raise SystemExit(f"{part}: {name} differs from the committed fixture; rebuild it first")
                checked += 1
        # Renamed MatMul weights: the module path is in the node name, the weight transposed.
        for node in graph.graph.node:
            if node.op_type == "MatMul" and node.input[1] in inits and node.name.endswith("/MatMul"):
                key = ".".join(p for p in node.name.split("/")[1:-1]) + ".weight"
                if key in sd:
                    if not np.array_equal(inits[node.input[1]], sd[key].T):
                        raise SystemExit(f"{part}: {key} differs from the committed fixture")
                    checked += 1
        if checked < 10:
            raise SystemExit(f"{part}: only {checked} named initializers to compare")
        print(f"{part}: {checked} named initializers equal the fixture's")


def random_lora(part, targets, rank, alpha, seed, std):
    """PEFT LoRA on a fresh pipeline's `part` with random A and B; returns
    (config, state dict with PEFT keys)."""
    import torch
    from peft import LoraConfig, get_peft_model_state_dict

    module = getattr(build_torch_pipe(), part)
    cfg = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    module.add_adapter(cfg, adapter_name="tmp")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "lora_" in name and ".tmp." in name:
                p.copy_(torch.randn(p.shape, generator=g) * std)
    sd = get_peft_model_state_dict(module, adapter_name="tmp")
    return cfg, {k: v.detach().clone().contiguous() for k, v in sd.items()}


def kohya_dict(unet_sd, te_sd, unet_alpha, te_alpha):
    import torch

    out = {}
    for prefix, sd, alpha in (("lora_unet_", unet_sd, unet_alpha), ("lora_te_", te_sd, te_alpha)):
        for k, v in sd.items():
            stem, part = k.rsplit(".lora_", 1)
            kk = prefix + stem.replace(".", "_")
            if part == "A.weight":
                out[kk + ".lora_down.weight"] = v
                out[kk + ".alpha"] = torch.tensor(float(alpha))
            elif part == "B.weight":
                out[kk + ".lora_up.weight"] = v
            else:
                raise SystemExit(f"unexpected PEFT key {k}")
    return out


def fused_state(files_scales, tmp: Path):
    """A fresh pipeline with the LoRAs fused, and its unet/text-encoder state dicts."""
    pipe = build_torch_pipe()
    names, weights = [], []
    for i, (path, scale) in enumerate(files_scales):
        name = f"a{i}"
        pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
        names.append(name)
        weights.append(scale)
    pipe.set_adapters(names, adapter_weights=weights)
    pipe.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0, adapter_names=names)
    pipe.unload_lora_weights()
    return pipe


def export(pipe, tmp: Path, name: str) -> Path:
    from optimum.exporters.onnx import main_export

    pt = tmp / f"{name}_pt"
    pipe.save_pretrained(str(pt), safe_serialization=True)
    onnx_dir = tmp / f"{name}_onnx"
    main_export(str(pt), output=str(onnx_dir), task="text-to-image", device="cpu", do_validation=False, local_files_only=True)
    return onnx_dir


def write_broken(out: Path, style_kohya: dict) -> None:
    import torch
    from safetensors.torch import save_file

    b = out / "broken"
    b.mkdir(exist_ok=True)
    k = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    down = style_kohya[k + ".lora_down.weight"]
    up = style_kohya[k + ".lora_up.weight"]
    save_file({k + ".lora_down.weight": down, k + ".lora_up.weight": torch.zeros(up.shape[0], up.shape[1] + 1)}, str(b / "rank_mismatch.safetensors"))
    save_file({k + ".hada_w1_a": torch.zeros(4, 4), k + ".hada_w1_b": torch.zeros(4, 4), k + ".alpha": torch.tensor(1.0)}, str(b / "loha.safetensors"))
    save_file({"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": torch.zeros(4, 1280),
               "lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": torch.zeros(5120, 4)}, str(b / "sdxl.safetensors"))
    # SD 2.x-shaped: the right module names, 1024-wide cross-attention.
    k2 = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k"
    save_file({k2 + ".lora_down.weight": torch.zeros(4, 1024), k2 + ".lora_up.weight": torch.zeros(32, 4)}, str(b / "sd2_dims.safetensors"))
    save_file({k + ".lora_down.weight": down, k + ".lora_up.weight": up,
               "lora_unet_no_such_block_0_to_q.lora_down.weight": down.clone(), "lora_unet_no_such_block_0_to_q.lora_up.weight": up.clone()},
              str(b / "unknown_keys.safetensors"))
    whole = (out / "style.kohya.safetensors").read_bytes()
    (b / "truncated.safetensors").write_bytes(whole[: len(whole) // 2])
    (b / "not_safetensors.safetensors").write_bytes(b"PK\x03\x04 this is a zip, not safetensors")


EMBED_PROMPT = "<brick-style> wall, <moss>"


def embedding_case(out: Path, tmp: Path, plain, base_config, noise):
    """Textual inversion: an A1111 file (emb_params, 2 vectors, token given on load)
    and a diffusers learned_embeds file (its token is its tensor's name)."""
    import torch
    from safetensors.torch import save_file

    import make_golden

    g = torch.Generator().manual_seed(11)
    save_file({"emb_params": torch.randn(2, 32, generator=g) * 0.5}, str(out / "brick-style.safetensors"))
    save_file({"<moss>": torch.randn(32, generator=g) * 0.5}, str(out / "learned_embeds.safetensors"))
    pipe = build_torch_pipe()
    pipe.load_textual_inversion(str(out / "brick-style.safetensors"), token="<brick-style>")
    pipe.load_textual_inversion(str(out / "learned_embeds.safetensors"))
    ref = make_golden.load_pipe(export(pipe, tmp, "embeddings"))
    expanded = ref.maybe_convert_prompt(EMBED_PROMPT, ref.tokenizer)
    ids = ref.tokenizer(expanded, padding="max_length", max_length=77, truncation=True).input_ids
    print(f"embedding prompt {EMBED_PROMPT!r} -> {expanded!r} -> {ids[:10]}")
    if len([i for i in ids if i >= 49408]) != 3:
        raise SystemExit("the three embedding vectors are not all in the prompt ids")
    name = "embedding_ddim"
    case = (name, "ddim", "DDIMScheduler", 8, 7.5, EMBED_PROMPT, "blurry")
    r = make_golden.run_case(ref, base_config, case, noise)
    p = make_golden.run_case(plain, base_config, (name, "ddim", "DDIMScheduler", 8, 7.5, "wall,", "blurry"), noise)
    effect = float(np.abs(p["latents"] - r["latents"]).max() / np.abs(r["latents"]).max())
    print(f"{name}: the embeddings move the final latents by {effect:.3e} relative (vs the prompt without them)")
    np.save(out / f"{name}.latents.npy", r["latents"])
    np.save(out / f"{name}.image.npy", r["image"])
    return make_golden.jsonable({
        "name": name, "kiln_scheduler": "ddim", "scheduler": "DDIMScheduler", "steps": 8, "guidance_scale": 7.5,
        "prompt": EMBED_PROMPT, "negative_prompt": "blurry", "width": WIDTH, "height": HEIGHT, "loras": [],
        "embeddings": [{"file": "brick-style.safetensors", "token": "<brick-style>"}, {"file": "learned_embeds.safetensors", "token": None}],
        "input_ids": ids,
        "scheduler_config": r["meta"]["scheduler_config"],
        "unet_timestep_feed": r["meta"]["unet_timestep_feed"],
        "latent_effect": effect,
        "files": {"latents": f"{name}.latents.npy", "image": f"{name}.image.npy"},
    })


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "lora"))
    args = ap.parse_args()
    out = Path(args.out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file, save_file

    import make_golden

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pipe = build_torch_pipe()
    check_same_weights_as_fixture(pipe)

    # --- LoRA files ---
    ucfg, usd = random_lora("unet", UNET_STYLE, rank=4, alpha=6, seed=1, std=0.1)
    tcfg, tsd = random_lora("text_encoder", TE_TARGETS, rank=2, alpha=3, seed=2, std=0.15)
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=usd, text_encoder_lora_layers=tsd, weight_name="style.peft.safetensors",
        unet_lora_adapter_metadata=ucfg.to_dict(), text_encoder_lora_adapter_metadata=tcfg.to_dict(),
    )
    style_kohya = kohya_dict(usd, tsd, 6, 3)
    save_file(style_kohya, str(out / "style.kohya.safetensors"))
    dcfg, dsd = random_lora("unet", UNET_DETAIL, rank=3, alpha=1.5, seed=3, std=0.15)
    dtcfg, dtsd = random_lora("text_encoder", ["q_proj", "v_proj"], rank=2, alpha=4, seed=4, std=0.15)
    save_file(kohya_dict(dsd, dtsd, 1.5, 4), str(out / "detail.kohya.safetensors"))
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=dsd, text_encoder_lora_layers=dtsd, weight_name="detail.peft.safetensors",
        unet_lora_adapter_metadata=dcfg.to_dict(), text_encoder_lora_adapter_metadata=dtcfg.to_dict(),
    )
    lcfg, lsd = random_lora("unet", UNET_LCM, rank=4, alpha=4, seed=5, std=0.1)
    save_file(kohya_dict(lsd, {}, 4, 4), str(out / "lcm_shaped.kohya.safetensors"))
    StableDiffusionPipeline.save_lora_weights(
        str(out), unet_lora_layers=lsd, weight_name="lcm_shaped.peft.safetensors", unet_lora_adapter_metadata=lcfg.to_dict(),
    )
    write_broken(out, style_kohya)
    print("LoRA modules: style", len(usd) // 2, "+", len(tsd) // 2, "| detail", len(dsd) // 2, "+", len(dtsd) // 2, "| lcm_shaped", len(lsd) // 2)

    with tempfile.TemporaryDirectory(prefix="kiln_lora_") as tmp:
        tmp = Path(tmp)
        # Both layouts of "style" must fuse to the same weights in diffusers.
        a = fused_state([(out / "style.peft.safetensors", 1.0)], tmp)
        b = fused_state([(out / "style.kohya.safetensors", 1.0)], tmp)
        worst = 0.0
        for part in ("unet", "text_encoder"):
            sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
            for k in sa:
                worst = max(worst, float((sa[k] - sb[k]).abs().max()))
        print(f"style: kohya vs PEFT fused weights max |diff| {worst:.3e}")
        if worst > 1e-6:
            raise SystemExit("the kohya and PEFT files of 'style' fuse differently in diffusers")

        noise = np.random.default_rng(NOISE_SEED).standard_normal((1, 4, 8, 8)).astype(np.float32)
        plain = make_golden.load_pipe(FIXTURE)
        base_config = dict(plain.scheduler.config)
        exported = {}
        cases_json = []
        for name, kiln, cls, steps, guidance, prompt, negative, loras in CASES:
            key = tuple(loras)
            if key not in exported:
                # diffusers' kohya converter fails on some text-encoder subsets
                # (detail: q/v only); its own layout is what it fuses natively.
                fused = fused_state([(out / f"{l}.peft.safetensors", s) for l, s in loras], tmp)
                exported[key] = make_golden.load_pipe(export(fused, tmp, f"e{len(exported)}"))
            ref = exported[key]
            case = (name, kiln, cls, steps, guidance, prompt, negative)
            if cls == "LCMScheduler":
                make_golden.STOCHASTIC.add(name)
            r1 = make_golden.run_case(ref, base_config, case, noise)
            r2 = make_golden.run_case(ref, base_config, case, noise)
            if not np.array_equal(r1["latents"], r2["latents"]):
                raise SystemExit(f"{name}: not deterministic")
            p = make_golden.run_case(plain, base_config, case, noise)
            effect = float(np.abs(p["latents"] - r1["latents"]).max() / np.abs(r1["latents"]).max())
            print(f"{name}: LoRA moves the final latents by {effect:.3e} relative (test bound 1e-3)")
            if effect < 2e-2:
                raise SystemExit(f"{name}: the LoRA barely changes the output; a test could not fail")
            np.save(out / f"{name}.latents.npy", r1["latents"])
            np.save(out / f"{name}.image.npy", r1["image"])
            entry = {
                "name": name, "kiln_scheduler": kiln, "scheduler": cls, "steps": steps, "guidance_scale": guidance,
                "prompt": prompt, "negative_prompt": negative, "width": WIDTH, "height": HEIGHT,
                "loras": [{"file": f"{l}.kohya.safetensors", "peft_file": f"{l}.peft.safetensors", "scale": s} for l, s in loras],
                "scheduler_config": r1["meta"]["scheduler_config"],
                "unet_timestep_feed": r1["meta"]["unet_timestep_feed"],
                "latent_effect": effect,
                "files": {"latents": f"{name}.latents.npy", "image": f"{name}.image.npy"},
            }
            if "step_noise" in r1:
                np.save(out / f"{name}.step_noise.npy", r1["step_noise"])
                entry["files"]["step_noise"] = f"{name}.step_noise.npy"
                entry["step_noise_draws"] = r1["meta"]["step_noise_draws"]
            cases_json.append(make_golden.jsonable(entry))
        cases_json.append(embedding_case(out, tmp, plain, base_config, noise))
        np.save(out / "noise_1x4x8x8.npy", noise)
    (out / "cases.json").write_text(json.dumps(cases_json, indent=1) + "\n")
    v = make_golden.versions()
    import peft

    v["peft"] = peft.__version__
    (out / "README.md").write_text(
        "# LoRA fixtures and goldens\n\nMade by `tools/make_lora_fixture.py` (see its docstring):\n\n"
        "    /work/venv/bin/python tools/make_lora_fixture.py\n\n## Versions\n\n"
        + "".join(f"- {k} {val}\n" for k, val in v.items())
    )
    print("wrote", out)


if __name__ == "__main__":
    main()
