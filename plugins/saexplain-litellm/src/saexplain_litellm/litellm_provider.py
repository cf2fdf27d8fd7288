"""A provider for any litellm model string (`gpt-4o-mini`, `anthropic/...`, `openrouter/...`,
`hosted_vllm/...`, `ollama/...`). Keys come from the environment the litellm way
(`OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, ...), or from `api_key=` / `api_key_env=` settings.

The provider makes one attempt per `complete` call; litellm's own retries are switched off.
Retries, the response cache, limits, the spend cap and accounting are saexplain's middleware
(`saexplain.providers.wrap_provider`), which the pipeline puts around every provider it builds.
litellm exceptions become saexplain's typed `ProviderError`s (retryable ones for rate limits,
server errors and timeouts), with secrets redacted from every message.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from typing import Any

import litellm
from litellm import exceptions as lx

from saexplain.errors import (
    ConfigError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderRateLimitError,
    ProviderServerError,
    ProviderTimeoutError,
)
from saexplain.models import ChatRequest, ChatResponse, Choice, TokenLogprob, Usage
from saexplain.protocols import BatchState, ProviderCapabilities
from saexplain.secrets import redact, register_secret

log = logging.getLogger(__name__)
litellm.suppress_debug_info = True
_unpriced_warned: set[str] = set()


def detect_capabilities(model: str) -> ProviderCapabilities:
    """What litellm knows `model` supports (logprobs, top_logprobs, n)."""
    try:
        params = litellm.get_supported_openai_params(model=model) or []
    except Exception:  # unknown provider prefix: assume the plain chat subset
        params = []
    return ProviderCapabilities(
        logprobs="logprobs" in params,
        max_top_logprobs=20 if "top_logprobs" in params else 0,
        max_n=8 if "n" in params else 1,
        # Anthropic continues a trailing assistant message
        prefill=_is_anthropic(model),
    )


def _is_anthropic(model: str) -> bool:
    """Whether litellm routes `model` to Anthropic's API (which continues a prefilled reply)."""
    try:
        _, provider, _, _ = litellm.get_llm_provider(model=model)
    except Exception:  # an unknown prefix: not Anthropic
        return False
    return str(provider) == "anthropic"


def missing_key_variables(model: str) -> list[str]:
    """Environment variables litellm needs for `model` and does not find."""
    try:
        found = litellm.validate_environment(model=model)
    except Exception:
        return []
    return [str(k) for k in found.get("missing_keys", [])]


def _short(error: BaseException, limit: int = 300) -> str:
    text = redact(str(error)).strip().replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def map_error(
    error: BaseException, model: str, *, key_env: str | None = None, has_key: bool = False
) -> ProviderError:
    """A typed, redacted saexplain error for a litellm / openai / asyncio exception."""
    detail = _short(error)
    if isinstance(error, lx.AuthenticationError | lx.PermissionDeniedError):
        missing = [] if has_key else ([key_env] if key_env else missing_key_variables(model))
        if key_env and not os.environ.get(key_env) and not has_key:
            missing = [key_env]
        if missing:
            hint = f"set {' and '.join(missing)} in the environment (missing)"
        else:
            hint = "the API key was rejected; check its value and the model's access rights"
        return ProviderAuthError(
            f"authentication failed for model {model!r}: {hint}. Provider said: {detail}",
            model=model,
        )
    if isinstance(error, lx.RateLimitError):
        out: ProviderError = ProviderRateLimitError(f"rate limited: {detail}", model=model)
        retry_after = _retry_after(error)
        if retry_after is not None:
            out.retry_after = retry_after  # type: ignore[attr-defined]
        return out
    if isinstance(error, lx.Timeout | asyncio.TimeoutError | TimeoutError):
        return ProviderTimeoutError(f"timed out: {detail}", model=model)
    if isinstance(
        error,
        lx.BadRequestError
        | lx.NotFoundError
        | lx.UnprocessableEntityError
        | lx.UnsupportedParamsError,
    ):
        return ProviderBadRequestError(f"request rejected: {detail}", model=model)
    if isinstance(
        error,
        lx.InternalServerError
        | lx.ServiceUnavailableError
        | lx.BadGatewayError
        | lx.APIConnectionError,
    ):
        return ProviderServerError(f"server error: {detail}", model=model)
    status = getattr(error, "status_code", None)
    if isinstance(status, int):
        if status == 429:
            return ProviderRateLimitError(f"rate limited: {detail}", model=model)
        if status == 408:
            return ProviderTimeoutError(f"timed out: {detail}", model=model)
        if status in (401, 403):
            return map_error(
                lx.AuthenticationError(message=detail, llm_provider="", model=model),
                model,
                key_env=key_env,
                has_key=has_key,
            )
        if status >= 500:
            return ProviderServerError(f"server error ({status}): {detail}", model=model)
        if 400 <= status < 500:
            return ProviderBadRequestError(f"request rejected ({status}): {detail}", model=model)
    return ProviderError(f"{type(error).__name__}: {detail}", model=model)


