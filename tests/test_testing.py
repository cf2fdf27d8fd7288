"""The fakes other suites rely on must themselves be right."""

import numpy as np
import pytest

from saexplain._async import run_sync
from saexplain.errors import (
    DimensionMismatchError,
    HookNameError,
    LatentIndexError,
    ProviderServerError,
)
from saexplain.models import ChatRequest, ExampleKind, Message, TokenLogprob
from saexplain.protocols import Add, Backend, Clamp, Provider, Replace, SparseCoder
from saexplain.testing import (
    FakeBackend,
    FakeCoder,
    ScriptedProvider,
    check_backend,
    check_backend_errors,
    check_provider,
    failing_every,
    make_record,
)

TEXTS = ["the cat sat on the mat", "a dog and a cat", "nothing here at all"]


@pytest.fixture
def backend():
    return FakeBackend()


def test_fake_backend_meets_the_contract(backend):
    coder = FakeCoder.random(backend.d_model, 64, hook="blocks.1.hook_resid_post")
    assert isinstance(backend, Backend) and isinstance(coder, SparseCoder)
    check_backend(backend, coder)


def test_planted_latent_fires_exactly_on_its_word(backend):
    coder = FakeCoder.planted(backend, {3: " cat", 7: " dog"})
    tokens = backend.tokenize(TEXTS)
    acts = backend.latent_acts(tokens, [coder])[coder.id]
    fired = {
        (int(r), int(p), int(lat))
        for r, p, lat in zip(acts.row, acts.pos, acts.latent, strict=True)
    }
    expected = {
        (r, p, {" cat": 3, " dog": 7}[tok])
        for r, ids in enumerate(tokens.rows())
        for p, tok in enumerate(backend.str_tokens(ids))
        if tok in (" cat", " dog")
    }
    assert fired == expected
    assert np.allclose(acts.value, 1.0)


def test_latent_acts_stops_at_the_deepest_hook(backend):
    coder = FakeCoder.random(backend.d_model, 8, hook="blocks.1.hook_resid_pre")
    backend.latent_acts(backend.tokenize(TEXTS), [coder])
    assert backend.layers_run == 1  # not n_layers


def test_clear_errors(backend):
    with pytest.raises(HookNameError, match="valid"):
        backend.hook_layer("blocks.99.hook_resid_pre")
    wrong = FakeCoder.random(backend.d_model + 1, 8, hook="blocks.0.hook_resid_pre")
    with pytest.raises(DimensionMismatchError):
        backend.latent_acts(backend.tokenize(TEXTS), [wrong])
    coder = FakeCoder.random(backend.d_model, 8, hook="blocks.0.hook_resid_pre")
    with pytest.raises(LatentIndexError):
        backend.latent_acts(backend.tokenize(TEXTS), [coder], latents={coder.id: [8]})


def test_fake_backend_raises_what_the_torch_backends_raise(backend):
    """The same bad call raises the same error type on the fake as on the torch backends."""
    check_backend_errors(
        backend, FakeCoder.random(backend.d_model, 8, hook="blocks.1.hook_resid_pre")
    )
    assert backend.logits(backend.tokenize(TEXTS)).shape[0] == len(TEXTS)  # still usable


def test_check_backend_errors_names_a_call_raising_the_wrong_type(backend):
    class Loose(FakeBackend):
        def probe(self, tokens, edits=(), *, layers=(), positions=None):
            if any(layer >= self.n_layers for layer in layers):
                raise HookNameError("a probe layer is no hook name")
            return super().probe(tokens, edits, layers=layers, positions=positions)

    loose = Loose()
    with pytest.raises(AssertionError, match=r"probe\(layer out of range\) raised HookNameError"):
        check_backend_errors(
            loose, FakeCoder.random(loose.d_model, 8, hook="blocks.0.hook_resid_pre")
        )


def test_every_public_name_imports_from_the_package():
    import saexplain.testing as testing

    old_names = [
        "OFFLINE_ENV",
        "set_offline_env",
        "FakeBackend",
        "FakeCoder",
        "ScriptedProvider",
        "failing_every",
        "make_record",
        "fresh_plugin_manager",
        "check_backend",
        "check_probe_and_row_replace",
        "check_provider",
        "check_explainer",
        "check_scorer",
        "check_plugin",
        "synthetic_corpus",
        "PlantedValuesCoder",
        "as_numpy",
        "default_edits",
        "check_backends_agree",
        "check_planted",
        "competent_explainer",
        "explanation_keywords",
        "competent_scorer",
        "competent_logprobs",
        "competent_scorer_provider",
        "Answer",
    ]
    assert set(old_names) <= set(testing.__all__)
    assert all(getattr(testing, name) is not None for name in testing.__all__)


def test_edits_change_the_output_and_do_not_persist(backend):
    coder = FakeCoder.random(backend.d_model, 8, hook="blocks.1.hook_resid_pre")
    tokens = backend.tokenize(TEXTS)
    base = backend.logits(tokens)
    direction = np.ones(backend.d_model)
    for edit in (
        Clamp(coder=coder, latent=2, value=20.0),
        Add(direction=direction, scale=5.0, hook="blocks.2.hook_resid_pre"),
        Replace(vector=direction, positions=(1,), layer=1),
    ):
        assert not np.allclose(backend.logits(tokens, [edit]), base)
        assert np.allclose(backend.logits(tokens), base)


def test_clamp_keeps_the_error_term(backend):
    # Setting a latent to its own value must leave the model unchanged.
    coder = FakeCoder.random(backend.d_model, 8, hook="blocks.1.hook_resid_pre")
    tokens = backend.tokenize(["a b"])
    assert np.allclose(
        backend.logits(tokens, [Clamp(coder=coder, latent=0, value=1.0, mode="scale")]),
        backend.logits(tokens),
    )


def test_make_record_splits_and_negatives(backend):
    coder = FakeCoder.planted(backend, {3: " cat"})
    record = make_record(backend, coder, 3, TEXTS)
    assert {e.row for e in record.explanation_examples}.isdisjoint(
        {e.row for e in record.scoring_examples}
    )
    assert all(e.kind == ExampleKind.RANDOM for e in record.non_activating)
    assert record.stats.count == 2


def test_scripted_provider_answers_counts_and_fails_on_demand():
    provider = ScriptedProvider(
        lambda req: req.messages[-1].content.upper(),
        fail_on=failing_every(2),
        cost_per_token=0.5,
    )
    assert isinstance(provider, Provider)
    request = ChatRequest(messages=(Message(role="user", content="one two"),))
    with pytest.raises(ProviderServerError):
        run_sync(provider.complete(request))  # call 0 fails
    response = run_sync(provider.complete(request))
    assert response.text == "ONE TWO"
    assert response.usage.prompt_tokens == 2 and response.usage.completion_tokens == 2
    assert provider.usage.cost_usd == pytest.approx(2.0) and len(provider.requests) == 2


def test_scripted_provider_from_a_list_and_exceptions():
    provider = ScriptedProvider(["first", ValueError("scripted")])
    request = ChatRequest(messages=(Message(role="user", content="x"),))
    assert run_sync(provider.complete(request)).text == "first"
    with pytest.raises(ValueError):
        run_sync(provider.complete(request))
    with pytest.raises(AssertionError, match="only 2 answers"):
        run_sync(provider.complete(request))


def test_check_provider_on_scripted_provider_with_logprobs():
    provider = ScriptedProvider(
        lambda req: "yes",
        logprobs=lambda req, text: [TokenLogprob(token="yes", logprob=-0.2, top=(("yes", -0.2),))],
    )
    check_provider(provider)
    assert provider.capabilities.logprobs
