"""The notebook API: explain latents of the model and SAE you already have in memory.

    import saexplain as sx
    results = sx.explain(model, sae, latents=[3, 17, 42], explainers=["maxact", "vocabproj"],
                         scorers=["detection", "fuzzing"], provider="gpt-4o-mini",
                         dataset="monology/pile-uncopyrighted")
    results                 # a table in Jupyter
    results.to_dataframe()  # pandas

`model` is a HookedSAETransformer / HookedTransformer, an nnsight LanguageModel or a
transformers causal LM (pass `tokenizer=`), or a model name. `sae` is a SAELens SAE object,
`(release, sae_id)`, a `"source:spec"` string, or any object with the SparseCoder attributes;
or a list of them (`[sae_a, sae_b]`, `(release, [sae ids])`): one run over several coders,
collected in one forward pass, its latents keyed by (coder, latent).
`sx.explain` works inside Jupyter's running event loop; `await sx.aexplain(...)` in async code
(the model work runs in a worker thread, so the event loop stays free).

Explanations you already have are scored the same way, on the same records and held-out examples:

    results = sx.score(model, sae, explanations={3: "the word 'cat'", 17: "dates"},
                       scorers=["detection"], provider="gpt-4o-mini", dataset=...)
"""

from __future__ import annotations

import difflib
import functools
import inspect
import json
import operator
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from saexplain.errors import ConfigError
from saexplain.models import LatentSelection, MethodSpec, ProviderSpec, RunConfig
from saexplain.protocols import Provider

if TYPE_CHECKING:
    from saexplain.report.results import RunResults

__all__ = ["aexplain", "ascore", "explain", "given_explanations", "read_explanations", "score"]

P = ParamSpec("P")
T = TypeVar("T")

Methods = Sequence[str | MethodSpec | Mapping[str, Any]] | str
# a name or path, texts (a list, a pandas Series or DataFrame, a Hugging Face Dataset, any
# iterable), or token ids: see `aexplain`
DatasetLike = str | os.PathLike[str] | Iterable[Any]


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


# One set of defaults: RunConfig's, which the command line uses too (docs/running.md).
_DEFAULTS = RunConfig.model_fields


def _text_attr(holder: object, *names: str) -> str | None:
    """The first of `holder`'s attributes `names` that is a non-empty string."""
    for name in names:
        value = getattr(holder, name, None)
        if isinstance(value, str) and value:
            return value
    return None


def _model_name(model: object) -> str:
    """The name config.json records for a model: a name or path as given, else the object's
    own (a backend's `model_id`, transformers' `name_or_path`, TransformerLens'
    `cfg.model_name`), else its type. Never a placeholder shared by every model."""
    if isinstance(model, str | os.PathLike):
        return os.fspath(model)
    for holder in (model, getattr(model, "cfg", None), getattr(model, "config", None)):
        name = _text_attr(holder, "model_id", "name_or_path", "model_name", "_name_or_path")
        if name:
            return name
    return type(model).__name__


def _coder_name(sae: object) -> str:
    """The name config.json records for an SAE: a spec as given, else a coder's `id`, else
    SAELens' `<release>/<sae_id>`, Neuronpedia id or `<model>/<hook>` (from `cfg.metadata` or
    `cfg`), else its type. Two SAEs at different hooks never share a name."""
    if isinstance(sae, str):
        return sae
    if isinstance(sae, tuple):
        return "/".join(map(str, sae))
    name = _text_attr(sae, "id")
    if name:
        return name
    cfg = getattr(sae, "cfg", None)
    for meta in (getattr(cfg, "metadata", None), cfg):
        release, sae_id = _text_attr(meta, "release"), _text_attr(meta, "sae_id")
        if release and sae_id:
            return f"{release}/{sae_id}"
        name = _text_attr(meta, "neuronpedia_id")
        hook = _text_attr(meta, "hook_name", "hook_point")
        if name or hook:
            return name or f"{_text_attr(meta, 'model_name') or type(sae).__name__}/{hook}"
    return type(sae).__name__


