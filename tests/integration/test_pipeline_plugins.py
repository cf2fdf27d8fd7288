"""Pipeline checks that need the real plugins (integration session)."""

import pytest

pytest.importorskip("saexplain_litellm")


def test_missing_api_key_fails_before_heavy_work(tmp_path, monkeypatch):
    from saexplain.errors import ProviderAuthError
    from saexplain.models import RunConfig
    from saexplain.pipeline import prepare

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    cfg = RunConfig(
        model="never-loaded",
        backend="nnsight",
        coder="saelens:release/id",
        dataset="demo",
        explainer_model={"provider": "litellm", "model": "gpt-4o-mini"},
        output_dir=str(tmp_path),
    )
    with pytest.raises(ProviderAuthError, match="OPENAI_API_KEY"):
        prepare(cfg)  # the model is never loaded: the key check comes first


def test_unknown_coder_source_lists_known_ones(tmp_path):
    from saexplain.errors import UnknownComponentError
    from saexplain.models import RunConfig
    from saexplain.pipeline import build_coder
    from saexplain.plugins import get_plugin_manager

    cfg = RunConfig(model="m", coder="nosuch:thing", dataset="demo", output_dir=str(tmp_path))
    with pytest.raises(UnknownComponentError, match="saelens"):
        build_coder(cfg.coder, cfg, get_plugin_manager(), backend=None)  # type: ignore[arg-type]
