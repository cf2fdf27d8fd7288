"""Optional capabilities are declared protocols, checked with isinstance."""

from __future__ import annotations

import asyncio

from saexplain.estimate import CountingProvider
from saexplain.models import ChatRequest, Message
from saexplain.protocols import (
    LEGACY_NEEDS,
    ChatTemplating,
    CostEstimator,
    Needs,
    ProbeAndGenerate,
    ReadinessCheck,
    TokenCounter,
    Transcoder,
    needs_of,
    write_hook,
)
from saexplain.providers.layers import ProviderLayer
from saexplain.testing import FakeBackend, FakeCoder, ScriptedProvider


def test_a_transcoder_writes_at_hook_out():
    coder = FakeCoder.random(8, 4, hook="blocks.0.hook_resid_pre")
    assert not isinstance(coder, Transcoder) and write_hook(coder) == "blocks.0.hook_resid_pre"
    coder.hook_out = "blocks.0.hook_mlp_out"  # type: ignore[attr-defined]
    assert isinstance(coder, Transcoder) and write_hook(coder) == "blocks.0.hook_mlp_out"


def test_needs_are_read_from_a_declared_needs_attribute():
    class Declared:
        needs = Needs(provider=True)

    class Odd:
        needs = "provider"  # not a Needs: treated as undeclared

    assert needs_of(Declared()) == Needs(provider=True)
    assert needs_of(Odd()) == LEGACY_NEEDS and needs_of(object()) == LEGACY_NEEDS


def test_provider_capabilities():
    class Priced(ScriptedProvider):
        def count_tokens(self, text: str) -> int:
            return len(text.split())

        def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
            return 0.5 * (prompt_tokens + completion_tokens)

        def check_ready(self) -> None:
            pass

    plain, priced = ScriptedProvider(lambda r: "x"), Priced(lambda r: "x")
    for capability in (TokenCounter, CostEstimator, ReadinessCheck):
        assert isinstance(priced, capability) and not isinstance(plain, capability)
    request = ChatRequest(messages=(Message(role="user", content="one two three four five"),))
    for real in (priced, ProviderLayer(ProviderLayer(priced))):  # bare, and under middleware
        counted = CountingProvider(real)
        asyncio.run(counted.complete(request))
        assert sum(c.prompt_tokens for c in counted.counts.values()) == 5  # its tokenizer


def test_fake_backend_has_no_chat_template_nor_fused_probe():
    backend = FakeBackend()
    assert not isinstance(backend, ChatTemplating) and not isinstance(backend, ProbeAndGenerate)
