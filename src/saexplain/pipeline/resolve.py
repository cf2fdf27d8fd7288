"""Resolving a run: from a config (and live objects) to checked, ready components.

Everything that can be checked is checked here, before any heavy work: method names and
settings, the providers the chosen methods need (their keys, their model strings), the backend,
the coder's hook and width, the selected latents against that width, and that the run directory
holds the same data. Plugins are found through hooks (`detect_backend`, `detect_coder`): the
core names none.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saexplain.concurrency import model_lock
from saexplain.errors import ConfigError, LatentIndexError
from saexplain.files import writing
from saexplain.fingerprint import fingerprint_arrays
from saexplain.models import CoderSpec, LatentSelection, RunConfig
from saexplain.plugins import PluginManager, get_plugin_manager
from saexplain.protocols import (
    Backend,
    Explainer,
    Fingerprinted,
    MethodContext,
    Preflight,
    Provider,
    Scorer,
    SparseCoder,
    TokenBatch,
    needs_of,
)
from saexplain.providers.build import build_providers
from saexplain.providers.wrap import run_ledger
from saexplain.registry import Registry, instantiate
from saexplain.rundir import DATA_FIELDS, SPEND_FILE, RunDir, config_digest
from saexplain.store.datasets import describe_dataset

if TYPE_CHECKING:
    from saexplain.sampling import RecordConfig

__all__ = [
    "DATA_FIELDS",
    "Prepared",
    "Rebuild",
    "build_backend",
    "build_coder",
    "build_coders",
    "build_methods",
    "check_coder_fits",
    "check_latents",
    "coder_items",
    "config_digest",
    "fingerprints",
    "manifest",
    "parse_coder_spec",
    "prepare",
    "reads_records",
    "resolve_dataset",
    "run_path",
]


@dataclass(frozen=True)
class Rebuild:
    """How another process (an executor's worker) builds the run's backend and coders again:
    the model as named (`config.model` or the name passed), the coder specs passed (None:
    `config.coders`), the backend's settings, and the dataset when it was passed as an object
    (None: `config.dataset`, resolved again there)."""

    model: str
    coder: object | None = None
    backend_settings: dict[str, Any] = field(default_factory=dict)
    dataset: object | None = None


def _rebuildable(coder: object | None) -> bool:
    """Whether `coder` (what the caller passed) names its coders rather than holding them."""
    if coder is None:
        return True
    return all(
        isinstance(item, str) or (isinstance(item, tuple) and all(isinstance(x, str) for x in item))
        for item in coder_items(coder)
    )


@dataclass
class Prepared:
    """A run's resolved components, checked and ready.

    `coders` are the run's coders in config order (a release pattern expanded), each with its
    own latent selection in `selections` (by coder id)."""

    config: RunConfig
    backend: Backend
    coders: list[SparseCoder]
    explainers: dict[str, Explainer]
    scorers: dict[str, Scorer]
    providers: dict[str, Provider]
    record_config: RecordConfig
    dataset: object
    run_dir: RunDir
    manager: PluginManager = field(repr=False, default_factory=get_plugin_manager)
    selections: dict[str, LatentSelection] = field(default_factory=dict)
    # how a worker process builds the backend and coders again; None when the caller passed a
    # model or coder object (then the run collects in this process)
    rebuild: Rebuild | None = None

    @property
    def coder(self) -> SparseCoder:
        """The coder of a one-coder run; with several, `coder_for(latent.coder_id)` is the one a
        latent belongs to, so this raises rather than pick one."""
        if len(self.coders) != 1:
            ids = ", ".join(c.id for c in self.coders)
            raise ValueError(f"this run has {len(self.coders)} coders ({ids}): use coder_for(id)")
        return self.coders[0]

    def coder_for(self, coder_id: str) -> SparseCoder:
        """The run's coder with this id (a latent's `coder_id`)."""
        for c in self.coders:
            if c.id == coder_id:
                return c
        raise LookupError(f"no coder {coder_id!r} in this run: {[c.id for c in self.coders]}")

    def selection(self, coder: SparseCoder) -> LatentSelection:
        """The latents to run on `coder`: its own selection, else the run's `latents`."""
        return self.selections.get(coder.id, self.config.latents)

    @property
    def collects(self) -> bool:
        """Whether the run collects activations and builds records: only when a chosen method
        reads them (`Needs.records`)."""
        return reads_records(self.explainers, self.scorers)


