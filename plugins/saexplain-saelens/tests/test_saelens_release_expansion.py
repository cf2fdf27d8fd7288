"""A SAELens spec naming several SAEs (a `*` pattern or a brace list of sae ids) expands to one
coder each (issue 17): checked offline against the pretrained directory that ships with sae_lens;
loading is tested through local SAE folders (the hub is not reachable here)."""

import pytest
from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
from saexplain_saelens.sources import expand_sae_ids, names_several, saelens_coder
from saexplain_saelens.testing import make_sae

from saexplain.errors import ConfigError
from saexplain.models import RunConfig
from saexplain.pipeline import build_coders
from saexplain.plugins import get_plugin_manager

RELEASE = "gpt2-small-res-jb"


def test_a_star_pattern_expands_to_every_matching_sae_of_the_release_in_layer_order():
    listed = list(get_pretrained_saes_directory()[RELEASE].saes_map)
    ids = expand_sae_ids(RELEASE, "blocks.*.hook_resid_pre")
    assert ids == [f"blocks.{layer}.hook_resid_pre" for layer in range(12)]
    assert set(ids) < set(listed)  # blocks.11.hook_resid_post is in the release, not matched
    assert expand_sae_ids(RELEASE, "*") == listed


def test_a_list_of_sae_ids_expands_to_those_ids():
    ids = expand_sae_ids(RELEASE, "blocks.{8,0,4}.hook_resid_pre")
    assert ids == ["blocks.0.hook_resid_pre", "blocks.4.hook_resid_pre", "blocks.8.hook_resid_pre"]
    assert names_several("r/blocks.{1,2}.x") and names_several("r/*")
    assert not names_several(f"{RELEASE}/blocks.8.hook_resid_pre")


@pytest.mark.parametrize(
    ("release", "pattern", "named"),
    [
        (RELEASE, "blocks.*.hook_mlp_out", "matches no SAE"),
        (RELEASE, "blocks.{0,99}.hook_resid_pre", "blocks.99.hook_resid_pre"),
        ("no-such-release", "blocks.*.hook_resid_pre", "no-such-release"),
    ],
)
def test_a_pattern_naming_nothing_is_a_clear_error(release, pattern, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as raised:
        saelens_coder(f"{release}/{pattern}")
    assert "\n" not in str(raised.value)


def save_saes(tmp_path, layers):
    for layer in layers:
        hook = f"blocks.{layer}.hook_resid_pre"
        make_sae("standard", 16, 32, hook, seed=layer).save_model(tmp_path / f"layer_{layer}")


def test_a_pattern_of_local_sae_folders_loads_each_in_natural_order(tmp_path):
    save_saes(tmp_path, [0, 2, 10])
    (tmp_path / "notes").mkdir()  # no cfg.json: not an SAE
    coders = saelens_coder(str(tmp_path / "layer_*"))
    assert [c.hook for c in coders] == [f"blocks.{i}.hook_resid_pre" for i in (0, 2, 10)]
    listed = saelens_coder(str(tmp_path / "layer_{10,0}"))
    assert [c.hook for c in listed] == ["blocks.0.hook_resid_pre", "blocks.10.hook_resid_pre"]


def test_a_run_config_expands_a_pattern_into_the_run_coders(tmp_path):
    save_saes(tmp_path, [0, 1])
    cfg = RunConfig(
        model="m",
        coders=[{"coder": f"saelens:{tmp_path}/layer_*", "latents": {"indices": [3]}}],
        dataset="d",
    )
    coders, selections = build_coders(cfg, get_plugin_manager(), backend=None)  # type: ignore[arg-type]
    assert [c.hook for c in coders] == ["blocks.0.hook_resid_pre", "blocks.1.hook_resid_pre"]
    assert len({c.id for c in coders}) == 2
    assert all(selections[c.id].indices == (3,) for c in coders)  # the spec's own latents
