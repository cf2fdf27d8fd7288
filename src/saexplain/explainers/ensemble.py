"""`ensemble`: input and output evidence together.

- `mode="raw"` (default): the evidence of maxact (highlighted examples), vocabproj (logit-lens
  tokens) and tokenchange (clamped predictions) in one prompt, one LLM call. The output-centric
  paper found this beats every single method on both input and output evaluations.
- `mode="concat"`: run the component explainers separately and join their descriptions.

Each component takes its own settings (`maxact={...}`, `vocabproj={...}`, `tokenchange={...}`);
`components` picks a subset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from string import Template
from typing import Any, ClassVar

from pydantic import JsonValue

from saexplain.checks import check_choice
from saexplain.errors import ConfigError
from saexplain.explainers._llm import (
    Evidence,
    EvidenceUnavailable,
    LLMExplainer,
    table,
)
from saexplain.explainers.maxact import MaxAct
from saexplain.explainers.tokenchange import TokenChange
from saexplain.explainers.vocabproj import VocabProj
from saexplain.hookspecs import Register
from saexplain.models import Explanation, LatentRecord, Status, Usage
from saexplain.protocols import MethodContext

COMPONENTS: dict[str, type[LLMExplainer]] = {
    "maxact": MaxAct,
    "vocabproj": VocabProj,
    "tokenchange": TokenChange,
}


class Ensemble(LLMExplainer):
    """maxact + vocabproj + tokenchange evidence in one prompt ("raw"), or their descriptions
    concatenated ("concat")."""

    name: ClassVar[str] = "ensemble"
    default_prompt: ClassVar[str] = "ensemble"
    required_tables = ("style", "reasoning", "sections")

    def __init__(
        self,
        *,
        mode: str = "raw",
        components: Sequence[str] = ("maxact", "vocabproj", "tokenchange"),
        maxact: Mapping[str, Any] | None = None,
        vocabproj: Mapping[str, Any] | None = None,
        tokenchange: Mapping[str, Any] | None = None,
        separator: str = "; ",
        **common: Any,  # prompt, style, cot, temperature, max_tokens: see LLMExplainer
    ) -> None:
        super().__init__(**common)
        self.mode = check_choice("mode", mode, ("raw", "concat"))
        if isinstance(components, str) or not components:
            raise ConfigError(f"setting 'components' must be a non-empty list, got {components!r}")
        names = [check_choice("components", c, tuple(COMPONENTS)) for c in components]
        if len(set(names)) != len(names):
            raise ConfigError(f"setting 'components' lists a method twice: {names}")
        if not isinstance(separator, str):
            raise ConfigError(f"setting 'separator' must be a string, got {separator!r}")
        self.separator = separator
        given = {"maxact": maxact, "vocabproj": vocabproj, "tokenchange": tokenchange}
        self.components: dict[str, LLMExplainer] = {}
        for name in names:
            sub = given[name] or {}
            if not isinstance(sub, Mapping):
                raise ConfigError(f"setting {name!r} must be a mapping of {name} settings")
            try:
                self.components[name] = COMPONENTS[name](**sub)
            except TypeError as e:  # an unknown keyword for the component
                raise ConfigError(f"bad {name} settings for ensemble: {e}") from e
        for name in names:
            table(self.prompt, "sections", name)
        self.validate_prompt()

    def method_settings(self) -> dict[str, JsonValue]:
        return {
            "mode": self.mode,
            "components": list(self.components),
            "separator": self.separator,
            **{name: c.settings() for name, c in self.components.items()},
        }

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
        if self.mode == "raw":
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
                text=self.separator.join(ok),
                error=error,
                evidence=evidence,
                usage=usage,
            )
        return self.result(record, text=self.separator.join(ok), evidence=evidence, usage=usage)


def register(register: Register) -> None:
    register(
        "ensemble",
        Ensemble,
        description="maxact + vocabproj + tokenchange evidence in one prompt (raw) or concatenated",
    )
