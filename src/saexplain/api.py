"""The notebook API: explain latents of the model and SAE you already have in memory.

    import saexplain as sx
    results = sx.explain(model, sae, latents=[3, 17, 42], explainers=["maxact", "vocabproj"],
                         scorers=["detection", "fuzzing"], provider="gpt-4o-mini",
                         dataset="monology/pile-uncopyrighted")
    results                 # a table in Jupyter
    results.to_dataframe()  # pandas

`model` is a HookedSAETransformer / HookedTransformer, an nnsight LanguageModel or a
transformers causal LM (pass `tokenizer=`), or a model name. `sae` is a SAELens SAE object,
`(release, sae_id)`, a `"source:spec"` string, or any object with the SparseCoder attributes.
`sx.explain` works inside Jupyter's running event loop; `await sx.aexplain(...)` in async code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from saexplain.models import LatentSelection, MethodSpec, ProviderSpec, RunConfig
from saexplain.protocols import Provider

if TYPE_CHECKING:
    from saexplain.report.results import RunResults

Methods = Sequence[str | MethodSpec | Mapping[str, Any]] | str


def _provider_spec(provider: str | ProviderSpec | None) -> ProviderSpec | None:
    """`"<provider>:<model>"` when `<provider>` is a registered provider name (`"local:smollm2"`,
    `"myplugin:my-model"`); any other string is a model of the default provider."""
    if provider is None or isinstance(provider, ProviderSpec):
        return provider
    name, sep, model = provider.partition(":")
    if sep and name:
        from saexplain.plugins import get_plugin_manager

        # Only a registered name splits: "ft:gpt-4o-mini:org::id" stays one model string.
        if name in get_plugin_manager().providers:
            return ProviderSpec(provider=name, model=model)
    return ProviderSpec(model=provider)


def _selection(latents: Sequence[int] | LatentSelection | int | None) -> LatentSelection:
    if latents is None:
        return LatentSelection(sample=100)
    if isinstance(latents, LatentSelection):
        return latents
    if isinstance(latents, int):
        return LatentSelection(sample=latents)
    return LatentSelection(indices=tuple(int(i) for i in latents))


def _describe(obj: object, fallback: str) -> str:
    if isinstance(obj, str):
        return obj
    if isinstance(obj, tuple):
        return "/".join(map(str, obj))
    for attr in ("model_id", "id", "name_or_path"):
        value = getattr(obj, attr, None)
        if isinstance(value, str) and value:
            return value
    cfg = getattr(obj, "cfg", None) or getattr(obj, "config", None)
    for attr in ("model_name", "_name_or_path", "name_or_path"):
        value = getattr(cfg, attr, None)
        if isinstance(value, str) and value:
            return value
    return fallback


async def aexplain(
    model: object,
    sae: object,
    *,
    latents: Sequence[int] | LatentSelection | int | None = None,
    explainers: Methods = ("maxact",),
    scorers: Methods = ("detection", "fuzzing"),
    provider: str | ProviderSpec | Provider | None = None,
    scorer_provider: str | ProviderSpec | Provider | None = None,
    dataset: object = "demo",
    n_tokens: int = 200_000,
    context_length: int = 128,
    backend: str | None = None,
    tokenizer: Any = None,
    output_dir: str = "runs",
    name: str | None = None,
    progress: bool = True,
    **config: Any,
) -> RunResults:
    """Collect, explain and score `latents` of `sae` in `model`; see the module docstring.

    `explainers` and `scorers` take a method name or a list of them (names, `MethodSpec`s or
    `{"name": ..., "settings": {...}}`). Scorers default to detection and fuzzing, which ask an
    LLM; `explainers="selfexplain", scorers=[]` needs no LLM (and no provider plugin).
    """
    from saexplain.pipeline import arun

    if "explainer" in config:  # one spelling only: `explainer=` used to change the scorers too
        raise TypeError(
            "explain() and aexplain() take `explainers=` (a name or a list), not `explainer=`; "
            "for a run without an LLM pass explainers='selfexplain', scorers=[]"
        )

    live: dict[str, Provider] = {}
    explainer_spec = scorer_spec = None
    if isinstance(provider, Provider):
        live["explainer"] = provider
        live.setdefault("scorer", provider)
    else:
        explainer_spec = _provider_spec(provider)
    if isinstance(scorer_provider, Provider):
        live["scorer"] = scorer_provider
    else:
        scorer_spec = _provider_spec(scorer_provider)
    fields: dict[str, Any] = {
        "model": _describe(model, "model"),
        "backend": backend,
        "coder": _describe(sae, "coder"),
        "dataset": _describe(dataset, "in-memory dataset"),
        "n_tokens": n_tokens,
        "context_length": context_length,
        "latents": _selection(latents),
        "explainers": [explainers] if isinstance(explainers, str) else list(explainers),
        "scorers": [scorers] if isinstance(scorers, str) else list(scorers),
        "output_dir": output_dir,
        "name": name,
        **config,
    }
    if explainer_spec is not None:
        fields["explainer_model"] = explainer_spec
    if scorer_spec is not None:
        fields["scorer_model"] = scorer_spec
    run_config = RunConfig.model_validate(fields)
    backend_settings = {"tokenizer": tokenizer} if tokenizer is not None else None
    return await arun(
        run_config,
        model=model,
        coder=sae,
        dataset=dataset,
        providers=live or None,
        progress=progress,
        backend_settings=backend_settings,
    )


def explain(model: object, sae: object, **kwargs: Any) -> RunResults:
    """`aexplain` for synchronous code; safe inside Jupyter's running event loop."""
    from saexplain._async import run_sync

    return run_sync(aexplain(model, sae, **kwargs))
