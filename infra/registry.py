"""Backend registries: one per stage, filled by ``@REGISTRY.register("name")`` on the backend classes.

A registry knows the package its backends live in and imports every module of it on the first lookup, so adding a
backend is one new file in that package (plus the profile line that names it): nothing else lists backends.
An unknown name is an error that lists the known ones; a name registered twice is an error too.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownBackendError(ValueError):
    pass


class Registry(Generic[T]):
    def __init__(self, what: str, package: str | None = None):
        self.what = what  # "visual captioner", for messages
        self.package = package  # where the backend modules live; None: only what is registered explicitly
        self._entries: dict[str, T] = {}
        self._discovered = package is None
        self._lock = threading.RLock()  # a backend module may look names up while it is imported

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.what} {name!r} is already registered ({self._entries[name]!r})")
            self._entries[name] = obj
            return obj
        return add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def _discover(self, again: bool = False) -> None:
        """Import the package's backend modules (once; ``again``: also any module added since)."""
        if self._discovered and not again or self.package is None:
            return
        with self._lock:
            pkg = importlib.import_module(self.package)
            for info in pkgutil.iter_modules(pkg.__path__):
                importlib.import_module(f"{self.package}.{info.name}")  # a no-op for modules already imported
            self._discovered = True

    def names(self) -> list[str]:
        self._discover()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        self._discover()
        if name not in self._entries:
            self._discover(again=True)
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownBackendError(f"unknown {self.what} {name!r}; known: {', '.join(self.names()) or 'none'}") \
                from None

    def __contains__(self, name: str) -> bool:
        self._discover()
        return name in self._entries
