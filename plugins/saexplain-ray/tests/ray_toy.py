"""A tiny world for the Ray executor's tests: a fake model with planted latents, a toy explainer
and scorer (one LLM call per explanation, one per scored example), and LLM doubles: the
deterministic scripted one, one with a fixed price per call, one that kills its worker once.

Shipped to the workers by value (`ray.cloudpickle.register_pickle_by_value`): they cannot import
a test module.
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from pathlib import Path

import saexplain
from saexplain.hookspecs import Register
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    Explanation,
    LatentRecord,
    Message,
    Prediction,
    Score,
    Usage,
)
from saexplain.protocols import MethodContext, Needs, ProviderCapabilities
from saexplain.render import render_example
from saexplain.testing import FakeBackend, PlantedValuesCoder, ScriptedProvider, synthetic_corpus

WORDS = {1: "cat", 2: "dog", 3: "bird", 5: "tree", 7: "house", 8: "mat", 9: "red"}
VOCAB = ["cat", "dog", "bird", "tree", "house", "sat", "on", "the", "mat", "ran", "far", "red"]
N_SCORED = 4  # examples of each kind a toy score asks about


def world() -> tuple[FakeBackend, PlantedValuesCoder, list[str]]:
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in WORDS.items()}, d_sae=12)
    texts = synthetic_corpus(300, seed=0, vocab=VOCAB, min_words=8, max_words=40)
    return backend, coder, texts


class ToyExplainer:
    name = "toy"
    needs = Needs(provider=True)

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        shown = "\n".join(render_example(e) for e in record.explanation_examples[:5])
        request = ChatRequest(messages=(Message(role="user", content=f"EXPLAIN\n{shown}"),))
        response = await ctx.provider("explainer").complete(request)
        text = response.choices[0].text.strip()
        return Explanation(
            latent=record.latent, explainer=self.name, text=text, usage=response.usage
        )


class ToyScorer:
    name = "toyscore"
    needs = Needs(provider=True)

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        items = [(e, True) for e in record.scoring_examples[:N_SCORED]]
        items += [(e, False) for e in record.non_activating[:N_SCORED]]
        predictions = []
        for i, (example, truth) in enumerate(items):
            text = "".join(example.str_tokens)
            content = f"SCORE {explanation.text}\n{text}"
            request = ChatRequest(messages=(Message(role="user", content=content),))
            answer = (await ctx.provider("scorer").complete(request)).choices[0].text
            predictions.append(Prediction(item=i, truth=truth, predicted=answer == "1"))
        correct = [p.predicted == p.truth for p in predictions]
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            value=sum(correct) / len(correct),
            predictions=tuple(predictions),
        )


@saexplain.hookimpl
def register_explainers(register: Register) -> None:
    register("toy", ToyExplainer)


@saexplain.hookimpl
def register_scorers(register: Register) -> None:
    register("toyscore", ToyScorer)


def answer(request: ChatRequest) -> str:
    """The highlighted word for an explanation; for a score, whether the word is in the text."""
    text = request.messages[-1].content
    if text.startswith("EXPLAIN"):
        words = Counter(w.strip().lower() for w in re.findall(r"<<(.*?)>>", text))
        return f"the word {words.most_common(1)[0][0]}" if words else "nothing"
    first, _, example = text.partition("\n")
    word = first.split()[-1]
    return "1" if re.search(rf"\b{re.escape(word)}\b", example) else "0"


def llm(latency_s: float = 0.0) -> ScriptedProvider:
    return ScriptedProvider(answer, latency_s=latency_s, cost_per_token=1e-6)


class PricedProvider:
    """`answer`, at a fixed price per call, after `latency_s`."""

    name = "priced"
    model = "priced"
    capabilities = ProviderCapabilities()

    def __init__(self, cost_usd: float, latency_s: float = 0.0) -> None:
        self.cost_usd = cost_usd
        self.latency_s = latency_s

    async def complete(self, request: ChatRequest) -> ChatResponse:
        import asyncio

        await asyncio.sleep(self.latency_s)
        usage = Usage(prompt_tokens=1, completion_tokens=1, cost_usd=self.cost_usd, calls=1)
        choice = Choice(text=answer(request), finish_reason="stop")
        return ChatResponse(model=self.model, choices=(choice,), usage=usage)


class KillingProvider(PricedProvider):
    """Kills its own worker process (SIGKILL, no clean-up) at its `at`-th call, once per run:
    `flag` records that it happened, so the restarted worker answers normally."""

    def __init__(self, flag: Path, at: int, latency_s: float) -> None:
        super().__init__(0.0, latency_s)
        self.flag = flag
        self.at = at
        self.calls = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        if self.calls == self.at and not self.flag.exists():
            self.flag.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return await super().complete(request)
