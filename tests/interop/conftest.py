"""The synthetic run of tests/report (planted latents, hostile text) for the interop tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.report.conftest import Run, build_run

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def run() -> Run:
    return build_run()


@pytest.fixture
def run_dir(tmp_path: Path, run: Run) -> Path:
    return run.write(tmp_path / "run")
