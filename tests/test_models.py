"""The pydantic data model: JSON round-trips and the invariants the validators enforce."""

import pytest
from pydantic import BaseModel, ValidationError

from saexplain import models as m

REF = m.LatentRef(
    coder_id="res-jb/blocks.8.hook_resid_pre", hook="blocks.8.hook_resid_pre", index=42
)
EXAMPLE = m.Example(
    tokens=(1, 2, 3),
    str_tokens=("The", " cat", " sat"),
    activations=(0.0, 3.5, 0.25),
    row=7,
    start=12,
    quantile=9,
    sampler="quantile",
)
USAGE = m.Usage(prompt_tokens=10, completion_tokens=2, cost_usd=0.001, calls=1)

INSTANCES: list[BaseModel] = [
    REF,
    EXAMPLE,
    m.LatentStats(n_tokens=1000, count=10, max=3.5, mean=1.0, quantiles=(0.1, 0.5, 2.0)),
    m.LatentRecord(
        latent=REF,
        stats=m.LatentStats(n_tokens=1000, count=10),
        explanation_examples=(EXAMPLE,),
        scoring_examples=(EXAMPLE.model_copy(update={"row": 8}),),
        non_activating=(EXAMPLE.model_copy(update={"kind": m.ExampleKind.NEIGHBOUR}),),
        sampling={"explain": {"sampler": "top", "n": 40}, "seed": 3},
    ),
    m.ChatRequest(messages=(m.Message(role="user", content="hi"),), logprobs=True, top_logprobs=5),
    m.ChatResponse(
        model="x",
        choices=(
            m.Choice(
                text="yes",
                logprobs=(
                    m.TokenLogprob(token="yes", logprob=-0.1, top=(("yes", -0.1), ("no", -2.4))),
                ),
            ),
        ),
        usage=USAGE,
    ),
    m.Explanation(latent=REF, text="cats", explainer="maxact", settings={"k": 40}, usage=USAGE),
    m.Explanation(latent=REF, explainer="maxact", status=m.Status.FAILED, error="no answer line"),
    m.Score(
        latent=REF,
        scorer="detection",
        explainer="maxact",
        value=0.8,
        metrics={"balanced_accuracy": 0.8, "auroc": None},
        predictions=(
            m.Prediction(item=0, truth=True, predicted=True, probability=0.9, quantile=3),
            m.Prediction(item=1, truth=False, error="timeout"),
        ),
    ),
    m.RunConfig(model="gpt2", coder="gpt2-small-res-jb/blocks.8.hook_resid_pre", dataset="pile"),
    m.MethodSpec(name="maxact", settings={"n_examples": 40, "cot": False}),
    m.LatentSelection(start=0, stop=100),
    m.CoderSpec(coder="saelens:r/blocks.*.hook_resid_pre", latents=m.LatentSelection(sample=5)),
    m.RunConfig(model="gpt2", coders=["neurons:blocks.0.mlp.hook_post", "r/x"], dataset="pile"),
    m.BatchOptions(max_requests=50, window_s=2.0, poll_s=10.0),
    m.ExecutorSpec(name="ray", settings={"address": "local", "workers": 2}),
]


@pytest.mark.parametrize("instance", INSTANCES, ids=lambda i: type(i).__name__)
def test_json_round_trip(instance):
    assert type(instance).model_validate_json(instance.model_dump_json()) == instance


def test_every_public_model_has_a_round_trip_case():
    public = {
        name
        for name, obj in vars(m).items()
        if isinstance(obj, type)
        and issubclass(obj, m.Frozen)
        and not name.startswith("_")
        and obj is not m.Frozen
    }
    covered = {type(i).__name__ for i in INSTANCES} | {
        "Message",
        "Choice",
        "TokenLogprob",
        "Usage",
        "Prediction",
        "ProviderSpec",
    }
    assert public <= covered, f"models without a round-trip case: {public - covered}"


def test_models_are_frozen_and_strict():
    with pytest.raises(ValidationError):
        REF.index = 3  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        m.LatentRef(coder_id="c", hook="h", index=1, typo=2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        m.LatentRef(coder_id="c", hook="h", index=-1)


def test_example_lengths_must_align():
    with pytest.raises(ValidationError, match="same length"):
        m.Example(tokens=(1, 2), str_tokens=("a",), activations=(0.0, 1.0))


def test_prediction_is_three_state_never_a_sentinel():
    assert m.Prediction(item=0, truth=True, predicted=False).correct is False
    assert m.Prediction(item=0, truth=True, error="rate limited").correct is None
    with pytest.raises(ValidationError):
        m.Prediction(item=0, truth=True)  # neither answer nor error
    with pytest.raises(ValidationError):
        m.Prediction(item=0, truth=True, predicted=True, error="x")


def test_result_status_and_error_agree():
    with pytest.raises(ValidationError):
        m.Explanation(latent=REF, text="x", explainer="e", status=m.Status.ERROR)
    with pytest.raises(ValidationError):
        m.Explanation(latent=REF, text="x", explainer="e", error="oops")
    with pytest.raises(ValidationError, match="non-empty"):
        m.Explanation(latent=REF, text="  ", explainer="e")


def test_usage_adds_up():
    total = USAGE + USAGE
    assert (total.prompt_tokens, total.calls, total.total_tokens) == (20, 2, 24)
    assert total.cost_usd == pytest.approx(0.002)


def test_run_config_accepts_names_and_rejects_duplicates():
    cfg = m.RunConfig.model_validate(
        {
            "model": "gpt2",
            "coder": "c",
            "dataset": "d",
            "explainers": ["maxact", {"name": "vocabproj"}],
            "scorers": "fuzzing",
        }
    )
    assert [s.name for s in cfg.explainers] == ["maxact", "vocabproj"]
    assert [s.name for s in cfg.scorers] == ["fuzzing"]
    with pytest.raises(ValidationError, match="listed twice"):
        m.RunConfig(model="gpt2", coder="c", dataset="d", scorers=["fuzzing", "fuzzing"])


def test_latent_selection_is_one_way():
    with pytest.raises(ValidationError, match="not both"):
        m.LatentSelection(indices=(1, 2), start=0)
    with pytest.raises(ValidationError, match="empty latent range"):
        m.LatentSelection(start=5, stop=5)


def test_latent_ref_key_is_delphi_style():
    assert REF.key == "blocks.8.hook_resid_pre_latent42"
