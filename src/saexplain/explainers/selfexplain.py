"""`selfexplain`: the subject model explains its own latent (no LLM, no activation dataset).

A chat prompt asks for the meaning of a placeholder word ("X"), with the answer prefilled up to the
explanation. The residual stream entering block `patch_layer` is replaced, at every placeholder
token, by `scale * d` (`d` the latent's unit decoder direction), for a sweep of scales evaluated
as one batch. From the same patched passes come, per scale:

- self-similarity: cosine between `d` and the residual of the last prompt token entering block
  `probe_layer`;
- entropy of the first answer token's distribution;
- composite: `alpha * norm(selfsim) - (1 - alpha) * norm(entropy)`, both min-max normalised across
  the sweep;
- the answer the model generates (greedy, or sampled), decoded from that same pass's KV cache
  where the backend can.

The answers of the `top_k` scales by composite are the explanations; each of their tokens'
relevancy is its probability with the patch minus without it. A latent whose peak self-similarity
stays under `min_selfsim` is reported as not self-explainable (`Status.FAILED`). `flag_generic`
flags answers that many latents share. Prompts are data (`selfexplain_meaning.toml`,
`selfexplain_repeat.toml`); a `prompts` setting takes bundled names or paths to user files.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
import numpy.typing as npt
from pydantic import Field, JsonValue, field_validator, model_validator

from saexplain.methods import (
    Backend,
    BackendError,
    ChatTemplating,
    ConfigError,
    DimensionMismatchError,
    Explanation,
    LatentIndexError,
    LatentRecord,
    Message,
    MethodContext,
    MethodSettings,
    Needs,
    ProbeAndGenerate,
    PromptTemplate,
    Register,
    Replace,
    Status,
    TokenBatch,
    latent_seed,
    load_prompt,
    model_lock,
    run_model,
    to_numpy,
)

__all__ = [
    "PreparedPrompt",
    "SelfExplainer",
    "Sweep",
    "composite",
    "flag_generic",
    "prepare_prompt",
    "register",
    "relevancy",
    "sweep",
]

Floats = npt.NDArray[np.float64]


def _np(x: Any) -> Floats:
    """A float64 numpy copy of a numpy array or tensor-like value (no torch import)."""
    return to_numpy(x, np.float64)


# --- prompts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedPrompt:
    """A rendered self-explanation prompt: its text, tokens (BOS prepended) and where to patch."""

    template: PromptTemplate
    text: str
    ids: tuple[int, ...]
    positions: tuple[int, ...]  # placeholder tokens (patched)
    chat_template: str  # "model" (the backend's `chat_prompt`) or "plain" (`plain_chat`)

    @property
    def last(self) -> int:
        """The last prompt token (its residual gives self-similarity, its logits the entropy)."""
        return len(self.ids) - 1

    @property
    def stops(self) -> tuple[str, ...]:
        return tuple(str(s) for s in self.template.data.get("stop", ()))


def plain_chat(messages: Sequence[Message], prefill: str) -> str:
    """The fallback chat layout for backends without `chat_prompt`."""
    names = {"system": "System", "user": "User", "assistant": "Assistant"}
    lines = [f"{names[m.role]}: {m.content}" for m in messages]
    return "\n".join([*lines, f"Assistant: {prefill}"])


def prepare_prompt(backend: Backend, template: PromptTemplate) -> PreparedPrompt:
    """Render `template` in the backend's chat format and locate its placeholder tokens.

    The template needs `user`, `prefill` (the start of the answer) and `placeholder` (a word that
    tokenizes on its own, default "X"); `$placeholder` marks where it goes.
    """
    placeholder = str(template.data.get("placeholder", "X"))
    if "prefill" not in template.data:
        raise ConfigError(f"prompt {template.id} needs a `prefill` (the start of the answer)")
    if not placeholder.strip():
        raise ConfigError(f"prompt {template.id}: empty placeholder")
    system = template.render_system(placeholder=placeholder)
    messages = [Message(role="system", content=system)] if system.strip() else []
    messages.append(Message(role="user", content=template.render_user(placeholder=placeholder)))
    prefill = PromptTemplate(
        name=template.name, version=template.version, system="", user=str(template.data["prefill"])
    ).render_user(placeholder=placeholder)
    rendered = (
        backend.chat_prompt(messages, prefill) if isinstance(backend, ChatTemplating) else None
    )
    if rendered is not None:
        text, kind = str(rendered), "model"
    else:
        text, kind = plain_chat(messages, prefill), "plain"
    ids = tuple(backend.tokenize([text]).rows()[0])
    bare = backend.tokenize([text], prepend_bos=False).rows()[0]
    shift = len(ids) - len(bare)  # the BOS the backend prepends, if any
    pieces = backend.str_tokens(bare)
    if "".join(pieces) != text:
        raise BackendError(
            f"{backend.name}: the tokens of prompt {template.id} do not spell its text, so the "
            "placeholder cannot be located"
        )
    # Patch the placeholder where the prompt put it (the user turn and the prefill), as a whole
    # word: never inside a template's own text (a default system prompt may contain "X").
    user = messages[-1].content
    u0 = text.rfind(user, 0, len(text) - len(prefill))
    regions = [(len(text) - len(prefill), len(text))]
    regions += [(u0, u0 + len(user))] if u0 >= 0 else [(0, len(text))]
    word = re.compile(rf"(?<!\w){re.escape(placeholder)}(?!\w)")
    spans = [
        (m.start(), m.end())
        for m in word.finditer(text)
        if any(a <= m.start() and m.end() <= b for a, b in regions)
    ]
    positions, start = [], 0
    for i, piece in enumerate(pieces):
        end = start + len(piece)
        if any(start < e and s < end for s, e in spans):
            positions.append(i + shift)
        start = end
    if not positions:
        raise ConfigError(f"prompt {template.id}: placeholder {placeholder!r} not found")
    return PreparedPrompt(template, text, ids, tuple(positions), kind)


# --- the sweep ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    """Metrics of one prompt over the scales, from batched patched passes, and each scale's
    continuation when the sweep generated."""

    scales: Floats
    selfsim: Floats
    entropy: Floats
    forward_calls: int
    generations: tuple[str, ...] = ()

    def composite(self, alpha: float) -> Floats:
        return composite(self.selfsim, self.entropy, alpha)


def _minmax(x: Floats) -> Floats:
    span = float(x.max() - x.min()) if x.size else 0.0
    return (x - x.min()) / span if span > 0 else np.zeros_like(x)


def composite(selfsim: Floats, entropy: Floats, alpha: float) -> Floats:
    """`alpha * norm(selfsim) - (1 - alpha) * norm(entropy)`, min-max normalised over scales."""
    out: Floats = alpha * _minmax(np.asarray(selfsim, dtype=np.float64)) - (1 - alpha) * _minmax(
        np.asarray(entropy, dtype=np.float64)
    )
    return out


def _entropy(logits: Floats) -> Floats:
    z = logits - logits.max(axis=-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
    out: Floats = -(np.exp(logp) * logp).sum(axis=-1)
    return out


def _patch(prompt: PreparedPrompt, vectors: Floats, layer: int) -> Replace:
    return Replace(vector=vectors, positions=prompt.positions, layer=layer)


def sweep(
    backend: Backend,
    prompt: PreparedPrompt,
    direction: Floats,
    scales: Sequence[float] | Floats,
    *,
    patch_layer: int,
    probe_layer: int,
    batch_size: int = 32,
    max_new_tokens: int = 0,
    temperature: float = 0.0,
    seed: int | None = None,
) -> Sweep:
    """Self-similarity and first-answer-token entropy at every scale, `batch_size` scales per
    forward pass (each row: the prompt with `scale * direction` at the placeholders).

    With `max_new_tokens`, every scale also generates its answer. A backend with
    `probe_and_generate` decodes from the metrics' own pass (its KV cache); otherwise a batched
    `generate` follows each pass."""
    unit = direction / np.linalg.norm(direction)
    scales_arr = np.asarray(scales, dtype=np.float64)
    selfsim, entropy, texts, calls = [], [], [], 0
    for lo in range(0, len(scales_arr), batch_size):
        chunk = scales_arr[lo : lo + batch_size]
        tokens = TokenBatch.from_lists([list(prompt.ids)] * len(chunk))
        edit = _patch(prompt, chunk[:, None] * unit[None, :], patch_layer)
        if max_new_tokens and isinstance(backend, ProbeAndGenerate):
            logits, resid, new = backend.probe_and_generate(
                tokens,
                [edit],
                layers=[probe_layer],
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                seed=seed,
            )
            last, last_logits = _np(resid[probe_layer]), _np(logits)
            texts += [backend.decode(ids) for ids in new]
        else:
            logits, resid = backend.probe(
                tokens, [edit], layers=[probe_layer], positions=[prompt.last]
            )
            last, last_logits = _np(resid[probe_layer][:, 0]), _np(logits[:, 0])
            if max_new_tokens:
                texts += backend.generate(
                    [prompt.text] * len(chunk),
                    [edit],
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    seed=seed,
                )
        calls += 1
        norms = np.linalg.norm(last, axis=-1)
        selfsim.append(last @ unit / np.where(norms > 0, norms, 1.0))
        entropy.append(_entropy(last_logits))
    return Sweep(scales_arr, np.concatenate(selfsim), np.concatenate(entropy), calls, tuple(texts))


def relevancy(
    backend: Backend,
    prompt: PreparedPrompt,
    answers: Sequence[Sequence[int]],
    vectors: Floats,
    *,
    patch_layer: int,
) -> list[list[float]]:
    """Per answer token: its probability with the patch (row `i` uses `vectors[i]`) minus its
    probability on the unpatched prompt (SelfIE's relevancy). Two batched passes."""
    rows = [list(prompt.ids) + list(a) for a in answers]
    if not any(answers):
        return [[] for _ in answers]
    tokens = TokenBatch.from_lists(rows)
    start = len(prompt.ids)
    # only the positions predicting answer tokens are unembedded
    predicting = list(range(start - 1, start - 1 + max(len(a) for a in answers)))
    probs = []
    for edits in ([_patch(prompt, vectors, patch_layer)], []):
        logits, _ = backend.probe(tokens, edits, positions=predicting)
        z = _np(logits)
        z -= z.max(axis=-1, keepdims=True)
        np.exp(z, out=z)
        probs.append(z / z.sum(axis=-1, keepdims=True))
    out = []
    for i, answer in enumerate(answers):
        pos = np.arange(len(answer))
        ids = np.asarray(answer, dtype=np.int64)
        out.append([float(x) for x in probs[0][i, pos, ids] - probs[1][i, pos, ids]])
    return out


# --- generic answers ------------------------------------------------------------------------------


def _normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def flag_generic(
    explanations: Sequence[Explanation | str], *, min_share: float = 0.1, min_count: int = 3
) -> list[bool]:
    """True for each answer (lower-cased, punctuation dropped) that at least `min_count` latents
    and a `min_share` fraction of them share: a generic answer ("a word or phrase") says nothing
    about any one latent. Failed explanations are never flagged and do not count."""
    if not 0 < min_share <= 1:
        raise ConfigError(f"min_share must be in (0, 1], got {min_share}")
    if min_count < 2:
        raise ConfigError(f"min_count must be >= 2, got {min_count}")
    keys: list[str | None] = []
    for e in explanations:
        if isinstance(e, Explanation):
            keys.append(_normalise(e.text) if e.status is Status.OK else None)
        else:
            keys.append(_normalise(e))
    counts = Counter(k for k in keys if k is not None)
    n = sum(counts.values())
    return [k is not None and counts[k] >= min_count and counts[k] >= min_share * n for k in keys]


# --- the explainer --------------------------------------------------------------------------------


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
    needs: ClassVar[Needs] = Needs(backend=True, coder=True)  # the subject model, no LLM

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
            norms = np.linalg.norm(_np(resid[patch])[0], axis=-1)
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
        direction = _np(coder.W_dec[index])
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