# --- keywords, datasets and providers -------------------------------------------------------------


def _checked_keywords(label: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """An unknown keyword becomes a TypeError naming the closest valid one (Python's own error
    names none, and a notebook user who typed `n_token=` wants to know what was meant)."""

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        parameters = inspect.signature(fn).parameters.values()
        valid = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

        @functools.wraps(fn)
        def checked(*args: P.args, **kwargs: P.kwargs) -> T:
            for key in kwargs:
                if key not in valid:
                    raise TypeError(_unknown_keyword(label, key, valid))
            return fn(*args, **kwargs)

        return checked

    return decorate


def _unknown_keyword(label: str, key: str, valid: Sequence[str]) -> str:
    if key == "explainer" and "explainers" in valid:
        # one spelling only: `explainer=` used to change the scorers too
        return (
            f"{label} take `explainers=` (a name or a list), not `explainer=`; "
            "for a run without an LLM pass explainers='selfexplain', scorers=[]"
        )
    close = difflib.get_close_matches(key, valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"the keywords are {', '.join(valid)}"
    return f"{label} got an unexpected keyword argument {key!r}; {hint}"


def _blocking(fn: Callable[P, Coroutine[Any, Any, T]], name: str) -> Callable[P, T]:
    """The synchronous twin of the async `fn`, named `name`; safe inside Jupyter's loop."""

    @functools.wraps(fn)
    def blocking(*args: P.args, **kwargs: P.kwargs) -> T:
        from saexplain._async import run_sync

        return run_sync(fn(*args, **kwargs))

    blocking.__name__ = blocking.__qualname__ = name
    blocking.__doc__ = (
        f"`{fn.__name__}` for synchronous code; safe inside Jupyter's running event loop.\n\n"
        f"{fn.__doc__ or ''}"
    )
    return blocking


def _column(table: Any, text_field: str, what: str, columns: Sequence[str]) -> Any:
    if text_field not in columns:
        raise ConfigError(
            f"the {what} has no column {text_field!r} (columns: {list(columns)}): pass "
            "text_field='<the column holding the texts>'"
        )
    return table[text_field]


def _as_dataset(dataset: DatasetLike, text_field: str) -> object:
    """`dataset` in a form the activation store reads: a path as a string; a pandas Series,
    a pandas DataFrame's or a Hugging Face Dataset's `text_field` column as a list of texts
    (a list can be fingerprinted, so a resumed run knows it holds the same data); anything
    else (a name, texts, token ids, an iterable of texts) as given. Recognised by module name,
    so neither pandas nor datasets is imported here."""
    if isinstance(dataset, os.PathLike):
        return os.fspath(dataset)
    table: Any = dataset
    library = type(dataset).__module__.partition(".")[0]
    if library == "pandas":
        if hasattr(table, "columns"):  # a DataFrame
            table = _column(table, text_field, "DataFrame", [str(c) for c in table.columns])
        return list(table.tolist())
    if library == "datasets":
        columns = getattr(table, "column_names", None)
        if isinstance(columns, dict):  # a DatasetDict: one dataset per split
            raise ConfigError(
                f"dataset is a DatasetDict with splits {list(columns)}: pass one of them, "
                "e.g. dataset=ds['train']"
            )
        if isinstance(columns, list) and hasattr(table, "__len__"):  # an in-memory Dataset
            return list(_column(table, text_field, "Hugging Face dataset", columns))
        # an IterableDataset (streaming): read row by row, as the store reads hub datasets
        return (row[text_field] for row in table)
    return dataset


def _provider_specs(
    provider: str | ProviderSpec | Provider | None,
    scorer_provider: str | ProviderSpec | Provider | None,
) -> tuple[dict[str, Any], dict[str, Provider]]:
    """The config fields naming the LLMs, and the provider objects passed in directly."""
    fields: dict[str, Any] = {}
    live: dict[str, Provider] = {}
    if isinstance(provider, Provider):
        live["explainer"] = live["scorer"] = provider
    elif (spec := _provider_spec(provider)) is not None:
        fields["explainer_model"] = spec
    if isinstance(scorer_provider, Provider):
        live["scorer"] = scorer_provider
    elif (spec := _provider_spec(scorer_provider)) is not None:
        fields["scorer_model"] = spec
    return fields, live


# --- explain --------------------------------------------------------------------------------------


@_checked_keywords("explain() and aexplain()")
async def aexplain(
    model: object,
    sae: object,
    *,
    latents: Sequence[int] | LatentSelection | int | None = None,
    explainers: Methods = ("maxact",),
    scorers: Methods = ("detection", "fuzzing"),
    provider: str | ProviderSpec | Provider | None = None,
    scorer_provider: str | ProviderSpec | Provider | None = None,
    dataset: DatasetLike = "demo",
    text_field: str = "text",
    split: str = "train",
    n_tokens: int = _DEFAULTS["n_tokens"].default,
    context_length: int = _DEFAULTS["context_length"].default,
    prepend_bos: bool = True,
    batch_size: int = 16,
    records: Mapping[str, Any] | None = None,
    backend: str | None = None,
    backend_settings: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    coder_settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    concurrency: int = 8,
    spend_cap_usd: float | None = None,
    max_error_rate: float = 0.5,
    shuffled_controls: bool = False,
    skip_generic: bool = False,
    filters: Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike[str] = "runs",
    name: str | None = None,
    store_dir: str | os.PathLike[str] | None = None,
    log_prompts: bool = False,
    executor: str | Mapping[str, Any] | None = None,
    progress: bool = True,
) -> RunResults:
    """Collect, explain and score `latents` of `sae` in `model`; see the module docstring.

    What to run:
        latents: indices, a number of latents to sample (default 100: alive ones when the run
            collects activations, else drawn from the coder's width) or a `LatentSelection`
            (ranges, frequency bounds).
        explainers, scorers: a method name or a list of them (names, `MethodSpec`s or
            `{"name": ..., "settings": {...}}`). Scorers default to detection and fuzzing, which
            ask an LLM; `explainers="selfexplain", scorers=[]` needs no LLM (nor provider plugin).
        provider, scorer_provider: the LLM as a model string (`"gpt-4o-mini"`), a
            `"<provider>:<model>"` string (`"local:smollm2"`), a `ProviderSpec` or a provider
            object; `scorer_provider` defaults to `provider`.

    The data (they decide the run's identity, see docs/running.md):
        dataset: a dataset name (a Hugging Face hub name or a registered one, "demo" by
            default), a path (str or `pathlib.Path`) to a .txt/.jsonl/.parquet file or folder,
            texts (a list, a pandas Series, any iterable of strings), a pandas DataFrame or a
            Hugging Face `Dataset` (its `text_field` column), or token ids.
        text_field, split: the column holding the texts; the split of a hub dataset.
        n_tokens, context_length, prepend_bos, batch_size: how much to collect, in contexts of
            `context_length` tokens (BOS first), `batch_size` contexts per forward pass.
        records: how records are built (`saexplain.sampling.RecordConfig` fields: window,
            explanation and scoring samplers, negatives, rare_below).
        seed: the run's seed; every per-latent choice derives from it.

    The model and SAE:
        backend: the backend plugin's name (default: the one that claims `model`);
            backend_settings, tokenizer: passed to it (a transformers model needs `tokenizer=`).
        coder_settings: passed to the coder source that loads `sae` (each of them).
        `latents` applies to each coder of a run of several; for a selection per coder, give
        each its own `latents` in a config's `coders` list (see docs/running.md).

    The run:
        concurrency: explain and score jobs at once; spend_cap_usd: stop paying past it;
        max_error_rate: the error rate `saexplain run` fails above;
        shuffled_controls: also score each explanation on another latent, the chance baseline
            beside every score; skip_generic: do not score generic explanations (both in
            docs/running.md);
        filters: latent filters computed from the activations before any LLM call, e.g.
            `{"skip": ["dead", "positional"]}` (`saexplain.analysis.FilterConfig`, see
            docs/analysis.md);
        output_dir, name: where the run directory goes (`name` None: derived from the config);
        store_dir: an activation store to reuse; log_prompts: write every prompt and answer;
        executor: where explainers and scorers run: an executor plugin's name or
            `{"name": ..., **settings}` (`{"name": "ray", "address": "local"}`, docs/scaling.md);
            None: in this process;
        progress: show progress bars.

    An unknown keyword is a `TypeError` naming the closest valid one; a bad value a
    `ConfigError` naming the setting.
    """
    from saexplain.pipeline.resolve import coder_items

    data = _as_dataset(dataset, text_field)
    llms, live = _provider_specs(provider, scorer_provider)
    fields: dict[str, Any] = {
        "model": _model_name(model),
        "backend": backend,
        "backend_settings": dict(backend_settings or {}),
        # one spec per coder: `sae` may be a list of them (or `(release, [sae ids])`)
        "coders": [
            {"coder": _coder_name(item), "settings": dict(coder_settings or {})}
            for item in coder_items(sae)
        ],
        "dataset": _describe(data, "in-memory dataset"),
        "text_field": text_field,
        "split": split,
        "n_tokens": n_tokens,
        "context_length": context_length,
        "prepend_bos": prepend_bos,
        "batch_size": batch_size,
        "latents": _selection(latents),
        "records": dict(records or {}),
        "explainers": [explainers] if isinstance(explainers, str) else list(explainers),
        "scorers": [scorers] if isinstance(scorers, str) else list(scorers),
        "seed": seed,
        "concurrency": concurrency,
        "spend_cap_usd": spend_cap_usd,
        "max_error_rate": max_error_rate,
        "shuffled_controls": shuffled_controls,
        "skip_generic": skip_generic,
        "filters": None if filters is None else dict(filters),
        "output_dir": os.fspath(output_dir),
        "name": name,
        "store_dir": None if store_dir is None else os.fspath(store_dir),
        "log_prompts": log_prompts,
        "executor": executor,
        **llms,
    }
    from saexplain.config import make_config
    from saexplain.pipeline import arun

    # a bad value is one line naming the setting, not pydantic's multi-line ValidationError
    run_config = make_config(fields, source="explain()")
    return await arun(
        run_config,
        model=model,
        coder=sae,
        dataset=data,
        providers=live or None,
        progress=progress,
        backend_settings={"tokenizer": tokenizer} if tokenizer is not None else None,
    )


explain = _blocking(aexplain, "explain")


# --- score explanations you already have ----------------------------------------------------------


def given_explanations(explanations: Mapping[int, str]) -> MethodSpec:
    """The `given` explainer holding `explanations` (latent index -> text), checked: what
    `sx.score` and `saexplain score` run in place of an explainer."""
    if not explanations:
        raise ConfigError("no explanations to score: pass {latent index: text, ...}")
    texts: dict[str, str] = {}
    for latent, text in explanations.items():
        try:
            index = operator.index(latent)  # an int or a numpy integer, not "3" or 3.0
        except TypeError:
            index = -1
        if isinstance(latent, bool) or index < 0:
            raise ConfigError(f"explanations are keyed by latent index, got {latent!r}")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"the explanation of latent {index} is not a non-empty string")
        texts[str(index)] = text
    return MethodSpec(name="given", settings={"explanations": dict(texts)})


def read_explanations(path: str | os.PathLike[str]) -> dict[int, str]:
    """Explanations from a JSONL file, one object a line: the latent (`latent`: its index, or an
    object with an `index`, as in a run's `explanations.jsonl`) and its text (`explanation` or
    `text`). A latent given twice, or a line without both, is a `ConfigError` naming the line."""
    explanations: dict[int, str] = {}
    source = Path(path)
    try:
        lines = source.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read explanations from {source}: {e}") from e
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{where}: not a JSON object ({e.msg})") from e
        latent = row.get("latent") if isinstance(row, dict) else None
        if isinstance(latent, dict):
            latent = latent.get("index")
        text = row.get("explanation", row.get("text")) if isinstance(row, dict) else None
        if isinstance(latent, bool) or not isinstance(latent, int) or latent < 0:
            raise ConfigError(f"{where}: needs `latent`, a latent index")
        if not isinstance(text, str) or not text.strip():
            raise ConfigError(f"{where}: needs `explanation` (or `text`), a non-empty string")
        if latent in explanations:
            raise ConfigError(f"{where}: latent {latent} is given twice")
        explanations[latent] = text
    if not explanations:
        raise ConfigError(f"{source} holds no explanations")
    return explanations


def score_config(config: RunConfig, explanations: Mapping[int, str]) -> RunConfig:
    """`config` scoring `explanations` with its scorers: the `given` explainer in place of its
    explainers, its latents those explained. Its data settings are kept, so a run directory of
    `config` is resumed: the same records, seeds and held-out examples, its store reused."""
    from saexplain.config import make_config

    data = config.model_dump(mode="json")
    data["explainers"] = [given_explanations(explanations).model_dump(mode="json")]
    data["latents"] = {"indices": sorted(explanations)}
    return make_config(data, source="score")


@_checked_keywords("score() and ascore()")
async def ascore(
    model: object,
    sae: object,
    explanations: Mapping[int, str],
    *,
    scorers: Methods = ("detection", "fuzzing"),
    provider: str | ProviderSpec | Provider | None = None,
    dataset: DatasetLike = "demo",
    text_field: str = "text",
    split: str = "train",
    n_tokens: int = _DEFAULTS["n_tokens"].default,
    context_length: int = _DEFAULTS["context_length"].default,
    prepend_bos: bool = True,
    batch_size: int = 16,
    records: Mapping[str, Any] | None = None,
    backend: str | None = None,
    backend_settings: Mapping[str, Any] | None = None,
    tokenizer: Any = None,
    coder_settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    concurrency: int = 8,
    spend_cap_usd: float | None = None,
    max_error_rate: float = 0.5,
    shuffled_controls: bool = False,
    skip_generic: bool = False,
    filters: Mapping[str, Any] | None = None,
    output_dir: str | os.PathLike[str] = "runs",
    name: str | None = None,
    store_dir: str | os.PathLike[str] | None = None,
    log_prompts: bool = False,
    executor: str | Mapping[str, Any] | None = None,
    progress: bool = True,
) -> RunResults:
    """Score explanations you already have (your own, or imported ones): `explanations` maps
    latent indices to texts; `provider` is the scorers' LLM.

    They run as the explainer `given`, on the latents they explain, with the same records,
    seeds and held-out examples as a run of the same data settings (same keywords as
    `explain`; give its `name` to add the scores to that run directory). Results, resume and
    reports are a run's: `results[latent].score("given", "detection")`.
    """
    given = given_explanations(explanations)  # checks the keys: operator.index works below
    return await aexplain(
        model,
        sae,
        latents=sorted(operator.index(i) for i in explanations),
        explainers=[given],
        scorers=scorers,
        scorer_provider=provider,
        dataset=dataset,
        text_field=text_field,
        split=split,
        n_tokens=n_tokens,
        context_length=context_length,
        prepend_bos=prepend_bos,
        batch_size=batch_size,
        records=records,
        backend=backend,
        backend_settings=backend_settings,
        tokenizer=tokenizer,
        coder_settings=coder_settings,
        seed=seed,
        concurrency=concurrency,
        spend_cap_usd=spend_cap_usd,
        max_error_rate=max_error_rate,
        shuffled_controls=shuffled_controls,
        skip_generic=skip_generic,
        filters=filters,
        output_dir=output_dir,
        name=name,
        store_dir=store_dir,
        log_prompts=log_prompts,
        executor=executor,
        progress=progress,
    )


score = _blocking(ascore, "score")
