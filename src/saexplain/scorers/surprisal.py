"""`surprisal` (EleutherAI): does the explanation make the activating contexts more likely?

For every held-out context x (activating scoring examples and non-activating examples) a base
language model gives log p(x | explanation) and log p(x | a fixed generic explanation, "Various
unrelated sentences."), each after the same prompt (`prompts/surprisal.toml`). The gain, their
difference, is the information the explanation carries about x; a good explanation gains more on
activating contexts than on the others. Headline: the AUROC of the gain between the two groups
(0.5 is chance).

The base model (setting `base`):

- `"provider"`: the scorer provider scores the context as the reply to the prompt
  (`ChatRequest.score_text`; needs `ProviderCapabilities.prompt_logprobs`, which the local
  in-process provider has). Two calls per context; the generic ones repeat across explanations
  and explainers, so the response cache answers them after the first time.
- `"subject"`: the subject model itself, through its backend's `logits`: the prompt is tokenized
  as plain text and the context's own token ids follow it, so the context is scored in exactly
  the tokens the model saw. No LLM is called.
- `"auto"`: the provider when it has prompt logprobs, else the subject model.

The base used is recorded in the score's evidence (`base`, `base_model`), with each context's
gain (`gains`, in the order of the predictions). A base that cannot
score (`"provider"` without prompt logprobs, `"subject"` without a backend) is a `ConfigError`
naming the alternatives, raised before any call (`check_context`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, JsonValue

from saexplain.methods import (
    Backend,
    ChatRequest,
    ConfigError,
    Example,
    Explanation,
    Item,
    LatentRecord,
    Message,
    MethodContext,
    MethodSettings,
    Needs,
    Outcome,
    Prediction,
    PromptTemplate,
    Register,
    Score,
    TokenBatch,
    auroc,
    bos_id,
    call,
    classification_metrics,
    clean_tokens,
    discard_cached,
    draw_items,
    error_score,
    final_score,
    first_shown,
    input_error,
    load_prompt,
    one_line_explanation,
    run_model,
    to_numpy,
    total_usage,
)

Base = Literal["auto", "provider", "subject"]


@dataclass(frozen=True)
class Scored:
    """log p(context | prompt) for one context, or why there is none."""

    logprob: float | None
    n_tokens: int = 0
    error: str | None = None


def context_text(example: Example, bos: int | None) -> str:
    """The context as plain text, a leading BOS left out (as every scorer shows it)."""
    return "".join(clean_tokens(example.str_tokens[first_shown(example, bos) :])).strip()


def subject_logprobs(
    backend: Backend, prefix: str, contexts: Sequence[Sequence[int]]
) -> list[tuple[float, int]]:
    """(sum of log p of the context's tokens, number of tokens) for each context after `prefix`,
    from the subject model's logits; call it under the model lock."""
    start = backend.tokenize([prefix])  # BOS (when the backend adds one) + the prompt
    head = start.rows()[0]
    rows = [head + list(c) for c in contexts]
    logits = backend.logits(TokenBatch.from_lists(rows))  # right-padded: causal, so harmless
    out = []
    for r, context in enumerate(contexts):
        n = len(head)
        # the token at position p is predicted by the logits at p - 1
        z = to_numpy(logits[r, n - 1 : n - 1 + len(context)])
        peak = z.max(axis=-1, keepdims=True)
        logz = np.log(np.exp(z - peak).sum(axis=-1)) + peak[:, 0]
        picked = z[np.arange(len(context)), np.asarray(context, dtype=np.int64)]
        out.append((float((picked - logz).sum()), len(context)))
    return out


class SurprisalScorer:
    """Surprisal: AUROC of log p(context | explanation) - log p(context | generic explanation)."""

    class Settings(MethodSettings):
        """The surprisal scorer's settings."""

        base: Base = Field(
            "auto",
            description='the base language model: `"provider"` (the scorer provider, which must '
            'give prompt logprobs, e.g. the local provider), `"subject"` (the subject model '
            'through its backend, no LLM call) or `"auto"` (the provider when it gives prompt '
            "logprobs, else the subject model)",
        )
        max_activating: int | None = Field(
            None,
            ge=1,
            description="a random subset (per-latent seed) of the activating scoring examples; "
            "`None`: all",
        )
        max_negatives: int | None = Field(
            None,
            ge=1,
            description="a random subset (per-latent seed) of the non-activating examples; "
            "`None`: all",
        )
        aggregate: Literal["sum", "mean"] = Field(
            "sum",
            description='the gain of a context: `"sum"` over its tokens (log p of the whole '
            'context), or their `"mean"` (per-token cross-entropy, as the paper reports loss)',
        )
        generic: str | None = Field(
            None,
            description="the fixed explanation the gain is measured against; `None`: the "
            'prompt\'s `generic` ("Various unrelated sentences.")',
        )
        batch_size: int = Field(
            8, ge=1, description="contexts per forward pass with the subject model"
        )
        prompt: str | Path | None = Field(
            None, description='a bundled prompt name or a TOML path; `None`: "surprisal"'
        )

    name = "surprisal"

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        self.prompt: PromptTemplate = load_prompt(self.settings.prompt or "surprisal")
        generic = self.settings.generic or self.prompt.data.get("generic")
        if not isinstance(generic, str) or not generic.strip():
            raise ConfigError(
                f"scorer {self.name!r}: no generic explanation (set `generic`, or give the "
                f"prompt {self.prompt.id} a `generic` entry)"
            )
        self.generic = " ".join(generic.split())
        base = self.settings.base
        # What the run must build: the provider, the subject model, or either (auto).
        self.needs = Needs(provider=base != "subject", backend=base != "provider")

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, with the prompt by `name@version` and the generic text."""
        return self.settings.model_dump(mode="json") | {
            "prompt": self.prompt.id,
            "generic": self.generic,
        }

    # --- the base model ---------------------------------------------------------------------------

    def preflight(self, ctx: MethodContext) -> None:
        """Before the run: the chosen base exists (`check_context`)."""
        self.check_context(ctx)

    def check_context(self, ctx: MethodContext) -> Literal["provider", "subject"]:
        """The base this context gives, or a `ConfigError` naming the alternatives."""
        base = self.settings.base
        provider = None
        if base != "subject":
            try:
                provider = ctx.provider("scorer")
            except LookupError:
                provider = None
        can_provider = provider is not None and provider.capabilities.prompt_logprobs
        if base == "provider" or (base == "auto" and can_provider):
            if can_provider:
                return "provider"
            what = (
                "no scorer provider is configured"
                if provider is None
                else f"provider {provider.name}:{provider.model} gives no prompt logprobs"
            )
            raise ConfigError(
                f"scorer {self.name!r} with base='provider': {what}; use base='subject' (the "
                "subject model scores the contexts, no LLM call) or a provider with prompt "
                "logprobs (the local in-process provider, e.g. scorer_model 'local/smollm2')"
            )
        if ctx.backend is None:
            raise ConfigError(
                f"scorer {self.name!r} with base={base!r}: no subject model (backend) to score "
                "with, and no provider with prompt logprobs; use base='provider' with a provider "
                "that gives them (the local in-process provider)"
            )
        return "subject"

    def _messages(self, explanation: str) -> tuple[Message, Message]:
        return (
            Message(role="system", content=self.prompt.render_system()),
            Message(role="user", content=self.prompt.render_user(explanation=explanation)),
        )

    async def _by_provider(
        self, ctx: MethodContext, explanation: str, texts: Sequence[str]
    ) -> tuple[list[Scored], list[Outcome]]:
        messages = self._messages(explanation)
        requests = [
            ChatRequest(messages=messages, temperature=0.0, max_tokens=1, score_text=t)
            for t in texts
        ]
        outcomes = list(await asyncio.gather(*(call(ctx, r) for r in requests)))
        scored = []
        for outcome in outcomes:
            if outcome.response is None:
                scored.append(Scored(None, error=outcome.error or "provider call failed"))
            elif not outcome.response.scored:
                discard_cached(outcome.response)  # not used: a rerun asks again
                scored.append(Scored(None, error="the provider returned no prompt logprobs"))
            else:
                lps = outcome.response.scored
                scored.append(Scored(float(sum(t.logprob for t in lps)), len(lps)))
        return scored, outcomes

    async def _by_subject(
        self, ctx: MethodContext, explanation: str, contexts: Sequence[Sequence[int]]
    ) -> list[Scored]:
        backend = ctx.backend
        assert backend is not None  # check_context made sure
        messages = self._messages(explanation)
        prefix = f"{messages[0].content}\n\n{messages[1].content}\n"
        size = self.settings.batch_size
        out: list[Scored] = []
        for i in range(0, len(contexts), size):
            chunk = contexts[i : i + size]
            got = await run_model(backend, subject_logprobs, backend, prefix, chunk)
            out += [Scored(lp, n) for lp, n in got]
        return out

    # --- scoring ----------------------------------------------------------------------------------

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.recorded_settings()
        base = self.check_context(ctx)  # a ConfigError before any model work
        problem = input_error(record, explanation)
        if problem is None and not (record.scoring_examples and record.non_activating):
            problem = (
                "surprisal needs activating scoring examples and non-activating examples; the "
                f"record has {len(record.scoring_examples)} and {len(record.non_activating)}"
            )
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)
        seed, _, items = draw_items(
            record,
            ctx,
            self.name,
            max_activating=self.settings.max_activating,
            max_negatives=self.settings.max_negatives,
        )
        bos = bos_id(ctx)
        described = one_line_explanation(explanation)
        outcomes: list[Outcome] = []
        if base == "provider":
            provider = ctx.provider("scorer")
            texts = [context_text(it.example, bos) for it in items]
            explained, with_e = await self._by_provider(ctx, described, texts)
            generic, with_g = await self._by_provider(ctx, self.generic, texts)
            outcomes = with_e + with_g
            base_model = f"{provider.name}:{provider.model}"
        else:
            backend = ctx.backend
            assert backend is not None
            ids = [it.example.tokens[first_shown(it.example, bos) :] for it in items]
            explained = await self._by_subject(ctx, described, ids)
            generic = await self._by_subject(ctx, self.generic, ids)
            base_model = f"{backend.name}:{backend.model_id}"
        settings |= {"latent_seed": seed}
        evidence: dict[str, JsonValue] = {
            "base": base,  # which model scored: the provider's or the subject model
            "base_model": base_model,
            "generic": self.generic,
        }
        scored = (explained, generic)
        return self._result(record, explanation, items, scored, outcomes, settings, evidence)

    def _result(
        self,
        record: LatentRecord,
        explanation: Explanation,
        items: Sequence[Item],
        scored: tuple[Sequence[Scored], Sequence[Scored]],
        outcomes: Sequence[Outcome],
        settings: dict[str, JsonValue],
        evidence: dict[str, JsonValue],
    ) -> Score:
        explained, generic = scored
        gains: list[float | None] = []
        errors: list[str | None] = []
        for e, g in zip(explained, generic, strict=True):
            if e.logprob is None or g.logprob is None:
                gains.append(None)
                errors.append(e.error or g.error or "no log-probability")
                continue
            gain = e.logprob - g.logprob
            if self.settings.aggregate == "mean":
                gain /= max(1, e.n_tokens)
            gains.append(gain)
            errors.append(None)
        predictions = []
        for it, maybe, error in zip(items, gains, errors, strict=True):
            if maybe is None:
                predictions.append(
                    Prediction(item=it.index, truth=it.truth, error=error, quantile=it.quantile)
                )
                continue
            predictions.append(
                Prediction(
                    item=it.index,
                    truth=it.truth,
                    predicted=maybe > 0.0,  # the explanation made this context more likely
                    # a monotone map of the gain (a logistic), so its AUROC is the headline's
                    probability=float(0.5 * (1.0 + np.tanh(np.clip(maybe, -40.0, 40.0) / 2.0))),
                    quantile=it.quantile,
                )
            )
        metrics = classification_metrics(predictions)
        answered = [(it.truth, g) for it, g in zip(items, gains, strict=True) if g is not None]
        value = auroc([t for t, _ in answered], [g for _, g in answered]) if answered else None
        pos = [g for t, g in answered if t]
        neg = [g for t, g in answered if not t]
        metrics |= {
            "auroc": value,
            "mean_gain_activating": float(np.mean(pos)) if pos else None,
            "mean_gain_negatives": float(np.mean(neg)) if neg else None,
            "n_tokens_scored": float(sum(e.n_tokens for e in explained)),
        }
        usage = total_usage(outcomes)
        evidence["gains"] = [None if g is None else round(g, 4) for g in gains]  # items' order
        first = next((e for e in errors if e), None)
        return final_score(
            record,
            explanation,
            self.name,
            value=value,
            answered=bool(answered),
            why_no_value=f"all {len(items)} contexts failed; first error: {first}"
            if not answered
            else "the answered contexts are all activating or all non-activating",
            metrics=metrics,
            predictions=predictions,
            settings=settings,
            usage=usage,
            evidence=evidence,
        )


def register(register: Register) -> None:
    register(
        "surprisal",
        SurprisalScorer,
        description="Does the explanation make activating contexts more likely under a base "
        "LM? AUROC of the log-probability gain.",
    )
