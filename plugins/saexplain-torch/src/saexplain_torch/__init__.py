"""saexplain-torch: the torch backend core that the nnsight and TransformerLens backends share.

- `saexplain_torch.backend.TorchBackend`: the whole Backend contract over a torch causal LM; a
  model stack supplies a forward pass with hooks at canonical sites and the unembedding.
- `saexplain_torch.hooks`: canonical hook names (`blocks.L.hook_resid_pre`, ...), their order and
  widths. `saexplain_torch.edits`: edits and captures as hook functions.
  `saexplain_torch.generation`: generation loops and the transformers KV cache.
- `Neurons` (an MLP layer's neurons as a coder) and the `neurons:` coder source.
- `saexplain_torch.testing`: tiny offline models and plain torch SAEs for backend test suites.

Importing this module stays light: torch loads only when a coder or backend is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

if TYPE_CHECKING:
    from saexplain_torch.coders import Neurons

__all__ = ["Neurons", "register_coders"]


def __getattr__(name: str) -> Any:
    if name == "Neurons":
        from saexplain_torch import coders

        return coders.Neurons
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _neurons_coder(spec: str, *, backend: Any = None, **settings: Any) -> Any:
    from saexplain_torch.coders import neurons_coder

    return neurons_coder(spec, backend=backend, **settings)


@hookimpl
def register_coders(register: Register) -> None:
    register("neurons", _neurons_coder, description="MLP neurons: 'blocks.L.mlp.hook_post'")
