"""`output_eval` (output-centric feature descriptions, the output-based evaluation): does the
explanation tell which generations the latent steered?

The latent and `n_random` random latents of the same coder (chosen with the latent's own seed)
are each amplified at their own calibrated strength (`calibrate`: the clamp value, or steering
scale, whose mean KL(clean || intervened) over neutral prompts is `target_kl`), so every arm
moves the model equally far. The subject model continues `n_prompts` neutral prompts under each
arm (`max_new_tokens` tokens at `temperature`). A judge LLM (the "scorer" role) reads the
explanation and the sets of continuations and picks the set the described latent steered;
chance is 1 / (n_random + 1). The judge is asked `repetitions` times, the order of the sets
shuffled each time with the steered set's slot cycling through every position, so a judge that
favours one slot gains nothing. `Score.value` is the accuracy over the answered repetitions.

Generation: one `backend.generate` call per arm, all prompts of the arm in one batch (the
backends' KV-cached batched generation). The arms cannot share a call: an edit applies to every
row of a call (`Clamp` and `Add` have no per-row form), so three arms are three calls. All arms
use the same sampling seed (common random numbers), so the sets differ by the latent only.

An answer that names no set is dropped from the response cache (`discard_cached`) and its
repetition is an error prediction; the score is an error when no repetition was answered.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import Field, JsonValue

from saexplain.methods import (
    NEUTRAL_PROMPTS,
    Backend,
    ChatRequest,
    ConfigError,
    EvidenceUnavailable,
    Explanation,
    LatentRecord,
    Message,
    MethodContext,
    MethodSettings,
    Needs,
    Outcome,
    ParseError,
    Prediction,
    Register,
    SaexplainError,
    Score,
    SparseCoder,
    Strength,
    calibrate,
    call,
    discard_cached,
    error_score,
    input_error,
    latent_seed,
    load_prompt,
    neutralise,
    one_line,
    one_line_explanation,
    require_model,
    run_model,
    total_usage,
)
from saexplain.scorers.written import error_after_call

__all__ = ["OutputEvalScorer", "parse_choice", "random_latents"]

_ANSWER = re.compile(
    r"(?i:answer|pick)(?i:\s+is)?\s*[:=\-]?\s*[*_\s]*"
    r"(?i:(?:set|text|option)\s*)?[(\[]?\s*(\d{1,2}|[A-Z])(?![A-Za-z0-9])"
)
_BARE = re.compile(r"^(?i:(?:set|text|option)\s*)?[(\[]?\s*(\d{1,2}|[A-Za-z])\s*[)\].:]?$")
_LEADING = re.compile(r"^(?i:set|text|option)\s*(\d{1,2}|[A-Z])(?![A-Za-z0-9])")


def _index(label: str, n_sets: int) -> int:
    """A set's label (`"2"`, `"B"`) as a 0-based index, or `ParseError` when out of range."""
    k = int(label) - 1 if label.isdigit() else ord(label.upper()) - ord("A")
    if not 0 <= k < n_sets:
        raise ParseError(f"the answer {label!r} names no set (there are {n_sets})")
    return k


def parse_choice(text: str, n_sets: int) -> int:
    """The set a judge's answer picks, 0-based. Accepted, in this order: the last `Answer: N`
    line (`Answer: Set 2`, `**Answer:** (B)`, `The answer is 3`), an answer that is only a label
    (`2`, `B.`, `Set 3`), or a last line starting with one (`Set 2, because ...`). Sets are
    numbered 1.. or lettered A..; anything else raises `ParseError`."""
    found = _ANSWER.findall(text)
    if found:
        return _index(found[-1], n_sets)
    bare = text.strip().strip("*_ ").strip()
    if m := _BARE.match(bare):
        return _index(m.group(1), n_sets)
    lines = [ln.strip().strip("*_ ").strip() for ln in text.splitlines() if ln.strip()]
    if lines and (m := _LEADING.match(lines[-1])):
        return _index(m.group(1), n_sets)
    raise ParseError(f"no set named in the answer {text[:80]!r}")


def random_latents(d_sae: int, latent: int, n: int, seed: int) -> list[int]:
    """`n` distinct latents of a coder of width `d_sae`, none of them `latent`, from `seed`."""
    if d_sae - 1 < n:
        raise ConfigError(f"output_eval needs {n} other latents; the coder has width {d_sae}")
    drawn = np.random.default_rng(seed).choice(d_sae - 1, size=n, replace=False)
    return [int(i) + (int(i) >= latent) for i in drawn]  # skip over the latent itself


