"""Reading a RunConfig from a YAML or TOML file, with `key=value` overrides from the command line.

    load_config("run.yaml", ["latents.sample=20", "explainers=[maxact, vocabproj]"])

Override values are read as YAML scalars/lists (`20`, `true`, `[a, b]`, `{name: x}`); dotted keys
reach into nested tables. Every error names the file and the offending key.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from saexplain.errors import ConfigError
from saexplain.models import RunConfig


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as e:  # pragma: no cover - pyyaml is a core dependency
        raise ConfigError("reading YAML needs pyyaml: pip install pyyaml") from e
    return yaml


def _yaml_problem(error: Exception) -> str:
    """A YAML error on one line, with its place (PyYAML's own message spans several lines)."""
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    # a character YAML does not accept (no mark): the message says which and where
    return " ".join(str(error).split()).replace('in "<unicode string>", position', "at offset")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"config {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
            f"{e.start}): save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from e
    try:
        if path.suffix == ".toml":
            data: Any = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            data = _yaml().safe_load(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config {path}: use a .yaml, .yml, .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"config {path} is not valid: {e}") from e
    except Exception as e:
        if type(e).__module__.startswith("yaml"):
            raise ConfigError(f"config {path} is not valid YAML: {_yaml_problem(e)}") from e
        raise
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must hold a table of settings, not {type(data).__name__}")
    return data


def parse_override(item: str) -> tuple[list[str], Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key=value (e.g. latents.sample=20)")
    try:
        value = _yaml().safe_load(raw) if raw.strip() else ""
    except Exception:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(data))  # a deep copy of plain data
    for item in overrides:
        path, value = parse_override(item)
        node = out
        for part in path[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[path[-1]] = value
    return out


def make_config(data: Mapping[str, Any], *, source: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(f"{source}: {problems}") from e


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> RunConfig:
    data = read_config_file(path) if path is not None else {}
    return make_config(apply_overrides(data, overrides), source=str(path or "overrides"))