# --- methods --------------------------------------------------------------------------------------


def build_methods(
    config: RunConfig, manager: PluginManager
) -> tuple[dict[str, Explainer], dict[str, Scorer]]:
    """The run's explainers and scorers by name, built (and their settings checked)."""
    explainers = {
        s.name: instantiate("explainer", manager.explainers, s.name, s.settings)
        for s in config.explainers
    }
    scorers = {
        s.name: instantiate("scorer", manager.scorers, s.name, s.settings) for s in config.scorers
    }
    if not explainers:
        raise ConfigError("the run has no explainers: name at least one")
    return explainers, scorers


def reads_records(explainers: Mapping[str, Explainer], scorers: Mapping[str, Scorer]) -> bool:
    """Whether some chosen method reads records (`Needs.records`): when none does, the run
    collects no activations, reads no dataset and explains the selected latents as they are."""
    return any(needs_of(m).records for m in (*explainers.values(), *scorers.values()))


# --- backend and coder ----------------------------------------------------------------------------

# The backends and coder sources of saexplain's own plugins: one of these unknown means its plugin
# is not installed, and the error says which to install.
_PROVIDED_BY = {
    ("backend", "transformerlens"): "saexplain-transformerlens",
    ("backend", "transformerlens-bridge"): "saexplain-transformerlens",
    ("backend", "nnsight"): "saexplain-nnsight",
    ("coder", "saelens"): "saexplain-saelens",
    ("coder", "neurons"): "saexplain-torch",
}


def _instantiate(
    kind: str, registry: Registry, name: str, settings: Mapping[str, Any], *args: Any
) -> Any:
    """`instantiate`, with the install command when `name` comes with a plugin not installed."""
    if name not in registry and (kind, name) in _PROVIDED_BY:
        raise ConfigError(
            f"the {kind} {name!r} comes with a plugin that is not installed: "
            f"pip install {_PROVIDED_BY[kind, name]} (known {kind}s: {registry.names() or 'none'})"
        )
    return instantiate(kind, registry, name, settings, *args)


def build_backend(
    model: object, config: RunConfig, manager: PluginManager, **settings: Any
) -> Backend:
    """`model` as a Backend: as given, or wrapped by the backend named in `config` or claimed
    by a plugin (`detect_backend`)."""
    if isinstance(model, Backend):
        return model
    name = config.backend or (None if isinstance(model, str) else manager.detect_backend(model))
    if name is None:
        known = manager.backends.names()
        raise ConfigError(
            f"no backend for model {model!r}: set `backend` to one of {known} "
            "(install saexplain-transformerlens or saexplain-nnsight)"
        )
    backend: Backend = _instantiate(
        "backend", manager.backends, name, {**config.backend_settings, **settings}, model
    )
    return backend


def parse_coder_spec(spec: str) -> tuple[str | None, str]:
    """`"source:spec"` -> (source, spec); a spec without a source prefix -> (None, spec).

    A Windows drive letter (`C:\\sae`) is not a source.
    """
    source, sep, rest = spec.partition(":")
    if (
        sep
        and re.fullmatch(r"[A-Za-z][\w-]*", source)
        and not (len(source) == 1 and os.name == "nt")
    ):
        return source, rest
    return None, spec


def _coder_source(coder: object, manager: PluginManager) -> str:
    """The coder source a plugin claims for a live object or a bare spec; a clear error if none."""
    source = manager.detect_coder(coder)
    if source is not None:
        return source
    known = manager.coders.names()
    what = repr(coder) if isinstance(coder, str) else f"an object of type {type(coder).__name__}"
    raise ConfigError(
        f"no coder source claims {what}: name one as '<source>:<spec>' with a source from "
        f"{known}, or pass an object with the SparseCoder attributes "
        "(install the plugin that reads your SAEs, e.g. saexplain-saelens)"
    )


