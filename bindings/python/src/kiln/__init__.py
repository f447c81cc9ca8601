"""Kiln for Python: generate game textures with Stable Diffusion through Kiln's C library.

    import kiln
    with kiln.Runtime() as runtime, runtime.load_model("models/kiln-tiny-textures") as model:
        with model.generate("mossy stone brick wall", seed=42) as image:
            image.save("brick.png")            # or image.to_numpy(), image.to_pil()

The library is found through ``KILN_LIBRARY`` (a path), else the copy bundled in ``kiln/_native/``,
else the system loader; see ``kiln.library_path()``.
"""

from __future__ import annotations

from kiln import _library
from kiln._options import Control, GenerateOptions
from kiln.enums import (CellColor, ControlPreprocess, Graph, JobEventKind, JobState, LogLevel, Matte, NoiseGenerator,
                        NormalConvention, Provider, Quantization, Residency, GpuMath, Scheduler, Seamless, Status,
                        UpscaleAlpha, Attention)
from kiln.errors import (AdapterMismatchError, ArgumentError, BufferTooSmallError, BusyError, CancelledError, InferenceError,
                         InternalError, InvalidHandleError, JobFailedError, KilnError, KilnIOError, ModelError,
                         ModelNotFoundError, OutOfMemoryError, ProviderError, RuntimeLoadError,
                         UnsupportedError)
from kiln.image import Image, MaterialMaps, Rect, Sprite
from kiln.job import Job, Preview, Progress
from kiln.model import Model, ModelInfo
from kiln.runtime import LogCallback, Runtime
from kiln.upscaler import Upscaler

__version__ = "0.1.0"

__all__ = [
    "Runtime", "Model", "ModelInfo", "Image", "Job", "Progress", "Preview", "Rect", "Sprite", "MaterialMaps",
    "GenerateOptions", "Control", "ControlPreprocess", "LogCallback", "Status", "Scheduler", "NoiseGenerator", "JobState", "JobEventKind", "Provider", "Graph",
    "Residency", "GpuMath", "Seamless", "Quantization", "Attention", "NormalConvention", "CellColor", "Matte", "LogLevel", "KilnError", "ArgumentError",
    "BufferTooSmallError", "InvalidHandleError", "ModelError", "ModelNotFoundError", "KilnIOError",
    "UnsupportedError", "RuntimeLoadError", "ProviderError", "InferenceError", "CancelledError", "BusyError",
    "InternalError", "JobFailedError", "AdapterMismatchError", "OutOfMemoryError", "library_path", "version", "providers_compiled",
    "Upscaler", "UpscaleAlpha",
]


def library_path() -> str:
    """Where libkiln was loaded from (loads it if needed)."""
    return _library.library_path()


def version() -> str:
    """The loaded library's version string, e.g. "0.1.0"."""
    return str(_library.lib().kiln_version_string().decode())


def providers_compiled() -> list[Provider]:
    """The execution providers compiled into the loaded library."""
    bits = int(_library.lib().kiln_providers_compiled())
    return [p for p in Provider if bits & (1 << p)]
