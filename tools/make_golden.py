#!/usr/bin/env python3
"""Produce golden outputs of the reference ONNX SD pipeline for Kiln's tests.

What it makes (in OUT, default tests/fixtures/golden/):
  noise_1x4x8x8.npy            fixed initial noise (numpy default_rng(1234))
  cases.json                   every case's parameters (read by the Rust tests)
  <case>.latents.npy           final latents, before dividing by vae scaling_factor
  <case>.step_latents.npy      latents after every scheduler step [calls,1,4,8,8]
  <case>.image.npy             float32 HWC RGB in [0,1] (output_type="np")
  <case>.png                   the same, quantized as diffusers does
  <case>.timesteps.json        timesteps the U-Net was called with, in order
  <case>.step_noise.npy        stochastic schedulers only: every noise tensor the
                               scheduler drew (randn_tensor), in order [draws,1,4,8,8]
  ddim_cfg.cond_embeds.npy / ddim_cfg.uncond_embeds.npy   text encoder outputs
  README.md                    versions and notes

Why: Kiln reimplements the SD loop (tokenizer, schedulers, CFG, VAE decode) in
Rust over ONNX Runtime; these files are what optimum's
ORTStableDiffusionPipeline (diffusers' loop over the same ONNX graphs, CPU EP)
produces, so the Rust runtime can be checked number for number.

Usage (from repo root):
    /work/venv/bin/python tools/make_golden.py [--fixture tests/fixtures/tiny-sd] [--out tests/fixtures/golden]
Every case is run twice and must be bitwise identical.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent

# ---------------------------------------------------------------------------
# Case table: add rows here. negative_prompt None = no negative prompt.
# guidance_scale <= 1.0 makes diffusers skip the unconditional pass.
# ---------------------------------------------------------------------------
CASES = [
    # name,                 kiln (--scheduler), scheduler,                 steps, guidance, prompt,                   negative
    ("ddim_cfg",            "ddim",            "DDIMScheduler",               10, 7.5, "mossy stone brick wall", "blurry"),
    ("euler_cfg",           "euler",           "EulerDiscreteScheduler",      10, 7.5, "mossy stone brick wall", "blurry"),
    ("ddim_noguide",        "ddim",            "DDIMScheduler",               6,  1.0, "rusty iron plate",       None),
    ("euler_noguide",       "euler",           "EulerDiscreteScheduler",      6,  1.0, "rusty iron plate",       None),
    ("pndm_cfg",            "pndm",            "PNDMScheduler",               10, 7.5, "mossy stone brick wall", "blurry"),
    ("pndm_noguide",        "pndm",            "PNDMScheduler",               6,  1.0, "rusty iron plate",       None),
    ("dpmpp_2m_cfg",        "dpmpp_2m",        "DPMSolverMultistepScheduler", 10, 7.5, "mossy stone brick wall", "blurry"),
    ("dpmpp_2m_karras_cfg", "dpmpp_2m_karras", "DPMSolverMultistepScheduler", 10, 7.5, "mossy stone brick wall", "blurry"),
    ("lms_cfg",             "lms",             "LMSDiscreteScheduler",        10, 7.5, "mossy stone brick wall", "blurry"),
    ("heun_cfg",            "heun",            "HeunDiscreteScheduler",       10, 7.5, "mossy stone brick wall", "blurry"),
    ("euler_a_cfg",         "euler_a",         "EulerAncestralDiscreteScheduler", 10, 7.5, "mossy stone brick wall", "blurry"),
    ("dpmpp_2m_sde_cfg",    "dpmpp_2m_sde",    "DPMSolverMultistepScheduler", 10, 7.5, "mossy stone brick wall", "blurry"),
    ("unipc_cfg",           "unipc",           "UniPCMultistepScheduler",     10, 7.5, "mossy stone brick wall", "blurry"),
    # LCM-LoRA style: StableDiffusionPipeline + LCMScheduler with low CFG (the tiny
    # U-Net has no timestep_cond, so LatentConsistencyModelPipeline semantics do not apply).
    ("lcm_cfg",             "lcm",             "LCMScheduler",                4,  1.5, "mossy stone brick wall", "blurry"),
    ("euler_rescale",       "euler",           "EulerDiscreteScheduler",      10, 7.5, "mossy stone brick wall", "blurry"),
    # Config semantics: DDIM with clip_sample, with dynamic thresholding, and
    # zero-terminal-SNR betas with trailing spacing.
    ("ddim_clip",           "ddim",            "DDIMScheduler",               10, 7.5, "mossy stone brick wall", "blurry"),
    # ddim_threshold at guidance 3: at 7.5 this random U-Net makes the thresholded
    # trajectory ill-conditioned (a 1e-5 change in the noise moves the final latents
    # by 1e-3, so CPU kernels alone broke the bound); at 3 the same s regimes occur
    # (clamped to max, inside (1, max), clamped to 1) with ~13x less amplification.
    ("ddim_threshold",      "ddim",            "DDIMScheduler",               10, 3.0, "mossy stone brick wall", "blurry"),
    ("euler_zero_snr",      "euler",           "EulerDiscreteScheduler",      10, 7.5, "mossy stone brick wall", "blurry"),
]
# Config overrides on top of the fixture's scheduler config, per case.
SCHEDULER_OVERRIDES = {
    "dpmpp_2m_karras_cfg": {"use_karras_sigmas": True},
    "dpmpp_2m_sde_cfg": {"algorithm_type": "sde-dpmsolver++"},
    "ddim_clip": {"clip_sample": True, "clip_sample_range": 2.0},
    "ddim_threshold": {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 3.0},
    "euler_zero_snr": {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"},
}
# Extra pipeline arguments, per case (also written to cases.json).
PIPE_OVERRIDES = {
    "euler_rescale": {"guidance_rescale": 0.7},
}
# Cases whose scheduler draws noise while stepping: the pipeline gets
# torch.Generator().manual_seed(STEP_NOISE_SEED) and every randn_tensor call of
# the scheduler's module is recorded to <case>.step_noise.npy.
STOCHASTIC = {"euler_a_cfg", "dpmpp_2m_sde_cfg", "lcm_cfg"}
STEP_NOISE_SEED = 4321
WIDTH = HEIGHT = 64
NOISE_SEED = 1234
NOISE_FILE = "noise_1x4x8x8.npy"
EMBED_CASES = {"ddim_cfg"}  # cases whose text embeddings are also saved

TOKENIZER_BEGIN = "<!-- tokenizer-golden:begin -->"
TOKENIZER_END = "<!-- tokenizer-golden:end -->"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for p in ["torch", "diffusers", "transformers", "optimum", "optimum-onnx", "onnxruntime", "numpy", "pillow"]:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "-"
    return out


def load_pipe(fixture: Path):
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    pipe = ORTStableDiffusionPipeline.from_pretrained(
        str(fixture), provider="CPUExecutionProvider", local_files_only=True
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def set_scheduler(pipe, base_config, cls_name: str, overrides: dict):
    import diffusers

    cls = getattr(diffusers, cls_name)
    pipe.scheduler = cls.from_config(base_config, **overrides)
    return pipe.scheduler


def run_case(pipe, base_config, case, noise: np.ndarray):
    """Run one case; returns dict of arrays/lists."""
    import torch

    name, _kiln, sched_name, steps, guidance, prompt, negative = case
    sched = set_scheduler(pipe, base_config, sched_name, SCHEDULER_OVERRIDES.get(name, {}))

    # record what the U-Net is actually fed
    unet_calls = []
    orig_prepare = pipe.unet._prepare_onnx_inputs

    def spy_prepare(use_torch, model_inputs):
        feeds = orig_prepare(use_torch, model_inputs)
        unet_calls.append(
            {
                "timestep": feeds["timestep"].copy(),
                "sample_shape": list(feeds["sample"].shape),
            }
        )
        return feeds

    pipe.unet._prepare_onnx_inputs = spy_prepare

    # record every noise tensor the scheduler draws
    step_noise = []
    sched_module = sys.modules[type(sched).__module__]
    orig_randn = getattr(sched_module, "randn_tensor", None)

    def spy_randn(*args, **kwargs):
        t = orig_randn(*args, **kwargs)
        step_noise.append(t.detach().cpu().numpy().astype(np.float32).copy())
        return t

    if orig_randn is not None:
        sched_module.randn_tensor = spy_randn
    extra = dict(PIPE_OVERRIDES.get(name, {}))
    stochastic = name in STOCHASTIC

    def generator():
        return {"generator": torch.Generator("cpu").manual_seed(STEP_NOISE_SEED)} if stochastic else {}

    step_latents = []

    def on_step_end(p, i, t, kw):
        step_latents.append(kw["latents"].detach().cpu().numpy().copy())
        return kw

    common = dict(
        prompt=prompt,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=guidance,
        width=WIDTH,
        height=HEIGHT,
        num_images_per_prompt=1,
        eta=0.0,
    )
    try:
        out_np = pipe(
            **common,
            **extra,
            **generator(),
            latents=torch.from_numpy(noise.copy()),
            output_type="np",
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=["latents"],
        )
        calls_np = list(unet_calls)
        noise_np = list(step_noise)
        sched_timesteps = sched.timesteps.detach().cpu().numpy().copy()
        init_sigma = float(sched.init_noise_sigma)
        unet_calls.clear()
        step_noise.clear()
        out_lat = pipe(**common, **extra, **generator(), latents=torch.from_numpy(noise.copy()), output_type="latent")
        if [a.tobytes() for a in step_noise] != [a.tobytes() for a in noise_np]:
            raise SystemExit(f"{name}: the two runs drew different step noise")
    finally:
        pipe.unet._prepare_onnx_inputs = orig_prepare
        if orig_randn is not None:
            sched_module.randn_tensor = orig_randn
    if stochastic != bool(noise_np):
        raise SystemExit(f"{name}: stochastic={stochastic} but the scheduler drew {len(noise_np)} noise tensors")

    image = np.asarray(out_np.images[0], dtype=np.float32)  # HWC
    lat_from_latent_run = out_lat.images.detach().cpu().numpy() if hasattr(out_lat.images, "detach") else np.asarray(out_lat.images)
    lat_from_callback = step_latents[-1]
    # PNDM (PLMS warm-up) and Heun call the U-Net more often than `steps`; the
    # pipeline steps once per entry of scheduler.timesteps.
    calls = len(sched.timesteps)
    assert len(step_latents) == calls, (len(step_latents), calls)
    if not np.array_equal(lat_from_callback, lat_from_latent_run):
        raise SystemExit(
            f"{name}: callback latents != output_type=latent latents "
            f"(max abs diff {np.abs(lat_from_callback - lat_from_latent_run).max()})"
        )

    # timesteps: the scheduler's list after set_timesteps, and what the U-Net got
    cfg_batch = 2 if guidance > 1.0 else 1
    assert len(calls_np) == calls, (len(calls_np), calls)
    for c in calls_np:
        assert c["sample_shape"][0] == cfg_batch, c
    fed = [float(c["timestep"]) for c in calls_np]
    fed_dtype = str(calls_np[0]["timestep"].dtype)
    fed_shape = list(calls_np[0]["timestep"].shape)
    if np.issubdtype(sched_timesteps.dtype, np.integer):
        timesteps = [int(t) for t in sched_timesteps]
    else:
        timesteps = [float(t) for t in sched_timesteps]
    assert len(timesteps) == calls
    assert [float(np.float32(t)) for t in timesteps] == fed, (timesteps, fed)

    res = {
        "latents": lat_from_callback.astype(np.float32),
        "step_latents": np.stack(step_latents).astype(np.float32),
        "image": image,
        "timesteps": timesteps,
        "meta": {
            "scheduler_timesteps_dtype": str(sched_timesteps.dtype),
            "unet_timestep_feed": {"dtype": fed_dtype, "shape": fed_shape, "values": fed},
            "init_noise_sigma": init_sigma,
            "unet_batch": cfg_batch,
            # _use_default_values is a set-derived list whose order varies run to run
            "scheduler_config": {k: v for k, v in sorted(dict(sched.config).items()) if k != "_use_default_values"},
        },
    }

    if noise_np:
        for a in noise_np:
            assert a.shape == noise.shape, (a.shape, noise.shape)
        res["step_noise"] = np.stack(noise_np).astype(np.float32)
        res["meta"]["step_noise_draws"] = len(noise_np)
        res["meta"]["step_noise_seed"] = STEP_NOISE_SEED
    res["meta"].update(extra)

    if name in EMBED_CASES:
        cond, uncond = pipe.encode_prompt(
            prompt, "cpu", 1, guidance > 1.0, negative_prompt=negative
        )
        res["cond_embeds"] = cond.detach().cpu().numpy().astype(np.float32)
        if uncond is not None:
            res["uncond_embeds"] = uncond.detach().cpu().numpy().astype(np.float32)
    return res


def to_png(image_hwc: np.ndarray, path: Path) -> None:
    from PIL import Image

    # diffusers numpy_to_pil: (images * 255).round().astype("uint8")
    arr = (image_hwc * 255).round().astype("uint8")
    Image.fromarray(arr).save(path, optimize=False)


def jsonable(v):
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        # JSON has no infinities (e.g. DPMSolver's lambda_min_clipped = -inf)
        return repr(v)
    return v


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--fixture", default=str(REPO / "tests" / "fixtures" / "tiny-sd"))
    ap.add_argument("--out", default=str(REPO / "tests" / "fixtures" / "golden"))
    args = ap.parse_args()
    fixture, out = Path(args.fixture).resolve(), Path(args.out).resolve()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out.mkdir(parents=True, exist_ok=True)

    noise = np.random.default_rng(NOISE_SEED).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.save(out / NOISE_FILE, noise)

    pipe = load_pipe(fixture)
    base_config = dict(pipe.scheduler.config)  # PNDM config from the fixture
    scaling_factor = float(pipe.vae_decoder.config.scaling_factor)

    cases_json = []
    for case in CASES:
        name, kiln, sched_name, steps, guidance, prompt, negative = case
        a = run_case(pipe, base_config, case, noise)
        b = run_case(pipe, base_config, case, noise)
        for k in ("latents", "step_latents", "image", "cond_embeds", "uncond_embeds", "step_noise"):
            if k in a and not np.array_equal(a[k], b[k]):
                raise SystemExit(f"{name}: {k} not bitwise deterministic across two runs")
        assert a["timesteps"] == b["timesteps"]

        np.save(out / f"{name}.latents.npy", a["latents"])
        np.save(out / f"{name}.step_latents.npy", a["step_latents"])
        np.save(out / f"{name}.image.npy", a["image"])
        to_png(a["image"], out / f"{name}.png")
        (out / f"{name}.timesteps.json").write_text(json.dumps(a["timesteps"]) + "\n")
        files = {
            "latents": f"{name}.latents.npy",
            "step_latents": f"{name}.step_latents.npy",
            "image": f"{name}.image.npy",
            "png": f"{name}.png",
            "timesteps": f"{name}.timesteps.json",
        }
        for k in ("cond_embeds", "uncond_embeds", "step_noise"):
            if k in a:
                np.save(out / f"{name}.{k}.npy", a[k])
                files[k] = f"{name}.{k}.npy"
        cases_json.append(
            jsonable(
                {
                    "name": name,
                    "prompt": prompt,
                    "negative_prompt": negative,
                    "steps": steps,
                    "guidance_scale": guidance,
                    "scheduler": sched_name,
                    "kiln_scheduler": kiln,
                    "noise": NOISE_FILE,
                    "width": WIDTH,
                    "height": HEIGHT,
                    "eta": 0.0,
                    "vae_scaling_factor": scaling_factor,
                    "files": files,
                    **a["meta"],
                }
            )
        )
        print(
            f"{name}: ok (deterministic) timesteps={a['timesteps']} "
            f"init_noise_sigma={a['meta']['init_noise_sigma']:.6f} "
            f"latents[0,0,0,:3]={a['latents'][0, 0, 0, :3]} image mean={a['image'].mean():.6f}"
        )

    (out / "cases.json").write_text(json.dumps(cases_json, indent=2, allow_nan=False) + "\n")

    # README (keeps the tokenizer section that make_tokenizer_golden.py owns)
    readme_path = out / "README.md"
    tok_section = ""
    if readme_path.exists():
        m = re.search(re.escape(TOKENIZER_BEGIN) + ".*?" + re.escape(TOKENIZER_END), readme_path.read_text(), re.S)
        if m:
            tok_section = m.group(0)
    vers = versions()
    lines = [
        "# golden outputs",
        "",
        "Reference outputs for Kiln's tests, from optimum's `ORTStableDiffusionPipeline` (diffusers' loop over",
        "the ONNX graphs of `tests/fixtures/tiny-sd`, onnxruntime CPUExecutionProvider).",
        "",
        "Regenerate from the repo root (venv: tools/requirements-fixtures.txt):",
        "",
        "    /work/venv/bin/python tools/make_golden.py",
        "    /work/venv/bin/python tools/make_tokenizer_golden.py",
        "",
        "## Versions",
        "",
        *[f"- {k} {v}" for k, v in vers.items()],
        "",
        "## Pipeline cases (cases.json)",
        "",
        f"- Initial noise: `np.random.default_rng({NOISE_SEED}).standard_normal((1,4,8,8)).astype(np.float32)`",
        f"  saved as `{NOISE_FILE}`, passed as `latents=`; diffusers multiplies it by the scheduler's",
        "  `init_noise_sigma` (1.0 for DDIM; sqrt(sigma_max^2+1) for Euler with 'leading' spacing; value in cases.json).",
        "- Schedulers are `<Class>.from_config(fixture PNDM config)`, so they inherit SD 1.5's betas,",
        "  `steps_offset=1`, `timestep_spacing=leading`, `clip_sample=false`, `set_alpha_to_one=false`.",
        "  The full resulting config is in cases.json `scheduler_config`.",
        "- `guidance_scale` 1.0 → no classifier-free guidance: U-Net batch 1 and the negative prompt is unused.",
        "  With CFG the U-Net batch is 2, ordered [uncond, cond], and noise = u + g·(c − u).",
        "- `<case>.latents.npy`: final latents before `/ vae_scaling_factor` (identical from the",
        "  callback at the last step and from `output_type=\"latent\"`; checked).",
        "- `<case>.step_latents.npy`: latents after each scheduler step, shape [calls,1,4,8,8], where calls is",
        "  the number of U-Net calls (= steps, except PNDM: steps + 1 with its PLMS warm-up, Heun: 2·steps − 1).",
        "- `kiln_scheduler` in cases.json is the Kiln `--scheduler` name the case is compared with;",
        "  `dpmpp_2m_karras_cfg` builds DPMSolverMultistepScheduler with `use_karras_sigmas=True`,",
        "  `dpmpp_2m_sde_cfg` the same class with `algorithm_type=\"sde-dpmsolver++\"`.",
        "- Stochastic cases (`euler_a_cfg`, `dpmpp_2m_sde_cfg`, `lcm_cfg`): the pipeline gets",
        f"  `generator=torch.Generator(\"cpu\").manual_seed({STEP_NOISE_SEED})` and every `randn_tensor` call in the",
        "  scheduler's module is recorded, in order, to `<case>.step_noise.npy` [draws,1,4,8,8] (`step_noise_draws`",
        "  in cases.json). Euler ancestral and DPM++ 2M SDE draw once per step (the last included), LCM once per",
        "  step but the last. Kiln replays these draws through `GenerateRequest::step_noise`.",
        "- `lcm_cfg`: StableDiffusionPipeline with LCMScheduler (LCM-LoRA usage), 4 steps, guidance 1.5 with CFG;",
        "  the tiny U-Net has no `timestep_cond`. LCMScheduler ignores `timestep_spacing`/`steps_offset` and takes",
        "  its timesteps from `original_inference_steps` (50).",
        "- `euler_rescale`: Euler with `guidance_rescale=0.7` (diffusers `rescale_noise_cfg`; `guidance_rescale`",
        "  in cases.json).",
        "- `<case>.image.npy`: (1,64,64,3)[0] → HWC float32 in [0,1] = clamp(vae_decode(latents/sf)/2+0.5, 0, 1).",
        "- `<case>.png`: `round(image*255)` as uint8 (diffusers' numpy_to_pil).",
        "- `<case>.timesteps.json`: `scheduler.timesteps` after `set_timesteps` (int64 or float32 per scheduler).",
        "  The U-Net graph's `timestep` input is a rank-0 float32 tensor: optimum casts each value to float32",
        "  (`unet_timestep_feed` in cases.json holds exactly what was fed).",
        "- Euler's `init_noise_sigma` depends on the step count ('leading' spacing: sigma of the first selected",
        "  timestep, e.g. 8.450 for 10 steps, 5.991 for 6), and `scale_model_input` divides the U-Net input by",
        "  sqrt(sigma^2+1). DDIM(eta=0) and Euler solve the same ODE, so their final latents are close",
        "  (~1e-2 apart on values ~10); `step_latents` differ much more and tell them apart.",
        "- Every case was run twice in one process; outputs were bitwise identical, and rerunning the",
        "  script reproduces every file byte for byte.",
        "- Embeddings (`ddim_cfg.cond_embeds.npy`, `ddim_cfg.uncond_embeds.npy`) are text_encoder",
        "  `last_hidden_state` for the prompt / negative prompt padded to 77 tokens, shape [1,77,32].",
        "",
    ]
    if tok_section:
        lines += [tok_section, ""]
    readme_path.write_text("\n".join(lines))
    print("wrote", out)


if __name__ == "__main__":
    main()
