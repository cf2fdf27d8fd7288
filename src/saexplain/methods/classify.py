"""The binary-classification scorer base (detection and fuzzing are built on it): shuffle the
held-out items with the latent's own seed, show them `batch_size` per prompt, parse a 0/1 list
per batch, and score with balanced accuracy (AUROC from logprobs when the provider gives them).

How the answer is read (`answer`): `"list"` parses a 0/1 list per batch; `"first_token"` and
`"prefill"` show one item per call and read P(1) vs P(0) from the answer token's logprobs (the
probability is kept, for AUROC). `"prefill"` writes the start of the reply for the model (the
prompt's `prefill`, e.g. `"Answer:"`, as `ChatRequest.prefill`), so the very next token is the
digit: small local models that open with prose ("The example...") still answer. `"auto"` (the
default) is `"prefill"` on a provider that can continue a prefilled reply
(`ProviderCapabilities.prefill`) and gives logprobs (the local provider), `"list"` elsewhere. A
call that shows one item uses the prompt's one-item wording (`single_system`, `single_user`),
never "a list of 1".

A subclass sets `name` and `default_prompt` and says how an item is shown (`render_items`); it
may limit the negatives it shows to some kinds (`negative_kinds`, e.g. neighbour contexts only).
Predictions keep the record's item index (scoring examples, then all non-activating examples)
either way, so reports map them back.

A score whose answered predictions are all the same ("yes" to everything, or "no") says so in
`evidence["constant_predictions"]` (`"yes"` or `"no"`): such a balanced accuracy reads 0.5 because
the scorer model did not discriminate, not because the explanation is half right. The run lists
these scores in `flags.json` and counts them in the summary.

A batch whose call fails or whose answer does not parse turns each of its items into an error
prediction: excluded from every metric and counted (`n_errors`), never scored as an answer. Such
a score is partial (`Score.partial`): a resumed run scores it again; all items failing is an
`error` score.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field, JsonValue, model_validator

from saexplain.errors import ConfigError, ParseError
from saexplain.methods.items import Item, draw_items, error_score, final_score, input_error
from saexplain.methods.llm import Outcome, call, total_usage
from saexplain.methods.parsing import p_one, parse_binary, token_at_offsets
from saexplain.methods.settings import MethodSettings
from saexplain.methods.text import one_line_explanation
from saexplain.metrics import classification_metrics, saebench_accuracy
from saexplain.models import (
    ChatRequest,
    ExampleKind,
    Explanation,
    LatentRecord,
    Message,
    Prediction,
    Score,
)
from saexplain.prompts import load_prompt
from saexplain.protocols import MethodContext, Needs, Provider
from saexplain.providers.cache import discard_cached

__all__ = ["FIRST_TOKENS", "BinaryScorer"]

FIRST_TOKENS = 3  # answer="first_token" reads at most this many tokens ("[", "1", ...)
AnswerMode = Literal["list", "first_token", "prefill"]


def _fill_prompt(template: str, values: dict[str, str], where: str) -> str:
    """`template` with its `$name` fields filled (a prompt file's extra templates)."""
    try:
        return Template(template).substitute(values)
    except KeyError as e:
        raise ConfigError(f"prompt {where} needs a value for ${e.args[0]}") from e


def _constant_answer(predictions: Sequence[Prediction]) -> bool | None:
    """The one answer every answered prediction gave (True: all "yes", False: all "no"), or
    None when the answers differ or fewer than two items were answered (errors are ignored)."""
    answers = {p.predicted for p in predictions if p.predicted is not None}
    n_answered = sum(p.predicted is not None for p in predictions)
    if n_answered < 2 or len(answers) != 1:
        return None
    return answers.pop()


class BinaryScorer:
    """Base of detection and fuzzing; subclasses say how an item is shown (`render_items`) and
    may add settings (`class Settings(BinaryScorer.Settings)`)."""

    class Settings(MethodSettings):
        """The settings of every binary-classification scorer."""

        batch_size: int = Field(
            5,
            ge=1,
            description="contexts per prompt in list mode (EleutherAI's choice); "
            '`"first_token"` and `"prefill"` show one per prompt',
        )
        max_activating: int | None = Field(
            None,
            ge=1,
            description="a random subset of the activating scoring examples; `None`: all",
        )
        max_negatives: int | None = Field(
            None, ge=1, description="a random subset of the non-activating examples; `None`: all"
        )
        logprobs: bool | None = Field(
            None,
            description="ask for logprobs: `None` when the provider offers them, or force "
            "`True`/`False`",
        )
        top_logprobs: int = Field(
            5, ge=2, le=20, description="alternatives per answer token (capped by the provider)"
        )
        saebench_threshold: float = Field(
            0.01,
            ge=0.0,
            le=1.0,
            description="the activation fraction SAEBench counts as active (see below)",
        )
        answer: Literal["auto", "list", "first_token", "prefill"] = Field(
            "auto",
            description='`"list"`: a 0/1 list per prompt; `"first_token"`: one example per '
            "prompt, the prediction is P(1) vs P(0) among the alternatives at the first answer "
            'token that has mass on either (needs `batch_size=1` and logprobs); `"prefill"`: one '
            "example per prompt, the reply is prefilled up to the digit (the prompt's `prefill`) "
            "and P(1) vs P(0) is read at the next token (the digit's text without logprobs; needs "
            'a provider that continues a prefilled reply); `"auto"`: `"prefill"` where the '
            'provider can and gives logprobs, else `"list"`',
        )
        prompt: str | Path | None = Field(
            None,
            description="a bundled prompt name or a path to a TOML prompt of the same shape; "
            "`None`: the scorer's own",
        )

        @model_validator(mode="after")
        def _first_token_needs_one_logprob_answer(self) -> Self:
            if self.answer == "first_token" and (self.batch_size != 1 or self.logprobs is False):
                raise ValueError("answer='first_token' needs batch_size=1 and logprobs")
            return self

    name = "binary"
    default_prompt = ""
    needs: ClassVar[Needs] = Needs(provider=True)
    # the kinds of `record.non_activating` examples shown; None: every kind the record holds
    negative_kinds: ClassVar[frozenset[ExampleKind] | None] = None
    settings: Settings

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        # a ConfigError when the prompt file is missing
        self.prompt = load_prompt(self.settings.prompt or self.default_prompt)

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, the prompt by `name@version`, and how items map back."""
        return self.settings.model_dump(mode="json") | {
            "item_index": "scoring_examples+non_activating",  # how Prediction.item maps back
            "prompt": self.prompt.id,
            "prompt_source": self.prompt.source,
        }

    def render_items(
        self, items: Sequence[Item], rng: np.random.Generator, ctx: MethodContext
    ) -> list[str]:
        """One line of text per item (without the `Example k:` prefix)."""
        raise NotImplementedError

    def answer_mode(self, provider: Provider) -> AnswerMode:
        """How answers are read with `provider`: the `answer` setting, `"auto"` resolved."""
        if self.settings.answer != "auto":
            return self.settings.answer
        caps = provider.capabilities
        # one call per item pays off when the digit's probability is read (AUROC, no parsing);
        # a provider that prefills without logprobs (Anthropic) keeps the cheaper batched lists
        return (
            "prefill"
            if caps.prefill and caps.logprobs and self.settings.logprobs is not False
            else "list"
        )

    def preflight(self, ctx: MethodContext) -> None:
        """Before the run: `answer="prefill"` needs a provider that continues a prefilled reply
        and a prompt that says where the reply starts."""
        if self.settings.answer != "prefill":
            return
        provider = ctx.provider("scorer")
        if not provider.capabilities.prefill:
            raise ConfigError(
                f"{self.name}: answer='prefill' needs a provider that continues a prefilled "
                f"reply; {provider.model} does not (use answer='list' or 'auto', or the local "
                "provider)"
            )
        self._prefill_text()

    def _prefill_text(self) -> str:
        text = self.prompt.data.get("prefill")
        if not isinstance(text, str) or not text:
            raise ConfigError(
                f"{self.name}: answer='prefill' needs a `prefill` string in prompt {self.prompt.id}"
            )
        return text

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.recorded_settings()
        shown = self.shown_negatives(record)
        problem = input_error(record, explanation)
        if problem is None and not (record.scoring_examples and shown):
            problem = (
                f"{self.name} needs activating scoring examples and non-activating examples; "
                f"the record has {len(record.scoring_examples)} and {len(shown)}"
            )
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)

        seed, rng, items = self._draw(record, shown, ctx)
        order = [items[i] for i in rng.permutation(len(items))]
        texts = self.render_items(order, rng, ctx)
        provider = ctx.provider("scorer")
        mode = self.answer_mode(provider)
        use_lp = (
            provider.capabilities.logprobs
            if self.settings.logprobs is None
            else self.settings.logprobs
        )
        if mode == "prefill" and not provider.capabilities.prefill:
            return error_score(
                record,
                explanation,
                self.name,
                settings,
                f"answer='prefill' needs a provider that continues a prefilled reply; "
                f"{provider.model} does not",
            )
        if mode == "first_token" and not use_lp:
            return error_score(
                record,
                explanation,
                self.name,
                settings,
                f"answer='first_token' needs logprobs; {provider.model} does not give them",
            )
        wanted = self.settings.top_logprobs
        if mode == "prefill":
            # one token's alternatives are all there is to read: ask for as many as served, so
            # both digits (and their " 1" / "1" variants) are among them
            wanted = max(wanted, 20)
        top = min(wanted, provider.capabilities.max_top_logprobs or wanted)
        settings |= {"latent_seed": seed, "logprobs_used": use_lp, "answer_used": mode}

        described = one_line_explanation(explanation)
        size = 1 if mode in ("first_token", "prefill") else self.settings.batch_size
        batches = [list(range(i, min(i + size, len(order)))) for i in range(0, len(order), size)]
        requests = [
            self._request(described, [texts[j] for j in batch], use_lp, top, mode)
            for batch in batches
        ]
        outcomes = await asyncio.gather(*(call(ctx, r) for r in requests))

        predictions: list[Prediction] = []
        for batch, outcome in zip(batches, outcomes, strict=True):
            predictions.extend(self._read(outcome, [order[j] for j in batch], use_lp, mode))
        predictions.sort(key=lambda p: p.item)
        return self._result(record, explanation, items, predictions, outcomes, settings)

    def shown_negatives(self, record: LatentRecord) -> list[int]:
        """Indices into `record.non_activating` of the negatives this scorer may show."""
        kinds = self.negative_kinds
        return [i for i, e in enumerate(record.non_activating) if kinds is None or e.kind in kinds]

    def _draw(
        self, record: LatentRecord, shown: list[int], ctx: MethodContext
    ) -> tuple[int, np.random.Generator, list[Item]]:
        """`draw_items` over the shown negatives only, with each item's index mapped back to
        the whole record (scoring examples, then every non-activating example)."""
        view = record
        if len(shown) < len(record.non_activating):
            negatives = tuple(record.non_activating[i] for i in shown)
            view = record.model_copy(update={"non_activating": negatives})
        seed, rng, items = draw_items(
            view,
            ctx,
            self.name,
            max_activating=self.settings.max_activating,
            max_negatives=self.settings.max_negatives,
        )
        n_pos = len(record.scoring_examples)
        items = [
            it
            if it.index < n_pos
            else dataclasses.replace(it, index=n_pos + shown[it.index - n_pos])
            for it in items
        ]
        return seed, rng, items

    def _messages(self, explanation: str, texts: Sequence[str]) -> tuple[Message, Message]:
        """The system and user messages; one item gets the prompt's one-item wording (when the
        prompt has it), so the model is never asked for "a list of 1 values"."""
        single_system = self.prompt.data.get("single_system")
        single_user = self.prompt.data.get("single_user")
        if len(texts) == 1 and isinstance(single_system, str) and isinstance(single_user, str):
            system = _fill_prompt(single_system, {}, f"{self.prompt.id} single_system")
            user = _fill_prompt(
                single_user,
                {"explanation": explanation, "example": texts[0]},
                f"{self.prompt.id} single_user",
            )
        else:
            examples = "\n".join(f"Example {k}: {t}" for k, t in enumerate(texts, start=1))
            system = self.prompt.render_system()
            user = self.prompt.render_user(explanation=explanation, examples=examples, n=len(texts))
        return Message(role="system", content=system), Message(role="user", content=user)

    def _request(
        self, explanation: str, texts: Sequence[str], logprobs: bool, top: int, mode: AnswerMode
    ) -> ChatRequest:
        if mode == "prefill":
            max_tokens = 1  # the digit is the very next token: one forward pass
        elif mode == "first_token":
            # the answer is read from the first tokens' alternatives alone, which suits small
            # local models that will not keep to a list format
            max_tokens = FIRST_TOKENS
        else:
            max_tokens = 16 + 4 * len(texts)
        return ChatRequest(
            messages=self._messages(explanation, texts),
            temperature=0.0,
            max_tokens=max_tokens,
            logprobs=logprobs,
            top_logprobs=top if logprobs else None,
            prefill=self._prefill_text() if mode == "prefill" else None,
        )

    def _read(
        self, outcome: Outcome, items: Sequence[Item], logprobs: bool, mode: AnswerMode
    ) -> list[Prediction]:
        def errors(message: str) -> list[Prediction]:
            return [
                Prediction(item=it.index, truth=it.truth, error=message, quantile=it.quantile)
                for it in items
            ]

        if outcome.response is None:
            return errors(outcome.error or "provider call failed")
        choice = outcome.response.choices[0]
        if mode == "prefill" and not (logprobs and choice.logprobs):
            # no logprobs: the digit the model wrote after the prefill is the answer
            digit = choice.text.strip()[:1]
            if digit not in ("0", "1"):
                discard_cached(outcome.response)  # an answer not used is not replayed by a rerun
                return errors(f"no 0/1 after the prefilled reply: {choice.text[:50]!r}")
            (it,) = items
            return [
                Prediction(
                    item=it.index, truth=it.truth, predicted=digit == "1", quantile=it.quantile
                )
            ]
        if mode in ("first_token", "prefill"):
            # the first position with mass on 0 or 1 (an answer may open with "[")
            p = next((q for t in choice.logprobs or () if (q := p_one(t)) is not None), None)
            if p is None:
                discard_cached(outcome.response)  # an answer not used is not replayed by a rerun
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
            discard_cached(outcome.response)  # an answer not used is not replayed by a rerun
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
        settings: dict[str, JsonValue],
    ) -> Score:
        metrics: dict[str, float | None] = classification_metrics(predictions)
        by_index = {it.index: it for it in items}
        metrics["accuracy_saebench"] = saebench_accuracy(
            predictions,
            [by_index[p.item].example.max_activation for p in predictions],
            record.stats.max or max((it.example.max_activation for it in items), default=0.0),
            threshold_frac=self.settings.saebench_threshold,
        )
        metrics["n_calls"] = float(len(outcomes))
        metrics["n_failed_calls"] = float(sum(o.response is None for o in outcomes))
        usage = total_usage(outcomes)
        answered = [p for p in predictions if p.predicted is not None]
        evidence: dict[str, JsonValue] = {}
        constant = _constant_answer(answered)
        if constant is not None:
            # why the balanced accuracy reads 0.5: the scorer model did not discriminate
            evidence["constant_predictions"] = "yes" if constant else "no"
        first = next((p.error for p in predictions if p.error), "no answers")
        return final_score(
            record,
            explanation,
            self.name,
            value=metrics["balanced_accuracy"] if answered else None,
            answered=bool(answered),
            why_no_value=f"all {len(predictions)} items failed; first error: {first}",
            metrics=metrics,
            predictions=predictions,
            settings=settings,
            usage=usage,
            evidence=evidence,
        )
