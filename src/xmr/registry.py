"""A tiny name -> factory registry, one per pluggable family (encoders, losses, heads, indexes).

Families are chosen by registered name, never by sniffing strings (see STYLE.md)::

    LOSSES = Registry("loss")

    @LOSSES.register("infonce")
    def infonce_loss(...): ...

    LOSSES.get("infonce")            # the function
    LOSSES.get("nope")               # XmrError: unknown loss 'nope'; known: infonce, ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from xmr.errors import XmrError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects (usually factories) for one family of components."""

    def __init__(self, family: str) -> None:
        self.family = family
        self._items: dict[str, T] = {}

    def register(self, name: str, *, overwrite: bool = False) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``; a duplicate name is an error."""

        def deco(obj: T) -> T:
            self.add(name, obj, overwrite=overwrite)
            return obj

        return deco

    def add(self, name: str, obj: T, *, overwrite: bool = False) -> None:
        """Register ``obj`` under ``name`` (the non-decorator form)."""
        if not name or not isinstance(name, str):
            raise XmrError(f"{self.family} name must be a non-empty string, got {name!r}")
        if name in self._items and not overwrite:
            raise XmrError(f"{self.family} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name``; an unknown name raises XmrError listing known ones."""
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "(none)"
            raise XmrError(f"unknown {self.family} {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __getitem__(self, name: str) -> T:
        """``registry[name]`` is :meth:`get` (an unknown name raises XmrError listing the known ones)."""
        return self.get(name)

    def __eq__(self, other: object) -> bool:
        """Equal to another registry or a mapping with the same names and objects."""
        if isinstance(other, Registry):
            return self._items == other._items
        if isinstance(other, Mapping):
            return self._items == dict(other)
        return NotImplemented

    __hash__ = object.__hash__  # identity: a registry is one object per family

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
