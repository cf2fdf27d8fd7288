"""The `transformerlens-bridge` backend over a TransformerBridge, on tiny random GPT-2 and Llama
models booted offline: the same numbers as `TransformerLensBackend` on a HookedTransformer and as
the nnsight backend on the plain transformers model, clean hooks, clear errors."""

import copy

import numpy as np
import pytest
import saexplain_transformerlens
import torch
from saexplain_torch.testing import (
    TinySAE,
    check_acts_match_hidden_states,
    check_one_pass_equals_one_at_a_time,
    check_scoping_and_errors,
    coders_at_every_site,
    gpt2_tokenizer,
    make_coder,
    plant,
    tiny_gpt2,
    tiny_llama,
)
from saexplain_transformerlens.backend import TransformerLensBackend
from saexplain_transformerlens.bridge import TransformerBridgeBackend
from saexplain_transformerlens.convert import hooked_config_from_hf, hooked_transformer_from_hf
from transformer_lens import HookedTransformer
from transformer_lens.model_bridge import TransformerBridge
from transformer_lens.pretrained.weight_conversions import (
    convert_gpt2_weights,
    convert_llama_weights,
)

from saexplain.errors import BackendError, HookNameError
from saexplain.plugins import PluginManager
from saexplain.protocols import Add, Clamp, Replace
from saexplain.testing import check_backend, check_backends_agree, check_planted

FAMILIES = {"gpt2": tiny_gpt2, "llama": tiny_llama}


def boot(hf, name="tiny"):
    """A bridge over a copy of `hf`: booting wraps the model's blocks in place."""
    return TransformerBridge.boot_transformers(
        name, hf_model=copy.deepcopy(hf), tokenizer=gpt2_tokenizer(), device="cpu"
    )


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request):
    hf = FAMILIES[request.param]()
    bridge = TransformerBridgeBackend(boot(hf, f"tiny-{request.param}"))
    hooked = TransformerLensBackend(hooked_transformer_from_hf(hf, gpt2_tokenizer()))
    return request.param, hf, bridge, hooked


def coders_for(backend):
    return coders_at_every_site(backend.d_model, backend.d_mlp)


def edits_for(coders, d_model):
    rng = np.random.default_rng(0)
    edits = [Clamp(coder=c, latent=int(rng.integers(c.d_sae)), value=25.0) for c in coders]
    edits += [
        Clamp(coder=coders[0], latent=5, value=30.0, mode="add", positions=(1, 2)),
        Add(direction=rng.normal(size=d_model), scale=8.0, hook="blocks.1.hook_resid_mid"),
        Add(
            direction=rng.normal(size=d_model),
            scale=8.0,
            hook="blocks.0.hook_resid_mid",
            positions=(2,),
        ),
        Add(direction=rng.normal(size=d_model), scale=8.0, hook="blocks.0.hook_resid_post"),
        Replace(vector=rng.normal(size=d_model) * 4, positions=(1,), layer=1),
        Replace(vector=rng.normal(size=d_model) * 4, positions=(0, 2), layer=0),
    ]
    return edits


def test_detect_and_make_backend(family):
    _, hf, bridge, hooked = family
    plugin = saexplain_transformerlens
    assert plugin.detect_backend(bridge.model) == "transformerlens-bridge"
    assert plugin.detect_backend(hooked.model) == "transformerlens"
    assert plugin.detect_backend(hf) is None and plugin.detect_backend(object()) is None
    assert PluginManager(builtins=()).detect_backend(bridge.model) == "transformerlens-bridge"
    manager = PluginManager(builtins=())
    assert {"transformerlens", "transformerlens-bridge"} <= set(manager.backends.names())
    for factory in (plugin.make_backend, plugin.make_bridge_backend):
        made = factory(bridge.model, model_id="tiny")
        assert isinstance(made, TransformerBridgeBackend)
        assert made.name == "transformerlens-bridge" and made.model_id == "tiny"
    assert bridge.d_model == hooked.d_model and bridge.d_mlp == hooked.d_mlp
    assert (bridge.n_layers, bridge.n_heads, bridge.d_head) == (2, 4, 16)
    with pytest.raises(BackendError, match="transformerlens-bridge"):
        TransformerLensBackend(bridge.model)
    with pytest.raises(BackendError, match="TransformerBridge"):
        TransformerBridgeBackend(hooked.model)
    with pytest.raises(BackendError, match="TransformerBridge"):
        TransformerBridgeBackend(hf)


def test_contract(family):
    _, _, bridge, _ = family
    check_backend(bridge, make_coder(bridge.d_model, 128, "blocks.1.hook_resid_pre"))


