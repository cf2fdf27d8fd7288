"""The public method kit (`saexplain.methods`): complete, the one door into the core for code
outside it, and the home of the invariants every method relies on (seeds, BOS, held-out splits).
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

import saexplain.methods as kit
from saexplain.explainers.ensemble import Ensemble
from saexplain.explainers.maxact import MaxAct
from saexplain.explainers.selfexplain import SelfExplainer
from saexplain.explainers.tokenchange import TokenChange
from saexplain.explainers.vocabproj import VocabProj
from saexplain.methods import (
    Example,
    LatentRecord,
    LatentRef,
    MethodContext,
    Needs,
    derive_seed,
    first_shown,
    latent_seed,
    needs_of,
)
from saexplain.models import LatentStats
from saexplain.scorers.detection import DetectionScorer
from saexplain.scorers.fuzzing import FuzzingScorer
from saexplain.scorers.simulation import SimulationScorer

ROOT = Path(__file__).resolve().parents[1]
KIT_MODULES = ("classify", "items", "llm", "model", "parsing", "seeds", "settings", "text")

# --- the kit is complete --------------------------------------------------------------------------


def test_every_name_in_all_resolves_once():
    assert len(kit.__all__) == len(set(kit.__all__))
    missing = [name for name in kit.__all__ if not hasattr(kit, name)]
    assert not missing, missing


@pytest.mark.parametrize("module", KIT_MODULES)
def test_every_kit_module_name_is_in_the_index(module):
    """The package re-exports all of each module's public names, so one import suffices."""
    names = importlib.import_module(f"saexplain.methods.{module}").__all__
    assert set(names) <= set(kit.__all__), set(names) - set(kit.__all__)


def test_the_index_names_every_kit_module_name():
    """The package docstring says what to use for what; every kit function and class is in it
    (constants and result types of documented functions aside)."""
    doc = kit.__doc__ or ""
    undocumented = [
        name
        for module in KIT_MODULES
        for name in importlib.import_module(f"saexplain.methods.{module}").__all__
        if not re.search(rf"`{name}[`(]", doc) and name not in {"FIRST_TOKENS", "Style", "Parsed"}
    ]
    assert not undocumented, undocumented


# --- no private core imports outside the core -----------------------------------------------------


def _private(dotted: str) -> bool:
    return any(part.startswith("_") and not part.startswith("__") for part in dotted.split("."))


# For docs blocks that are not whole programs (signatures, fragments): the same rule on text.
_PRIVATE_TEXT = re.compile(
    r"\bsaexplain(?:\.\w+)*\._(?!_)\w+|\bfrom saexplain(?:\.\w+)* import [^\n]*\b_(?!_)\w+"
)


