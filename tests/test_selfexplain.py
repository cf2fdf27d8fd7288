"""The `selfexplain` explainer on the numpy FakeBackend: batching, metric shapes, failure
detection, recorded settings, bad settings, prompts as data, generic-answer flags."""

from __future__ import annotations

import numpy as np
import pytest

from saexplain._async import run_sync
from saexplain.errors import ConfigError, DimensionMismatchError, LatentIndexError
from saexplain.explainers.selfexplain import (
    SelfExplainer,
    composite,
    flag_generic,
    prepare_prompt,
    relevancy,
    sweep,
)
from saexplain.models import Explanation, LatentRecord, LatentRef, LatentStats, Status
from saexplain.prompts import load_prompt
from saexplain.protocols import MethodContext, Replace, TokenBatch
from saexplain.testing import FakeBackend, FakeCoder, check_backend, check_explainer


@pytest.fixture
def backend() -> FakeBackend:
    return FakeBackend(d_model=16, n_layers=4)


@pytest.fixture
def coder(backend: FakeBackend) -> FakeCoder:
    return FakeCoder.planted(backend, {0: " cat", 1: " dog"}, d_sae=8)


def bare_record(coder: FakeCoder, index: int = 0) -> LatentRecord:
    """No examples at all: selfexplain needs no activation dataset."""
    return LatentRecord(
        latent=LatentRef(coder_id=coder.id, hook=coder.hook, index=index),
        stats=LatentStats(n_tokens=0, count=0),
    )


def explain(explainer: SelfExplainer, backend: FakeBackend, coder: FakeCoder, index: int = 0):
    ctx = MethodContext(backend=backend, coder=coder, seed=3)
    return check_explainer(explainer, bare_record(coder, index), ctx)


def test_fake_backend_keeps_the_backend_contract(backend, coder):
    check_backend(backend, coder)


def test_placeholder_positions_and_plain_chat_layout(backend):
    prompt = prepare_prompt(backend, load_prompt("selfexplain_meaning"))
    assert prompt.chat_template == "plain"  # FakeBackend has no chat_prompt
    assert prompt.text == (
        'User: What is the meaning of the word "X"?\nAssistant: The meaning of the word "X" is "'
    )
    tokens = backend.str_tokens(list(prompt.ids))
    assert [tokens[p] for p in prompt.positions] == [' "X"?', ' "X"']
    assert prompt.last == len(prompt.ids) - 1 and tokens[-1] == ' "'
    repeat = prepare_prompt(backend, load_prompt("selfexplain_repeat"))
    assert len(repeat.positions) == 4  # the question and three prefilled repetitions


def test_sweep_is_one_batched_pass_per_chunk(backend, coder):
    prompt = prepare_prompt(backend, load_prompt("selfexplain_meaning"))
    direction = np.asarray(coder.W_dec[0])
    scales = np.linspace(0, 40, 32)
    before = backend.forward_calls
    one = sweep(backend, prompt, direction, scales, patch_layer=0, probe_layer=3, batch_size=32)
    assert backend.forward_calls - before == 1 == one.forward_calls
    before = backend.forward_calls
    chunked = sweep(backend, prompt, direction, scales, patch_layer=0, probe_layer=3, batch_size=7)
    assert backend.forward_calls - before == 5 == chunked.forward_calls
    assert one.selfsim.shape == one.entropy.shape == (32,)
    np.testing.assert_allclose(one.selfsim, chunked.selfsim, atol=1e-12)
    np.testing.assert_allclose(one.entropy, chunked.entropy, atol=1e-12)
    # the batched rows equal separate single-vector runs
    for k in (0, 9, 31):
        tokens = TokenBatch.from_lists([list(prompt.ids)])
        edit = Replace(direction / np.linalg.norm(direction) * scales[k], prompt.positions, 0)
        _, resid = backend.probe(tokens, [edit], layers=[3])
        last = resid[3][0, -1]
        unit = direction / np.linalg.norm(direction)
        assert one.selfsim[k] == pytest.approx(last @ unit / np.linalg.norm(last), abs=1e-12)
    # the patched direction reaches the last token: self-similarity grows with the scale
    assert one.selfsim[-1] > one.selfsim[0] + 0.05
    assert np.corrcoef(scales, one.selfsim)[0, 1] > 0.8


def test_composite_normalises_and_weighs():
    selfsim = np.array([0.0, 0.1, 0.2, 0.4])
    entropy = np.array([5.0, 1.0, 3.0, 9.0])
    comp = composite(selfsim, entropy, 0.4)
    np.testing.assert_allclose(comp, 0.4 * selfsim / 0.4 - 0.6 * (entropy - 1.0) / 8.0)
    assert int(np.argmax(comp)) == 1
    np.testing.assert_allclose(composite(np.ones(3), np.ones(3), 0.5), 0.0)  # flat: no preference


