"""The extension contract of saexplain: every hook a plugin can implement, on one page.

A plugin is any module or object with functions decorated by `saexplain.hookimpl` whose names
match the hooks below. Installed distributions announce plugins through the `saexplain`
entry-point group; a notebook can call `saexplain.register_plugin(obj)`.

Each `register_*` hook receives a `register(name, factory, *, description="", override=False)`
callback. Factories are called lazily with keyword settings and return the component:

- backend factory: `factory(model, **settings) -> Backend`
- explainer factory: `factory(**settings) -> Explainer`
- scorer factory: `factory(**settings) -> Scorer`
- provider factory: `factory(model: str, **settings) -> Provider`
- coder factory: `factory(spec: str, *, backend: Backend | None = None, **settings) -> SparseCoder`
- dataset factory: `factory() -> Sequence[str] | str` (texts, or a path the store reads)
- executor factory: `factory(**settings) -> Executor` (where explainers and scorers run)

Registering a name another plugin already registered raises, unless `override=True` is passed
(an explicit, recorded replacement).

Two `detect_*` hooks map what a user passes to a registered name, so the core never names a
plugin: `detect_backend(model)` and `detect_coder(coder)`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pluggy

PROJECT = "saexplain"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


class Register(Protocol):
    """The callback `register_*` hooks receive."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        *,
        description: str = "",
        override: bool = False,
    ) -> None: ...


@hookspec
def register_backends(register: Register) -> None:
    """Register model-stack backends (nnsight, TransformerLens, ...) by name."""


@hookspec
def register_explainers(register: Register) -> None:
    """Register explainers (methods that turn a latent record into an explanation) by name."""


@hookspec
def register_scorers(register: Register) -> None:
    """Register scorers (methods that score an explanation against a latent record) by name."""


@hookspec
def register_providers(register: Register) -> None:
    """Register LLM providers (hosted APIs, local models) by name."""


@hookspec
def register_coders(register: Register) -> None:
    """Register sparse-coder sources by name (SAELens releases, local files, MLP neurons, ...).

    A run config names a coder as `"<source>:<spec>"` (for example
    `"saelens:gpt2-small-res-jb/blocks.8.hook_resid_pre"`); the factory registered for `<source>`
    receives `spec` and the run's backend (a source may need the model, e.g. for its neurons).
    A spec that names several coders (a release pattern such as `"<release>/blocks.*"`) may
    return a list of them: each becomes one coder of the run.
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register named text datasets (a run config's `dataset`, `sx.explain(dataset=...)`).

    The factory takes no arguments and returns what the activation store reads: a sequence of
    texts, or a local file or folder path. Names not registered are read as hub dataset names or
    paths.
    """


@hookspec
def register_executors(register: Register) -> None:
    """Register executors by name: where a run's explainers and scorers run when its config
    names one (`executor: {name: ray, ...}`; `saexplain.protocols.Executor`). Without one a run
    runs them in-process.
    """


@hookspec(firstresult=True)
def detect_backend(model: object) -> str | None:
    """Return the backend name that can wrap `model`, or None to let other plugins answer.

    Decide by the object's type and module name (`type(model).__module__`) without importing a
    heavy library. The first non-None answer wins; an explicit `backend=` always overrides it.
    """


@hookspec(firstresult=True)
def detect_coder(coder: object) -> str | None:
    """Return the coder source (a `register_coders` name) that can load `coder`, or None.

    Asked for a live object the user passed (say, a SAELens SAE) and for a coder spec without a
    `"<source>:"` prefix (a release id, a path). Decide by the object's type and module name, or
    the string's form, without importing a heavy library. The first non-None answer wins; an
    explicit `"<source>:<spec>"` is never asked about.
    """