def private_imports(source: str) -> list[str]:
    """The imports in `source` that reach into a private part of the core: a `_module` anywhere in
    a `saexplain...` path, or a `_name` imported from one (also through `importlib`)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return [m.group(0) for m in _PRIVATE_TEXT.finditer(source)]
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [
                a.name for a in node.names if a.name.startswith("saexplain") and _private(a.name)
            ]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module != "saexplain" and not node.module.startswith("saexplain."):
                continue
            if _private(node.module):
                found.append(node.module)
            found += [f"{node.module}.{a.name}" for a in node.names if _private(a.name)]
        elif isinstance(node, ast.Call) and node.args:
            func, first = node.func, node.args[0]
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if (
                name == "import_module"
                and isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and first.value.startswith("saexplain")
                and _private(first.value)
            ):
                found.append(first.value)
    return found


@pytest.mark.parametrize(
    ("source", "bad"),
    [
        ("from saexplain.scorers._common import select_items", ["saexplain.scorers._common"]),
        ("import saexplain._async", ["saexplain._async"]),
        ("from saexplain.store import _io", ["saexplain.store._io"]),
        ("from saexplain.methods import _SPECIAL, one_line", ["saexplain.methods._SPECIAL"]),
        ("import importlib\nimportlib.import_module('saexplain._async')", ["saexplain._async"]),
        ("from saexplain.methods import select_items\nimport saexplain", []),
        ("from saexplain import __version__\nfrom saexplain_x._impl import y", []),
        ("from . import _local", []),  # a plugin's own private modules are its business
        ("register(name: str) -> None  # saexplain._async.run_sync", ["saexplain._async"]),
        ("def f(x: int) -> None: ...\nfrom saexplain.x import _y", ["saexplain.x._y"]),
    ],
)
def test_private_import_checker(source, bad):
    assert private_imports(source) == bad


_FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.DOTALL | re.MULTILINE)


def outside_core_sources() -> Iterator[tuple[str, str]]:
    """(where, python source) for all code outside the core: plugin sources and tests,
    benchmarks, examples, and the python blocks of the docs and README."""
    roots = [*ROOT.glob("plugins/*/src"), *ROOT.glob("plugins/*/tests")]
    roots += [ROOT / "benchmarks", ROOT / "examples"]
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            yield str(path.relative_to(ROOT)), path.read_text(encoding="utf-8")
    for path in sorted([*ROOT.glob("docs/**/*.md"), ROOT / "README.md"]):
        text = path.read_text(encoding="utf-8")
        for k, block in enumerate(_FENCE.findall(text), start=1):
            yield f"{path.relative_to(ROOT)} (python block {k})", block


def test_the_walk_sees_the_plugins_and_docs():
    wheres = [where for where, _ in outside_core_sources()]
    assert any(w.startswith("plugins/saexplain-embeddings/src") for w in wheres)
    assert any("python block" in w for w in wheres)


def test_no_code_outside_the_core_imports_a_private_core_module_or_name():
    bad = {
        where: found
        for where, source in outside_core_sources()
        if (found := private_imports(source))
    }
    assert not bad, f"use the public names (saexplain.methods and friends): {bad}"


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(ROOT).as_posix()
        for pkg in ("explainers", "scorers")
        for p in (ROOT / "src/saexplain" / pkg).rglob("*.py")
    ),
)
def test_builtin_methods_import_the_core_only_through_the_kit(path):
    """Built-in methods are written like plugins: from `saexplain.methods` (and each other)."""
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    other = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and node.module
        and node.module.startswith("saexplain")
        and node.module != "saexplain.methods"
        and not node.module.startswith(("saexplain.explainers.", "saexplain.scorers."))
    ]
    assert not other, other


# --- needs ----------------------------------------------------------------------------------------

EVERYTHING = Needs(provider=True, backend=True, coder=True)


@pytest.mark.parametrize(
    ("make", "needs"),
    [
        (MaxAct, Needs(provider=True)),
        (VocabProj, Needs(provider=True, backend=True, coder=True, records=False)),
        (TokenChange, EVERYTHING),
        (Ensemble, EVERYTHING),
        (lambda: Ensemble(mode="concat", components=["maxact"]), Needs(provider=True)),
        (lambda: Ensemble(components=["maxact", "vocabproj"]), EVERYTHING),
        (SelfExplainer, Needs(backend=True, coder=True, records=False)),
        (DetectionScorer, Needs(provider=True)),
        (FuzzingScorer, Needs(provider=True)),
        (SimulationScorer, Needs(provider=True)),
    ],
)
def test_builtin_methods_declare_their_needs(make, needs):
    method = make()
    assert isinstance(method.needs, Needs)  # declared, not the "everything" fallback
    assert needs_of(method) == needs


# --- seeds and BOS: one rule each -----------------------------------------------------------------


def record_for(index: int, coder_id: str = "sae") -> LatentRecord:
    ref = LatentRef(coder_id=coder_id, hook="blocks.0.hook_resid_pre", index=index)
    return LatentRecord(latent=ref, stats=LatentStats(n_tokens=10, count=1))


def test_latent_seed_is_the_one_derive_seed_of_seed_coder_latent_and_purpose():
    from saexplain.store import _io  # the store keeps re-exporting the one function

    assert _io.derive_seed is derive_seed
    ctx = MethodContext(seed=7)
    seed = latent_seed(ctx, record_for(3), "detection")
    assert seed == derive_seed(7, "sae", 3, "detection") and 0 <= seed < 2**63
    others = {
        latent_seed(ctx, record_for(4), "detection"),
        latent_seed(ctx, record_for(3, "other"), "detection"),
        latent_seed(ctx, record_for(3), "fuzzing"),
        latent_seed(MethodContext(seed=8), record_for(3), "detection"),
    }
    assert seed not in others and len(others) == 4


def ex(str_tokens: list[str], tokens: list[int] | None = None, **kw: object) -> Example:
    ids = tuple(tokens if tokens is not None else range(len(str_tokens)))
    acts = tuple(0.0 for _ in str_tokens)
    return Example(tokens=ids, str_tokens=tuple(str_tokens), activations=acts, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("example", "bos", "first"),
    [
        (ex(["<bos>", " a"], [2, 5]), 2, 1),  # by id when the backend knows it
        (ex(["<bos>", " a"], [9, 5]), 2, 0),  # a look-alike with another id is text
        (ex(["<|endoftext|>", " a"]), None, 1),  # by look without a backend
        (ex(["<s>", " a"]), None, 1),
        (ex(["<0x0A>", " a"]), None, 0),  # a byte token (newline) is text, not BOS
        (ex([" a", "<bos>"]), None, 0),  # only a leading one
        (ex([]), None, 0),
    ],
)
def test_one_bos_rule(example, bos, first):
    assert first_shown(example, bos) == first


# --- the held-out invariant lives in the record ---------------------------------------------------


def test_a_record_with_overlapping_splits_cannot_be_built():
    shared = ex([" the", " cat"], row=4, start=8)
    ref = record_for(0).latent
    stats = LatentStats(n_tokens=10, count=1)
    with pytest.raises(ValidationError, match="disjoint"):
        LatentRecord(
            latent=ref, stats=stats, explanation_examples=(shared,), scoring_examples=(shared,)
        )
    ok = LatentRecord(
        latent=ref,
        stats=stats,
        explanation_examples=(shared,),
        scoring_examples=(shared.model_copy(update={"start": 9}),),  # another window: fine
    )
    with pytest.raises(ValidationError, match="disjoint"):  # nor copied into existence
        ok.model_copy(update={"scoring_examples": (shared,)})
    with pytest.raises(ValidationError, match="disjoint"):  # nor read back from disk
        LatentRecord.model_validate_json(
            ok.model_copy(update={"scoring_examples": ()})
            .model_dump_json()
            .replace('"scoring_examples":[]', f'"scoring_examples":[{shared.model_dump_json()}]')
        )
    # examples without a store position (hand-made) have no identity to compare
    loose = ex([" the", " cat"])
    LatentRecord(latent=ref, stats=stats, explanation_examples=(loose,), scoring_examples=(loose,))
