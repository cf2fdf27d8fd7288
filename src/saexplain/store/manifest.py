"""The store's manifest: what was collected, how, and which shards are complete.

The manifest is the commit point of a collection: a shard exists only once the manifest lists
it, and the manifest is replaced atomically after each shard. A resumed run checks that its
settings (`CollectionSettings`) equal the recorded ones before appending.

It also records a checksum of every data file (`ShardInfo.checksums`, `Manifest.checksums`),
computed while the file is written and verified when a reader first opens it. Stores written
before checksums existed have none; they are read unverified, with a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, NonNegativeInt, ValidationError

from saexplain.errors import ConfigError, StoreCorruptError
from saexplain.models import Frozen
from saexplain.store._io import atomic_write_text

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"


class CoderInfo(Frozen):
    id: str
    key: str  # file-name-safe key of `id`
    hook: str
    d_in: int
    d_sae: int
    exclude_bos: bool
    has_decoder: bool = False  # W_dec saved beside the activations (for neighbour negatives)


class CollectionSettings(Frozen):
    """Everything that determines the collected data; must match exactly to resume."""

    model_id: str
    backend: str
    coders: tuple[CoderInfo, ...]
    dataset: str  # `describe_dataset` of the source
    text_field: str = "text"
    context_length: Annotated[int, Field(ge=2)]
    prepend_bos: bool
    doc_separator: bool
    bos_token_id: int | None
    bos_policy: str  # human-readable BOS policy, e.g. "bos+255 tokens; docs separated by bos"
    token_budget: NonNegativeInt | None  # None: the whole dataset
    shard_contexts: Annotated[int, Field(ge=1)]
    batch_size: Annotated[int, Field(ge=1)]
    value_dtype: Literal["float16", "float32"]
    seed: int


class ShardInfo(Frozen):
    index: NonNegativeInt
    start: NonNegativeInt  # first context (row) of the shard
    n_contexts: NonNegativeInt
    nnz: dict[str, NonNegativeInt]  # by coder key
    value_dtypes: dict[str, str] = Field(default_factory=dict)  # by coder key
    # checksum of each file of the shard, by file name; empty in stores written before checksums
    checksums: dict[str, str] = Field(default_factory=dict)
    # the shard's folder under shards/; None: its index, `00000` (collected in one process). A
    # shard collected in a slice is named after the slice (`s<first context>-<n>`), so workers
    # collecting different slices at once never write to one folder
    name: str | None = None

    @property
    def folder(self) -> str:
        """The shard's folder name under `shards/`."""
        return self.name if self.name is not None else f"{self.index:05d}"


class Manifest(Frozen):
    format_version: int = FORMAT_VERSION
    saexplain_version: str
    settings: CollectionSettings
    shards: tuple[ShardInfo, ...] = ()
    complete: bool = False  # the dataset (or the budget) is exhausted
    stats_complete: bool = False
    n_documents: NonNegativeInt | None = None  # documents read, once complete
    # shards of slices collected in parallel (`saexplain.store.slices`) that finished before a
    # slice ahead of them: complete and checksummed, but not part of the store until every
    # context before them is in `shards` (readers see `shards` only, a gapless prefix)
    parked: tuple[ShardInfo, ...] = ()
    # checksum of each file outside shards/ (decoders, statistics), by path inside the store
    checksums: dict[str, str] = Field(default_factory=dict)

    @property
    def n_contexts(self) -> int:
        return sum(s.n_contexts for s in self.shards)

    @property
    def n_tokens(self) -> int:
        return self.n_contexts * self.settings.context_length

    def coder(self, coder_id: str) -> CoderInfo:
        for c in self.settings.coders:
            if c.id == coder_id:
                return c
        known = [c.id for c in self.settings.coders]
        raise ConfigError(f"no coder {coder_id!r} in this store; it holds {known}")

    def nnz(self, coder_id: str) -> int:
        key = self.coder(coder_id).key
        return sum(s.nnz.get(key, 0) for s in self.shards)

    def save(self, root: Path) -> None:
        atomic_write_text(root / MANIFEST_NAME, self.model_dump_json(indent=1))

    @classmethod
    def load(cls, root: Path) -> Manifest:
        path = Path(root) / MANIFEST_NAME
        if not path.exists():
            raise ConfigError(f"{root} is not an activation store (no {MANIFEST_NAME})")
        try:
            manifest = cls.model_validate_json(path.read_bytes())
        except ValidationError as exc:  # cut short, or edited by hand: one line, not a traceback
            errors = exc.errors()
            reason = errors[0]["msg"] if errors else "not a store manifest"
            raise StoreCorruptError(
                f"the store manifest {path} is damaged ({reason}); delete the store directory "
                f"{root} and rerun to collect it again"
            ) from None
        if manifest.format_version != FORMAT_VERSION:
            raise ConfigError(
                f"{root}: store format {manifest.format_version}, this saexplain reads "
                f"{FORMAT_VERSION}"
            )
        return manifest


def saexplain_version() -> str:
    from saexplain import __version__

    return __version__
