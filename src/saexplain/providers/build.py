"""Building a run's LLM providers from its config, by role, each inside the middleware.

The pipeline calls `build_providers` once per run; only the roles some chosen method needs get a
provider. Every provider built from a `ProviderSpec` is wrapped by `wrap_provider` (retries,
cache, limits, spend cap, accounting); provider objects the caller passes in get the run-wide
layers only (`account_provider`). One `Ledger` per run is shared by all of them, so the run's
`spend_cap_usd` covers every provider, whichever plugin it comes from. Given the run's
`spend.json`, the ledger starts from the money earlier attempts at the run spent, so the cap
holds across reruns. The values of secret-named settings (`api_key`, `params.extra_headers`'
`Authorization`, `Cookie`, ...) are registered as known secrets here, before any call, so a
server echoing one is masked wherever the run writes or prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from saexplain.errors import ConfigError
from saexplain.models import ProviderSpec, RunConfig
from saexplain.plugins import PluginManager
from saexplain.protocols import Explainer, Provider, ReadinessCheck, Scorer, needs_of
from saexplain.providers.accounting import Ledger, current_latent, current_method
from saexplain.providers.layers import LoggedProvider
from saexplain.providers.wrap import account_provider, split_settings, wrap_provider
from saexplain.registry import instantiate
from saexplain.secrets import register_secrets_in

__all__ = ["LoggedProvider", "build_providers", "current_latent", "current_method"]


def build_providers(
    config: RunConfig,
    manager: PluginManager,
    explainers: Mapping[str, Explainer],
    scorers: Mapping[str, Scorer],
    given: Mapping[str, Provider] | None = None,
    *,
    spend_file: Path | None = None,
    check_ready: bool = True,
) -> dict[str, Provider]:
    """Providers by role; only the roles some chosen method uses. Keys are checked here,
    unless `check_ready` is false (`saexplain estimate`, which calls no LLM, needs no key).

    The returned providers share one `Ledger` (reachable as `provider.ledger`) capped at
    `config.spend_cap_usd` and persisted in `spend_file` (the run's `spend.json`), if given.
    """
    try:
        ledger = Ledger(config.spend_cap_usd, path=spend_file)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    out: dict[str, Provider] = {}
    wrapped_given: dict[int, Provider] = {}  # one object serving two roles stays one provider
    for role, provider in (given or {}).items():
        if id(provider) not in wrapped_given:
            wrapped_given[id(provider)] = account_provider(provider, ledger)
        out[role] = wrapped_given[id(provider)]
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
        if key in made:  # the same model serves both roles: one provider, one cache
            out[role] = made[key]
            continue
        made[key] = out[role] = _build(spec, manager, ledger, check_ready=check_ready)
    return out


def _build(
    spec: ProviderSpec, manager: PluginManager, ledger: Ledger, *, check_ready: bool = True
) -> Provider:
    register_secrets_in(spec.settings)
    middleware, own = split_settings(spec.settings)
    provider = instantiate("provider", manager.providers, spec.provider, own, spec.model)
    if check_ready and isinstance(provider, ReadinessCheck):
        provider.check_ready()  # e.g. a missing API key, before any heavy work
    try:
        # The provider's own settings scope its cache entries (a server URL, a dtype...).
        return wrap_provider(
            provider, ledger=ledger, cache_scope=own, batch=spec.batch, **middleware
        )
    except ConfigError:
        raise  # e.g. `batch` on a provider without a batch API: already says what to change
    except (TypeError, ValueError) as e:
        raise ConfigError(f"provider {spec.provider!r}: bad settings {middleware}: {e}") from e
