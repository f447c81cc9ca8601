"""Finds and loads libkiln once, on first use, and gives its functions their prototypes.

Lookup order: the ``KILN_LIBRARY`` environment variable (a path to the library file), else the
library bundled in this package (``kiln/_native/``, put there by ``build_wheel.py``), else the
system loader (``LD_LIBRARY_PATH``, the ld cache; ``DYLD_LIBRARY_PATH``; ``PATH`` on Windows).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from pathlib import Path
from typing import Any

from kiln import _abi

__all__ = ["lib", "library_path", "native_library_name"]

_lock = threading.Lock()
_lib: Any = None
_path: str | None = None


def native_library_name() -> str:
    """The library's file name on this platform."""
    if sys.platform == "win32":
        return "kiln.dll"
    if sys.platform == "darwin":
        return "libkiln.dylib"
    return "libkiln.so"


def _candidates() -> list[tuple[str, str]]:
    """(how it was found, path or name to load), in lookup order."""
    env = os.environ.get("KILN_LIBRARY")
    if env:
        # Only that one: a caller who names a library must get it or an error, never another.
        return [("KILN_LIBRARY", env)]
    found = []
    bundled = Path(__file__).resolve().parent / "_native" / native_library_name()
    if bundled.exists():
        found.append(("bundled", str(bundled)))
    found.append(("system loader", ctypes.util.find_library("kiln") or native_library_name()))
    return found


def _load() -> Any:
    tried = []
    for how, where in _candidates():
        try:
            handle = ctypes.CDLL(where)
        except OSError as e:
            tried.append(f"{how}: {where}: {e}")
            continue
        for name, (ret, params) in _abi.FUNCTIONS.items():
            fn = getattr(handle, name)
            fn.restype = ret.ctype
            fn.argtypes = [p.ctype for p in params]
        global _path
        _path = where
        return handle
    # Not a KilnError: no Kiln call could run, so there is no Kiln status to carry.
    raise OSError("cannot load the Kiln library; tried " + "; ".join(tried))


def lib() -> Any:
    """The loaded library (loading it on the first call)."""
    global _lib
    if _lib is None:
        with _lock:
            if _lib is None:
                _lib = _load()
    return _lib


def library_path() -> str:
    """The path (or name) the library was loaded from."""
    lib()
    assert _path is not None
    return _path
