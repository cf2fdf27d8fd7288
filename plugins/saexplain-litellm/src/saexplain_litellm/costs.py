"""Cost lookups from litellm's offline price table, and dry-run estimates of a batch of requests.

Accounting itself (the ledger, usage tags, the spend cap) is saexplain's provider middleware
(`saexplain.providers`); this module only knows what litellm knows: prices and tokenizers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from saexplain.models import ChatRequest


@dataclass(frozen=True)
class CostEstimate:
    """What a batch of requests would cost at most, before making any call."""

    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int  # upper bound: max_tokens * n per request, unless given
    cost_usd: float
    priced: bool  # False when the model is not in litellm's price table (cost_usd is then 0)

    def __str__(self) -> str:
        price = f"${self.cost_usd:.4f}" if self.priced else "unknown price"
        return (
            f"{self.model}: {self.requests} requests, {self.prompt_tokens} prompt + "
            f"<= {self.completion_tokens} completion tokens, {price}"
        )


def price_per_token(model: str) -> tuple[float, float] | None:
    """(USD per prompt token, USD per completion token) from litellm's offline table, or None."""
    if model.startswith("local/"):
        return (0.0, 0.0)
    import litellm

    try:
        prompt, completion = litellm.cost_per_token(
            model=model, prompt_tokens=1, completion_tokens=1
        )
    except Exception:  # litellm raises a bare Exception for unmapped models
        return None
    return float(prompt), float(completion)


def count_prompt_tokens(model: str, request: ChatRequest) -> int:
    """Prompt tokens of `request` by litellm's tokenizer for `model` (else ~4 characters each)."""
    messages = [m.model_dump() for m in request.messages]
    try:
        import litellm

        return int(litellm.token_counter(model=model, messages=messages))
    except Exception:  # tokenizer unavailable offline: ~4 characters a token
        return sum(len(m.content) // 4 + 4 for m in request.messages)


def estimate_cost(
    model: str,
    requests: Iterable[ChatRequest],
    *,
    completion_tokens: int | None = None,
) -> CostEstimate:
    """Estimate, without calling anything, what `requests` cost on `model`.

    Prompt tokens are counted with litellm's tokenizer for the model; completion tokens are
    `completion_tokens` per choice when given, else each request's `max_tokens` (an upper bound).
    """
    n_req = n_prompt = n_completion = 0
    for request in requests:
        n_req += 1
        n_prompt += count_prompt_tokens(model, request)
        per_choice = request.max_tokens if completion_tokens is None else completion_tokens
        n_completion += per_choice * request.n
    prices = price_per_token(model)
    cost = 0.0 if prices is None else n_prompt * prices[0] + n_completion * prices[1]
    return CostEstimate(
        model=model,
        requests=n_req,
        prompt_tokens=n_prompt,
        completion_tokens=n_completion,
        cost_usd=cost,
        priced=prices is not None,
    )