def _load_coders(
    coder: object, settings: Mapping[str, Any], manager: PluginManager, backend: Backend
) -> list[SparseCoder]:
    """`coder` as SparseCoders: as given, loaded from a `"source:spec"` string, or wrapped.

    A `(release, sae_id)` pair reads as the bare spec `"release/sae_id"`. A bare spec or a live
    object goes to the source a plugin claims for it (`detect_coder`). A source may return
    several coders for one spec (a release pattern).
    """
    if isinstance(coder, SparseCoder):
        return [coder]
    if isinstance(coder, tuple) and len(coder) == 2:
        coder = f"{coder[0]}/{coder[1]}"
    full = {"backend": backend, **settings}
    if isinstance(coder, str):
        source, spec = parse_coder_spec(coder)
        if source is None:
            source = _coder_source(spec, manager)
        loaded: object = _instantiate("coder", manager.coders, source, full, spec)
    else:
        loaded = _instantiate("coder", manager.coders, _coder_source(coder, manager), full, coder)
    items: list[object] = list(loaded) if isinstance(loaded, list | tuple) else [loaded]
    if not items:
        raise ConfigError(f"coder {coder!r} names no coders (a pattern that matches nothing?)")
    found: list[SparseCoder] = []
    for c in items:
        if not isinstance(c, SparseCoder):
            raise ConfigError(f"the coder source for {coder!r} gave {c!r}, not a SparseCoder")
        found.append(c)
    return found


def build_coder(
    coder: object, config: RunConfig, manager: PluginManager, backend: Backend
) -> SparseCoder:
    """`coder` as one SparseCoder (see `build_coders`), with a one-coder run's settings."""
    settings = config.coders[0].settings if len(config.coders) == 1 else {}
    found = _load_coders(coder, settings, manager, backend)
    if len(found) != 1:
        raise ConfigError(f"{coder!r} names {len(found)} coders; build_coders loads several")
    return found[0]


def coder_items(coder: object) -> list[object]:
    """What `prepare` / `sx.explain` were given as coders, one item per coder spec: a list or
    tuple of coders, or one coder. A pair `(release, sae_id)` is one coder, and
    `(release, [id, ...])` one pair per id."""
    pair = (
        isinstance(coder, tuple)
        and len(coder) == 2
        and isinstance(coder[0], str)
        and isinstance(coder[1], str | list | tuple)
    )
    if pair and isinstance(coder, tuple) and not isinstance(coder[1], str):
        return [(coder[0], str(i)) for i in coder[1]]
    if isinstance(coder, list) or (isinstance(coder, tuple) and not pair):
        return [item for c in coder for item in coder_items(c)]
    return [coder]


def build_coders(
    config: RunConfig, manager: PluginManager, backend: Backend, given: object | None = None
) -> tuple[list[SparseCoder], dict[str, LatentSelection]]:
    """The run's coders, in order, and the latent selection of each one that has its own.

    From `config.coders` (each spec may name several: a release pattern), or from `given` (a
    coder object or spec, or a list of them, as `sx.explain` passes), paired with the config's
    specs by position for their settings and latents. Coder ids must be unique: latents are
    keyed by them.
    """
    items = [s.coder for s in config.coders] if given is None else coder_items(given)
    specs: Sequence[CoderSpec | None] = (
        config.coders if len(config.coders) == len(items) else [None] * len(items)
    )
    coders: list[SparseCoder] = []
    selections: dict[str, LatentSelection] = {}
    for item, spec in zip(items, specs, strict=True):
        for c in _load_coders(item, spec.settings if spec else {}, manager, backend):
            coders.append(c)
            if spec is not None and spec.latents is not None:
                selections[c.id] = spec.latents
    ids = [c.id for c in coders]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(
            f"coders listed twice (or two coders with one id): {', '.join(dupes)}; latents are "
            "keyed by coder id, so each coder must have its own"
        )
    return coders, selections


def check_coder_fits(backend: Backend, coder: SparseCoder) -> None:
    """Coder/model mismatches (wrong hook, wrong width) found on two tokens, not after an hour."""
    if int(coder.d_in) != int(backend.d_model) and coder.hook.endswith(("resid_pre", "resid_post")):
        raise ConfigError(
            f"coder {coder.id} reads width {coder.d_in} at {coder.hook}, "
            f"but {backend.model_id} has d_model {backend.d_model}"
        )
    tokens: TokenBatch = backend.tokenize(["Hello world"], prepend_bos=True)
    with model_lock(backend):
        backend.latent_acts(tokens, [coder])  # raises HookNameError / DimensionMismatchError


