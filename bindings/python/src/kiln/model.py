"""kiln.Model: a loaded model that generates images, synchronously or as jobs."""

from __future__ import annotations

import ctypes
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional, Union, cast

import numpy as np

from kiln import _abi, _library
from kiln._closeable import Closeable
from kiln._convert import ImageLike, writable_rgba
from kiln._options import GenerateOptions, Request
from kiln.enums import Graph, Quantization, Seamless, UpscaleAlpha
from kiln.errors import check, read_string
from kiln.image import Image, Rect, Sprite, sprite_options
from kiln.job import Job, submit
from kiln.upscaler import Upscaler, _options as upscale_options

if TYPE_CHECKING:
    if sys.version_info >= (3, 11):
        from typing import Unpack
    else:
        from typing_extensions import Unpack

    from kiln.runtime import Runtime

__all__ = ["Model", "ModelInfo"]

_Path = Union[str, os.PathLike[str]]
#: A LoRA for ``Model.with_loras``: ``(path, scale)`` or ``(path, scale, text_encoder_scale)``.
LoraEntry = Union[tuple[_Path, float], tuple[_Path, float, Optional[float]]]
#: A textual-inversion embedding for ``Model.with_loras``: a path, or ``(path, token)``.
EmbeddingEntry = Union[_Path, tuple[_Path, Optional[str]]]


class _Adapters:
    """``kiln_lora`` and ``kiln_embedding`` arrays from ``with_loras``' arguments, with the strings
    they point to (kept alive as long as this object)."""

    def __init__(self, loras: Iterable[LoraEntry], embeddings: Iterable[EmbeddingEntry]) -> None:
        lib = _library.lib()
        lora_list: list[tuple[object, ...]] = [tuple(entry) for entry in loras]
        self.lora_count = len(lora_list)
        self.loras = (_abi.Lora * max(len(lora_list), 1))()
        self._keep: list[bytes] = []  # the path bytes must outlive the call
        for c, entry in zip(self.loras, lora_list):
            if len(entry) not in (2, 3):
                raise TypeError(f"a LoRA is (path, scale) or (path, scale, text_encoder_scale), not {entry!r}")
            path = cast("str | os.PathLike[str]", entry[0])
            scale = cast(float, entry[1])
            text_encoder_scale = cast("float | None", entry[2]) if len(entry) == 3 else None
            lib.kiln_lora_init(ctypes.byref(c))
            self._keep.append(os.fsencode(path))
            c.path, c.scale = self._keep[-1], float(scale)
            if text_encoder_scale is not None:
                c.has_text_encoder_scale, c.text_encoder_scale = 1, float(text_encoder_scale)
        emb_list = [e if isinstance(e, tuple) else (e, None) for e in embeddings]
        self.embedding_count = len(emb_list)
        self.embeddings = (_abi.Embedding * max(len(emb_list), 1))()
        for c, (path, token) in zip(self.embeddings, emb_list):
            lib.kiln_embedding_init(ctypes.byref(c))
            self._keep.append(os.fsencode(path))
            c.path = self._keep[-1]
            if token is not None:
                self._keep.append(token.encode("utf-8"))
                c.token = self._keep[-1]


@dataclass(frozen=True)
class ModelInfo:
    """Facts about a loaded model (``kiln_model_info``)."""

    default_size: int
    size_multiple: int
    latent_channels: int
    vae_downsampling: int
    embedding_dim: int
    has_vae_encoder: bool
    has_matting: bool
    #: How the weights were loaded (``Runtime.load_model``'s ``quantization``).
    quantization: Quantization
    #: How many of the U-Net's attention layers run as one fused node (``Runtime.load_model``'s
    #: ``attention``); 0 when none do.
    fused_attention: int
    #: How many of the U-Net's layers have a LoRA slot (``Runtime.load_model``'s ``lora_slots``); 0 when
    #: loaded without.
    lora_slots: int


