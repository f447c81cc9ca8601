"""Generation requests: keyword arguments to a ``kiln_generate_options`` struct, keeping the
buffers it borrows alive for the call."""

from __future__ import annotations

import ctypes
import json
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Mapping, Sequence, TypedDict, Union

import numpy as np

from kiln import _abi, _library
from kiln._convert import ImageLike, as_mask, as_pixels
from kiln.enums import ControlPreprocess, NoiseGenerator, Scheduler, Status
from kiln.errors import ArgumentError

__all__ = ["Control", "GenerateOptions", "Request"]


@dataclass
class Control:
    """One ControlNet for a generation (``kiln_control``): a folder under the model's ``controlnet/``
    and its control image (a ``kiln.Image``, an (H, W, 3|4) uint8 array or a PIL image; any size with
    the output's aspect ratio)."""

    controlnet: str
    image: Any
    #: How ``image`` becomes the control image (a ControlPreprocess or its name, "canny").
    preprocess: Union[ControlPreprocess, str] = ControlPreprocess.NONE
    #: diffusers' controlnet_conditioning_scale.
    scale: float = 1.0
    #: Fractions of the schedule where the ControlNet runs.
    start: float = 0.0
    end: float = 1.0
    #: Canny thresholds (preprocess CANNY).
    canny_low: float = 100.0
    canny_high: float = 200.0


class GenerateOptions(TypedDict, total=False):
    """Keyword arguments of a generation; omitted ones keep Kiln's defaults."""

    #: Width and height in pixels; 0 = the model's native size.
    width: int
    height: int
    #: Denoising steps; 0 = 20.
    steps: int
    #: Classifier-free guidance scale (default 7.5; <= 1 skips the unconditional pass).
    guidance_scale: float
    #: A Scheduler or its name ("euler_a").
    scheduler: Union[Scheduler, str]
    #: The seed (default 0) of the generator ``noise_generator`` names.
    seed: int
    #: Which generator the seed drives: a NoiseGenerator or its name, "kiln" (default: Kiln's
    #: portable noise), "torch" / "torch_cpu" (PyTorch's CPU generator: diffusers' image for
    #: ``generator=torch.Generator("cpu").manual_seed(seed)``, ComfyUI's initial noise) or
    #: "torch_cuda" (PyTorch's CUDA generator, computed on the host: AUTOMATIC1111's default "GPU"
    #: seeds, diffusers' image for ``generator=torch.Generator("cuda").manual_seed(seed)``).
    noise_generator: Union[NoiseGenerator, int, str]
    #: AUTOMATIC1111's variation seed (0..2**64-1, default 0): with ``variation_strength`` > 0 the
    #: starting noise (txt2img's initial latents; img2img's and inpainting's start noise) is the
    #: spherical blend of ``seed``'s draw and this seed's, drawn with the same ``noise_generator``;
    #: every other draw still comes from ``seed``.
    variation_seed: int
    #: How far towards ``variation_seed``'s noise, 0..=1: 0 (default) = no variation, 1 = the
    #: variation seed's starting noise. Outside 0..=1, or > 0 with ``initial_noise``: ArgumentError.
    variation_strength: float
    negative_prompt: str
    #: Exact initial latents, float32 NCHW [1, C, H/f, W/f].
    initial_noise: "np.ndarray[Any, Any]"
    guidance_rescale: float
    #: AUTOMATIC1111 prompt weighting: (text:1.3), [text], BREAK.
    prompt_weighting: bool
    #: img2img / inpainting: the picture to start from.
    init_image: ImageLike
    strength: float
    posterior_mean: bool
    clip_skip: int
    #: Inpainting: (H, W) uint8 (>= 128 repainted) or bool, or a PIL image.
    mask: Any
    #: Replaces scheduler_config.json values for this request.
    scheduler_overrides: Union[dict[str, Any], str]
    #: Tiled VAE: tile size in pixels (0 = from vae_memory_budget_mib, or whole).
    vae_tile_size: int
    #: Overlap of VAE tiles in pixels (0 = a quarter of the tile).
    vae_tile_overlap: int
    #: With vae_tile_size 0: MiB one VAE pass may use (0 = no budget).
    vae_memory_budget_mib: int
    #: 0 = the VAE (default), 1 = the model's tiny preview decoder (fast).
    final_decoder: int
    #: ControlNets (kiln.Control); their residuals add.
    controls: Sequence[Control]
    #: diffusers' guess mode (with CFG only the conditional half gets the residuals).
    guess_mode: bool
    #: SDXL (SD 1.x/2.x models refuse these with InvalidArgumentError, as diffusers' SD pipelines
    #: have no such arguments): the second text encoder's prompt (None or "" = the prompt).
    prompt_2: str
    negative_prompt_2: str
    #: SDXL size conditioning as diffusers writes it: (height, width); None = the output size.
    original_size: tuple[int, int]
    target_size: tuple[int, int]
    negative_original_size: tuple[int, int]
    negative_target_size: tuple[int, int]
    #: SDXL crop conditioning as diffusers writes it: (top, left); default (0, 0).
    crops_coords_top_left: tuple[int, int]
    negative_crops_coords_top_left: tuple[int, int]
    #: Refiner-style SDXL U-Nets only: defaults 6.0 and 2.5.
    aesthetic_score: float
    negative_aesthetic_score: float
    #: Base-to-refiner hand-off: a second kiln.Model that finishes the schedule from this model's
    #: latents and decodes (diffusers' denoising_end / denoising_start in one call).
    refiner: Any
    #: With refiner: the fraction of the schedule this model runs, 0 < f < 1 (default 0.8).
    refiner_start: float


