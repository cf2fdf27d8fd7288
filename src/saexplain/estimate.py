"""Token and cost estimate of a run, without calling an LLM.

The run's records are built for real (collecting activations into the run's store, which the
real run then reuses); a sample of latents goes through every explainer and scorer with a
counting provider that answers with a short canned text, so every prompt a run would send is
rendered and counted. Totals are extrapolated to the selected latents. Prices come from the
configured provider when it knows them (`CostEstimator`), tokens from its tokenizer when it has
one (`TokenCounter`), else about four characters per token.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from saexplain._async import run_sync
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    LatentRecord,
    RunConfig,
    TokenLogprob,
    Usage,
)
from saexplain.protocols import (
    BatchSubmitting,
    CostEstimator,
    Provider,
    ProviderCapabilities,
    TokenCounter,
)

CANNED_ANSWER = "Explanation: the word mentioned in a short placeholder description"


def _unwrapped(provider: Provider) -> object:
    """The provider under the pipeline's middleware layers. The layers forward other attributes
    dynamically, which `isinstance` against a capability protocol does not see on Python 3.12+."""
    from saexplain.providers.layers import ProviderLayer

    return provider.innermost if isinstance(provider, ProviderLayer) else provider


@dataclass
class _Counts:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class CountingProvider:
    """Answers every request with a canned text and counts what it would have cost."""

    real: Provider
    name: str = "counting"
    counts: dict[str, _Counts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.model = self.real.model
        caps = self.real.capabilities
        self.capabilities = ProviderCapabilities(
            logprobs=False,
            max_n=caps.max_n,
            prompt_logprobs=caps.prompt_logprobs,
            prefill=caps.prefill,
        )

    def _count(self, text: str) -> int:
        counter = _unwrapped(self.real)
        if isinstance(counter, TokenCounter):
            return int(counter.count_tokens(text))
        return max(1, len(text) // 4)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        from saexplain.providers.build import current_method

        method = current_method.get() or "?"
        c = self.counts.setdefault(method, _Counts())
        prompt = sum(self._count(m.content) for m in request.messages)
        completion = self._count(CANNED_ANSWER) * request.n
        scored = None
        if request.score_text is not None:  # scoring given text: it is read, nothing is written
            prompt += self._count(request.score_text)
            completion = 0
            scored = (TokenLogprob(token=request.score_text, logprob=-1.0),)
        c.calls += 1
        c.prompt_tokens += prompt
        c.completion_tokens += completion
        return ChatResponse(
            scored=scored,
            model=self.model,
            choices=tuple(Choice(text=CANNED_ANSWER) for _ in range(request.n)),
            usage=Usage(prompt_tokens=prompt, completion_tokens=completion, calls=1),
        )


def spread_over_coders(records: Sequence[LatentRecord], n: int) -> list[LatentRecord]:
    """`n` records taken in turn from each coder's (in run order), so a run over several coders
    is estimated from all of them, not from the first coder's latents alone."""
    by_coder: dict[str, list[LatentRecord]] = {}
    for r in records:
        by_coder.setdefault(r.latent.coder_id, []).append(r)
    queues = list(by_coder.values())
    sample: list[LatentRecord] = []
    for i in range(max((len(q) for q in queues), default=0)):
        sample.extend(q[i] for q in queues if i < len(q))
    return sample[:n]


def estimate(config: RunConfig, *, n_latents: int = 5, progress: bool = True) -> dict[str, Any]:
    """Tokens and cost per method and in total for the latents `config` selects."""
    from saexplain.pipeline import (
        bare_records,
        build_run_records,
        collect_store,
        explain_and_score,
        prepare,
    )
    from saexplain.rundir import RunDir

    p = prepare(config, check_ready=False)  # no LLM is called, so no API key is needed
    real = dict(p.providers)
    counting = {role: CountingProvider(prov) for role, prov in real.items()}
    store = collect_store(p, progress=progress) if p.collects else None
    records = (
        build_run_records(p, store, progress=progress) if store is not None else bare_records(p)
    )
    sample = spread_over_coders(records, max(1, n_latents))
    with tempfile.TemporaryDirectory(prefix="saexplain-estimate-") as tmp:
        p.run_dir = RunDir(tmp, fsync=False)  # explanations of the dry run stay out of the run
        p.providers = dict(counting)
        run_sync(explain_and_score(p, sample, store, progress=False))
    factor = len(records) / max(1, len(sample))
    methods: dict[str, dict[str, float | None]] = {}
    for role, cp in counting.items():
        provider = _unwrapped(real[role])
        pricer = provider if isinstance(provider, CostEstimator) else None
        # the price through the provider's batch API (None: it has none)
        batch = provider.batch_price_factor() if isinstance(provider, BatchSubmitting) else None
        for method, c in cp.counts.items():
            entry = methods.setdefault(
                method, {"calls": 0.0, "prompt_tokens": 0.0, "completion_tokens": 0.0}
            )
            entry["calls"] = (entry["calls"] or 0.0) + c.calls * factor
            entry["prompt_tokens"] = (entry["prompt_tokens"] or 0.0) + c.prompt_tokens * factor
            entry["completion_tokens"] = (entry["completion_tokens"] or 0.0) + (
                c.completion_tokens * factor
            )
            tokens = (c.prompt_tokens, c.completion_tokens)
            cost = None if pricer is None else pricer.estimate_cost(*tokens)
            prev = entry.get("cost_usd", 0.0)
            entry["cost_usd"] = (
                None if cost is None or prev is None else prev + float(cost) * factor
            )
            prev_batch = entry.get("batch_cost_usd", 0.0)
            entry["batch_cost_usd"] = (
                None
                if cost is None or batch is None or prev_batch is None
                else prev_batch + float(cost) * factor * batch
            )
    return {
        "latents": len(records),
        "sampled": len(sample),
        "methods": methods,
        "total": _total(methods),
        "providers": {r: f"{v.name}:{v.model}" for r, v in real.items()},
    }


def _total(methods: Mapping[str, Mapping[str, float | None]]) -> dict[str, float | None]:
    keys = ("calls", "prompt_tokens", "completion_tokens")
    out: dict[str, float | None] = {k: sum((m[k] or 0.0) for m in methods.values()) for k in keys}
    for key in ("cost_usd", "batch_cost_usd"):
        costs = [m.get(key) for m in methods.values()]
        out[key] = None if any(c is None for c in costs) else sum(c or 0.0 for c in costs)
    return out


def format_estimate(result: Mapping[str, Any]) -> str:
    lines = [
        f"estimate for {result['latents']} latents (from {result['sampled']} sampled)",
        f"{'method':<32} {'calls':>9} {'prompt tok':>12} {'compl. tok':>11} {'cost $':>10} "
        f"{'batch $':>10}",
    ]
    rows = {**result["methods"], "TOTAL": result["total"]}
    for name, m in rows.items():
        cost = "unknown" if m.get("cost_usd") is None else f"{m['cost_usd']:.4f}"
        # the same requests through the provider's discounted batch API (`batch: true`)
        batch = "n/a" if m.get("batch_cost_usd") is None else f"{m['batch_cost_usd']:.4f}"
        lines.append(
            f"{name:<32} {m['calls']:>9.0f} {m['prompt_tokens']:>12.0f} "
            f"{m['completion_tokens']:>11.0f} {cost:>10} {batch:>10}"
        )
    return "\n".join(lines)
