from importlib.metadata import entry_points

import saexplain_embeddings

from saexplain.plugins import PluginManager
from saexplain.testing import check_plugin


def test_entry_point_is_installed():
    eps = {ep.name: ep for ep in entry_points(group="saexplain")}
    assert "embeddings" in eps
    assert eps["embeddings"].load() is saexplain_embeddings


def test_loads_through_entry_point_without_errors():
    manager = PluginManager(builtins=())
    info = {i.name: i for i in manager.info()}["embeddings"]
    assert info.state == "loaded", info.error
    assert info.distribution == "saexplain-embeddings"
    assert "register_scorers" in info.hooks
    assert "embedding" in manager.scorers.names()


def test_contract():
    check_plugin(saexplain_embeddings, name="embeddings-under-test")


def test_import_is_light():
    import subprocess
    import sys

    code = (
        "import saexplain_embeddings, sys; "
        "print('sentence_transformers' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
