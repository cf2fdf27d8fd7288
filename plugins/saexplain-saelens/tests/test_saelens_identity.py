"""A live SAELens SAE is identified by its weights (issue 21); its name: tests/integration."""

import torch
from saexplain_saelens import SAELensCoder
from saexplain_saelens.testing import make_sae

from saexplain.protocols import Fingerprinted


def test_the_fingerprint_follows_the_weights():
    sae = make_sae("jumprelu", 16, 64, "blocks.0.hook_resid_pre", seed=1)
    coder = SAELensCoder(sae)
    assert isinstance(coder, Fingerprinted)
    before = coder.fingerprint()
    assert coder.fingerprint() == before
    with torch.no_grad():
        sae.W_enc[:, :4] *= 2.0  # edited in place: same object, same name
    assert coder.fingerprint() != before
    other = SAELensCoder(make_sae("jumprelu", 16, 64, "blocks.0.hook_resid_pre", seed=2))
    assert other.id == coder.id and other.fingerprint() != coder.fingerprint()
