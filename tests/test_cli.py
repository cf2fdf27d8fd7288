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
        "descriptions",
        "overrides",
        "overridden_by",
        "error",
        "hint",
    }
    assert by_name["saexplain.scorers"]["descriptions"]["scorer"]["detection"]


def test_plugins_table(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "saexplain.scorers  [loaded]" in out and "failed to load" in out


def test_plugins_table_shows_descriptions_and_overrides(capsys):
    from saexplain import hookimpl
    from saexplain.testing import fresh_plugin_manager

    class Mine:
        @hookimpl
        def register_scorers(self, register):
            register("detection", lambda: None, description="my detection", override=True)

    with fresh_plugin_manager(entry_points=[]) as pm:
        pm.register_plugin(Mine(), name="mine")
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    builtin, mine = out.split("mine  [loaded]")
    assert "(overridden by mine)" in builtin and "Balanced accuracy" in builtin
    assert "detection  my detection (overrides saexplain.scorers (saexplain " in mine


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


def test_options_are_accepted_anywhere_also_after_the_overrides():
    from saexplain.cli import parse_args

    for argv in (
        ["run", "run.yaml", "-q", "latents.sample=2", "seed=1"],
        ["run", "run.yaml", "latents.sample=2", "-q", "seed=1"],
        ["run", "run.yaml", "latents.sample=2", "seed=1", "-q"],
        ["run", "-q", "run.yaml", "latents.sample=2", "seed=1"],
    ):
        args = parse_args(argv)
        assert args.quiet and args.config == "run.yaml", argv
        assert args.overrides == ["latents.sample=2", "seed=1"], argv
    args = parse_args(["estimate", "run.yaml", "a=1", "--json", "--latents", "3", "b=2", "-q"])
    assert (args.json, args.latents, args.quiet, args.overrides) == (True, 3, True, ["a=1", "b=2"])


def test_unknown_options_are_still_rejected(capsys):
    import pytest

    from saexplain.cli import parse_args

    for argv in (["run", "run.yaml", "a=1", "--bogus"], ["show", "runs/x", "extra"]):
        with pytest.raises(SystemExit) as info:
            parse_args(argv)
        assert info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err
