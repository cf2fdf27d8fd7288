"""The `selfexplain` explainer: its settings, the layers and scales it uses per model, the
`min_selfsim` calibration, and the evidence it records for each latent."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field, JsonValue, field_validator, model_validator

from saexplain.explainers.selfexplain._arrays import Floats, as_floats
from saexplain.explainers.selfexplain.prompt import PreparedPrompt, prepare_prompt
from saexplain.explainers.selfexplain.relevancy import relevancy
from saexplain.explainers.selfexplain.sweep import sweep
from saexplain.methods import (
    Backend,
    ConfigError,
    DimensionMismatchError,
    Explanation,
    LatentIndexError,
    LatentRecord,
    MethodContext,
    MethodSettings,
    Needs,
    PromptTemplate,
    Register,
    Status,
    TokenBatch,
    latent_seed,
    load_prompt,
    model_lock,
    run_model,
)

__all__ = ["SelfExplainer", "register"]


def _cut(text: str, stops: Sequence[str]) -> str:
    cuts = [text.index(s) for s in stops if s and s in text]
    return (text[: min(cuts)] if cuts else text).strip()


def _floats(x: Floats, digits: int = 6) -> list[JsonValue]:
    return [round(float(v), digits) for v in x]


class SelfExplainer:
    """Self-explanation of a latent by patching its decoder direction into a prompt.

    Settings (`SelfExplainer.Settings`, all recorded with every explanation): the prompts, the
    scale sweep (`n_scales` scales `linspace(0, max_scale, n_scales)` times the median residual
    norm at `patch_layer` over the prompt's tokens, BOS excluded, so one setting works across
    models), the layers, the composite's `alpha` and `top_k`, generation, and `min_selfsim`
    (`"auto"`: calibrated on the run, once per model, by `calibrate`).
    """

    class Settings(MethodSettings):
        """What selfexplain patches, sweeps and generates."""

        prompts: list[str | Path] = Field(
            ["selfexplain_meaning", "selfexplain_repeat"],
            min_length=1,
            strict=False,  # a tuple of names is fine
            description="prompt names or `.toml` paths; the first gives the text",
        )
        n_scales: int = Field(32, ge=2, description="scales in the sweep")
        max_scale: float = Field(
            2.0,
            gt=0.0,
            description="largest scale, in units of the residual norm at the patch layer",
        )
        patch_layer: int | None = Field(
            0,
            ge=0,
            description="block whose input is patched (0: the token embeddings; see below)",
        )
        probe_layer: int | None = Field(
            None,
            ge=0,
            description="block whose input gives self-similarity (deeper than the patch); "
            "`None`: `round(probe_depth * n_layers)`",
        )
        probe_depth: float = Field(
            0.8,
            gt=0.0,
            le=1.0,
            description="default probe depth as a fraction of the model's layers",
        )
        alpha: float = Field(
            0.4, ge=0.0, le=1.0, description="weight of self-similarity in the composite"
        )
        top_k: int = Field(
            3, ge=1, description="scales that generate answers (fewer than `n_scales`)"
        )
        max_new_tokens: int = Field(24, ge=1, description="answer length bound")
        temperature: float = Field(
            0.0,
            ge=0.0,
            description="0 is greedy; above 0 samples with a seed derived from the run seed and "
            "the latent",
        )
        batch_size: int = Field(
            32,
            ge=1,
            description="rows per forward pass (memory grows with rows x prompt length x "
            "vocabulary)",
        )
        min_selfsim: float | Literal["auto"] = Field(
            0.01,
            description="peak self-similarity below this marks the latent not self-explainable "
            '(`"auto"`: calibrated on the run)',
        )

        @field_validator("prompts", mode="before")
        @classmethod
        def _one_prompt_as_list(cls, value: Any) -> Any:
            return [value] if isinstance(value, str | Path) else value

        @model_validator(mode="after")
        def _consistent(self) -> Self:
            if self.top_k >= self.n_scales:
                raise ValueError(
                    f"top_k must be in [1, n_scales={self.n_scales}), got {self.top_k}"
                )
            patch, probe = self.patch_layer, self.probe_layer
            if patch is not None and probe is not None and probe <= patch:
                raise ValueError(f"probe_layer {probe} must be deeper than patch_layer {patch}")
            return self

    name = "selfexplain"
    # the subject model and the decoder row only: no LLM, no examples (nothing is collected)
    needs: ClassVar[Needs] = Needs(backend=True, coder=True, records=False)

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        # raises ConfigError if unknown
        self.templates = [load_prompt(p) for p in self.settings.prompts]
        for t in self.templates:
            if "prefill" not in t.data:
                raise ConfigError(f"prompt {t.id} needs a `prefill` (the start of the answer)")
        self._calibrated: dict[str, float] = {}
        self._prepared: dict[tuple[str, str], tuple[PreparedPrompt, float]] = {}

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, with the prompts by `name@version`."""
        return self.settings.model_dump(mode="json") | {"prompts": [t.id for t in self.templates]}

    def layers(self, backend: Backend) -> tuple[int, int]:
        """(patch layer, probe layer) for this backend's model."""
        n = backend.n_layers
        # Default 0: the paper patched layer 2 of Gemma-2B and notes 0 works too; on SmolLM2-135M
        # word directions are recovered at layer 0 and at no scale (0.02x-2x the norm) at layer 2,
        # where the residual norm has grown 25-fold.
        patch = self.settings.patch_layer if self.settings.patch_layer is not None else 0
        probe = self.settings.probe_layer
        if probe is None:
            probe = min(n - 1, max(patch + 1, round(self.settings.probe_depth * n)))
        if not 0 <= patch < probe < n:
            raise ConfigError(
                f"selfexplain needs 0 <= patch_layer ({patch}) < probe_layer ({probe}) < "
                f"n_layers ({n}) on {backend.model_id}"
            )
        return patch, probe

    def prepared(self, backend: Backend, template: PromptTemplate) -> tuple[PreparedPrompt, float]:
        """The prompt for this backend and the median residual norm at the patch layer over its
        tokens (BOS excluded; the median ignores the few huge-norm "sink" tokens), cached per
        model."""
        key = (f"{backend.name}:{backend.model_id}:{id(backend)}", template.id + template.source)
        if key not in self._prepared:
            patch, _ = self.layers(backend)
            prompt = prepare_prompt(backend, template)
            _, resid = backend.probe(TokenBatch.from_lists([list(prompt.ids)]), [], layers=[patch])
            norms = np.linalg.norm(as_floats(resid[patch])[0], axis=-1)
            skip = (
                1
                if backend.bos_token_id is not None and prompt.ids[0] == backend.bos_token_id
                else 0
            )
            self._prepared[key] = (prompt, float(np.median(norms[skip:])))
        return self._prepared[key]

    def calibrate(
        self, backend: Backend, *, n_random: int = 16, quantile: float = 0.9, seed: int = 0
    ) -> float:
        """A `min_selfsim` for this model and these layers: the `quantile` of the peak
        self-similarity that random unit directions reach with the first prompt (a null level; a
        latent that does no better is not self-explainable). Metrics only, no generation."""
        if n_random < 1 or not 0 <= quantile <= 1:
            raise ConfigError(
                f"need n_random >= 1 and quantile in [0, 1], got {n_random}, {quantile}"
            )
        with model_lock(backend):
            return self._calibrate(backend, n_random=n_random, quantile=quantile, seed=seed)

    def _calibrate(self, backend: Backend, *, n_random: int, quantile: float, seed: int) -> float:
        patch, probe = self.layers(backend)
        prompt, norm = self.prepared(backend, self.templates[0])
        scales = np.linspace(0.0, self.settings.max_scale, self.settings.n_scales) * norm
        rng = np.random.default_rng(seed)
        peaks = []
        for _ in range(n_random):
            direction = rng.normal(size=backend.d_model)
            metrics = sweep(
                backend,
                prompt,
                direction,
                scales,
                patch_layer=patch,
                probe_layer=probe,
                batch_size=self.settings.batch_size,
            )
            peaks.append(float(metrics.selfsim.max()))
        return float(np.quantile(peaks, quantile))

    def threshold(self, backend: Backend) -> float:
        """The `min_selfsim` level in force for this backend's model (calibrated once when
        "auto"; call under the model lock)."""
        if not isinstance(self.settings.min_selfsim, str):
            return self.settings.min_selfsim
        key = f"{backend.name}:{backend.model_id}:{id(backend)}"
        if key not in self._calibrated:
            self._calibrated[key] = self._calibrate(backend, n_random=16, quantile=0.9, seed=0)
        return self._calibrated[key]

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        if ctx.backend is None or ctx.coder is None:
            raise ConfigError("selfexplain needs a backend and a coder in the context")
        backend, coder = ctx.backend, ctx.coder
        index = record.latent.index
        if not 0 <= index < coder.d_sae:
            raise LatentIndexError(f"latent {index} not in [0, {coder.d_sae}) for {coder.id}")
        direction = as_floats(coder.W_dec[index])
        if direction.shape != (backend.d_model,):
            raise DimensionMismatchError(
                f"decoder row of {coder.id} has shape {direction.shape}; selfexplain patches the "
                f"residual stream of width {backend.d_model}"
            )
        if not np.linalg.norm(direction) > 0:
            raise ConfigError(f"latent {index} of {coder.id} has a zero decoder direction")
        seed = latent_seed(ctx, record, self.name)  # sampled generations differ between latents

        # in a worker thread, under the backend's model lock: other methods share the model
        return await run_model(backend, self._explain, record, backend, direction, seed)

    def _explain(
        self, record: LatentRecord, backend: Backend, direction: Floats, seed: int
    ) -> Explanation:
        patch, probe = self.layers(backend)
        unit = direction / np.linalg.norm(direction)
        results: dict[str, JsonValue] = {}
        best: list[str] = []
        peaks: list[float] = []
        for template in self.templates:
            prompt, norm = self.prepared(backend, template)
            scales = np.linspace(0.0, self.settings.max_scale, self.settings.n_scales) * norm
            metrics = sweep(
                backend,
                prompt,
                unit,
                scales,
                patch_layer=patch,
                probe_layer=probe,
                batch_size=self.settings.batch_size,
                max_new_tokens=self.settings.max_new_tokens,
                temperature=self.settings.temperature,
                seed=seed,
            )
            comp = metrics.composite(self.settings.alpha)
            candidates = [i for i in np.argsort(-comp, kind="stable") if scales[i] > 0]
            top = candidates[: self.settings.top_k]
            vectors = scales[top][:, None] * unit[None, :]
            raw = [metrics.generations[i] for i in top]
            answers = [_cut(text, prompt.stops) for text in raw]
            answer_ids = [
                backend.tokenize([a], prepend_bos=False).rows()[0] if a else [] for a in answers
            ]
            rel = relevancy(backend, prompt, answer_ids, vectors, patch_layer=patch)
            peaks.append(float(metrics.selfsim.max()))
            generations: list[JsonValue] = [
                {
                    "rank": rank,
                    "scale": round(float(scales[i]), 6),
                    "relative_scale": round(float(scales[i] / norm), 6),
                    "text": answer,
                    "raw": text,
                    "relevancy": _floats(np.asarray(r)),
                    "relevancy_mean": round(float(np.mean(r)), 6) if r else None,
                }
                for rank, (i, answer, text, r) in enumerate(
                    zip(top, answers, raw, rel, strict=True), start=1
                )
            ]
            results[template.name] = {
                "prompt_id": template.id,
                "prompt": prompt.text,
                "chat_template": prompt.chat_template,
                "placeholder_positions": list(prompt.positions),
                "residual_norm": round(norm, 6),
                "scales": _floats(scales),
                "selfsim": _floats(metrics.selfsim),
                "entropy": _floats(metrics.entropy),
                "composite": _floats(comp),
                "answers": [_cut(text, prompt.stops) for text in metrics.generations],
                "peak_selfsim": round(peaks[-1], 6),
                "forward_calls": metrics.forward_calls,
                "generations": generations,
            }
            best.append(next((a for a in answers if a), ""))
        level = self.threshold(backend)
        evidence: dict[str, JsonValue] = {
            "patch_layer": patch,
            "probe_layer": probe,
            "peak_selfsim": round(max(peaks), 6),
            "min_selfsim": round(level, 6),
            "prompts": results,
        }
        settings = self.recorded_settings() | {"patch_layer": patch, "probe_layer": probe}
        common: dict[str, Any] = {
            "latent": record.latent,
            "explainer": self.name,
            "settings": settings,
            "evidence": evidence,
        }
        if max(peaks) < level:
            how = " (calibrated)" if self.settings.min_selfsim == "auto" else ""
            return Explanation(
                **common,
                status=Status.FAILED,
                error=(
                    f"not self-explainable: peak self-similarity {max(peaks):.4f} < min_selfsim "
                    f"{level:.4f}{how} (probe layer {probe}, patch layer {patch})"
                ),
            )
        if not best[0]:
            return Explanation(
                **common,
                status=Status.FAILED,
                error=f"prompt {self.templates[0].id} gave only empty answers at the top scales",
            )
        return Explanation(**common, text=best[0])


def register(register: Register) -> None:
    register(
        "selfexplain",
        SelfExplainer,
        description="the subject model explains its own latent (patched placeholder, scale sweep)",
    )
