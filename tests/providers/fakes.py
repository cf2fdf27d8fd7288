"""A provider double for the middleware tests: one attempt per call, faults on demand."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence

from saexplain.models import ChatRequest, ChatResponse, Choice, Message, Usage
from saexplain.protocols import ProviderCapabilities

ErrorFactory = Callable[[str], BaseException]


def req(text: str = "Say yes.", **kw: object) -> ChatRequest:
    return ChatRequest(messages=(Message(role="user", content=text),), **kw)  # type: ignore[arg-type]


class FakeLLM:
    """Answers `answer` at `price` dollars a call; with probability `fault_rate` it raises one of
    `errors` instead (chosen by a seeded RNG). Counts calls and the most calls in flight."""

    name = "fake"

    def __init__(
        self,
        model: str = "fake-model",
        *,
        answer: str = "ok",
        price: float = 1e-4,
        errors: Sequence[ErrorFactory] = (),
        fault_rate: float = 0.0,
        seed: int = 0,
        delay: float = 0.0,
    ) -> None:
        self.model = model
        self.capabilities = ProviderCapabilities()
        self.answer, self.price = answer, price
        self.errors, self.fault_rate = list(errors), fault_rate
        self.rng = random.Random(seed)
        self.delay = delay
        self.calls = 0
        self.faults: dict[str, int] = {}
        self.in_flight = self.peak = 0

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.errors and self.rng.random() < self.fault_rate:
                error = self.rng.choice(self.errors)(self.model)
                self.faults[type(error).__name__] = self.faults.get(type(error).__name__, 0) + 1
                raise error
            return ChatResponse(
                model=self.model,
                choices=tuple(Choice(text=self.answer) for _ in range(request.n)),
                usage=Usage(prompt_tokens=10, completion_tokens=2, cost_usd=self.price, calls=1),
            )
        finally:
            self.in_flight -= 1
