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
from kiln._convert import ImageLike
from kiln.enums import Seamless, UpscaleAlpha
from kiln.errors import check
from kiln.image import Image

if TYPE_CHECKING:
    from kiln.runtime import Runtime

__all__ = ["Upscaler"]


def _enum_value(value: Union[int, str], enum: type[IntEnum]) -> int:
    """A member's value from a member, an int or a member name ("xy", "bilinear"). Ints are passed
    through unchecked, so that Kiln rejects an unknown one with its own status and message."""
    return int(enum[value.upper()]) if isinstance(value, str) else int(value)


class Upscaler:
    """A loaded super-resolution graph (``Runtime.load_upscaler``). Thread-safe: several threads may
    upscale with it at once (its graph runs one window at a time) and ``cancel()`` may come from any
    thread. Close it, or use ``with``; closing cancels calls still in progress and waits for them."""

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
        o = _abi.UpscaleOptions()
        _library.lib().kiln_upscale_options_init(ctypes.byref(o))
        o.tile, o.context = int(tile), int(context)
        o.seamless, o.alpha = _enum_value(seamless, Seamless), _enum_value(alpha, UpscaleAlpha)
        source = image if isinstance(image, Image) else Image.from_array(image)
        out = ctypes.c_void_p()
        try:
            with self._using() as handle:
                check(_library.lib().kiln_upscaler_upscale(handle, source.handle, ctypes.byref(o), ctypes.byref(out)))
        finally:
            if source is not image:
                source.close()
        return Image(out.value or 0)

    def cancel(self) -> None:
        """Stops every ``upscale`` on this upscaler in progress on other threads: each raises
        CancelledError within one graph run. Calls that start afterwards run normally. Safe from any
        thread; a no-op when nothing runs."""
        with self._lock:
            check(_library.lib().kiln_upscaler_cancel(self.handle))

    def close(self) -> None:
        """Frees the upscaler; closing twice is fine. Calls in progress on other threads are cancelled
        (they raise CancelledError) and waited for first."""
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

    def __enter__(self) -> Upscaler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return f"<kiln.Upscaler {self.scale}x>" if self._handle else "<kiln.Upscaler closed>"
