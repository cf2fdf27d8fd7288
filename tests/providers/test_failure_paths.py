"""Failure paths at the provider boundary (issue 14, "money and secrets"): hostile answers are
cleaned and never cached, the spend cap holds across reruns, secrets never reach anything the
run writes or prints, and retries and provider errors are recorded."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pipeline import toy

import saexplain
from saexplain.cli import main
from saexplain.errors import ProviderBadRequestError, ProviderRateLimitError
from saexplain.hookspecs import Register
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    ProviderSpec,
    Status,
    TokenLogprob,
    Usage,
)
from saexplain.protocols import ProviderCapabilities
from saexplain.providers import ResponseCache, discard_cached, wrap_provider
from saexplain.testing import fresh_plugin_manager

from .fakes import FakeLLM, req

PRICE = 0.001  # dollars per call
Answer = Callable[[ChatRequest], str]


class Double:
    """A provider plugin's provider: answers with `answer(request)` at `PRICE` a call, keeps
    every prompt it was sent, and echoes its settings' header values when `echo` is set."""

    name = "double"

    def __init__(self, model: str, answer: Answer, **settings: Any) -> None:
        self.model = model
        self.capabilities = ProviderCapabilities()
        self.answer = answer
        self.settings = settings
        self.prompts: list[str] = []
        self.closed = False

    async def complete(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[-1].content
        self.prompts.append(prompt)
        text = self.answer(request)
        return ChatResponse(
            model=self.model,
            choices=(Choice(text=text, logprobs=(TokenLogprob(token=text[:4], logprob=-0.1),)),),
            usage=Usage(prompt_tokens=10, completion_tokens=2, cost_usd=PRICE, calls=1),
        )

    async def aclose(self) -> None:
        self.closed = True


class DoublePlugin:
    """Registers `double`; the test sets `answer` and reads `built`."""

    def __init__(self) -> None:
        self.answer: Answer = toy.answer
        self.built: list[Double] = []

    @saexplain.hookimpl
    def register_providers(self, register: Register) -> None:
        def make(model: str, **settings: Any) -> Double:
            self.built.append(Double(model, lambda r: self.answer(r), **settings))
            return self.built[-1]

        register("double", make)


@pytest.fixture
def plugin() -> Iterator[DoublePlugin]:
    double = DoublePlugin()
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(toy.Stack(), name="toystack")
        pm.register_plugin(double, name="double-plugin")
        yield double


def explain(tmp_path: Path, name: str, settings: dict[str, Any] | None = None, **kw: Any) -> Any:
    backend, coder, texts = toy.world()
    return saexplain.explain(
        backend,
        coder,
        latents=list(toy.WORDS),
        explainers=kw.pop("explainers", ["toy"]),
        scorers=kw.pop("scorers", ["toyscore"]),
        provider=ProviderSpec(provider="double", model="d-1", settings=settings or {}),
        dataset=texts,
        n_tokens=32 * 200,
        context_length=32,
        records={
            "window": 16,
            "explanation": ["top:5"],
            "scoring": ["quantile:4"],
            "negatives": ["random:4"],
            "rare_below": 2,
        },
        output_dir=str(tmp_path),
        name=name,
        progress=False,
        **kw,
    )


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


# --- hostile answers ------------------------------------------------------------------------------


def surrogate_for_bird(request: ChatRequest) -> str:
    """The toy LLM, except that the explanation of the "bird" latent is a lone surrogate."""
    text = request.messages[-1].content
    return "\ud800" if text.startswith("EXPLAIN") and "<<bird>>" in text else toy.answer(request)


def test_a_lone_surrogate_answer_is_cleaned_and_never_cached(tmp_path, plugin):
    plugin.answer = surrogate_for_bird
    explain(tmp_path, "hostile")
    run = tmp_path / "hostile"
    assert (run / "report.html").is_file() and (run / "summary.json").is_file()
    explanations = {e["latent"]["index"]: e for e in lines(run / "explanations.jsonl")}
    scores = lines(run / "scores.jsonl")
    bird = next(i for i, w in toy.WORDS.items() if w == "bird")
    assert explanations[bird]["status"] == "ok" and explanations[bird]["text"] == "\ufffd"
    good = [s for s in scores if s["latent"]["index"] != bird]
    assert len(good) == len(toy.WORDS) - 1
    assert all(s["status"] == "ok" and s["value"] == 1.0 for s in good)

    # the server is fixed: a rerun (same cache) asks for the bad answer again, and only for it
    plugin.answer = toy.answer
    explain(tmp_path, "fixed")
    rerun = plugin.built[-1]
    assert [p for p in rerun.prompts if p.startswith("EXPLAIN")] == [
        p for p in plugin.built[0].prompts if p.startswith("EXPLAIN") and "<<bird>>" in p
    ]
    fixed = {e["latent"]["index"]: e for e in lines(tmp_path / "fixed" / "explanations.jsonl")}
    assert fixed[bird]["text"] == "the word bird"


async def test_unparsed_answers_are_dropped_from_the_cache(tmp_path):
    fake = FakeLLM(answer="no list here")
    provider = wrap_provider(fake, cache=ResponseCache(tmp_path))
    answer = await provider.complete(req())
    assert len(provider.cache) == 1
    assert discard_cached(answer) and len(provider.cache) == 0
    assert not discard_cached(answer)  # once only
    await provider.complete(req())
    assert fake.calls == 2  # asked again, not replayed
    hit = await provider.complete(req())
    assert fake.calls == 2 and discard_cached(hit)  # a cache hit can be dropped as well


def no_marker(request: ChatRequest) -> str:
    return "I cannot tell what this latent does."  # no "Explanation:" line for a cot explainer


def test_an_explanation_that_does_not_parse_is_asked_again_by_a_rerun(tmp_path, plugin):
    plugin.answer = no_marker
    maxact = [{"name": "maxact", "settings": {"cot": True}}]
    explain(tmp_path, "unparsed", explainers=maxact, scorers=[])
    explanations = lines(tmp_path / "unparsed" / "explanations.jsonl")
    assert {e["status"] for e in explanations} == {"failed"}
    first = len(plugin.built[0].prompts)
    explain(tmp_path, "again", explainers=maxact, scorers=[])
    assert len(plugin.built[-1].prompts) == first == len(toy.WORDS)  # none replayed


# --- the spend cap across reruns ------------------------------------------------------------------


CONFIG = """
model: toy
backend: toyfake
coder: "toyplanted:all"
dataset: {corpus}
n_tokens: 6400
context_length: 32
latents: {{indices: [1, 2, 3]}}
explainers: [toy]
scorers: [toyscore]
explainer_model: {{provider: double, model: priced, settings: {{cache: false}}}}
records: {{window: 16, explanation: ["top:5"], scoring: ["quantile:4"], negatives: ["random:4"]}}
concurrency: 1
spend_cap_usd: 0.0025
output_dir: {out}
name: capped
"""


def test_the_spend_cap_holds_across_reruns_with_one_warning_and_a_failing_exit(
    tmp_path, plugin, capsys, caplog
):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(toy.world()[2]))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CONFIG.format(corpus=corpus, out=tmp_path / "runs"))
    caplog.set_level(logging.WARNING)
    for attempt in range(3):
        caplog.clear()
        assert main(["run", str(cfg), "-q"]) == 2, attempt
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "spend_cap_usd=0.005" in err[0], err
        warnings = [r for r in caplog.records if "spend cap" in r.getMessage()]
        assert len(warnings) == 1, [r.getMessage() for r in warnings]
    calls = sum(len(p.prompts) for p in plugin.built)
    assert calls == 3  # one call in flight at a time: the 3rd crosses the cap, none after it
    spend = json.loads((tmp_path / "runs" / "capped" / "spend.json").read_text())
    assert spend["spent_usd"] == pytest.approx(calls * PRICE) and spend["calls"] == calls
    assert spend["spent_usd"] <= 0.0025 + PRICE  # at most the one call in flight overshoots
    summary = json.loads((tmp_path / "runs" / "capped" / "summary.json").read_text())
    assert summary["provider_calls"]["spent_usd"] == pytest.approx(calls * PRICE)
    results = [
        *lines(tmp_path / "runs" / "capped" / "explanations.jsonl"),
        *lines(tmp_path / "runs" / "capped" / "scores.jsonl"),
    ]
    assert all(r["status"] == "ok" or "SpendCapReached" in r["error"] for r in results)


