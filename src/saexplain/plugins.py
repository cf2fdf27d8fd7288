"""The plugin manager: lazy, idempotent, fault-isolated loading of saexplain plugins.

Built-in methods and installed plugins go through the same path: each plugin is registered with
pluggy, its `register_*` hooks are called with a callback bound to its provenance, and its
components land in the registries. Nothing is imported until a registry is first used.

Environment variables:
- `SAEXPLAIN_PLUGINS=a,b`: load only these entry-point plugins (entry-point or distribution name).
- `SAEXPLAIN_DISABLE_PLUGINS=a,b`: never load these.
- `SAEXPLAIN_STRICT_PLUGINS=1`: a plugin that fails to load raises instead of warning.
"""

from __future__ import annotations

import functools
import importlib
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Literal

import pluggy

from saexplain import hookspecs
from saexplain.errors import DuplicateComponentError, PluginLoadError, PluginLoadWarning
from saexplain.registry import Provenance, Registry

ENTRY_POINT_GROUP = "saexplain"
ENV_ALLOW = "SAEXPLAIN_PLUGINS"
ENV_DENY = "SAEXPLAIN_DISABLE_PLUGINS"
ENV_STRICT = "SAEXPLAIN_STRICT_PLUGINS"

# Built-in methods are plugins too; each of these modules implements the hooks.
BUILTIN_PLUGINS: tuple[str, ...] = ("saexplain.explainers", "saexplain.scorers")

KINDS = ("backend", "explainer", "scorer", "provider", "coder", "dataset", "executor")
_HOOK_OF_KIND = {kind: f"register_{kind}s" for kind in KINDS}

PluginState = Literal["loaded", "failed", "blocked"]


