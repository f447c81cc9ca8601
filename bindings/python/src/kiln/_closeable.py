"""The one place the binding's handle classes get ``with`` and garbage-collection cleanup."""

from __future__ import annotations

from typing import TypeVar

_Self = TypeVar("_Self", bound="Closeable")


class Closeable:
    """A Kiln handle owner: ``close()`` frees it, leaving a ``with`` block closes it, and so does
    garbage collection (quietly: a finalizer must not raise). Subclasses define ``close()``, which
    must be safe to call twice."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