# --- secrets --------------------------------------------------------------------------------------

HEADER_SECRET = "opaque-header-value-0042"
COOKIE_SECRET = "cookie-value-0043xyz"
BEARER_SECRET = "plain.bearer.token.0044"
SECRETS = (HEADER_SECRET, COOKIE_SECRET, BEARER_SECRET)


def echoing(request: ChatRequest) -> str:
    """A server that echoes the request headers into its answers (and its errors)."""
    echoed = f" (headers: x-api-key={HEADER_SECRET} sid={COOKIE_SECRET} {BEARER_SECRET})"
    if "<<house>>" in request.messages[-1].content:
        raise ProviderBadRequestError(f"bad header {HEADER_SECRET} / {COOKIE_SECRET}")
    return toy.answer(request) + echoed


def test_header_secrets_are_masked_everywhere_the_run_writes_or_prints(
    tmp_path, plugin, capsys, caplog
):
    plugin.answer = echoing
    settings = {
        "params": {
            "extra_headers": {
                "X-Api-Key": HEADER_SECRET,
                "Cookie": f"sid={COOKIE_SECRET}; theme=dark",
                "Proxy-Authorization": f"Bearer {BEARER_SECRET}",
            }
        },
        "max_attempts": 1,
    }
    caplog.set_level(logging.DEBUG)
    explain(tmp_path, "echo", settings, log_prompts=True)
    run = tmp_path / "echo"
    explanations = lines(run / "explanations.jsonl")
    assert any(e["status"] == "ok" and "***" in e["text"] for e in explanations)
    assert any(e["status"] == "error" for e in explanations)  # the echoing error is there too
    cache = Path(saexplain.providers.default_cache_dir())
    files = [p for root in (run, cache) for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in files) and any(cache in p.parents for p in files)
    captured = capsys.readouterr()
    texts = {str(p): p.read_bytes().decode("utf-8", "replace") for p in files}
    texts |= {"stdout": captured.out, "stderr": captured.err, "logs": caplog.text}
    for where, text in texts.items():
        for secret in SECRETS:
            assert secret not in text, (where, secret)


