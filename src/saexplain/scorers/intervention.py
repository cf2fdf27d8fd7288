"""`intervention` (EleutherAI, "interpreting millions of features", eq. 1-2): does the explanation
predict what intervening on the latent does to the subject model's output?

For each target strength (`target_kl`, in nats) the latent's clamp value (or steering scale) is
calibrated so that the mean KL(clean || intervened) of the next-token distributions over neutral
prompts reaches the target (`calibrate` of the methods kit: paper eq. 2, within `tol`), so every
latent is compared at the same strength. From each prompt the subject model samples one clean
and one intervened continuation at temperature 1 (`generate_pairs`, both arms in one batch). The
scorer provider gives log p_M(explanation | continuation) (the explanation scored as the reply to
`prompts/intervention.toml`, `ChatRequest.score_text`), and the score at that target is

    S = mean over prompts of [log p_M(z | intervened) - log p_M(z | clean)]     (eq. 1)

The headline (`Score.value`) is the mean of S over the targets. Three baselines are computed in
the same score, at every target, from the same prompts and the same generation seed:

- `random_latents`: the same explanation scored on the continuations of `n_random_latents` other
  latents of the same coder (drawn with the latent's seed), each calibrated to the same target.
  A specific explanation should gain nothing from them.
- `random_coder` (`random_coder=True`): the same explanation scored on the same latent of a
  random coder of the same shape (`RandomCoder`: d_in, d_sae and hooks of the real one, a random
  unit decoder row drawn with the latent's seed), calibrated to the same target through the
  same edits. It asks whether *any* push of that size would make the explanation likelier.
- `decoys`: the prompt's fixed generic explanations of no latent in particular (`decoys`), scored
  on this latent's own continuations: the "shuffled explanations" baseline of the paper, with a
  fixed set because another latent's explanation is not available to a scorer. Shuffling real
  explanations across latents is left to the analysis of a run's results.

A target the calibration cannot reach (KL not within `tol` of it) is still scored at the value
the search ended on and reported: `metrics["kl=T/reached"]` is 0 and the strength's evidence says
`reached: false`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, JsonValue

from saexplain.methods import (
    NEUTRAL_PROMPTS,
    ChatRequest,
    ConfigError,
    Explanation,
    LatentRecord,
    Message,
    MethodContext,
    MethodSettings,
    Needs,
    Outcome,
    Prediction,
    PromptTemplate,
    Register,
    SaexplainError,
    Score,
    SparseCoder,
    Status,
    Strength,
    calibrate,
    call,
    discard_cached,
    error_score,
    generate_pairs,
    input_error,
    latent_seed,
    load_prompt,
    neutralise,
    one_line,
    one_line_explanation,
    total_usage,
    write_hook,
)

Pairs = list[tuple[str, str]]  # (clean, intervened) continuation per prompt


@dataclass(frozen=True)
class Gains:
    """log p(z | intervened) - log p(z | clean) per prompt (None where a call failed)."""

    gains: list[float | None]
    errors: list[str | None]

    @property
    def mean(self) -> float | None:
        answered = [g for g in self.gains if g is not None]
        return float(np.mean(answered)) if answered else None


def target_key(target: float) -> str:
    """The prefix of a target's metrics, e.g. `kl=0.25` (`kl=0.25/score`, ...)."""
    return f"kl={target:g}"


def _mean(values: Sequence[float | None]) -> float | None:
    found = [v for v in values if v is not None]
    return float(np.mean(found)) if found else None