def slot_orders(n_sets: int, repetitions: int, seed: int) -> list[list[int]]:
    """Per repetition, the arm shown in each slot (arm 0 is the latent). The latent's slot
    cycles through every position from a random start; the other arms are shuffled."""
    rng = np.random.default_rng(seed)
    start = int(rng.integers(n_sets))
    orders = []
    for r in range(repetitions):
        others = [int(a) for a in rng.permutation(np.arange(1, n_sets))]
        slot = (start + r) % n_sets
        orders.append([*others[:slot], 0, *others[slot:]])
    return orders


def _generate(
    backend: Backend,
    coder: SparseCoder,
    strengths: Sequence[Strength],
    prompts: Sequence[str],
    max_new_tokens: int,
    temperature: float,
    seed: int,
) -> list[list[str]]:
    """Each arm's continuations: one batched `generate` call per arm, one seed for all arms."""
    return [
        backend.generate(
            prompts,
            s.edits(coder),
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            seed=seed,
        )
        for s in strengths
    ]


class OutputEvalScorer:
    """Output-based evaluation: can a judge tell, from the explanation, which generations the
    latent steered, among those of random latents at the same strength?"""

    class Settings(MethodSettings):
        """The output_eval scorer's settings."""

        target_kl: float = Field(
            0.5,
            gt=0.0,
            description="strength of every arm: the mean KL(clean || intervened) of the "
            "next-token distributions over the calibration prompts, in nats",
        )
        kind: Literal["clamp", "steer"] = Field(
            "clamp",
            description='`"clamp"` the latent (error term kept) or `"steer"` along its decoder row',
        )
        tol: float = Field(
            0.1, gt=0.0, lt=1.0, description="a strength is reached within tol x target_kl"
        )
        max_steps: int = Field(16, ge=2, description="forward passes of each calibration search")
        prompts: list[Annotated[str, Field(min_length=1)]] | None = Field(
            None,
            min_length=1,
            strict=False,  # a tuple of prompts is fine
            description="neutral prompts for calibration; the first `n_prompts` are continued; "
            "`None`: the kit's `NEUTRAL_PROMPTS`",
        )
        n_prompts: int = Field(3, ge=1, description="prompts continued in every set")
        n_random: int = Field(
            2, ge=1, le=9, description="random latents of the same coder (chance 1/(n+1))"
        )
        max_new_tokens: int = Field(25, ge=1, description="tokens generated per continuation")
        temperature: float = Field(
            0.75, ge=0.0, le=2.0, description="sampling temperature of the subject model"
        )
        repetitions: int = Field(
            3, ge=1, le=50, description="judge calls, the order of the sets reshuffled each time"
        )
        judge_temperature: float = Field(
            0.0, ge=0.0, le=2.0, description="sampling temperature of the judge"
        )
        max_tokens: int = Field(300, ge=1, description="completion budget of each judge call")
        prompt: str | Path | None = Field(
            None, description='a bundled prompt name or a TOML path; `None`: "output_eval"'
        )

    name = "output_eval"
    # reads only record.latent: a run of it alone collects no activations
    needs: ClassVar[Needs] = Needs(provider=True, backend=True, coder=True, records=False)

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        self.prompt = load_prompt(self.settings.prompt or "output_eval")
        prompts = self.settings.prompts or list(NEUTRAL_PROMPTS)
        if len(prompts) < self.settings.n_prompts:
            raise ConfigError(
                f"scorer {self.name!r}: n_prompts={self.settings.n_prompts} but only "
                f"{len(prompts)} prompts are given"
            )
        self.calibration_prompts = tuple(prompts)
        self.generation_prompts = tuple(prompts[: self.settings.n_prompts])

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, with the prompt by `name@version`."""
        return self.settings.model_dump(mode="json") | {"prompt": self.prompt.id}

    def preflight(self, ctx: MethodContext) -> None:
        """Before the run: the coder has enough other latents to draw the random arms from."""
        if ctx.coder is not None and ctx.coder.d_sae - 1 < self.settings.n_random:
            raise ConfigError(
                f"scorer {self.name!r}: n_random={self.settings.n_random} random latents, but "
                f"the coder {ctx.coder.id} has width {ctx.coder.d_sae}; lower n_random"
            )

    def request(self, explanation: Explanation, sets: Sequence[Sequence[str]]) -> ChatRequest:
        """The judge's request: the explanation and the sets, in the order given."""
        blocks = []
        for k, continuations in enumerate(sets, start=1):
            lines = [
                f"- {one_line(neutralise(p.strip()))} | {one_line(neutralise(c.strip()))}"
                for p, c in zip(self.generation_prompts, continuations, strict=True)
            ]
            blocks.append(f"Set {k}:\n" + "\n".join(lines))
        n = len(sets)
        labels = ", ".join(map(str, range(1, n))) + f" or {n}"
        user = self.prompt.render_user(
            explanation=one_line_explanation(explanation),
            sets="\n\n".join(blocks),
            n_sets=n,
            labels=labels,
        )
        return ChatRequest(
            messages=(
                Message(role="system", content=self.prompt.render_system(n_sets=n, labels=labels)),
                Message(role="user", content=user),
            ),
            temperature=self.settings.judge_temperature,
            max_tokens=self.settings.max_tokens,
        )

    async def strengths(self, ctx: MethodContext, arms: Sequence[int]) -> list[Strength]:
        """Each arm's calibrated strength (cached per latent by `calibrate`)."""
        s = self.settings
        return [
            await calibrate(
                ctx,
                latent,
                target_kl=s.target_kl,
                prompts=self.calibration_prompts,
                kind=s.kind,
                tol=s.tol,
                max_steps=s.max_steps,
            )
            for latent in arms  # one after another: each search holds the model lock anyway
        ]

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.recorded_settings()
        s = self.settings
        problem = input_error(record, explanation)
        try:
            backend, coder = require_model(ctx, self.name)
        except EvidenceUnavailable as e:
            problem = problem or str(e)
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)
        latent = record.latent.index
        try:
            if not 0 <= latent < coder.d_sae:
                raise ConfigError(f"latent {latent} is not in the coder {coder.id}")
            others = random_latents(
                coder.d_sae, latent, s.n_random, latent_seed(ctx, record, f"{self.name}/arms")
            )
            arms = [latent, *others]
            strengths = await self.strengths(ctx, arms)
            sets = await run_model(
                backend,
                _generate,
                backend,
                coder,
                strengths,
                self.generation_prompts,
                s.max_new_tokens,
                s.temperature,
                latent_seed(ctx, record, f"{self.name}/generate"),
            )
        except SaexplainError as e:  # calibration or generation refused: nothing paid yet
            message = f"{type(e).__name__}: {e}"
            return error_score(record, explanation, self.name, settings, message)

        orders = slot_orders(len(arms), s.repetitions, latent_seed(ctx, record, self.name))
        requests = [self.request(explanation, [sets[a] for a in order]) for order in orders]
        outcomes: list[Outcome] = await asyncio.gather(*(call(ctx, r) for r in requests))
        usage = total_usage(outcomes)

        predictions: list[Prediction] = []
        trials: list[JsonValue] = []
        for r, (order, outcome) in enumerate(zip(orders, outcomes, strict=True)):
            trial: dict[str, JsonValue] = {
                "order": [arms[a] for a in order],  # the latent shown in each slot
                "target_slot": order.index(0) + 1,
                "answer": outcome.response.text if outcome.response is not None else None,
            }
            error = outcome.error if outcome.response is None else None
            if outcome.response is not None:
                try:
                    slot = parse_choice(outcome.response.text, len(order))
                except ParseError as e:
                    discard_cached(outcome.response)  # a rerun asks again instead of replaying it
                    error = f"ParseError: {e}"
                else:
                    trial |= {"picked_slot": slot + 1, "picked_latent": arms[order[slot]]}
                    predictions.append(Prediction(item=r, truth=True, predicted=order[slot] == 0))
            if error is not None:
                trial["error"] = error
                predictions.append(Prediction(item=r, truth=True, error=error))
            trials.append(trial)

        answered = [p for p in predictions if p.predicted is not None]
        if not answered:
            message = f"no judge answer could be used: {predictions[0].error}"
            return error_after_call(record, explanation, self.name, settings, message, usage)
        accuracy = sum(bool(p.predicted) for p in answered) / len(answered)
        unreached = [st.latent for st in strengths if not st.reached]
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            value=accuracy,
            metrics={
                "accuracy": accuracy,
                "chance": 1.0 / len(arms),
                "n_repetitions": float(len(orders)),
                "n_answered": float(len(answered)),
                "target_kl": s.target_kl,
                "kl_reached": strengths[0].kl,
                "strength_reached": float(strengths[0].reached),
                "n_unreached": float(len(unreached)),
            },
            predictions=tuple(predictions),
            settings=settings,
            evidence={
                "prompts": list(self.generation_prompts),
                "sets": [
                    {
                        "latent": arm,
                        "role": "explained" if k == 0 else "random",
                        "strength": strengths[k].to_json(),
                        "continuations": list(sets[k]),
                    }
                    for k, arm in enumerate(arms)
                ],
                "trials": trials,
                "unreached": list(unreached),
            },
            usage=usage,
        )


def register(register: Register) -> None:
    register(
        "output_eval",
        OutputEvalScorer,
        description="A judge LLM picks, from the explanation, the generations the latent steered "
        "among those of random latents at the same calibrated KL (output-centric paper).",
    )
