"""Typed errors. Every failure saexplain reports is one of these, never a sentinel value."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches


class SaexplainError(Exception):
    """Base class of every error saexplain raises on purpose."""


class PluginLoadWarning(UserWarning):
    """A plugin could not be loaded and was skipped (see `saexplain plugins`)."""


class PluginLoadError(SaexplainError):
    """A plugin failed to load while `SAEXPLAIN_STRICT_PLUGINS=1` asked for errors."""


class DuplicateComponentError(SaexplainError):
    """Two plugins registered the same component name and neither asked to override."""


class UnknownComponentError(SaexplainError, LookupError):
    """A component was requested by a name nobody registered."""

    def __init__(self, kind: str, name: str, known: Iterable[str]) -> None:
        self.kind, self.name = kind, name
        self.known = sorted(known)
        guesses = get_close_matches(name, self.known, n=1)
        self.suggestion = guesses[0] if guesses else None
        hint = f" Did you mean {self.suggestion!r}?" if self.suggestion else ""
        listed = ", ".join(self.known) if self.known else "none are registered"
        super().__init__(f"Unknown {kind} {name!r}.{hint} Known {kind}s: {listed}.")


class AmbiguousComponentError(SaexplainError, LookupError):
    """Several plugins claim the same name, so selecting it by name would depend on load order."""

    def __init__(self, kind: str, name: str, providers: Sequence[str]) -> None:
        self.kind, self.name, self.providers = kind, name, list(providers)
        super().__init__(
            f"{kind} {name!r} is registered by several plugins ({', '.join(providers)}); "
            "disable one with SAEXPLAIN_DISABLE_PLUGINS or have one register with override=True."
        )


class ConfigError(SaexplainError, ValueError):
    """A run configuration or argument is invalid; raised before any heavy work."""


class HookNameError(ConfigError):
    """A hook name is not a location this backend knows for this model."""


class DimensionMismatchError(ConfigError):
    """A coder's input width does not match the model's width at its hook."""


class LatentIndexError(ConfigError, IndexError):
    """A latent index is outside [0, d_sae)."""


class EmptyDatasetError(ConfigError):
    """A dataset has no usable tokens."""


class RunDirError(SaexplainError, ValueError):
    """A run directory file is damaged (not merely cut short by a crash); the message names the
    file and line and how to recover."""


class RunDirBusyError(SaexplainError):
    """Another process is running the run in this run directory (the message names its pid)."""


class StoreCorruptError(SaexplainError):
    """An activation store file is missing, cut short or fails its checksum; the message names
    the file and how to rebuild it."""


class BackendError(SaexplainError):
    """A backend could not wrap a model or run a request."""


class ProviderError(SaexplainError):
    """An LLM call failed. `retryable` says whether trying again can help."""

    retryable: bool = False

    def __init__(self, message: str, *, model: str | None = None) -> None:
        self.model = model
        super().__init__(f"[{model}] {message}" if model else message)


class ProviderAuthError(ProviderError):
    """Credentials are missing or rejected; never retried."""


class ProviderBadRequestError(ProviderError):
    """The provider rejected the request itself; never retried."""


class ProviderRateLimitError(ProviderError):
    retryable = True


class ProviderServerError(ProviderError):
    retryable = True


class ProviderTimeoutError(ProviderError):
    retryable = True


class SpendCapReached(ProviderError):
    """The run's spend cap is reached; no new LLM calls are made."""


class ParseError(SaexplainError, ValueError):
    """An LLM answer could not be parsed into the expected form."""


class StorageError(SaexplainError, OSError):
    """A file could not be written because the disk is full or the folder is not writable; the
    message names the file and the fix. An `OSError` (with the original `errno`), so code that
    tolerates a failing disk (the response cache) still does."""


class Interrupted(SaexplainError):
    """The run was asked to stop (Ctrl-C) and stopped at a batch boundary; everything finished
    so far is saved, and running the same command again resumes the run."""