class RandomCoder:
    """A random coder of the same shape as `like` (d_in, d_sae, hooks), for the `random_coder`
    baseline: latent `latent` has a random unit decoder row drawn with `seed`.

    No encoder is needed: an intervention sets (clamp) or adds along (steer) the latent's decoder
    direction, and this coder's encoder reads every latent as 0 (as a random top-k encoder would,
    nearly always, for one given latent), so clamping the latent to v adds v times its row, as
    steering does. Only that row is drawn: the rows of a random coder are independent, so the
    others would not change the baseline, and a wide coder costs no memory. The other rows are
    zero. `encode` and `decode` work on numpy arrays and on the torch tensors of the torch
    backends (`new_zeros` / `new_tensor`: same device and dtype), without importing torch.
    """

    def __init__(self, like: SparseCoder, latent: int, seed: int) -> None:
        self.d_in, self.d_sae = like.d_in, like.d_sae
        self.hook, self.hook_out = like.hook, write_hook(like)  # `Transcoder`: where it writes
        self.exclude_bos = like.exclude_bos
        self.latent = latent
        # the seed in the id: the calibration cache tells the random coders of two latents apart
        self.id = f"random-coder/{like.id}/{seed}"
        row = np.random.default_rng(seed).normal(size=self.d_in)
        self.row = (row / np.linalg.norm(row)).astype(np.float32)
        self._W_dec: np.ndarray[Any, np.dtype[np.float32]] | None = None

    @property
    def W_dec(self) -> np.ndarray[Any, np.dtype[np.float32]]:
        """(d_sae, d_in): zeros (not touched, so not allocated) but for the latent's row."""
        if self._W_dec is None:
            self._W_dec = np.zeros((self.d_sae, self.d_in), dtype=np.float32)
            self._W_dec[self.latent] = self.row
        return self._W_dec

    def encode(self, x: Any) -> Any:
        shape = (*x.shape[:-1], self.d_sae)
        return np.zeros(shape, dtype=x.dtype) if isinstance(x, np.ndarray) else x.new_zeros(shape)

    def decode(self, z: Any) -> Any:
        # every other latent is 0 (see `encode`) and has a zero row: only this latent writes
        row = self.row if isinstance(z, np.ndarray) else z.new_tensor(self.row)
        return z[..., self.latent, None] * row