#: The names ``noise_generator`` takes, upper-cased: the members' own ("kiln", "torch_cpu",
#: "torch_cuda") and "torch" (the CPU generator, as diffusers' and ComfyUI's seeds are).
_NOISE_GENERATOR_NAMES: dict[str, NoiseGenerator] = {**NoiseGenerator.__members__, "TORCH": NoiseGenerator.TORCH_CPU}
#: Those names as the error for an unknown one lists them: 'kiln', 'torch', 'torch_cpu' or 'torch_cuda'.
_NOISE_GENERATOR_LIST = " or ".join(
    (", ".join(repr(name.lower()) for name in sorted(_NOISE_GENERATOR_NAMES)[:-1]),
     repr(sorted(_NOISE_GENERATOR_NAMES)[-1].lower())))


def _enum_field(value: Union[IntEnum, int, str], names: Mapping[str, IntEnum], listed: str, field: str,
                c_type: str, python_type: str) -> int:
    """The uint32 value of enum field ``options->{field}`` from a member, a name or an int. A
    uint32 passes through unchecked, so Kiln refuses an unknown one with its own status and
    message; an unknown name, or an int the field cannot hold (which ctypes would wrap), is refused
    here the same way (ArgumentError, INVALID_ARGUMENT)."""
    if isinstance(value, str):
        member = names.get(value.upper())
        if member is None:
            raise ArgumentError(Status.INVALID_ARGUMENT, f"options->{field} {value!r} is not a "
                                f"kiln.{python_type} name ({listed})")
        return int(member)
    number = int(value)
    if not 0 <= number <= 0xFFFF_FFFF:
        raise ArgumentError(Status.INVALID_ARGUMENT, f"options->{field} {number} is not a {c_type}")
    return number


def _noise_generator(value: Union[NoiseGenerator, int, str]) -> int:
    """``kiln_noise_generator``'s value from a member, a name or an int (see ``_enum_field``)."""
    return _enum_field(value, _NOISE_GENERATOR_NAMES, _NOISE_GENERATOR_LIST, "noise_generator",
                       "kiln_noise_generator", "NoiseGenerator")


def _variation_seed(value: int) -> int:
    """``variation_seed`` as the uint64 field holds it; an int it cannot hold (which ctypes would
    wrap) is refused (ArgumentError, INVALID_ARGUMENT) rather than becoming another seed."""
    number = int(value)
    if not 0 <= number <= 0xFFFF_FFFF_FFFF_FFFF:
        raise ArgumentError(Status.INVALID_ARGUMENT, f"options->variation_seed {number} is not a uint64 (0..2**64-1)")
    return number


def _variation_strength(value: float) -> float:
    """``variation_strength`` for the float32 field. Kiln refuses a value outside 0..=1 (NaN and the
    infinities included) with its own status and message; one that the float32 rounding would carry
    into 0..=1 (1 + 1e-12, -1e-50), and so past Kiln's check, is refused here the same way
    (ArgumentError, INVALID_ARGUMENT, naming variation_strength)."""
    number = float(value)
    rounded = ctypes.c_float(number).value
    if not 0.0 <= number <= 1.0 and 0.0 <= rounded <= 1.0:
        raise ArgumentError(Status.INVALID_ARGUMENT, f"options->variation_strength {number!r} must be within 0..=1")
    return number


