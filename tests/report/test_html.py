import re
from html.parser import HTMLParser

import numpy as np

from saexplain.models import Example, LatentRef, Score
from saexplain.report import RunResults, histogram_svg, write_html, write_report
from saexplain.report.html import example_html

from .conftest import QUOTES, XSS

VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "source", "wbr"}
SVG_EMPTY_OK = {"line", "rect", "path", "circle"}  # self-closing in inline SVG


class Checker(HTMLParser):
    """Tag balance, forbidden elements, and the text/attributes as the browser would see them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID | SVG_EMPTY_OK:
            self.errors.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def check(page: str) -> Checker:
    parser = Checker()
    parser.feed(page)
    parser.close()
    assert parser.errors == [], parser.errors[:5]
    assert parser.stack == [], f"unclosed: {parser.stack}"
    names = {t for t, _ in parser.tags}
    # self-contained and script-free: no scripts, frames, objects or external resources
    assert not names & {"script", "iframe", "object", "embed", "link", "img"}
    for _, attrs in parser.tags:
        assert not any(k.startswith("on") for k in attrs), attrs
        assert "src" not in attrs
        href = attrs.get("href")
        assert href is None or href.startswith("#"), href
    return parser


def test_report_is_valid_escaped_and_self_contained(run_dir):
    results = RunResults.load(run_dir)
    path = write_html(results, run_dir / "report.html")
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    parser = check(page)
    assert XSS not in page and "<script" not in page.lower()
    text = "".join(parser.text)
    # hostile strings survive as visible text: examples, explanations, errors, evidence, config
    assert text.count(XSS) >= 5
    assert QUOTES in text
    assert "unparseable" not in text  # per-item error messages are counted, not dumped
    assert "outage " + XSS in text and "provider said " + XSS in text
    assert "fake<b>model</b>" in text and "<b>" not in page
    # one section per latent, each reachable from the table of contents
    sections = [a["id"] for t, a in parser.tags if t == "section"]
    links = [a["href"][1:] for t, a in parser.tags if t == "a"]
    assert len(sections) == 5 and sections == links
    # a histogram per method, and the dead latent's fate is shown
    assert sum(t == "svg" for t, _ in parser.tags) == 4
    assert "dead: never fired <0 tokens>" in text


def test_marks_carry_activations(run_dir):
    results = RunResults.load(run_dir)
    page = write_html(results, run_dir / "r.html").read_text()
    parser = check(page)
    marks = [a for t, a in parser.tags if t == "mark"]
    # every activating example of every record has its planted word marked
    n_activating = sum(
        len(r.explanation_examples) + len(r.scoring_examples) for r in results.records
    )
    assert len(marks) >= n_activating
    assert all(re.fullmatch(r"activation [0-9.e+-]+", a["title"]) for a in marks)
    marked_words = re.findall(r"<mark[^>]*>(.*?)</mark>", page)
    assert {"cat", "&quot;dog&quot;", "river", "&lt;script&gt;alert(1)&lt;/script&gt;"} <= set(
        marked_words
    )


def test_example_html_marks_only_strong_tokens():
    ex = Example(
        tokens=(1, 2, 3, 4),
        str_tokens=("a", " <b>", " c", "Ġd"),
        activations=(0.0, 2.0, 0.1, 1.0),
    )
    out = example_html(ex, latent_max=4.0, threshold=0.3)
    parser = check(f"<ul>{out}</ul>")
    assert [a["title"] for t, a in parser.tags if t == "mark"] == ["activation 2"]
    assert " <mark" in out and "&lt;b&gt;</mark>" in out  # whitespace outside the mark
    # relative to the example's own max when the latent max is unknown: 1.0 >= 0.3 * 2.0
    out = example_html(ex, latent_max=None)
    assert out.count("<mark") == 2 and " <mark" in out and "d</mark>" in out


def test_histogram_counts_and_ranges():
    values = [0.1, 0.15, 0.5, 0.55, 0.56, 0.9, float("nan")]
    svg = histogram_svg(values, title="a <b> & c", bins=10)
    parser = check(svg)
    counts = [int(a["data-count"]) for t, a in parser.tags if t == "rect"]
    expected, _ = np.histogram(values[:-1], bins=10, range=(0, 1))
    assert counts == [int(c) for c in expected if c]
    assert "a &lt;b&gt; &amp; c" in svg
    wide = histogram_svg([-3.0, 10.0], title="t")
    assert ">-3<" in wide and ">10<" in wide
    assert "no valid scores" in histogram_svg([], title="t")
    check(histogram_svg([2.0, 2.0], title="t"))


def test_empty_and_partial_runs_render(tmp_path):
    check(write_html(RunResults(), tmp_path / "empty.html").read_text())
    ref = LatentRef(coder_id="c", hook="h", index=0)
    partial = RunResults(scores=[Score(latent=ref, scorer="s", explainer="e", value=0.5)])
    check(write_html(partial, tmp_path / "p.html").read_text())


def test_write_report_writes_both(run_dir):
    paths = write_report(run_dir)
    assert paths["summary"].exists() and paths["html"] == run_dir / "report.html"
    check(paths["html"].read_text())


def test_latent_info_and_manifest_are_shown(run, tmp_path):
    # latents.jsonl lines have a model now: hostile text can only come in its string fields
    latents = [{**entry, "n_windows": 3, "reason": "<i>3</i>"} for entry in run.latents]
    manifest = {
        **run.manifest,
        "coder": {"id": "sae<1>", "hook": "h"},
        "plugins": [{"name": "p", "distribution": "d", "version": "1.2", "state": "loaded"}],
    }
    results = RunResults(records=run.records, latents=latents, manifest=manifest)
    parser = check(write_html(results, tmp_path / "r.html").read_text())
    text = "".join(parser.text)
    assert text.count("n_windows: 3") == 5 and text.count(": <i>3</i>") == 5
    assert "sae<1>" in text and "p (d 1.2)" in text


def test_written_files_get_the_umask_permissions(tmp_path):
    import os
    import stat

    from saexplain.report._io import atomic_write_text

    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "report.html", "<p>x</p>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "<p>x</p>"
