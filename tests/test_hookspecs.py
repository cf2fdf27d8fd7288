"""The extension contract is a public API: its exact signatures are snapshot-tested."""

import inspect
import re
from pathlib import Path

from saexplain import hookspecs

EXPECTED = {
    "register_backends": "(register: 'Register') -> 'None'",
    "register_explainers": "(register: 'Register') -> 'None'",
    "register_scorers": "(register: 'Register') -> 'None'",
    "register_providers": "(register: 'Register') -> 'None'",
    "register_coders": "(register: 'Register') -> 'None'",
    "register_datasets": "(register: 'Register') -> 'None'",
    "register_executors": "(register: 'Register') -> 'None'",
    "detect_backend": "(model: 'object') -> 'str | None'",
    "detect_coder": "(coder: 'object') -> 'str | None'",
}
DOCS = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def hookspec_functions():
    return {
        name: fn
        for name, fn in vars(hookspecs).items()
        if callable(fn) and hasattr(fn, hookspecs.PROJECT + "_spec")
    }


def test_signature_snapshot():
    actual = {name: str(inspect.signature(fn)) for name, fn in hookspec_functions().items()}
    assert actual == EXPECTED, "the hook contract changed: update EXPECTED, docs/hooks.md and notes"


def test_only_the_detect_hooks_are_firstresult():
    for name, fn in hookspec_functions().items():
        opts = getattr(fn, hookspecs.PROJECT + "_spec")
        assert opts["firstresult"] is name.startswith("detect_"), name


def test_hook_count_stated_in_the_docs_is_true():
    registers = [n for n in hookspec_functions() if n.startswith("register_")]
    words = {4: "four", 5: "five", 6: "six", 7: "seven"}
    text = DOCS.read_text(encoding="utf-8")
    assert f"The {words[len(registers)]} `register_*` hooks" in text


def test_every_hook_has_a_docstring():
    for name, fn in hookspec_functions().items():
        assert (fn.__doc__ or "").strip(), f"hook {name} has no docstring"


def test_every_hook_is_documented_with_its_exact_signature():
    text = DOCS.read_text(encoding="utf-8")
    for name, fn in hookspec_functions().items():
        sig = str(inspect.signature(fn)).replace("'", "")
        heading = re.search(rf"^### `{name}`$", text, re.MULTILINE)
        assert heading, f"docs/hooks.md has no '### `{name}`' section"
        assert f"def {name}{sig}" in text, f"docs/hooks.md lacks 'def {name}{sig}'"