class Request:
    """A filled ``kiln_generate_options`` and the objects whose memory it points into."""

    def __init__(self, prompt: str, options: GenerateOptions) -> None:
        o = _abi.GenerateOptions()
        _library.lib().kiln_generate_options_init(ctypes.byref(o))
        self.keep: list[Any] = []
        kw: dict[str, Any] = dict(options)
        o.prompt = self._text(prompt)
        for name in ("width", "height", "steps", "seed", "clip_skip", "vae_tile_size", "vae_tile_overlap",
                     "vae_memory_budget_mib", "final_decoder"):
            if name in kw:
                setattr(o, name, int(kw.pop(name)))
        for name in ("guidance_scale", "guidance_rescale", "strength", "aesthetic_score", "negative_aesthetic_score",
                     "refiner_start"):
            if name in kw:
                setattr(o, name, float(kw.pop(name)))
        for name in ("prompt_weighting", "posterior_mean", "guess_mode"):
            if name in kw:
                setattr(o, name, 1 if kw.pop(name) else 0)
        if "scheduler" in kw:
            s = kw.pop("scheduler")
            o.scheduler = int(Scheduler[s.upper()] if isinstance(s, str) else Scheduler(s))
        if "noise_generator" in kw:
            o.noise_generator = _noise_generator(kw.pop("noise_generator"))
        if "variation_seed" in kw:
            o.variation_seed = _variation_seed(kw.pop("variation_seed"))
        if "variation_strength" in kw:
            o.variation_strength = _variation_strength(kw.pop("variation_strength"))
        for name in ("negative_prompt", "prompt_2", "negative_prompt_2"):
            if kw.get(name) is not None:
                setattr(o, name, self._text(kw.pop(name)))
            kw.pop(name, None)
        # diffusers' tuples: sizes (height, width), crops (top, left).
        for name, prefix in (("original_size", "original"), ("target_size", "target"),
                             ("negative_original_size", "negative_original"),
                             ("negative_target_size", "negative_target")):
            if kw.get(name) is not None:
                height, width = kw.pop(name)
                setattr(o, f"{prefix}_height", int(height))
                setattr(o, f"{prefix}_width", int(width))
            kw.pop(name, None)
        for name, prefix in (("crops_coords_top_left", "crop"), ("negative_crops_coords_top_left", "negative_crop")):
            if kw.get(name) is not None:
                top, left = kw.pop(name)
                setattr(o, f"{prefix}_top", int(top))
                setattr(o, f"{prefix}_left", int(left))
            kw.pop(name, None)
        if "initial_noise" in kw:
            noise = np.ascontiguousarray(kw.pop("initial_noise"), dtype=np.float32)
            self.keep.append(noise)
            o.initial_noise, o.initial_noise_len = noise.ctypes.data, noise.size
        if "init_image" in kw:
            pixels = as_pixels(kw.pop("init_image"))
            self.keep.append(pixels)
            o.init_image, o.init_image_len = pixels.ctypes.data, pixels.nbytes
            o.init_image_height, o.init_image_width, o.init_image_channels = pixels.shape
        if "mask" in kw:
            mask = as_mask(kw.pop("mask"))
            self.keep.append(mask)
            o.mask, o.mask_len = mask.ctypes.data, mask.nbytes
            o.mask_height, o.mask_width = mask.shape
        if "scheduler_overrides" in kw:
            over = kw.pop("scheduler_overrides")
            o.scheduler_overrides = self._text(over if isinstance(over, str) else json.dumps(over))
        if kw.get("refiner") is not None:
            refiner = kw.pop("refiner")
            self.keep.append(refiner)  # the handle stays open while the request is in use
            o.refiner = refiner.handle
        kw.pop("refiner", None)
        if kw.get("controls"):
            self._controls(o, list(kw.pop("controls")))
        kw.pop("controls", None)
        if kw:
            raise TypeError(f"unknown generation options: {', '.join(sorted(kw))}")
        self.struct = o

    def _controls(self, o: Any, controls: list[Control]) -> None:
        from kiln.image import Image

        array = (_abi.Control * len(controls))()
        for c, spec in zip(array, controls):
            if not isinstance(spec, Control):
                raise TypeError(f"controls takes kiln.Control entries, not {type(spec).__name__}")
            _library.lib().kiln_control_init(ctypes.byref(c))
            c.controlnet = self._text(spec.controlnet)
            image = spec.image if isinstance(spec.image, Image) else Image.from_array(spec.image)
            self.keep.append(image)  # a converted image lives as long as the request
            c.image = image.handle
            p = spec.preprocess
            c.preprocess = int(ControlPreprocess[p.upper()] if isinstance(p, str) else ControlPreprocess(p))
            c.scale, c.start, c.end = float(spec.scale), float(spec.start), float(spec.end)
            c.canny_low, c.canny_high = float(spec.canny_low), float(spec.canny_high)
        self.keep.append(array)
        o.controls, o.control_count = ctypes.addressof(array), len(controls)

    def _text(self, text: str) -> bytes:
        data = text.encode("utf-8")
        if b"\0" in data:
            raise ValueError("Kiln strings are NUL-terminated: this one contains a NUL character")
        self.keep.append(data)
        return data

    def ref(self) -> Any:
        """A pointer to the struct for a C call."""
        return ctypes.byref(self.struct)
