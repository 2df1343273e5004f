"""A tiny name -> factory registry whose errors list the names it knows."""

from typing import Callable, Dict, Generic, List, TypeVar

from tf_lottery.errors import UsageError

T = TypeVar("T")


class UnknownNameError(UsageError):
    """Raised for a name that was never registered."""


class Registry(Generic[T]):
    """Maps names to factories, one registry per concept (models, optimizers, ...)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._factories: Dict[str, Callable[..., T]] = {}

    def register(self, name: str, factory: Callable[..., T] = None):
        """Registers `factory` under `name`; usable as a decorator."""

        def add(function):
            if name in self._factories:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._factories[name] = function
            return function

        return add if factory is None else add(factory)

    def names(self) -> List[str]:
        return sorted(self._factories)

    def __contains__(self, name: str) -> bool:
        return name in self._factories

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._factories[name]
        except KeyError:
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}; known {self.kind} names: "
                f"{', '.join(self.names())} (never registered — did you import it?)"
            ) from None
