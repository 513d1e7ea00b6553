"""A store chain that can be replaced while it is in use (``--store-file`` + SIGHUP).

Servers and mounts hand each request the current chain with :meth:`SwappableStore.use`;
:meth:`SwappableStore.swap` installs a new one at once and closes the old one when the
last request using it is done, so no request sees a closed store.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any


class _Slot:
    __slots__ = ("retired", "store", "users")

    def __init__(self, store: Any) -> None:
        self.store = store
        self.users = 0
        self.retired = False


class SwappableStore:
    """The current store (any reader with ``close()``), replaceable while in use."""

    def __init__(self, store: Any) -> None:
        self._lock = threading.Lock()
        self._slot = _Slot(store)

    @property
    def current(self) -> Any:
        """The store new requests get."""
        return self._slot.store

    @contextlib.contextmanager
    def use(self) -> Iterator[Any]:
        """The current store, kept open until the block ends."""
        with self._lock:
            slot = self._slot
            slot.users += 1
        try:
            yield slot.store
        finally:
            with self._lock:
                slot.users -= 1
                close = slot.retired and slot.users == 0
            if close:
                slot.store.close()

    def swap(self, store: Any) -> None:
        """Install ``store``; the previous one is closed when it is no longer in use."""
        with self._lock:
            old, self._slot = self._slot, _Slot(store)
            old.retired = True
            close = old.users == 0
        if close:
            old.store.close()

    def close(self) -> None:
        """Close the current store (at once, or when its last user is done)."""
        with self._lock:
            slot = self._slot
            close = not slot.retired and slot.users == 0
            slot.retired = True
        if close:
            slot.store.close()


__all__ = ["SwappableStore"]