@dataclass
class PluginInfo:
    """What `saexplain plugins` shows for one plugin."""

    name: str
    source: Literal["builtin", "entry point", "notebook"]
    state: PluginState
    distribution: str | None = None
    version: str | None = None
    hooks: list[str] = field(default_factory=list)
    components: dict[str, list[str]] = field(default_factory=dict)
    # kind -> name -> the component's description, as registered
    descriptions: dict[str, dict[str, str]] = field(default_factory=dict)
    # kind -> name -> the plugin whose component this plugin replaced (override=True)
    overrides: dict[str, dict[str, str]] = field(default_factory=dict)
    # kind -> name -> the plugin that replaced this plugin's component
    overridden_by: dict[str, dict[str, str]] = field(default_factory=dict)
    # kind -> name -> the plugin already holding a name this plugin registered without override
    refused: dict[str, dict[str, str]] = field(default_factory=dict)
    error: str | None = None
    hint: str | None = None

    def as_dict(self) -> dict[str, Any]:
        def nested(d: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
            return {k: dict(v) for k, v in d.items()}

        return {
            "name": self.name,
            "source": self.source,
            "state": self.state,
            "distribution": self.distribution,
            "version": self.version,
            "hooks": list(self.hooks),
            "components": {k: list(v) for k, v in self.components.items()},
            "descriptions": nested(self.descriptions),
            "overrides": nested(self.overrides),
            "overridden_by": nested(self.overridden_by),
            "refused": nested(self.refused),
            "error": self.error,
            "hint": self.hint,
        }


def _env_list(environ: Mapping[str, str], key: str) -> set[str] | None:
    raw = environ.get(key)
    if raw is None or not raw.strip():
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


def _saexplain_version() -> str:
    from saexplain import __version__

    return __version__


class PluginManager:
    """A typed facade over pluggy's manager, with registries per component kind."""

    def __init__(
        self,
        *,
        entry_points: Iterable[EntryPoint] | None = None,
        builtins: Sequence[str] = BUILTIN_PLUGINS,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._pm = pluggy.PluginManager(hookspecs.PROJECT)
        self._pm.add_hookspecs(hookspecs)
        self._entry_points = None if entry_points is None else list(entry_points)
        self._builtins = tuple(builtins)
        self._environ = os.environ if environ is None else environ
        self._registries = {kind: Registry(kind) for kind in KINDS}
        self._info: dict[str, PluginInfo] = {}
        self._loaded = False
        self._lock = threading.RLock()

    # --- public API -------------------------------------------------------------------------------

    @property
    def backends(self) -> Registry:
        return self._registry("backend")

    @property
    def explainers(self) -> Registry:
        return self._registry("explainer")

    @property
    def scorers(self) -> Registry:
        return self._registry("scorer")

    @property
    def providers(self) -> Registry:
        return self._registry("provider")

    @property
    def coders(self) -> Registry:
        return self._registry("coder")

    @property
    def datasets(self) -> Registry:
        return self._registry("dataset")

    @property
    def executors(self) -> Registry:
        return self._registry("executor")

    @property
    def strict(self) -> bool:
        return self._environ.get(ENV_STRICT, "").strip().lower() in {"1", "true", "yes", "on"}

    def info(self) -> list[PluginInfo]:
        """Every plugin seen, loaded or not, in load order."""
        self.load()
        return list(self._info.values())

    def detect_backend(self, model: object) -> str | None:
        """The backend name a plugin claims for `model`, or None."""
        self.load()
        result: str | None = self._pm.hook.detect_backend(model=model)
        return result

    def detect_coder(self, coder: object) -> str | None:
        """The coder source a plugin claims for `coder` (an object or a bare spec), or None."""
        self.load()
        result: str | None = self._pm.hook.detect_coder(coder=coder)
        return result

    def register_plugin(self, plugin: object, name: str | None = None) -> str:
        """Register a plugin object at run time (a notebook, a test); returns its name.

        Safe to run again, as a notebook cell is: the same object again does nothing (also
        when it is an installed plugin already loaded); another object under the name of an
        earlier `register_plugin` replaces it (the edited cell), keeping the old one if the new
        one fails. The name defaults to a module's or class's `__name__`, else the object's
        class, so a rerun cell's new instance replaces the old one too. Unlike installed
        plugins, errors raise here: the caller is right there to fix them.
        """
        self.load()
        name = name or getattr(plugin, "__name__", None) or _class_name(plugin)
        with self._lock:
            existing = self._pm.get_name(plugin)
            if existing is not None:  # this very object is registered: nothing to do
                return existing
            previous = self._info.get(name)
            if previous is not None and previous.source != "notebook":
                what = "built into saexplain" if previous.source == "builtin" else "installed"
                raise DuplicateComponentError(
                    f"a plugin named {name!r} is {what} ({previous.state}): register yours "
                    "under another name"
                )
            old = self._pm.get_plugin(name) if previous is not None else None
            if old is not None:
                self.unregister_plugin(name)
            info = PluginInfo(name=name, source="notebook", state="loaded")
            try:
                self._add(plugin, info, provenance=Provenance(plugin=name), lenient=False)
            except BaseException:
                if old is not None:  # the replaced plugin comes back
                    self.register_plugin(old, name=name)
                raise
            self._info[name] = info
        return name

    def runtime_plugins(self) -> dict[str, object]:
        """The plugins registered at run time (`register_plugin`: a notebook, a test), by name:
        an executor registers them again in its worker processes, which load only the installed
        ones."""
        with self._lock:
            found = {
                name: self._pm.get_plugin(name)
                for name, info in self._info.items()
                if info.source == "notebook"
            }
        return {name: plugin for name, plugin in found.items() if plugin is not None}

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin and its components (a component it overrode comes back); a
        `KeyError` when no plugin has that name."""
        with self._lock:
            plugin = self._pm.get_plugin(name)
            if plugin is None:
                raise KeyError(f"no plugin named {name!r}")
            self._pm.unregister(plugin)
            for registry in self._registries.values():
                for component in registry:
                    if component.provenance.plugin == name and component.replaced is not None:
                        replaced = self._info.get(component.replaced.plugin)
                        if replaced is not None:  # it no longer is overridden by this plugin
                            replaced.overridden_by.get(component.kind, {}).pop(component.name, None)
                registry.remove_plugin(name)
            self._info.pop(name, None)

    def load(self) -> None:
        """Load built-ins and entry points, once. Later calls do nothing."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            self._loaded = True  # set first: a plugin that reenters the manager sees no recursion
            version = _saexplain_version()
            for module_name in self._builtins:
                info = PluginInfo(
                    name=module_name,
                    source="builtin",
                    state="loaded",
                    distribution="saexplain",
                    version=version,
                )
                prov = Provenance(plugin=module_name, distribution="saexplain", version=version)
                self._guarded(info, functools.partial(importlib.import_module, module_name), prov)
            for ep in self._discover():
                self._load_entry_point(ep)

    # --- loading ----------------------------------------------------------------------------------

    def _registry(self, kind: str) -> Registry:
        self.load()
        return self._registries[kind]

    def _discover(self) -> list[EntryPoint]:
        if self._entry_points is not None:
            return self._entry_points
        return sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)

    def _load_entry_point(self, ep: EntryPoint) -> None:
        dist = ep.dist.name if ep.dist is not None else None
        version = ep.dist.version if ep.dist is not None else None
        info = PluginInfo(
            name=ep.name, source="entry point", state="loaded", distribution=dist, version=version
        )
        keys = {ep.name} | ({dist} if dist else set())
        allow, deny = _env_list(self._environ, ENV_ALLOW), _env_list(self._environ, ENV_DENY)
        if (allow is not None and not keys & allow) or (deny is not None and keys & deny):
            info.state = "blocked"
            info.error = f"blocked by {ENV_DENY if deny and keys & deny else ENV_ALLOW}"
            self._info[ep.name] = info
            return
        self._guarded(info, ep.load, Provenance(plugin=ep.name, distribution=dist, version=version))

    def _guarded(
        self, info: PluginInfo, load: Callable[[], object], provenance: Provenance
    ) -> None:
        """Import and register one plugin; on failure, skip it with a warning (or raise)."""
        self._info[info.name] = info
        try:
            plugin = load()
            self._add(plugin, info, provenance=provenance, lenient=True)
        except Exception as exc:  # any failure of one plugin must not take the host down
            self._fail(info, exc)

    def _fail(self, info: PluginInfo, exc: BaseException) -> None:
        info.state = "failed"
        info.error = f"{type(exc).__name__}: {exc}"
        info.hint = _install_hint(info, exc)
        if self._pm.has_plugin(info.name):
            self._pm.unregister(name=info.name)
        for registry in self._registries.values():
            registry.remove_plugin(info.name)
        origin = f"{info.distribution} {info.version}" if info.distribution else info.source
        failed = f"saexplain plugin {info.name!r} from {origin} failed to load"
        if self.strict:  # nothing is skipped: say what stopped, and how to go on without it
            raise PluginLoadError(
                f"{failed}: {info.error}. {info.hint} ({ENV_STRICT}=1 stopped here; set "
                f"{ENV_DENY}={info.name} to run without it.)"
            ) from exc
        message = (
            f"{failed} and was skipped: {info.error}. {info.hint} (Set {ENV_DENY}={info.name} "
            f"to skip it quietly, or {ENV_STRICT}=1 to make this an error.)"
        )
        warnings.warn(message, PluginLoadWarning, stacklevel=4)

    def _add(
        self, plugin: object, info: PluginInfo, *, provenance: Provenance, lenient: bool
    ) -> None:
        self._pm.register(plugin, name=info.name)
        try:
            info.hooks = self._checked_hooks(plugin)
            staged = self._stage(plugin, provenance)
            self._commit(staged, info, provenance, lenient=lenient)
        except BaseException:
            if self._pm.has_plugin(info.name):
                self._pm.unregister(name=info.name)
            raise

    def _checked_hooks(self, plugin: object) -> list[str]:
        callers = self._pm.get_hookcallers(plugin) or []
        unknown = sorted(hc.name for hc in callers if hc.spec is None)
        if unknown:
            from difflib import get_close_matches

            known = [n for n in dir(hookspecs) if n.startswith(("register_", "detect_"))]
            hints = [
                f"{n!r}"
                + (f" (did you mean {m[0]!r}?)" if (m := get_close_matches(n, known)) else "")
                for n in unknown
            ]
            raise TypeError(f"unknown saexplain hook(s): {', '.join(hints)}")
        return sorted(hc.name for hc in callers)

    def _stage(self, plugin: object, provenance: Provenance) -> list[tuple[str, dict[str, Any]]]:
        """Call the plugin's register_* hooks, collecting registrations without applying them."""
        staged: list[tuple[str, dict[str, Any]]] = []
        for kind, hook_name in _HOOK_OF_KIND.items():
            caller = getattr(self._pm.hook, hook_name)
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin or impl.hookwrapper or impl.wrapper:
                    continue

                def register(
                    name: str,
                    factory: Callable[..., Any],
                    *,
                    description: str = "",
                    override: bool = False,
                    _kind: str = kind,
                ) -> None:
                    self._registries[_kind].validate(name, factory)
                    staged.append(
                        (
                            _kind,
                            dict(
                                name=name,
                                factory=factory,
                                description=description,
                                override=override,
                            ),
                        )
                    )

                kwargs = {"register": register} if "register" in impl.argnames else {}
                impl.function(**kwargs)
        return staged

    def _commit(
        self,
        staged: list[tuple[str, dict[str, Any]]],
        info: PluginInfo,
        provenance: Provenance,
        *,
        lenient: bool,
    ) -> None:
        if not lenient:  # all or nothing: check every name before registering any
            seen: set[tuple[str, str]] = set()
            for kind, reg in staged:
                key = (kind, reg["name"])
                if key in seen:
                    raise DuplicateComponentError(f"{kind} {reg['name']!r} registered twice")
                seen.add(key)
                self._registries[kind].check(
                    reg["name"], reg["factory"], provenance=provenance, override=reg["override"]
                )
        for kind, reg in staged:
            try:
                entry = self._registries[kind].register(provenance=provenance, **reg)
            except DuplicateComponentError as exc:
                # (not `get`: that raises once the name is ambiguous, and a third claimant is
                # refused like the second)
                registry = self._registries[kind]
                held_by = next(c for c in registry if c.name == reg["name"]).provenance
                info.refused.setdefault(kind, {})[reg["name"]] = str(held_by)
                if held_by.plugin in self._builtins:
                    # A built-in method's name is taken only with override=True: refused, the
                    # built-in keeps working.
                    message = (
                        f"{kind} {reg['name']!r} of {provenance} was refused: it is a built-in "
                        f"{kind} of saexplain; pass override=True to replace it on purpose, or "
                        "register it under another name"
                    )
                else:  # between installed plugins, neither wins: the name becomes ambiguous
                    self._registries[kind].mark_ambiguous(reg["name"], provenance)
                    message = str(exc)
                if self.strict:
                    raise PluginLoadError(message) from exc
                warnings.warn(message, PluginLoadWarning, stacklevel=5)
                continue
            name = entry.name
            info.components.setdefault(kind, []).append(name)
            if entry.description:
                info.descriptions.setdefault(kind, {})[name] = entry.description
            if entry.replaced is not None:
                info.overrides.setdefault(kind, {})[name] = str(entry.replaced)
                replaced = self._info.get(entry.replaced.plugin)
                if replaced is not None:
                    replaced.overridden_by.setdefault(kind, {})[name] = str(provenance)


def _class_name(plugin: object) -> str:
    """A default name for a plugin instance: its class, so a new instance replaces the old."""
    cls = type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def _install_hint(info: PluginInfo, exc: BaseException) -> str:
    if info.source == "builtin":
        return "This is a bug in saexplain; please report it."
    dist = info.distribution or info.name
    if isinstance(exc, ModuleNotFoundError) and exc.name:
        return f"It needs the module {exc.name!r}: try `pip install --upgrade '{dist}'`."
    return f"Try `pip install --upgrade '{dist}'` or uninstall it."


_default: PluginManager | None = None
_default_lock = threading.Lock()


def get_plugin_manager() -> PluginManager:
    """The process-wide plugin manager (created on first use, loaded on first lookup)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = PluginManager()
        return _default


def set_plugin_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (tests use a fresh one); returns the previous one."""
    global _default
    with _default_lock:
        previous, _default = _default, manager
        return previous


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object with the process-wide manager (works in a notebook, and again
    when the cell runs again: see `PluginManager.register_plugin`); returns its name."""
    return get_plugin_manager().register_plugin(plugin, name=name)


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered with `register_plugin` (or any plugin) by its name."""
    get_plugin_manager().unregister_plugin(name)
