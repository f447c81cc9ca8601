"""kiln.Image: an RGBA8 image owned by Kiln, with numpy and PIL interop and post-processing."""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln import _abi, _library
from kiln._closeable import Closeable
from kiln._convert import ImageLike, as_pixels, writable_rgba
from kiln.enums import CellColor, Matte, NormalConvention, Seamless
from kiln.errors import check

if TYPE_CHECKING:
    import PIL.Image

__all__ = ["Image", "Rect", "Sprite", "MaterialMaps"]


@dataclass(frozen=True)
class Rect:
    """A pixel rectangle; all zero when it holds no pixel."""

    x: int
    y: int
    width: int
    height: int


@dataclass
class Sprite:
    """A cut-out sprite and the bounding box of its visible pixels."""

    image: Image
    bbox: Rect


@dataclass
class MaterialMaps:
    """Height and normal maps of a texture."""

    height: Image
    normal: Image


def sprite_options(**kw: Any) -> Any:
    """kiln_sprite_options from keywords (see ``Image.make_sprite``)."""
    o = _abi.SpriteOptions()
    _library.lib().kiln_sprite_options_init(ctypes.byref(o))
    key_rgb = kw.pop("key_rgb", None)
    if key_rgb is not None:
        o.auto_key, o.key_rgb = 0, int(key_rgb)
    for name in ("inner_tolerance", "outer_tolerance"):
        if name in kw:
            setattr(o, name, float(kw.pop(name)))
    for name in ("despill", "premultiplied"):
        if name in kw:
            setattr(o, name, 1 if kw.pop(name) else 0)
    for name in ("feather_radius", "bbox_threshold"):
        if name in kw:
            setattr(o, name, int(kw.pop(name)))
    if "matte" in kw:
        o.matte = int(Matte(kw.pop("matte")))
    if kw:
        raise TypeError(f"unknown sprite options: {', '.join(sorted(kw))}")
    return o


