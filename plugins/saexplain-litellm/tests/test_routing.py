"""A model string litellm cannot route fails while the run is prepared (`check_ready`), not as
100% errors after the whole pipeline ran."""

from __future__ import annotations

import pytest
from saexplain_litellm.litellm_provider import LiteLLMProvider

from saexplain.errors import ConfigError
from saexplain.models import RunConfig
from saexplain.plugins import PluginManager
from saexplain.providers.build import build_providers


def test_an_unroutable_model_is_a_config_error_naming_it_and_the_fix(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    with pytest.raises(ConfigError) as info:
        LiteLLMProvider("gpt4o-mini-typo").check_ready()
    text = str(info.value)
    assert "'gpt4o-mini-typo'" in text and "openai/gpt4o-mini-typo" in text
    assert "custom_llm_provider" in text and "\n" not in text
    # the mock routes like a real call: a typo fails there too
    with pytest.raises(ConfigError):
        LiteLLMProvider("gpt4o-mini-typo", mock_response="hi").check_ready()


@pytest.mark.parametrize(
    ("model", "settings"),
    [
        ("gpt-4o-mini", {}),
        ("hosted_vllm/my-model", {"api_base": "http://127.0.0.1:9/v1"}),
        ("my-model", {"params": {"custom_llm_provider": "openai"}}),
        ("my-model", {"api_base": "http://127.0.0.1:9/v1", "direct_http": True}),
    ],
)
def test_routable_models_pass(monkeypatch, model, settings):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    LiteLLMProvider(model, **settings).check_ready()


def test_prepare_refuses_an_unroutable_scorer_model(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    config = RunConfig(
        model="m",
        coder="c",
        dataset="d",
        explainer_model={"model": "gpt-4o-mini"},
        scorer_model={"model": "not-a-routable-model"},
    )
    scorer = object()  # a method that declares no `needs` is assumed to need an LLM
    with pytest.raises(ConfigError, match="not-a-routable-model"):
        build_providers(config, PluginManager(), {}, {"detection": scorer})
