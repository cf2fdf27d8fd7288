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

An answer that gives no values (it does not parse, or its echo is unfaithful and counted as an
error) is dropped from the response cache, so a rerun asks again.

The subject model's tokens are shown as text lines, so the scorer's own tokenizer never needs to
match the subject's: values are aligned by line, not by scorer token.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, JsonValue

from saexplain.methods import (
    ChatRequest,
    Choice,
    Explanation,
    Item,
    LatentRecord,
    Message,
    MethodContext,
    MethodSettings,
    Needs,
    Outcome,
    Prediction,
    Register,
    Score,
    bos_id,
    call,
    classification_metrics,
    clean_token,
    discard_cached,
    draw_items,
    error_score,
    expected_value,
    final_score,
    first_shown,
    input_error,
    load_prompt,
    one_line_explanation,
    pearson,
    token_at_offsets,
    total_usage,
)

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

    class Settings(MethodSettings):
        """The simulation scorer's settings."""

        variant: Literal["auto", "logprobs", "echo"] = Field(
            "auto",
            description='`"logprobs"`, `"echo"`, or `"auto"` (logprobs when the provider offers '
            'them). Asking for `"logprobs"` from a provider without them gives `status="error"`',
        )
        max_activating: int | None = Field(
            None,
            ge=1,
            description="a random subset of the activating scoring examples; `None`: all",
        )
        max_negatives: int | None = Field(
            10,
            ge=0,
            description="non-activating sequences added (a random subset); `0` for activating "
            "only, `None`: all",
        )
        max_value: int = Field(10, ge=1, description="the top of the value scale")
        top_logprobs: int = Field(
            15, ge=2, le=20, description="alternatives per value token (capped by the provider)"
        )
        on_unfaithful: Literal["error", "zero"] = Field(
            "error",
            description="an unfaithful echo makes the sequence an error, or counts it as all "
            "zeros (see above)",
        )
        fire_threshold: float = Field(
            0.5,
            ge=0.0,
            le=1.0,
            description="a sequence's yes/no prediction: its largest predicted value >= "
            "threshold x `max_value`",
        )
        prompt: str | Path | None = Field(
            None,
            description='the logprobs prompt: a bundled name or a TOML path; `None`: "simulation"',
        )
        echo_prompt: str | Path | None = Field(
            None,
            description='the echo prompt: a bundled name or a TOML path; `None`: "simulation_echo"',
        )

    name = "simulation"
    needs: ClassVar[Needs] = Needs(provider=True)

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        self.prompt = load_prompt(self.settings.prompt or "simulation")
        self.echo_prompt = load_prompt(self.settings.echo_prompt or "simulation_echo")

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, with the prompts by `name@version`."""
        return self.settings.model_dump(mode="json") | {
            "prompt": self.prompt.id,
            "echo_prompt": self.echo_prompt.id,
        }

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.recorded_settings()
        problem = input_error(record, explanation)
        if problem is None and not record.scoring_examples:
            problem = "simulation needs activating scoring examples; the record has none"
        provider = ctx.provider("scorer")
        variant = self.settings.variant
        if variant == "auto":
            variant = "logprobs" if provider.capabilities.logprobs else "echo"
        if problem is None and variant == "logprobs" and not provider.capabilities.logprobs:
            problem = f"provider {provider.name}:{provider.model} gives no logprobs; use 'echo'"
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)

        seed, _, items = draw_items(
            record,
            ctx,
            self.name,
            max_activating=self.settings.max_activating,
            max_negatives=self.settings.max_negatives,
        )
        settings |= {"variant_used": variant, "latent_seed": seed}
        wanted = self.settings.top_logprobs
        top = min(wanted, provider.capabilities.max_top_logprobs or wanted)
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
                sim = parse_numbered(choice, len(toks), self.settings.max_value, True)
            else:
                sim = parse_echo(choice.text, toks, self.settings.max_value)
            if sim.unfaithful and self.settings.on_unfaithful == "zero":
                sim = Simulated([0.0] * len(toks), unfaithful=True)
            if sim.values is None:  # an answer not used is not replayed by a rerun
                discard_cached(outcome.response)
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
        top_value = self.settings.max_value
        user = prompt.render_user(
            explanation=explanation, tokens=lines, n=len(tokens), max_value=top_value
        )
        return ChatRequest(
            messages=(
                Message(role="system", content=prompt.render_system(max_value=top_value)),
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
        settings: dict[str, JsonValue],
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
            top_value = self.settings.max_value
            predictions.append(
                Prediction(
                    item=it.index,
                    truth=it.truth,
                    predicted=peak >= self.settings.fire_threshold * top_value,
                    probability=min(1.0, max(0.0, peak / top_value)),
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
        first = next((p.error for p in predictions if p.error), None)
        answered = bool(seq["n_answered"])
        return final_score(
            record,
            explanation,
            self.name,
            value=correlation,
            answered=answered,
            why_no_value=f"all {len(items)} sequences failed; first error: {first}"
            if not answered
            else "the correlation is undefined (true activations constant on answered tokens)",
            metrics=metrics,
            predictions=predictions,
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
