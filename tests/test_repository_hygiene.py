"""What every distribution ships and every tracked file holds (issue 21): no absolute path of a
developer's machine in any tracked text file, and `py.typed` in every distribution's package."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Home folders and machine-specific roots: /root/..., /home/<user>/..., /Users/<user>/..., this
# project's checkout folder /work/..., and Windows C:\Users\<user>\ (either slash).
MACHINE_PATH = re.compile(
    r"(?<![\w.~-])(?:/root/|/home/[\w.-]+/|/Users/[\w.-]+|/work/|[A-Za-z]:[\\/]+Users[\\/])"
)


def _tracked_files() -> list[Path]:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def machine_paths(text: str) -> list[str]:
    """The lines of `text` that hold an absolute home or machine path."""
    return [line.strip() for line in text.splitlines() if MACHINE_PATH.search(line)]


def test_the_pattern_finds_machine_paths_and_nothing_else():
    for found in ("cd /work/main", "/home/alice/x", "/root/.cache", r"C:\Users\bob", "/Users/c"):
        assert machine_paths(found), found
    for fine in ("~/.cache/huggingface", "/tmp/run", "src/saexplain/work/x", "https://a.b/home/"):
        assert not machine_paths(fine), fine


def test_no_tracked_file_holds_a_machine_path():
    offenders = {}
    for path in _tracked_files():
        if path.resolve() == Path(__file__).resolve() or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary
            continue
        found = machine_paths(data.decode("utf-8", errors="replace"))
        if found:
            offenders[str(path.relative_to(ROOT))] = found[:3]
    assert not offenders, f"absolute machine paths (use relative ones): {offenders}"


def _distributions() -> list[Path]:
    return [
        ROOT,
        *sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file()),
    ]


@pytest.mark.parametrize("dist", _distributions(), ids=lambda p: p.name)
def test_every_distribution_ships_py_typed(dist):
    pyproject = tomllib.loads((dist / "pyproject.toml").read_text())
    packages = [p for p in (dist / "src").iterdir() if (p / "__init__.py").is_file()]
    assert packages, f"{dist.name}: no package under src/"
    package_data = pyproject.get("tool", {}).get("setuptools", {}).get("package-data", {})
    for package in packages:
        assert (package / "py.typed").is_file(), f"{dist.name}: {package.name}/py.typed missing"
        assert "py.typed" in package_data.get(package.name, []), (
            f"{dist.name}: [tool.setuptools.package-data] {package.name} = ['py.typed'] missing"
        )
