"""Pixels in and out: numpy arrays, PIL images and Kiln images as RGBA8 buffers Kiln can read."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    import PIL.Image

    from kiln.image import Image

#: What the API takes as a picture: a Kiln Image, a PIL image, or an (H, W, 3|4) uint8 array.
ImageLike = Union["Image", "PIL.Image.Image", "np.ndarray[Any, Any]"]


def as_pixels(image: ImageLike, channels: tuple[int, ...] = (3, 4)) -> np.ndarray[Any, Any]:
    """A C-contiguous (H, W, C) uint8 array of `image` with C in `channels` (RGBA when converting)."""
    from kiln.image import Image

    if isinstance(image, Image):
        arr = image.to_numpy()
    elif isinstance(image, np.ndarray):
        arr = image
    else:
        # PIL, without importing it unless a PIL image is passed.
        mode = getattr(image, "mode", None)
        if mode is None:
            raise TypeError(f"expected a kiln.Image, a PIL image or a numpy array, got {type(image).__name__}")
        arr = np.asarray(image if mode in ("RGB", "RGBA") else image.convert("RGBA"))
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) uint8 array, got {arr.shape} {arr.dtype}")
    if arr.shape[2] not in channels:
        arr = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
    return np.ascontiguousarray(arr)


def as_mask(mask: Any) -> np.ndarray[Any, Any]:
    """A C-contiguous (H, W) uint8 mask from an array or a PIL image (converted to L)."""
    if not isinstance(mask, np.ndarray):
        mode = getattr(mask, "mode", None)
        if mode is None:
            raise TypeError(f"expected a numpy array or a PIL image as mask, got {type(mask).__name__}")
        mask = np.asarray(mask.convert("L"))
    if mask.dtype == np.bool_:
        mask = mask.astype(np.uint8) * 255
    if mask.dtype != np.uint8 or mask.ndim != 2:
        raise ValueError(f"expected an (H, W) uint8 or bool mask, got {mask.shape} {mask.dtype}")
    return np.ascontiguousarray(mask)


def writable_rgba(out: np.ndarray[Any, Any]) -> tuple[int, int, int, int]:
    """(address, bytes, row pitch, ...) of an engine-style RGBA8 destination: (H, W, 4) uint8 whose
    pixels are packed within a row; rows may be further apart (a view of a wider buffer).
    Returns (address, length in bytes from the first pixel to the end of the last row, pitch, height)."""
    if not isinstance(out, np.ndarray) or out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != 4:
        raise ValueError("expected an (H, W, 4) uint8 numpy array")
    if not out.flags.writeable:
        raise ValueError("the destination array is read-only")
    height, width = out.shape[:2]
    if out.strides[2] != 1 or out.strides[1] != 4 or out.strides[0] < width * 4:
        raise ValueError(f"rows must be packed RGBA8 with a positive row pitch, got strides {out.strides}")
    pitch = out.strides[0]
    length = pitch * (height - 1) + width * 4 if height else 0
    return out.ctypes.data, length, pitch, height
