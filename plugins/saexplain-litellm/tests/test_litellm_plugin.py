from importlib.metadata import entry_points

import saexplain_litellm

from saexplain.plugins import PluginManager
from saexplain.testing import check_plugin


def test_entry_point_is_installed():
    eps = {ep.name: ep for ep in entry_points(group="saexplain")}
    assert "litellm" in eps
    assert eps["litellm"].load() is saexplain_litellm


def test_loads_through_entry_point_without_errors():
    manager = PluginManager(builtins=())
    info = {i.name: i for i in manager.info()}["litellm"]
    assert info.state == "loaded", info.error
    assert info.distribution == "saexplain-litellm"
    assert "register_providers" in info.hooks


def test_contract():
    check_plugin(saexplain_litellm, name="litellm-under-test")