class InterventionScorer:
    """Intervention scoring: how much likelier the explanation is given intervened output."""

    class Settings(MethodSettings):
        """The intervention scorer's settings."""

        target_kl: list[float] = Field(
            [0.25, 0.5],
            min_length=1,
            strict=False,
            description="target strengths: mean KL(clean || intervened) of the next-token "
            "distributions over the prompts, in nats; one score (and its baselines) per target",
        )
        kind: Literal["clamp", "steer"] = Field(
            "clamp",
            description='the intervention: `"clamp"` the latent to a value (the coder\'s '
            'reconstruction error kept) or `"steer"` along its decoder row',
        )
        tol: float = Field(
            0.1,
            gt=0.0,
            lt=1.0,
            description="a target is reached when |KL - target| <= tol x target",
        )
        max_steps: int = Field(
            16,
            ge=2,
            le=64,
            description="forward passes the calibration may use per target (one batched pass "
            "over all prompts each, the clean one included)",
        )
        prompts: list[str] | None = Field(
            None,
            min_length=1,
            strict=False,
            description="the neutral prompts (calibration and generation); `None`: the kit's "
            "`NEUTRAL_PROMPTS`",
        )
        max_new_tokens: int = Field(32, ge=1, le=512, description="tokens per continuation")
        temperature: float = Field(
            1.0, gt=0.0, le=2.0, description="sampling temperature of the continuations (paper: 1)"
        )
        n_random_latents: int = Field(
            2,
            ge=0,
            description="other latents of the same coder (latent's seed) whose continuations "
            "make the `random_latents` baseline; `0`: none",
        )
        random_coder: bool = Field(
            True,
            description="the `random_coder` baseline: the explanation scored on the same latent "
            "of a random coder of the same shape (a random unit decoder row, latent's seed), "
            "calibrated to the same target",
        )
        decoys: list[str] | None = Field(
            None,
            strict=False,
            description="fixed explanations scored on this latent's continuations (the "
            "`decoys` baseline); `None`: the prompt's `decoys`; `[]`: none",
        )
        prompt: str | Path | None = Field(
            None, description='a bundled prompt name or a TOML path; `None`: "intervention"'
        )

    name = "intervention"
    needs: ClassVar[Needs] = Needs(provider=True, backend=True, coder=True, records=False)

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        if any(t <= 0 for t in self.settings.target_kl):
            raise ConfigError(
                f"scorer {self.name!r}: every target_kl must be > 0, got {self.settings.target_kl}"
            )
        self.prompt: PromptTemplate = load_prompt(self.settings.prompt or "intervention")
        decoys = self.settings.decoys
        if decoys is None:
            found = self.prompt.data.get("decoys", [])
            if not isinstance(found, list) or not all(isinstance(d, str) for d in found):
                raise ConfigError(f"prompt {self.prompt.id}: `decoys` must be a list of strings")
            decoys = found
        self.decoys = [" ".join(d.split()) for d in decoys if d.strip()]
        self.prompts = tuple(self.settings.prompts or NEUTRAL_PROMPTS)

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, with the prompt by `name@version`, the decoys and prompts."""
        return self.settings.model_dump(mode="json") | {
            "prompt": self.prompt.id,
            "decoys": list(self.decoys),
            "prompts": list(self.prompts),
        }

    # --- checks -----------------------------------------------------------------------------------

    def preflight(self, ctx: MethodContext) -> None:
        """Before the run: a subject model, a coder and a scorer provider with prompt logprobs."""
        if ctx.backend is None or ctx.coder is None:
            raise ConfigError(
                f"scorer {self.name!r} intervenes on the subject model: it needs a backend and "
                "a coder"
            )
        try:
            provider = ctx.provider("scorer")
        except LookupError:
            what = "no scorer provider is configured"
        else:
            if provider.capabilities.prompt_logprobs:
                return
            what = f"provider {provider.name}:{provider.model} gives no prompt logprobs"
        raise ConfigError(
            f"scorer {self.name!r} needs log p(explanation | continuation) from the scorer "
            f"provider, but {what}; use a provider with prompt logprobs: the local in-process "
            "provider (e.g. scorer_model 'local/smollm2'), or a served model through litellm "
            "that returns prompt logprobs"
        )

    # --- the scorer model -------------------------------------------------------------------------

    def request(self, explanation: str, continuation: str) -> ChatRequest:
        """log p_M(explanation | continuation): the explanation scored as the reply."""
        text = one_line(neutralise(continuation.strip()))  # model output is data, as dataset text
        return ChatRequest(
            messages=(
                Message(role="system", content=self.prompt.render_system()),
                Message(role="user", content=self.prompt.render_user(continuation=text)),
            ),
            temperature=0.0,
            max_tokens=1,
            score_text=explanation,
        )

    async def _logprob(
        self, ctx: MethodContext, request: ChatRequest
    ) -> tuple[float | None, str | None, Outcome]:
        outcome = await call(ctx, request)
        if outcome.response is None:
            return None, outcome.error or "provider call failed", outcome
        if not outcome.response.scored:
            discard_cached(outcome.response)  # not used: a rerun asks again
            return None, "the provider returned no prompt logprobs", outcome
        return float(sum(t.logprob for t in outcome.response.scored)), None, outcome

    async def gains(
        self, ctx: MethodContext, explanation: str, pairs: Pairs
    ) -> tuple[Gains, list[Outcome]]:
        """The explanation's gain on each (clean, intervened) pair; the calls run concurrently."""
        requests = [self.request(explanation, text) for pair in pairs for text in pair]
        got = await asyncio.gather(*(self._logprob(ctx, r) for r in requests))
        gains: list[float | None] = []
        errors: list[str | None] = []
        for i in range(0, len(got), 2):
            (clean, e_clean, _), (steered, e_steered, _) = got[i], got[i + 1]
            if clean is None or steered is None:
                gains.append(None)
                errors.append(e_steered or e_clean)
            else:
                gains.append(steered - clean)
                errors.append(None)
        return Gains(gains, errors), [o for _, _, o in got]

    # --- the subject model ------------------------------------------------------------------------

    async def _arm(
        self, ctx: MethodContext, latent: int, target: float, seed: int
    ) -> tuple[Strength, Pairs]:
        """The strength reaching `target` for `latent`, and its continuation pairs."""
        s = self.settings
        strength = await calibrate(
            ctx,
            latent,
            target_kl=target,
            prompts=self.prompts,
            kind=s.kind,
            tol=s.tol,
            max_steps=s.max_steps,
        )
        pairs = await generate_pairs(
            ctx,
            strength,
            self.prompts,
            max_new_tokens=s.max_new_tokens,
            temperature=s.temperature,
            seed=seed,
        )
        return strength, list(pairs)

    def random_latents(self, record: LatentRecord, ctx: MethodContext) -> list[int]:
        """`n_random_latents` other latents of the coder, drawn with the latent's own seed."""
        assert ctx.coder is not None
        others = [i for i in range(ctx.coder.d_sae) if i != record.latent.index]
        k = min(self.settings.n_random_latents, len(others))
        rng = np.random.default_rng(latent_seed(ctx, record, "intervention/random-latents"))
        return sorted(int(i) for i in rng.choice(others, size=k, replace=False)) if k else []

    # --- scoring ----------------------------------------------------------------------------------

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.recorded_settings()
        self.preflight(ctx)  # a ConfigError before any model work
        problem = input_error(record, explanation)
        if problem is not None:
            return error_score(record, explanation, self.name, settings, problem)
        # One generation seed for the latent and its random latents: common random numbers, so
        # the arms differ by the intervention, not by the draw.
        seed = latent_seed(ctx, record, "intervention/generate")
        randoms = self.random_latents(record, ctx)
        settings |= {"latent_seed": seed, "random_latents": list(randoms)}
        random_ctx = None
        if self.settings.random_coder:
            assert ctx.coder is not None  # preflight
            coder_seed = latent_seed(ctx, record, "intervention/random-coder")
            random_coder = RandomCoder(ctx.coder, record.latent.index, coder_seed)
            random_ctx = dataclasses.replace(ctx, coder=random_coder)
            settings |= {"random_coder_seed": coder_seed}
        described = one_line_explanation(explanation)

        metrics: dict[str, float | None] = {}
        targets: list[JsonValue] = []
        predictions: list[Prediction] = []
        outcomes: list[Outcome] = []
        per_target: list[float | None] = []
        for t_index, target in enumerate(self.settings.target_kl):
            key = target_key(target)
            try:
                strength, pairs = await self._arm(ctx, record.latent.index, target, seed)
            except SaexplainError as e:  # the backend refused the intervention
                problem = f"{type(e).__name__}: {e}"
                return self._error(record, explanation, settings, problem, outcomes, targets)
            own, calls = await self.gains(ctx, described, pairs)
            outcomes += calls
            decoys: list[float | None] = []
            for decoy in self.decoys:
                got, calls = await self.gains(ctx, decoy, pairs)
                outcomes += calls
                decoys.append(got.mean)
            random_means: list[float | None] = []
            random_strengths: list[JsonValue] = []
            for other in randoms:
                try:
                    r_strength, r_pairs = await self._arm(ctx, other, target, seed)
                except SaexplainError as e:  # left out of the baseline, and said so
                    random_strengths.append({"latent": other, "error": f"{type(e).__name__}: {e}"})
                    continue
                got, calls = await self.gains(ctx, described, r_pairs)
                outcomes += calls
                random_means.append(got.mean)
                random_strengths.append(r_strength.to_json() | {"score": got.mean})
            coder_mean, coder_strength = await self._random_coder(
                random_ctx, record.latent.index, target, seed, described, outcomes
            )

            n = len(self.prompts)
            for i, (gain, error) in enumerate(zip(own.gains, own.errors, strict=True)):
                item = t_index * n + i
                if gain is None:
                    predictions.append(Prediction(item=item, truth=True, error=error))
                    continue
                # truth: the intervened text should make the explanation likelier
                probability = float(0.5 * (1.0 + np.tanh(np.clip(gain, -40.0, 40.0) / 2.0)))
                predictions.append(
                    Prediction(item=item, truth=True, predicted=gain > 0, probability=probability)
                )
            per_target.append(own.mean)
            metrics |= {
                f"{key}/score": own.mean,
                f"{key}/random_latents": _mean(random_means),
                f"{key}/decoys": _mean(decoys),
                f"{key}/random_coder": coder_mean,
                f"{key}/kl": strength.kl,
                f"{key}/value": strength.value,
                f"{key}/reached": float(strength.reached),
            }
            targets.append(
                {
                    "target_kl": target,
                    "score": own.mean,
                    "gains": [None if g is None else round(g, 4) for g in own.gains],
                    "random_latents": _mean(random_means),
                    "decoys": _mean(decoys),
                    "decoy_scores": list(decoys),
                    "strength": strength.to_json(),
                    "random_strengths": random_strengths,
                    "random_coder": coder_mean,
                    "random_coder_strength": coder_strength,
                    "pairs": [list(p) for p in pairs],
                }
            )

        value = _mean(per_target)
        reached = [m for k, m in metrics.items() if k.endswith("/reached")]
        metrics |= {
            "score": value,
            "random_latents": _mean(
                [metrics[f"{target_key(t)}/random_latents"] for t in self.settings.target_kl]
            ),
            "decoys": _mean([metrics[f"{target_key(t)}/decoys"] for t in self.settings.target_kl]),
            "random_coder": _mean(
                [metrics[f"{target_key(t)}/random_coder"] for t in self.settings.target_kl]
            ),
            "n_unreached": float(sum(r == 0.0 for r in reached)),
            "n_items": float(len(predictions)),
            "n_answered": float(sum(p.error is None for p in predictions)),
            "n_errors": float(sum(p.error is not None for p in predictions)),
        }
        evidence: dict[str, JsonValue] = {"targets": targets}
        usage = total_usage(outcomes)
        if value is None:
            first = next((p.error for p in predictions if p.error), None)
            return Score(
                latent=record.latent,
                scorer=self.name,
                explainer=explanation.explainer,
                status=Status.ERROR,
                error=f"every scoring call failed; first error: {first}",
                metrics=metrics,
                predictions=tuple(predictions),
                settings=settings,
                evidence=evidence,
                usage=usage,
            )
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            value=value,
            metrics=metrics,
            predictions=tuple(predictions),
            settings=settings,
            evidence=evidence,
            usage=usage,
        )

    async def _random_coder(
        self,
        ctx: MethodContext | None,
        latent: int,
        target: float,
        seed: int,
        explanation: str,
        outcomes: list[Outcome],
    ) -> tuple[float | None, JsonValue]:
        """The `random_coder` baseline at `target` (`ctx` holds the random coder; None: off):
        its mean gain and its strength's evidence (or the error that left it out)."""
        if ctx is None:
            return None, None
        try:
            strength, pairs = await self._arm(ctx, latent, target, seed)
        except SaexplainError as e:  # left out of the baseline, and said so
            return None, {"error": f"{type(e).__name__}: {e}"}
        got, calls = await self.gains(ctx, explanation, pairs)
        outcomes += calls
        return got.mean, strength.to_json() | {"score": got.mean}

    def _error(
        self,
        record: LatentRecord,
        explanation: Explanation,
        settings: dict[str, JsonValue],
        problem: str,
        outcomes: Sequence[Outcome],
        targets: list[JsonValue],
    ) -> Score:
        """An error score after some work: the usage paid so far and the targets done."""
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            status=Status.ERROR,
            error=problem,
            settings=settings,
            evidence={"targets": targets},
            usage=total_usage(outcomes),
        )


def register(register: Register) -> None:
    register(
        "intervention",
        InterventionScorer,
        description="Is the explanation likelier given output with the latent intervened on, "
        "at a calibrated KL strength? Beside random-latent, random-coder and decoy baselines.",
    )
