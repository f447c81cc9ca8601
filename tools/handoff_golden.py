"""What the base-to-refiner hand-off golden scripts share
(tools/make_sdxl_handoff_golden.py, make_sdxl_controlnet_handoff_golden.py,
make_sdxl_inpaint_handoff_golden.py): recording both stages' timesteps and
final latents, the result each case saves, and writing the goldens after a
determinism check.
"""
import json

import numpy as np
import torch

import make_sdxl_golden as sdxl_golden

# The arrays every hand-off case saves: the base's latents as the refiner gets
# them, the final latents and image, and every random draw in order.
ARRAYS = ("handoff", "latents", "image", "draws")


def ort_pipeline(cls, folder, kiln):
    """An optimum ORT pipeline class loaded from `folder` on the CPU, with Kiln scheduler `kiln`."""
    import diffusers

    pipe = cls.from_pretrained(str(folder), provider="CPUExecutionProvider", local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    sched_cls, extra = sdxl_golden.SCHEDULERS[kiln]
    pipe.scheduler = getattr(diffusers, sched_cls).from_config(dict(pipe.scheduler.config), **extra)
    return pipe


class Stages:
    """Both stages' U-Net timesteps and the latest latents, through `callback_on_step_end`."""

    def __init__(self):
        self.times = {"base": [], "refiner": []}
        self.latents = None

    def on_end(self, stage):
        def cb(pipe, i, t, kw):
            self.latents = kw["latents"].detach().cpu().numpy().astype(np.float32).copy()
            self.times[stage].append(float(t))
            return kw

        return cb

    def result(self, handoff, out, draws):
        """A case's arrays and timesteps: `handoff` the base's latent output, `out` the refiner's."""
        return {
            "handoff": handoff.detach().cpu().numpy().astype(np.float32).copy(),
            "latents": self.latents,
            "image": out.images[0].astype(np.float32),
            "draws": np.concatenate([d.reshape(-1) for d in draws]).astype(np.float32),
            "base_t": self.times["base"],
            "refiner_t": self.times["refiner"],
        }


def two_stages(base, ref, split, draws, both, base_only):
    """diffusers' ensemble of expert denoisers: `base` down to `denoising_end=split`
    as latents, then `ref` from `denoising_start=split` with those latents as its
    `image`; `both` goes to both calls, `base_only` to the base's. Returns `Stages.result`."""
    stages = Stages()
    with torch.no_grad():
        handoff = base(
            **both, **base_only, denoising_end=split, output_type="latent",
            generator=torch.Generator().manual_seed(777), callback_on_step_end=stages.on_end("base"),
        ).images
        out = ref(
            **both, image=handoff, denoising_start=split, output_type="np",
            generator=torch.Generator().manual_seed(778), callback_on_step_end=stages.on_end("refiner"),
        )
    return stages.result(handoff, out, draws)


def write(out_dir, cases, run_case, entry):
    """Runs each case twice (the runs must agree bit for bit), saves the first
    run's arrays as <name>.<array>.npy and the entries `entry(case, result)` as
    cases.json. A case's name is its first element."""
    index = []
    for case in cases:
        name = case[0]
        a, b = run_case(case), run_case(case)
        for k in ARRAYS:
            assert np.array_equal(a[k], b[k]), f"{name}: {k} not deterministic"
            np.save(out_dir / f"{name}.{k}.npy", a[k])
        index.append(entry(case, a))
        print(name, "base", a["base_t"], "refiner", a["refiner_t"], "draws", a["draws"].size)
    with open(out_dir / "cases.json", "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
