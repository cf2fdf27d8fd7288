"""The README's main job in its reduced mode: SmolLM2, the demo SAE, local LLM, HTML report.

Needs the saexplain-demo plugin and what it depends on (it runs in the integration session; the
core-only session skips it).
"""

import json
from html.parser import HTMLParser

import pytest

pytest.importorskip("saexplain_demo")  # it brings nnsight, saelens, litellm and embeddings

pytestmark = pytest.mark.slow


class _Tags(HTMLParser):
    VOID = frozenset(
        {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
    )

    def __init__(self):
        super().__init__()
        self.stack, self.scripts, self.errors = [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag == "script":
            self.scripts += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if tag in self.VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()


def header_groups(out: str) -> dict[str, str]:
    """The printed table's column headers, per explainer: {explainer: its score headers}."""
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("latent "))
    explainers = lines[at - 1].split()
    groups = lines[at].split("explanation")[1:]
    assert len(explainers) == len(groups), lines[at - 1 : at + 1]
    return dict(zip(explainers, groups, strict=True))


def unmarked_chance_columns(out: str, summary: dict) -> list[str]:
    """Score columns the summary finds at chance (true explanations do not beat shuffled ones)
    that the printed table does not mark, and marked columns that are not at chance."""
    from saexplain.report.table import CHANCE_MARK

    groups = header_groups(out)
    wrong = []
    for key, stats in summary["methods"].items():
        explainer, _, scorer = key.partition("/")
        shuffled = stats.get("shuffled")
        if explainer not in groups or not shuffled:
            continue
        marked = f"{scorer} {CHANCE_MARK}" in groups[explainer]
        if bool(shuffled["at_chance"]) != marked:
            wrong.append(f"{key}: at_chance={shuffled['at_chance']}, marked={marked}")
    return wrong


def test_the_chance_check_fails_on_an_unmarked_column():
    # the check itself can fail: a table whose at-chance column lost its mark
    out = "              toptokens\nlatent  explanation  embedding  detection\n---"
    summary = {
        "methods": {
            "toptokens/embedding": {"shuffled": {"at_chance": False}},
            "toptokens/detection": {"shuffled": {"at_chance": True}},
        }
    }
    assert unmarked_chance_columns(out, summary) == [
        "toptokens/detection: at_chance=True, marked=False"
    ]
    marked = out.replace("detection", "detection \u2248chance")
    assert unmarked_chance_columns(marked, summary) == []


def test_quick_demo_writes_a_complete_run(tmp_path, monkeypatch, capsys):
    from saexplain.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quick", "--output-dir", str(tmp_path), "-q"]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "demo-quick"
    for name in (
        "config.json",
        "manifest.json",
        "latents.jsonl",
        "records.jsonl",
        "explanations.jsonl",
        "scores.jsonl",
        "summary.json",
        "report.html",
    ):
        assert (run / name).is_file(), name
    explanations = [json.loads(x) for x in (run / "explanations.jsonl").read_text().splitlines()]
    by_method = {}
    for e in explanations:
        by_method.setdefault(e["explainer"], []).append(e)
    # each explainer beside its shuffled control (another latent's explanation)
    assert set(by_method) == {"toptokens", "maxact", "toptokens~shuffled", "maxact~shuffled"}
    assert all(len(v) == 4 for v in by_method.values())
    # the LLM-free baseline explains every latent, with shares of the activation mass
    assert all(e["status"] == "ok" and "%)" in e["text"] for e in by_method["toptokens"])
    # maxact in its small-model style: the reply prefilled up to a short label, which parses
    # (not "cut off at max_tokens" as SmolLM2's sentences were)
    maxact_ok = [e for e in by_method["maxact"] if e["status"] == "ok"]
    assert all(e["settings"]["style"] == "keywords" for e in by_method["maxact"])
    assert maxact_ok and all(e["evidence"]["parse"].startswith("prefilled") for e in maxact_ok)
    assert all(len(e["text"].split()) <= 12 for e in maxact_ok)
    ok = [e for e in explanations if e["status"] == "ok"]
    assert all(e["text"].strip() for e in ok)
    assert all(e["error"] for e in explanations if e["status"] != "ok")
    scores = [json.loads(x) for x in (run / "scores.jsonl").read_text().splitlines()]
    assert {s["scorer"] for s in scores} == {"embedding"}
    assert any(s["value"] is not None for s in scores)
    summary = json.loads((run / "summary.json").read_text())
    # every score has its shuffled baseline, and a column at chance is marked in the table
    for explainer in ("toptokens", "maxact"):
        for scorer in ("embedding",):
            assert summary["methods"][f"{explainer}/{scorer}"]["shuffled"]["n"] >= 1
    assert unmarked_chance_columns(out, summary) == []
    # report.html points to the report folder's page where there is one
    page = run / "report" / "index.html"
    html = (page if page.is_file() else run / "report.html").read_text()
    parser = _Tags()
    parser.feed(html)
    assert parser.errors == []
    # dataset text is escaped wherever it is rendered
    records = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    raw = {t.strip() for r in records for e in r["explanation_examples"] for t in e["str_tokens"]}
    for token in (t for t in raw if "<" in t or "&" in t):
        assert f">{token}<" not in html, token
    # the latent sections' data: examples with a value per token, for the per-token colouring
    if page.is_file():
        from saexplain.report.html import read_report_data

        latents = read_report_data(page)["latents"]
        assert len(latents) == 4 and all(lat["examples"] for lat in latents)
        examples = [ex for lat in latents for ex in lat["examples"]]
        assert all(len(ex["t"]) == len(ex["a"]) for ex in examples)
        assert max(max(ex["a"]) for ex in examples) > 0
    assert "maxact" in out and "embedding" in out  # the printed table
