"""`simulation` (Bills et al. 2023): predict every token's activation (0..max_value) from the
explanation; the score is the Pearson correlation between predicted and true activations, pooled
over all tokens of the scored sequences (held-out activating examples plus some negatives).

Variants (one prompt per sequence in both):

- `logprobs` (the default when the provider gives logprobs): the subject tokens are laid out
  one per line with their numbers; the model writes `number<TAB>value` lines, and each value is
  replaced by its expected value under the top logprobs at that position (the probability mass
  on "0".."max_value"), as in Bills et al.'s all-at-once simulator.
- `echo` (logprob-free): the model copies every `token<TAB>unknown` line, replacing `unknown`
  by a value; its lines are aligned back to the subject tokens (whitespace-only tokens may be
  skipped and count 0). An unfaithful echo (a token that does not match) makes that sequence an
  error (excluded and counted), or all zeros with `on_unfaithful="zero"` (Bills et al.).

The subject model's tokens are shown as text lines, so the scorer's own tokenizer never needs to
match the subject's: values are aligned by line, not by scorer token.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from saexplain.checks import check_choice, check_float, check_int
from saexplain.hookspecs import Register
from saexplain.metrics import classification_metrics, pearson
from saexplain.models import (
    ChatRequest,
    Choice,
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
from saexplain.render import clean_token
from saexplain.scorers._common import (
    Item,
    Outcome,
    bos_id,
    call,
    error_score,
    expected_value,
    first_shown,
    input_error,
    latent_seed,
    one_line_explanation,
    select_items,
    token_at_offsets,
    total_usage,
)

VARIANTS = ("auto", "logprobs", "echo")
_NUMBERED = re.compile(r"^[ \t]*(\d+)(?:[ \t]*[:=.)-][ \t]*|[ \t]+)(\d+)[ \t]*$", re.MULTILINE)
_ECHO_TAB = re.compile(r"^(.*?)[ ]*\t[ \t]*(\d+)[ \t]*$")
_ECHO_SPACE = re.compile(r"^(.*?)[ \t]+(\d+)[ \t]*$")


def show_token(token: str) -> str:
    """A subject token as one line of text: control characters written as escapes."""
    return clean_token(token).replace("\r", "\\r").replace("\n", "\\n").replace("\t", "\\t")


@dataclass(frozen=True)
class Simulated:
    """One sequence's simulated values, or why there are none."""

    values: list[float] | None
    error: str | None = None
    unfaithful: bool = False
    from_logprobs: bool = False


def parse_numbered(choice: Choice, n: int, max_value: int, use_logprobs: bool) -> Simulated:
    """Values of `k<TAB>value` lines for k = 1..n; expected values where logprobs allow."""
    found: dict[int, tuple[int, int]] = {}
    for m in _NUMBERED.finditer(choice.text):
        k = int(m.group(1))
        if 1 <= k <= n and k not in found:
            found[k] = (min(int(m.group(2)), max_value), m.start(2))
    if len(found) != n:
        return Simulated(
            None, f"ParseError: the answer gives values for {len(found)} of {n} tokens"
        )
    values = [float(found[k][0]) for k in range(1, n + 1)]
    if not (use_logprobs and choice.logprobs):
        return Simulated(values)
    lps = choice.logprobs
    at = token_at_offsets(lps, choice.text, [found[k][1] for k in range(1, n + 1)])
    read = 0
    for j, i in enumerate(at):
        if i is None:
            continue
        ev = expected_value(lps[i], lps[i + 1] if i + 1 < len(lps) else None, max_value)
        if ev is not None:
            values[j] = ev
            read += 1
    return Simulated(values, from_logprobs=read == n)


