"""The torch backends fingerprint their model's weights (issue 21: weights edited in place)."""

import types

import torch
from saexplain_torch.backend import TorchBackend

from saexplain.protocols import Fingerprinted


class LinearBackend(TorchBackend):
    """The smallest TorchBackend: its model is one linear layer, kept as an attribute."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(8, 8).to(dtype)
        tokenizer = types.SimpleNamespace(bos_token_id=0, eos_token_id=1, pad_token_id=None)
        super().__init__(
            model_id="linear",
            tokenizer=tokenizer,
            d_model=8,
            n_layers=1,
            d_mlp=8,
            n_heads=1,
            d_head=8,
            device=torch.device("cpu"),
            dtype=dtype,
        )

    def _forward(self, ids, hooks, stop_layer):  # pragma: no cover - not called
        raise NotImplementedError

    def _unembed(self, x):  # pragma: no cover - not called
        raise NotImplementedError


def test_the_fingerprint_follows_the_weights():
    backend = LinearBackend()
    assert isinstance(backend, Fingerprinted)
    before = backend.fingerprint()
    assert LinearBackend().fingerprint() == before  # the same weights, another object
    with torch.no_grad():
        backend.model.weight[3] += 1.0  # edited in place
    assert backend.fingerprint() != before
    assert LinearBackend(torch.bfloat16).fingerprint() != before  # bfloat16 has no numpy dtype
