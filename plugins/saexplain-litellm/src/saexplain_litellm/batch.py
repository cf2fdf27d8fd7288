"""The batch API of `LiteLLMProvider` (`saexplain.protocols.BatchSubmitting`), through litellm's
files and batches functions: `litellm.acreate_file`, `acreate_batch`, `aretrieve_batch` and
`afile_content`, in OpenAI's batch format (OpenAI, Azure, and OpenAI-compatible servers such as
a litellm proxy: `openai/<model>` or `hosted_vllm/<model>` with `api_base`).

A batch is one JSONL file of requests, each `{"custom_id": <key>, "method": "POST", "url":
"/v1/chat/completions", "body": <the chat request>}`; its output file holds one line per
answered request (`{"custom_id", "response": {"status_code", "body"}, "error"}`) and its error
file one per refused one. Answers are priced at the batch price (`batch_prices`). saexplain's
`BatchLayer` (core) does the windowing, the run directory's `batches.jsonl`, polling and
falling back; this module only talks to the API.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import litellm

from saexplain.errors import ProviderError, ProviderServerError
from saexplain.models import ChatRequest, ChatResponse
from saexplain.protocols import BatchState
from saexplain_litellm.batch_prices import batch_price_factor

if TYPE_CHECKING:
    from saexplain_litellm.litellm_provider import LiteLLMProvider

log = logging.getLogger(__name__)

ENDPOINT = "/v1/chat/completions"
_PENDING = {"validating", "in_progress", "finalizing", "cancelling"}
_FINAL = {"completed", "failed", "expired", "cancelled"}
# litellm settings that are not part of a request body
_NOT_IN_BODY = {
    "timeout",
    "num_retries",
    "max_retries",
    "drop_params",
    "api_base",
    "api_key",
    "mock_response",
    "custom_llm_provider",
    "extra_headers",
}


def llm_provider(provider: LiteLLMProvider) -> str | None:
    """The litellm provider name `provider`'s model routes to (`openai`, `hosted_vllm`, ...)."""
    try:
        _, name, _, _ = litellm.get_llm_provider(
            model=provider.model,
            custom_llm_provider=provider.params.get("custom_llm_provider"),
            api_base=provider.api_base,
        )
    except Exception:  # an unroutable model string has no batch API either
        return None
    return str(name)


def price_factor(provider: LiteLLMProvider) -> float | None:
    """Batch price / interactive price for `provider`'s model; None without a usable batch API
    (litellm's offline mock included: it has no server to hold a batch)."""
    if provider.mock_response is not None:
        return None
    name = llm_provider(provider)
    return None if name is None else batch_price_factor(name)


def _credentials(provider: LiteLLMProvider) -> dict[str, Any]:
    name = llm_provider(provider)
    out: dict[str, Any] = {"custom_llm_provider": name or "openai"}
    if provider.api_base:
        out["api_base"] = provider.api_base
    key = provider._key()
    if key:
        out["api_key"] = key
    extra = provider.params.get("extra_headers")
    if extra:
        out["extra_headers"] = dict(extra)
    return out