def check_latents(selection: LatentSelection, coder: SparseCoder, *, collects: bool = True) -> None:
    """Latent indices outside the coder's width fail here, not after the whole collection; so
    does a frequency band in a run that collects no statistics to apply it to."""
    width = int(coder.d_sae)
    if not collects and (selection.min_frequency, selection.max_frequency) != (None, None):
        raise ConfigError(
            "latents selected by min_frequency/max_frequency need activation statistics, and "
            "no chosen method reads records, so none are collected: select latents by indices, "
            "a range or `sample` (drawn from all of the coder's latents)"
        )
    if selection.indices is not None:
        bad = sorted({i for i in selection.indices if i >= width})
        if bad:
            raise LatentIndexError(
                f"latents {bad} are outside [0, {width}): coder {coder.id} has {width} latents "
                f"(d_sae); choose indices below {width}"
            )
    start = selection.start or 0
    stop = width if selection.stop is None else selection.stop
    if start >= width or stop > width:
        raise LatentIndexError(
            f"latent range [{start}, {stop}) is outside [0, {width}): coder {coder.id} has "
            f"{width} latents (d_sae)"
        )


# --- dataset, run directory and identity ----------------------------------------------------------


def resolve_dataset(dataset: object, manager: PluginManager) -> object:
    """A name a plugin registered (`register_datasets`, e.g. the demo's corpus) -> its texts;
    anything else as given (the store reads it: a hub name, a path, texts)."""
    if isinstance(dataset, str) and dataset in manager.datasets:
        return instantiate("dataset", manager.datasets, dataset, {})
    return dataset


def _coder_fingerprint(coder: SparseCoder) -> str:
    if isinstance(coder, Fingerprinted):
        return coder.fingerprint()
    return fingerprint_arrays({"W_dec": coder.W_dec})


def fingerprints(
    backend: Backend,
    coders: SparseCoder | Sequence[SparseCoder],
    dataset: object,
    config: RunConfig,
) -> dict[str, str]:
    """Content fingerprints for the run's identity (`RunConfig.fingerprints`): of the model's
    and each coder's weights (`Fingerprinted`; a coder without it by its decoder): `coder` for
    a one-coder run, `coder:<id>` for each of several; and of a dataset passed in memory (named
    datasets are identified by their name)."""
    coders = [coders] if isinstance(coders, SparseCoder) else list(coders)
    out: dict[str, str] = {}
    if isinstance(backend, Fingerprinted):
        out["model"] = backend.fingerprint()
    if len(coders) == 1:
        out["coder"] = _coder_fingerprint(coders[0])
    else:
        out.update({f"coder:{c.id}": _coder_fingerprint(c) for c in coders})
    if not isinstance(dataset, str | os.PathLike):
        out["dataset"] = describe_dataset(dataset, text_field=config.text_field, split=config.split)
    return out


def run_path(config: RunConfig) -> Path:
    """The run directory: `output_dir/name`, or a slug of model and coder plus the data digest."""
    if config.name:
        return Path(config.output_dir) / config.name
    first = config.coders[0].coder
    more = f"-and-{len(config.coders) - 1}" if len(config.coders) > 1 else ""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{config.model}-{first}{more}").strip("-")[-60:]
    return Path(config.output_dir) / f"{slug}-{config_digest(config)}"


