"""Token datasets: stream documents from many sources and cut them into fixed-length contexts.

Sources (`dataset=` in `collect`):
- a sequence (or any iterable) of strings: in-memory texts;
- a path to a `.txt` file (one document per non-empty line), a `.jsonl`/`.json` lines file (the
  `text_field` of each object), a `.parquet` file (needs `pyarrow`), or a directory of such files;
- a Hugging Face dataset name such as `"NeelNanda/pile-10k"` (needs `datasets` and the hub);
- pre-tokenized ids: a 2-D integer array (numpy, or a torch tensor or anything else with the array
  protocol, as SAELens activation stores and delphi hold them) is used as contexts as they are
  (its width must be the context length; no BOS is added); a list of lists of ints is treated as
  tokenized documents.

Documents are tokenized without BOS, joined with the BOS token as separator (when the backend has
one and `doc_separator` is on), and cut into contexts of `context_length` tokens. With
`prepend_bos=True` every context starts with BOS followed by `context_length - 1` document tokens.
A trailing partial context is dropped. All of this is deterministic, which resumption relies on.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.errors import ConfigError, EmptyDatasetError
from saexplain.protocols import Backend

TEXT_SUFFIXES = {".txt", ".text", ".md"}
JSONL_SUFFIXES = {".jsonl", ".json", ".ndjson"}
PARQUET_SUFFIXES = {".parquet"}


def token_array(source: object) -> object:
    """`source` as a 2-D integer numpy array when it holds token ids behind the array protocol
    (a torch tensor, on any device, or a jax array); anything else as it is."""
    if isinstance(source, np.ndarray | str | bytes | os.PathLike) or not hasattr(
        source, "__array__"
    ):
        return source
    if hasattr(source, "detach") and hasattr(source, "cpu"):  # a torch tensor, maybe on a GPU
        source = source.detach().cpu()
    array = np.asarray(source)
    if array.ndim == 2 and np.issubdtype(array.dtype, np.integer):
        return array
    return source  # e.g. a pandas Series of texts: read as an iterable


def _is_token_docs(source: object) -> bool:
    if isinstance(source, np.ndarray):
        return source.ndim == 2 and np.issubdtype(source.dtype, np.integer)
    if isinstance(source, Sequence) and not isinstance(source, str | bytes) and len(source) > 0:
        first = source[0]
        if isinstance(first, np.ndarray):
            return np.issubdtype(first.dtype, np.integer)
        return (
            isinstance(first, Sequence)
            and not isinstance(first, str | bytes)
            and all(isinstance(t, int | np.integer) for t in list(first)[:8])
        )
    return False


def describe_dataset(source: object, *, text_field: str = "text", split: str = "train") -> str:
    """A stable description recorded in the manifest (and compared when resuming)."""
    source = token_array(source)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.exists():
            stat = path.stat()
            return f"file:{path.resolve()} size={stat.st_size} field={text_field}"
        return f"hf:{source} split={split} field={text_field}"
    if isinstance(source, np.ndarray):
        digest = hashlib.blake2b(np.ascontiguousarray(source).tobytes(), digest_size=8).hexdigest()
        return f"token-array shape={source.shape} blake2b={digest}"
    if isinstance(source, Sequence) and not isinstance(source, bytes):
        h = hashlib.blake2b(digest_size=8)
        for item in source:
            h.update(repr(item).encode("utf-8") if not isinstance(item, str) else item.encode())
            h.update(b"\x00")
        kind = "token-docs" if _is_token_docs(source) else "texts"
        return f"{kind} n={len(source)} blake2b={h.hexdigest()}"
    return f"iterable:{type(source).__name__} (unverifiable on resume)"


def _iter_file(path: Path, text_field: str) -> Iterator[str]:
    try:
        yield from _read_file(path, text_field)
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"dataset file {path} is not UTF-8 text (it holds the byte {e.object[e.start]:#04x}): "
            "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from e


def _read_file(path: Path, text_field: str) -> Iterator[str]:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(
                        f"{path}:{lineno}: not a JSON object ({e.msg}): fix or remove the line"
                    ) from e
                if not isinstance(obj, dict) or text_field not in obj:
                    raise ConfigError(f"{path}:{lineno}: no field {text_field!r} in JSON line")
                yield str(obj[text_field])
    elif suffix in PARQUET_SUFFIXES:
        try:
            pq: Any = importlib.import_module("pyarrow.parquet")
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ConfigError(
                f"reading {path} needs pyarrow: pip install pyarrow (or convert it to JSONL)"
            ) from exc
        pf = pq.ParquetFile(path)
        if text_field not in pf.schema_arrow.names:
            raise ConfigError(f"{path}: no column {text_field!r}; columns: {pf.schema_arrow.names}")
        for batch in pf.iter_batches(columns=[text_field], batch_size=1024):
            for value in batch.column(0).to_pylist():
                if value is not None:
                    yield str(value)
    else:
        with open(path, encoding="utf-8") as f:
            for line in f:
                text = line.rstrip("\n")
                if text.strip():
                    yield text


def iter_documents(
    source: object, *, text_field: str = "text", split: str = "train"
) -> Iterator[str | list[int]]:
    """Documents from `source`: strings, or lists of token ids for pre-tokenized input."""
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        if path.is_dir():
            files = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in TEXT_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES
            )
            if not files:
                raise EmptyDatasetError(f"no .txt/.jsonl/.parquet files under {path}")
            for p in files:
                yield from _iter_file(p, text_field)
            return
        if path.exists():
            yield from _iter_file(path, text_field)
            return
        yield from _iter_hub(str(source), text_field=text_field, split=split)
        return
    if isinstance(source, np.ndarray) or _is_token_docs(source):
        for doc in source:  # type: ignore[attr-defined]
            yield [int(t) for t in doc]
        return
    if isinstance(source, Iterable) and not isinstance(source, bytes):
        for item in source:
            if not isinstance(item, str):
                raise ConfigError(f"dataset items must be strings, got {type(item).__name__}")
            yield item
        return
    raise ConfigError(f"unsupported dataset {type(source).__name__}: give texts, a path or a name")


def _iter_hub(name: str, *, text_field: str, split: str) -> Iterator[str]:
    try:
        datasets: Any = importlib.import_module("datasets")  # heavy; only for hub names
    except ImportError as exc:
        raise ConfigError(
            f"{name!r} is not a local file; loading it as a Hugging Face dataset needs "
            "`pip install datasets` (and network access to the hub)"
        ) from exc
    try:
        ds: Any = datasets.load_dataset(name, split=split, streaming=True)
    except Exception as exc:  # offline, unknown name, no such split: one clear, typed error
        raise ConfigError(
            f"{name!r} is not a local file and could not be loaded as a Hugging Face dataset "
            f"(split {split!r}): {type(exc).__name__}: {exc}"
        ) from exc
    for row in ds:
        if text_field not in row:
            raise ConfigError(f"dataset {name!r} has no field {text_field!r}; fields: {list(row)}")
        yield str(row[text_field])


@dataclass
class ContextStream:
    """Cuts a document stream into contexts of `context_length` token ids (deterministically).

    Iterate it for `(context_length,)` int64 arrays. `n_tokens_read` counts document tokens
    tokenized so far (for the "shorter than one context" error).
    """

    backend: Backend
    source: object
    context_length: int
    prepend_bos: bool = True
    doc_separator: bool = True
    text_field: str = "text"
    split: str = "train"
    tokenize_batch: int = 64
    n_docs: int = field(default=0, init=False)
    n_tokens_read: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.source = token_array(self.source)
        if self.context_length < 2:
            raise ConfigError(f"context_length must be >= 2, got {self.context_length}")
        if self.prepend_bos and self.backend.bos_token_id is None:
            raise ConfigError(
                f"prepend_bos=True but backend {self.backend.model_id!r} has no BOS token"
            )

    @property
    def pretokenized_contexts(self) -> bool:
        return isinstance(self.source, np.ndarray)

    def __iter__(self) -> Iterator[npt.NDArray[np.int64]]:
        if isinstance(self.source, np.ndarray):
            yield from self._array_contexts(self.source)
            return
        body = self.context_length - (1 if self.prepend_bos else 0)
        bos = self.backend.bos_token_id
        sep = [bos] if self.doc_separator and bos is not None else []
        buffer: list[int] = []
        started = False  # a separator goes between documents, also across context boundaries
        for chunk in self._token_docs():
            for ids in chunk:
                self.n_docs += 1
                if not ids:
                    continue
                self.n_tokens_read += len(ids)
                if started and sep:
                    buffer.extend(sep)
                started = True
                buffer.extend(ids)
            n_full = len(buffer) // body
            if n_full:
                arr = np.asarray(buffer[: n_full * body], dtype=np.int64).reshape(n_full, body)
                del buffer[: n_full * body]
                if self.prepend_bos:
                    arr = np.concatenate([np.full((n_full, 1), bos, dtype=np.int64), arr], axis=1)
                yield from arr
        if self.n_docs == 0:
            raise EmptyDatasetError(f"the dataset {describe_dataset(self.source)} is empty")
        if self.n_tokens_read == 0:
            raise EmptyDatasetError(f"the dataset ({self.n_docs} documents) tokenizes to nothing")

    def _array_contexts(self, array: npt.NDArray[Any]) -> Iterator[npt.NDArray[np.int64]]:
        if array.shape[0] == 0:
            raise EmptyDatasetError("the token array is empty")
        if array.shape[1] != self.context_length:
            raise ConfigError(
                f"pre-tokenized contexts have width {array.shape[1]}, "
                f"but context_length is {self.context_length}: set context_length="
                f"{array.shape[1]} (each row is used as one context, as it is)"
            )
        for row in array:
            self.n_docs += 1
            self.n_tokens_read += len(row)
            yield np.asarray(row, dtype=np.int64)

    def _token_docs(self) -> Iterator[list[list[int]]]:
        pending: list[str] = []
        for doc in iter_documents(self.source, text_field=self.text_field, split=self.split):
            if isinstance(doc, list):
                if pending:
                    yield self._tokenize(pending)
                    pending = []
                yield [doc]
                continue
            pending.append(doc)
            if len(pending) >= self.tokenize_batch:
                yield self._tokenize(pending)
                pending = []
        if pending:
            yield self._tokenize(pending)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.backend.tokenize(texts, prepend_bos=False).rows()
