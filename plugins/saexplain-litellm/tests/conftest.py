import pytest

from saexplain.testing import isolated_cache, set_offline_env

# No network in tests (DESIGN.md section 4); set before litellm / transformers are imported.
set_offline_env()


@pytest.fixture(autouse=True)
def _isolated_response_cache(tmp_path_factory, monkeypatch):
    """Tests never read or write the user's response cache."""
    cache = isolated_cache(tmp_path_factory.mktemp("saexplain-cache"))
    monkeypatch.setenv("SAEXPLAIN_CACHE_DIR", str(cache))
