"""The `saelens:` coder source (`"saelens:<release>/<sae_id>"`, a local SAE folder, or an SAE
object) and `looks_like_saelens`, the test behind the plugin's `detect_coder` answer."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from saexplain.errors import ConfigError

# '<release>/<sae_id>' as SAELens names them: a release without spaces or a scheme, then an id
# that may itself contain slashes ('gpt2-small-res-jb/blocks.8.hook_resid_pre').
_HUB_ID = re.compile(r"[\w.-]+/\S+")


def _device(backend: Any) -> str:
    return str(getattr(backend, "device", "cpu"))


def looks_like_saelens(coder: object) -> bool:
    """A SAELens SAE object (by module name, without importing sae_lens), a local folder SAELens
    saved (`cfg.json` inside), or a bare `'<release>/<sae_id>'` string."""
    if isinstance(coder, str):
        if ":" in coder.split("/", 1)[0]:  # 'source:spec' names its source itself
            return False
        path = Path(coder)
        if path.is_dir():
            return (path / "cfg.json").is_file()
        return _HUB_ID.fullmatch(coder) is not None
    if isinstance(coder, tuple):  # (release, sae_id)
        return len(coder) == 2 and all(isinstance(part, str) for part in coder)
    return any(cls.__module__.split(".")[0] == "sae_lens" for cls in type(coder).__mro__)


def saelens_coder(spec: Any, *, backend: Any = None, **settings: Any) -> Any:
    """A SAELens SAE object, a local SAE folder, or `<release>/<sae_id>` from the hub."""
    from saexplain_saelens.coders import SAELensCoder

    if isinstance(spec, tuple) and len(spec) == 2:
        spec = f"{spec[0]}/{spec[1]}"
    if not isinstance(spec, str):
        return SAELensCoder(spec, **settings)
    if Path(spec).exists():
        return SAELensCoder.from_disk(spec, device=_device(backend), **settings)
    release, sep, sae_id = spec.partition("/")
    if not (sep and release and sae_id):
        raise ConfigError(
            f"SAELens coder {spec!r}: give '<release>/<sae_id>' (e.g. "
            "'gpt2-small-res-jb/blocks.8.hook_resid_pre') or an existing local SAE folder"
        )
    return _from_hub(release, sae_id, _device(backend), settings)


def _from_hub(release: str, sae_id: str, device: str, settings: dict[str, Any]) -> Any:
    """`SAE.from_pretrained(release, sae_id)`, its failures as one-line `ConfigError`s: an id
    the release does not have, or an SAE not in the cache without hub access (at once)."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    from saexplain.hub import check_hub_access, hub_load_error
    from saexplain_saelens.coders import SAELensCoder

    name = f"{release}/{sae_id}"
    entry = get_pretrained_saes_directory().get(release)
    if entry is not None and sae_id not in entry.saes_map:
        some = ", ".join(list(entry.saes_map)[:3])
        raise ConfigError(
            f"SAELens release {release!r} has no SAE {sae_id!r} (its ids look like {some}; "
            "see SAELens's table of pretrained SAEs)"
        )
    # a release SAELens does not list may itself be a hub repository holding the SAE
    check_hub_access(f"SAE {name} from", entry.repo_id if entry is not None else release)
    try:
        return SAELensCoder.from_pretrained(release, sae_id, device=device, **settings)
    except (OSError, ValueError) as e:  # no hub access, an unknown release, a gated repository
        raise hub_load_error("SAE", name, e) from e
