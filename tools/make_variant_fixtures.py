#!/usr/bin/env python3
"""Build the tiny *model-variant* fixtures in tests/fixtures/variants/ (issue 3).

What it makes: six small ONNX Stable Diffusion model folders in the export
conventions that real users have, each with seeded random weights (like
tools/make_tiny_fixture.py) and the real CLIP vocabulary of tiny-sd:

  sd2-vpred     SD 2.x style: 64-wide text encoder (stands in for 1024), gelu,
                U-Net cross_attention_dim 64 with SD2's per-block head list
                (attention_head_dim (2, 4)), use_linear_projection and
                upcast_attention, SD 2.1's DDIM scheduler config
                (prediction_type "v_prediction"), tokenizer pad_token "!".
                Exported with optimum.
  legacy-int64  the older diffusers-script convention
                (scripts/convert_stable_diffusion_checkpoint_to_onnx.py and the
                "onnx" revisions on the Hub): exported with
                torch.onnx.export (TorchScript exporter), U-Net
                `timestep` int64 [batch], text encoder `input_ids` int32,
                output `out_sample`, OnnxStableDiffusionPipeline model_index.json.
  fp16          tiny-sd's text_encoder / unet / vae_decoder converted to float16
                with onnxruntime.transformers.float16 (keep_io_types=False), so
                every graph input and output is tensor(float16).
  fixed-batch1  tiny-sd's U-Net with its batch dimension fixed to 1 (sample,
                encoder_hidden_states, out_sample), via onnx.tools.update_model_dims.
  lcm-unet      a U-Net with time_cond_proj_dim 32 (graph input
                `timestep_cond`), LCM-Dreamshaper's LCMScheduler config,
                LatentConsistencyModelPipeline model_index.json. Exported with optimum.
  inpaint9      an inpainting U-Net (in_channels 9: latents, mask, masked
                picture's latents, as stable-diffusion-inpainting),
                StableDiffusionInpaintPipeline model_index.json. Exported with
                optimum (task "inpainting").

Size: the CLIP token embedding (49408 x hidden floats) dominates every text
encoder, so each variant stores only the files that differ from
tests/fixtures/tiny-sd; `variant.json` lists the files taken from there
(`from_base`). A loadable folder is the union: base files first, then the
variant's own files (variant.json and README.md excluded). The Rust tests
(tests/variants.rs) and tools/make_variant_golden.py both materialize it
that way, so the reference and Kiln run the very same graphs.

Deterministic: torch.manual_seed(0) before every module, fp32 weights; the
weights that tiny-sd also has (CLIP text encoder hidden 32, VAE) are built by
the same code (tools/make_tiny_fixture.build_pipeline) and so are identical.
Idempotent: tests/fixtures/variants/<name>/ is wiped and rebuilt each run
(golden/ is left alone: rerun tools/make_variant_golden.py afterwards).

Usage (from repo root):
    /work/venv/bin/python tools/make_variant_fixtures.py [--only NAME ...]
Needs the fixture venv (tools/requirements-fixtures.txt) and an existing
tests/fixtures/tiny-sd (tools/make_tiny_fixture.py).
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
BASE = REPO / "tests" / "fixtures" / "tiny-sd"
OUT = REPO / "tests" / "fixtures" / "variants"
BASE_REL = "../../tiny-sd"  # base folder, relative to a variant folder

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_tiny_fixture as mtf  # noqa: E402  (versions, graph_summary, build_pipeline)

VARIANTS = ["sd2-vpred", "legacy-int64", "fp16", "fixed-batch1", "lcm-unet", "inpaint9"]

# stabilityai/stable-diffusion-2-1 scheduler/scheduler_config.json
SD21_SCHEDULER = dict(
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    num_train_timesteps=1000,
    prediction_type="v_prediction",
    set_alpha_to_one=False,
    skip_prk_steps=True,
    steps_offset=1,
    trained_betas=None,
)

# SimianLuo/LCM_Dreamshaper_v7 scheduler/scheduler_config.json
LCM_SCHEDULER = dict(
    beta_end=0.012,
    beta_schedule="scaled_linear",
    beta_start=0.00085,
    clip_sample=False,
    clip_sample_range=1.0,
    dynamic_thresholding_ratio=0.995,
    num_train_timesteps=1000,
    original_inference_steps=50,
    prediction_type="epsilon",
    rescale_betas_zero_snr=False,
    sample_max_value=1.0,
    set_alpha_to_one=True,
    steps_offset=1,
    thresholding=False,
    timestep_scaling=10.0,
    timestep_spacing="leading",
    trained_betas=None,
)

TOKENIZER_VOCAB = ["tokenizer/vocab.json", "tokenizer/merges.txt"]
BASE_VAE = [
    "vae_decoder/model.onnx",
    "vae_decoder/config.json",
    "vae_encoder/model.onnx",
    "vae_encoder/config.json",
]


# --------------------------------------------------------------------------
# overlay helpers (the Rust tests do the same in tests/variants.rs)
# --------------------------------------------------------------------------
def materialize(variant_dir: Path, dest: Path) -> Path:
    """Assemble a loadable model folder: `from_base` files, then the variant's own."""
    spec = json.loads((variant_dir / "variant.json").read_text(encoding="utf-8"))
    base = (variant_dir / spec["base"]).resolve()
    if dest.exists():
        shutil.rmtree(dest)
    for rel in spec["from_base"]:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(base / rel, dest / rel)
    for p in sorted(variant_dir.rglob("*")):
        rel = p.relative_to(variant_dir).as_posix()
        if p.is_file() and rel not in ("variant.json", "README.md"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(p, dest / rel)
    return dest


def write_variant_json(vdir: Path, description: str, from_base: list[str], how: str) -> None:
    for rel in from_base:
        assert (BASE / rel).is_file(), rel
        assert not (vdir / rel).exists(), f"{rel} is both in the variant and from_base"
    spec = {"base": BASE_REL, "description": description, "how": how, "from_base": sorted(from_base)}
    (vdir / "variant.json").write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")


def copy_into(src_root: Path, dst_root: Path, rels: list[str]) -> None:
    for rel in rels:
        (dst_root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src_root / rel, dst_root / rel)


def stabilize_json(root: Path, name: str) -> None:
    """Exporters record temp dirs as _name_or_path; make reruns byte-identical."""
    for js in sorted(root.rglob("*.json")):
        if js.name == "variant.json":
            continue
        d = json.loads(js.read_text(encoding="utf-8"))
        if isinstance(d, dict) and "_name_or_path" in d:
            sub = js.parent.relative_to(root).as_posix()
            d["_name_or_path"] = f"kiln/variants/{name}" + ("" if sub == "." else "/" + sub)
            js.write_text(json.dumps(d, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def same_vocab(tok_dir: Path) -> None:
    """The exported tokenizer's vocabulary must be tiny-sd's (we share its files)."""
    for rel in ("vocab.json", "merges.txt"):
        a = (tok_dir / rel).read_bytes()
        b = (BASE / "tokenizer" / rel).read_bytes()
        if a != b:
            raise SystemExit(f"exported tokenizer/{rel} differs from tiny-sd's; cannot share it")


def clip_tokenizer(pad_token: str = "<|endoftext|>"):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(
        str(BASE / "tokenizer" / "vocab.json"),
        str(BASE / "tokenizer" / "merges.txt"),
        unk_token="<|endoftext|>",
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token=pad_token,
        model_max_length=77,
    )
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    return tok


def small_unet(**kw):
    """A smaller U-Net than tiny-sd's (32/32 channels, 1 layer per block): keeps the variants small."""
    import torch
    from diffusers import UNet2DConditionModel

    args = dict(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=32,
    )
    args.update(kw)
    torch.manual_seed(0)
    return UNet2DConditionModel(**args).to(torch.float32).eval()


def unet_wrap(unet):
    """U-Net forward returning the plain tensor, as the diffusers script traced it."""
    import torch

    class UnetWrap(torch.nn.Module):
        def __init__(self, unet):
            super().__init__()
            self.unet = unet

        def forward(self, sample, timestep, encoder_hidden_states):
            return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

    return UnetWrap(unet).eval()


def optimum_export(pipe, tmp: Path, name: str, task: str = "text-to-image") -> Path:
    from optimum.exporters.onnx import main_export

    pt = tmp / f"{name}-pt"
    pipe.save_pretrained(str(pt), safe_serialization=True)
    out = tmp / f"{name}-onnx"
    main_export(
        str(pt),
        output=str(out),
        task=task,
        device="cpu",
        do_validation=True,
        local_files_only=True,
    )
    return out


def ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------
# variants
# --------------------------------------------------------------------------
def make_sd2(tmp: Path, vdir: Path) -> None:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    tiny = mtf.build_pipeline(BASE / "tokenizer")  # for its VAE (identical to tiny-sd's)
    torch.manual_seed(0)
    te = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=64,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=64,
            hidden_act="gelu",  # OpenCLIP ViT-H (SD 2.x) uses gelu, not quick_gelu
            layer_norm_eps=1e-5,
            bos_token_id=0,  # as in stabilityai/stable-diffusion-2-1 text_encoder/config.json
            eos_token_id=2,
            pad_token_id=1,
        )
    ).to(torch.float32).eval()
    unet = small_unet(
        cross_attention_dim=64,
        attention_head_dim=(2, 4),  # SD2's per-block list ([5, 10, 20, 20] there)
        use_linear_projection=True,
        upcast_attention=True,
    )
    sched = DDIMScheduler.from_config(dict(SD21_SCHEDULER))
    pipe = StableDiffusionPipeline(
        vae=tiny.vae,
        text_encoder=te,
        tokenizer=clip_tokenizer(pad_token="!"),
        unet=unet,
        scheduler=sched,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = optimum_export(pipe, tmp, "sd2")
    same_vocab(out / "tokenizer")
    tc = json.loads((out / "tokenizer" / "tokenizer_config.json").read_text())
    assert tc["pad_token"] == "!", tc["pad_token"]
    own = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.onnx",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/model.onnx",
    ]
    copy_into(out, vdir, own)
    sc = json.loads((vdir / "scheduler/scheduler_config.json").read_text())
    assert sc["prediction_type"] == "v_prediction" and sc["_class_name"] == "DDIMScheduler", sc
    write_variant_json(
        vdir,
        "SD 2.x style: 64-d text encoder (gelu), U-Net cross_attention_dim 64 with per-block heads (2, 4), "
        "linear projections, upcast_attention; SD 2.1 DDIM config with v_prediction; pad token '!'",
        TOKENIZER_VOCAB + BASE_VAE,
        "optimum main_export(task=text-to-image) of a seeded diffusers StableDiffusionPipeline; the VAE is "
        "tiny-sd's (same constructor and seed), so its exported graphs are taken from tiny-sd",
    )


def make_legacy(tmp: Path, vdir: Path) -> None:
    import numpy as np
    import torch
    from diffusers import OnnxRuntimeModel, OnnxStableDiffusionPipeline, PNDMScheduler

    tiny = mtf.build_pipeline(BASE / "tokenizer")
    te = tiny.text_encoder
    unet = small_unet()
    opset = 14  # the diffusers script's default
    exp = tmp / "legacy-export"

    def onnx_export(model, model_args, path: Path, ordered_input_names, output_names, dynamic_axes):
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.onnx.export(
            model,
            model_args,
            str(path),
            input_names=ordered_input_names,
            output_names=output_names,
            dynamic_axes=dynamic_axes,
            do_constant_folding=True,
            opset_version=opset,
            dynamo=False,  # the TorchScript exporter the script used
        )

    # --- text encoder: input_ids int32 (as the script traced it) ---
    ids = torch.tensor([tiny.tokenizer("a photo of a cat", padding="max_length", max_length=77).input_ids], dtype=torch.int32)
    with torch.no_grad():
        onnx_export(
            te,
            (ids,),
            exp / "text_encoder" / "model.onnx",
            ["input_ids"],
            ["last_hidden_state", "pooler_output"],
            {"input_ids": {0: "batch", 1: "sequence"}},
        )

    # --- U-Net: timestep int64 [batch] (the "onnx" revisions on the Hub) ---
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        onnx_export(
            unet_wrap(unet),
            (
                torch.randn(2, 4, 8, 8, generator=g),
                torch.tensor([981, 981], dtype=torch.int64),
                torch.randn(2, 77, 32, generator=g),
            ),
            exp / "unet" / "model.onnx",
            ["sample", "timestep", "encoder_hidden_states"],
            ["out_sample"],
            {
                "sample": {0: "batch", 1: "channels", 2: "height", 3: "width"},
                "timestep": {0: "batch"},
                "encoder_hidden_states": {0: "batch", 1: "sequence"},
            },
        )

    # --- parity of the two new graphs with PyTorch ---
    with torch.no_grad():
        ref = te(ids.long())[0].numpy()
        got = ort_session(exp / "text_encoder" / "model.onnx").run(None, {"input_ids": ids.numpy()})[0]
        e = float(np.abs(got - ref).max())
        print(f"legacy text_encoder parity: {e:.3e}")
        assert e < 1e-4
        s = torch.randn(2, 4, 8, 8, generator=g)
        h = torch.randn(2, 77, 32, generator=g)
        ref = unet(s, torch.tensor([501, 501]), h).sample.numpy()
        got = ort_session(exp / "unet" / "model.onnx").run(
            None, {"sample": s.numpy(), "timestep": np.array([501, 501], np.int64), "encoder_hidden_states": h.numpy()}
        )[0]
        e = float(np.abs(got - ref).max())
        print(f"legacy unet parity: {e:.3e}")
        assert e < 1e-4

    # --- save through OnnxStableDiffusionPipeline, as the script did (model_index.json) ---
    for rel in ("vae_decoder", "vae_encoder"):
        copy_into(BASE, exp, [f"{rel}/model.onnx"])
    pipe = OnnxStableDiffusionPipeline(
        vae_encoder=OnnxRuntimeModel.from_pretrained(str(exp / "vae_encoder"), provider="CPUExecutionProvider", provider_options=[{}]),
        vae_decoder=OnnxRuntimeModel.from_pretrained(str(exp / "vae_decoder"), provider="CPUExecutionProvider", provider_options=[{}]),
        text_encoder=OnnxRuntimeModel.from_pretrained(str(exp / "text_encoder"), provider="CPUExecutionProvider", provider_options=[{}]),
        tokenizer=tiny.tokenizer,
        unet=OnnxRuntimeModel.from_pretrained(str(exp / "unet"), provider="CPUExecutionProvider", provider_options=[{}]),
        scheduler=PNDMScheduler.from_config(dict(mtf.SD15_SCHEDULER)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    saved = tmp / "legacy-saved"
    pipe.save_pretrained(str(saved))
    same_vocab(saved / "tokenizer")
    # The script writes no per-component config.json; the brief for this
    # fixture asks for them (Kiln reads sizes from them), so add the PyTorch
    # modules' configs as optimum would.
    te.config.to_json_file(str(saved / "text_encoder" / "config.json"))
    unet.save_config(str(saved / "unet"))
    own = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "text_encoder/config.json",
        "text_encoder/model.onnx",
        "tokenizer/special_tokens_map.json",
        "tokenizer/tokenizer_config.json",
        "unet/config.json",
        "unet/model.onnx",
    ]
    copy_into(saved, vdir, own)
    mi = json.loads((vdir / "model_index.json").read_text())
    assert mi["_class_name"] == "OnnxStableDiffusionPipeline", mi
    write_variant_json(
        vdir,
        "older diffusers-script convention: U-Net timestep int64 [batch], text encoder input_ids int32, "
        "OnnxStableDiffusionPipeline model_index.json, opset 14",
        TOKENIZER_VOCAB + BASE_VAE,
        "torch.onnx.export(dynamo=False, opset 14) of tiny-sd's text encoder (traced with int32 ids) and of a "
        "seeded 1-layer-per-block U-Net (traced with an int64 [2] timestep), names as in diffusers' "
        "scripts/convert_stable_diffusion_checkpoint_to_onnx.py, saved via OnnxStableDiffusionPipeline."
        "save_pretrained; the VAE graphs are tiny-sd's (same I/O names in both conventions). "
        "text_encoder/config.json and unet/config.json are added (the script itself writes none).",
    )


def make_fp16(tmp: Path, vdir: Path) -> None:
    import numpy as np
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    own = []
    for comp in ("text_encoder", "unet", "vae_decoder"):
        m = onnx.load(str(BASE / comp / "model.onnx"))
        m16 = convert_float_to_float16(m, keep_io_types=False, disable_shape_infer=False)
        (vdir / comp).mkdir(parents=True, exist_ok=True)
        onnx.save(m16, str(vdir / comp / "model.onnx"))
        shutil.copyfile(BASE / comp / "config.json", vdir / comp / "config.json")
        own += [f"{comp}/model.onnx", f"{comp}/config.json"]
        s = ort_session(vdir / comp / "model.onnx")
        for v in list(s.get_inputs()) + list(s.get_outputs()):
            if v.type not in ("tensor(float16)", "tensor(int64)"):
                raise SystemExit(f"fp16 {comp}: {v.name} is {v.type}")
    # quick parity of the U-Net against fp32
    rng = np.random.default_rng(0)
    feeds = {
        "sample": rng.standard_normal((2, 4, 8, 8)).astype(np.float32),
        "timestep": np.array(501.0, np.float32),
        "encoder_hidden_states": rng.standard_normal((2, 77, 32)).astype(np.float32),
    }
    ref = ort_session(BASE / "unet" / "model.onnx").run(None, feeds)[0]
    got = ort_session(vdir / "unet" / "model.onnx").run(None, {k: v.astype(np.float16) for k, v in feeds.items()})[0]
    print(f"fp16 unet vs fp32: max|d| {np.abs(got.astype(np.float32) - ref).max():.3e} (max|ref| {np.abs(ref).max():.3e})")
    write_variant_json(
        vdir,
        "tiny-sd's text_encoder, unet and vae_decoder with float16 weights and float16 inputs/outputs "
        "(input_ids stays int64); no vae_encoder",
        [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "tokenizer/vocab.json",
            "tokenizer/merges.txt",
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
        ],
        "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=False) of tiny-sd's graphs "
        "(optimum's --dtype fp16 export needs a CUDA device)",
    )


def make_fixed_batch1(tmp: Path, vdir: Path) -> None:
    import numpy as np
    import torch

    unet = small_unet()
    path = vdir / "unet" / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # optimum's names and rank-0 float timestep, but no dynamic batch axis:
        # the shape a fixed-shape export (TensorRT / mobile style) has.
        torch.onnx.export(
            unet_wrap(unet),
            (torch.randn(1, 4, 8, 8, generator=g), torch.tensor(981.0), torch.randn(1, 77, 32, generator=g)),
            str(path),
            input_names=["sample", "timestep", "encoder_hidden_states"],
            output_names=["out_sample"],
            dynamic_axes={
                "sample": {2: "height", 3: "width"},
                "encoder_hidden_states": {1: "sequence_length"},
                "out_sample": {2: "height", 3: "width"},
            },
            do_constant_folding=True,
            opset_version=18,
            dynamo=False,
        )
    unet.save_config(str(vdir / "unet"))
    s = ort_session(path)
    shapes = {i.name: i.shape for i in s.get_inputs()}
    assert shapes["sample"][0] == 1 and shapes["encoder_hidden_states"][0] == 1 and shapes["timestep"] == [], shapes
    rng = np.random.default_rng(0)
    feeds = lambda b: {  # noqa: E731
        "sample": rng.standard_normal((b, 4, 8, 8)).astype(np.float32),
        "timestep": np.array(501.0, np.float32),
        "encoder_hidden_states": rng.standard_normal((b, 77, 32)).astype(np.float32),
    }
    f1 = feeds(1)
    a = s.run(None, f1)[0]
    with torch.no_grad():
        b = unet(torch.from_numpy(f1["sample"]), torch.tensor(501.0), torch.from_numpy(f1["encoder_hidden_states"])).sample.numpy()
    e = float(np.abs(a - b).max())
    print(f"fixed-batch1 unet parity: {e:.3e}")
    assert e < 1e-4
    try:
        s.run(None, feeds(2))
        raise SystemExit("fixed-batch1 U-Net accepted batch 2")
    except SystemExit:
        raise
    except Exception as e:  # expected: ORT rejects the batch
        print("fixed-batch1 rejects batch 2:", str(e).splitlines()[0][:160])
    write_variant_json(
        vdir,
        "tiny-sd with a smaller U-Net whose batch dimension is fixed to 1 (sample, encoder_hidden_states, "
        "out_sample); optimum's names and rank-0 float timestep",
        [
            "model_index.json",
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.onnx",
            *TOKENIZER_VOCAB,
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            *BASE_VAE,
        ],
        "torch.onnx.export(dynamo=False, opset 18) of a seeded 32/32-channel U-Net without a dynamic batch "
        "axis (height/width stay dynamic); unet/config.json from the module",
    )


def make_lcm(tmp: Path, vdir: Path) -> None:
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    tiny = mtf.build_pipeline(BASE / "tokenizer")
    unet = small_unet(time_cond_proj_dim=32)
    pipe = LatentConsistencyModelPipeline(
        vae=tiny.vae,
        text_encoder=tiny.text_encoder,
        tokenizer=tiny.tokenizer,
        unet=unet,
        scheduler=LCMScheduler.from_config(dict(LCM_SCHEDULER)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = optimum_export(pipe, tmp, "lcm")
    same_vocab(out / "tokenizer")
    names = [i.name for i in ort_session(out / "unet" / "model.onnx").get_inputs()]
    assert "timestep_cond" in names, names
    # text encoder and VAE are tiny-sd's modules: check the exported graphs agree
    import numpy as np

    ids = np.array([tiny.tokenizer("mossy stone brick wall", padding="max_length", max_length=77).input_ids], np.int64)
    a = ort_session(out / "text_encoder" / "model.onnx").run(None, {"input_ids": ids})[0]
    b = ort_session(BASE / "text_encoder" / "model.onnx").run(None, {"input_ids": ids})[0]
    assert np.array_equal(a, b), "lcm text encoder differs from tiny-sd's"
    own = [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/model.onnx",
    ]
    copy_into(out, vdir, own)
    write_variant_json(
        vdir,
        "LCM-distilled style: U-Net with time_cond_proj_dim 32 (graph input timestep_cond [batch, 32]), "
        "LCMScheduler config of LCM_Dreamshaper_v7, LatentConsistencyModelPipeline model_index.json",
        [
            "text_encoder/config.json",
            "text_encoder/model.onnx",
            *TOKENIZER_VOCAB,
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            *BASE_VAE,
        ],
        "optimum main_export(task=text-to-image) of a seeded diffusers LatentConsistencyModelPipeline whose "
        "text encoder and VAE are tiny-sd's (same constructors and seeds; text encoder output checked equal), "
        "so those graphs are taken from tiny-sd",
    )


def make_inpaint9(tmp: Path, vdir: Path) -> None:
    import numpy as np
    from diffusers import PNDMScheduler, StableDiffusionInpaintPipeline

    tiny = mtf.build_pipeline(BASE / "tokenizer")
    unet = small_unet(in_channels=9)
    pipe = StableDiffusionInpaintPipeline(
        vae=tiny.vae,
        text_encoder=tiny.text_encoder,
        tokenizer=tiny.tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(dict(mtf.SD15_SCHEDULER)),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    out = optimum_export(pipe, tmp, "inpaint9", task="inpainting")
    same_vocab(out / "tokenizer")
    shapes = {i.name: i.shape for i in ort_session(out / "unet" / "model.onnx").get_inputs()}
    assert shapes["sample"][1] == 9, shapes
    # text encoder and VAE are tiny-sd's modules: check the exported graphs agree
    ids = np.array([tiny.tokenizer("mossy stone brick wall", padding="max_length", max_length=77).input_ids], np.int64)
    a = ort_session(out / "text_encoder" / "model.onnx").run(None, {"input_ids": ids})[0]
    b = ort_session(BASE / "text_encoder" / "model.onnx").run(None, {"input_ids": ids})[0]
    assert np.array_equal(a, b), "inpaint9 text encoder differs from tiny-sd's"
    img = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 64)).astype(np.float32)
    a = ort_session(out / "vae_encoder" / "model.onnx").run(None, {"sample": img})[0]
    b = ort_session(BASE / "vae_encoder" / "model.onnx").run(None, {"sample": img})[0]
    assert np.array_equal(a, b), "inpaint9 VAE encoder differs from tiny-sd's"
    own = [
        "model_index.json",
        "unet/config.json",
        "unet/model.onnx",
    ]
    copy_into(out, vdir, own)
    mi = json.loads((vdir / "model_index.json").read_text())
    assert "Inpaint" in mi["_class_name"], mi
    write_variant_json(
        vdir,
        "inpainting U-Net: in_channels 9 (latents, mask, masked picture's latents, as "
        "stable-diffusion-inpainting), StableDiffusionInpaintPipeline model_index.json, SD 1.5's PNDM config",
        [
            "scheduler/scheduler_config.json",
            "text_encoder/config.json",
            "text_encoder/model.onnx",
            *TOKENIZER_VOCAB,
            "tokenizer/special_tokens_map.json",
            "tokenizer/tokenizer_config.json",
            *BASE_VAE,
        ],
        "optimum main_export(task=inpainting) of a seeded diffusers StableDiffusionInpaintPipeline with a "
        "32/32-channel 9-input U-Net; text encoder and VAE are tiny-sd's (same constructors and seeds; text "
        "encoder and VAE encoder outputs checked equal), so those graphs are taken from tiny-sd",
    )


MAKERS = {
    "sd2-vpred": make_sd2,
    "legacy-int64": make_legacy,
    "fp16": make_fp16,
    "fixed-batch1": make_fixed_batch1,
    "lcm-unet": make_lcm,
    "inpaint9": make_inpaint9,
}


# --------------------------------------------------------------------------
# README
# --------------------------------------------------------------------------
def own_files(vdir: Path) -> list[tuple[int, str]]:
    return [(p.stat().st_size, p.relative_to(vdir).as_posix()) for p in sorted(vdir.rglob("*")) if p.is_file()]


def write_readme() -> None:
    lines = [
        "# model-variant fixtures (issue 3)",
        "",
        "Tiny seeded-random-weight SD pipelines in the export conventions that real users have. Each",
        "folder stores only what differs from `tests/fixtures/tiny-sd`; its `variant.json` names the files",
        "taken from tiny-sd (`from_base`, paths relative to the model root). A loadable model folder is",
        "tiny-sd's `from_base` files overlaid with the variant's own files (`variant.json`/`README.md`",
        "excluded); `tests/variants.rs` and `tools/make_variant_golden.py` both build it that way (the",
        "tests under Cargo's `CARGO_TARGET_TMPDIR`), so Kiln and the reference run the same graphs.",
        "",
        "Regenerate (from the repo root, venv of tools/requirements-fixtures.txt):",
        "",
        "    /work/venv/bin/python tools/make_variant_fixtures.py   # needs tests/fixtures/tiny-sd",
        "    /work/venv/bin/python tools/make_variant_golden.py     # golden/ (reference outputs)",
        "",
        "## Versions",
        "",
        *[f"- {k} {v}" for k, v in mtf.versions().items()],
        "",
    ]
    total = 0
    for name in VARIANTS:
        vdir = OUT / name
        if not (vdir / "variant.json").exists():
            continue
        spec = json.loads((vdir / "variant.json").read_text())
        lines += [f"## {name}", "", spec["description"] + ".", "", "How: " + spec["how"] + ".", ""]
        with tempfile.TemporaryDirectory(prefix="kiln_var_") as t:
            m = materialize(vdir, Path(t) / name)
            lines += ["Graphs of the assembled folder (onnxruntime get_inputs / get_outputs):", ""]
            lines += [mtf.graph_summary(m).replace("### ", "#### ")]
        files = own_files(vdir)
        sub = sum(s for s, _ in files)
        total += sub
        lines += ["Own files:", "", "```", *[f"{s:>10}  {r}" for s, r in files], f"{sub:>10}  TOTAL", "```", ""]
        lines += ["From tiny-sd: " + ", ".join(f"`{r}`" for r in spec["from_base"]) + ".", ""]
    g = OUT / "golden"
    if g.is_dir():
        gs = sum(p.stat().st_size for p in g.rglob("*") if p.is_file())
        total += gs
        lines += [f"## golden/", "", f"Reference outputs ({gs} bytes); see golden/README.md.", ""]
    lines += [f"All variant files together: {total} bytes.", ""]
    (OUT / "README.md").write_text("\n".join(lines), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="*", default=None, choices=VARIANTS)
    ap.add_argument("--readme-only", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    if not (BASE / "unet" / "model.onnx").is_file():
        sys.exit("tests/fixtures/tiny-sd is missing: run tools/make_tiny_fixture.py first")
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.readme_only:
        for name in args.only or VARIANTS:
            vdir = OUT / name
            if vdir.exists():
                shutil.rmtree(vdir)
            vdir.mkdir(parents=True)
            with tempfile.TemporaryDirectory(prefix=f"kiln_{name}_") as tmp:
                print(f"== {name}")
                MAKERS[name](Path(tmp), vdir)
            stabilize_json(vdir, name)
            for s, r in own_files(vdir):
                print(f"{s:>10}  {name}/{r}")
    write_readme()
    print("wrote", OUT)


if __name__ == "__main__":
    main()
