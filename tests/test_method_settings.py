"""Declared method settings (`saexplain.methods.MethodSettings`): one declaration gives the
validation (a ConfigError naming the method and the setting), the defaults, the recorded
settings and the docs table, for built-in methods and for a third party's alike."""

from __future__ import annotations

from typing import Any, ClassVar, Literal, Self

import pytest
from pydantic import Field, ValidationError, model_validator

from saexplain.errors import ConfigError
from saexplain.explainers.maxact import MaxAct
from saexplain.explainers.selfexplain import SelfExplainer
from saexplain.explainers.tokenchange import TokenChange
from saexplain.methods import (
    Explanation,
    LatentRecord,
    MethodContext,
    MethodSettings,
    Needs,
    Register,
    Score,
    hookimpl,
    settings_table,
)
from saexplain.scorers.detection import DetectionScorer
from saexplain.scorers.simulation import SimulationScorer


class ThirdParty:
    """A scorer written from the public kit only, the way the docs say."""

    class Settings(MethodSettings):
        """How the scorer counts."""

        n: int = Field(5, ge=1, le=10, description="items per batch")
        how: Literal["fast", "exact"] = Field("fast", description="the counting rule")
        cap: float | None = Field(None, gt=0.0, description="a cap; `None`: no cap")
        device: str | None = Field(None, exclude=True, description="where it runs")

        @model_validator(mode="after")
        def _exact_is_small(self) -> Self:
            if self.how == "exact" and self.n > 3:
                raise ValueError("how='exact' needs n <= 3")
            return self

    name = "thirdparty"
    needs: ClassVar[Needs] = Needs()

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        raise NotImplementedError


# --- validation -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "says"),
    [
        ({"n": 0}, "thirdparty: setting 'n': input should be greater than or equal to 1, got 0"),
        ({"n": "5"}, "setting 'n': input should be a valid integer, got '5'"),
        ({"n": True}, "setting 'n'"),  # a bool is not a count
        ({"n": 2.0}, "setting 'n'"),  # nor a float, even a whole one
        ({"how": "slow"}, "setting 'how': input should be 'fast' or 'exact', got 'slow'"),
        ({"cap": float("nan")}, "setting 'cap'"),
        ({"cap": 0.0}, "greater than 0"),
        ({"how": "exact"}, "thirdparty: how='exact' needs n <= 3"),
        ({"nn": 3}, "unknown setting 'nn' (the settings are: n, how, cap, device)"),
    ],
)
def test_bad_settings_are_config_errors_naming_the_method_and_setting(settings, says):
    with pytest.raises(ConfigError) as caught:
        ThirdParty(**settings)
    assert says in str(caught.value)
    assert caught.value.__cause__ is None  # the pydantic trace would only repeat it


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(ConfigError, match=r"setting 'n'.*; setting 'how'"):
        ThirdParty(n=0, how="slow")


def test_defaults_come_from_the_declaration_and_ints_count_as_floats():
    made = ThirdParty(cap=2)
    assert (made.settings.n, made.settings.how, made.settings.cap) == (5, "fast", 2.0)
    assert isinstance(made.settings.cap, float)
    with pytest.raises(ValidationError):  # frozen: a method's settings never change under it
        made.settings.n = 3  # type: ignore[misc]


def test_recorded_settings_are_the_json_dump_without_excluded_fields():
    made = ThirdParty(n=2, device="cpu")
    assert made.settings.model_dump(mode="json") == {"n": 2, "how": "fast", "cap": None}


def test_a_third_party_method_is_built_by_the_registry_like_a_builtin():
    from saexplain.testing import fresh_plugin_manager

    class Plugin:
        @hookimpl
        def register_scorers(self, register: Register) -> None:
            register("thirdparty", ThirdParty)

    with fresh_plugin_manager(entry_points=[], builtins=(), environ={}) as manager:
        manager.register_plugin(Plugin())
        made = manager.scorers.create("thirdparty", n=3, how="exact")
        assert made.settings.how == "exact"
        with pytest.raises(ConfigError, match="thirdparty: setting 'n'"):
            manager.scorers.create("thirdparty", n=11)


# --- built-in methods -----------------------------------------------------------------------------


def test_builtin_defaults_and_recorded_settings():
    assert DetectionScorer().recorded_settings() == {
        "batch_size": 5,
        "max_activating": None,
        "max_negatives": None,
        "logprobs": None,
        "top_logprobs": 5,
        "saebench_threshold": 0.01,
        "answer": "auto",
        "item_index": "scoring_examples+non_activating",
        "prompt": "detection@2",
        "prompt_source": "bundled",
    }
    # the completion budget follows the answer's shape and is recorded resolved
    assert MaxAct().recorded_settings()["max_tokens"] == 200
    assert MaxAct(style="label").recorded_settings()["max_tokens"] == 60
    assert MaxAct(cot=True, style="label").recorded_settings()["max_tokens"] == 1000
    assert MaxAct(max_tokens=7).recorded_settings()["max_tokens"] == 7
    # user texts are recorded, so the settings reproduce the contexts used
    recorded = TokenChange(texts=("a b", "c")).recorded_settings()
    assert recorded["contexts"] == "texts" and recorded["texts"] == ["a b", "c"]
    assert SelfExplainer(prompts="selfexplain_repeat").recorded_settings()["prompts"] == [
        "selfexplain_repeat@1"
    ]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda: MaxAct(max_examples=0), "maxact: setting 'max_examples'"),
        (lambda: MaxAct(temperature=3), "maxact: setting 'temperature'"),
        (lambda: SimulationScorer(variant="tokenwise"), "simulation: setting 'variant'"),
        (lambda: DetectionScorer(answer="first_token"), "needs batch_size=1"),
        (lambda: SelfExplainer(patch_layer=3, probe_layer=2), "deeper than patch_layer 3"),
    ],
)
def test_builtin_errors_name_the_method_and_setting(make, says):
    with pytest.raises(ConfigError, match=says):
        make()


# --- the docs table -------------------------------------------------------------------------------


def test_settings_table_renders_types_bounds_defaults_and_meanings():
    assert settings_table(ThirdParty.Settings) == (
        "| setting | type | default | meaning |\n"
        "|---|---|---|---|\n"
        "| `n` | int in [1, 10] | `5` | items per batch |\n"
        '| `how` | "fast" or "exact" | `"fast"` | the counting rule |\n'
        "| `cap` | float > 0.0, or None | `None` | a cap; `None`: no cap |\n"
        "| `device` | str, or None | `None` | where it runs |\n"
    )


def test_settings_table_of_own_fields_and_escaped_pipes():
    class More(ThirdParty.Settings):
        names: list[str] = Field(["a"], min_length=1, description="one | two")

    table = settings_table(More, inherited=False)
    assert table.splitlines()[2:] == ['| `names` | non-empty list of str | `["a"]` | one \\| two |']
