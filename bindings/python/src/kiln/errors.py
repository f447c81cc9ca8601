"""Exceptions carrying Kiln's status and message. One class per status family, so callers can
catch broadly (``KilnError``) or narrowly (``ModelNotFoundError``)."""

from __future__ import annotations

import ctypes

from kiln import _library
from kiln.enums import JobState, Status

__all__ = [
    "KilnError", "ArgumentError", "BufferTooSmallError", "InvalidHandleError", "ModelError",
    "ModelNotFoundError", "KilnIOError", "UnsupportedError", "RuntimeLoadError", "ProviderError",
    "InferenceError", "CancelledError", "BusyError", "InternalError", "JobFailedError",
]


class KilnError(Exception):
    """A Kiln call failed. ``status`` is its ``Status``, ``message`` Kiln's own text."""

    def __init__(self, status: Status | int, message: str) -> None:
        try:
            self.status: Status | int = Status(status)
        except ValueError:
            self.status = status
        self.message = message
        name = self.status.name if isinstance(self.status, Status) else str(status)
        super().__init__(f"KILN_STATUS_{name}: {message}")


class ArgumentError(KilnError, ValueError):
    """1xx: a NULL, out-of-range, non-UTF-8 or inconsistent argument, a bad size or struct size."""


class BufferTooSmallError(ArgumentError):
    """KILN_STATUS_BUFFER_TOO_SMALL."""


class InvalidHandleError(ArgumentError):
    """KILN_STATUS_INVALID_HANDLE: a job id that is unknown, stale or already freed."""


class ModelError(KilnError):
    """2xx: a model folder or file is missing, malformed or unsupported, or file IO failed."""


class ModelNotFoundError(ModelError):
    """KILN_STATUS_MODEL_NOT_FOUND."""


class KilnIOError(ModelError):
    """KILN_STATUS_IO: reading or writing a file failed."""


class UnsupportedError(ModelError):
    """KILN_STATUS_UNSUPPORTED: the model or request needs something Kiln does not do."""


class AdapterMismatchError(ModelError):
    """KILN_STATUS_ADAPTER_MISMATCH: a LoRA or embedding file made for another model (architecture, width,
    ranks, keys that match no layer: the message lists them)."""


class RuntimeLoadError(KilnError):
    """KILN_STATUS_RUNTIME_LOAD_FAILED: ONNX Runtime could not be loaded."""


class ProviderError(KilnError):
    """KILN_STATUS_PROVIDER_UNAVAILABLE."""


class InferenceError(KilnError):
    """KILN_STATUS_INFERENCE_FAILED: ONNX Runtime failed while running a graph."""


class CancelledError(KilnError):
    """KILN_STATUS_CANCELLED, or a job that ended cancelled."""


class BusyError(KilnError):
    """KILN_STATUS_BUSY: e.g. a job that has not finished, or has no preview yet."""


class OutOfMemoryError(KilnError, MemoryError):
    """KILN_STATUS_OUT_OF_MEMORY: an allocation failed even after Kiln freed what it could."""


class InternalError(KilnError):
    """KILN_STATUS_INTERNAL: a bug in Kiln (the handle stays usable)."""


class JobFailedError(KilnError):
    """A job ended failed. ``message`` is the job's own error message; ``status`` is what asking for its
    image returned (the C API keeps a job's message, not its status)."""

    def __init__(self, status: Status | int, message: str, state: JobState) -> None:
        super().__init__(status, message)
        self.state = state


_BY_STATUS: dict[int, type[KilnError]] = {
    Status.BUFFER_TOO_SMALL: BufferTooSmallError,
    Status.INVALID_HANDLE: InvalidHandleError,
    Status.MODEL_NOT_FOUND: ModelNotFoundError,
    Status.IO: KilnIOError,
    Status.UNSUPPORTED: UnsupportedError,
    Status.ADAPTER_MISMATCH: AdapterMismatchError,
    Status.RUNTIME_LOAD_FAILED: RuntimeLoadError,
    Status.PROVIDER_UNAVAILABLE: ProviderError,
    Status.INFERENCE_FAILED: InferenceError,
    Status.CANCELLED: CancelledError,
    Status.BUSY: BusyError,
    Status.OUT_OF_MEMORY: OutOfMemoryError,
    Status.INTERNAL: InternalError,
}


def error_class(status: int) -> type[KilnError]:
    """The exception class for a status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 100 <= status < 200:
        return ArgumentError
    if 200 <= status < 300:
        return ModelError
    return KilnError


def read_string(call: object) -> tuple[int, str]:
    """Reads a string through Kiln's convention (query the length, then copy): (status, text)."""
    length = ctypes.c_size_t(0)
    status = call(None, 0, ctypes.byref(length))  # type: ignore[operator]
    if status not in (Status.OK, Status.BUFFER_TOO_SMALL):
        return status, ""
    buf = ctypes.create_string_buffer(length.value + 1)
    status = call(buf, len(buf), ctypes.byref(length))  # type: ignore[operator]
    return status, buf.raw[: length.value].decode("utf-8", "replace")


def last_error_message() -> str:
    """The calling thread's last Kiln error message."""
    return read_string(_library.lib().kiln_last_error_message)[1]


def check(status: int) -> None:
    """Raises the matching KilnError, with this thread's message, unless ``status`` is OK."""
    if status != Status.OK:
        raise error_class(status)(status, last_error_message())
