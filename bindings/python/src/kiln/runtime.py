"""kiln.Runtime: ONNX Runtime loaded with Kiln's settings; loads models and upscalers."""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Callable, Sequence

from kiln import _abi, _library
from kiln._closeable import Closeable
from kiln.enums import Attention, GpuMath, LogLevel, Provider, Quantization, Residency, Seamless, Status
from kiln._options import _enum_field
from kiln.errors import check, read_string
from kiln.job import Job, submit
from kiln.model import Model
from kiln.upscaler import Upscaler

__all__ = ["Runtime", "LogCallback"]


#: The names ``quantization`` takes, upper-cased: the members' own ("none", "int8").
_QUANTIZATION_NAMES: dict[str, Quantization] = dict(Quantization.__members__)
#: Those names as the error for an unknown one lists them: 'int8' or 'none'.
_QUANTIZATION_LIST = " or ".join(repr(name.lower()) for name in sorted(_QUANTIZATION_NAMES))


def _quantization(value: Quantization | int | str) -> int:
    """``kiln_quantization``'s value from a member, a name or an int (see ``_options._enum_field``)."""
    return _enum_field(value, _QUANTIZATION_NAMES, _QUANTIZATION_LIST, "quantization", "kiln_quantization", "Quantization")


#: The names ``attention`` takes, upper-cased: the members' own ("auto", "exported", "fused").
_ATTENTION_NAMES: dict[str, Attention] = dict(Attention.__members__)
#: Those names as the error for an unknown one lists them: 'auto' or 'exported' or 'fused'.
_ATTENTION_LIST = " or ".join(repr(name.lower()) for name in sorted(_ATTENTION_NAMES))


def _attention(value: Attention | int | str) -> int:
    """``kiln_attention``'s value from a member, a name or an int (see ``_options._enum_field``)."""
    return _enum_field(value, _ATTENTION_NAMES, _ATTENTION_LIST, "attention", "kiln_attention", "Attention")


def _load_options(seamless: Seamless, matting: str | os.PathLike[str] | None,
                  quantization: Quantization | int | str,
                  attention: Attention | int | str, lora_slots: bool) -> ctypes.Structure | None:
    """``load_model``'s ``kiln_model_load_options``; None for the defaults."""
    quantized = _quantization(quantization)
    fused = _attention(attention)
    if (seamless == Seamless.NONE and matting is None and quantized == Quantization.NONE and fused == Attention.AUTO
            and not lora_slots):
        return None
    o = _abi.ModelLoadOptions()
    _library.lib().kiln_model_load_options_init(ctypes.byref(o))
    o.seamless = int(Seamless(seamless))
    if matting is not None:
        o.matting_path = os.fsencode(matting)
    o.quantization = quantized
    o.attention = fused
    o.lora_slots = 1 if lora_slots else 0
    return o

#: Receives Kiln's log lines: (level, message). Called on whichever thread does the work.
LogCallback = Callable[[LogLevel, str], None]

# Log trampolines stay referenced for the life of the process: models keep what they need of a
# runtime alive after it is closed, and may still log through its callback.
_trampolines: list[object] = []
_trampolines_lock = threading.Lock()


def _trampoline(log: LogCallback) -> object:
    def call(_user_data: object, level: int, message: int, length: int) -> None:
        # Never let a Python exception reach Kiln's thread; ctypes would only print it anyway.
        try:
            log(LogLevel(level), ctypes.string_at(message, length).decode("utf-8", "replace"))
        except Exception:
            pass

    fn = _abi.LOG_FN(call)
    with _trampolines_lock:
        _trampolines.append(fn)
    return fn


