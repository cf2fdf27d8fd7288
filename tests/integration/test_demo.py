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
    assert set(by_method) == {"maxact", "vocabproj", "selfexplain"}
    assert all(len(v) == 3 for v in by_method.values())
    ok = [e for e in explanations if e["status"] == "ok"]
    # SmolLM2-135M writes maxact sentences; its vocabproj answers and selfexplain's sweeps on
    # three latents are often not explanations, and those are `failed` with a reason, never ok
    assert len(ok) >= 3 and all(e["text"].strip() for e in ok)
    assert all(e["error"] for e in explanations if e["status"] != "ok")
    scores = [json.loads(x) for x in (run / "scores.jsonl").read_text().splitlines()]
    assert {s["scorer"] for s in scores} == {"detection", "embedding"}
    assert any(s["value"] is not None for s in scores)
    summary = json.loads((run / "summary.json").read_text())
    assert summary
    html = (run / "report.html").read_text()
    parser = _Tags()
    parser.feed(html)
    assert parser.errors == [] and parser.scripts == 0
    # dataset text is escaped wherever it is rendered
    records = [json.loads(x) for x in (run / "records.jsonl").read_text().splitlines()]
    raw = {t.strip() for r in records for e in r["explanation_examples"] for t in e["str_tokens"]}
    for token in (t for t in raw if "<" in t or "&" in t):
        assert f">{token}<" not in html, token
    assert "<mark" in html
    assert "maxact" in out and "detection" in out  # the printed table