def test_explain_records_curves_generations_and_settings(backend, coder):
    explainer = SelfExplainer(n_scales=16, max_scale=8.0, top_k=3, max_new_tokens=4)
    result = explain(explainer, backend, coder)
    assert result.status is Status.OK and result.text
    s = result.settings
    assert s["n_scales"] == 16 and s["max_scale"] == 8.0 and s["alpha"] == 0.4
    assert s["prompts"] == ["selfexplain_meaning@1", "selfexplain_repeat@1"]
    assert (s["patch_layer"], s["probe_layer"]) == (0, 3)  # resolved for a 4-layer model
    ev = result.evidence
    assert set(ev["prompts"]) == {"selfexplain_meaning", "selfexplain_repeat"}
    meaning = ev["prompts"]["selfexplain_meaning"]
    for key in ("scales", "selfsim", "entropy", "composite"):
        assert len(meaning[key]) == 16, key
    assert meaning["scales"][0] == 0.0
    assert meaning["scales"][-1] == pytest.approx(8.0 * meaning["residual_norm"], rel=1e-5)
    assert meaning["forward_calls"] == 1
    gens = meaning["generations"]
    assert [g["rank"] for g in gens] == [1, 2, 3]
    assert all(g["scale"] > 0 for g in gens), "scale 0 carries no latent: never selected"
    comp = np.asarray(meaning["composite"])
    picked = sorted(np.flatnonzero(np.asarray(meaning["scales"]) > 0), key=lambda i: -comp[i])[:3]
    assert [g["scale"] for g in gens] == [meaning["scales"][i] for i in picked]
    for g in gens:
        assert len(g["relevancy"]) == len(
            backend.tokenize([g["text"]], prepend_bos=False).rows()[0]
        )
    assert result.text == next(g["text"] for g in gens if g["text"])
    assert ev["peak_selfsim"] == pytest.approx(
        max(p["peak_selfsim"] for p in ev["prompts"].values())
    )


def test_relevancy_is_patched_minus_clean_probability(backend, coder):
    prompt = prepare_prompt(backend, load_prompt("selfexplain_meaning"))
    unit = np.asarray(coder.W_dec[1])
    vectors = np.stack([unit * 5.0, unit * 20.0])
    answers = [backend.tokenize([" a dog"], prepend_bos=False).rows()[0], []]
    rel = relevancy(backend, prompt, answers, vectors, patch_layer=0)
    assert len(rel[0]) == 2 and rel[1] == []
    ids = list(prompt.ids) + answers[0]

    def prob(edits: list[Replace]) -> float:
        logits = backend.logits(TokenBatch.from_lists([ids]), edits)[0, len(prompt.ids) - 1]
        p = np.exp(logits - logits.max())
        return float(p[answers[0][0]] / p.sum())

    want = prob([Replace(vectors[0], prompt.positions, 0)]) - prob([])
    assert rel[0][0] == pytest.approx(want, abs=1e-12)


def test_low_self_similarity_is_not_self_explainable(backend, coder):
    explainer = SelfExplainer(n_scales=8, max_new_tokens=2, min_selfsim=0.999)
    result = explain(explainer, backend, coder)
    assert result.status is Status.FAILED
    assert "not self-explainable" in (result.error or "")
    assert result.evidence["prompts"], "the curves are kept for a failure too"
    ok = explain(SelfExplainer(n_scales=8, max_new_tokens=2, min_selfsim=-1.0), backend, coder)
    assert ok.status is Status.OK


def test_calibrated_threshold_is_a_null_level_of_random_directions(backend, coder):
    explainer = SelfExplainer(n_scales=8)
    before = backend.forward_calls
    level = explainer.calibrate(backend, n_random=5, quantile=0.5, seed=1)
    assert backend.forward_calls - before <= 5 + 1  # one sweep per direction (+ the norm probe)
    assert level == explainer.calibrate(backend, n_random=5, quantile=0.5, seed=1)
    assert explainer.calibrate(backend, n_random=5, quantile=1.0, seed=1) >= level
    with pytest.raises(ConfigError):
        explainer.calibrate(backend, n_random=0)


