"""`TorchBackend`: the whole `saexplain.protocols.Backend` contract over a torch causal LM, on
top of two primitives a concrete backend (nnsight, TransformerLens, ...) supplies:

- `_forward(ids, hooks, stop_layer)`: run the model on right-padded token ids, calling the hook
  functions at each canonical site (in execution order, on activations in canonical shape: attention
  `hook_z` flattened to `n_heads * d_head`), replacing the activation with any tensor a function
  returns; with `stop_layer=k`, stop after block `k - 1` and return None, else return the logits.
- `_unembed(x)`: final norm (where the model has one) and unembedding.

A backend that can keep a KV cache (`caching = True`) also takes `cache=` in `_forward` (the pass
continues the cached columns and extends the cache in place) and supplies `_new_cache(batch)` and
`_repeat_cache(cache, n)` (`saexplain_torch.generation.TransformersCache` does both for a
transformers model). Then rows that share a prefix (self-explanation's scale sweep: one prompt, one
patch per row) compute it once, and generation runs one new token per step.

A caching backend that also takes `attention_mask=` and `position_ids=` in `_forward` (the mask
over the cached and the new columns, the position ids of the new columns) sets `left_padding =
True`: `generate` then runs prompts of different lengths in one left-padded, KV-cached batch
(`saexplain_torch.generation.LeftPadding`). Without it, each prompt length is its own cached batch.

Keeping the semantics here means every backend gives the same numbers for the same request, and a
new stack only has to translate hook names. BOS policy: texts are tokenized without special tokens
and `bos_token_id` (the tokenizer's BOS; GPT-2's is `<|endoftext|>`) is prepended when asked, so
token ids are identical across backends. Right padding with a causal model needs no attention
mask: real positions never attend to the padding after them.

The pieces live beside it: canonical hook names in `hooks`, hook functions for edits and captures
in `edits`, the generation loops and KV caching in `generation`.
"""

from __future__ import annotations

import dataclasses
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from saexplain.errors import (
    ConfigError,
    DimensionMismatchError,
    EmptyDatasetError,
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
    write_hook,
)
from saexplain_torch.edits import (
    HookFn,
    Hooks,
    Rows,
    Window,
    add_fn,
    capture_fn,
    clamp_fns,
    in_window,
    replace_fn,
    store_fn,
)
from saexplain_torch.generation import (
    LeftPadding,
    Picker,
    decode_cached,
    decode_recompute,
    left_pad,
    picker,
    shift_edits,
    until_eos,
)
from saexplain_torch.hooks import HookSite, hook_width, parse_hook

__all__ = ["TorchBackend"]


