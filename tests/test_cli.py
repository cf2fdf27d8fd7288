import json
import subprocess
import sys

from saexplain.cli import main


def test_plugins_json_lists_builtins(capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in data}
    assert by_name["saexplain.explainers"]["state"] == "loaded"
    assert set(data[0]) == {
        "name",
        "source",
        "state",
        "distribution",
        "version",
        "hooks",
        "components",
        "error",
        "hint",
    }


def test_plugins_table(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "saexplain.scorers  [loaded]" in out and "failed to load" in out


def test_console_script_help_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "saexplain.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "plugins" in out.stdout
    out = subprocess.run(
        [sys.executable, "-m", "saexplain.cli", "--version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.startswith("saexplain ")


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert "usage: saexplain" in capsys.readouterr().out
