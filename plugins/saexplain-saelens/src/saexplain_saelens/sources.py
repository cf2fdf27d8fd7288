"""The `saelens:` coder source (`"saelens:<release>/<sae_id>"`, a local SAE folder, or an SAE
object) and `looks_like_saelens`, the test behind the plugin's `detect_coder` answer.

A spec may name several SAEs, which load as several coders of one run: a pattern in the SAE id
(`"<release>/blocks.*.hook_resid_pre"`: `*`, `?`, `[...]` as in `fnmatch`) or a list in braces
(`"<release>/blocks.{0,6}.hook_resid_pre"`), expanded against SAELens's directory of pretrained
SAEs (`expand_sae_ids`, offline: the directory ships with sae_lens); or a pattern of local SAE
folders (`"saelens:/path/to/saes/*"`).
"""

from __future__ import annotations

import fnmatch
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


_WILDCARD = re.compile(r"[*?\[]")
_BRACES = re.compile(r"\{([^{}]*)\}")


def _braces(pattern: str) -> list[str]:
    """`a.{0,6}.b` -> [`a.0.b`, `a.6.b`]; several brace groups multiply; none: [pattern]."""
    m = _BRACES.search(pattern)
    if m is None:
        return [pattern]
    head, tail = pattern[: m.start()], pattern[m.end() :]
    return [x for part in m.group(1).split(",") for x in _braces(f"{head}{part.strip()}{tail}")]


def names_several(spec: str) -> bool:
    """Whether a spec names several SAEs (a wildcard or a brace list)."""
    return bool(_WILDCARD.search(spec) or _BRACES.search(spec))


def expand_sae_ids(release: str, pattern: str) -> list[str]:
    """The ids of `release`'s SAEs that `pattern` names, in SAELens's order for the release
    (layer order): wildcards match against SAELens's pretrained directory, brace lists give
    ids that must each be in it. Reads only the directory that ships with sae_lens (offline).
    A pattern that matches nothing, an id the release lacks or a release SAELens does not list
    is a `ConfigError` naming it."""
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    entry = get_pretrained_saes_directory().get(release)
    if entry is None:
        raise ConfigError(
            f"SAELens release {release!r} is not in SAELens's directory of pretrained SAEs, so "
            f"{pattern!r} cannot be expanded; name its SAEs one by one"
        )
    known = list(entry.saes_map)
    patterns = _braces(pattern)
    missing = [p for p in patterns if not _WILDCARD.search(p) and p not in entry.saes_map]
    if missing:
        some = ", ".join(known[:3])
        raise ConfigError(
            f"SAELens release {release!r} has no SAE {', '.join(missing)} (its ids look like "
            f"{some}; see SAELens's table of pretrained SAEs)"
        )
    ids = [i for i in known if any(fnmatch.fnmatchcase(i, p) for p in patterns)]
    if not ids:
        raise ConfigError(
            f"{pattern!r} matches no SAE of SAELens release {release!r} ({len(known)} SAEs, "
            f"ids like {', '.join(known[:3])})"
        )
    return ids


def _natural(path: Path) -> list[Any]:
    """Sort key: `layer_10` after `layer_2`."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


def _local_folders(pattern: str) -> list[Path]:
    """The local SAE folders (holding `cfg.json`) a path pattern names, in natural order; none
    for a release pattern (no such folders)."""
    found: list[Path] = []
    for one in _braces(pattern):
        path = Path(one)
        if not _WILDCARD.search(one):
            found += [path] if (path / "cfg.json").is_file() else []
            continue
        root = Path(path.anchor) if path.is_absolute() else Path()
        relative = path.relative_to(root) if path.is_absolute() else path
        found += [p for p in root.glob(str(relative)) if (p / "cfg.json").is_file()]
    return sorted(set(found), key=_natural)


def saelens_coder(spec: Any, *, backend: Any = None, **settings: Any) -> Any:
    """A SAELens SAE object, a local SAE folder, or `<release>/<sae_id>` from the hub; a list of
    coders for a spec that names several (see the module docstring)."""
    from saexplain_saelens.coders import SAELensCoder

    if isinstance(spec, tuple) and len(spec) == 2:
        spec = f"{spec[0]}/{spec[1]}"
    if not isinstance(spec, str):
        return SAELensCoder(spec, **settings)
    if Path(spec).exists():
        return SAELensCoder.from_disk(spec, device=_device(backend), **settings)
    if names_several(spec):
        folders = _local_folders(spec)
        if folders:
            return [SAELensCoder.from_disk(f, device=_device(backend), **settings) for f in folders]
    release, sep, sae_id = spec.partition("/")
    if not (sep and release and sae_id):
        raise ConfigError(
            f"SAELens coder {spec!r}: give '<release>/<sae_id>' (e.g. "
            "'gpt2-small-res-jb/blocks.8.hook_resid_pre') or an existing local SAE folder"
        )
    if names_several(sae_id):
        ids = expand_sae_ids(release, sae_id)
        return [_from_hub(release, i, _device(backend), settings) for i in ids]
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