def test_auto_threshold_is_calibrated_once_on_the_run(backend, coder):
    explainer = SelfExplainer(n_scales=8, max_new_tokens=2, min_selfsim="auto")
    first = explain(explainer, backend, coder, 0)
    level = first.evidence["min_selfsim"]
    assert level == pytest.approx(SelfExplainer(n_scales=8).calibrate(backend), abs=1e-6)
    assert first.settings["min_selfsim"] == "auto"
    fixed = SelfExplainer(n_scales=8, max_new_tokens=2, min_selfsim=level)
    explain(fixed, backend, coder, 1)  # warm its prompt cache
    before = backend.forward_calls
    explain(fixed, backend, coder, 1)
    cost = backend.forward_calls - before
    before = backend.forward_calls
    second = explain(explainer, backend, coder, 1)
    assert backend.forward_calls - before == cost, "calibrated once, not once per latent"
    assert second.evidence["min_selfsim"] == level
    assert (second.status is Status.FAILED) == (second.evidence["peak_selfsim"] < level)
    with pytest.raises(ConfigError, match="auto"):
        SelfExplainer(min_selfsim="high")


def test_sampled_generation_is_seeded():
    runs = []
    for _ in range(2):  # fresh backends: the fake's word vocabulary grows as it tokenizes
        backend = FakeBackend(d_model=16, n_layers=4)
        coder = FakeCoder.planted(backend, {0: " cat"}, d_sae=8)
        explainer = SelfExplainer(n_scales=8, max_new_tokens=3, temperature=1.0)
        runs.append(explain(explainer, backend, coder))
    assert runs[0].evidence == runs[1].evidence


def test_user_prompt_file(tmp_path, backend, coder):
    path = tmp_path / "mine.toml"
    path.write_text(
        'version = 3\nsystem = "QQ is not patched here."\nuser = "Define $placeholder ."\n'
        'prefill = "$placeholder means"\nplaceholder = "QQ"\nstop = ["."]\n'
    )
    prompt = prepare_prompt(backend, load_prompt(path))
    assert prompt.text.startswith("System: QQ is not patched here.")  # only user and prefill
    assert [backend.str_tokens(list(prompt.ids))[p] for p in prompt.positions] == [" QQ"] * 2
    result = explain(SelfExplainer(prompts=[str(path)], n_scales=4, top_k=1), backend, coder)
    assert result.settings["prompts"] == ["mine@3"]
    assert set(result.evidence["prompts"]) == {"mine"}


@pytest.mark.parametrize(
    "settings",
    [
        {"n_scales": 1},
        {"max_scale": 0.0},
        {"alpha": 1.5},
        {"top_k": 0},
        {"top_k": 32},
        {"batch_size": 0},
        {"temperature": -1.0},
        {"max_new_tokens": 0},
        {"patch_layer": 3, "probe_layer": 2},
        {"probe_depth": 0.0},
        {"prompts": []},
        {"prompts": ["no_such_prompt"]},
        {"prompts": ["maxact_missing.toml"]},
    ],
)
def test_bad_settings_raise(settings):
    with pytest.raises(ConfigError):
        SelfExplainer(**settings)


def test_bad_input_raises(backend, coder):
    with pytest.raises(ConfigError, match="n_layers"):
        explain(SelfExplainer(patch_layer=3, probe_layer=4), backend, coder)
    with pytest.raises(LatentIndexError):
        explain(SelfExplainer(), backend, coder, index=99)
    wide = FakeCoder.random(24, 8, hook="blocks.0.hook_resid_pre")
    with pytest.raises(DimensionMismatchError):
        run_sync(SelfExplainer().explain(bare_record(wide), MethodContext(backend, wide)))
    with pytest.raises(ConfigError, match="backend"):
        run_sync(SelfExplainer().explain(bare_record(coder), MethodContext()))


def test_flag_generic():
    texts = ["A word or phrase.", "a word, or phrase", "feline animal", "A WORD OR PHRASE", "dog"]
    assert flag_generic(texts, min_share=0.3, min_count=3) == [True, True, False, True, False]
    assert flag_generic(texts, min_share=0.7, min_count=3) == [False] * 5
    ref = LatentRef(coder_id="c", hook="h", index=0)
    failed = Explanation(latent=ref, explainer="x", status=Status.FAILED, error="no")
    ok = Explanation(latent=ref, explainer="x", text="a word or phrase")
    assert flag_generic([ok, ok, failed, failed], min_count=2) == [True, True, False, False]
    with pytest.raises(ConfigError):
        flag_generic(texts, min_share=0.0)


def test_registered_by_name():
    from saexplain.explainers import METHOD_MODULES, selfexplain
    from saexplain.plugins import PluginManager

    seen: dict[str, object] = {}
    selfexplain.register(lambda name, factory, **kw: seen.setdefault(name, factory))
    assert seen == {"selfexplain": SelfExplainer}
    if "saexplain.explainers.selfexplain" in METHOD_MODULES:
        manager = PluginManager(entry_points=[])
        explainer = manager.explainers.create("selfexplain", n_scales=8)
        assert isinstance(explainer, SelfExplainer) and explainer.settings.n_scales == 8
