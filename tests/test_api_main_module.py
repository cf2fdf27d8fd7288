"""`python -m saexplain` is the `saexplain` command."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_saexplain_runs_the_command():
    out = subprocess.run(
        [sys.executable, "-m", "saexplain", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("saexplain ")
    usage = subprocess.run(
        [sys.executable, "-m", "saexplain", "--help"], capture_output=True, text=True, timeout=60
    )
    assert usage.returncode == 0 and "usage: saexplain" in usage.stdout and "score" in usage.stdout
