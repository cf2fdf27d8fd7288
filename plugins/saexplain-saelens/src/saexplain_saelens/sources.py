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
    return SAELensCoder.from_pretrained(release, sae_id, device=_device(backend), **settings)
