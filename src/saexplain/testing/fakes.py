"""A fake model stack in numpy: a backend and sparse coders with known answers.

- `FakeBackend`: a tiny deterministic "language model" implementing the Backend protocol
  (word-level tokenizer, residual stream, hooks, edits, greedy generation). No torch needed. It
  raises the same error types as the torch backends for the same bad call.
- `FakeCoder`: a ReLU sparse autoencoder; `FakeCoder.planted` builds one whose latents fire
  exactly on chosen words.
- `PlantedValuesCoder`: a coder whose latents take chosen values on chosen words.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.errors import (
    ConfigError,
    DimensionMismatchError,
    EmptyDatasetError,
    HookNameError,
    LatentIndexError,
)
from saexplain.fingerprint import fingerprint_arrays
from saexplain.protocols import (
    Add,
    Clamp,
    Edit,
    Replace,
    SparseActivations,
    SparseCoder,
    TokenBatch,
    check_latent_request,
)

FloatArray = npt.NDArray[np.float64]

_WORD = re.compile(r"\s*\S+|\s+$")
_HOOK = re.compile(r"^blocks\.(\d+)\.hook_resid_(pre|post)$")


class FakeBackend:
    """A deterministic toy transformer-shaped model in numpy.

    Tokens are words with their leading whitespace (`" cat"`), ids assigned on first sight.
    Block `l` maps the residual `h` to `h + 0.1 * tanh(h W_l) + 0.1 * (h shifted one position)`,
    so activations depend a little on context, causally. Hooks: `blocks.L.hook_resid_pre` and
    `blocks.L.hook_resid_post`. `layers_run` counts block evaluations, to test early stopping;
    `forward_calls` counts edited forward passes (`logits`, `probe`, each generation step), to
    test batching.

    Bad calls raise what the torch backends raise for them (`check_backend_errors`), checked
    before any model work: a test written against the fake holds on a real stack.
    """

    name = "fake"

    def __init__(
        self, *, d_model: int = 32, n_layers: int = 4, vocab_size: int = 4096, seed: int = 0
    ) -> None:
        self.model_id = f"fake-d{d_model}-l{n_layers}-s{seed}"
        self.d_model, self.n_layers, self.vocab_size = d_model, n_layers, vocab_size
        self.bos_token_id: int | None = 0
        rng = np.random.default_rng(seed)
        self._embed = rng.normal(size=(vocab_size, d_model)) / np.sqrt(d_model) * 4.0
        self._blocks = [
            rng.normal(size=(d_model, d_model)) / np.sqrt(d_model) for _ in range(n_layers)
        ]
        self._unembed = rng.normal(size=(d_model, vocab_size)) / np.sqrt(d_model)
        self._vocab: list[str] = ["<bos>"]
        self._ids: dict[str, int] = {"<bos>": 0}
        self.layers_run = 0
        self.forward_calls = 0
        self.model_lock = threading.RLock()  # ModelLocking, as the torch backends

    # tokenization
    def _id(self, word: str) -> int:
        if word not in self._ids:
            if len(self._vocab) >= self.vocab_size:
                raise ValueError(f"FakeBackend vocabulary is full ({self.vocab_size} words)")
            self._ids[word] = len(self._vocab)
            self._vocab.append(word)
        return self._ids[word]

    def tokenize(
        self, texts: Sequence[str], *, prepend_bos: bool = True, max_length: int | None = None
    ) -> TokenBatch:
        if isinstance(texts, str):
            raise ConfigError("tokenize takes a sequence of texts, not one string")
        rows = []
        for text in texts:
            ids = [self._id(w) for w in _WORD.findall(text)]
            if prepend_bos:
                ids.insert(0, 0)
            rows.append(ids[:max_length] if max_length else ids)
        return TokenBatch.from_lists(rows)

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self._vocab[i] for i in ids if i != 0)

    def str_tokens(self, ids: Sequence[int]) -> list[str]:
        return [self._vocab[i] for i in ids]

    # forward
    def hook_layer(self, hook: str) -> int:
        """Index of the residual `h_L` a canonical hook name reads."""
        m = _HOOK.match(hook)
        if not m or int(m.group(1)) >= self.n_layers:
            valid = [
                f"blocks.{i}.hook_resid_{k}" for i in range(self.n_layers) for k in ("pre", "post")
            ]
            raise HookNameError(f"unknown hook {hook!r} for {self.model_id}; valid: {valid}")
        return int(m.group(1)) + (m.group(2) == "post")

    def _block(self, layer: int, h: FloatArray) -> FloatArray:
        """One block: a little nonlinearity plus a causal mix of the previous position."""
        self.layers_run += 1
        shifted = np.zeros_like(h)
        shifted[:, 1:] = h[:, :-1]
        out: FloatArray = h + 0.1 * np.tanh(h @ self._blocks[layer]) + 0.1 * shifted
        return out

    def _run(
        self,
        ids: npt.NDArray[np.int64],
        until: int,
        edits: Sequence[Edit],
        capture: dict[int, FloatArray] | None = None,
    ) -> FloatArray:
        """Residual stream `h_until` (batch, seq, d_model), edits applied where they hook in;
        `h_L` (after edits) is stored in `capture` for each layer key it has."""
        self._check_edits(edits, seq=ids.shape[1], batch=ids.shape[0])
        self.forward_calls += 1
        h: FloatArray = self._embed[ids].copy()
        for layer in range(until + 1):
            for edit in edits:
                h = self._apply(edit, layer, h)
            if capture is not None and layer in capture:
                capture[layer] = h.copy()
            if layer == until:
                break
            h = self._block(layer, h)
        return h

    def _token_ids(self, tokens: TokenBatch) -> npt.NDArray[np.int64]:
        batch, seq = tokens.shape
        if batch == 0 or seq == 0 or not tokens.mask.any():
            raise EmptyDatasetError("the token batch is empty")
        return tokens.ids

    def _check_coder(self, coder: SparseCoder) -> int:
        """The layer `coder` reads; its hook and width checked."""
        layer = self.hook_layer(coder.hook)
        if coder.d_in != self.d_model:
            raise DimensionMismatchError(
                f"coder {coder.id} has d_in={coder.d_in} but {coder.hook} of {self.model_id} "
                f"has width {self.d_model}"
            )
        return layer

    def _check_edits(self, edits: Sequence[Edit], *, seq: int, batch: int) -> None:
        """Refuse bad edits as the torch backends do, before any model work."""
        for edit in edits:
            if isinstance(edit, Clamp):
                self._check_coder(edit.coder)
                if not 0 <= edit.latent < edit.coder.d_sae:
                    raise LatentIndexError(
                        f"latent {edit.latent} not in [0, {edit.coder.d_sae}) for {edit.coder.id}"
                    )
                if edit.mode not in ("set", "add", "scale"):
                    raise ConfigError(f"unknown Clamp mode {edit.mode!r}")
            elif isinstance(edit, Add):
                self.hook_layer(edit.hook)
                shape = np.shape(edit.direction)
                if shape != (self.d_model,):
                    raise DimensionMismatchError(
                        f"Add direction has shape {shape}, expected ({self.d_model},)"
                    )
            elif isinstance(edit, Replace):
                if not 0 <= edit.layer < self.n_layers:
                    raise ConfigError(f"Replace layer {edit.layer} not in [0, {self.n_layers})")
                shape = np.shape(edit.vector)
                if shape not in ((self.d_model,), (batch, self.d_model)):
                    raise DimensionMismatchError(
                        f"Replace vector has shape {shape}, expected ({self.d_model},) or "
                        f"(batch={batch}, {self.d_model})"
                    )
            else:
                raise ConfigError(f"unknown edit {edit!r}")
            rows = None if isinstance(edit, Replace) else edit.rows
            if rows is not None and (not rows or any(not 0 <= r < batch for r in rows)):
                kind = type(edit).__name__
                raise ConfigError(f"{kind}: rows {rows} empty or outside a batch of {batch} rows")
            positions = edit.positions
            if positions is not None and any(not -seq <= p < seq for p in positions):
                kind = type(edit).__name__
                raise ConfigError(
                    f"{kind}: positions {positions} outside a sequence of {seq} tokens"
                )

    def _apply(self, edit: Edit, layer: int, h: FloatArray) -> FloatArray:
        """`edit` applied to the residual `h_layer` (edits are checked by `_check_edits`)."""
        if not isinstance(edit, Replace) and edit.rows is not None:  # only those rows
            rows = sorted(set(edit.rows))
            h = h.copy()
            h[rows] = self._apply(replace(edit, rows=None), layer, h[rows])
            return h
        pos = slice(None) if edit.positions is None else list(edit.positions)
        h = h.copy()
        if isinstance(edit, Replace):
            if edit.layer == layer:
                vec = np.asarray(edit.vector, dtype=np.float64)
                h[:, pos] = vec if vec.ndim == 1 else vec[:, None, :]
        elif isinstance(edit, Add):
            if self.hook_layer(edit.hook) == layer:
                h[:, pos] += edit.scale * np.asarray(edit.direction, dtype=np.float64)
        elif self.hook_layer(edit.coder.hook) == layer:  # a Clamp
            z = np.asarray(edit.coder.encode(h))
            error = h - np.asarray(edit.coder.decode(z))
            z = z.copy()
            col = z[:, pos, edit.latent]
            z[:, pos, edit.latent] = {
                "set": edit.value,
                "add": col + edit.value,
                "scale": col * edit.value,
            }[edit.mode]
            h = np.asarray(edit.coder.decode(z)) + error
        return h

    def latent_acts(
        self,
        tokens: TokenBatch,
        coders: Sequence[SparseCoder],
        *,
        latents: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, SparseActivations]:
        check_latent_request(coders, latents)
        layers = {c.id: self._check_coder(c) for c in coders}
        # one pass, stopping at the deepest hook
        h = self._embed[self._token_ids(tokens)].copy()
        out: dict[str, SparseActivations] = {}
        for layer in range(max(layers.values()) + 1):
            for c in coders:
                if layers[c.id] == layer:
                    out[c.id] = self._sparse(c, h, tokens, (latents or {}).get(c.id))
            if layer == max(layers.values()):
                break
            h = self._block(layer, h)
        return out

    def _sparse(
        self, coder: SparseCoder, h: FloatArray, tokens: TokenBatch, subset: Sequence[int] | None
    ) -> SparseActivations:
        z = np.asarray(coder.encode(h))
        mask = tokens.mask.copy()
        if coder.exclude_bos:  # only a leading BOS: the same id may occur mid-text (GPT-2's EOS)
            mask[:, 0] &= tokens.ids[:, 0] != self.bos_token_id
        if subset is not None:
            idx = np.asarray(subset, dtype=np.int64)
            sparse = SparseActivations.from_dense(z[:, :, idx], mask)
            return SparseActivations(sparse.row, sparse.pos, idx[sparse.latent], sparse.value)
        return SparseActivations.from_dense(z, mask)

    def logits(self, tokens: TokenBatch, edits: Sequence[Edit] = ()) -> FloatArray:
        out: FloatArray = self._run(self._token_ids(tokens), self.n_layers, edits) @ self._unembed
        return out

    def probe(
        self,
        tokens: TokenBatch,
        edits: Sequence[Edit] = (),
        *,
        layers: Sequence[int] = (),
        positions: Sequence[int] | None = None,
    ) -> tuple[FloatArray, dict[int, FloatArray]]:
        ids = self._token_ids(tokens)
        self._check_edits(edits, seq=ids.shape[1], batch=ids.shape[0])
        for layer in layers:
            if not 0 <= layer < self.n_layers:
                raise ConfigError(f"probe layer {layer} not in [0, {self.n_layers})")
        if positions is not None and any(not -ids.shape[1] <= p < ids.shape[1] for p in positions):
            raise ConfigError(f"probe: positions {positions} outside {ids.shape[1]} tokens")
        capture: dict[int, FloatArray] = dict.fromkeys(layers, np.zeros(0))
        out: FloatArray = self._run(ids, self.n_layers, edits, capture) @ self._unembed
        if positions is None:
            return out, capture
        cols = list(positions)
        return out[:, cols], {layer: x[:, cols] for layer, x in capture.items()}

    def generate(
        self,
        prompts: Sequence[str],
        edits: Sequence[Edit] = (),
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[str]:
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        for edit in edits:
            if any(p < 0 for p in edit.positions or ()):
                raise ConfigError(
                    f"generate: edit positions count from the prompt's start; got {edit.positions}"
                )
        if prompts:  # validated once, before any model work (counting words adds no vocabulary)
            shortest = min(len(_WORD.findall(p)) + 1 for p in prompts)  # + 1: the BOS
            self._check_edits(edits, seq=shortest, batch=len(prompts))
        rng = np.random.default_rng(seed)
        results = []
        for i, prompt in enumerate(prompts):
            ids = self.tokenize([prompt]).rows()[0]
            start = len(ids)
            alone = (_row_edit(e, i, len(prompts), self.d_model) for e in edits)
            mine = [e for e in alone if e is not None]
            for _ in range(max_new_tokens):
                logits = self.logits(TokenBatch.from_lists([ids]), mine)[0, -1, : len(self._vocab)]
                if temperature > 0:
                    p = np.exp((logits - logits.max()) / temperature)
                    nxt = int(rng.choice(len(p), p=p / p.sum()))
                else:
                    nxt = int(np.argmax(logits))
                ids.append(nxt)
            results.append(self.decode(ids[start:]))
        return results

    def unembed(self, direction: Any) -> FloatArray:
        out: FloatArray = np.asarray(direction, dtype=np.float64) @ self._unembed
        return out

    def fingerprint(self) -> str:
        """`Fingerprinted`: a digest of the weights (editing them in place changes it)."""
        blocks = {f"block{i}": w for i, w in enumerate(self._blocks)}
        return fingerprint_arrays({"embed": self._embed, "unembed": self._unembed, **blocks})

    def residual(self, tokens: TokenBatch, hook: str) -> FloatArray:
        """The residual at a hook (for tests and planting features)."""
        return self._run(self._token_ids(tokens), self.hook_layer(hook), ())


def _row_edit(edit: Edit, row: int, batch: int, d_model: int) -> Edit | None:
    """`edit` as it applies to prompt `row` alone (a per-row Replace keeps that row's vector; a
    Clamp or Add on other rows only is None)."""
    if not isinstance(edit, Replace):
        if edit.rows is None:
            return edit
        return replace(edit, rows=None) if row in edit.rows else None
    vec = np.asarray(edit.vector, dtype=np.float64)
    if vec.ndim == 2:
        if vec.shape != (batch, d_model):
            raise DimensionMismatchError(
                f"per-row Replace vector {vec.shape} != (prompts={batch}, {d_model})"
            )
        return Replace(vector=vec[row], positions=edit.positions, layer=edit.layer)
    return edit


class FakeCoder:
    """A ReLU sparse autoencoder in numpy: `z = relu((x - b_dec) W_enc + b_enc)`."""

    def __init__(
        self,
        W_enc: FloatArray,
        b_enc: FloatArray,
        W_dec: FloatArray,
        b_dec: FloatArray,
        *,
        hook: str,
        id: str | None = None,
        exclude_bos: bool = True,
    ) -> None:
        self.W_enc, self.b_enc, self._W_dec, self.b_dec = W_enc, b_enc, W_dec, b_dec
        self.d_in, self.d_sae = W_enc.shape
        if W_dec.shape != (self.d_sae, self.d_in):
            raise DimensionMismatchError(f"W_dec {W_dec.shape} != {(self.d_sae, self.d_in)}")
        self.hook = hook
        self.id = id or f"fake-sae/{hook}"
        self.exclude_bos = exclude_bos

    @property
    def W_dec(self) -> FloatArray:
        return self._W_dec

    def encode(self, x: Any) -> FloatArray:
        pre = (np.asarray(x) - self.b_dec) @ self.W_enc + self.b_enc
        out: FloatArray = np.maximum(pre, 0.0)
        return out

    def decode(self, z: Any) -> FloatArray:
        out: FloatArray = np.asarray(z) @ self._W_dec + self.b_dec
        return out

    def fingerprint(self) -> str:
        """`Fingerprinted`: a digest of the weights (editing them in place changes it)."""
        return fingerprint_arrays(
            {"W_enc": self.W_enc, "b_enc": self.b_enc, "W_dec": self._W_dec, "b_dec": self.b_dec}
        )

    @classmethod
    def random(cls, d_in: int, d_sae: int, *, hook: str, seed: int = 0) -> FakeCoder:
        rng = np.random.default_rng(seed)
        W_dec = rng.normal(size=(d_sae, d_in))
        W_dec /= np.linalg.norm(W_dec, axis=1, keepdims=True)
        return cls(W_dec.T.copy(), np.full(d_sae, -0.5), W_dec, np.zeros(d_in), hook=hook)

    @classmethod
    def planted(
        cls,
        backend: FakeBackend,
        words: Mapping[int, str],
        *,
        d_sae: int = 16,
        hook: str = "blocks.0.hook_resid_pre",
        seed: int = 0,
    ) -> FakeCoder:
        """Latent `i` fires (value ~1) exactly where `words[i]` occurs; other latents stay silent.

        Works at layer 0 (`blocks.0.hook_resid_pre`), where the residual is the token embedding.
        """
        if backend.hook_layer(hook) != 0:
            raise ValueError("planted features are exact only at blocks.0.hook_resid_pre")
        coder = cls.random(backend.d_model, d_sae, hook=hook, seed=seed)
        coder.W_enc[:] = 0.0
        coder.b_enc[:] = 0.0
        for latent, word in words.items():
            e = backend._embed[backend._id(word)]
            coder.W_enc[:, latent] = 2.0 * e / (e @ e)
            coder.b_enc[latent] = -1.0  # embedding of `word` -> 2 - 1 = 1; others ~ -1 + noise
            coder._W_dec[latent] = e / np.linalg.norm(e)
        return coder


class PlantedValuesCoder:
    """A sparse coder at `blocks.0.hook_resid_pre` whose latent `l` takes exactly the value
    `values[l][word]` wherever `word` occurs, and 0 elsewhere (a lookup on token embeddings).

    Unlike `FakeCoder.planted`, one latent can fire on several words with different strengths,
    which makes activation quantiles, top examples and thresholds exactly predictable.
    `W_dec` is a writable (d_sae, d_model) array of unit rows (set rows to plant neighbours).
    """

    def __init__(
        self,
        backend: FakeBackend,
        values: Mapping[int, Mapping[str, float]],
        *,
        d_sae: int = 16,
        hook: str = "blocks.0.hook_resid_pre",
        id: str | None = None,
        exclude_bos: bool = True,
        seed: int = 0,
    ) -> None:
        if backend.hook_layer(hook) != 0:
            raise ValueError("planted values are exact only at blocks.0.hook_resid_pre")
        self.hook, self.d_in, self.d_sae = hook, backend.d_model, d_sae
        self.id = id or f"planted-values/{hook}"
        self.exclude_bos = exclude_bos
        self._entries: list[tuple[int, FloatArray, float]] = []
        for latent, table in values.items():
            if not 0 <= latent < d_sae:
                raise LatentIndexError(f"latent {latent} not in [0, {d_sae})")
            for word, value in table.items():
                self._entries.append((latent, backend._embed[backend._id(word)].copy(), value))
        rng = np.random.default_rng(seed)
        w = rng.normal(size=(d_sae, self.d_in))
        self._W_dec: FloatArray = w / np.linalg.norm(w, axis=1, keepdims=True)

    @property
    def W_dec(self) -> FloatArray:
        return self._W_dec

    def encode(self, x: Any) -> FloatArray:
        h = np.asarray(x, dtype=np.float64)
        z = np.zeros((*h.shape[:-1], self.d_sae))
        for latent, e, value in self._entries:
            hit = np.abs(h - e).max(axis=-1) < 1e-9
            z[..., latent] += value * hit
        return z

    def decode(self, z: Any) -> FloatArray:
        out: FloatArray = np.asarray(z) @ self._W_dec
        return out

    def fingerprint(self) -> str:
        """`Fingerprinted`: a digest of the planted values and of `W_dec`."""
        planted = {
            f"entry{i}": np.append(e, [latent, value])
            for i, (latent, e, value) in enumerate(self._entries)
        }
        return fingerprint_arrays({"W_dec": self._W_dec, **planted})
