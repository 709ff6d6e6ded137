"""A tiny name -> object registry used for defenses, attacks and combiners.

Two registries per kind: the torch-free specs (``DEFENSE_SPECS``/``ATTACK_SPECS`` in :mod:`igat.specs`: names,
parameter models, recipes; what configs are validated against) and the implementations (``DEFENSES``/``ATTACKS``:
``class ADP(ADPSpec, Defense)`` decorated with ``@DEFENSES.register("adp")``). Modules listed in a package's
``__init__`` are imported once so a registry is complete whenever its package is imported; ``tests/test_specs.py``
checks that both registries of a kind name the same things.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name that is not registered; the message lists the known names."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain sentence
        return str(self.args[0])


class Registry(Generic[T]):
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
