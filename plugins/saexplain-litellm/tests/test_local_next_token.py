"""Greedy one-token requests (the binary scorers' prefilled digits) take a fast path: one forward
pass with the prompts' shared prefix computed once. It must answer exactly as `generate` does."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from saexplain_litellm.local import (
    MIN_SHARED_PREFIX,
    LocalProvider,
    _common_prefix,
)
from test_local_model_layout import write_tiny_gguf

from saexplain.models import ChatRequest, Message

SYSTEM = "abcabcabc bca cab abc cba " * 3  # long enough to be shared (>= 16 tokens)


def requests() -> list[ChatRequest]:
    users = ["a", "bb cc", "abcab cab", "c"]  # different lengths: the tails are padded
    return [
        ChatRequest(
            messages=(Message(role="system", content=SYSTEM), Message(role="user", content=u)),
            max_tokens=1,
            temperature=0.0,
            logprobs=True,
            top_logprobs=3,
            prefill="ab",
        )
        for u in users
    ]


def test_common_prefix_keeps_a_token_in_every_row():
    assert _common_prefix([[1, 2, 3], [1, 2, 4]], keep=1) == 2
    assert _common_prefix([[1, 2], [1, 2, 3]], keep=1) == 1
    assert _common_prefix([[5], [6]], keep=1) == 0
    assert _common_prefix([], keep=1) == 0


def test_the_shared_prefix_path_answers_as_generate_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path))
    gguf = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf, tied=True)
    engine = LocalProvider(str(gguf)).engine
    engine.load()
    batch = requests()
    ids = [engine.tokenizer(engine.render(r), add_special_tokens=False)["input_ids"] for r in batch]
    assert _common_prefix(ids, keep=1) >= MIN_SHARED_PREFIX  # the shared path is what is tested
    fast = engine._next_token(batch)
    slow = engine._generate(batch, 0.0, None)
    calls = []
    original = engine._next_token
    monkeypatch.setattr(engine, "_next_token", lambda b: calls.append(len(b)) or original(b))
    engine.run(batch)
    assert calls == [len(batch)]  # run() takes the fast path for these requests
    for a, b in zip(fast, slow, strict=True):
        (ca,), (cb,) = a.choices, b.choices
        assert (ca.text, ca.finish_reason) == (cb.text, cb.finish_reason)
        assert a.usage.prompt_tokens == b.usage.prompt_tokens
        assert ca.logprobs is not None and cb.logprobs is not None
        assert [t.token for t in ca.logprobs] == [t.token for t in cb.logprobs]
        for x, y in zip(ca.logprobs, cb.logprobs, strict=True):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)
            assert [t for t, _ in x.top] == [t for t, _ in y.top]
            assert [v for _, v in x.top] == pytest.approx([v for _, v in y.top], abs=1e-4)
