"""Prompts are data: versioned TOML files shipped in this folder, one per prompt.

A prompt file holds `version`, `system`, `user` (a `string.Template` with `$name` fields, so JSON
braces need no escaping), and any further tables a method needs (few-shot examples as *data*,
rendered by the same code as live examples). Users add their own by passing a path:

    load_prompt("maxact")                  # the bundled src/saexplain/prompts/maxact.toml
    load_prompt("my_prompts/maxact.toml")  # a file of the same shape
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

from saexplain.errors import ConfigError

__all__ = ["PromptTemplate", "bundled_prompts", "load_prompt"]


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: int
    system: str
    user: str
    data: Mapping[str, Any] = field(default_factory=dict)  # every other key of the file
    source: str = ""  # where it was loaded from

    @property
    def id(self) -> str:
        """`name@version`, recorded with every explanation and score."""
        return f"{self.name}@{self.version}"

    def render_system(self, **values: object) -> str:
        return _fill(self.system, values, f"{self.id} system")

    def render_user(self, **values: object) -> str:
        return _fill(self.user, values, f"{self.id} user")


def _fill(template: str, values: Mapping[str, object], where: str) -> str:
    try:
        return Template(template).substitute({k: str(v) for k, v in values.items()})
    except KeyError as e:
        raise ConfigError(f"prompt {where} needs a value for ${e.args[0]}") from e


def bundled_prompts() -> list[str]:
    """Names of the prompts shipped with saexplain."""
    root = resources.files(__name__)
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".toml"))


@cache
def _load(name_or_path: str) -> PromptTemplate:
    path = Path(name_or_path)
    if path.suffix == ".toml":
        if not path.is_file():
            raise ConfigError(f"prompt file {name_or_path!r} does not exist")
        text, name, source = path.read_text(encoding="utf-8"), path.stem, str(path)
    else:
        resource = resources.files(__name__).joinpath(f"{name_or_path}.toml")
        if not resource.is_file():
            raise ConfigError(
                f"no bundled prompt {name_or_path!r}; bundled: {bundled_prompts()} "
                "(or pass a path to a .toml file)"
            )
        text, name, source = resource.read_text(encoding="utf-8"), name_or_path, "bundled"
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"prompt {name_or_path!r} is not valid TOML: {e}") from e
    missing = [k for k in ("version", "system", "user") if k not in raw]
    if missing:
        raise ConfigError(f"prompt {name_or_path!r} lacks {missing}")
    data = {k: v for k, v in raw.items() if k not in ("version", "system", "user", "name")}
    return PromptTemplate(
        name=str(raw.get("name", name)),
        version=int(raw["version"]),
        system=str(raw["system"]),
        user=str(raw["user"]),
        data=data,
        source=source,
    )


def load_prompt(name_or_path: str | Path) -> PromptTemplate:
    """A bundled prompt by name, or a user's prompt file by path (cached per process)."""
    return _load(str(name_or_path))
