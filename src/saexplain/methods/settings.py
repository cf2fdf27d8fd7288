"""Method settings as declared pydantic models: one declaration gives the validation, the
defaults, the settings recorded with every result and the documentation table.

A method declares its settings as a nested `Settings` class and builds from keywords, so its
factory is still called as `factory(**settings)`:

    class MyScorer:
        name = "mine"

        class Settings(MethodSettings):
            batch_size: int = Field(5, ge=1, description="contexts per prompt")

        def __init__(self, **settings: Any) -> None:
            self.settings = self.Settings.parse(self.name, settings)

`parse` turns a bad value into a `ConfigError` naming the method and the setting;
`self.settings.model_dump(mode="json")` is what the method records beside its results (a field
declared with `exclude=True` is not recorded: use it for settings that cannot change a result,
such as a device or a cache size); `settings_table(MyScorer.Settings)` renders the markdown
table the docs show.
"""

from __future__ import annotations

import inspect
import json
import types
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, Self, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.fields import FieldInfo

from saexplain.errors import ConfigError

__all__ = ["MethodSettings", "settings_table"]


class MethodSettings(BaseModel):
    """Base of every method's declared settings: immutable, unknown keys rejected, and strict
    types (no `"5"` for 5, no `True` for 1, no NaN), as in a configuration file a typo or a
    wrong type is a mistake to report, not to coerce. Give every field a `description`: it is
    the meaning column of the docs table."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)

    @classmethod
    def parse(cls, method: str, values: Mapping[str, Any]) -> Self:
        """`values` validated for the method `method`, or a `ConfigError` naming the method and
        every bad setting."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as e:
            raise ConfigError(_describe(method, cls, e.errors())) from None


Error = Mapping[str, Any]  # one of pydantic's error details


def _describe(method: str, settings: type[BaseModel], errors: Sequence[Error]) -> str:
    """One sentence per bad setting; the alternatives of a union merged into one."""
    by_setting: dict[str, list[Error]] = {}
    for error in errors:
        key = str(error["loc"][0]) if error["loc"] else ""
        by_setting.setdefault(key, []).append(error)
    parts = []
    for name, found in by_setting.items():
        if not name:  # a check across settings (a model validator)
            parts += [_message(e) for e in found]
        elif found[0]["type"] == "extra_forbidden":
            known = ", ".join(settings.model_fields)
            parts.append(f"unknown setting {name!r} (the settings are: {known})")
        else:
            where = found[0]["loc"][1:] if len(found) == 1 else ()
            item = "".join(f"[{p!r}]" for p in where if isinstance(p, int | str))
            reasons = " or ".join(dict.fromkeys(_message(e) for e in found))
            parts.append(f"setting {name!r}{item}: {reasons}, got {found[0]['input']!r}")
    return f"{method}: " + "; ".join(parts)


def _message(error: Error) -> str:
    text = str(error["msg"]).removeprefix("Value error, ")
    return text[:1].lower() + text[1:]


# --- the docs table -------------------------------------------------------------------------------


def settings_table(settings: type[BaseModel], *, inherited: bool = True) -> str:
    """The markdown table of a settings model: setting, type (with its bounds), default and
    meaning (the field's description). `inherited=False` leaves out the fields of its base
    classes (a method that adds settings to a documented common set)."""
    fields = dict(settings.model_fields)
    if not inherited:
        own = inspect.get_annotations(settings)  # the class's own declarations, not its bases'
        fields = {name: info for name, info in fields.items() if name in own}
    rows = ["| setting | type | default | meaning |", "|---|---|---|---|"]
    for name, info in fields.items():
        cells = (f"`{name}`", _type_text(info), _default_text(info), info.description or "")
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")  # one line; a pipe would end the cell


def _default_text(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    return f"`{_literal(info.get_default(call_default_factory=True))}`"


def _literal(value: Any) -> str:
    """A default as a user writes it in Python (`None`, `True`, `"list"`, `["a", "b"]`)."""
    if value is None or isinstance(value, bool):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_literal(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _type_text(info: FieldInfo) -> str:
    return _annotation_text(info.annotation, info.metadata)


def _annotation_text(annotation: Any, constraints: Sequence[Any] = ()) -> str:
    """A type in words, the constraints on its non-None part: `int >= 1, or None`,
    `"set" or "add"`, `non-empty list of str`."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:  # constraints on an inner type, e.g. list[Annotated[str, ...]]
        inner = [m for a in args[1:] for m in (a.metadata if isinstance(a, FieldInfo) else [a])]
        return _annotation_text(args[0], [*constraints, *inner])
    if origin is Union or origin is types.UnionType:
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(_annotation_text(a, constraints) for a in rest)
        return f"{text}, or None" if len(rest) < len(args) else text
    if origin is Literal:
        return " or ".join(_literal(a) for a in args)
    if origin in (list, tuple, set, frozenset):
        name = f"list of {_annotation_text(args[0] if args else Any)}"
    elif origin in (dict, Mapping):
        name = "mapping"
    elif annotation is Any:
        name = "any"
    else:
        name = getattr(annotation, "__name__", str(annotation))
    nonempty = any(getattr(c, "min_length", None) == 1 for c in constraints)
    bounds = _bounds(constraints)
    return " ".join(p for p in ("non-empty" if nonempty else "", name, bounds) if p)


def _bounds(constraints: Sequence[Any]) -> str:
    """`>= 1`, `in [2, 20]`, `in (0, 1]`, `at most 5 long` from pydantic's constraints (the
    `annotated_types` markers, read by their attributes)."""
    low: tuple[str, object] | None = None  # (">=" or ">", bound)
    high: tuple[str, object] | None = None
    length = ""
    for c in constraints:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            if (bound := getattr(c, attr, None)) is not None:
                if op.startswith(">"):
                    low = (op, bound)
                else:
                    high = (op, bound)
        if (n := getattr(c, "min_length", None)) is not None and n > 1:
            length = f"at least {n} long"
        if (n := getattr(c, "max_length", None)) is not None:
            length = f"at most {n} long"
    if low and high:
        left, right = "[" if low[0] == ">=" else "(", "]" if high[0] == "<=" else ")"
        return f"in {left}{low[1]}, {high[1]}{right}"
    one_side = low or high
    return f"{one_side[0]} {one_side[1]}" if one_side else length
