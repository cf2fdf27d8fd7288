"""`ensemble`: input and output evidence together.

- `mode="raw"` (default): the evidence of maxact (highlighted examples), vocabproj (logit-lens
  tokens) and tokenchange (clamped predictions) in one prompt, one LLM call. The output-centric
  paper found this beats every single method on both input and output evaluations.
- `mode="concat"`: run the component explainers separately and join their descriptions.

`intervention` (clean and intervened continuations at a calibrated strength) is a fourth
evidence source, left out by default (it generates text with the subject model): add it to
`components`.

Each component takes its own settings (`maxact={...}`, `vocabproj={...}`, `tokenchange={...}`);
`components` picks a subset.
"""

from __future__ import annotations

from collections.abc import Mapping
from string import Template
from typing import Any, ClassVar, Literal

from pydantic import Field, JsonValue, field_validator

from saexplain.explainers.intervention import Intervention
from saexplain.explainers.maxact import MaxAct
from saexplain.explainers.tokenchange import TokenChange
from saexplain.explainers.vocabproj import VocabProj
from saexplain.methods import (
    ConfigError,
    Evidence,
    EvidenceUnavailable,
    Explanation,
    LatentRecord,
    LLMExplainer,
    MethodContext,
    Needs,
    Register,
    Status,
    Usage,
    needs_of,
    table,
)

COMPONENTS: dict[str, type[LLMExplainer]] = {
    "maxact": MaxAct,
    "vocabproj": VocabProj,
    "tokenchange": TokenChange,
    "intervention": Intervention,
}
Component = Literal["maxact", "vocabproj", "tokenchange", "intervention"]


class Ensemble(LLMExplainer):
    """maxact + vocabproj + tokenchange evidence in one prompt ("raw"), or their descriptions
    concatenated ("concat")."""

    name: ClassVar[str] = "ensemble"
    default_prompt: ClassVar[str] = "ensemble"
    required_tables = ("style", "reasoning", "sections")
    needs: Needs  # what the chosen components need, set in __init__

    class Settings(LLMExplainer.Settings):
        """The common LLM explainer settings (the ensemble's own prompt call), and its parts."""

        mode: Literal["raw", "concat"] = Field(
            "raw",
            description='`"raw"`: all evidence in one prompt, one call; `"concat"`: run each '
            "component, join their texts",
        )
        components: list[Component] = Field(
            ["maxact", "vocabproj", "tokenchange"],
            min_length=1,
            strict=False,  # a tuple of names is fine
            description='which methods to combine (`"intervention"` too, when added)',
        )
        maxact: dict[str, Any] | None = Field(None, description="settings of the maxact part")
        vocabproj: dict[str, Any] | None = Field(None, description="settings of the vocabproj part")
        tokenchange: dict[str, Any] | None = Field(
            None, description="settings of the tokenchange part"
        )
        intervention: dict[str, Any] | None = Field(
            None, description="settings of the intervention part"
        )
        separator: str = Field("; ", description="joins the descriptions in `concat` mode")

        @field_validator("components")
        @classmethod
        def _each_once(cls, names: list[Component]) -> list[Component]:
            if len(set(names)) != len(names):
                raise ValueError(f"lists a method twice: {names}")
            return names

    settings: Settings

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self.components: dict[str, LLMExplainer] = {}
        for name in self.settings.components:
            given: dict[str, Any] | None = getattr(self.settings, name)
            try:
                self.components[name] = COMPONENTS[name](**(given or {}))
            except ConfigError as e:  # say where the bad setting was given
                raise ConfigError(f"ensemble setting {name!r}: {e}") from e
            table(self.prompt, "sections", name)
        # what its parts need: every part asks an LLM; the output-centric ones read the model
        parts = [needs_of(c) for c in self.components.values()]
        self.needs = Needs(
            provider=True,
            backend=any(n.backend for n in parts),
            coder=any(n.coder for n in parts),
            records=any(n.records for n in parts),
        )
        self.validate_prompt()

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings, each component's as that component records them."""
        recorded = super().recorded_settings()
        for name in COMPONENTS:
            del recorded[name]  # as given; the components record what they made of it
        return recorded | {name: c.recorded_settings() for name, c in self.components.items()}

    def shot_fields(self, shot: Mapping[str, Any]) -> dict[str, str]:
        raise ConfigError(f"prompt {self.prompt.id}: the ensemble prompt takes no shots")

    async def gather(self, record: LatentRecord, ctx: MethodContext) -> Evidence:
        sections: list[str] = []
        shown: dict[str, JsonValue] = {}
        settings: dict[str, JsonValue] = {}
        for name, component in self.components.items():
            try:
                got = await component.gather(record, ctx)
            except EvidenceUnavailable as e:
                raise EvidenceUnavailable(f"{name}: {e}", e.status) from e
            sections.append(Template(table(self.prompt, "sections", name)).substitute(got.fields))
            shown[name] = dict(got.shown)
            if got.settings:
                settings[name] = dict(got.settings)
        return Evidence(
            fields={"evidence": "\n\n".join(s.strip("\n") for s in sections)},
            shown=shown,
            settings={"derived": settings} if settings else {},
        )

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        if self.settings.mode == "raw":
            return await super().explain(record, ctx)
        parts: dict[str, Explanation] = {}
        usage = Usage()
        for name, component in self.components.items():
            parts[name] = await component.explain(record, ctx)
            usage = usage + parts[name].usage
        ok = [p.text for p in parts.values() if p.status is Status.OK]
        evidence: dict[str, JsonValue] = {
            name: {"status": p.status.value, "text": p.text, "error": p.error, **p.evidence}
            for name, p in parts.items()
        }
        bad = [(n, p) for n, p in parts.items() if p.status is not Status.OK]
        if bad:
            status = (
                Status.ERROR if any(p.status is Status.ERROR for _, p in bad) else Status.FAILED
            )
            error = "; ".join(f"{n}: {p.error}" for n, p in bad)
            return self.result(
                record,
                status=status,
                text=self.settings.separator.join(ok),
                error=error,
                evidence=evidence,
                usage=usage,
            )
        separator = self.settings.separator
        return self.result(record, text=separator.join(ok), evidence=evidence, usage=usage)


def register(register: Register) -> None:
    register(
        "ensemble",
        Ensemble,
        description="maxact + vocabproj + tokenchange evidence in one prompt (raw) or concatenated",
    )
