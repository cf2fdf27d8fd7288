"""A tiny world for pipeline and executor tests: a fake model, planted latents, toy methods and
LLM doubles (numpy only: the core test session has no torch).

Latent i fires on WORDS[i]. The toy explainer asks the provider for the highlighted word; the toy
scorer asks the provider, per example, whether the explanation's word occurs in it. `Stack` makes
the world loadable by name (backend `toyfake`, coder source `toyplanted`, provider `toyllm`), as
`saexplain run CONFIG` and an executor's workers need.

It lives in the package (not under tests/) so that the worker processes of a Ray cluster can
import it: a method, provider or plugin of this module travels to them by reference.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

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
from saexplain.testing.data import synthetic_corpus
from saexplain.testing.fakes import FakeBackend, PlantedValuesCoder
from saexplain.testing.providers import ScriptedProvider

__all__ = [
    "N_SCORED",
    "VOCAB",
    "WIDE_WORDS",
    "WORDS",
    "KillingProvider",
    "PricedProvider",
    "Stack",
    "ToyBackend",
    "ToyExplainer",
    "ToyScorer",
    "answer",
    "llm",
    "planted_coder",
    "row_digest",
    "world",
]

WORDS = {1: "cat", 2: "dog", 3: "bird", 5: "tree", 7: "house"}
# two more planted latents (the Ray executor's tests use them)
WIDE_WORDS = {**WORDS, 8: "mat", 9: "red"}
VOCAB = ["cat", "dog", "bird", "tree", "house", "sat", "on", "the", "mat", "ran", "far", "red"]
N_SCORED = 4  # examples of each kind a toy score asks about


def planted_coder(
    backend: FakeBackend, words: Mapping[int, str] = WORDS, *, id: str | None = None
) -> PlantedValuesCoder:
    """A 12-latent coder where latent i fires (value 1.0) on the token of ` words[i]`."""
    values = {i: {f" {w}": 1.0} for i, w in words.items()}
    return PlantedValuesCoder(backend, values, d_sae=12, id=id)


def world(
    seed: int = 0, words: Mapping[int, str] = WORDS
) -> tuple[FakeBackend, PlantedValuesCoder, list[str]]:
    """The fake model, its planted coder and a 300-document corpus over `VOCAB`."""
    backend = ToyBackend(seed=seed)
    texts = synthetic_corpus(300, seed=seed, vocab=VOCAB, min_words=8, max_words=40)
    return backend, planted_coder(backend, words), texts


class ToyExplainer:
    name = "toy"
    needs = Needs(provider=True)

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
    needs = Needs(provider=True)

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        items = [(e, True) for e in record.scoring_examples[:N_SCORED]]
        items += [(e, False) for e in record.non_activating[:N_SCORED]]
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
    """The highlighted word for an explanation; for a score, whether the word is in the text."""
    text = request.messages[-1].content
    if text.startswith("EXPLAIN"):
        words = Counter(w.strip().lower() for w in re.findall(r"<<(.*?)>>", text))
        return f"the word {words.most_common(1)[0][0]}" if words else "nothing"
    first, _, example = text.partition("\n")
    word = first.split()[-1]
    return "1" if re.search(rf"\b{re.escape(word)}\b", example) else "0"


def llm(latency_s: float = 0.0) -> ScriptedProvider:
    """The deterministic LLM double of the toy world."""
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


class ToyBackend(FakeBackend):
    """The world's fake model (`world(seed)[0]`), its vocabulary (`VOCAB`) known from the start,
    with two test hooks for collection batches
    (calls of `latent_acts` on more than one row; the pipeline's two-token check is one row):

    - `log_batches`: append one line per batch to this file: the process id and a digest of
      each row's token ids (which contexts a process ran, how often);
    - `die_once`: a marker file; the process that creates it (atomically: one process only)
      at its `die_after`-th batch exits at once with `os._exit`, no clean-up, as a killed worker;
    - `batch_seconds`: sleep this long per batch, as a real model's forward pass takes time.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        die_once: Path | None = None,
        die_after: int = 3,
        log_batches: Path | None = None,
        batch_seconds: float = 0.0,
    ) -> None:
        super().__init__(d_model=16, n_layers=2, vocab_size=256, seed=seed)
        self.batch_seconds = batch_seconds
        # a fixed vocabulary, as a real tokenizer has: the fake assigns ids on first sight, so
        # a process that tokenized other texts first would otherwise give the corpus other ids
        # (an executor's worker collects with its own copy of the model)
        self.tokenize([*VOCAB, *(f" {w}" for w in VOCAB)], prepend_bos=False)
        self.die_once = die_once
        self.die_after = die_after
        self.log_batches = log_batches
        self.batches = 0

    def latent_acts(self, tokens: Any, coders: Any, **kwargs: Any) -> Any:
        ids = np.asarray(tokens.ids)
        if len(ids) > 1:
            self.batches += 1
            if self.die_once is not None and self.batches == self.die_after:
                try:
                    fd = os.open(self.die_once, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass  # another process (or an earlier attempt) died already
                else:
                    os.write(fd, str(os.getpid()).encode())
                    os.close(fd)
                    os._exit(1)
            if self.batch_seconds:
                time.sleep(self.batch_seconds)
            if self.log_batches is not None:
                digests = " ".join(row_digest(r) for r in ids)
                with open(self.log_batches, "a") as f:
                    f.write(f"{os.getpid()} {digests}\n")
        return super().latent_acts(tokens, coders, **kwargs)


def row_digest(row: Any) -> str:
    """A short digest of one context's token ids (`ToyBackend.log_batches`)."""
    data = np.ascontiguousarray(np.asarray(row, dtype=np.int64)).tobytes()
    return hashlib.blake2b(data, digest_size=6).hexdigest()


class Stack:
    """A plugin that makes the toy world loadable by name, as `saexplain run CONFIG` needs:
    backend `toyfake` (setting `seed`), coder source `toyplanted` (spec `all`, or `wide` for
    `WIDE_WORDS`; setting `id` names the coder, for runs of several coders), provider
    `toyllm` and dataset `toycorpus` (the world's corpus). The backend's settings `die_once`,
    `die_after`, `log_batches` and `batch_seconds` are those of `ToyBackend` (the Ray
    collection tests kill a worker mid-slice with them)."""

    @saexplain.hookimpl
    def register_backends(self, register: Register) -> None:
        def toyfake(
            model: object,
            *,
            seed: int = 0,
            die_once: str | None = None,
            die_after: int = 3,
            log_batches: str | None = None,
            batch_seconds: float = 0.0,
        ) -> FakeBackend:
            return ToyBackend(
                seed=seed,
                die_once=None if die_once is None else Path(die_once),
                die_after=die_after,
                log_batches=None if log_batches is None else Path(log_batches),
                batch_seconds=batch_seconds,
            )

        register("toyfake", toyfake)

    @saexplain.hookimpl
    def register_coders(self, register: Register) -> None:
        def planted(
            spec: str, *, backend: FakeBackend | None = None, id: str | None = None
        ) -> PlantedValuesCoder:
            assert backend is not None
            return planted_coder(backend, WIDE_WORDS if spec == "wide" else WORDS, id=id)

        register("toyplanted", planted)

    @saexplain.hookimpl
    def register_providers(self, register: Register) -> None:
        register("toyllm", lambda model, **settings: llm())

    @saexplain.hookimpl
    def register_datasets(self, register: Register) -> None:
        register("toycorpus", lambda: world()[2])
