"""Name -> factory registries that remember which plugin (and distribution) provided each entry."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from saexplain.errors import (
    AmbiguousComponentError,
    ConfigError,
    DuplicateComponentError,
    SaexplainError,
    UnknownComponentError,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:/+-]*$")


@dataclass(frozen=True)
class Provenance:
    """Where a component came from."""

    plugin: str  # the plugin's registered name (entry-point name, module, or notebook name)
    distribution: str | None = None  # installed distribution, None for notebook plugins
    version: str | None = None

    def __str__(self) -> str:
        if self.distribution:
            return f"{self.plugin} ({self.distribution} {self.version or '?'})"
        return self.plugin


@dataclass(frozen=True)
class Component:
    """A registered component: its factory and where it came from."""

    kind: str
    name: str
    factory: Callable[..., Any]
    provenance: Provenance
    description: str = ""
    replaced: Provenance | None = None  # set when this entry overrode an earlier one


class Registry:
    """Components of one kind (backend, explainer, scorer, provider), selected by name."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Component] = {}
        self._ambiguous: dict[str, list[Provenance]] = {}
        self._shadowed: dict[str, Component] = {}  # what an override replaced, to restore it

    def register(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        provenance: Provenance,
        description: str = "",
        override: bool = False,
    ) -> Component:
        self.check(name, factory, provenance=provenance, override=override)
        previous = self._entries.get(name)
        entry = Component(
            kind=self.kind,
            name=name,
            factory=factory,
            provenance=provenance,
            description=description,
            replaced=previous.provenance if previous else None,
        )
        if previous is not None:
            self._shadowed[name] = previous
        self._entries[name] = entry
        return entry

    def check(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        provenance: Provenance,
        override: bool = False,
    ) -> None:
        """Raise if registering `name` would be invalid, without registering it."""
        self.validate(name, factory)
        previous = self._entries.get(name)
        if previous is None:
            return
        if not override or previous.replaced is not None:
            # Two plain registrations, or two overrides of the same name: the winner would
            # depend on load order, so refuse.
            raise DuplicateComponentError(
                f"{self.kind} {name!r} is already registered by {previous.provenance}; "
                f"{provenance} registers it again. Pass override=True to replace it on purpose."
            )

    def validate(self, name: str, factory: Callable[..., Any]) -> None:
        """Raise on a malformed name or a factory that is not callable."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ValueError(f"invalid {self.kind} name {name!r}: use letters, digits, _.:/+-")
        if not callable(factory):
            raise TypeError(f"{self.kind} {name!r}: factory must be callable, got {factory!r}")

    def mark_ambiguous(self, name: str, provenance: Provenance) -> None:
        """Record a collision between installed plugins: selecting `name` then raises."""
        claimants = self._ambiguous.setdefault(name, [])
        if not claimants and name in self._entries:
            claimants.append(self._entries[name].provenance)
        claimants.append(provenance)

    def remove_plugin(self, plugin: str) -> None:
        """Drop `plugin`'s components; a component one of them overrode comes back."""
        for name in [n for n, c in self._entries.items() if c.provenance.plugin == plugin]:
            del self._entries[name]
            shadowed = self._shadowed.pop(name, None)
            if shadowed is not None and shadowed.provenance.plugin != plugin:
                self._entries[name] = shadowed
        for name in [n for n, c in self._shadowed.items() if c.provenance.plugin == plugin]:
            del self._shadowed[name]

    def get(self, name: str) -> Component:
        if name in self._ambiguous:
            raise AmbiguousComponentError(self.kind, name, [str(p) for p in self._ambiguous[name]])
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownComponentError(self.kind, name, self._entries) from None

    def create(self, name: str, *args: Any, **settings: Any) -> Any:
        """Build the component `name` with its factory."""
        return self.get(name).factory(*args, **settings)

    def names(self) -> list[str]:
        return sorted(self._entries)

    @property
    def ambiguous(self) -> dict[str, list[Provenance]]:
        return {k: list(v) for k, v in self._ambiguous.items()}

    def __contains__(self, name: object) -> bool:
        return name in self._entries and name not in self._ambiguous

    def __iter__(self) -> Iterator[Component]:
        return iter(sorted(self._entries.values(), key=lambda c: c.name))

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def instantiate(
    kind: str, registry: Registry, name: str, settings: Mapping[str, Any], *args: Any
) -> Any:
    """`registry.create` with bad settings turned into a ConfigError naming the component."""
    registry.get(name)  # raises UnknownComponentError listing the known names
    try:
        return registry.create(name, *args, **settings)
    except SaexplainError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{kind} {name!r}: bad settings {dict(settings)}: {e}") from e