class TorchBackend(ABC):
    """Backend protocol over a torch causal LM; subclasses translate hook names."""

    name: str = "torch"

    def __init__(
        self,
        *,
        model_id: str,
        tokenizer: Any,
        d_model: int,
        n_layers: int,
        d_mlp: int,
        n_heads: int,
        d_head: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        if tokenizer is None:
            raise ConfigError(f"{model_id}: the model has no tokenizer; pass tokenizer=")
        self.model_id = model_id
        self.tokenizer = tokenizer
        self.d_model, self.n_layers, self.d_mlp = d_model, n_layers, d_mlp
        self.n_heads, self.d_head = n_heads, d_head
        self.device, self.dtype = device, dtype
        bos = tokenizer.bos_token_id
        self.bos_token_id: int | None = int(bos) if bos is not None else None
        eos = tokenizer.eos_token_id
        self.eos_token_id: int | None = int(eos) if eos is not None else None
        pad = tokenizer.pad_token_id
        self.pad_token_id = int(pad if pad is not None else (eos if eos is not None else 0))
        # hooks go on one shared model: methods and pipeline stages take this lock around model
        # work (`saexplain.protocols.ModelLocking`)
        self.model_lock = threading.RLock()

    # --- what a concrete backend supplies -------------------------------------------------------

    @abstractmethod
    def _forward(
        self, ids: torch.Tensor, hooks: Hooks, stop_layer: int | None
    ) -> torch.Tensor | None: ...

    @abstractmethod
    def _unembed(self, x: torch.Tensor) -> torch.Tensor: ...

    # --- tokenization ----------------------------------------------------------------------------

    def tokenize(
        self, texts: Sequence[str], *, prepend_bos: bool = True, max_length: int | None = None
    ) -> TokenBatch:
        if isinstance(texts, str):
            raise ConfigError("tokenize takes a sequence of texts, not one string")
        texts = list(texts)
        encoded = self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
        rows: list[list[int]] = []
        for ids in encoded:
            row = [self.bos_token_id] if prepend_bos and self.bos_token_id is not None else []
            row = row + list(ids)
            rows.append(row[:max_length] if max_length else row)
        return TokenBatch.from_lists(rows, pad_id=self.pad_token_id)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids)))

    def str_tokens(self, ids: Sequence[int]) -> list[str]:
        return [str(self.tokenizer.decode([int(i)])) for i in ids]

    # --- validation ------------------------------------------------------------------------------

    def site(self, hook: str) -> HookSite:
        return parse_hook(hook, self.n_layers, model_id=self.model_id)

    def width(self, site: HookSite) -> int:
        return hook_width(
            site, d_model=self.d_model, d_mlp=self.d_mlp, n_heads=self.n_heads, d_head=self.d_head
        )

    def _check_coder(self, coder: SparseCoder) -> tuple[HookSite, HookSite]:
        site = self.site(coder.hook)
        if coder.d_in != self.width(site):
            raise DimensionMismatchError(
                f"coder {coder.id} has d_in={coder.d_in} but {coder.hook} of {self.model_id} "
                f"has width {self.width(site)}"
            )
        out = self.site(write_hook(coder))
        return site, out

    def _ids(self, tokens: TokenBatch) -> torch.Tensor:
        batch, seq = tokens.shape
        if batch == 0 or seq == 0 or not tokens.mask.any():
            raise EmptyDatasetError("the token batch is empty")
        return torch.as_tensor(tokens.ids, dtype=torch.long, device=self.device)

    def _vector(self, value: Any, width: int, what: str) -> torch.Tensor:
        vec = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
        if vec.shape != (width,):
            raise DimensionMismatchError(
                f"{what} has shape {tuple(vec.shape)}, expected ({width},)"
            )
        return vec.to(device=self.device, dtype=self.dtype)

    @staticmethod
    def _rows(rows: tuple[int, ...] | None, batch: int | None, what: str) -> Rows:
        """An edit's `rows` as hook functions take them: sorted, without repeats; None for every
        row (also when `rows` names them all)."""
        if rows is None:
            return None
        if not rows:
            raise ConfigError(f"{what}: rows=() edits no row; use rows=None for every row")
        if batch is None:
            return sorted(set(rows))
        if any(not 0 <= r < batch for r in rows):
            raise ConfigError(f"{what}: rows {rows} outside a batch of {batch} rows")
        unique = sorted(set(rows))
        return None if len(unique) == batch else unique

    @staticmethod
    def _check_positions(positions: tuple[int, ...] | None, seq: int, what: str) -> None:
        if positions is not None and any(not -seq <= p < seq for p in positions):
            raise ConfigError(f"{what}: positions {positions} outside a sequence of {seq} tokens")

    def _replace_vector(self, value: Any, batch: int | None) -> torch.Tensor:
        """A Replace vector: (d_model,) for every row, or (batch, d_model), one per row."""
        vec = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
        if vec.ndim == 2 and batch is not None and vec.shape == (batch, self.d_model):
            return vec.to(device=self.device, dtype=self.dtype)
        if vec.shape != (self.d_model,):
            raise DimensionMismatchError(
                f"Replace vector has shape {tuple(vec.shape)}, expected ({self.d_model},) or "
                f"(batch={batch}, {self.d_model})"
            )
        return vec.to(device=self.device, dtype=self.dtype)

    def _edit_hooks(
        self,
        edits: Sequence[Edit],
        seq: int,
        batch: int | None = None,
        window: Window | None = None,
    ) -> Hooks:
        """Validate `edits` for `batch` rows of `seq` tokens and turn them into hook functions for
        a pass over the columns `window` (default: all), skipping edits that miss it. No model work
        happens here. A per-row Replace vector must have `batch` rows; `rows` of a Clamp or an Add
        index the `batch` rows."""
        window = window or (0, seq)
        hooks: Hooks = {}

        def add(site: HookSite, fn: HookFn) -> None:
            hooks.setdefault(site, []).append(fn)

        for edit in edits:
            if isinstance(edit, Clamp):
                site, out = self._check_coder(edit.coder)
                if not 0 <= edit.latent < edit.coder.d_sae:
                    raise LatentIndexError(
                        f"latent {edit.latent} not in [0, {edit.coder.d_sae}) for {edit.coder.id}"
                    )
                if edit.mode not in ("set", "add", "scale"):
                    raise ConfigError(f"unknown Clamp mode {edit.mode!r}")
                self._check_positions(edit.positions, seq, "Clamp")
                rows = self._rows(edit.rows, batch, "Clamp")
                pos = in_window(edit.positions, seq, window)
                if pos is not None:
                    read, write = clamp_fns(edit, pos, same=site == out, rows=rows)
                    add(site, read)
                    if write is not None:
                        add(out, write)
            elif isinstance(edit, Add):
                site = self.site(edit.hook)
                vec = self._vector(edit.direction, self.width(site), "Add direction")
                self._check_positions(edit.positions, seq, "Add")
                rows = self._rows(edit.rows, batch, "Add")
                pos = in_window(edit.positions, seq, window)
                if pos is not None:
                    add(site, add_fn(vec * edit.scale, pos, rows))
            elif isinstance(edit, Replace):
                if not 0 <= edit.layer < self.n_layers:
                    raise ConfigError(f"Replace layer {edit.layer} not in [0, {self.n_layers})")
                vec = self._replace_vector(edit.vector, batch)
                self._check_positions(edit.positions, seq, "Replace")
                pos = in_window(edit.positions, seq, window)
                if pos is not None:
                    add(self.site(f"blocks.{edit.layer}.hook_resid_pre"), replace_fn(vec, pos))
            else:
                raise ConfigError(f"unknown edit {edit!r}")
        return hooks

    # --- KV caching ------------------------------------------------------------------------------

    caching: bool = False  # True where the subclass implements the three methods below
    # True where `_forward` also takes `attention_mask=` and `position_ids=` (see the module doc)
    left_padding: bool = False

    def _new_cache(self, batch: int) -> Any:
        """An empty KV cache for `batch` rows."""
        raise NotImplementedError

    def _repeat_cache(self, cache: Any, n: int) -> Any:
        """A new cache with each row of `cache` repeated `n` times (`cache` is left as it was)."""
        raise NotImplementedError

    def _run(
        self,
        ids: torch.Tensor,
        hooks: Hooks,
        stop_layer: int | None,
        cache: Any = None,
        padding: LeftPadding | None = None,
        lo: int = 0,
    ) -> torch.Tensor | None:
        """One pass over the columns `[lo, lo + ids.shape[1])`, continuing `cache` when given;
        with `padding`, the left-padded batch's attention mask and position ids go along."""
        if cache is None:
            assert padding is None, "a left-padded pass always keeps its KV cache"
            return self._forward(ids, hooks, stop_layer)
        if padding is None:
            return self._forward(ids, hooks, stop_layer, cache=cache)  # type: ignore[call-arg]
        hi = lo + ids.shape[1]
        return self._forward(  # type: ignore[call-arg]
            ids,
            hooks,
            stop_layer,
            cache=cache,
            attention_mask=padding.mask(hi),
            position_ids=padding.positions(lo, hi),
        )

    def _shared_prefix(self, ids: torch.Tensor, edits: Sequence[Edit]) -> int:
        """How many leading columns every row computes identically: the tokens agree and no
        per-row Replace, nor a Clamp or Add on some rows only, touches them (other edits act on
        every row alike). 0 when not worth it."""
        batch, seq = ids.shape
        if not self.caching or batch < 2:
            return 0
        differs = (ids != ids[:1]).any(dim=0).nonzero()
        cut = int(differs[0]) if len(differs) else seq
        for edit in edits:
            if isinstance(edit, Replace) and np.ndim(edit.vector) == 2:
                cut = min(cut, *(p % seq for p in edit.positions))
            elif isinstance(edit, Clamp | Add) and self._rows(edit.rows, batch, "edit"):
                cut = min(cut, *(p % seq for p in edit.positions or (0,)))
        return min(cut, seq - 1)

    def _pass(
        self,
        ids: torch.Tensor,
        edits: Sequence[Edit],
        *,
        layers: Sequence[int] = (),
        positions: Sequence[int] | None = None,
        keep_cache: bool = False,
        padding: LeftPadding | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], Any]:
        """One edited pass: the logits and the residual entering each block in `layers` (after
        edits there), at `positions` (None: all), and the KV cache after it when `keep_cache`.

        With a caching backend, a prefix the rows share runs once on one row and its cache is
        repeated for the rest; logits at a few positions come from the last block's output, so
        the unembedding runs on those positions only. `padding` (a left-padded batch, with
        `keep_cache`): the pass takes its attention mask and position ids, and shares no prefix
        (equal ids can still differ in the mask: GPT-2's BOS is also its pad token)."""
        batch, seq = ids.shape
        self._edit_hooks(edits, seq, batch)  # validate before any model work
        for layer in layers:
            if not 0 <= layer < self.n_layers:
                raise ConfigError(f"probe layer {layer} not in [0, {self.n_layers})")
        if positions is not None:
            self._check_positions(tuple(positions), seq, "probe")
        cols = sorted({p % seq for p in positions} if positions is not None else range(seq))
        prefix = 0 if padding is not None else self._shared_prefix(ids, edits)
        cache = self._new_cache(1 if prefix else batch) if (prefix or keep_cache) else None
        final = self.site(f"blocks.{self.n_layers - 1}.hook_resid_post")
        logit_parts: list[torch.Tensor] = []
        resid_parts: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        for lo, hi in [(0, prefix), (prefix, seq)] if prefix else [(0, seq)]:
            rows = ids[:1, lo:hi] if hi == prefix else ids[:, lo:hi]
            if lo == prefix and prefix:
                cache = self._repeat_cache(cache, batch)
            want = [c - lo for c in cols if lo <= c < hi]
            hooks = self._edit_hooks(edits, seq, batch, window=(lo, hi))
            captured: dict[str | int, torch.Tensor] = {}
            for layer in layers:
                site = self.site(f"blocks.{layer}.hook_resid_pre")
                hooks.setdefault(site, []).append(store_fn(captured, layer, want))
            few = positions is not None and len(want) < hi - lo
            if few:  # unembed only the wanted positions
                hooks.setdefault(final, []).append(store_fn(captured, "final", want))
                self._run(rows, hooks, self.n_layers, cache, padding, lo)
                logits = self._unembed(captured["final"])
            else:
                out = self._run(rows, hooks, None, cache, padding, lo)
                assert out is not None
                logits = out  # every column of the window is wanted
            missing = set(layers) - set(captured)
            if missing:
                raise RuntimeError(
                    f"{self.name}: probe hooks at layers {sorted(missing)} never ran"
                )
            expand = batch // rows.shape[0]  # the shared prefix ran on one row
            logit_parts.append(logits.expand(batch, *logits.shape[1:]) if expand > 1 else logits)
            for layer in layers:
                x = captured[layer]
                resid_parts[layer].append(x.expand(batch, *x.shape[1:]) if expand > 1 else x)

        def join(parts: list[torch.Tensor]) -> torch.Tensor:
            x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
            if positions is None:
                return x
            return x[:, [cols.index(p % seq) for p in positions]]  # the caller's order

        resid = {layer: join(parts) for layer, parts in resid_parts.items()}
        return join(logit_parts).detach(), resid, cache

    # --- the protocol ----------------------------------------------------------------------------

    @torch.no_grad()
    def latent_acts(
        self,
        tokens: TokenBatch,
        coders: Sequence[SparseCoder],
        *,
        latents: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, SparseActivations]:
        check_latent_request(coders, latents)
        sites = {c.id: self._check_coder(c)[0] for c in coders}
        subsets: dict[str, torch.Tensor | None] = {}
        for c in coders:
            subset = (latents or {}).get(c.id)
            if subset is None:
                subsets[c.id] = None
                continue
            idx = torch.as_tensor(list(subset), dtype=torch.long)
            subsets[c.id] = idx.to(self.device)
        ids = self._ids(tokens)
        mask = torch.as_tensor(tokens.mask, device=self.device)
        if self.bos_token_id is not None:
            bos_first = mask.clone()
            bos_first[:, 0] &= ids[:, 0] != self.bos_token_id
        else:
            bos_first = mask
        out: dict[str, SparseActivations] = {}
        hooks: Hooks = {}
        for c in coders:
            keep = bos_first if c.exclude_bos else mask
            hooks.setdefault(sites[c.id], []).append(capture_fn(c, keep, subsets[c.id], out))
        self._forward(ids, hooks, max(s.stop_layer for s in sites.values()))
        missing = {c.id for c in coders} - set(out)
        if missing:
            raise RuntimeError(f"{self.name}: hooks for {sorted(missing)} never ran")
        return {c.id: out[c.id] for c in coders}

    @torch.no_grad()
    def logits(self, tokens: TokenBatch, edits: Sequence[Edit] = ()) -> torch.Tensor:
        logits, _, _ = self._pass(self._ids(tokens), edits)
        return logits

    @torch.no_grad()
    def probe(
        self,
        tokens: TokenBatch,
        edits: Sequence[Edit] = (),
        *,
        layers: Sequence[int] = (),
        positions: Sequence[int] | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Final logits and the residual entering each block in `layers`, from one edited pass
        (captured after the edits at `blocks.L.hook_resid_pre`), at `positions` (None: all)."""
        logits, resid, _ = self._pass(self._ids(tokens), edits, layers=layers, positions=positions)
        return logits, resid

    def chat_prompt(self, messages: Sequence[Any], prefill: str = "") -> str | None:
        """`messages` (objects with `role` and `content`) in the tokenizer's chat template, with
        the assistant's answer opened and `prefill` appended; None when the tokenizer has no chat
        template. A leading BOS text is dropped: `tokenize` prepends BOS itself."""
        if not getattr(self.tokenizer, "chat_template", None):
            return None
        turns = [{"role": m.role, "content": m.content} for m in messages]
        text = str(
            self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        )
        bos = getattr(self.tokenizer, "bos_token", None)
        if bos and self.bos_token_id is not None and text.startswith(bos):
            text = text[len(bos) :]
        return text + prefill

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[str],
        edits: Sequence[Edit] = (),
        *,
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> list[str]:
        """Batched generation. Edits apply at every step; their positions count from the start of
        the prompt (negative positions are refused: the end moves as tokens are added); a Clamp or
        an Add with `rows` applies to those prompts only, in the cached decode too.

        A caching backend decodes with a KV cache (one new token per step): all prompts in one
        left-padded batch where it supports left padding (`left_padding`), else one batch per
        prompt length; so does a `Replace` at given positions on prompts of different lengths (it
        has no `rows`, so it cannot be moved past pads of different widths). A backend without a
        cache recomputes the whole right-padded context at each step."""
        if not prompts:
            return []
        self._check_generation(edits, temperature)
        rows = self.tokenize(prompts).rows()
        lengths = [len(r) for r in rows]
        if min(lengths) == 0:
            raise EmptyDatasetError("a prompt has no tokens")
        self._edit_hooks(edits, min(lengths), len(rows))  # validated before any model work
        pick = picker(temperature, seed)
        if not self.caching:
            new = self._generate_recompute(rows, edits, max_new_tokens, pick)
        elif len(set(lengths)) == 1:
            new = self._generate_cached(rows, edits, max_new_tokens, pick)
        elif self.left_padding and (shifted := self._padded_edits(rows, edits)) is not None:
            new = self._generate_padded(rows, shifted, max_new_tokens, pick)
        else:
            new = self._generate_by_length(rows, edits, max_new_tokens, pick)
        return [self.decode(self._until_eos(ids)) for ids in new]

    def _generate_cached(
        self, rows: list[list[int]], edits: Sequence[Edit], max_new_tokens: int, pick: Picker
    ) -> list[list[int]]:
        """Rows of one length: the prompt pass keeps its KV cache, then one token per step."""
        ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        logits, _, cache = self._pass(ids, edits, positions=[ids.shape[1] - 1], keep_cache=True)
        return self._decode(
            logits[:, -1], cache, edits, (len(ids), ids.shape[1]), max_new_tokens, pick
        )

    @staticmethod
    def _padded_edits(rows: list[list[int]], edits: Sequence[Edit]) -> list[Edit] | None:
        """`edits` in the columns of `rows` left-padded to one width; None when they cannot be
        moved there (`shift_edits`)."""
        width = max(len(r) for r in rows)
        return shift_edits(edits, [width - len(r) for r in rows])

    def _generate_padded(
        self, rows: list[list[int]], shifted: list[Edit], max_new_tokens: int, pick: Picker
    ) -> list[list[int]]:
        """Rows of different lengths in one left-padded cached batch (`shifted`: the edits moved
        past the pads by `_padded_edits`)."""
        ids, padding = left_pad(rows, self.pad_token_id, self.device)
        width = ids.shape[1]  # every row's last prompt token is in the last column
        logits, _, cache = self._pass(
            ids, shifted, positions=[width - 1], keep_cache=True, padding=padding
        )
        return self._decode(
            logits[:, -1], cache, shifted, (len(ids), width), max_new_tokens, pick, padding
        )

    def _generate_by_length(
        self, rows: list[list[int]], edits: Sequence[Edit], max_new_tokens: int, pick: Picker
    ) -> list[list[int]]:
        """One cached batch per prompt length (a backend without left padding); a Clamp or Add
        with `rows` keeps its rows, renumbered inside each batch."""
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(len(row), []).append(i)
        out: dict[int, list[int]] = {}
        for members in groups.values():
            mine = _edits_for_rows(edits, members)
            made = self._generate_cached([rows[i] for i in members], mine, max_new_tokens, pick)
            out.update(zip(members, made, strict=True))
        return [out[i] for i in range(len(rows))]

    @torch.no_grad()
    def probe_and_generate(
        self,
        tokens: TokenBatch,
        edits: Sequence[Edit] = (),
        *,
        layers: Sequence[int] = (),
        max_new_tokens: int = 32,
        temperature: float = 0.0,
        seed: int | None = None,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], list[list[int]]]:
        """`probe` at each row's last token and each row's continuation (token ids, up to the
        end-of-text token), from the same edited pass: a caching backend decodes from that pass's
        KV cache. Rows of different lengths (a padded `tokens`) run as one batch per length, in
        which edit positions count from each row's start; edits as in `generate`."""
        self._check_generation(edits, temperature)
        pick = picker(temperature, seed)
        if not np.asarray(tokens.mask).all():
            return self._probe_and_generate_by_length(
                tokens.rows(), edits, layers, max_new_tokens, pick
            )
        return self._probe_and_generate(self._ids(tokens), edits, layers, max_new_tokens, pick)

    def _probe_and_generate_by_length(
        self,
        rows: list[list[int]],
        edits: Sequence[Edit],
        layers: Sequence[int],
        max_new_tokens: int,
        pick: Picker,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], list[list[int]]]:
        """`probe_and_generate` over rows of different lengths: one batch per length, results
        put back in the rows' order."""
        if min((len(r) for r in rows), default=0) == 0:
            raise EmptyDatasetError("a row has no tokens")
        groups: dict[int, list[int]] = {}
        for i, row in enumerate(rows):
            groups.setdefault(len(row), []).append(i)
        order: list[int] = []
        logits: list[torch.Tensor] = []
        resid: dict[int, list[torch.Tensor]] = {layer: [] for layer in layers}
        new: list[list[int]] = []
        for members in groups.values():
            ids = torch.tensor([rows[i] for i in members], dtype=torch.long, device=self.device)
            mine = _edits_for_rows(edits, members)
            out = self._probe_and_generate(ids, mine, layers, max_new_tokens, pick)
            order += members
            logits.append(out[0])
            for layer in layers:
                resid[layer].append(out[1][layer])
            new += out[2]
        back = torch.as_tensor(np.argsort(order), device=self.device)
        return (
            torch.cat(logits)[back],
            {layer: torch.cat(parts)[back] for layer, parts in resid.items()},
            [new[i] for i in back.tolist()],
        )

    def _probe_and_generate(
        self,
        ids: torch.Tensor,
        edits: Sequence[Edit],
        layers: Sequence[int],
        max_new_tokens: int,
        pick: Picker,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor], list[list[int]]]:
        """`probe_and_generate` over rows of one length."""
        length = ids.shape[1]
        logits, resid, cache = self._pass(
            ids, edits, layers=layers, positions=[length - 1], keep_cache=self.caching
        )
        if self.caching:
            new = self._decode(
                logits[:, -1], cache, edits, (len(ids), ids.shape[1]), max_new_tokens, pick
            )
        else:
            new = self._generate_recompute(ids.tolist(), edits, max_new_tokens, pick)
        return (
            logits[:, -1],
            {k: v[:, -1] for k, v in resid.items()},
            [self._until_eos(row) for row in new],
        )

    @staticmethod
    def _check_generation(edits: Sequence[Edit], temperature: float) -> None:
        if temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        for edit in edits:
            if any(p < 0 for p in getattr(edit, "positions", None) or ()):
                raise ConfigError(
                    f"generate: edit positions count from the prompt's start; got {edit.positions}"
                )

    def _until_eos(self, ids: list[int]) -> list[int]:
        return until_eos(ids, self.eos_token_id)

    def _decode(
        self,
        last: torch.Tensor,
        cache: Any,
        edits: Sequence[Edit],
        shape: tuple[int, int],
        max_new_tokens: int,
        pick: Picker,
        padding: LeftPadding | None = None,
    ) -> list[list[int]]:
        """Continue `shape` = (rows, prompt length) rows from the logits of their last token and
        the KV cache after the prompt, one new token per step (`padding`: of a left-padded
        batch, whose mask and positions each step extends)."""
        batch, length = shape

        def step(new: torch.Tensor, i: int) -> torch.Tensor:
            column = length + i
            hooks = self._edit_hooks(edits, length, batch, window=(column, column + 1))
            out = self._run(new.to(self.device), hooks, None, cache, padding, column)
            assert out is not None
            return out

        return decode_cached(
            last, step, max_new_tokens=max_new_tokens, pick=pick, eos_token_id=self.eos_token_id
        )

    def _generate_recompute(
        self, rows: list[list[int]], edits: Sequence[Edit], max_new_tokens: int, pick: Picker
    ) -> list[list[int]]:
        def forward(ids: torch.Tensor) -> torch.Tensor:
            seq = ids.shape[1]
            logits = self._forward(
                ids.to(self.device), self._edit_hooks(edits, seq, len(rows)), None
            )
            assert logits is not None
            return logits

        return decode_recompute(
            rows,
            forward,
            pad_token_id=self.pad_token_id,
            max_new_tokens=max_new_tokens,
            pick=pick,
        )

    @torch.no_grad()
    def unembed(self, direction: Any) -> torch.Tensor:
        vec = self._vector(direction, self.d_model, "direction")
        return self._unembed(vec[None, None, :])[0, 0].detach()

    @torch.no_grad()
    def fingerprint(self) -> str:
        """`Fingerprinted`: a digest of the model's weights (`saexplain.fingerprint`), so a run
        notices weights edited in place. Subclasses keep their model as an attribute: every
        torch module the backend holds is included."""
        arrays: dict[str, Any] = {}
        for attr, value in sorted(vars(self).items()):
            if isinstance(value, torch.nn.Module):
                arrays.update({f"{attr}.{k}": v for k, v in value.state_dict().items()})
        return fingerprint_arrays(arrays)


def _edits_for_rows(edits: Sequence[Edit], members: Sequence[int]) -> list[Edit]:
    """`edits` for the batch of the rows `members` alone: a Clamp or Add with `rows` keeps those
    of its rows that are members (renumbered), and is dropped when none is; a per-row Replace
    vector keeps the members' rows."""
    index = {row: k for k, row in enumerate(members)}
    out: list[Edit] = []
    for edit in edits:
        if isinstance(edit, Clamp | Add) and edit.rows is not None:
            rows = tuple(index[r] for r in edit.rows if r in index)
            if rows:
                out.append(dataclasses.replace(edit, rows=rows))
        elif isinstance(edit, Replace) and np.ndim(edit.vector) == 2:
            vector = np.asarray(edit.vector) if not torch.is_tensor(edit.vector) else edit.vector
            out.append(dataclasses.replace(edit, vector=vector[list(members)]))
        else:
            out.append(edit)
    return out
