"""Loading a model by name or path (issue 21): nnsight's current entry point (`TransformersModel`,
not the deprecated `LanguageModel`), and one-line errors, at once, for a model that cannot be
loaded. The conftest sets HF_HUB_OFFLINE=1; no model named here is in the test cache."""

import time
import warnings

import pytest
import saexplain_nnsight
from nnsight import NNsightDeprecationWarning
from saexplain_torch.testing import gpt2_tokenizer, tiny_gpt2

from saexplain.errors import ConfigError


def test_a_model_folder_loads_through_transformers_model_without_deprecation(tmp_path):
    tiny_gpt2().save_pretrained(tmp_path)
    gpt2_tokenizer().save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NNsightDeprecationWarning)
        backend = saexplain_nnsight.make_backend(str(tmp_path))
    assert type(backend.lm).__name__ == "TransformersModel"
    assert backend.model_id == str(tmp_path)
    assert backend.logits(backend.tokenize(["a tiny model"])).shape[-1] == 50257


def test_a_language_model_a_user_passes_is_still_accepted():
    from nnsight import LanguageModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NNsightDeprecationWarning)
        lm = LanguageModel(tiny_gpt2(), tokenizer=gpt2_tokenizer())
    backend = saexplain_nnsight.make_backend(lm)
    assert backend.lm is lm


@pytest.mark.parametrize("name", ["local/smollm2", "no-such-org/no-such-model"])
def test_a_model_missing_offline_fails_at_once_in_one_line(name):
    start = time.monotonic()
    with pytest.raises(ConfigError) as raised:
        saexplain_nnsight.make_backend(name)
    message = str(raised.value)
    assert "\n" not in message and name in message and "HF_HUB_OFFLINE" in message
    assert time.monotonic() - start < 10


def test_a_folder_without_a_model_is_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ConfigError) as raised:
        saexplain_nnsight.make_backend(str(tmp_path))
    assert "\n" not in str(raised.value) and str(tmp_path) in str(raised.value)