class Runtime(Closeable):
    """ONNX Runtime loaded with Kiln's settings (``kiln_runtime_create``). Thread-safe; close it, or
    use ``with``. Models and upscalers loaded from it stay usable after it is closed."""

    def __init__(
        self,
        *,
        onnxruntime_path: str | os.PathLike[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        allow_spinning: bool = False,
        job_workers: int = 0,
        providers: Sequence[Provider] = (),
        device_id: int = 0,
        require_provider: bool = False,
        residency: Residency = Residency.ALL_RESIDENT,
        embedding_cache_entries: int | None = None,
        graph_cache_dir: str | os.PathLike[str] | None = None,
        sequential_load: bool = False,
        gpu_math: GpuMath = GpuMath.FAST,
        gpu_memory_limit: int = 0,
        static_unet: bool = False,
        cuda_graph: bool = False,
        device_latents: bool = False,
        log: LogCallback | None = None,
        log_level: LogLevel = LogLevel.INFO,
    ) -> None:
        """Loads ONNX Runtime (once per process). Arguments are ``kiln_runtime_options``' fields;
        ``onnxruntime_path`` None searches ``ORT_DYLIB_PATH``, libkiln's folder, then the build's copy."""
        lib = _library.lib()
        o = _abi.RuntimeOptions()
        lib.kiln_runtime_options_init(ctypes.byref(o))
        o.intra_op_threads, o.inter_op_threads, o.job_workers = intra_op_threads, inter_op_threads, job_workers
        o.allow_spinning, o.require_provider = int(allow_spinning), int(require_provider)
        o.sequential_load, o.device_id = int(sequential_load), device_id
        o.residency, o.log_level = int(Residency(residency)), int(LogLevel(log_level))
        o.gpu_math, o.gpu_memory_limit = int(GpuMath(gpu_math)), gpu_memory_limit
        o.static_unet, o.cuda_graph, o.device_latents = int(static_unet), int(cuda_graph), int(device_latents)
        if embedding_cache_entries is not None:
            o.embedding_cache_entries = embedding_cache_entries
        if onnxruntime_path is not None:
            o.onnxruntime_path = os.fsencode(onnxruntime_path)
        if graph_cache_dir is not None:
            o.graph_cache_dir = os.fsencode(graph_cache_dir)
        wanted = (ctypes.c_uint32 * len(providers))(*[int(Provider(p)) for p in providers])
        if providers:
            o.providers, o.providers_len = ctypes.addressof(wanted), len(providers)
        if log is not None:
            o.log_callback = _trampoline(log)
        out = ctypes.c_void_p()
        check(lib.kiln_runtime_create(ctypes.byref(o), ctypes.byref(out)))
        self._handle: int | None = out.value

    @property
    def handle(self) -> int:
        """The ``kiln_runtime *`` address; ValueError once closed."""
        if self._handle is None:
            raise ValueError("the runtime is closed")
        return self._handle

    def load_model(self, model_dir: str | os.PathLike[str], *, seamless: Seamless = Seamless.NONE,
                   matting: str | os.PathLike[str] | None = None,
                   quantization: Quantization | int | str = Quantization.NONE,
                   attention: Attention | int | str = Attention.AUTO, lora_slots: bool = False) -> Model:
        """Loads a diffusers/optimum ONNX model folder. ``seamless`` loads only the tiling graphs;
        ``matting`` names a matting graph for ``Model.make_sprite``; ``quantization`` (a Quantization
        or its name, "none" or "int8") INT8 stores the text encoders' and U-Net's matrix-product
        weights as int8 (less memory; pictures close to but not equal to the float model's);
        ``attention`` (an Attention or its name, "auto", "exported" or "fused"): AUTO, the default,
        runs each attention layer of the U-Net and ControlNets as one fused ONNX Runtime node when
        the graphs run on the CPU provider, EXPORTED as exported, FUSED fused whatever the
        providers (pictures differ by float rounding only; ``ModelInfo.fused_attention`` counts the
        fused layers); ``lora_slots`` True gives the U-Net and text encoders a LoRA slot beside every
        adaptable layer, so that ``Model.with_loras`` (and its job form) feeds plain low-rank LoRAs at
        run time instead of merging them (no new session or weight copy per LoRA set; pictures the
        merged ones' to float rounding; LoHa, LoKr, full diffs, DoRA and embeddings are merged as
        without slots; the plain model draws the unslotted one's pictures bit for bit;
        ``ModelInfo.lora_slots`` counts the slotted U-Net layers). An unknown ``quantization`` or
        ``attention`` raises ArgumentError (INVALID_ARGUMENT); ``lora_slots`` with the runtime's
        static U-Net or CUDA graphs raises UnsupportedError."""
        lib = _library.lib()
        out = ctypes.c_void_p()
        o = _load_options(seamless, matting, quantization, attention, lora_slots)
        if o is None:
            check(lib.kiln_model_load(self.handle, os.fsencode(model_dir), ctypes.byref(out)))
        else:
            check(lib.kiln_model_load_with(self.handle, os.fsencode(model_dir), ctypes.byref(o), ctypes.byref(out)))
        return Model(out.value or 0, self)

    def submit_load_model(self, model_dir: str | os.PathLike[str], *, seamless: Seamless = Seamless.NONE,
                          matting: str | os.PathLike[str] | None = None,
                          quantization: Quantization | int | str = Quantization.NONE,
                          attention: Attention | int | str = Attention.AUTO, lora_slots: bool = False,
                          priority: int = 0) -> Job:
        """Queues ``load_model`` as a job and returns at once (``kiln_job_submit_model_load``), so a game
        loads a model without a thread of its own: ``Job.model()`` gives the model (what
        ``load_model(model_dir, seamless=seamless, matting=matting, quantization=quantization,
        attention=attention, lora_slots=lora_slots)`` gives). Higher ``priority`` runs first; progress counts
        KiB of the graphs it opens (see ``Progress``); no previews. The arguments are checked here, nothing queued on an error: ModelNotFoundError for
        a folder that does not exist, ArgumentError for an unknown ``seamless``, ``quantization`` or
        ``attention``. The files are read by the job, so a folder that is not a model fails it
        (``Job.model()`` raises JobFailedError with the job's message). ``Job.cancel()`` stops a queued
        load; a running one stops inside the graph session ONNX Runtime is creating (at its next check)
        and ends CANCELLED without a model. The job holds what it needs of this runtime, which may be
        closed right after."""
        lib, o, handle = _library.lib(), _load_options(seamless, matting, quantization, attention, lora_slots), self.handle
        path = os.fsencode(model_dir)
        options = None if o is None else ctypes.byref(o)
        return submit(lambda jo, out: lib.kiln_job_submit_model_load(handle, path, options, jo, out),
                      priority=priority, runtime=self)

    def load_upscaler(self, path: str | os.PathLike[str]) -> Upscaler:
        """Loads a super-resolution graph (``kiln_upscaler_load``): a folder holding ``model.onnx`` and
        optionally ``config.json``, or an ONNX file with its settings, if any, in the ``.json`` of the
        same name beside it (``{"scale": 4, "multiple": 1}``, all optional). Raises ModelNotFoundError
        for a missing path, ModelError (MODEL_INVALID) for a graph that is not an upscaler."""
        out = ctypes.c_void_p()
        check(_library.lib().kiln_upscaler_load(self.handle, os.fsencode(path), ctypes.byref(out)))
        return Upscaler(out.value or 0, self)

    def submit_load_upscaler(self, path: str | os.PathLike[str], *, priority: int = 0) -> Job:
        """Queues ``load_upscaler`` as a job and returns at once (``kiln_job_submit_upscaler_load``), so a
        game loads a super-resolution graph without a thread of its own: ``Job.upscaler()`` gives the
        upscaler (what ``load_upscaler(path)`` gives). Higher ``priority`` runs first; progress counts
        KiB of its graph; no previews. ``path`` is checked here, nothing queued on an error: ModelNotFoundError
        when no graph file is there. The graph is read by the job, so one that is not an upscaler fails it
        (``Job.upscaler()`` raises JobFailedError with the job's message). ``Job.cancel()`` stops a queued
        load; a running one stops inside the graph session ONNX Runtime is creating and ends CANCELLED
        without an upscaler. The job holds what it needs of this runtime, which may be closed right
        after."""
        lib, handle, encoded = _library.lib(), self.handle, os.fsencode(path)
        return submit(lambda jo, out: lib.kiln_job_submit_upscaler_load(handle, encoded, jo, out),
                      priority=priority, runtime=self)

    @property
    def onnxruntime_version(self) -> str:
        """The loaded ONNX Runtime's version, e.g. "1.31.1"."""
        handle = self.handle
        status, text = read_string(lambda b, n, l: _library.lib().kiln_runtime_onnxruntime_version(handle, b, n, l))
        check(status)
        return text

    @property
    def onnxruntime_path(self) -> str:
        """The path ONNX Runtime was loaded from."""
        handle = self.handle
        status, text = read_string(lambda b, n, l: _library.lib().kiln_runtime_onnxruntime_path(handle, b, n, l))
        check(status)
        return text

    def provider_available(self, provider: Provider) -> bool:
        """Whether the loaded ONNX Runtime includes ``provider``."""
        available = ctypes.c_uint32()
        check(_library.lib().kiln_runtime_provider_available(self.handle, int(Provider(provider)), ctypes.byref(available)))
        return bool(available.value)

    def close(self) -> None:
        """Destroys the runtime; closing twice is fine."""
        handle, self._handle = self._handle, None
        if handle:
            _library.lib().kiln_runtime_destroy(handle)

