"""`maxact`: an LLM reads the latent's activating examples with `<<highlighted>>` tokens.

Options: per-token activation values (0-10), chain of thought, the latent's top promoted tokens
(logit lens, when the context has a backend and coder), a sentence or a short label (1-6 words).
Few-shot examples are data in the prompt file, rendered by the same code as live examples.

`style="keywords"` is for small local models (SmolLM2-135M), which copy a few-shot answer or the
instructions and ramble past any budget: the prompt's `[keywords]` table gives a short system and
user text with no few-shot answer, the marked tokens are listed plainly after the examples, and
the reply is prefilled (`ChatRequest.prefill`, e.g. `The marked tokens are "`) so the model only
completes a short label, cut at the first `stop` (newline, closing quote). That short answer is
the explanation, even when the small budget cut it (a label cut short still names something).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from string import Template
from typing import Any, ClassVar

from pydantic import Field, JsonValue

from saexplain.methods import (
    STYLE_MAX_WORDS,
    ChatRequest,
    ConfigError,
    Evidence,
    EvidenceUnavailable,
    Example,
    LatentRecord,
    LLMExplainer,
    Message,
    MethodContext,
    Needs,
    Parsed,
    ParseError,
    Register,
    bos_id,
    display_tokens,
    first_shown,
    logit_lens,
    marked,
    one_line,
    render_example,
    run_model,
    table,
    token_list,
    top_tokens,
    truncate,
)

EVIDENCE_CHARS = 400  # per example recorded in Explanation.evidence
MARKED_SHOWN = 12  # distinct marked tokens listed by the keywords style


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


def marked_tokens(
    examples: Sequence[Example],
    *,
    threshold: float,
    bos_token_id: int | None = None,
    limit: int = MARKED_SHOWN,
) -> list[str]:
    """The distinct tokens the examples mark (as `render_examples` marks them), stripped of
    surrounding whitespace, most often marked first (ties: first seen), at most `limit`."""
    counts: Counter[str] = Counter()
    for ex in examples:
        start = first_shown(ex, bos_token_id)
        tokens = display_tokens(ex, start)
        for token, on in zip(
            tokens, marked(ex.activations[start:], threshold=threshold), strict=True
        ):
            if on and token.strip():
                counts[token.strip()] += 1
    return [t for t, _ in counts.most_common(limit)]


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
    styles = ("sentence", "label", "keywords")
    settings: Settings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        table(self.prompt, "sections", "logits")
        self.keywords = self.settings.style == "keywords"
        if self.keywords:
            if self.settings.cot:
                raise ConfigError(
                    "maxact: style='keywords' prefills a short label, it has no chain of thought "
                    "(cot=true); use style='sentence' or 'label' for cot"
                )
            if self.settings.top_logits:  # its user text has no place for them
                raise ConfigError("maxact: style='keywords' does not show top_logits; set 0")
            self.stops = self.keyword_stops()
        self.validate_prompt()

    # the keywords style ------------------------------------------------------------------------

    def keyword_text(self, key: str) -> str:
        """A string of the prompt's `[keywords]` table (the keywords style's own texts)."""
        return table(self.prompt, "keywords", key)

    def keyword_stops(self) -> tuple[str, ...]:
        value = self.prompt.data.get("keywords")
        stops = value.get("stop") if isinstance(value, Mapping) else None
        if (
            not isinstance(stops, list)
            or not stops
            or not all(isinstance(x, str) and x for x in stops)
        ):
            raise ConfigError(
                f"prompt {self.prompt.id} ({self.prompt.source}) needs 'keywords.stop', a list "
                "of non-empty strings (where the prefilled label ends)"
            )
        return tuple(stops)

    def system_text(self) -> str:
        if self.keywords:
            return self.keyword_text("system")
        return super().system_text()

    def shot_messages(self) -> list[Message]:
        # no few-shot answer for a small model to copy
        return [] if self.keywords else super().shot_messages()

    def messages(self, fields: Mapping[str, str]) -> tuple[Message, ...]:
        if not self.keywords:
            return super().messages(fields)
        try:
            user = Template(self.keyword_text("user")).substitute(fields)
        except (KeyError, ValueError) as e:
            raise ConfigError(f"prompt {self.prompt.id}: bad field in 'keywords.user': {e}") from e
        return (
            Message(role="system", content=self.system_text()),
            Message(role="user", content=user),
        )

    def prompt_wording(self) -> str:
        """What an echo repeats: for keywords, its system text and the user text's instructions
        (the fields left empty)."""
        if not self.keywords:
            return super().prompt_wording()
        instructions = Template(self.keyword_text("user")).safe_substitute(examples="", marked="")
        return "\n".join([self.system_text(), instructions, self.keyword_text("prefill")])

    def request(self, fields: Mapping[str, str]) -> ChatRequest:
        base = super().request(fields)
        if not self.keywords:
            return base
        return base.model_copy(update={"prefill": self.keyword_text("prefill"), "stop": self.stops})

    def parse_answer(self, answer: str, *, cut_off: bool) -> Parsed:
        """keywords: the reply continues the prefill; the label is its text up to the first stop
        (a provider that ignores stops is cut here too), kept even when the budget cut it."""
        if not self.keywords:
            return super().parse_answer(answer, cut_off=cut_off)
        prefill = self.keyword_text("prefill")
        if answer.startswith(prefill):  # a provider that repeats the prefill
            answer = answer[len(prefill) :]
        ends = [i for i in (answer.find(s) for s in self.stops) if i >= 0]
        text = one_line(answer[: min(ends)] if ends else answer)
        text = " ".join(text.split()).strip(" .,;:'\"`*")
        if not text:
            raise ParseError(f"the prefilled label is empty: {answer[:200]!r}")
        limit = STYLE_MAX_WORDS["keywords"]
        if len(text.split()) > limit:
            raise ParseError(
                f"the label has {len(text.split())} words, over {limit}: {text[:200]!r}"
            )
        return Parsed(text, "prefilled, cut at max_tokens" if cut_off and not ends else "prefilled")

    def preflight(self, ctx: MethodContext) -> None:
        """Before the run: the keywords style needs a provider that continues a prefilled reply."""
        if not self.keywords:
            return
        provider = ctx.provider("explainer")
        if not provider.capabilities.prefill:
            raise ConfigError(
                f"maxact: style='keywords' needs a provider that continues a prefilled reply; "
                f"{provider.model} does not (use style='sentence' or 'label', or the local "
                "provider)"
            )

    # evidence ----------------------------------------------------------------------------------

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
        marked_list = ""
        if self.keywords:
            listed = marked_tokens(
                examples, threshold=self.settings.threshold, bos_token_id=bos_id(ctx)
            )
            shown["marked"] = list(listed)
            marked_list = one_line(token_list(listed))
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
                "marked": marked_list,
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
