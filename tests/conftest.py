import pytest

from saexplain.testing import isolated_cache, set_offline_env

set_offline_env()  # no network in tests (DESIGN.md section 4)


@pytest.fixture(autouse=True)
def _isolated_response_cache(tmp_path_factory, monkeypatch):
    """Every provider a run builds caches its responses: each test gets its own cache, so
    nothing is replayed from another test (or from the user's cache)."""
    cache = isolated_cache(tmp_path_factory.mktemp("saexplain-cache"))
    monkeypatch.setenv("SAEXPLAIN_CACHE_DIR", str(cache))
    monkeypatch.delenv("SAEXPLAIN_NO_CACHE", raising=False)