class Model(Closeable):
    """A loaded model (``Runtime.load_model``). Thread-safe; close it, or use ``with``."""

    def __init__(self, handle: int, runtime: Runtime | None = None) -> None:
        """Takes ownership of a ``kiln_model *``."""
        if not handle:
            raise ValueError("NULL kiln_model")
        self._handle: int | None = handle
        # Keeps the runtime's log callback alive while this model can log.
        self._runtime = runtime

    @property
    def handle(self) -> int:
        """The ``kiln_model *`` address; ValueError once closed."""
        if self._handle is None:
            raise ValueError("the model is closed")
        return self._handle

    @property
    def info(self) -> ModelInfo:
        """Native size, size multiple, latent layout, what the export has, how it was loaded, how
        many U-Net attention layers run fused and how many U-Net layers have a LoRA slot."""
        i = _abi.ModelInfo()
        i.struct_size = ctypes.sizeof(i)
        check(_library.lib().kiln_model_get_info(self.handle, ctypes.byref(i)))
        return ModelInfo(i.default_size, i.size_multiple, i.latent_channels, i.vae_downsampling, i.embedding_dim,
                         bool(i.has_vae_encoder), bool(i.has_matting), Quantization(i.quantization),
                         int(i.fused_attention), int(i.lora_slots))

    def generate(self, prompt: str, **options: Unpack[GenerateOptions]) -> Image:
        """Generates an image, blocking until done. Options: see ``kiln.GenerateOptions``."""
        request = Request(prompt, options)
        out = ctypes.c_void_p()
        check(_library.lib().kiln_model_generate(self.handle, request.ref(), ctypes.byref(out)))
        return Image(out.value or 0)

    def generate_into(self, out: np.ndarray[Any, Any], prompt: str, **options: Unpack[GenerateOptions]) -> None:
        """Generates straight into an (H, W, 4) uint8 array, which may be a view with padded rows;
        its shape gives the size unless ``width``/``height`` are passed."""
        address, length, pitch, height = writable_rgba(out)
        options.setdefault("width", out.shape[1])
        options.setdefault("height", height)
        request = Request(prompt, options)
        check(_library.lib().kiln_model_generate_into(self.handle, request.ref(), address, length, pitch))

    def submit(self, prompt: str, *, priority: int = 0, preview_interval: int = 0,
               **options: Unpack[GenerateOptions]) -> Job:
        """Queues a generation and returns at once. Higher ``priority`` runs first; a preview is made
        every ``preview_interval`` U-Net calls (0: none). What a generation checks before it runs is
        checked here, nothing queued on an error: ArgumentError for a size the model cannot generate
        (INVALID_SIZE), a guidance scale that is not finite or scheduler overrides it refuses
        (INVALID_ARGUMENT), and ``generate``'s argument errors. What fails while it runs (img2img
        whose strength leaves no step) fails the job."""
        lib, request, handle = _library.lib(), Request(prompt, options), self.handle
        return submit(lambda jo, out: lib.kiln_job_submit(handle, request.ref(), jo, out),
                      priority=priority, preview_interval=preview_interval)

    def submit_upscaled(self, prompt: str, upscaler: Upscaler, *, tile: int = 256, context: int = 16,
                        alpha: UpscaleAlpha | int | str = UpscaleAlpha.GRAPH, priority: int = 0,
                        preview_interval: int = 0, **options: Unpack[GenerateOptions]) -> Job:
        """Queues a generation and its upscale by ``upscaler`` as one job and returns at once
        (``kiln_job_submit_upscaled``), so a game asks once for a 2K or 4K texture: ``result()`` gives
        what ``submit`` makes, upscaled as ``upscaler.submit(..., tile=tile, context=context,
        alpha=alpha)`` would upscale it. There is no ``seamless`` argument: the upscale wraps on this
        model's seamless axes (a ``seamless()`` view's, or those it was loaded with), which its image
        tiles along exactly. ``priority`` and ``preview_interval`` as for ``submit``; previews come
        from the generation. ``Job.poll()`` counts the U-Net calls and then the upscale's graph runs
        (tiles; a generated image is opaque, so one pass) in one count that only goes up, the
        total known from submission on (raised at the first step by schedulers that call the U-Net
        more than once a step: PNDM's warm-up, Heun). The job holds the model and the upscaler, so
        both may be closed right after. The arguments are checked here, nothing queued on an error:
        ArgumentError for a size the model cannot generate or a result over 16384 pixels a side
        (INVALID_SIZE), an unknown ``alpha`` or a ``context`` over 1024 (INVALID_ARGUMENT), and
        ``submit``'s and ``upscaler.submit``'s others. ``Job.cancel()`` stops either part within one
        graph call."""
        o = upscale_options(tile, context, Seamless.NONE, alpha)  # seamless: the model's axes instead
        lib, request, handle = _library.lib(), Request(prompt, options), self.handle
        # Held so a close() of the upscaler on another thread cannot free it during the call.
        with upscaler._using() as graph:
            return submit(lambda jo, out: lib.kiln_job_submit_upscaled(handle, request.ref(), graph, ctypes.byref(o),
                                                                       jo, out),
                          priority=priority, preview_interval=preview_interval)

    def seamless(self, axes: Seamless) -> Model:
        """A model handle whose images tile along ``axes``; close it independently."""
        out = ctypes.c_void_p()
        check(_library.lib().kiln_model_seamless(self.handle, int(Seamless(axes)), ctypes.byref(out)))
        return Model(out.value or 0, self._runtime)

    def with_loras(self, loras: Iterable[LoraEntry], embeddings: Iterable[EmbeddingEntry] = ()) -> Model:
        """A new model with these ``(path, scale)`` LoRAs merged into the original weights (a switch, not a
        stack: ``[]`` gives the plain weights back), plus any textual-inversion ``embeddings`` (a path, or
        ``(path, token)``). An entry ``(path, scale, text_encoder_scale)`` merges the LoRA's text-encoder
        modules at ``text_encoder_scale`` and its U-Net modules at ``scale`` (ComfyUI's strength_clip and
        strength_model; ``None`` there: ``scale`` for both). This model is unchanged; close the new one
        independently (or use ``with``). On a model loaded with ``lora_slots=True`` plain low-rank LoRAs
        are fed to its slots instead of merged (milliseconds, no weight copy). A file made for another
        model raises AdapterMismatchError; an unreadable one ModelError; a non-finite scale ArgumentError."""
        lib, a = _library.lib(), _Adapters(loras, embeddings)
        out = ctypes.c_void_p()
        if a.embedding_count:
            check(lib.kiln_model_with_adapters(self.handle, a.loras, a.lora_count, a.embeddings, a.embedding_count,
                                               ctypes.byref(out)))
        else:
            check(lib.kiln_model_with_loras(self.handle, a.loras, a.lora_count, ctypes.byref(out)))
        return Model(out.value or 0, self._runtime)

    def submit_with_loras(self, loras: Iterable[LoraEntry], embeddings: Iterable[EmbeddingEntry] = (), *,
                          priority: int = 0) -> Job:
        """Queues ``with_loras`` as a job and returns at once (``kiln_job_submit_with_adapters``), so a
        LoRA switch does not block the game: ``Job.model()`` gives the new model (what ``with_loras(loras,
        embeddings)`` makes), this model staying usable meanwhile. Higher ``priority`` runs first;
        progress counts KiB of the graphs it remakes (see ``Progress``); no previews. The entries are checked and copied here: a bad
        entry raises TypeError, a non-finite scale ArgumentError, nothing queued. The files are read by
        the job, so a missing, unreadable or mismatched one fails it (``Job.model()`` raises
        JobFailedError with the job's message). ``Job.cancel()`` stops a queued switch; a running one
        stops inside the session ONNX Runtime is creating for the merged weights and ends CANCELLED
        without a model."""
        lib, a, handle = _library.lib(), _Adapters(loras, embeddings), self.handle
        return submit(lambda jo, out: lib.kiln_job_submit_with_adapters(handle, a.loras, a.lora_count, a.embeddings,
                                                                        a.embedding_count, jo, out),
                      priority=priority, runtime=self._runtime)

    def submit_seamless(self, axes: Seamless, *, priority: int = 0) -> Job:
        """Queues ``seamless`` as a job and returns at once (``kiln_job_submit_seamless``): ``Job.model()``
        gives the view whose images tile along ``axes`` (what ``seamless(axes)`` makes), this model staying
        usable meanwhile. Making a view rewrites the U-Net's and VAE decoder's convolutions and creates
        their sessions, seconds for an SD 1.5 model, so a game switching between tileable textures and
        ordinary images asks for one without blocking a frame; a view this model already has (or its own
        ``axes``) is ready at once. Higher ``priority`` runs first; progress counts KiB of the graphs it
        remakes (see ``Progress``); no previews. ``axes`` is checked here, as ``seamless`` checks it: a value that is no ``Seamless``
        raises ValueError, nothing queued; the job's own errors are ``seamless``'. ``Job.cancel()`` stops
        a queued view; a running one stops inside the rewrite or the session ONNX Runtime is creating and
        ends CANCELLED without a model. The job holds what it needs of this model, which may be closed
        right after."""
        lib, value, handle = _library.lib(), int(Seamless(axes)), self.handle
        return submit(lambda jo, out: lib.kiln_job_submit_seamless(handle, value, jo, out),
                      priority=priority, runtime=self._runtime)

    @property
    def loras(self) -> list[tuple[str, float, float]]:
        """The ``(path, scale, text_encoder_scale)`` LoRAs merged into this model, in order (``[]`` for a
        plain model): ``scale`` is the U-Net modules' strength, ``text_encoder_scale`` the text encoders'
        (the LoRA's own when it was given one, else ``scale``). Each entry goes back into ``with_loras``."""
        lib, handle = _library.lib(), self.handle
        count = ctypes.c_size_t()
        check(lib.kiln_model_lora_count(handle, ctypes.byref(count)))
        out = []
        for i in range(count.value):
            scale, text_encoder_scale = ctypes.c_float(), ctypes.c_float()
            status, path = read_string(
                lambda b, n, l, i=i, scale=scale: lib.kiln_model_lora_get(handle, i, ctypes.byref(scale), b, n, l))
            check(status)
            check(lib.kiln_model_lora_text_encoder_scale(handle, i, ctypes.byref(text_encoder_scale)))
            out.append((path, float(scale.value), float(text_encoder_scale.value)))
        return out

    def graph_provider(self, graph: Graph) -> str:
        """Which execution provider runs ``graph``, and why any requested one was skipped."""
        handle, g = self.handle, int(Graph(graph))
        status, text = read_string(lambda b, n, l: _library.lib().kiln_model_graph_provider(handle, g, b, n, l))
        check(status)
        return text

    def make_sprite(self, image: ImageLike, **options: Any) -> Sprite:
        """A sprite cut out with the model's matting graph when it has one, else by the key
        (options as ``Image.make_sprite``)."""
        o = sprite_options(**options)
        source = image if isinstance(image, Image) else Image.from_array(image)
        out, bbox = ctypes.c_void_p(), _abi.Rect()
        try:
            check(_library.lib().kiln_model_make_sprite(self.handle, source.handle, ctypes.byref(o), ctypes.byref(out),
                                                        ctypes.byref(bbox)))
        finally:
            if source is not image:
                source.close()
        return Sprite(Image(out.value or 0), Rect(bbox.x, bbox.y, bbox.width, bbox.height))

    def extend_texture(self, texture: ImageLike, prompt: str, *, left: int = 0, right: int = 0, top: int = 0,
                       bottom: int = 0, **options: Unpack[GenerateOptions]) -> Image:
        """Outpaints ``texture`` by the given pixels on each side; its own pixels are kept exactly."""
        options["init_image"] = texture
        request = Request(prompt, options)
        out = ctypes.c_void_p()
        check(_library.lib().kiln_model_extend_texture(self.handle, request.ref(), left, right, top, bottom,
                                                       ctypes.byref(out)))
        return Image(out.value or 0)

    def make_tileable(self, texture: ImageLike, prompt: str, *, band: int,
                      **options: Unpack[GenerateOptions]) -> Image:
        """Makes ``texture`` tile: offset by half, a ``band``-pixel cross inpainted over the seams."""
        options["init_image"] = texture
        request = Request(prompt, options)
        out = ctypes.c_void_p()
        check(_library.lib().kiln_model_make_tileable(self.handle, request.ref(), band, ctypes.byref(out)))
        return Image(out.value or 0)

    def submit_extend_texture(self, texture: ImageLike, prompt: str, *, left: int = 0, right: int = 0, top: int = 0,
                              bottom: int = 0, priority: int = 0, preview_interval: int = 0,
                              **options: Unpack[GenerateOptions]) -> Job:
        """Queues ``extend_texture`` as a job and returns at once (``kiln_job_submit_extend_texture``);
        ``priority`` and ``preview_interval`` as for ``submit``, progress in U-Net calls. The picture
        and options are copied first, so ``texture`` may change or close right after. The arguments
        are checked here: a new size off the model's multiple raises ArgumentError (INVALID_SIZE),
        nothing queued."""
        options["init_image"] = texture
        lib, request, handle, sides = _library.lib(), Request(prompt, options), self.handle, (left, right, top, bottom)
        return submit(lambda jo, out: lib.kiln_job_submit_extend_texture(handle, request.ref(), *sides, jo, out),
                      priority=priority, preview_interval=preview_interval)

    def submit_make_tileable(self, texture: ImageLike, prompt: str, *, band: int, priority: int = 0,
                             preview_interval: int = 0, **options: Unpack[GenerateOptions]) -> Job:
        """Queues ``make_tileable`` as a job and returns at once (``kiln_job_submit_make_tileable``);
        ``priority`` and ``preview_interval`` as for ``submit``, progress in U-Net calls. The picture
        and options are copied first. The arguments are checked here: a ``band`` of 0, or of half the
        picture's smaller side or more, raises ArgumentError (INVALID_ARGUMENT), nothing queued."""
        options["init_image"] = texture
        lib, request, handle = _library.lib(), Request(prompt, options), self.handle
        return submit(lambda jo, out: lib.kiln_job_submit_make_tileable(handle, request.ref(), band, jo, out),
                      priority=priority, preview_interval=preview_interval)

    def close(self) -> None:
        """Frees the model; closing twice is fine."""
        handle, self._handle = self._handle, None
        if handle:
            _library.lib().kiln_model_free(handle)

