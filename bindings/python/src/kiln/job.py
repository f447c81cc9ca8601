"""kiln.Job: a queued generation, texture helper, upscale, model load, LoRA switch or upscaler load,
pollable once a frame, waitable from a bake script."""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from kiln import _abi, _library
from kiln._closeable import Closeable
from kiln.enums import JobState, Status
from kiln.errors import CancelledError, JobFailedError, check, read_string

if TYPE_CHECKING:
    import PIL.Image

    from kiln.model import Model
    from kiln.runtime import Runtime
    from kiln.upscaler import Upscaler

__all__ = ["Job", "Progress", "Preview"]

#: A ``kiln_job_submit*`` call with every argument bound but the last two: (job_options, job_out).
SubmitCall = Callable[[Any, Any], int]


@dataclass(frozen=True)
class Progress:
    """A job's state and progress (``kiln_job_progress``)."""

    state: JobState
    #: U-Net calls finished, of ``total_steps``; for an upscale job, graph runs (tiles; twice as many
    #: when alpha goes through the graph), the total known from submission on; for a generation and its
    #: upscale (``Model.submit_upscaled``), the U-Net calls and then the tiles in one count; for a model
    #: job (``Runtime.submit_load_model``, ``Model.submit_with_loras``, ``Model.submit_seamless``) or an
    #: upscaler load (``Runtime.submit_load_upscaler``), KiB of the graph files whose sessions are made,
    #: of those it makes (``total_steps`` is 1 until the job knows them; 0 of 1, then 1 of 1, when it
    #: makes none: per-stage residency, a LoRA set fed to slots).
    step: int
    total_steps: int
    #: Step of the newest preview; 0 while there is none (always, for an upscale job).
    preview_step: int
    preview_width: int
    preview_height: int

    @property
    def done(self) -> bool:
        """Succeeded, failed or cancelled."""
        return self.state >= JobState.SUCCEEDED


@dataclass(frozen=True)
class Preview:
    """A job's newest preview: (H, W, 4) uint8 pixels and the step it shows."""

    pixels: np.ndarray[Any, Any]
    step: int