def manifest(p: Prepared) -> dict[str, Any]:
    """What produced the run: versions of saexplain and every plugin, seed, model, coder,
    BOS policy, whether activations were collected, and providers."""
    from saexplain import __version__

    coders: list[dict[str, Any]] = [
        {"id": c.id, "hook": c.hook, "d_sae": int(c.d_sae)} for c in p.coders
    ]
    plugins = [
        {"name": i.name, "distribution": i.distribution, "version": i.version, "state": i.state}
        for i in p.manager.info()
    ]
    return {
        "saexplain_version": __version__,
        "plugins": plugins,
        "seed": p.config.seed,
        "model": p.backend.model_id,
        "backend": p.backend.name,
        # a one-coder run: that coder; several: their ids (each one in `coders`)
        "coder": coders[0] if len(coders) == 1 else ", ".join(str(c["id"]) for c in coders),
        "coders": coders,
        "prepend_bos": p.config.prepend_bos,
        "bos_token_id": p.backend.bos_token_id,
        "collected": p.collects,  # false: no chosen method reads records, nothing was collected
        "providers": {
            role: {"name": prov.name, "model": prov.model} for role, prov in p.providers.items()
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# --- all of it ------------------------------------------------------------------------------------


def preflight(
    explainers: Mapping[str, Explainer], scorers: Mapping[str, Scorer], ctx: MethodContext
) -> None:
    """Each method's own check that it can run with these components (`Preflight`), before any
    collection or LLM call: a missing capability fails in seconds, not once per latent."""
    for method in (*explainers.values(), *scorers.values()):
        if isinstance(method, Preflight):
            method.preflight(ctx)


def prepare(
    config: RunConfig,
    *,
    model: object | None = None,
    coder: object | None = None,
    dataset: object | None = None,
    providers: Mapping[str, Provider] | None = None,
    manager: PluginManager | None = None,
    backend_settings: Mapping[str, Any] | None = None,
    check_ready: bool = True,
) -> Prepared:
    """Resolve and check everything; raises a clear error before any heavy work.

    Only what the chosen methods declare they need is built (`saexplain.protocols.Needs`): a run
    whose methods need no LLM builds no provider, so it needs no provider plugin.
    `check_ready=False` skips the providers' readiness checks (API keys): for work that calls
    no LLM, like `saexplain estimate`.
    """
    from saexplain.sampling import RecordConfig

    manager = manager or get_plugin_manager()
    explainers, scorers = build_methods(config, manager)
    try:
        record_config = RecordConfig.model_validate({"seed": config.seed, **config.records})
    except ValueError as e:
        raise ConfigError(f"bad `records` settings: {e}") from e
    if config.filters is not None:  # bad `filters:` settings fail before any model loads
        from saexplain.analysis.filters import FilterConfig

        FilterConfig.parse(config.filters)
    # the providers first: a missing key fails in seconds, before any model is loaded
    provider_map = build_providers(
        config,
        manager,
        explainers,
        scorers,
        providers,
        check_ready=check_ready,
    )
    backend = build_backend(
        config.model if model is None else model, config, manager, **(backend_settings or {})
    )
    coders, selections = build_coders(config, manager, backend, coder)
    if len(coders) > 1 and "given" in explainers:
        # given texts are keyed by latent index: with several coders one text would silently
        # explain a different latent in each
        raise ConfigError(
            f"explanations to score are keyed by latent index, and this run has {len(coders)} "
            "coders: score each SAE's explanations in its own run (one sx.score or "
            "`saexplain score` per coder)"
        )
    collects = reads_records(explainers, scorers)
    for c in coders:
        check_latents(selections.get(c.id, config.latents), c, collects=collects)
        check_coder_fits(backend, c)
        preflight(explainers, scorers, MethodContext(backend, c, provider_map))
    given_data = config.dataset if dataset is None else dataset
    config = config.model_copy(
        update={"fingerprints": fingerprints(backend, coders, given_data, config)}
    )
    ledger = run_ledger(provider_map)
    if ledger is not None:
        # known now that the weights are (they name an unnamed run's directory): the run's
        # spend so far counts toward its cap, so reruns cannot spend it again
        ledger.attach(run_path(config) / SPEND_FILE)
    with writing(run_path(config)):  # a read-only output_dir: one line naming it
        run_dir = RunDir(run_path(config))
    run_dir.check_same_run(config)
    return Prepared(
        config=config,
        backend=backend,
        coders=coders,
        selections=selections,
        explainers=explainers,
        scorers=scorers,
        providers=provider_map,
        record_config=record_config,
        # a run that collects nothing never reads its dataset (nor loads a registered one)
        dataset=resolve_dataset(given_data, manager) if collects else given_data,
        run_dir=run_dir,
        manager=manager,
        rebuild=_rebuild(config, model, coder, dataset, backend_settings),
    )


def _rebuild(
    config: RunConfig,
    model: object | None,
    coder: object | None,
    dataset: object | None,
    backend_settings: Mapping[str, Any] | None,
) -> Rebuild | None:
    name = config.model if model is None else model
    if not isinstance(name, str) or not _rebuildable(coder):
        return None
    return Rebuild(
        model=name, coder=coder, backend_settings=dict(backend_settings or {}), dataset=dataset
    )
