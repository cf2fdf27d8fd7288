from pathlib import Path

import pytest

from saexplain.errors import ConfigError
from saexplain.prompts import bundled_prompts, load_prompt


def test_user_prompt_file_loads_and_fills(tmp_path: Path):
    f = tmp_path / "mine.toml"
    f.write_text('version = 3\nsystem = "You are $who."\nuser = "Say {json} $x"\n[shots]\na = 1\n')
    p = load_prompt(f)
    assert p.id == "mine@3"
    assert p.render_system(who="terse") == "You are terse."
    assert p.render_user(x="hi") == "Say {json} hi"
    assert p.data == {"shots": {"a": 1}}
    with pytest.raises(ConfigError, match=r"\$x"):
        p.render_user()


def test_bad_prompts_raise_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="no bundled prompt"):
        load_prompt("no-such-prompt")
    with pytest.raises(ConfigError, match="does not exist"):
        load_prompt(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\nsystem = "s"\n')
    with pytest.raises(ConfigError, match="lacks"):
        load_prompt(bad)


def test_every_bundled_prompt_is_well_formed():
    for name in bundled_prompts():
        p = load_prompt(name)
        assert p.version >= 1 and p.user, name  # a subject-model prompt may have no system
