"""The classifier scorers' shared flow (detection, fuzzing): shuffle the items with the latent's
own seed, show them `batch_size` per prompt, parse a 0/1 list per batch, and score.

A batch whose call fails or whose answer does not parse turns each of its items into an error
prediction: excluded from every metric and counted (`n_errors`), never scored as an answer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import numpy as np

from saexplain.checks import check_float, check_int
from saexplain.errors import ConfigError, ParseError
from saexplain.metrics import classification_metrics, saebench_accuracy
from saexplain.models import (
    ChatRequest,
    Explanation,
    LatentRecord,
    Message,
    Prediction,
    Score,
    Settings,
    Status,
)
from saexplain.prompts import load_prompt
from saexplain.protocols import MethodContext
from saexplain.scorers._common import (
    Item,
    Outcome,
    call,
    error_score,
    input_error,
    latent_seed,
    one_line_explanation,
    p_one,
    parse_binary,
    select_items,
    token_at_offsets,
    total_usage,
)

FIRST_TOKENS = 3  # answer="first_token" reads at most this many tokens ("[", "1", ...)


class BinaryScorer:
    """Base of detection and fuzzing; subclasses say how an item is shown (`render_items`)."""

    name = "binary"
    default_prompt = ""

    def __init__(
        self,
        *,
        batch_size: int = 5,
        max_activating: int | None = None,
        max_negatives: int | None = None,
        logprobs: bool | None = None,
        top_logprobs: int = 5,
        saebench_threshold: float = 0.01,
        answer: str = "list",
        prompt: str | None = None,
    ) -> None:
        check_int("batch_size", batch_size, low=1)
        if answer not in ("list", "first_token"):
            raise ConfigError(f"answer must be 'list' or 'first_token', got {answer!r}")
        if answer == "first_token" and (batch_size != 1 or logprobs is False):
            raise ConfigError("answer='first_token' needs batch_size=1 and logprobs")
        self.answer = answer
        check_int("max_activating", max_activating, low=1, optional=True)
        check_int("max_negatives", max_negatives, low=1, optional=True)
        if logprobs is not None and not isinstance(logprobs, bool):
            raise ConfigError(f"logprobs must be None (auto), true or false, got {logprobs!r}")
        check_int("top_logprobs", top_logprobs, low=2, high=20)
        check_float("saebench_threshold", saebench_threshold, low=0.0, high=1.0)
        self.batch_size = batch_size
        self.max_activating = max_activating
        self.max_negatives = max_negatives
        self.logprobs = logprobs
        self.top_logprobs = top_logprobs
        self.saebench_threshold = float(saebench_threshold)
        self.prompt = load_prompt(prompt or self.default_prompt)  # ConfigError when missing

    def settings(self) -> Settings:
        return {
            "batch_size": self.batch_size,
            "max_activating": self.max_activating,
            "max_negatives": self.max_negatives,
            "logprobs": self.logprobs,
            "top_logprobs": self.top_logprobs,
            "saebench_threshold": self.saebench_threshold,
            "answer": self.answer,
            "item_index": "scoring_examples+non_activating",  # how Prediction.item maps back
            "prompt": self.prompt.id,
            "prompt_source": self.prompt.source,
        }

    def extra_settings(self) -> Settings:
        return {}

    def render_items(
        self, items: Sequence[Item], rng: np.random.Generator, ctx: MethodContext
    ) -> list[str]:
        """One line of text per item (without the `Example k:` prefix)."""
        raise NotImplementedError

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings: Settings = {**self.settings(), **self.extra_settings()}
        problem = input_error(record, explanation)
        if problem is None and not (record.scoring_examples and record.non_activating):
            problem = (
                f"{self.name} needs activating scoring examples and non-activating examples; "
                f"the record has {len(record.scoring_examples)} and "
                f"{len(record.non_activating)}"
            )
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)

        seed = latent_seed(ctx, record, self.name)
        rng = np.random.default_rng(seed)
        items = select_items(
            record, rng, max_activating=self.max_activating, max_negatives=self.max_negatives
        )
        order = [items[i] for i in rng.permutation(len(items))]
        texts = self.render_items(order, rng, ctx)
        provider = ctx.provider("scorer")
        use_lp = provider.capabilities.logprobs if self.logprobs is None else self.logprobs
        if self.answer == "first_token" and not use_lp:
            return error_score(
                record,
                explanation,
                self.name,
                settings,
                f"answer='first_token' needs logprobs; {provider.model} does not give them",
            )
        top = min(self.top_logprobs, provider.capabilities.max_top_logprobs or self.top_logprobs)
        settings |= {"latent_seed": seed, "logprobs_used": use_lp}

        described = one_line_explanation(explanation)
        batches = [
            list(range(i, min(i + self.batch_size, len(order))))
            for i in range(0, len(order), self.batch_size)
        ]
        requests = [
            self._request(described, [texts[j] for j in batch], use_lp, top) for batch in batches
        ]
        outcomes = await asyncio.gather(*(call(ctx, r) for r in requests))

        predictions: list[Prediction] = []
        for batch, outcome in zip(batches, outcomes, strict=True):
            predictions.extend(self._read(outcome, [order[j] for j in batch], use_lp))
        predictions.sort(key=lambda p: p.item)
        return self._result(record, explanation, items, predictions, outcomes, settings)

    def _request(
        self, explanation: str, texts: Sequence[str], logprobs: bool, top: int
    ) -> ChatRequest:
        examples = "\n".join(f"Example {k}: {t}" for k, t in enumerate(texts, start=1))
        user = self.prompt.render_user(explanation=explanation, examples=examples, n=len(texts))
        return ChatRequest(
            messages=(
                Message(role="system", content=self.prompt.render_system()),
                Message(role="user", content=user),
            ),
            temperature=0.0,
            # first_token: the answer is read from the first token's alternatives alone, which
            # suits small local models that will not keep to a list format
            max_tokens=FIRST_TOKENS if self.answer == "first_token" else 16 + 4 * len(texts),
            logprobs=logprobs,
            top_logprobs=top if logprobs else None,
        )

    def _read(self, outcome: Outcome, items: Sequence[Item], logprobs: bool) -> list[Prediction]:
        def errors(message: str) -> list[Prediction]:
            return [
                Prediction(item=it.index, truth=it.truth, error=message, quantile=it.quantile)
                for it in items
            ]

        if outcome.response is None:
            return errors(outcome.error or "provider call failed")
        choice = outcome.response.choices[0]
        if self.answer == "first_token":
            # the first position with mass on 0 or 1 (an answer may open with "[")
            p = next((q for t in choice.logprobs or () if (q := p_one(t)) is not None), None)
            if p is None:
                return errors("no 0/1 among the first answer tokens' alternatives")
            (it,) = items
            return [
                Prediction(
                    item=it.index,
                    truth=it.truth,
                    predicted=p >= 0.5,
                    probability=p,
                    quantile=it.quantile,
                )
            ]
        try:
            values = parse_binary(choice.text, len(items))
        except ParseError as e:
            return errors(f"ParseError: {e}")
        probs: list[float | None] = [None] * len(items)
        if logprobs and choice.logprobs:
            at = token_at_offsets(choice.logprobs, choice.text, [off for _, off in values])
            probs = [None if i is None else p_one(choice.logprobs[i]) for i in at]
        return [
            Prediction(
                item=it.index,
                truth=it.truth,
                predicted=value,
                probability=prob,
                quantile=it.quantile,
            )
            for it, (value, _), prob in zip(items, values, probs, strict=True)
        ]

    def _result(
        self,
        record: LatentRecord,
        explanation: Explanation,
        items: Sequence[Item],
        predictions: list[Prediction],
        outcomes: Sequence[Outcome],
        settings: Settings,
    ) -> Score:
        metrics: dict[str, float | None] = classification_metrics(predictions)
        by_index = {it.index: it for it in items}
        metrics["accuracy_saebench"] = saebench_accuracy(
            predictions,
            [by_index[p.item].example.max_activation for p in predictions],
            record.stats.max or max((it.example.max_activation for it in items), default=0.0),
            threshold_frac=self.saebench_threshold,
        )
        metrics["n_calls"] = float(len(outcomes))
        metrics["n_failed_calls"] = float(sum(o.response is None for o in outcomes))
        usage = total_usage(outcomes)
        answered = [p for p in predictions if p.predicted is not None]
        if not answered:
            first = next((p.error for p in predictions if p.error), "no answers")
            return Score(
                latent=record.latent,
                scorer=self.name,
                explainer=explanation.explainer,
                status=Status.ERROR,
                error=f"all {len(predictions)} items failed; first error: {first}",
                metrics=metrics,
                predictions=tuple(predictions),
                settings=settings,
                usage=usage,
            )
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            value=metrics["balanced_accuracy"],
            metrics=metrics,
            predictions=tuple(predictions),
            settings=settings,
            usage=usage,
        )