def test_agrees_with_hooked_transformer(family):
    _, _, bridge, hooked = family
    coders = coders_for(hooked)
    edits = edits_for(coders, hooked.d_model)
    worst = check_backends_agree([hooked, bridge], coders, edits=edits, atol=1e-4)
    assert set(worst) >= {
        "latent_acts",
        "logits[none]",
        "logits[Clamp]",
        "logits[Add]",
        "logits[Replace]",
    }, worst


def test_agrees_with_nnsight(family):
    nn_backend = pytest.importorskip("saexplain_nnsight.backend")
    _, hf, bridge, _ = family
    nnsight = nn_backend.NNsightBackend(hf, tokenizer=gpt2_tokenizer())
    coders = coders_for(bridge)
    check_backends_agree(
        [nnsight, bridge], coders, edits=edits_for(coders, bridge.d_model), atol=1e-4
    )


def test_compatibility_mode_agrees_with_a_processed_hooked_transformer(family):
    """`enable_compatibility_mode()` folds and centers the weights like
    `HookedTransformer.from_pretrained`: the numbers then match a HookedTransformer processed the
    same way (and the hooks still run once each)."""
    name, hf, _, _ = family
    bridge = boot(hf)
    bridge.enable_compatibility_mode(disable_warnings=True)
    cfg = hooked_config_from_hf(hf)
    convert = convert_gpt2_weights if name == "gpt2" else convert_llama_weights
    hooked = HookedTransformer(cfg, tokenizer=gpt2_tokenizer(), move_to_device=False)
    hooked.load_and_process_state_dict(convert(hf, cfg))  # fold_ln, centering: the defaults
    hooked_backend = TransformerLensBackend(hooked.eval())
    coders = coders_for(hooked_backend)[:4]
    edits = edits_for(coders, hooked_backend.d_model)
    check_backends_agree(
        [hooked_backend, TransformerBridgeBackend(bridge)], coders, edits=edits, atol=1e-4
    )


def test_resid_mid_edits_reach_the_residual_stream(family):
    """The bridge's own `hook_resid_mid` is the second norm's input: a value returned there alone
    would change the MLP's input but not the residual; the backend writes the change through."""
    _, _, bridge, hooked = family
    tokens = bridge.tokenize(["edits between attention and MLP"])
    direction = np.random.default_rng(3).normal(size=bridge.d_model)
    for edit in [
        Add(direction=direction, scale=10.0, hook="blocks.0.hook_resid_mid"),
        Clamp(
            make_coder(bridge.d_model, 64, "blocks.0.hook_resid_mid"),
            3,
            40.0,
        ),
    ]:
        want_logits, want = hooked.probe(tokens, [edit], layers=[1])
        got_logits, got = bridge.probe(tokens, [edit], layers=[1])
        assert not torch.allclose(want[1], hooked.probe(tokens, layers=[1])[1][1], atol=1e-3)
        assert torch.allclose(got[1], want[1], atol=1e-4)  # the residual entering block 1
        assert torch.allclose(got_logits, want_logits, atol=1e-4)


def test_several_coders_in_one_pass_equal_one_at_a_time(family):
    _, _, bridge, _ = family
    check_one_pass_equals_one_at_a_time(bridge, coders_for(bridge))


def test_acts_match_a_direct_encode_of_the_hf_hidden_state(family):
    _, hf, bridge, _ = family
    check_acts_match_hidden_states(bridge, hf)


def test_stops_right_after_the_deepest_hook(family):
    _, _, bridge, _ = family
    model = bridge.model
    calls = []
    handles = [
        b.register_forward_hook(lambda *a, i=i: calls.append(i)) for i, b in enumerate(model.blocks)
    ]
    handles += [
        b.mlp.register_forward_hook(lambda *a, i=i: calls.append(f"mlp{i}"))
        for i, b in enumerate(model.blocks)
    ]
    handles.append(model.unembed.register_forward_hook(lambda *a: calls.append("unembed")))
    tokens = bridge.tokenize(["early stopping"])

    def sae(hook, seed=0):
        return make_coder(bridge.d_model, 128, hook, seed=seed)

    try:
        bridge.latent_acts(tokens, [sae("blocks.0.hook_resid_pre")])
        assert calls == []
        bridge.latent_acts(tokens, [sae("blocks.0.hook_attn_out")])
        assert calls == []  # stopped inside block 0, before its MLP
        bridge.latent_acts(tokens, [sae("blocks.1.hook_resid_pre")])
        assert calls == ["mlp0", 0]
        calls.clear()
        bridge.latent_acts(
            tokens, [sae("blocks.0.hook_mlp_out"), sae("blocks.1.hook_resid_post", seed=1)]
        )
        assert calls == ["mlp0", 0, "mlp1"]  # stopped at block 1's output hook
        calls.clear()
        bridge.logits(tokens)
        assert calls[-1] == "unembed"
    finally:
        for h in handles:
            h.remove()
    assert bridge.hook_count() == 0