class Image(Closeable):
    """An RGBA8 image (sRGB, straight alpha) owned by Kiln. Close it, or use ``with``; numpy arrays
    and PIL images made from it are copies."""

    def __init__(self, handle: int) -> None:
        """Takes ownership of a ``kiln_image *`` (use ``Image.from_array`` / ``from_pil`` to make one)."""
        if not handle:
            raise ValueError("NULL kiln_image")
        self._handle: int | None = handle

    @classmethod
    def from_array(cls, pixels: ImageLike) -> Image:
        """A Kiln image from an (H, W, 4) or (H, W, 3) uint8 array or a PIL image (RGB gets alpha 255)."""
        arr = as_pixels(pixels, channels=(4,))
        out = ctypes.c_void_p()
        check(_library.lib().kiln_image_create(arr.shape[1], arr.shape[0], arr.ctypes.data, arr.nbytes, 0, ctypes.byref(out)))
        return cls(out.value or 0)

    @classmethod
    def from_pil(cls, image: PIL.Image.Image) -> Image:
        """A Kiln image from a PIL image (converted to RGBA)."""
        return cls.from_array(np.asarray(image.convert("RGBA")))

    @property
    def handle(self) -> int:
        """The ``kiln_image *`` address; ValueError once closed."""
        if self._handle is None:
            raise ValueError("the image is closed")
        return self._handle

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(_library.lib().kiln_image_width(self.handle))

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(_library.lib().kiln_image_height(self.handle))

    @property
    def size(self) -> tuple[int, int]:
        """(width, height), as PIL's ``Image.size``."""
        return self.width, self.height

    def to_numpy(self) -> np.ndarray[Any, Any]:
        """A copy of the pixels as an (H, W, 4) uint8 array."""
        out = np.empty((self.height, self.width, 4), np.uint8)
        self.copy_into(out)
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray[Any, Any]:
        arr = self.to_numpy()
        return arr if dtype is None else arr.astype(dtype)

    def to_pil(self) -> PIL.Image.Image:
        """A copy as a PIL RGBA image."""
        import PIL.Image

        return PIL.Image.fromarray(self.to_numpy(), "RGBA")

    def copy_into(self, out: np.ndarray[Any, Any]) -> None:
        """Copies the pixels into an (H, W, 4) uint8 array whose rows may be further apart than
        ``W * 4`` bytes (a view of an engine's wider buffer); bytes between rows are untouched."""
        address, length, pitch, _ = writable_rgba(out)
        check(_library.lib().kiln_image_copy(self.handle, address, length, pitch))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes a PNG with Kiln's own writer."""
        check(_library.lib().kiln_image_write_png(self.handle, os.fsencode(path)))

    def make_sprite(self, **options: Any) -> Sprite:
        """Keys out a flat background (``kiln_image_make_sprite``). Options: ``key_rgb`` (0xRRGGBB;
        default: detected from the border), ``inner_tolerance``, ``outer_tolerance``, ``despill``,
        ``feather_radius``, ``premultiplied``, ``bbox_threshold``, ``matte``."""
        o = sprite_options(**options)
        out, bbox = ctypes.c_void_p(), _abi.Rect()
        check(_library.lib().kiln_image_make_sprite(self.handle, ctypes.byref(o), ctypes.byref(out), ctypes.byref(bbox)))
        return Sprite(Image(out.value or 0), Rect(bbox.x, bbox.y, bbox.width, bbox.height))

    def pixel_art(self, *, cell: int | None = None, scale: int | None = None, colors: int | None = None,
                  cell_color: CellColor | None = None, alpha_threshold: int | None = None,
                  palette: np.ndarray[Any, Any] | None = None) -> Image:
        """Pixel art (``kiln_image_pixel_art``); ``palette`` is an (N, 3) uint8 array of sRGB colours."""
        o = _abi.PixelArtOptions()
        _library.lib().kiln_pixel_art_options_init(ctypes.byref(o))
        for name, value in (("cell", cell), ("scale", scale), ("colors", colors), ("alpha_threshold", alpha_threshold)):
            if value is not None:
                setattr(o, name, int(value))
        if cell_color is not None:
            o.cell_color = int(CellColor(cell_color))
        keep = None
        if palette is not None:
            keep = np.ascontiguousarray(palette, dtype=np.uint8)
            o.palette_rgb, o.palette_len = keep.ctypes.data, keep.nbytes
        out = ctypes.c_void_p()
        check(_library.lib().kiln_image_pixel_art(self.handle, ctypes.byref(o), ctypes.byref(out)))
        del keep
        return Image(out.value or 0)

    def material_maps(self, *, blur_radius: int | None = None, strength: float | None = None,
                      convention: NormalConvention | None = None, wrap: bool | None = None,
                      invert_height: bool | None = None) -> MaterialMaps:
        """Height and normal maps (``kiln_image_material_maps``)."""
        o = _abi.MaterialOptions()
        _library.lib().kiln_material_options_init(ctypes.byref(o))
        if blur_radius is not None:
            o.blur_radius = int(blur_radius)
        if strength is not None:
            o.strength = float(strength)
        if convention is not None:
            o.convention = int(NormalConvention(convention))
        if wrap is not None:
            o.wrap = 1 if wrap else 0
        if invert_height is not None:
            o.invert_height = 1 if invert_height else 0
        height, normal = ctypes.c_void_p(), ctypes.c_void_p()
        check(_library.lib().kiln_image_material_maps(self.handle, ctypes.byref(o), ctypes.byref(height), ctypes.byref(normal)))
        return MaterialMaps(Image(height.value or 0), Image(normal.value or 0))

    def seam_score(self, axis: Seamless) -> float:
        """How visible the wrap seam is along ``Seamless.X`` or ``Seamless.Y`` (about 1 or below: tiles)."""
        score = ctypes.c_float()
        check(_library.lib().kiln_image_seam_score(self.handle, int(axis), ctypes.byref(score)))
        return float(score.value)

    def canny(self, low: float = 100.0, high: float = 200.0) -> Image:
        """Canny edges as OpenCV's ``cv2.Canny(gray, low, high)`` finds them (``kiln_image_canny``): white
        edges on black, a ControlNet control image."""
        out = ctypes.c_void_p()
        check(_library.lib().kiln_image_canny(self.handle, float(low), float(high), ctypes.byref(out)))
        return Image(out.value or 0)

    def height_to_depth(self) -> Image:
        """This height map (bright = high) as a depth-ControlNet image: gray, stretched to 0..255
        (``kiln_image_height_to_depth``)."""
        out = ctypes.c_void_p()
        check(_library.lib().kiln_image_height_to_depth(self.handle, ctypes.byref(out)))
        return Image(out.value or 0)

    def close(self) -> None:
        """Frees the image; closing twice is fine."""
        handle, self._handle = self._handle, None
        if handle:
            _library.lib().kiln_image_free(handle)

    def __repr__(self) -> str:
        return f"<kiln.Image {self.width}x{self.height}>" if self._handle else "<kiln.Image closed>"
