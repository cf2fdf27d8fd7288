"""Batch prices: what a provider's asynchronous batch API charges, as a fraction of its
interactive price (litellm's price table holds the interactive one).

Listed prices: OpenAI's Batch API and Anthropic's Message Batches API both charge 50% of the
interactive price for input and output tokens. A self-hosted OpenAI-compatible server (vLLM,
a litellm proxy) is priced by its owner: its factor is 1 (its calls usually cost $0 anyway).
"""

from __future__ import annotations

# litellm provider name -> batch price / interactive price
BATCH_PRICE_FACTORS: dict[str, float] = {
    "openai": 0.5,
    "azure": 0.5,
    "anthropic": 0.5,
    "hosted_vllm": 1.0,
    "litellm_proxy": 1.0,
}

# The providers whose batches saexplain can submit: litellm's OpenAI-format files and batches
# API (`litellm.acreate_file` / `acreate_batch` / `aretrieve_batch` / `afile_content`) covers
# them in the pinned litellm; Anthropic's batches cannot be created through it.
SUBMITTABLE = frozenset({"openai", "azure", "hosted_vllm", "litellm_proxy"})


def batch_price_factor(llm_provider: str) -> float | None:
    """The batch/interactive price ratio of a litellm provider name; None when saexplain
    cannot submit batches to it."""
    if llm_provider not in SUBMITTABLE:
        return None
    return BATCH_PRICE_FACTORS.get(llm_provider)