# --- retries and provider errors are recorded -----------------------------------------------------


def test_retries_and_provider_errors_are_in_the_summary_and_the_manifest(tmp_path, plugin):
    tried: set[str] = set()

    def flaky(request: ChatRequest) -> str:
        prompt = request.messages[-1].content
        if "<<house>>" in prompt:
            raise ProviderBadRequestError("no houses")
        if prompt not in tried:  # every first attempt is rate limited
            tried.add(prompt)
            raise ProviderRateLimitError("slow down")
        return toy.answer(request)

    plugin.answer = flaky
    fast = {"retry": {"base_delay": 0.001, "max_delay": 0.002}, "max_attempts": 3}
    explain(tmp_path, "counted", fast, scorers=[])
    run = tmp_path / "counted"
    manifest = json.loads((run / "manifest.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    for counts in (manifest["provider_calls"], summary["provider_calls"]):
        assert counts["retries"] == len(toy.WORDS) - 1  # each good prompt was retried once
        assert counts["errors"] == {"ProviderBadRequestError": 1}
        assert counts["failed_calls"] == 1 and counts["calls"] == len(toy.WORDS) - 1
    assert plugin.built[0].closed  # the run closes its providers at the end
    statuses = [e["status"] for e in lines(run / "explanations.jsonl")]
    assert statuses.count(Status.ERROR.value) == 1
