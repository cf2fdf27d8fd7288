"""Development sessions. `nox` runs the default set; `nox -l` lists them.

Most sessions reuse the shared development environment `.venv` (made by `scripts/bootstrap`),
because torch and the model stacks take minutes to install. Two kinds of session build isolated
environments on purpose: `tests` (the core alone, proving it needs no torch) and one
`plugin-<name>` session per plugin (the core plus that plugin only).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import nox

ROOT = Path(__file__).parent
LOCK = str(ROOT / "requirements" / "dev.lock")
PLUGINS = sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))
ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "WANDB_MODE": "disabled",
    "SAEXPLAIN_STRICT_PLUGINS": "1",
}
TEST_TOOLS = ["pytest", "pytest-asyncio", "pytest-timeout"]
PY = sys.executable  # the interpreter of .venv when nox is run as `.venv/bin/nox`

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = True


def plugin_name(path: Path) -> str:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]["name"]


nox.options.sessions = [
    "lint",
    "typecheck",
    "tests",
    *(f"plugin-{plugin_name(p)}" for p in PLUGINS),
    "integration",
    "import_cost",
    "docs",
]


def install_constrained(session: nox.Session, *args: str) -> None:
    session.install("-c", LOCK, *args, silent=True)


@nox.session(venv_backend="none")
def lint(session: nox.Session) -> None:
    """ruff over every Python file (core, plugins, tests, benchmarks), including the rule that
    keeps heavy libraries out of the core."""
    session.run(PY, "-m", "ruff", "check", ".", env=ENV)
    session.run(PY, "-m", "ruff", "format", "--check", "--diff", ".", env=ENV)


@nox.session(venv_backend="none")
def typecheck(session: nox.Session) -> None:
    """mypy --strict on the core and on every plugin's sources."""
    session.run(PY, "-m", "mypy", env=ENV)
    for plugin in PLUGINS:
        own = "mypy" in tomllib.loads((plugin / "pyproject.toml").read_text()).get("tool", {})
        config = plugin / "pyproject.toml" if own else ROOT / "pyproject.toml"
        session.run(PY, "-m", "mypy", "--config-file", str(config), str(plugin / "src"), env=ENV)


@nox.session
def tests(session: nox.Session) -> None:
    """The core alone, in a fresh environment without torch or any plugin."""
    install_constrained(session, "-e", str(ROOT), *TEST_TOOLS)
    session.run(
        "python",
        "-c",
        "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is not None)",
    )
    # tests/browser drives chromium through Playwright: run by `integration`, in .venv
    browser = ["--ignore", str(ROOT / "tests" / "browser")]
    session.run(
        "python", "-m", "pytest", "-q", str(ROOT / "tests"), *browser, *session.posargs, env=ENV
    )


def requirement_name(requirement: str) -> str:
    """`"saexplain-torch[test]>=0.1"` -> `"saexplain-torch"`."""
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].strip().lower()


def local_closure(path: Path) -> list[Path]:
    """The sibling plugins `path` needs, transitively: through its dependencies and every extra
    (a plugin session installs them all), each from this repository, never from an index."""
    local = {plugin_name(p).lower(): p for p in PLUGINS}
    seen: list[Path] = []
    todo = [path]
    while todo:
        project = tomllib.loads((todo.pop() / "pyproject.toml").read_text())["project"]
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements += extra
        for requirement in requirements:
            sibling = local.get(requirement_name(requirement))
            if sibling is not None and sibling != path and sibling not in seen:
                seen.append(sibling)
                todo.append(sibling)
    return sorted(seen)


def make_plugin_session(path: Path) -> None:
    name = plugin_name(path)

    @nox.session(name=f"plugin-{name}")
    def plugin_session(session: nox.Session) -> None:
        project = tomllib.loads((path / "pyproject.toml").read_text())["project"]
        extras = ",".join(project.get("optional-dependencies", {}))
        target = f"{path}[{extras}]" if extras else str(path)
        siblings = [arg for sib in local_closure(path) for arg in ("-e", str(sib))]
        install_constrained(session, "-e", str(ROOT), *siblings, "-e", target, *TEST_TOOLS)
        session.run(
            "python",
            "-m",
            "pytest",
            "-q",
            "-m",
            "not slow",
            str(path / "tests"),
            *session.posargs,
            # tests that prove what this environment lacks check this marker
            env={**ENV, "SAEXPLAIN_PLUGIN_SESSION": name},
        )

    plugin_session.__doc__ = f"{name} against the core, in its own environment (fast tests)."


for _path in PLUGINS:
    make_plugin_session(_path)


@nox.session(venv_backend="none")
def integration(session: nox.Session) -> None:
    """Core plus every plugin in the shared environment, slow tests included, and the report's
    real-browser tests (tests/browser: Playwright from requirements/dev.lock, Debian's chromium,
    which .ci/run installs; under CI=true a missing browser fails them)."""
    targets = [str(ROOT / "tests"), *(str(p / "tests") for p in PLUGINS)]
    session.run(
        PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", *targets, *session.posargs, env=ENV
    )


@nox.session(venv_backend="none")
def import_cost(session: nox.Session) -> None:
    """`import saexplain` and the CLI stay light with every plugin installed."""
    session.run(
        PY,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(ROOT / "tests" / "test_import_cost.py"),
        env=ENV,
    )


@nox.session(venv_backend="none")
def docs(session: nox.Session) -> None:
    """Build the mkdocs site strictly (broken links fail)."""
    session.run(PY, "-m", "mkdocs", "build", "--strict", "--site-dir", str(ROOT / "site"), env=ENV)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Every benchmark script; each prints a RESULT line with ratios."""
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        session.run(PY, str(script), env=ENV)
