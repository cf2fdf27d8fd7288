"""A scripted LLM provider: answers from a list or a function, failures on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from saexplain.errors import (
    ProviderServerError,
)
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    TokenLogprob,
    Usage,
)
from saexplain.protocols import (
    ProviderCapabilities,
)

Answer = str | ChatResponse | BaseException


def _count_tokens(text: str) -> int:
    return len(text.split())


class ScriptedProvider:
    """A provider whose answers come from a list (in order) or a function of the request.

    `fail_on(call_index, request)` may return an exception to raise instead of answering.
    `logprobs(request, text)` may return per-token logprobs; setting it advertises the capability.
    `prefill=True` advertises continuing a prefilled reply (`ChatRequest.prefill`); the answers
    are then what follows the prefill.
    """

    name = "scripted"

    def __init__(
        self,
        answers: Sequence[Answer] | Callable[[ChatRequest], Answer],
        *,
        model: str = "scripted",
        fail_on: Callable[[int, ChatRequest], BaseException | None] | None = None,
        logprobs: Callable[[ChatRequest, str], Sequence[TokenLogprob]] | None = None,
        cost_per_token: float = 0.0,
        latency_s: float = 0.0,
        prefill: bool = False,
    ) -> None:
        self.model = model
        self._answers = answers if callable(answers) else list(answers)
        self._fail_on = fail_on
        self._logprobs = logprobs
        self._cost = cost_per_token
        self._latency = latency_s
        self.capabilities = ProviderCapabilities(
            logprobs=logprobs is not None,
            max_top_logprobs=20 if logprobs else 0,
            max_n=8,
            prefill=prefill,
        )
        self.requests: list[ChatRequest] = []
        self.usage = Usage()

    def _answer(self, index: int, request: ChatRequest) -> Answer:
        if callable(self._answers):
            return self._answers(request)
        if index >= len(self._answers):
            raise AssertionError(f"ScriptedProvider has only {len(self._answers)} answers")
        return self._answers[index]

    async def complete(self, request: ChatRequest) -> ChatResponse:
        index = len(self.requests)
        self.requests.append(request)
        if self._latency:
            await asyncio.sleep(self._latency)
        if self._fail_on is not None and (exc := self._fail_on(index, request)) is not None:
            raise exc
        answer = self._answer(index, request)
        if isinstance(answer, BaseException):
            raise answer
        if isinstance(answer, ChatResponse):
            response = answer
        else:
            prompt_tokens = sum(_count_tokens(m.content) for m in request.messages)
            completion_tokens = _count_tokens(answer) * request.n
            lp = None
            if request.logprobs and self._logprobs is not None:
                lp = tuple(self._logprobs(request, answer))
            response = ChatResponse(
                model=self.model,
                choices=tuple(
                    Choice(text=answer, logprobs=lp, finish_reason="stop") for _ in range(request.n)
                ),
                usage=Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cost_usd=self._cost * (prompt_tokens + completion_tokens),
                    calls=1,
                ),
            )
        self.usage = self.usage + response.usage
        return response


def failing_every(
    k: int, error: Callable[[], BaseException] | None = None
) -> Callable[[int, ChatRequest], BaseException | None]:
    """A `fail_on` for ScriptedProvider that fails calls 0, k, 2k, ... with a server error."""
    make = error or (lambda: ProviderServerError("scripted outage", model="scripted"))
    return lambda index, _request: make() if index % k == 0 else None
