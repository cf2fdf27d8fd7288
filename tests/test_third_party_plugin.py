"""A third-party distribution, built here outside the source tree, gets every feature the core
promises a plugin: discovery by entry point, and for its provider retries, the response cache,
the spend cap and accounting, through `sx.explain`.

The distribution (`saexplain-acme`) is a package written from public names only, plus a
`.dist-info` folder whose `entry_points.txt` announces it in the `saexplain` group: exactly what
`pip install` leaves in site-packages. Each run is a fresh Python process with the folder on
`PYTHONPATH`, so the plugin is found the documented way, not registered by the test. Only the
core's fakes are used (no torch): this runs in the core-alone test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from test_public_kit import private_imports

from saexplain.testing import OFFLINE_ENV

PRICE = 0.01  # dollars per answered call

PLUGIN = '''
"""saexplain-acme: an explainer, a scorer and a provider, written from saexplain's public kit."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

import saexplain
from saexplain.errors import ProviderRateLimitError
from saexplain.methods import (
    BinaryScorer,
    ChatRequest,
    ChatResponse,
    Choice,
    Explanation,
    Item,
    LatentRecord,
    Message,
    MethodContext,
    MethodSettings,
    Needs,
    ParseError,
    ProviderError,
    Register,
    Status,
    Usage,
    bos_id,
    display_tokens,
    first_shown,
    highlight,
    marked,
    one_line,
    parse_explanation,
    token_list,
)
from saexplain.protocols import ProviderCapabilities


class AcmeExplainer:
    """Ask the LLM what the highlighted tokens have in common."""

    name = "acme-explain"
    needs = Needs(provider=True)

    class Settings(MethodSettings):
        n_examples: int = Field(8, ge=1, description="activating examples shown")

    def __init__(self, **settings: Any) -> None:
        self.settings = self.Settings.parse(self.name, settings)

    async def explain(self, record: LatentRecord, ctx: MethodContext) -> Explanation:
        bos = bos_id(ctx)
        lines = []
        for example in record.explanation_examples[: self.settings.n_examples]:
            start = first_shown(example, bos)
            marks = marked(example.activations[start:])
            lines.append(one_line(highlight(display_tokens(example, start), marks)))
        prompt = "ACME EXPLAIN\\n" + "\\n".join(lines)
        request = ChatRequest(messages=(Message(role="user", content=prompt),), max_tokens=50)
        fields: dict[str, Any] = {"latent": record.latent, "explainer": self.name}
        try:
            response = await ctx.provider("explainer").complete(request)
            text = parse_explanation(response.text, require_marker=True).text
        except (ProviderError, ParseError) as e:
            return Explanation(**fields, status=Status.ERROR, error=f"{type(e).__name__}: {e}")
        return Explanation(**fields, text=text, usage=response.usage)


class AcmeDetection(BinaryScorer):
    """Detection, each context shown as a list of its tokens."""

    name = "acme-detect"
    default_prompt = "detection"

    def render_items(
        self, items: Sequence[Item], rng: np.random.Generator, ctx: MethodContext
    ) -> list[str]:
        bos = bos_id(ctx)
        return [
            token_list(display_tokens(it.example, first_shown(it.example, bos)))
            for it in items
        ]


class AcmeLLM:
    """A rule-following stand-in for an LLM service; one attempt per call.

    `flaky`: the first attempt at every distinct request fails with a rate limit (retryable).
    Every attempt is appended to the `journal` file, so a test can count them across processes.
    """

    name = "acme-llm"

    def __init__(
        self, model: str, *, journal: str, flaky: bool = False, usd_per_call: float = 0.0
    ) -> None:
        self.model = model
        self.capabilities = ProviderCapabilities()
        self.journal = journal
        self.flaky = flaky
        self.usd_per_call = usd_per_call
        self.seen: set[str] = set()

    def _log(self, prompt: str, outcome: str) -> None:
        with open(self.journal, "a", encoding="utf-8") as f:
            f.write(json.dumps({"prompt": prompt, "outcome": outcome}) + "\\n")

    async def complete(self, request: ChatRequest) -> ChatResponse:
        prompt = request.messages[-1].content
        if self.flaky and prompt not in self.seen:
            self.seen.add(prompt)
            self._log(prompt, "refused")
            raise ProviderRateLimitError("slow down", model=self.model)
        self._log(prompt, "answered")
        return ChatResponse(
            model=self.model,
            choices=(Choice(text=answer(prompt)),),
            usage=Usage(prompt_tokens=50, completion_tokens=5, cost_usd=self.usd_per_call, calls=1),
        )


