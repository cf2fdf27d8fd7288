"""Building a run's LLM providers from its config, by role, and logging their traffic.

The pipeline calls `build_providers` once per run; only the roles some chosen method needs get a
provider.
"""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from typing import Any

from saexplain.models import ChatRequest, ChatResponse, ProviderSpec, RunConfig
from saexplain.plugins import PluginManager
from saexplain.protocols import Explainer, Provider, Scorer, needs_of
from saexplain.registry import instantiate
from saexplain.rundir import RunDir

# The latent and method a coroutine works for: log lines and accounting are tagged with them.
current_latent: contextvars.ContextVar[str] = contextvars.ContextVar("latent", default="run")
current_method: contextvars.ContextVar[str] = contextvars.ContextVar("method", default="")


def build_providers(
    config: RunConfig,
    manager: PluginManager,
    explainers: Mapping[str, Explainer],
    scorers: Mapping[str, Scorer],
    given: Mapping[str, Provider] | None = None,
) -> dict[str, Provider]:
    """Providers by role; only the roles some chosen method uses. Keys are checked here."""
    out: dict[str, Provider] = dict(given or {})
    roles: dict[str, ProviderSpec] = {}
    if any(needs_of(m).provider for m in explainers.values()):
        roles["explainer"] = config.explainer_model
    if any(needs_of(m).provider for m in scorers.values()):
        roles["scorer"] = config.scorer_model or config.explainer_model
    made: dict[str, Provider] = {}
    for role, spec in roles.items():
        if role in out or "default" in out:
            continue
        key = spec.model_dump_json()
        if key in made:  # the same model serves both roles: one provider, one cache and ledger
            out[role] = made[key]
            continue
        settings = dict(spec.settings)
        if config.spend_cap_usd is not None:
            settings.setdefault("spend_cap_usd", config.spend_cap_usd)
        shared_ledger = next((getattr(p, "ledger", None) for p in made.values()), None)
        if shared_ledger is not None:
            settings.setdefault("ledger", shared_ledger)  # one spend cap across every model
        provider = instantiate("provider", manager.providers, spec.provider, settings, spec.model)
        check = getattr(provider, "check_ready", None)
        if callable(check):
            check()  # e.g. a missing API key, before any heavy work
        made[key] = out[role] = provider
    return out


class LoggedProvider:
    """Writes each prompt and response to the run's per-latent log."""

    def __init__(self, inner: Provider, run_dir: RunDir) -> None:
        self.inner, self.run_dir = inner, run_dir
        self.name, self.model, self.capabilities = inner.name, inner.model, inner.capabilities

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        entry: dict[str, Any] = {
            "method": current_method.get(),
            "provider": self.name,
            "model": self.model,
            "request": request.model_dump(mode="json"),
        }
        sink = self.run_dir.log(current_latent.get())
        try:
            response = await self.inner.complete(request)
        except Exception as e:
            sink.append({**entry, "error": f"{type(e).__name__}: {e}"})
            raise
        sink.append({**entry, "response": response.model_dump(mode="json")})
        return response