def parse_echo(text: str, shown: Sequence[str], max_value: int) -> Simulated:
    """Align `token<TAB>value` lines to the shown tokens; None values on an unfaithful echo."""
    rows: list[tuple[str, int]] = []
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    pattern = _ECHO_TAB if any("\t" in ln for ln in lines) else _ECHO_SPACE
    for ln in lines:
        m = pattern.match(ln)
        if m is None:
            continue  # prose around the lines
        rows.append((m.group(1).strip(), min(int(m.group(2)), max_value)))
    values: list[float] = []
    r = 0
    for token in shown:
        want = token.strip()
        if r < len(rows) and rows[r][0] == want:
            values.append(float(rows[r][1]))
            r += 1
        elif not want:
            values.append(0.0)  # a whitespace-only token the model did not copy
        else:
            got = rows[r][0] if r < len(rows) else "<end of answer>"
            return Simulated(
                None, f"unfaithful echo: expected {want!r}, got {got!r}", unfaithful=True
            )
    if r != len(rows):
        return Simulated(None, f"unfaithful echo: {len(rows) - r} extra lines", unfaithful=True)
    return Simulated(values)


class SimulationScorer:
    """Simulation: predict per-token activations from the explanation; Pearson correlation."""

    name = "simulation"

    def __init__(
        self,
        *,
        variant: str = "auto",
        max_activating: int | None = None,
        max_negatives: int | None = 10,
        max_value: int = 10,
        top_logprobs: int = 15,
        on_unfaithful: str = "error",
        fire_threshold: float = 0.5,
        prompt: str | None = None,
        echo_prompt: str | None = None,
    ) -> None:
        check_choice("variant", variant, VARIANTS)
        check_int("max_activating", max_activating, low=1, optional=True)
        check_int("max_negatives", max_negatives, low=0, optional=True)
        check_int("max_value", max_value, low=1)
        check_int("top_logprobs", top_logprobs, low=2, high=20)
        check_choice("on_unfaithful", on_unfaithful, ("error", "zero"))
        check_float("fire_threshold", fire_threshold, low=0.0, high=1.0)
        self.variant = variant
        self.max_activating = max_activating
        self.max_negatives = max_negatives
        self.max_value = max_value
        self.top_logprobs = top_logprobs
        self.on_unfaithful = on_unfaithful
        self.fire_threshold = float(fire_threshold)
        self.prompt = load_prompt(prompt or "simulation")
        self.echo_prompt = load_prompt(echo_prompt or "simulation_echo")

    def settings(self) -> Settings:
        return {
            "variant": self.variant,
            "max_activating": self.max_activating,
            "max_negatives": self.max_negatives,
            "max_value": self.max_value,
            "top_logprobs": self.top_logprobs,
            "on_unfaithful": self.on_unfaithful,
            "fire_threshold": self.fire_threshold,
            "prompt": self.prompt.id,
            "echo_prompt": self.echo_prompt.id,
        }

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.settings()
        problem = input_error(record, explanation)
        if problem is None and not record.scoring_examples:
            problem = "simulation needs activating scoring examples; the record has none"
        provider = ctx.provider("scorer")
        variant = self.variant
        if variant == "auto":
            variant = "logprobs" if provider.capabilities.logprobs else "echo"
        if problem is None and variant == "logprobs" and not provider.capabilities.logprobs:
            problem = f"provider {provider.name}:{provider.model} gives no logprobs; use 'echo'"
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)

        seed = latent_seed(ctx, record, self.name)
        rng = np.random.default_rng(seed)
        items = select_items(
            record, rng, max_activating=self.max_activating, max_negatives=self.max_negatives
        )
        settings |= {"variant_used": variant, "latent_seed": seed}
        top = min(self.top_logprobs, provider.capabilities.max_top_logprobs or self.top_logprobs)
        bos = bos_id(ctx)
        starts = [first_shown(it.example, bos) for it in items]
        shown = [
            [show_token(t) for t in it.example.str_tokens[s:]]
            for it, s in zip(items, starts, strict=True)
        ]
        described = one_line_explanation(explanation)
        requests = [self._request(described, toks, variant, top) for toks in shown]
        outcomes = await asyncio.gather(*(call(ctx, r) for r in requests))

        sims: list[Simulated] = []
        for outcome, toks in zip(outcomes, shown, strict=True):
            if outcome.response is None:
                sims.append(Simulated(None, outcome.error or "provider call failed"))
                continue
            choice = outcome.response.choices[0]
            if variant == "logprobs":
                sim = parse_numbered(choice, len(toks), self.max_value, True)
            else:
                sim = parse_echo(choice.text, toks, self.max_value)
            if sim.unfaithful and self.on_unfaithful == "zero":
                sim = Simulated([0.0] * len(toks), unfaithful=True)
            sims.append(sim)
        return self._result(record, explanation, items, starts, sims, outcomes, settings)

    def _request(
        self, explanation: str, tokens: Sequence[str], variant: str, top: int
    ) -> ChatRequest:
        if variant == "logprobs":
            prompt = self.prompt
            lines = "\n".join(f"{k}\t{t}" for k, t in enumerate(tokens, start=1))
            max_tokens = 16 + 6 * len(tokens)
        else:
            prompt = self.echo_prompt
            lines = "\n".join(f"{t}\tunknown" for t in tokens)
            max_tokens = 16 + 8 * len(tokens) + sum(len(t) for t in tokens) // 2
        user = prompt.render_user(
            explanation=explanation, tokens=lines, n=len(tokens), max_value=self.max_value
        )
        return ChatRequest(
            messages=(
                Message(role="system", content=prompt.render_system(max_value=self.max_value)),
                Message(role="user", content=user),
            ),
            temperature=0.0,
            max_tokens=max_tokens,
            logprobs=variant == "logprobs",
            top_logprobs=top if variant == "logprobs" else None,
        )

    def _result(
        self,
        record: LatentRecord,
        explanation: Explanation,
        items: Sequence[Item],
        starts: Sequence[int],
        sims: Sequence[Simulated],
        outcomes: Sequence[Outcome],
        settings: Settings,
    ) -> Score:
        true_all: list[float] = []
        pred_all: list[float] = []
        true_act: list[float] = []
        pred_act: list[float] = []
        predictions: list[Prediction] = []
        for it, start, sim in zip(items, starts, sims, strict=True):
            if sim.values is None:
                predictions.append(
                    Prediction(
                        item=it.index,
                        truth=it.truth,
                        error=sim.error or "no values",
                        quantile=it.quantile,
                    )
                )
                continue
            truth = list(it.example.activations[start:])
            true_all += truth
            pred_all += sim.values
            if it.truth:
                true_act += truth
                pred_act += sim.values
            peak = max(sim.values, default=0.0)
            predictions.append(
                Prediction(
                    item=it.index,
                    truth=it.truth,
                    predicted=peak >= self.fire_threshold * self.max_value,
                    probability=min(1.0, max(0.0, peak / self.max_value)),
                    quantile=it.quantile,
                )
            )
        predictions.sort(key=lambda p: p.item)
        constant = bool(pred_all) and len(set(pred_all)) == 1
        correlation = pearson(true_all, pred_all) if true_all else None
        if correlation is None and constant and len(set(true_all)) > 1:
            correlation = 0.0  # predicting no variation at all explains none of it
        seq = classification_metrics(predictions)
        metrics: dict[str, float | None] = {
            "correlation": correlation,
            "correlation_activating": pearson(true_act, pred_act) if true_act else None,
            "constant_prediction": float(constant),
            "n_sequences": float(len(items)),
            "n_answered": seq["n_answered"],
            "n_errors": seq["n_errors"],
            "n_unfaithful": float(sum(s.unfaithful for s in sims)),
            "n_from_logprobs": float(sum(s.from_logprobs for s in sims)),
            "n_tokens": float(len(true_all)),
            "sequence_balanced_accuracy": seq["balanced_accuracy"],
            "sequence_auroc": seq["auroc"],
        }
        usage = total_usage(outcomes)
        if correlation is None:
            first = next((p.error for p in predictions if p.error), None)
            reason = (
                f"all {len(items)} sequences failed; first error: {first}"
                if seq["n_answered"] == 0
                else "the correlation is undefined (true activations constant on answered tokens)"
            )
            return Score(
                latent=record.latent,
                scorer=self.name,
                explainer=explanation.explainer,
                status=Status.ERROR if seq["n_answered"] == 0 else Status.FAILED,
                error=reason,
                metrics=metrics,
                predictions=tuple(predictions),
                settings=settings,
                usage=usage,
            )
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            value=correlation,
            metrics=metrics,
            predictions=tuple(predictions),
            settings=settings,
            usage=usage,
        )


def register(register: Register) -> None:
    register(
        "simulation",
        SimulationScorer,
        description="Predict per-token activations from the explanation (Bills et al.); "
        "Pearson correlation.",
    )
