"""saexplain-litellm: LLM providers for saexplain.

- `litellm`: any litellm model string (`gpt-4o-mini`, `anthropic/...`, `hosted_vllm/...`,
  `ollama/...`). Model strings starting with `local/` (the default `local/smollm2`) are served
  in-process by the local provider, so the default run configuration works offline.
- `local`: a transformers causal LM in this process (`smollm2`, or a model directory).

Both implement one attempt per call (typed `saexplain.errors.ProviderError`s on failure); the
pipeline wraps them in saexplain's provider middleware (retries, response cache, limits, spend
cap, accounting). Outside a run, wrap a provider yourself:
`saexplain.providers.wrap_provider(make_litellm_provider("gpt-4o-mini"))`.

Importing this module stays light: litellm, torch and transformers are imported only when a
provider is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saexplain import hookimpl
from saexplain.hookspecs import Register

if TYPE_CHECKING:
    from saexplain.protocols import Provider

__all__ = ["make_litellm_provider", "make_local_provider", "register_providers"]

LOCAL_PREFIX = "local/"


def make_litellm_provider(model: str, **settings: Any) -> Provider:
    """Provider factory `litellm`: `local/<name-or-path>` runs in-process, the rest via litellm."""
    if model.startswith(LOCAL_PREFIX):
        return make_local_provider(model.removeprefix(LOCAL_PREFIX), **settings)
    from saexplain_litellm.litellm_provider import LiteLLMProvider

    return LiteLLMProvider(model, **settings)


def make_local_provider(model: str = "smollm2", **settings: Any) -> Provider:
    """Provider factory for `local`: `smollm2` (the packaged default) or a model directory."""
    from saexplain_litellm.local import LocalProvider

    return LocalProvider(model.removeprefix(LOCAL_PREFIX), **settings)


@hookimpl
def register_providers(register: Register) -> None:
    register(
        "litellm",
        make_litellm_provider,
        description="Any litellm model string; 'local/...' runs a transformers model in-process.",
    )
    register(
        "local",
        make_local_provider,
        description="A transformers causal LM in-process (default SmolLM2-135M-Instruct).",
    )