def _retry_after(error: BaseException) -> float | None:
    headers = getattr(error, "headers", None) or {}
    response = getattr(error, "response", None)
    if not headers and response is not None:
        headers = getattr(response, "headers", None) or {}
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def _get(obj: Any, name: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _logprobs(choice: Any) -> tuple[TokenLogprob, ...] | None:
    raw = _get(choice, "logprobs")
    content = _get(raw, "content") if raw is not None else None
    if not content:
        return None
    out = []
    for item in content:
        top = tuple(
            (str(_get(alt, "token")), float(_get(alt, "logprob")))
            for alt in (_get(item, "top_logprobs") or ())
        )
        out.append(
            TokenLogprob(
                token=str(_get(item, "token")), logprob=float(_get(item, "logprob")), top=top
            )
        )
    return tuple(out)


def to_chat_response(model: str, response: Any, cost_usd: float) -> ChatResponse:
    """saexplain's `ChatResponse` from a litellm `ModelResponse`."""
    choices = tuple(
        Choice(
            text=str(_get(_get(c, "message"), "content") or ""),
            logprobs=_logprobs(c),
            finish_reason=_get(c, "finish_reason"),
        )
        for c in response.choices
    )
    usage = _get(response, "usage")
    return ChatResponse(
        model=str(_get(response, "model") or model),
        choices=choices,
        usage=Usage(
            prompt_tokens=int(_get(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(_get(usage, "completion_tokens", 0) or 0),
            cost_usd=max(0.0, cost_usd),
            calls=1,
        ),
    )


def response_cost(model: str, response: Any) -> float:
    """The call's cost from litellm's (offline) price table; 0.0, once warned, when unpriced."""
    hidden = getattr(response, "_hidden_params", None) or {}
    cost = hidden.get("response_cost")
    if cost is None and model in _unpriced_warned:
        return 0.0  # known to be unpriced: skip litellm's (slow, failing) price lookups
    if cost is None:
        try:
            cost = litellm.completion_cost(completion_response=response, model=model)
        except Exception:
            cost = None
    if cost is None:
        if model not in _unpriced_warned:
            _unpriced_warned.add(model)
            log.warning("no price known for %s: its calls are accounted at $0", model)
        return 0.0
    return float(cost)


class LiteLLMProvider:
    """Chat completions through `litellm.acompletion`, one attempt per call (see the module
    docstring).

    Settings: `api_base`, `api_key` (never cached or logged), `api_key_env` (read the key from
    this variable), `timeout` (seconds per attempt), `logprobs` / `max_top_logprobs` / `max_n`
    (override the detected capabilities, e.g. for a vLLM server), `params` (extra keyword
    arguments for litellm, e.g. `custom_llm_provider`), `mock_response` (litellm's offline mock,
    for tests and dry runs), `direct_http` (post to an OpenAI-compatible `api_base` directly).
    """

    name = "litellm"

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 120.0,
        logprobs: bool | None = None,
        max_top_logprobs: int | None = None,
        max_n: int | None = None,
        params: Mapping[str, Any] | None = None,
        mock_response: Any = None,
        direct_http: bool = False,
    ) -> None:
        if direct_http and not api_base:
            raise ValueError("direct_http needs api_base (an OpenAI-compatible server)")
        caps = detect_capabilities(model)
        caps = ProviderCapabilities(
            logprobs=caps.logprobs if logprobs is None else bool(logprobs),
            max_top_logprobs=(
                max_top_logprobs
                if max_top_logprobs is not None
                else (caps.max_top_logprobs or (20 if logprobs else 0))
            ),
            max_n=caps.max_n if max_n is None else int(max_n),
            prefill=caps.prefill,
        )
        self.model = model
        self.capabilities = caps
        register_secret(api_key)
        self.api_base = api_base
        self._api_key = api_key
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.params = dict(params or {})
        self.mock_response = mock_response
        self.direct_http = direct_http
        self._session: Any = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._prices: tuple[float, float] | None = None

    def check_ready(self) -> None:
        """Raise before any work when litellm cannot route the model string, or when its API
        key is missing from the environment."""
        if not self.direct_http:  # a direct POST to api_base needs no routing
            self._check_routing()
        if self._api_key or self.mock_response is not None:
            return
        if self.api_key_env:
            missing = [] if os.environ.get(self.api_key_env) else [self.api_key_env]
        elif self.api_base:
            return  # a self-hosted server (vLLM, Ollama) often needs no key
        else:
            missing = missing_key_variables(self.model)
        if missing:
            raise ProviderAuthError(
                f"model {self.model!r} needs {' and '.join(missing)} in the environment "
                "(or api_key / api_key_env in the provider settings)",
                model=self.model,
            )

    def _check_routing(self) -> None:
        """A model string litellm cannot route would fail every call of the run: fail now."""
        try:
            litellm.get_llm_provider(
                model=self.model,
                custom_llm_provider=self.params.get("custom_llm_provider"),
                api_base=self.api_base,
            )
        except Exception as error:  # litellm's BadRequestError, with a long message
            raise ConfigError(
                f"litellm cannot route the model {self.model!r}: name its provider in the model "
                f"string (e.g. 'openai/{self.model}' or 'hosted_vllm/{self.model}') or set "
                f"params.custom_llm_provider (litellm: {_short(error, 120)})"
            ) from None

    def estimate_cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """US dollars for that many tokens, from litellm's price table; None if unknown."""
        from saexplain_litellm.costs import price_per_token

        prices = price_per_token(self.model)
        if prices is None:
            return None
        return prompt_tokens * prices[0] + completion_tokens * prices[1]

    def _key(self) -> str | None:
        if self._api_key:
            return self._api_key
        if self.api_key_env:
            value = os.environ.get(self.api_key_env)
            register_secret(value)
            return value
        return None

    def litellm_kwargs(self, request: ChatRequest) -> dict[str, Any]:
        """The keyword arguments of `litellm.acompletion` for `request` (without the key)."""
        messages = [m.model_dump() for m in request.messages]
        if request.prefill is not None:
            # Anthropic's API continues a trailing assistant message (its "prefill"); other chat
            # APIs answer it as a finished turn, so they are refused in `complete`
            messages.append({"role": "assistant", "content": request.prefill})
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "timeout": self.timeout,
            "num_retries": 0,
            "max_retries": 0,
            "drop_params": True,
        }
        if request.n > 1:
            kwargs["n"] = request.n
        if request.logprobs:
            kwargs["logprobs"] = True
            if request.top_logprobs:
                kwargs["top_logprobs"] = request.top_logprobs
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.seed is not None:
            kwargs["seed"] = request.seed
        if self.api_base:
            kwargs["api_base"] = self.api_base
        if self.mock_response is not None:
            kwargs["mock_response"] = self.mock_response
        kwargs.update(self.params)
        return kwargs

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """One attempt at `request`; failures are typed, redacted `ProviderError`s."""
        if request.score_text is not None:  # chat endpoints return no prompt log-probabilities
            raise ProviderBadRequestError(
                "this provider cannot score given text (no prompt logprobs); use the local "
                "provider or a scorer setting that does not need them",
                model=self.model,
            )
        if request.prefill is not None and not self.capabilities.prefill:
            raise ProviderBadRequestError(
                "this provider cannot continue a prefilled reply (ChatRequest.prefill); use the "
                "local provider, an Anthropic model, or answer='list'",
                model=self.model,
            )
        kwargs = self.litellm_kwargs(request)
        key = self._key()
        if key:
            kwargs["api_key"] = key
        if self.direct_http:
            return await self._call_direct(request, key)
        mapped: ProviderError | None = None
        try:
            response = await litellm.acompletion(**kwargs)
        except ProviderError:
            raise
        except Exception as error:
            mapped = map_error(
                error, self.model, key_env=self.api_key_env, has_key=bool(self._api_key)
            )
        if mapped is not None:
            # Raised outside the handler: the original (unredacted) exception is not chained.
            raise mapped
        return to_chat_response(self.model, response, response_cost(self.model, response))

    # --- direct OpenAI-compatible HTTP (opt-in fast path) ----------------------------------------

    async def _http(self) -> Any:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._session_loop is not loop or self._session.closed:
            _drop(self._session)  # one from an earlier event loop (a second `run_sync`)
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
            self._session_loop = loop
        return self._session

    async def aclose(self) -> None:
        """Close the direct-HTTP session (only used with `direct_http=True`); the pipeline calls
        this at the end of every run."""
        if self._session is None or self._session.closed:
            return
        if self._session_loop is asyncio.get_running_loop():
            await self._session.close()
        else:
            _drop(self._session)
        self._session = None

    async def _call_direct(self, request: ChatRequest, key: str | None) -> ChatResponse:
        """POST `{api_base}/chat/completions` ourselves: an OpenAI-compatible server (vLLM,
        llama.cpp, LM Studio) without litellm's per-call work. Same typed errors, same usage."""
        import aiohttp

        kwargs = self.litellm_kwargs(request)
        body = {k: v for k, v in kwargs.items() if k not in _NOT_IN_BODY}
        body["model"] = self.model.split("/", 1)[1] if "/" in self.model else self.model
        # `extra_headers` are HTTP headers (as litellm sends them), never part of the JSON body
        extra = body.pop("extra_headers", None) or {}
        headers = {str(k): str(v) for k, v in dict(extra).items()}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        url = f"{str(self.api_base).rstrip('/')}/chat/completions"
        mapped: ProviderError | None = None
        data: Any = None
        try:
            session = await self._http()
            async with session.post(url, json=body, headers=headers) as resp:
                if resp.status >= 400:
                    text = await resp.text()
                    mapped = _status_error(resp.status, text, self.model, self.api_key_env)
                else:
                    data = await resp.json(content_type=None)
        except TimeoutError:
            mapped = ProviderTimeoutError(f"timed out after {self.timeout}s", model=self.model)
        except aiohttp.ClientError as error:
            mapped = ProviderServerError(f"connection failed: {_short(error)}", model=self.model)
        except ValueError as error:  # a body cut short, or not JSON: a server fault, retried
            mapped = ProviderServerError(f"malformed reply: {_short(error)}", model=self.model)
        if mapped is not None:
            raise mapped
        if self._prices is None:
            from saexplain_litellm.costs import price_per_token

            self._prices = price_per_token(self.model) or (0.0, 0.0)
        try:
            return self._direct_response(data)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            mapped = ProviderServerError(f"malformed reply: {_short(error)}", model=self.model)
        raise mapped  # outside the handler: the validation error is not chained

    def _direct_response(self, data: Any) -> ChatResponse:
        """The reply as a `ChatResponse`; `ValueError`/`TypeError` when it is not one (no
        `choices`, a JSON list, non-numeric usage, ...)."""
        if not isinstance(data, Mapping) or not data.get("choices"):
            raise ValueError(f"the reply has no choices: {str(data)[:200]!r}")
        usage = data.get("usage") or {}
        prices = self._prices or (0.0, 0.0)
        cost = (
            int(usage.get("prompt_tokens", 0) or 0) * prices[0]
            + int(usage.get("completion_tokens", 0) or 0) * prices[1]
        )
        return to_chat_response(self.model, _Obj(data), cost)

    # --- the batch API (`BatchSubmitting`; the code is in saexplain_litellm.batch) -------------

    def batch_price_factor(self) -> float | None:
        """Batch price / interactive price; None when this model has no usable batch API."""
        from saexplain_litellm.batch import price_factor

        return price_factor(self)

    async def submit_batch(self, requests: Mapping[str, ChatRequest]) -> str:
        """Submit `requests` (by key) as one batch; its id."""
        from saexplain_litellm.batch import submit

        return await submit(self, requests)

    async def poll_batch(self, batch_id: str) -> BatchState:
        """The batch's state, with its answers once final."""
        from saexplain_litellm.batch import poll

        return await poll(self, batch_id)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r})"