class Job(Closeable):
    """A generation, texture helper or upscale running on Kiln's worker threads (``Model.submit``,
    ``Model.submit_extend_texture``, ``Model.submit_make_tileable``, ``Model.submit_upscaled``,
    ``Upscaler.submit``), taken with ``result()``; a model load, LoRA switch or seamless view
    (``Runtime.submit_load_model``, ``Model.submit_with_loras``, ``Model.submit_seamless``), taken with
    ``model()``; or an upscaler load (``Runtime.submit_load_upscaler``), taken with ``upscaler()``.
    ``poll()`` never blocks; ``wait()`` does. Closing (or leaving ``with``) frees it, cancelling it first
    if it still runs."""

    def __init__(self, job_id: int, runtime: Runtime | None = None) -> None:
        """Takes ownership of a job id from ``kiln_job_submit`` or one of its kinds (use
        ``Model.submit`` and the others). ``runtime``: the one a model or upscaler load job's models and
        upscalers come from."""
        self._id: int | None = job_id
        # Handed to the models model() and upscalers upscaler() make, as Runtime.load_model hands it to
        # its model.
        self._runtime = runtime

    @property
    def id(self) -> int:
        """The job id; ValueError once closed."""
        if self._id is None:
            raise ValueError("the job is closed")
        return self._id

    def poll(self) -> Progress:
        """State and progress, without blocking (cheap enough for every frame)."""
        p = _abi.JobProgress()
        p.struct_size = ctypes.sizeof(p)
        check(_library.lib().kiln_job_poll(self.id, ctypes.byref(p)))
        return Progress(JobState(p.state), p.step, p.total_steps, p.preview_step, p.preview_width, p.preview_height)

    @property
    def state(self) -> JobState:
        """The current state."""
        return self.poll().state

    @property
    def done(self) -> bool:
        """True once it succeeded, failed or was cancelled."""
        return self.poll().done

    def wait(self, timeout: float | None = None) -> JobState:
        """Blocks until the job ends or ``timeout`` seconds pass (None: no limit); the state then."""
        deadline = None if timeout is None else time.monotonic() + timeout
        state = ctypes.c_uint32()
        while True:
            left_ms = 1000 if deadline is None else max(0, min(1000, int((deadline - time.monotonic()) * 1000)))
            # Slices of at most a second, so Ctrl-C reaches a waiting script.
            check(_library.lib().kiln_job_wait(self.id, left_ms, ctypes.byref(state)))
            if state.value >= JobState.SUCCEEDED or (deadline is not None and time.monotonic() >= deadline):
                return JobState(state.value)

    def cancel(self) -> None:
        """Asks the job to stop: a queued job never starts, a running one stops within one graph call."""
        check(_library.lib().kiln_job_cancel(self.id))

    @property
    def error_message(self) -> str:
        """The job's own error message: empty unless it failed or was cancelled."""
        job = self.id
        status, text = read_string(lambda b, n, l: _library.lib().kiln_job_error_message(job, b, n, l))
        check(status)
        return text

    def _raise_if_failed(self, state: JobState, ask: Callable[[], int]) -> None:
        """Raises CancelledError for a cancelled job, JobFailedError (the job's message, the status
        ``ask`` returns) for a failed one; nothing otherwise."""
        if state in (JobState.FAILED, JobState.CANCELLED):
            message = self.error_message
            if state == JobState.CANCELLED:
                raise CancelledError(Status.CANCELLED, message)
            raise JobFailedError(ask(), message, state)

    def result(self, timeout: float | None = None) -> np.ndarray[Any, Any]:
        """Waits for the job and returns its image as an (H, W, 4) uint8 array. Raises CancelledError
        for a cancelled job, JobFailedError (with the job's message) for a failed one, and
        BusyError when ``timeout`` passes first; ArgumentError (INVALID_ARGUMENT) for a model job,
        which has no image (take it with ``model()``), or an upscaler load job (``upscaler()``)."""
        state = self.wait(timeout)
        lib, job = _library.lib(), self.id
        self._raise_if_failed(state, lambda: int(lib.kiln_job_image_size(
            job, ctypes.byref(ctypes.c_uint32()), ctypes.byref(ctypes.c_uint32()))))
        width, height = ctypes.c_uint32(), ctypes.c_uint32()
        check(lib.kiln_job_image_size(self.id, ctypes.byref(width), ctypes.byref(height)))
        out = np.empty((height.value, width.value, 4), np.uint8)
        check(lib.kiln_job_copy_image(self.id, out.ctypes.data, out.nbytes, 0))
        return out

    def model(self, timeout: float | None = None) -> Model:
        """Waits for a model job (``Runtime.submit_load_model``, ``Model.submit_with_loras``,
        ``Model.submit_seamless``) and returns the model it made (``kiln_job_model``): a new handle on each
        call, closed independently of the job and of each other, usable after the job is closed. Raises as
        ``result()`` does: CancelledError, JobFailedError (with the job's message), BusyError when
        ``timeout`` passes first; ArgumentError (INVALID_ARGUMENT) for a job that made an image (take that
        with ``result()``) or an upscaler (take that with ``upscaler()``)."""
        from kiln.model import Model

        return Model(self._take(_library.lib().kiln_job_model, timeout), self._runtime)

    def upscaler(self, timeout: float | None = None) -> Upscaler:
        """Waits for an upscaler load job (``Runtime.submit_load_upscaler``) and returns the upscaler it
        loaded (``kiln_job_upscaler``): a new handle on each call, closed independently of the job and of
        each other, usable after the job is closed. Raises as ``model()`` does: CancelledError,
        JobFailedError (with the job's message), BusyError when ``timeout`` passes first; ArgumentError
        (INVALID_ARGUMENT) for a job that made an image or a model."""
        from kiln.upscaler import Upscaler

        return Upscaler(self._take(_library.lib().kiln_job_upscaler, timeout), self._runtime)

    def _take(self, take: Callable[..., int], timeout: float | None) -> int:
        """Waits for the job, raises as ``result()`` does, and returns the new native handle ``take``
        (``kiln_job_model`` or ``kiln_job_upscaler``) gives for what it made."""
        state = self.wait(timeout)
        job = self.id
        self._raise_if_failed(state, lambda: int(take(job, ctypes.byref(ctypes.c_void_p()))))
        out = ctypes.c_void_p()
        check(take(job, ctypes.byref(out)))
        return out.value or 0

    def result_pil(self, timeout: float | None = None) -> PIL.Image.Image:
        """``result()`` as a PIL RGBA image."""
        import PIL.Image

        return PIL.Image.fromarray(self.result(timeout), "RGBA")

    def preview(self) -> Preview | None:
        """The newest preview (``Model.submit(..., preview_interval=N)``), or None while there is none
        (always None for an upscale job, which makes no previews)."""
        p = self.poll()
        if p.preview_step == 0:
            return None
        out = np.empty((p.preview_height, p.preview_width, 4), np.uint8)
        step = ctypes.c_uint32()
        check(_library.lib().kiln_job_copy_preview(self.id, out.ctypes.data, out.nbytes, 0, ctypes.byref(step)))
        return Preview(out, int(step.value))

    def close(self) -> None:
        """Frees the job (cancelling it if it runs); closing twice is fine."""
        job, self._id = self._id, None
        if job is not None:
            check(_library.lib().kiln_job_free(job))

    def __repr__(self) -> str:
        return f"<kiln.Job {self._id}>" if self._id is not None else "<kiln.Job closed>"


def submit(call: SubmitCall, *, priority: int = 0, preview_interval: int = 0, runtime: Runtime | None = None) -> Job:
    """Fills ``kiln_job_options`` (no callback: the binding polls), makes ``call`` with it and the job
    id's out-parameter, and wraps the id in a Job (with ``runtime``, for a model or upscaler load job's
    models and upscalers); raises as ``check`` does (nothing is queued then)."""
    jo = _abi.JobOptions()
    _library.lib().kiln_job_options_init(ctypes.byref(jo))
    jo.priority, jo.preview_interval = int(priority), int(preview_interval)
    job = ctypes.c_uint64()
    check(call(ctypes.byref(jo), ctypes.byref(job)))
    return Job(int(job.value), runtime)
