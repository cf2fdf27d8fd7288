"""saexplain-transformerlens: saexplain backends over TransformerLens models.

Two backend names, one per TransformerLens API:

- `transformerlens`: a `HookedTransformer` (or SAELens's `HookedSAETransformer`), through
  `TransformerLensBackend`. Handed a `TransformerBridge`, it passes it on to the bridge backend, so
  configs naming `transformerlens` keep working with TransformerLens 4 (bridge only).
- `transformerlens-bridge`: a `TransformerBridge` (TransformerLens 3.9's new API), through
  `TransformerBridgeBackend`.

`detect_backend` tells them apart by class name. Importing this module stays light: torch and
transformer_lens load only when a backend is built.
"""

from __future__ import annotations

from typing import Any

from saexplain import hookimpl
from saexplain.errors import ConfigError
from saexplain.hookspecs import Register

NAME = "transformerlens"
BRIDGE_NAME = "transformerlens-bridge"


def _tl_class(model: object, names: set[str]) -> bool:
    return any(
        cls.__module__.startswith("transformer_lens") and cls.__name__ in names
        for cls in type(model).__mro__
    )


def is_bridge(model: object) -> bool:
    """Whether `model` is a TransformerLens `TransformerBridge` (by class name: no import)."""
    return _tl_class(model, {"TransformerBridge"})


def make_backend(model: Any, **settings: Any) -> Any:
    """Backend factory: a HookedTransformer or HookedSAETransformer, a model name that
    `HookedTransformer.from_pretrained` knows, or a TransformerBridge (given to
    `make_bridge_backend`)."""
    if is_bridge(model):
        return make_bridge_backend(model, **settings)
    from saexplain_transformerlens.backend import TransformerLensBackend

    if isinstance(model, str):
        settings.setdefault("model_id", model)
        model = _load_hooked_transformer(model)
    return TransformerLensBackend(model, **settings)


def _load_hooked_transformer(name: str) -> Any:
    """`HookedTransformer.from_pretrained(name)`, its failures as one-line `ConfigError`s: a
    name TransformerLens does not support, or one not in the cache without hub access."""
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    from saexplain.hub import check_hub_access, hub_load_error

    try:
        official = get_official_model_name(name)
    except ValueError:  # its message lists every supported model (about 300 names)
        raise ConfigError(
            f"TransformerLens does not support the model {name!r} (HookedTransformer loads only "
            "the models it lists): use `backend: transformerlens-bridge` or `backend: nnsight` "
            "for another hub model or a local folder, or pass a HookedTransformer you built"
        ) from None
    check_hub_access("model", official)
    try:
        return HookedTransformer.from_pretrained(name)
    except OSError as e:  # not found, no hub access, a gated model without a token
        raise hub_load_error("model", name, e) from e


def make_bridge_backend(model: Any, **settings: Any) -> Any:
    """Backend factory: a TransformerBridge, or a model name or local directory that
    `TransformerBridge.boot_transformers` loads (settings `device` and `dtype`, a torch dtype or
    its name, are passed to it)."""
    from saexplain_transformerlens.bridge import TransformerBridgeBackend

    if isinstance(model, str):
        import torch
        from transformer_lens.model_bridge import TransformerBridge

        from saexplain.hub import check_hub_access, hub_load_error

        boot = {key: settings.pop(key) for key in ("device", "dtype") if key in settings}
        if isinstance(boot.get("dtype"), str):
            boot["dtype"] = getattr(torch, boot["dtype"])
        settings.setdefault("model_id", model)
        check_hub_access("model", model)
        try:
            model = TransformerBridge.boot_transformers(model, **boot)
        except (OSError, ValueError) as e:  # not found, no hub access, not a model folder
            raise hub_load_error("model", model, e) from e
    return TransformerBridgeBackend(model, **settings)


@hookimpl
def register_backends(register: Register) -> None:
    register(
        NAME,
        make_backend,
        description="HookedTransformer / HookedSAETransformer (a TransformerBridge is passed on)",
    )
    register(BRIDGE_NAME, make_bridge_backend, description="TransformerLens TransformerBridge")


@hookimpl
def detect_backend(model: object) -> str | None:
    """HookedTransformer and its subclasses (SAELens's HookedSAETransformer, user subclasses:
    found by class name in the MRO, without importing sae_lens), and TransformerBridge."""
    if is_bridge(model):
        return BRIDGE_NAME
    if _tl_class(model, {"HookedTransformer"}):
        return NAME
    return None