def _drop(session: Any) -> None:
    """Close a session whose event loop is gone (or is another one) without awaiting it: it
    is marked closed and its connections are dropped, so nothing reports it as unclosed."""
    if session is None or session.closed:
        return
    connector = session.connector
    session.detach()
    if connector is not None:
        connector._close()  # the synchronous part of `close()`; its loop cannot await it


_NOT_IN_BODY = {"timeout", "num_retries", "max_retries", "drop_params", "api_base", "mock_response"}


class _Obj:
    """Attribute access over a decoded JSON response (for `to_chat_response`)."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.choices = data.get("choices") or []
        self.usage = data.get("usage") or {}
        self.model = data.get("model")


def _status_error(status: int, text: str, model: str, key_env: str | None) -> ProviderError:
    detail = redact(text.strip().replace("\n", " "))[:300]
    if status in (401, 403):
        hint = (
            f"set {key_env} in the environment"
            if key_env and not os.environ.get(key_env)
            else ("the API key was rejected; check its value and the model's access rights")
        )
        return ProviderAuthError(
            f"authentication failed for model {model!r}: {hint}. Server said: {detail}", model=model
        )
    if status == 429:
        return ProviderRateLimitError(f"rate limited: {detail}", model=model)
    if status == 408:
        return ProviderTimeoutError(f"timed out: {detail}", model=model)
    if status >= 500:
        return ProviderServerError(f"server error ({status}): {detail}", model=model)
    return ProviderBadRequestError(f"request rejected ({status}): {detail}", model=model)
