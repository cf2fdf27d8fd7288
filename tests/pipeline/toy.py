"""A tiny world for pipeline tests: a fake model, planted latents, toy methods and an LLM double.

Latent i fires on WORDS[i]. The toy explainer asks the provider for the highlighted word; the toy
scorer asks the provider, per example, whether the explanation's word occurs in it.
"""

from __future__ import annotations

import re
from collections import Counter

import saexplain
from saexplain.hookspecs import Register
from saexplain.models import (
    ChatRequest,
    Explanation,
    LatentRecord,
    Message,
    Prediction,
    Score,
)
from saexplain.protocols import MethodContext
from saexplain.render import render_example
from saexplain.testing import FakeBackend, PlantedValuesCoder, ScriptedProvider, synthetic_corpus

WORDS = {1: "cat", 2: "dog", 3: "bird", 5: "tree", 7: "house"}
VOCAB = ["cat", "dog", "bird", "tree", "house", "sat", "on", "the", "mat", "ran", "far", "red"]


def world(seed: int = 0) -> tuple[FakeBackend, PlantedValuesCoder, list[str]]:
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256, seed=seed)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in WORDS.items()}, d_sae=12)
    texts = synthetic_corpus(300, seed=seed, vocab=VOCAB, min_words=8, max_words=40)
    return backend, coder, texts


class ToyExplainer:
    name = "toy"

    def __init__(self, n_examples: int = 5) -> None:
        if n_examples < 1:
            raise ValueError("n_examples must be >= 1")
        self.n_examples = n_examples

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        shown = "\n".join(render_example(e) for e in record.explanation_examples[: self.n_examples])
        request = ChatRequest(messages=(Message(role="user", content=f"EXPLAIN\n{shown}"),))
        response = await ctx.provider("explainer").complete(request)
        return Explanation(
            latent=record.latent,
            explainer=self.name,
            text=response.choices[0].text.strip(),
            usage=response.usage,
        )


class ToyScorer:
    name = "toyscore"

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        items = [(e, True) for e in record.scoring_examples[:4]]
        items += [(e, False) for e in record.non_activating[:4]]
        predictions = []
        for i, (example, truth) in enumerate(items):
            text = "".join(example.str_tokens)
            request = ChatRequest(
                messages=(Message(role="user", content=f"SCORE {explanation.text}\n{text}"),)
            )
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
    text = request.messages[-1].content
    if text.startswith("EXPLAIN"):
        words = Counter(w.strip().lower() for w in re.findall(r"<<(.*?)>>", text))
        return f"the word {words.most_common(1)[0][0]}" if words else "nothing"
    first, _, example = text.partition("\n")
    word = first.split()[-1]
    return "1" if re.search(rf"\b{re.escape(word)}\b", example) else "0"


def llm(latency_s: float = 0.0) -> ScriptedProvider:
    return ScriptedProvider(answer, latency_s=latency_s, cost_per_token=1e-6)


class Stack:
    """A plugin that makes the toy world loadable by name, as `saexplain run CONFIG` needs."""

    @saexplain.hookimpl
    def register_backends(self, register: Register) -> None:
        register("toyfake", lambda model, **settings: world()[0])

    @saexplain.hookimpl
    def register_coders(self, register: Register) -> None:
        def planted(spec: str, *, backend: FakeBackend | None = None) -> PlantedValuesCoder:
            assert backend is not None
            words = {i: {f" {w}": 1.0} for i, w in WORDS.items()}
            return PlantedValuesCoder(backend, words, d_sae=12)

        register("toyplanted", planted)

    @saexplain.hookimpl
    def register_providers(self, register: Register) -> None:
        register("toyllm", lambda model, **settings: llm())
