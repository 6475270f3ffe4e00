"""A small name → factory registry, filled by decorators (timm style), that fills itself.

Every extensible family in cultureclip (model backends, losses, benchmarks, LLM,
image and judge backends) is a :class:`Registry`; tests parametrise over
``registry.names()`` so each new entry is exercised for free.

A registry finds its entries itself the first time it is asked: it imports every module
of its ``package`` (so a new built-in benchmark or backend is one new file there) and
every module named by an entry point of its group (``cultureclip.benchmarks``,
``cultureclip.models``, ``cultureclip.losses``, ``cultureclip.llms``, ...), so a third
party registers from their own package::

    # pyproject.toml of "my-benchmarks"
    [project.entry-points."cultureclip.benchmarks"]
    my-benchmark = "my_benchmarks.vqa"     # a module whose @BENCHMARKS.register runs on import
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from cultureclip.core.errors import UnknownNameError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories (classes or functions)."""

    def __init__(
        self, kind: str, *, package: str | None = None, entry_point_group: str | None = None
    ) -> None:
        self.kind = kind
        self.package = package
        self.entry_point_group = entry_point_group
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._discovered = package is None and entry_point_group is None

    def discover(self) -> None:
        """Imports the package's modules and the entry points' modules (once)."""
        if self._discovered:
            return
        self._discovered = True  # before importing: the modules call register()
        if self.package is not None:
            package = importlib.import_module(self.package)
            for module in pkgutil.iter_modules(package.__path__, f"{self.package}."):
                if not module.name.rsplit(".", 1)[-1].startswith("_"):
                    importlib.import_module(module.name)
        if self.entry_point_group is not None:
            for point in entry_points(group=self.entry_point_group):
                try:
                    point.load()
                except Exception as exc:  # a broken plugin must not break the toolkit
                    logger.warning(
                        "%s plugin %r (%s) failed to load: %s",
                        self.kind,
                        point.name,
                        point.value,
                        exc,
                    )

    def register(self, name: str, *, help: str | None = None) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._entries and self._entries[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            doc = help or (getattr(obj, "__doc__", None) or "").strip().split("\n")[0]
            self._help[name] = doc
            return obj

        return decorator

    def get(self, name: str) -> T:
        if name not in self._entries:
            self.discover()
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; registered: {known}") from None

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        factory = self.get(name)
        return factory(*args, **kwargs)  # type: ignore[operator]

    def names(self) -> list[str]:
        self.discover()
        return sorted(self._entries)

    def describe(self) -> dict[str, str]:
        return {name: self._help[name] for name in self.names()}

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self.discover()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"
