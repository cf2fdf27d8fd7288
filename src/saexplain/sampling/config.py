"""How records are built: the samplers, the negatives and their settings (`RecordConfig`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import Field, NonNegativeInt, model_validator

from saexplain.models import (
    Frozen,
)

SamplerName = Literal["top", "random", "quantile", "importance"]
NegativeName = Literal["random", "neighbours", "similar_text"]


class _NamedCount(Frozen):
    """`name:n` pairs (a sampler or a negatives builder and how many examples it draws)."""

    n: NonNegativeInt

    @classmethod
    def parse(cls, value: str | Frozen | tuple[str, int]) -> Self:
        """From `"top:20"`, `("top", 20)` or a spec."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            name, _, n = value.partition(":")
            return cls.model_validate({"name": name, "n": int(n or 1)})
        if isinstance(value, tuple):
            return cls.model_validate({"name": value[0], "n": value[1]})
        raise TypeError(f"cannot read a {cls.__name__} from {value!r}")


class SamplerSpec(_NamedCount):
    name: SamplerName


class NegativeSpec(_NamedCount):
    name: NegativeName


class RecordConfig(Frozen):
    """How records are built. Defaults follow the EleutherAI pipeline (METHODS.md)."""

    window: Annotated[int, Field(ge=1)] = 32
    lead: NonNegativeInt | None = None  # tokens before the peak; None: 3/4 of the window
    explanation: tuple[SamplerSpec, ...] = (
        SamplerSpec(name="top", n=20),
        SamplerSpec(name="quantile", n=20),
    )
    scoring: tuple[SamplerSpec, ...] = (SamplerSpec(name="quantile", n=50),)
    negatives: tuple[NegativeSpec, ...] = (NegativeSpec(name="random", n=50),)
    n_bins: Annotated[int, Field(ge=1)] = 10
    rare_below: NonNegativeInt = 20  # fewer activating windows: status "rare" (still built)
    max_pool: Annotated[int, Field(ge=1)] = 20_000  # cap on candidate windows per latent
    n_neighbours: Annotated[int, Field(ge=1)] = 10
    similar_pool: Annotated[int, Field(ge=1)] = 10  # candidates per similar_text negative
    seed: int | None = None  # None: the store's seed

    @model_validator(mode="before")
    @classmethod
    def _parse_specs(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(data)
            for key, spec in (
                ("explanation", SamplerSpec),
                ("scoring", SamplerSpec),
                ("negatives", NegativeSpec),
            ):
                if key in data and data[key] is not None:
                    value = data[key]
                    items = [value] if isinstance(value, str) else list(value)
                    data[key] = tuple(spec.parse(v) for v in items)
        return data

    @property
    def lead_tokens(self) -> int:
        lead = (3 * self.window) // 4 if self.lead is None else self.lead
        return min(lead, self.window - 1)