def test_scoping_and_clear_errors(family):
    """No hook survives a call, also when a hook function raises mid-forward."""
    _, _, bridge, _ = family
    assert bridge.hook_count() == 0
    check_scoping_and_errors(bridge, bridge.hook_count)
    assert bridge.hook_count() == 0

    # a raise after a resid_mid edit armed its write-through at the same block's hook_mlp_out
    class Boom(TinySAE):
        def encode(self, x):
            raise RuntimeError("boom")

    boom = Boom(bridge.d_model, 16, "blocks.1.hook_mlp_out")
    tokens = bridge.tokenize(["raise in the middle"])
    base = np.asarray(bridge.logits(tokens))
    mid = Add(np.ones(bridge.d_model), 3.0, "blocks.1.hook_resid_mid")
    with pytest.raises(RuntimeError, match="boom"):
        bridge.logits(tokens, [mid, Clamp(boom, 0, 1.0)])
    assert bridge.hook_count() == 0
    with pytest.raises(RuntimeError, match="boom"):
        bridge.latent_acts(tokens, [boom])
    assert bridge.hook_count() == 0
    assert np.array_equal(np.asarray(bridge.logits(tokens)), base)


def test_unembed_equals_the_hooked_transformers(family):
    _, _, bridge, hooked = family  # latent subsets: check_backend, in the contract test
    v = torch.randn(bridge.d_model)
    assert torch.allclose(bridge.unembed(v), hooked.unembed(v), atol=1e-5)


def test_planted_features_fire_exactly_where_planted(family):
    name, _, _, _ = family
    tok = gpt2_tokenizer()
    hf = FAMILIES[name](seed=1)
    planted = {3: tok.encode(" cat")[0], 7: tok.encode(" dog")[0], 11: tok.encode(" apple")[0]}
    d = hf.config.hidden_size if name == "llama" else hf.config.n_embd
    sae = make_coder(d, 32, "blocks.0.hook_resid_pre")
    plant(sae, hf.get_input_embeddings().weight.data, planted)
    texts = ["The cat and the dog ate an apple.", "No pets here", "dog cat dog, apple cat"]
    check_planted(TransformerBridgeBackend(boot(hf)), sae, planted, texts)


def test_unsupported_hook_raises_listing_the_valid_ones():
    """Parallel attention/MLP blocks (GPT-NeoX) have no residual between attention and MLP."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=50257,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=256,
        max_position_embeddings=128,
        use_parallel_residual=True,
        bos_token_id=50256,
        eos_token_id=50256,
        architectures=["GPTNeoXForCausalLM"],
    )
    bridge = TransformerBridgeBackend(boot(GPTNeoXForCausalLM(config).eval(), "tiny-neox"))
    tokens = bridge.tokenize(["parallel blocks"])
    mid = make_coder(64, 32, "blocks.1.hook_resid_mid")
    with pytest.raises(HookNameError, match="not available on this TransformerBridge") as err:
        bridge.latent_acts(tokens, [mid])
    assert "hook_resid_post" in str(err.value) and "'hook_resid_mid'" not in str(err.value)
    with pytest.raises(HookNameError, match="hook_resid_mid"):
        bridge.logits(tokens, [Add(np.ones(64), 1.0, "blocks.0.hook_resid_mid")])
    with pytest.raises(HookNameError, match="valid names"):
        bridge.site("blocks.9.hook_resid_pre")
    assert bridge.hook_count() == 0
    # the other sites work there
    post = make_coder(64, 32, "blocks.1.hook_resid_post")
    assert len(bridge.latent_acts(tokens, [post])[post.id]) > 0


def test_boot_from_a_local_directory(tmp_path, family):
    """`make_bridge_backend` with a path boots `TransformerBridge` from it (no hub needed)."""
    _, hf, bridge, _ = family
    hf.save_pretrained(tmp_path)
    gpt2_tokenizer().save_pretrained(tmp_path)
    made = saexplain_transformerlens.make_bridge_backend(str(tmp_path), device="cpu")
    assert isinstance(made, TransformerBridgeBackend) and made.model_id == str(tmp_path)
    tokens = bridge.tokenize(["booted from a directory"])
    assert np.allclose(
        np.asarray(made.logits(tokens)), np.asarray(bridge.logits(tokens)), atol=1e-4
    )
