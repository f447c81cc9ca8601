#!/usr/bin/env python3
"""Golden outputs of the reference pipelines on the model-variant fixtures.

What it makes (in tests/fixtures/variants/golden/):
  noise_1x4x8x8.npy        fixed initial noise: np.random.default_rng(1234).standard_normal((1,4,8,8)) f32
  cases.json               every case (read by tests/variants.rs)
  <case>.latents.npy       final latents, before dividing by the VAE scaling_factor
  <case>.image.npy         float32 HWC RGB in [0,1] (output_type="np")
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

# name, variant, kiln scheduler, diffusers class, guidance, negative prompt
CASES = []
for _v in ("sd2-vpred", "legacy-int64", "fp16", "fixed-batch1"):
    CASES.append((f"{_v}.ddim", _v, "ddim", "DDIMScheduler", 7.5, NEGATIVE))
    CASES.append((f"{_v}.euler", _v, "euler", "EulerDiscreteScheduler", 7.5, NEGATIVE))
CASES.append(("lcm-unet.ddim", "lcm-unet", "ddim", "DDIMScheduler", 8.0, None))
CASES.append(("lcm-unet.euler", "lcm-unet", "euler", "EulerDiscreteScheduler", 8.0, None))


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


def run_case(pipe, spy, variant, sched_cls, guidance, negative, noise, base_config):
    import diffusers
    import torch

    cls = getattr(diffusers, sched_cls)
    if variant == "legacy-int64" and isinstance(getattr(cls, "init_noise_sigma", None), property):
        # OnnxStableDiffusionPipeline does `numpy_latents * scheduler.init_noise_sigma`,
        # which fails when the scheduler returns a torch tensor (Euler); hand it a
        # float with the same value. Nothing else changes.
        base_cls = cls
        cls = type(cls.__name__, (cls,), {"init_noise_sigma": property(lambda self: float(base_cls.init_noise_sigma.fget(self)))})
    pipe.scheduler = cls.from_config(base_config)
    spy.calls.clear()
    step_latents = []
    common = dict(
        prompt=PROMPT,
        negative_prompt=negative,
        num_inference_steps=STEPS,
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

        out = pipe(
            **common,
            latents=torch.from_numpy(noise.copy()),
            callback_on_step_end=cb,
            callback_on_step_end_tensor_inputs=["latents"],
        )
    image = np.asarray(out.images[0], dtype=np.float32)
    sched = pipe.scheduler
    assert len(step_latents) == len(sched.timesteps) == len(spy.calls), (len(step_latents), len(spy.calls))
    calls = list(spy.calls)
    return {
        "latents": step_latents[-1].astype(np.float32),
        "image": image,
        "calls": calls,
        "scheduler_timesteps": [float(t) for t in sched.timesteps],
        "init_noise_sigma": float(sched.init_noise_sigma),
        "scheduler_config": {k: v for k, v in sorted(dict(sched.config).items()) if k != "_use_default_values"},
    }


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
        for name, variant, kiln, cls, guidance, negative in CASES:
            if variant not in loaded:
                folder = mvf.materialize(VARIANTS_DIR / variant, Path(tmp) / variant)
                base_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
                loaded[variant] = (*load(variant, folder), base_config)
            pipe, spy, base_config = loaded[variant]
            a = run_case(pipe, spy, variant, cls, guidance, negative, noise, base_config)
            b = run_case(pipe, spy, variant, cls, guidance, negative, noise, base_config)
            for k in ("latents", "image"):
                if not np.array_equal(a[k], b[k]):
                    raise SystemExit(f"{name}: {k} not bitwise deterministic")
            np.save(OUT / f"{name}.latents.npy", a["latents"])
            np.save(OUT / f"{name}.image.npy", a["image"])
            c0 = a["calls"][0]
            tc = c0["timestep_cond"]
            cases.append(
                {
                    "name": name,
                    "variant": variant,
                    "fixture": f"variants/{variant}",
                    "prompt": PROMPT,
                    "negative_prompt": negative,
                    "steps": STEPS,
                    "guidance_scale": guidance,
                    "scheduler": cls,
                    "kiln_scheduler": kiln,
                    "noise": NOISE_FILE,
                    "width": WIDTH,
                    "height": HEIGHT,
                    "eta": 0.0,
                    "files": {"latents": f"{name}.latents.npy", "image": f"{name}.image.npy"},
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
            )
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