def answer(prompt: str) -> str:
    if prompt.startswith("ACME EXPLAIN"):
        words = Counter(w.strip().lower() for w in re.findall(r"<<(.*?)>>", prompt))
        return f"Explanation: the word {words.most_common(1)[0][0] if words else 'nothing'}"
    described = re.search(r"^Description: .*?(\\w+)$", prompt, re.MULTILINE)
    word = described.group(1) if described else "?"
    examples = re.findall(r"^Example \\d+: (.*)$", prompt, re.MULTILINE)
    hits = [int(re.search(rf"\\b{word}\\b", line) is not None) for line in examples]
    return "[" + ", ".join(map(str, hits)) + "]"


@saexplain.hookimpl
def register_explainers(register: Register) -> None:
    register("acme-explain", AcmeExplainer, description="acme: names the highlighted tokens")


@saexplain.hookimpl
def register_scorers(register: Register) -> None:
    register("acme-detect", AcmeDetection, description="acme: detection over token lists")


@saexplain.hookimpl
def register_providers(register: Register) -> None:
    register("acme-llm", AcmeLLM, description="acme: the acme LLM service")
'''

METADATA = """\
Metadata-Version: 2.1
Name: saexplain-acme
Version: 0.1.0
Summary: An explainer, a scorer and a provider for saexplain, by a third party
Requires-Dist: saexplain
"""

ENTRY_POINTS = """\
[saexplain]
acme = saexplain_acme
"""

# The user's side: explain planted latents of the core's fake model with the acme components.
DRIVER = """
import json
import sys

import saexplain as sx
from saexplain.models import ProviderSpec
from saexplain.testing import FakeBackend, PlantedValuesCoder, synthetic_corpus

WORDS = {1: "cat", 2: "dog", 3: "bird", 5: "tree", 7: "house"}
VOCAB = ["cat", "dog", "bird", "tree", "house", "sat", "on", "the", "mat", "ran", "far", "red"]

args = json.loads(sys.argv[1])
backend = FakeBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)
coder = PlantedValuesCoder(backend, {i: {f" {w}": 1.0} for i, w in WORDS.items()}, d_sae=12)
results = sx.explain(
    backend,
    coder,
    latents=list(WORDS),
    explainers="acme-explain",
    scorers="acme-detect",
    provider=ProviderSpec(provider="acme-llm", model="acme-1", settings=args["settings"]),
    dataset=synthetic_corpus(300, seed=0, vocab=VOCAB, min_words=8, max_words=40),
    n_tokens=32 * 200,
    context_length=32,
    records={
        "window": 16,
        "explanation": ["top:5"],
        "scoring": ["quantile:4"],
        "negatives": ["random:4"],
        "rare_below": 2,
    },
    spend_cap_usd=args["cap"],
    concurrency=args["concurrency"],
    output_dir=args["output_dir"],
    name=args["name"],
    progress=False,
)
print(json.dumps(results.summary()))
"""

WORDS = {1: "cat", 2: "dog", 3: "bird", 5: "tree", 7: "house"}
FAST_RETRIES = {"retry": {"base_delay": 0.001, "max_delay": 0.002}, "max_attempts": 3}


class Acme:
    """The built distribution and a way to run Python with it installed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.site = root / "site-packages"
        package = self.site / "saexplain_acme"
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(PLUGIN, encoding="utf-8")
        info = self.site / "saexplain_acme-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(METADATA, encoding="utf-8")
        (info / "entry_points.txt").write_text(ENTRY_POINTS, encoding="utf-8")
        (info / "top_level.txt").write_text("saexplain_acme\n", encoding="utf-8")
        self.driver = root / "driver.py"
        self.driver.write_text(DRIVER, encoding="utf-8")
        self.journal = root / "journal.jsonl"
        self.runs = root / "runs"

    def python(self, *args: str) -> str:
        """Run Python in a fresh process that has the distribution installed; its stdout."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SAEXPLAIN_")}
        env.update(OFFLINE_ENV)
        env.update(
            PYTHONPATH=str(self.site),
            SAEXPLAIN_CACHE_DIR=str(self.root / "cache"),
            # only this distribution among the installed plugins: the others (torch stacks)
            # need not be importable here, and a blocked one is still listed
            SAEXPLAIN_PLUGINS="acme",
            SAEXPLAIN_STRICT_PLUGINS="1",
        )
        done = subprocess.run(
            [sys.executable, *args],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        return done.stdout

    def explain(
        self, name: str, settings: dict[str, Any], *, cap: float, concurrency: int = 4
    ) -> dict[str, Any]:
        """`sx.explain` with the acme components in a fresh process; the run's summary."""
        args = {
            "name": name,
            "settings": {"journal": str(self.journal), **settings},
            "cap": cap,
            "concurrency": concurrency,
            "output_dir": str(self.runs),
        }
        out = self.python(str(self.driver), json.dumps(args))
        summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return summary

    def attempts(self) -> list[dict[str, str]]:
        if not self.journal.exists():
            return []
        return [json.loads(x) for x in self.journal.read_text().splitlines()]

    def results(self, name: str, file: str) -> list[dict[str, Any]]:
        lines = (self.runs / name / file).read_text().splitlines()
        return [json.loads(x) for x in lines if x.strip()]


@pytest.fixture
def acme(tmp_path: Path) -> Acme:
    return Acme(tmp_path)


def test_the_plugin_imports_only_public_core_names() -> None:
    assert "from saexplain.methods import" in PLUGIN  # the check below has something to check
    assert private_imports(PLUGIN) == []
    assert private_imports(DRIVER) == []


def test_the_distribution_is_discovered_by_its_entry_point(acme: Acme) -> None:
    listed = json.loads(acme.python("-m", "saexplain.cli", "plugins", "--json"))
    (info,) = [p for p in listed if p["name"] == "acme"]
    assert info["source"] == "entry point" and info["state"] == "loaded", info
    assert (info["distribution"], info["version"]) == ("saexplain-acme", "0.1.0")
    assert info["components"] == {
        "explainer": ["acme-explain"],
        "scorer": ["acme-detect"],
        "provider": ["acme-llm"],
    }
    table = acme.python("-m", "saexplain.cli", "plugins")
    assert "acme  [loaded]  saexplain-acme 0.1.0" in table
    assert "acme: the acme LLM service" in table


def test_its_provider_gets_retries_the_cache_and_accounting(acme: Acme) -> None:
    settings = {"flaky": True, "usd_per_call": PRICE, **FAST_RETRIES}
    summary = acme.explain("first", settings, cap=100.0)

    # retries: every distinct request was refused once, then answered on its second attempt
    attempts = acme.attempts()
    outcomes = Counter(a["outcome"] for a in attempts)
    distinct = {a["prompt"] for a in attempts}
    assert outcomes["refused"] == outcomes["answered"] == len(distinct) > len(WORDS)
    explanations = acme.results("first", "explanations.jsonl")
    assert {e["latent"]["index"]: (e["status"], e["text"]) for e in explanations} == {
        i: ("ok", f"the word {w}") for i, w in WORDS.items()
    }
    scores = acme.results("first", "scores.jsonl")
    assert len(scores) == len(WORDS) and all(s["value"] == 1.0 for s in scores), scores

    # accounting: each answered call, and only those, is paid for in the summary
    total = summary["usage"]["total"]
    assert total["calls"] == outcomes["answered"] and total["cached_calls"] == 0
    assert total["cost_usd"] == pytest.approx(PRICE * outcomes["answered"])
    assert summary["explainers"]["acme-explain"]["usage"]["cost_usd"] == pytest.approx(
        PRICE * len(WORDS)
    )

    # the cache: the same run under a new name, in a new process, sends nothing and pays nothing
    again = acme.explain("second", settings, cap=100.0)
    assert acme.attempts() == attempts
    total = again["usage"]["total"]
    assert total["calls"] == 0 and total["cached_calls"] == outcomes["answered"]
    assert total["cost_usd"] == 0
    texts = {e["latent"]["index"]: e["text"] for e in acme.results("second", "explanations.jsonl")}
    assert texts == {e["latent"]["index"]: e["text"] for e in explanations}


def test_its_provider_stops_at_the_spend_cap_and_the_run_finishes(acme: Acme) -> None:
    # one call in flight at a time, so the cap is met at a known call: the 4th crosses it
    settings = {"usd_per_call": PRICE, "max_concurrency": 1, "cache": False}
    summary = acme.explain("capped", settings, cap=3.5 * PRICE, concurrency=1)
    assert [a["outcome"] for a in acme.attempts()] == ["answered"] * 4
    explanations = acme.results("capped", "explanations.jsonl")
    scores = acme.results("capped", "scores.jsonl")
    assert len(explanations) == len(scores) == len(WORDS)  # every latent has its results
    errors = [r for r in [*explanations, *scores] if r["status"] == "error"]
    assert errors and any("SpendCapReached" in (r["error"] or "") for r in errors)
    assert summary["usage"]["total"]["cost_usd"] == pytest.approx(4 * PRICE)
    assert summary["usage"]["total"]["calls"] == 4


def test_without_retries_the_transient_errors_would_reach_the_methods(acme: Acme) -> None:
    """The retry proof above is not vacuous: with the retry layer set to one attempt, the
    provider's rate limits become error results (every explanation an error)."""
    settings = {"flaky": True, "max_attempts": 1}
    acme.explain("no-retries", settings, cap=100.0)
    explanations = acme.results("no-retries", "explanations.jsonl")
    assert explanations and all(e["status"] == "error" for e in explanations)
    assert all("ProviderRateLimitError" in e["error"] for e in explanations)