def request_line(provider: LiteLLMProvider, key: str, request: ChatRequest) -> dict[str, Any]:
    """One line of a batch input file: `request` as the chat-completions body it would POST."""
    kwargs = provider.litellm_kwargs(request)
    body = {k: v for k, v in kwargs.items() if k not in _NOT_IN_BODY}
    # the server's own model name: the part after litellm's routing prefix
    body["model"] = provider.model.split("/", 1)[1] if "/" in provider.model else provider.model
    return {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": body}


async def submit(provider: LiteLLMProvider, requests: Mapping[str, ChatRequest]) -> str:
    """Upload `requests` as a batch input file and create the batch; its id."""
    from saexplain_litellm.litellm_provider import map_error

    for request in requests.values():
        if request.score_text is not None or request.prefill is not None:
            raise ProviderError(
                "batch APIs cannot score given text or continue a prefilled reply; turn `batch` "
                "off for this provider",
                model=provider.model,
            )
    lines = [json.dumps(request_line(provider, k, r)) for k, r in requests.items()]
    data = ("\n".join(lines) + "\n").encode("utf-8")
    creds = _credentials(provider)
    mapped: ProviderError | None = None
    try:
        uploaded = await litellm.acreate_file(
            file=("saexplain-batch.jsonl", data, "application/jsonl"), purpose="batch", **creds
        )
        batch = await litellm.acreate_batch(
            completion_window="24h",
            endpoint=ENDPOINT,
            input_file_id=str(uploaded.id),
            metadata={"client": "saexplain"},
            **creds,
        )
    except Exception as error:
        mapped = map_error(error, provider.model, key_env=provider.api_key_env)
    if mapped is not None:
        raise mapped  # outside the handler: the unredacted original is not chained
    return str(batch.id)


async def poll(provider: LiteLLMProvider, batch_id: str) -> BatchState:
    """The batch's state; once final, its answers (and item errors) by key."""
    from saexplain_litellm.litellm_provider import map_error

    creds = _credentials(provider)
    mapped: ProviderError | None = None
    try:
        batch = await litellm.aretrieve_batch(batch_id=batch_id, **creds)
        status = str(batch.status)
        texts = []
        if status in _FINAL:
            for file_id in (batch.output_file_id, batch.error_file_id):
                if file_id:
                    content = await litellm.afile_content(file_id=str(file_id), **creds)
                    texts.append(_bytes_of(content).decode("utf-8", errors="replace"))
    except Exception as error:
        mapped = map_error(error, provider.model, key_env=provider.api_key_env)
    if mapped is not None:
        raise mapped
    if status in _PENDING:
        return BatchState("pending")
    if status not in _FINAL:
        raise ProviderServerError(f"batch {batch_id}: unknown status {status!r}")
    results: dict[str, ChatResponse | Exception] = {}
    for text in texts:
        results.update(parse_output(provider, text))
    detail = _errors_of(batch)
    return BatchState(status, results, detail)  # type: ignore[arg-type]


def _bytes_of(content: Any) -> bytes:
    data = getattr(content, "content", content)
    if isinstance(data, bytes):
        return data
    return str(getattr(content, "text", data)).encode("utf-8")


def _errors_of(batch: Any) -> str:
    errors = getattr(batch, "errors", None)
    data = getattr(errors, "data", None) or (errors or {}).get("data") if errors else None
    if not data:
        return ""
    first = data[0]
    message = getattr(first, "message", None) or (
        first.get("message") if isinstance(first, Mapping) else None
    )
    return str(message or first)


def parse_output(provider: LiteLLMProvider, text: str) -> dict[str, ChatResponse | Exception]:
    """Answers by key from a batch output (or error) file. A line that is not JSON names no
    key and is skipped (logged); a line with a key and no usable answer is that key's error."""
    from saexplain_litellm.costs import price_per_token
    from saexplain_litellm.litellm_provider import _Obj, to_chat_response

    prices = price_per_token(provider.model) or (0.0, 0.0)
    factor = price_factor(provider) or 1.0
    out: dict[str, ChatResponse | Exception] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            key = str(item["custom_id"])
        except (ValueError, KeyError, TypeError) as error:
            log.warning("batch output line %d of %s is malformed: %s", n, provider.model, error)
            continue
        try:
            out[key] = _answer(provider, item, prices, factor, to_chat_response, _Obj)
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            out[key] = ProviderError(f"malformed batch answer: {error}", model=provider.model)
    return out


def _answer(
    provider: LiteLLMProvider,
    item: Mapping[str, Any],
    prices: tuple[float, float],
    factor: float,
    to_chat_response: Any,
    obj: Any,
) -> ChatResponse | Exception:
    error = item.get("error")
    response = item.get("response") or {}
    status = int(response.get("status_code") or 0) if isinstance(response, Mapping) else 0
    if error or status >= 400 or not isinstance(response, Mapping):
        message = error.get("message") if isinstance(error, Mapping) else error
        body = response.get("body") if isinstance(response, Mapping) else None
        if not message and isinstance(body, Mapping):
            message = (body.get("error") or {}).get("message")
        return ProviderError(
            f"the batch refused this request ({status or 'no status'}): {message}",
            model=provider.model,
        )
    body = response["body"]
    if not isinstance(body, Mapping) or not body.get("choices"):
        raise ValueError("the answer has no choices")
    usage = body.get("usage") or {}
    cost = factor * (
        int(usage.get("prompt_tokens", 0) or 0) * prices[0]
        + int(usage.get("completion_tokens", 0) or 0) * prices[1]
    )
    result: ChatResponse = to_chat_response(provider.model, obj(body), cost)
    return result
