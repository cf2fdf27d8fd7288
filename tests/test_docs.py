"""The code in docs/writing-a-plugin.md must run as written, and do what the page says.

Blocks are found by their first line: `# saexplain_toptoken.py`, `# in a notebook` and
`# test_toptoken.py` for the first plugin; `# saexplain_example.py, part k of 3` for the three
parts of the complete plugin (explainer, scorer, provider), executed together as one module.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import types
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import saexplain
from saexplain.errors import ConfigError
from saexplain.models import ChatRequest, Explanation, ProviderSpec, Score, Status
from saexplain.testing import (
    FakeBackend,
    PlantedValuesCoder,
    ScriptedProvider,
    fresh_plugin_manager,
    synthetic_corpus,
)

DOC = Path(__file__).resolve().parents[1] / "docs" / "writing-a-plugin.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.DOTALL)


def blocks_starting(marker: str) -> list[str]:
    """The python blocks whose first line starts with `marker`, in page order."""
    return [b for b in python_blocks() if b.startswith(marker)]


def block(marker: str) -> str:
    (found,) = blocks_starting(marker)
    return found


def test_worked_example_plugin_and_its_test_run(monkeypatch: pytest.MonkeyPatch) -> None:
    module_src = block("# saexplain_toptoken.py")
    notebook_src = block("# in a notebook")
    test_src = block("# test_toptoken.py")
    module = types.ModuleType("saexplain_toptoken")
    exec(compile(module_src, "saexplain_toptoken.py", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "saexplain_toptoken", module)

    namespace: dict[str, object] = {}
    exec(compile(test_src, "test_toptoken.py", "exec"), namespace)
    namespace["test_toptoken_finds_the_planted_word"]()  # type: ignore[operator]

    with fresh_plugin_manager(entry_points=[], builtins=(), environ={}) as manager:
        exec(compile(notebook_src, "notebook.py", "exec"), {})
        assert manager.explainers.get("toptoken").provenance.plugin == "saexplain_toptoken"


def test_worked_example_fails_when_no_token_dominates() -> None:
    module = types.ModuleType("m")
    exec(compile(block("# saexplain_toptoken.py"), "m.py", "exec"), module.__dict__)
    from saexplain.protocols import MethodContext
    from saexplain.testing import FakeCoder, make_record

    backend = FakeBackend()
    coder = FakeCoder.planted(backend, {1: " cat", 2: " dog"})
    # latent 1 only fires on cat; make a record whose examples peak on different words
    record = make_record(backend, coder, 1, ["cat", "a cat"])
    run_sync = saexplain.run_sync
    explanation = run_sync(module.TopTokenExplainer(min_share=0.5).explain(record, MethodContext()))
    assert explanation.status.value == "ok"
    empty = record.model_copy(update={"explanation_examples": ()})
    failed = run_sync(module.TopTokenExplainer().explain(empty, MethodContext()))
    assert failed.status.value == "failed" and failed.error == "no activating examples"


# --- the complete plugin: explainer, scorer and provider ------------------------------------------

WORDS = {1: "cat", 2: "dog", 3: "bird", 5: "tree", 7: "house"}
VOCAB = ["cat", "dog", "bird", "tree", "house", "sat", "on", "the", "mat", "ran", "far", "red"]
RECORDS = {
    "window": 16,
    "explanation": ["top:5"],
    "scoring": ["quantile:4"],
    "negatives": ["random:4"],
    "rare_below": 2,
}


def example_module() -> types.ModuleType:
    """The three parts of `saexplain_example.py`, executed in order as one module."""
    parts = blocks_starting("# saexplain_example.py")
    numbers = [re.findall(r"part (\d) of 3", p.splitlines()[0]) for p in parts]
    assert numbers == [["1"], ["2"], ["3"]], "the page shows parts 1, 2 and 3, in order"
    module = types.ModuleType("saexplain_example")
    exec(compile("\n".join(parts), "saexplain_example.py", "exec"), module.__dict__)
    return module


@pytest.fixture
def example() -> Iterator[types.ModuleType]:
    """The page's plugin, registered (beside the built-in methods) in a fresh plugin manager."""
    module = example_module()
    with fresh_plugin_manager(entry_points=[], environ={}) as manager:
        manager.register_plugin(module, name="saexplain_example")
        yield module


def answer(user: str, *, lie: dict[str, str] | None = None) -> str:
    """A competent LLM for the page's two prompts: it names the word most often highlighted
    (or the word `lie` maps it to), and says whether a text contains the explanation's word."""
    if user.startswith("Example 1:"):
        words = Counter(w.strip().lower() for w in re.findall(r"<<(.*?)>>", user))
        word = words.most_common(1)[0][0] if words else "nothing"
        return f"They are all the same word.\nExplanation: the word {(lie or {}).get(word, word)}"
    feature = re.search(r"^Feature: the word (\w+)$", user, re.MULTILINE)
    text = re.search(r"^Text: (.*)$", user, re.MULTILINE)
    assert feature and text, user
    return "1" if re.search(rf"\b{feature.group(1)}\b", text.group(1)) else "0"


def user_text(request: ChatRequest) -> str:
    return next(m.content for m in reversed(request.messages) if m.role == "user")


def run_example(tmp_path: Path, name: str, provider: Any, **kw: Any) -> Any:
    backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
    coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in WORDS.items()}, d_sae=12)
    texts = synthetic_corpus(300, seed=0, vocab=VOCAB, min_words=8, max_words=40)
    return saexplain.explain(
        backend,
        coder,
        latents=list(WORDS),
        explainers="spans",
        scorers="yesno",
        provider=provider,
        dataset=texts,
        n_tokens=32 * 200,
        context_length=32,
        records=RECORDS,
        output_dir=str(tmp_path),
        name=name,
        progress=False,
        **kw,
    )


