"""``Registry[T]``: the plug-in points (model families, data sets, runners, energy meters)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from autotune.errors import UserError

__all__ = ["Registry", "closest"]

T = TypeVar("T")


def closest(name: str, candidates: list[str] | tuple[str, ...]) -> str | None:
    """Return the candidate nearest to ``name`` by spelling, if any is close."""
    found = difflib.get_close_matches(str(name), list(candidates), n=1, cutoff=0.5)
    return found[0] if found else None


class Registry(Generic[T]):
    """A name → plug-in table. ``register`` refuses duplicates; ``get`` suggests a close name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str, *, file: str | None = None, key: str | None = None) -> T:
        try:
            return self._items[name]
        except KeyError:
            near = closest(name, self.names())
            hint = f"did you mean {near!r}?" if near else None
            raise UserError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}",
                file=file,
                key=key,
                hint=hint,
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
