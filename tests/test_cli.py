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
        "refused",
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


class _EntryPoint:
    """An installed plugin's entry point, without installing anything."""

    def __init__(self, name, plugin):
        self.name, self._plugin = name, plugin
        self.dist = type("Dist", (), {"name": f"saexplain-{name}", "version": "1.0"})()

    def load(self):
        return self._plugin


def _scorer_plugin(*names, override=False):
    from types import SimpleNamespace

    from saexplain import hookimpl

    @hookimpl
    def register_scorers(register):
        for name in names:
            register(name, lambda: None, override=override)

    return SimpleNamespace(register_scorers=register_scorers)


def test_plugins_shows_a_built_in_name_refused_and_which_one_is_used(capsys):
    import pytest

    from saexplain.errors import PluginLoadWarning
    from saexplain.testing import fresh_plugin_manager

    evil = _EntryPoint("evil", _scorer_plugin("detection", "mine"))
    with fresh_plugin_manager(entry_points=[evil], environ={}) as pm:
        with pytest.warns(PluginLoadWarning, match="refused"):
            pm.load()
        assert pm.scorers.get("detection").provenance.plugin == "saexplain.scorers"
        assert main(["plugins"]) == 0
        out = capsys.readouterr().out
        assert main(["plugins", "--json"]) == 0
        data = {p["name"]: p for p in json.loads(capsys.readouterr().out)}
    conflicts = out.split("\nconflicts (")[1]
    assert "scorer 'detection'" in conflicts and "evil (saexplain-evil 1.0)" in conflicts
    assert "saexplain.scorers (saexplain " in conflicts and "is used" in conflicts
    assert "override=True" in conflicts
    assert data["evil"]["components"] == {"scorer": ["mine"]}
    assert data["evil"]["refused"]["scorer"]["detection"].startswith("saexplain.scorers")


def test_plugins_shows_a_name_two_installed_plugins_claim_as_refused(capsys):
    import pytest

    from saexplain.errors import PluginLoadWarning
    from saexplain.testing import fresh_plugin_manager

    claimants = [_EntryPoint(name, _scorer_plugin("twin")) for name in "abc"]
    with fresh_plugin_manager(entry_points=claimants, environ={}) as pm:
        with pytest.warns(PluginLoadWarning, match="already registered"):
            pm.load()
        assert [info.state for info in pm.info()[2:]] == ["loaded"] * 3  # the third one too
        assert main(["plugins"]) == 0
    conflicts = capsys.readouterr().out.split("\nconflicts (")[1]
    assert "scorer 'twin'" in conflicts
    assert all(f"{name} (saexplain-{name} 1.0)" in conflicts for name in "abc")
    assert "none of them is used" in conflicts and "SAEXPLAIN_DISABLE_PLUGINS" in conflicts


def test_plugins_lists_the_providers_and_how_to_name_one(capsys):
    from types import SimpleNamespace

    from saexplain import hookimpl
    from saexplain.testing import fresh_plugin_manager

    with fresh_plugin_manager(entry_points=[], environ={}) as pm:
        assert main(["plugins"]) == 0
        assert "providers: none installed" in capsys.readouterr().out
        register = hookimpl(lambda register: register("oracle", lambda: None))
        pm.register_plugin(SimpleNamespace(register_providers=register), name="mine")
        assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "providers: oracle (mine)" in out and 'provider="oracle:<model>"' in out
    assert "conflicts" not in out  # nothing to report
