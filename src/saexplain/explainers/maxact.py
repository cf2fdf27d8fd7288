"""`maxact`: an LLM reads the latent's activating examples with `<<highlighted>>` tokens.

Options: per-token activation values (0-10), chain of thought, the latent's top promoted tokens
(logit lens, when the context has a backend and coder), a sentence or a short label (1-6 words).
Few-shot examples are data in the prompt file, rendered by the same code as live examples.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from string import Template
from typing import Any, ClassVar

from pydantic import Field, JsonValue

from saexplain.methods import (
    ConfigError,
    Evidence,
    EvidenceUnavailable,
    Example,
    LatentRecord,
    LLMExplainer,
    MethodContext,
    Needs,
    Register,
    bos_id,
    display_tokens,
    first_shown,
    logit_lens,
    render_example,
    run_model,
    table,
    token_list,
    top_tokens,
    truncate,
)

EVIDENCE_CHARS = 400  # per example recorded in Explanation.evidence


def select_examples(examples: Sequence[Example], cap: int) -> list[Example]:
    """At most `cap` examples keeping the sampler mix: round-robin over samplers (top, random,
    quantile, ...) in record order, so a cap never drops a whole sampler; record order is kept."""
    if len(examples) <= cap:
        return list(examples)
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.sampler or "unspecified", []).append(i)
    chosen: list[int] = []
    queues = [list(g) for g in groups.values()]
    while len(chosen) < cap:
        for q in queues:
            if q and len(chosen) < cap:
                chosen.append(q.pop(0))
    return [examples[i] for i in sorted(chosen)]


def render_examples(
    examples: Sequence[Example],
    *,
    threshold: float,
    show_values: bool,
    bos_token_id: int | None = None,
) -> list[str]:
    """Each example highlighted as every prompt shows dataset text: a leading BOS left out, the
    tokens cleaned and their angle brackets neutralised so they cannot fake highlight marks."""
    out = []
    for ex in examples:
        start = first_shown(ex, bos_token_id)
        shown = Example(
            tokens=ex.tokens[start:],
            str_tokens=tuple(display_tokens(ex, start)),
            activations=ex.activations[start:],
        )
        out.append(render_example(shown, threshold=threshold, show_values=show_values))
    return out


def examples_field(rendered: Sequence[str]) -> str:
    return "\n".join(f"Example {i}: {text}" for i, text in enumerate(rendered, 1))


def shot_examples(shot: Mapping[str, Any], prompt_id: str) -> list[Example]:
    raw = shot.get("examples")
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"prompt {prompt_id}: every shot needs a non-empty 'examples' list")
    out = []
    for item in raw:
        tokens, acts = item.get("tokens"), item.get("activations")
        if not isinstance(tokens, list) or not isinstance(acts, list) or len(tokens) != len(acts):
            raise ConfigError(f"prompt {prompt_id}: a shot example needs equal tokens/activations")
        out.append(
            Example(
                tokens=tuple(range(len(tokens))),
                str_tokens=tuple(str(t) for t in tokens),
                activations=tuple(float(a) for a in acts),
            )
        )
    return out


class MaxAct(LLMExplainer):
    """Explain a latent from its highlighted activating examples."""

    class Settings(LLMExplainer.Settings):
        """The common LLM explainer settings, and what maxact shows."""

        max_examples: int = Field(
            40,
            ge=1,
            description="cap on examples shown; the cap keeps the sampler mix (round-robin over "
            "top / random / quantile / importance samplers, record order kept)",
        )
        threshold: float = Field(
            0.3,
            ge=0.0,
            le=1.0,
            description="a token is marked at >= threshold x the example's max activation",
        )
        show_values: bool = Field(
            False,
            description="add a line of per-token activations 0-10 (scaled to the example's max)",
        )
        top_logits: int = Field(
            0,
            ge=0,
            le=200,
            description="also show the latent's top N promoted tokens (logit lens); needs a "
            "backend and coder, otherwise recorded as unavailable",
        )

    name: ClassVar[str] = "maxact"
    default_prompt: ClassVar[str] = "maxact"
    needs: ClassVar[Needs] = Needs(provider=True)  # the model only for optional top_logits
    required_tables = ("style", "reasoning", "sections")
    settings: Settings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        table(self.prompt, "sections", "logits")
        self.validate_prompt()

    def logits_field(self, tokens: Sequence[str]) -> str:
        if not tokens:
            return ""
        section = table(self.prompt, "sections", "logits")
        return Template(section).substitute(tokens=token_list(tokens))

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        examples = shot_examples(shot, self.prompt.id)
        rendered = render_examples(
            examples, threshold=self.settings.threshold, show_values=self.settings.show_values
        )
        logits = shot.get("top_logits", [])
        top = self.settings.top_logits
        shown = [str(t) for t in logits][:top] if top else []
        return {"examples": examples_field(rendered), "logits": self.logits_field(shown)}

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        if not record.explanation_examples:
            raise EvidenceUnavailable(
                f"latent {record.latent} has no explanation examples (dead or too rare?)"
            )
        examples = select_examples(record.explanation_examples, self.settings.max_examples)
        rendered = render_examples(
            examples,
            threshold=self.settings.threshold,
            show_values=self.settings.show_values,
            bos_token_id=bos_id(ctx),
        )
        shown: dict[str, JsonValue] = {
            "examples": [truncate(r, EVIDENCE_CHARS) for r in rendered],
        }
        logit_tokens: list[str] = []
        if self.settings.top_logits:
            if ctx.backend is None or ctx.coder is None:
                shown["top_logits"] = "unavailable: no backend and coder in the context"
            else:
                lens = await run_model(
                    ctx.backend, logit_lens, ctx.backend, ctx.coder, record.latent.index
                )
                found, _ = top_tokens(ctx.backend, lens, self.settings.top_logits)
                logit_tokens = [t.token for t in found]
                shown["top_logits"] = [t.json() for t in found]
        lengths = [len(e.tokens) for e in examples]
        mix: dict[str, JsonValue] = {
            "shown": len(examples),
            "available": len(record.explanation_examples),
            "by_sampler": dict(Counter(e.sampler or "unspecified" for e in examples)),
            "by_quantile": {
                str(k): v
                for k, v in sorted(
                    Counter(e.quantile for e in examples if e.quantile is not None).items()
                )
            },
            "window": {"min": min(lengths), "max": max(lengths)},
            "record_sampling": {
                k: record.sampling[k]
                for k in ("explanation", "window", "lead", "n_bins", "seed", "source")
                if k in record.sampling
            },
        }
        return Evidence(
            fields={
                "examples": examples_field(rendered),
                "logits": self.logits_field(logit_tokens),
            },
            shown=shown,
            settings={"examples": mix},
        )


def register(register: Register) -> None:
    register(
        "maxact",
        MaxAct,
        description="LLM reads highlighted activating examples (values, CoT, top logits optional)",
    )
