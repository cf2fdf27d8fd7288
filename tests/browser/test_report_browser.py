"""The HTML report in a real browser: Debian's chromium, driven by Playwright.

Locally, without chromium or Playwright, these tests skip; in CI (`CI=true`) they fail instead,
so a CI image that lost its browser cannot pass silently. Screenshots go to
`$SAEXPLAIN_ARTEFACTS` when set, else to the test's tmp folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saexplain.models import ExampleKind, Explanation, Prediction, Score, Status, Usage
from saexplain.report import write_report
from saexplain.testing import FakeBackend, FakeCoder, make_record

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# payloads that set a window flag (and open a dialog) if they ever run
DATA_PAYLOADS = (
    "<img/src=x/onerror=window.__pwnedData=1>",
    "<script>window.__pwnedScript=1</script>",
)
EXPLANATION_PAYLOAD = (
    '<img src=x onerror="window.__pwnedExpl=1;alert(1)"><script>window.__pwnedExpl=1</script>'
)
WORDS = {1: " cat", 2: " river", 3: " " + DATA_PAYLOADS[0], 4: " " + DATA_PAYLOADS[1]}
TEXTS = [
    "the cat sat on the mat",
    "the river ran past the mill",
    f"page says {DATA_PAYLOADS[0]} loudly",
    f"then {DATA_PAYLOADS[1]} and the cat",
    "nothing here at all",
    "the river and the cat",
    f"more {DATA_PAYLOADS[0]} here",
    f"again {DATA_PAYLOADS[1]} there",
    "plain words only today",
]


def _chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    reason = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        reason = "Playwright is not installed (pip install playwright; never `playwright install`)"
    if reason is None and not Path(path).is_file():
        reason = "chromium is not installed (apt-get install chromium)"
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"browser tests must run in CI: {reason}")
        pytest.skip(reason)
    return path


def build_run(run_dir: Path) -> Path:
    """A small run of planted latents with hostile text in the dataset and an explanation, and
    scores whose predictions carry activation deciles."""
    backend = FakeBackend(seed=0)
    coder = FakeCoder.planted(backend, WORDS)
    records, explanations, scores, latents = [], [], [], []
    for index in sorted(WORDS):
        record = make_record(backend, coder, index, TEXTS)
        negatives = tuple(
            e.model_copy(update={"kind": ExampleKind.RANDOM}) for e in record.non_activating
        )
        record = record.model_copy(update={"non_activating": negatives})
        records.append(record)
        latents.append(
            {
                "latent": record.latent.model_dump(mode="json"),
                "status": "ok",
                "stats": record.stats.model_dump(mode="json"),
            }
        )
        text = EXPLANATION_PAYLOAD if index == 3 else f"the word{WORDS[index]}"
        explanations.append(
            Explanation(
                latent=record.latent,
                explainer="maxact",
                text=text,
                usage=Usage(prompt_tokens=10, completion_tokens=2, calls=1),
                evidence={
                    "top_logits": [{"id": 1, "token": DATA_PAYLOADS[1], "value": 2.5}],
                    "note": EXPLANATION_PAYLOAD,
                },
            )
        )
        preds = [
            Prediction(item=i, truth=True, predicted=i % 3 != 0, quantile=i % 10) for i in range(10)
        ] + [Prediction(item=10, truth=False, predicted=False)]
        scores.append(
            Score(
                latent=record.latent,
                scorer="detection",
                explainer="maxact",
                value=0.5 + index / 10,
                predictions=tuple(preds),
            )
        )
    run_dir.mkdir(parents=True)
    for name, items in (
        ("records", records),
        ("explanations", explanations),
        ("scores", scores),
    ):
        (run_dir / f"{name}.jsonl").write_text("".join(i.model_dump_json() + "\n" for i in items))
    (run_dir / "latents.jsonl").write_text("".join(json.dumps(e) + "\n" for e in latents))
    (run_dir / "config.json").write_text(json.dumps({"model": "fake", "seed": 1}))
    key = records[1].latent.key
    flags = {"generic": {"maxact": [{"latent": key, "text": "the word river"}]}}
    (run_dir / "flags.json").write_text(json.dumps(flags))
    write_report(run_dir)
    return run_dir / "report" / "index.html"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    path = _chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Page:
    """A loaded report page and everything it said: console messages, errors, dialogs."""

    def __init__(self, browser: Any, index: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1366, "height": 900})
        self.console: list[str] = []
        self.dialogs: list[str] = []
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.goto(index.as_uri())
        self.page.wait_for_function("window.sxReady === true", timeout=15_000)

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def column(self, n: int) -> list[str]:
        cells = self.page.locator(f"#latent-table tbody tr td:nth-child({n})")
        return [c.strip() for c in cells.all_inner_texts()]


@pytest.fixture
def page(browser: Any, tmp_path: Path) -> Iterator[Page]:
    p = Page(browser, build_run(tmp_path / "run"))
    yield p
    p.page.close()


def artefact_dir(tmp_path: Path) -> Path:
    where = Path(os.environ.get("SAEXPLAIN_ARTEFACTS") or tmp_path)
    where.mkdir(parents=True, exist_ok=True)
    return where


def test_page_loads_without_console_errors_and_draws_plots(page: Page, tmp_path: Path):
    assert page.column(1) == ["1", "2", "3", "4"]
    assert page.page.locator(".plot[data-figure] .main-svg").count() >= 1  # plotly drew
    page.page.keyboard.press("j")
    page.page.wait_for_selector("#latent-detail .tok")
    shot = artefact_dir(tmp_path) / "report.png"
    page.page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    assert page.console == [] and page.dialogs == []


def test_table_sorts_and_filters(page: Page):
    header = page.page.locator("#latent-table thead th")
    header.nth(0).click()  # latent: ascending already, so descending now
    assert page.column(1) == ["4", "3", "2", "1"]
    header.nth(4).click()  # maxact / detection: highest first
    values = [float(v) for v in page.column(5)]
    assert values == sorted(values, reverse=True) and len(values) == 4
    header.nth(4).click()
    assert [float(v) for v in page.column(5)] == sorted(values)
    page.page.fill("#search", "word river")
    assert page.column(1) == ["2"]
    assert page.page.inner_text("#row-count") == "1 of 4 latents"
    page.page.fill("#search", "")
    page.page.select_option("#flag-filter", "*")
    assert page.column(1) == ["2"]
    page.page.select_option("#flag-filter", "-")
    assert sorted(page.column(1)) == ["1", "3", "4"]
    page.page.select_option("#flag-filter", "")
    page.page.fill("#min-score", "0.75")
    assert sorted(page.column(1)) == ["3", "4"]
    assert page.console == []


def test_keyboard_moves_between_latents_and_focuses_search(page: Page):
    page.page.keyboard.press("j")
    page.page.keyboard.press("j")
    assert page.page.inner_text("#latent-detail h2").startswith("Latent 2")
    page.page.keyboard.press("k")
    assert page.page.inner_text("#latent-detail h2").startswith("Latent 1")
    assert page.page.evaluate("location.hash") == "#latent-0"
    page.page.keyboard.press("/")
    assert page.page.evaluate("document.activeElement.id") == "search"


def test_latent_section_colours_every_token_by_activation(page: Page):
    page.page.locator("#latent-table tbody tr").nth(0).click()
    page.page.wait_for_selector("#latent-detail .ex .tok")
    colours = page.page.evaluate(
        """() => [...document.querySelectorAll('#latent-detail .ex')].slice(0, 1).flatMap(ex =>
            [...ex.querySelectorAll('.tok')].map(t => [Number(t.dataset.act),
              getComputedStyle(t).backgroundColor, t.classList.contains('maxtok'), t.title]))"""
    )
    high = [c for c in colours if c[0] > 0.5]
    low = [c for c in colours if c[0] == 0]
    assert high and low and len(high) + len(low) == len(colours)  # every token is a span
    assert high[0][1] != low[0][1]  # computed backgrounds differ
    assert (
        low[0][1] == "rgba(255, 140, 0, 0)" and high[0][2] and high[0][3].startswith("activation ")
    )
    # per-decile accuracy and the logit-lens tokens are drawn for the latent
    assert page.page.locator("#latent-detail .plot .main-svg").count() >= 2
    assert DATA_PAYLOADS[1] in page.page.inner_text("#latent-detail .lens")


def test_payloads_in_data_and_explanations_do_not_run(page: Page):
    for pos in range(4):  # render every latent, the hostile ones included
        page.page.locator(f'#latent-table tbody tr[data-pos="{pos}"]').click()
    page.page.locator('#latent-table tbody tr[data-pos="2"]').click()
    page.page.wait_for_selector("#latent-detail .tok")
    detail = page.page.inner_text("#latent-detail")
    assert EXPLANATION_PAYLOAD in detail  # shown as text
    assert DATA_PAYLOADS[0] in detail
    flags = page.page.evaluate(
        "() => [window.__pwnedData, window.__pwnedScript, window.__pwnedExpl]"
    )
    assert flags == [None, None, None]
    assert page.page.locator("#latent-detail img, #latent-detail script").count() == 0
    assert page.dialogs == [] and page.console == []


# --- shuffled controls, skipped scores, filters, two coders ---------------------------------------


def build_controlled_run(run_dir: Path) -> Path:
    """`build_run` with a second coder ("sae-b", the same latents), shuffled controls of maxact
    scored with detection (coder A's at 0.1: below every true score; B's at 0.95: at chance),
    B's first detection score skipped as generic, and A's latent 4 flagged positional."""
    from saexplain.rundir import SKIPPED_GENERIC

    build_run(run_dir)
    explanations = [
        Explanation.model_validate_json(line)
        for line in (run_dir / "explanations.jsonl").read_text().splitlines()
    ]
    scores = [
        Score.model_validate_json(line)
        for line in (run_dir / "scores.jsonl").read_text().splitlines()
    ]
    records = (run_dir / "records.jsonl").read_text().splitlines()
    latents = [json.loads(line) for line in (run_dir / "latents.jsonl").read_text().splitlines()]

    def to_b(item: Any) -> Any:
        return item.model_copy(
            update={"latent": item.latent.model_copy(update={"coder_id": "sae-b"})}
        )

    explanations += [to_b(e) for e in explanations]
    scores += [to_b(s) for s in scores]
    first_b = scores[len(scores) // 2]
    scores[len(scores) // 2] = first_b.model_copy(
        update={
            "value": None,
            "status": Status.FAILED,
            "error": f"{SKIPPED_GENERIC} (near-duplicate)",
        }
    )
    for coder_value, group in ((0.1, explanations[:4]), (0.95, explanations[4:])):
        for i, e in enumerate(group):
            source = group[(i + 1) % len(group)]
            explanations.append(
                Explanation(
                    latent=e.latent,
                    explainer="maxact~shuffled",
                    text=source.text,
                    evidence={"shuffled_from": source.latent.key},
                )
            )
            scores.append(
                Score(
                    latent=e.latent,
                    scorer="detection",
                    explainer="maxact~shuffled",
                    value=coder_value,
                )
            )
    b_latents = [{**e, "latent": {**e["latent"], "coder_id": "sae-b"}} for e in latents]
    latents[3]["filters"] = {"flags": ["positional"]}
    coder_a = json.dumps({"coder_id": explanations[0].latent.coder_id}, separators=(",", ":"))
    records += [line.replace(coder_a[1:-1], '"coder_id":"sae-b"') for line in records]
    (run_dir / "records.jsonl").write_text("\n".join(records) + "\n")
    (run_dir / "explanations.jsonl").write_text(
        "".join(e.model_dump_json() + "\n" for e in explanations)
    )
    (run_dir / "scores.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in scores))
    (run_dir / "latents.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in [*latents, *b_latents])
    )
    (run_dir / "flags.json").unlink()
    write_report(run_dir)
    return run_dir / "report" / "index.html"


def test_controls_skips_filters_and_coders_in_the_page(browser: Any, tmp_path: Path):
    p = Page(browser, build_controlled_run(tmp_path / "run"))
    try:
        page = p.page
        heads = page.locator("#latent-table thead th").all_inner_texts()
        assert heads[:2] == ["coder", "latent"] and not any("~" in h for h in heads)
        coder_a = p.column(1)[0]
        assert p.column(1) == [coder_a] * 4 + ["sae-b"] * 4 and coder_a != "sae-b"
        # every detection score shows its shuffled control beside it; B's first is skipped
        cells = p.column(heads.index("maxact / detection") + 1)
        assert all(c.endswith("~0.100") for c in cells[:4]), cells
        assert cells[4] == "skipped ~0.950" and all(c.endswith("~0.950") for c in cells[5:])
        # the coder filter
        page.select_option("#coder-filter", "sae-b")
        assert p.column(1) == ["sae-b"] * 4
        page.select_option("#coder-filter", "")
        # the filters' flags are flags
        page.select_option("#flag-filter", "filter: positional")
        assert p.column(1) == [coder_a] and p.column(2) == ["4"]
        page.locator("#latent-table tbody tr").nth(0).click()
        detail = page.inner_text("#latent-detail")
        assert "Flags: filter: positional" in detail
        assert "Shuffled control:" in detail and "(explanation of " in detail
        assert "shuffled" in page.inner_text("#latent-detail table.scores th:nth-child(3)")
        # the overview: B's baseline is at chance, A's is not; the legend says what that means
        overview = page.inner_text("table.medians")
        assert overview.count("≈ chance") == 1 and "sae-b" in overview
        assert "fewer than 60%" in page.inner_text("#overview")
        assert p.console == [] and p.dialogs == []
    finally:
        p.page.close()


def test_compare_page_draws_its_scatter(browser: Any, tmp_path: Path):
    from saexplain.analysis.similarity import Comparison, PairRow
    from saexplain.report.compare import write_compare_html

    rows = tuple(
        PairRow(
            latent_a=i,
            latent_b=i + 1,
            cosine=1 - i / 10,
            explanation_a=DATA_PAYLOADS[i % 2],
            explanation_b=f"b {i}",
            similarity=0.5 + i / 20,
        )
        for i in range(5)
    )
    index = write_compare_html(
        Comparison(rows=rows, method="exact", baseline=0.2), tmp_path / "cmp.html"
    )
    p = Page(browser, index)
    try:
        assert p.page.locator("#compare-plot .main-svg").count() >= 1
        assert p.page.locator("#compare-plot .scatterlayer .point").count() == 5
        assert DATA_PAYLOADS[0] in p.page.inner_text("table")
        flags = p.page.evaluate("() => [window.__pwnedData, window.__pwnedScript]")
        assert flags == [None, None] and p.console == [] and p.dialogs == []
    finally:
        p.page.close()
