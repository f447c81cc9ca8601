#!/usr/bin/env python3
"""Golden outputs of the reference pipelines on the model-variant fixtures.

What it makes (in tests/fixtures/variants/golden/):
  noise_1x4x8x8.npy        fixed initial noise: np.random.default_rng(1234).standard_normal((1,4,8,8)) f32
  cases.json               every case (read by tests/variants.rs)
  <case>.latents.npy       final latents, before dividing by the VAE scaling_factor
  <case>.image.npy         float32 HWC RGB in [0,1] (output_type="np")
  <case>.step_noise.npy    stochastic schedulers only: the scheduler's noise draws [draws,1,4,8,8]
  README.md                versions and notes

Each variant folder (tests/fixtures/variants/<name>) is first assembled as
tools/make_variant_fixtures.py describes (tiny-sd's `from_base` files + the
variant's own) in a temp dir; the reference then runs on exactly those graphs:

  sd2-vpred, fp16, fixed-batch1, lcm-unet: optimum's ORTStableDiffusionPipeline
      (diffusers' StableDiffusionPipeline loop over the ONNX graphs, CPU EP).
      fixed-batch1: the U-Net graph takes batch 1 only, which diffusers cannot
      drive with classifier-free guidance, so its session's run() is wrapped to
      call the graph once per batch row and stack the results (what Kiln does).
      lcm-unet: guidance 8 with no classifier-free guidance; diffusers feeds
      timestep_cond = get_guidance_scale_embedding(guidance - 1, 32) because
      unet.config.time_cond_proj_dim is set (StableDiffusionPipeline logic).
      LCMScheduler itself is stochastic (fresh noise every step), so DDIM and
      Euler stand in for it.
  legacy-int64: diffusers' OnnxStableDiffusionPipeline (the pipeline those
      exports were made for: int32 input_ids, timestep np.array([t], int64)).

Schedulers are <Class>.from_config(<the variant's scheduler_config.json>);
6 steps, eta 0, prompt "mossy stone brick wall", negative "blurry",
guidance 7.5 (lcm-unet: 8.0, no negative). Each case runs twice and must be
bitwise identical.

Also (issue 3):
  sd2-vpred.<kiln>.<steps>   every Kiln scheduler on the v_prediction variant,
      8 steps, guidance 7.5 (lcm: 4 steps, guidance 1.5), from_config with
      SCHEDULER_OVERRIDES; stochastic ones record their randn_tensor draws to
      <case>.step_noise.npy (generator seeded STEP_NOISE_SEED), as
      tools/make_golden.py does.
  sd-turbo-config.default.<n>   SD-Turbo's scheduler config (Euler, trailing)
      on tiny-sd's graphs, 1/2/4 steps, guidance 0.0; Kiln scheduler "default".

Usage (from repo root):
    /work/venv/bin/python tools/make_variant_golden.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
VARIANTS_DIR = REPO / "tests" / "fixtures" / "variants"
OUT = VARIANTS_DIR / "golden"

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_variant_fixtures as mvf  # noqa: E402

NOISE_SEED = 1234
NOISE_FILE = "noise_1x4x8x8.npy"
WIDTH = HEIGHT = 64
STEPS = 6
PROMPT = "mossy stone brick wall"
NEGATIVE = "blurry"

# name, variant, kiln scheduler, diffusers class, steps, guidance, negative prompt
CASES = []
for _v in ("sd2-vpred", "legacy-int64", "fp16", "fixed-batch1"):
    CASES.append((f"{_v}.ddim", _v, "ddim", "DDIMScheduler", STEPS, 7.5, NEGATIVE))
    CASES.append((f"{_v}.euler", _v, "euler", "EulerDiscreteScheduler", STEPS, 7.5, NEGATIVE))
CASES.append(("lcm-unet.ddim", "lcm-unet", "ddim", "DDIMScheduler", STEPS, 8.0, None))
CASES.append(("lcm-unet.euler", "lcm-unet", "euler", "EulerDiscreteScheduler", STEPS, 8.0, None))

# v-prediction matrix (issue 3): every Kiln scheduler on sd2-vpred (v_prediction),
# 8 steps, guidance 7.5 (lcm: 4 steps, guidance 1.5, as LCM-LoRA use), named
# "sd2-vpred.<kiln name>.<steps>".
VPRED_MATRIX = [
    # kiln name,        diffusers class
    ("ddim",            "DDIMScheduler"),
    ("euler",           "EulerDiscreteScheduler"),
    ("euler_a",         "EulerAncestralDiscreteScheduler"),
    ("pndm",            "PNDMScheduler"),
    ("lms",             "LMSDiscreteScheduler"),
    ("heun",            "HeunDiscreteScheduler"),
    ("dpmpp_2m",        "DPMSolverMultistepScheduler"),
    ("dpmpp_2m_karras", "DPMSolverMultistepScheduler"),
    ("dpmpp_2m_sde",    "DPMSolverMultistepScheduler"),
    ("unipc",           "UniPCMultistepScheduler"),
    ("lcm",             "LCMScheduler"),
]
for _k, _cls in VPRED_MATRIX:
    _steps, _g = (4, 1.5) if _k == "lcm" else (8, 7.5)
    CASES.append((f"sd2-vpred.{_k}.{_steps}", "sd2-vpred", _k, _cls, _steps, _g, NEGATIVE))

# SD-Turbo's own exported scheduler config (EulerDiscreteScheduler, 'trailing')
# on tiny-sd's graphs, 1/2/4 steps, guidance 0.0 (no CFG); Kiln runs it with
# scheduler "default", which must resolve to Euler from the config.
for _n in (1, 2, 4):
    CASES.append((f"sd-turbo-config.default.{_n}", "sd-turbo-config", "default", "EulerDiscreteScheduler", _n, 0.0, None))

# from_config overrides, per Kiln scheduler name (as tools/make_golden.py).
SCHEDULER_OVERRIDES = {
    "dpmpp_2m_karras": {"use_karras_sigmas": True},
    "dpmpp_2m_sde": {"algorithm_type": "sde-dpmsolver++"},
}
# Kiln schedulers that draw noise while stepping: the pipeline gets
# torch.Generator("cpu").manual_seed(STEP_NOISE_SEED) and every randn_tensor
# call of the scheduler's module is recorded to <case>.step_noise.npy
# [draws,1,4,8,8] (the technique of tools/make_golden.py).
STOCHASTIC = {"euler_a", "dpmpp_2m_sde", "lcm"}
STEP_NOISE_SEED = 4321


class SessionSpy:
    """Wraps an onnxruntime InferenceSession: records U-Net feeds; optionally
    runs a batch-N call as N batch-1 calls (fixed-batch graphs)."""

    def __init__(self, sess, split_batch: bool):
        self._sess = sess
        self._split = split_batch
        self.calls = []

    def __getattr__(self, k):
        return getattr(self._sess, k)

    def run(self, output_names, feeds, *a, **kw):
        self.calls.append(
            {
                "timestep": np.array(feeds["timestep"]).copy(),
                "sample_shape": list(feeds["sample"].shape),
                "timestep_cond": None if "timestep_cond" not in feeds else np.array(feeds["timestep_cond"]).copy(),
                "input_types": {k: str(np.asarray(v).dtype) for k, v in feeds.items()},
            }
        )
        b = feeds["sample"].shape[0]
        if not self._split or b == 1:
            return self._sess.run(output_names, feeds, *a, **kw)
        outs = []
        for i in range(b):
            fi = {}
            for k, v in feeds.items():
                v = np.asarray(v)
                fi[k] = v[i : i + 1] if v.ndim > 0 and v.shape[0] == b else v
            outs.append(self._sess.run(output_names, fi, *a, **kw))
        return [np.concatenate([o[j] for o in outs], axis=0) for j in range(len(outs[0]))]


def load(variant: str, folder: Path):
    if variant == "legacy-int64":
        from diffusers import OnnxStableDiffusionPipeline

        pipe = OnnxStableDiffusionPipeline.from_pretrained(
            str(folder), provider="CPUExecutionProvider", provider_options=[{}], local_files_only=True
        )
        pipe.set_progress_bar_config(disable=True)
        spy = SessionSpy(pipe.unet.model, split_batch=False)
        pipe.unet.model = spy
        return pipe, spy
    from optimum.onnxruntime import ORTStableDiffusionPipeline

    pipe = ORTStableDiffusionPipeline.from_pretrained(str(folder), provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    assert not pipe.unet.use_io_binding, "spy needs session.run"
    spy = SessionSpy(pipe.unet.session, split_batch=(variant == "fixed-batch1"))
    pipe.unet.session = spy
    return pipe, spy


def run_case(pipe, spy, variant, kiln, sched_cls, steps, guidance, negative, noise, base_config):
    import diffusers
    import torch

    cls = getattr(diffusers, sched_cls)
    if variant == "legacy-int64" and isinstance(getattr(cls, "init_noise_sigma", None), property):
        # OnnxStableDiffusionPipeline does `numpy_latents * scheduler.init_noise_sigma`,
        # which fails when the scheduler returns a torch tensor (Euler); hand it a
        # float with the same value. Nothing else changes.
        base_cls = cls
        cls = type(cls.__name__, (cls,), {"init_noise_sigma": property(lambda self: float(base_cls.init_noise_sigma.fget(self)))})
    pipe.scheduler = cls.from_config(base_config, **SCHEDULER_OVERRIDES.get(kiln, {}))
    spy.calls.clear()
    step_latents = []
    stochastic = kiln in STOCHASTIC
    if stochastic:
        assert variant != "legacy-int64"
        gen = {"generator": torch.Generator("cpu").manual_seed(STEP_NOISE_SEED)}
    else:
        gen = {}
    # record every noise tensor the scheduler draws
    step_noise = []
    sched_module = sys.modules[type(pipe.scheduler).__module__]
    orig_randn = getattr(sched_module, "randn_tensor", None)

    def spy_randn(*args, **kwargs):
        t = orig_randn(*args, **kwargs)
        step_noise.append(t.detach().cpu().numpy().astype(np.float32).copy())
        return t

    common = dict(
        prompt=PROMPT,
        negative_prompt=negative,
        num_inference_steps=steps,
        guidance_scale=guidance,
        width=WIDTH,
        height=HEIGHT,
        num_images_per_prompt=1,
        eta=0.0,
        output_type="np",
    )
    if variant == "legacy-int64":

        def cb(i, t, latents):
            step_latents.append(np.array(latents, dtype=np.float32).copy())

        out = pipe(**common, latents=noise.copy(), callback=cb, callback_steps=1)
    else:

        def cb(p, i, t, kw):
            step_latents.append(kw["latents"].detach().cpu().float().numpy().copy())
            return kw

        if orig_randn is not None:
            sched_module.randn_tensor = spy_randn
        try:
            out = pipe(
                **common,
                **gen,
                latents=torch.from_numpy(noise.copy()),
                callback_on_step_end=cb,
                callback_on_step_end_tensor_inputs=["latents"],
            )
        finally:
            if orig_randn is not None:
                sched_module.randn_tensor = orig_randn
    if stochastic != bool(step_noise):
        raise SystemExit(f"{variant}/{kiln}: stochastic={stochastic} but the scheduler drew {len(step_noise)} noise tensors")
    for a in step_noise:
        assert a.shape == noise.shape, (a.shape, noise.shape)
    image = np.asarray(out.images[0], dtype=np.float32)
    sched = pipe.scheduler
    assert len(step_latents) == len(sched.timesteps) == len(spy.calls), (len(step_latents), len(spy.calls))
    calls = list(spy.calls)
    return {
        "latents": step_latents[-1].astype(np.float32),
        "image": image,
        "step_noise": np.stack(step_noise).astype(np.float32) if step_noise else None,
        "calls": calls,
        "scheduler_timesteps": [float(t) for t in sched.timesteps],
        "init_noise_sigma": float(sched.init_noise_sigma),
        "scheduler_config": {k: v for k, v in sorted(dict(sched.config).items()) if k != "_use_default_values"},
    }


def jsonable(v):
    """JSON has no infinities (e.g. DPMSolver's lambda_min_clipped = -inf): repr them."""
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if isinstance(v, dict):
        return {k: jsonable(x) for k, x in v.items()}
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not np.isfinite(v):
        return repr(v)
    return v


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for p in ["torch", "diffusers", "transformers", "optimum-onnx", "onnxruntime", "numpy"]:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "-"
    return out


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    OUT.mkdir(parents=True, exist_ok=True)
    noise = np.random.default_rng(NOISE_SEED).standard_normal((1, 4, 8, 8)).astype(np.float32)
    np.save(OUT / NOISE_FILE, noise)
    cases = []
    with tempfile.TemporaryDirectory(prefix="kiln_var_golden_") as tmp:
        loaded = {}
        for name, variant, kiln, cls, steps, guidance, negative in CASES:
            if variant not in loaded:
                folder = mvf.materialize(VARIANTS_DIR / variant, Path(tmp) / variant)
                base_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
                loaded[variant] = (*load(variant, folder), base_config)
            pipe, spy, base_config = loaded[variant]
            a = run_case(pipe, spy, variant, kiln, cls, steps, guidance, negative, noise, base_config)
            b = run_case(pipe, spy, variant, kiln, cls, steps, guidance, negative, noise, base_config)
            for k in ("latents", "image", "step_noise"):
                if (a[k] is None) != (b[k] is None) or (a[k] is not None and not np.array_equal(a[k], b[k])):
                    raise SystemExit(f"{name}: {k} not bitwise deterministic")
            np.save(OUT / f"{name}.latents.npy", a["latents"])
            np.save(OUT / f"{name}.image.npy", a["image"])
            files = {"latents": f"{name}.latents.npy", "image": f"{name}.image.npy"}
            if a["step_noise"] is not None:
                np.save(OUT / f"{name}.step_noise.npy", a["step_noise"])
                files["step_noise"] = f"{name}.step_noise.npy"
            c0 = a["calls"][0]
            tc = c0["timestep_cond"]
            entry = {
                "name": name,
                "variant": variant,
                "fixture": f"variants/{variant}",
                "prompt": PROMPT,
                "negative_prompt": negative,
                "steps": steps,
                "guidance_scale": guidance,
                "scheduler": cls,
                "kiln_scheduler": kiln,
                "noise": NOISE_FILE,
                "width": WIDTH,
                "height": HEIGHT,
                "eta": 0.0,
                "files": files,
                "scheduler_timesteps": a["scheduler_timesteps"],
                "unet_timestep_feed": {
                    "dtype": str(c0["timestep"].dtype),
                    "shape": list(c0["timestep"].shape),
                    "values": [float(np.asarray(c["timestep"]).reshape(-1)[0]) for c in a["calls"]],
                },
                "unet_input_dtypes": c0["input_types"],
                "unet_batch": c0["sample_shape"][0],
                "timestep_cond": None if tc is None else {"shape": list(tc.shape), "row0": [float(x) for x in tc.reshape(tc.shape[0], -1)[0]]},
                "init_noise_sigma": a["init_noise_sigma"],
                "scheduler_config": a["scheduler_config"],
            }
            if kiln in SCHEDULER_OVERRIDES:
                entry["scheduler_overrides"] = SCHEDULER_OVERRIDES[kiln]
            if a["step_noise"] is not None:
                entry["step_noise_draws"] = int(a["step_noise"].shape[0])
                entry["step_noise_seed"] = STEP_NOISE_SEED
            cases.append(jsonable(entry))
            print(
                f"{name}: ok timesteps={cases[-1]['unet_timestep_feed']} batch={c0['sample_shape'][0]} "
                f"dtypes={c0['input_types']} latents max|x|={np.abs(a['latents']).max():.4f} image mean={a['image'].mean():.5f}"
            )
    (OUT / "cases.json").write_text(json.dumps(cases, indent=2, allow_nan=False) + "\n")
    lines = [
        "# variant golden outputs",
        "",
        "Made by `tools/make_variant_golden.py` (see its docstring for which reference pipeline runs each",
        "variant). Cases: DDIM and Euler (`from_config` of the variant's scheduler config), 6 steps, eta 0,",
        f"prompt \"{PROMPT}\", negative \"{NEGATIVE}\", guidance 7.5; lcm-unet: guidance 8.0, no negative,",
        "no CFG, `timestep_cond` = diffusers' `get_guidance_scale_embedding(7.0, 32)`.",
        f"Initial noise `np.random.default_rng({NOISE_SEED}).standard_normal((1,4,8,8))` f32 (`{NOISE_FILE}`),",
        "passed as `latents=` (diffusers multiplies by `init_noise_sigma`).",
        "",
        "- `<case>.latents.npy`: latents after the last scheduler step (before `/ scaling_factor`).",
        "- `<case>.image.npy`: HWC float32 in [0,1] (`output_type=\"np\"`).",
        "- `cases.json` also records what the U-Net was fed (timestep dtype/shape/values, input dtypes,",
        "  batch, the LCM `timestep_cond` row).",
        "- v-prediction matrix `sd2-vpred.<kiln scheduler>.<steps>`: every Kiln scheduler on sd2-vpred",
        "  (`prediction_type: v_prediction`), 8 steps, guidance 7.5, negative \"blurry\" (`lcm`: 4 steps,",
        "  guidance 1.5, CFG on); `<Class>.from_config(sd2-vpred config, **scheduler_overrides)`",
        "  (`dpmpp_2m_karras`: `use_karras_sigmas=True`, `dpmpp_2m_sde`: `algorithm_type=\"sde-dpmsolver++\"`).",
        f"  Stochastic schedulers (`euler_a`, `dpmpp_2m_sde`, `lcm`): the pipeline gets",
        f"  `generator=torch.Generator(\"cpu\").manual_seed({STEP_NOISE_SEED})` and every `randn_tensor` call in the",
        "  scheduler's module is recorded, in order, to `<case>.step_noise.npy` [draws,1,4,8,8]",
        "  (`step_noise_draws` in cases.json), as tools/make_golden.py does; Kiln replays them through",
        "  `GenerateRequest::step_noise`.",
        "- `sd-turbo-config.default.<steps>`: SD-Turbo's exported scheduler config (EulerDiscreteScheduler,",
        "  `timestep_spacing: trailing`) on tiny-sd's graphs, 1 / 2 / 4 steps, guidance 0.0 (no CFG, U-Net",
        "  batch 1, no negative prompt); Kiln runs it with scheduler `default` (`kiln_scheduler`).",
        "- fp16: the reference runs the fp16 graphs through optimum, which casts every feed to the",
        "  graph's dtype (float16) and diffusers' scheduler math then runs in float16 torch tensors too",
        "  (the latents come back as float16); expect Kiln (f32 scheduler, f16 only at the graph boundary)",
        "  to differ by more than the fp32 variants.",
        "",
        "## Versions",
        "",
        *[f"- {k} {v}" for k, v in versions().items()],
        "",
    ]
    (OUT / "README.md").write_text("\n".join(lines))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
