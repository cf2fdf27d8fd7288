"""`maxact`: an LLM reads the latent's activating examples with `<<highlighted>>` tokens.

Options: per-token activation values (0-10), chain of thought, the latent's top promoted tokens
(logit lens, when the context has a backend and coder), a sentence or a short label (1-6 words).
Few-shot examples are data in the prompt file, rendered by the same code as live examples.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from string import Template
from typing import Any, ClassVar

from pydantic import JsonValue

from saexplain.checks import check_bool, check_float, check_int
from saexplain.errors import ConfigError
from saexplain.explainers._llm import (
    Evidence,
    EvidenceUnavailable,
    LLMExplainer,
    logit_lens,
    neutralise,
    table,
    token_list,
    top_tokens,
    truncate,
)
from saexplain.hookspecs import Register
from saexplain.models import Example, LatentRecord
from saexplain.protocols import MethodContext
from saexplain.render import render_example

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


_SPECIAL = re.compile(r"^(?:<\|?[A-Za-z_]+\|?>|<s>)$")


def drop_leading_special(example: Example, bos_token_id: int | None = None) -> Example:
    """A window that starts a context carries the BOS token; it is not text, so not shown."""
    if not example.tokens or example.activations[0] > 0:
        return example
    first_id, first = example.tokens[0], example.str_tokens[0].strip()
    if (bos_token_id is not None and first_id == bos_token_id) or _SPECIAL.match(first):
        return Example(
            tokens=example.tokens[1:],
            str_tokens=example.str_tokens[1:],
            activations=example.activations[1:],
        )
    return example


def render_examples(
    examples: Sequence[Example],
    *,
    threshold: float,
    show_values: bool,
    bos_token_id: int | None = None,
) -> list[str]:
    """Each example highlighted: a leading BOS dropped, dataset angle brackets neutralised so
    they cannot fake highlight marks."""
    out = []
    for ex in examples:
        ex = drop_leading_special(ex, bos_token_id)
        safe = ex.model_copy(update={"str_tokens": tuple(neutralise(t) for t in ex.str_tokens)})
        out.append(render_example(safe, threshold=threshold, show_values=show_values))
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

    name: ClassVar[str] = "maxact"
    default_prompt: ClassVar[str] = "maxact"
    required_tables = ("style", "reasoning", "sections")

    def __init__(
        self,
        *,
        max_examples: int = 40,
        threshold: float = 0.3,
        show_values: bool = False,
        top_logits: int = 0,
        **common: Any,  # prompt, style, cot, temperature, max_tokens: see LLMExplainer
    ) -> None:
        super().__init__(**common)
        self.max_examples = check_int("max_examples", max_examples, low=1)
        self.threshold = check_float("threshold", threshold, low=0.0, high=1.0)
        self.show_values = check_bool("show_values", show_values)
        self.top_logits = check_int("top_logits", top_logits, low=0, high=200)
        table(self.prompt, "sections", "logits")
        self.validate_prompt()

    def method_settings(self) -> dict[str, JsonValue]:
        return {
            "max_examples": self.max_examples,
            "threshold": self.threshold,
            "show_values": self.show_values,
            "top_logits": self.top_logits,
        }

    def logits_field(self, tokens: Sequence[str]) -> str:
        if not tokens:
            return ""
        section = table(self.prompt, "sections", "logits")
        return Template(section).substitute(tokens=token_list(tokens))

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        examples = shot_examples(shot, self.prompt.id)
        rendered = render_examples(examples, threshold=self.threshold, show_values=self.show_values)
        logits = shot.get("top_logits", [])
        shown = [str(t) for t in logits][: self.top_logits] if self.top_logits else []
        return {"examples": examples_field(rendered), "logits": self.logits_field(shown)}

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        if not record.explanation_examples:
            raise EvidenceUnavailable(
                f"latent {record.latent} has no explanation examples (dead or too rare?)"
            )
        examples = select_examples(record.explanation_examples, self.max_examples)
        bos = ctx.backend.bos_token_id if ctx.backend is not None else None
        rendered = render_examples(
            examples, threshold=self.threshold, show_values=self.show_values, bos_token_id=bos
        )
        shown: dict[str, JsonValue] = {
            "examples": [truncate(r, EVIDENCE_CHARS) for r in rendered],
        }
        logit_tokens: list[str] = []
        if self.top_logits:
            if ctx.backend is None or ctx.coder is None:
                shown["top_logits"] = "unavailable: no backend and coder in the context"
            else:
                lens = logit_lens(ctx.backend, ctx.coder, record.latent.index)
                found, _ = top_tokens(ctx.backend, lens, self.top_logits)
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
