"""kiln.Upscaler: a super-resolution graph (ESRGAN, Real-ESRGAN, SwinIR, ... exported to ONNX) that
upscales textures and sprites 2x, 4x, ..., tile by tile and seamless where asked."""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import TYPE_CHECKING, Union

from kiln import _abi, _library
from kiln._closeable import Closeable
from kiln._convert import ImageLike
from kiln.enums import Seamless, UpscaleAlpha
from kiln.errors import check
from kiln.image import Image
from kiln.job import Job, submit

if TYPE_CHECKING:
    from kiln.runtime import Runtime

__all__ = ["Upscaler"]


def _enum_value(value: Union[int, str], enum: type[IntEnum]) -> int:
    """A member's value from a member, an int or a member name ("xy", "bilinear"). Ints are passed
    through unchecked, so that Kiln rejects an unknown one with its own status and message."""
    return int(enum[value.upper()]) if isinstance(value, str) else int(value)


def _options(tile: int, context: int, seamless: Union[Seamless, int, str],
             alpha: Union[UpscaleAlpha, int, str]) -> ctypes.Structure:
    """A ``kiln_upscale_options`` from ``upscale``'s keyword arguments."""
    o = _abi.UpscaleOptions()
    _library.lib().kiln_upscale_options_init(ctypes.byref(o))
    o.tile, o.context = int(tile), int(context)
    o.seamless, o.alpha = _enum_value(seamless, Seamless), _enum_value(alpha, UpscaleAlpha)
    return o


class Upscaler(Closeable):
    """A loaded super-resolution graph (``Runtime.load_upscaler``). Thread-safe: several threads may
    upscale with it at once (its graph runs one window at a time) and ``cancel()`` may come from any
    thread. ``submit()`` queues an upscale as a ``kiln.Job`` instead. Close it, or use ``with``;
    closing cancels ``upscale`` calls still in progress and waits for them, and leaves jobs to run
    (each holds the graph until it ends)."""

    def __init__(self, handle: int, runtime: Runtime | None = None) -> None:
        """Takes ownership of a ``kiln_upscaler *``."""
        if not handle:
            raise ValueError("NULL kiln_upscaler")
        self._handle: int | None = handle
        # Keeps the runtime's log callback alive while this upscaler can log.
        self._runtime = runtime
        # Calls in progress, so close() never frees the handle under one of them.
        self._lock = threading.Condition()
        self._active = 0

    @property
    def handle(self) -> int:
        """The ``kiln_upscaler *`` address; ValueError once closed."""
        if self._handle is None:
            raise ValueError("the upscaler is closed")
        return self._handle

    @contextmanager
    def _using(self) -> Iterator[int]:
        """The handle, kept alive (not freed by close()) until the block ends."""
        with self._lock:
            handle = self.handle
            self._active += 1
        try:
            yield handle
        finally:
            with self._lock:
                self._active -= 1
                self._lock.notify_all()

    @property
    def scale(self) -> int:
        """Output pixels per input pixel along each axis: 2, 4, ..."""
        scale = ctypes.c_uint32()
        with self._using() as handle:
            check(_library.lib().kiln_upscaler_scale(handle, ctypes.byref(scale)))
        return int(scale.value)

    def upscale(self, image: ImageLike, *, tile: int = 256, context: int = 16,
                seamless: Union[Seamless, int, str] = Seamless.NONE,
                alpha: Union[UpscaleAlpha, int, str] = UpscaleAlpha.GRAPH) -> Image:
        """Upscales ``image`` (a ``kiln.Image``, an (H, W, 3|4) uint8 array or a PIL image) by ``scale``
        into a new Image, blocking (``kiln_upscaler_upscale``; the GIL is released meanwhile, so run it
        on a worker thread and ``cancel()`` from another). The graph runs one ``tile`` x ``tile`` tile
        (0: the whole image) plus ``context`` pixels on each side at a time, so memory stays bounded;
        along ``seamless`` axes (a Seamless or its name, "xy") windows read across the border, so a
        tileable texture stays tileable. Alpha, when any pixel is not opaque, goes as ``alpha`` says
        (an UpscaleAlpha or its name); an opaque image stays opaque. Raises CancelledError when
        cancelled, ArgumentError for an unknown ``seamless`` or ``alpha`` or a ``context`` over 1024;
        the upscaler stays usable after any error."""
        o = _options(tile, context, seamless, alpha)
        source = image if isinstance(image, Image) else Image.from_array(image)
        out = ctypes.c_void_p()
        try:
            with self._using() as handle:
                check(_library.lib().kiln_upscaler_upscale(handle, source.handle, ctypes.byref(o), ctypes.byref(out)))
        finally:
            if source is not image:
                source.close()
        return Image(out.value or 0)

    def submit(self, image: ImageLike, *, tile: int = 256, context: int = 16,
               seamless: Union[Seamless, int, str] = Seamless.NONE,
               alpha: Union[UpscaleAlpha, int, str] = UpscaleAlpha.GRAPH, priority: int = 0) -> Job:
        """Queues ``upscale`` as a job on Kiln's worker threads and returns at once
        (``kiln_job_submit_upscale``): no thread of your own, and no more graphs at once than the job
        workers. Arguments as ``upscale``'s; higher ``priority`` runs first. ``Job.poll()`` counts graph
        runs (tiles; twice as many when alpha goes through the graph), the total known from submission
        on; there are no previews. ``result()`` gives ``upscale``'s bytes as an (H, W, 4) array. The
        image is copied first and the job holds the graph, so both ``image`` and this upscaler may be
        closed right after. The arguments are checked here: ArgumentError for an unknown ``seamless``
        or ``alpha``, a ``context`` over 1024 (INVALID_ARGUMENT), an empty image or a result over 16384
        pixels a side (INVALID_SIZE); nothing is queued then. ``Job.cancel()`` stops it within one
        graph run, and so does ``cancel()`` while it runs."""
        o = _options(tile, context, seamless, alpha)
        source = image if isinstance(image, Image) else Image.from_array(image)
        try:
            with self._using() as handle:
                lib, picture = _library.lib(), source.handle
                return submit(lambda jo, out: lib.kiln_job_submit_upscale(handle, picture, ctypes.byref(o), jo, out),
                              priority=priority)
        finally:
            if source is not image:
                source.close()

    def cancel(self) -> None:
        """Stops every ``upscale`` on this upscaler in progress on other threads, and every upscale job
        submitted from it that is running: each raises (or ends) CancelledError within one graph run.
        Queued jobs still run, and calls that start afterwards run normally. Safe from any thread; a
        no-op when nothing runs."""
        with self._lock:
            check(_library.lib().kiln_upscaler_cancel(self.handle))

    def close(self) -> None:
        """Frees the upscaler; closing twice is fine. ``upscale`` calls in progress on other threads are
        cancelled (they raise CancelledError) and waited for first. Jobs from ``submit()``, queued or
        running, go on to their end: each holds the graph (stop one with ``Job.cancel()``). Only
        when ``upscale`` calls are in flight does the cancel that stops them, ``cancel()``'s, also stop
        the jobs running at that moment (queued ones still run)."""
        with self._lock:
            handle, self._handle = self._handle, None
            if not handle:
                return
            # Cancel again until they return: a call may be just about to enter Kiln, where a cancel
            # that came before it would not reach it.
            while self._active:
                _library.lib().kiln_upscaler_cancel(handle)
                self._lock.wait(0.01)
        _library.lib().kiln_upscaler_free(handle)

    def __repr__(self) -> str:
        return f"<kiln.Upscaler {self.scale}x>" if self._handle else "<kiln.Upscaler closed>"