def results_of(run: Path) -> tuple[list[Explanation], list[Score]]:
    def read(file: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in (run / file).read_text().splitlines() if x.strip()]

    return (
        [Explanation.model_validate(x) for x in read("explanations.jsonl")],
        [Score.model_validate(x) for x in read("scores.jsonl")],
    )


def test_example_explainer_and_scorer_find_and_score_the_planted_words(
    tmp_path: Path, example: types.ModuleType
) -> None:
    llm = ScriptedProvider(lambda r: answer(user_text(r)))
    results = run_example(tmp_path, "honest", llm)
    explanations, scores = results_of(tmp_path / "honest")
    assert {e.latent.index: e.text for e in explanations} == {
        i: f"the word {w}" for i, w in WORDS.items()
    }
    assert all(e.settings == {"n_examples": 10, "temperature": 0.0} for e in explanations)
    # the explainer showed highlighted examples, no BOS token, one line each
    shown = explanations[0].evidence["shown"]
    assert isinstance(shown, list) and shown and all("<<" in str(line) for line in shown)
    assert not any("<bos>" in str(line) for line in shown)
    assert len(scores) == len(WORDS)
    assert all(s.status is Status.OK and s.value == 1.0 for s in scores), [s.value for s in scores]
    # the scorer asked about held-out items only: activating and non-activating, each capped
    for s in scores:
        truths = Counter(p.truth for p in s.predictions)
        assert truths[True] >= 1 and truths[False] >= 1 and max(truths.values()) <= 6
    assert results.summary()["methods"]["spans/yesno"]["n_total"] == len(WORDS)


def test_example_scorer_tells_right_explanations_from_wrong_ones(
    tmp_path: Path, example: types.ModuleType
) -> None:
    words = list(WORDS.values())
    swapped = {w: words[(k + 1) % len(words)] for k, w in enumerate(words)}  # each a wrong word
    llm = ScriptedProvider(lambda r: answer(user_text(r), lie=swapped))
    run_example(tmp_path, "wrong", llm)
    explanations, scores = results_of(tmp_path / "wrong")
    assert all(e.text != f"the word {WORDS[e.latent.index]}" for e in explanations)
    values = [s.value for s in scores if s.value is not None]
    assert len(values) == len(WORDS) and sum(values) / len(values) < 0.75, values


def test_example_methods_fail_as_results_and_reject_bad_settings(
    tmp_path: Path, example: types.ModuleType
) -> None:
    outage = ScriptedProvider(lambda r: saexplain.errors.ProviderServerError("down", model="m"))
    run_example(tmp_path, "outage", outage)
    explanations, scores = results_of(tmp_path / "outage")
    assert all(e.status is Status.ERROR and "down" in (e.error or "") for e in explanations)
    assert all(s.status is Status.ERROR for s in scores)
    with pytest.raises(ConfigError, match=r"spans: setting 'n_examples'"):
        example.SpansExplainer(n_examples=0)
    with pytest.raises(ConfigError, match="unknown setting 'per_sides'"):
        example.YesNoScorer(per_sides=3)


class Endpoint:
    """A local OpenAI-compatible server answering like `answer`: every distinct request is
    refused once with HTTP 429 (a rate limit), then answered."""

    def __init__(self) -> None:
        self.attempts: list[str] = []
        self.lock = threading.Lock()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = json.dumps(body["messages"], sort_keys=True)
                with endpoint.lock:
                    first = key not in endpoint.attempts
                    endpoint.attempts.append(key)
                if first:
                    self.send_response(429)
                    self.end_headers()
                    return
                user = next(m["content"] for m in reversed(body["messages"]) if m["role"] == "user")
                reply = {
                    "choices": [{"message": {"role": "assistant", "content": answer(user)}}],
                    "usage": {"prompt_tokens": 90, "completion_tokens": 10},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[Endpoint]:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")  # never route the loopback through a proxy
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    server = Endpoint()
    try:
        yield server
    finally:
        server.close()


def test_example_provider_gets_retries_cache_and_accounting(
    tmp_path: Path, example: types.ModuleType, endpoint: Endpoint
) -> None:
    spec = ProviderSpec(
        provider="openai-http",
        model="served-model",
        settings={
            "base_url": endpoint.url,
            "usd_per_1k_tokens": 1.0,  # 100 tokens per call: $0.10 a call
            "retry": {"base_delay": 0.001, "max_delay": 0.002},
        },
    )
    results = run_example(tmp_path, "served", spec, spend_cap_usd=100.0)
    explanations, scores = results_of(tmp_path / "served")
    assert {e.latent.index: e.text for e in explanations} == {
        i: f"the word {w}" for i, w in WORDS.items()
    }
    assert all(s.value == 1.0 for s in scores)
    # retries: every distinct request was refused once (429), then answered
    distinct = len(set(endpoint.attempts))
    assert len(endpoint.attempts) == 2 * distinct and distinct > len(WORDS)
    # accounting: every answered call at $0.10 in the summary
    total = results.summary()["usage"]["total"]
    assert total["calls"] == distinct and total["cached_calls"] == 0
    assert total["cost_usd"] == pytest.approx(0.1 * distinct)

    # the cache: the same prompts under a new run name reach the server no more
    again = run_example(tmp_path, "served-again", spec, spend_cap_usd=100.0)
    assert len(endpoint.attempts) == 2 * distinct
    total = again.summary()["usage"]["total"]
    assert total["calls"] == 0 and total["cached_calls"] == distinct and total["cost_usd"] == 0
