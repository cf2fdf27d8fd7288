"""The report folder without a browser: valid, self-contained, escaped markup; the embedded
data (what report.js renders) is safe to embed and says what the run holds."""

import json
import re
from html.parser import HTMLParser

from saexplain.models import Example, LatentRef, Prediction, Score
from saexplain.report import RunResults, write_html, write_report
from saexplain.report.data import deciles, embed_json, flags_by_latent, median_ci
from saexplain.report.html import CSP, example_html, read_report_data, render_html, report_data

from .conftest import QUOTES, XSS, with_controls

VOID = {"meta", "br", "hr", "img", "input", "link", "area", "base", "col", "source", "wbr"}
LOCAL_SCRIPTS = ["plotly.min.js", "report.js"]


class Checker(HTMLParser):
    """Tag balance, and the tags, attributes and text as the browser would see them."""

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
        if tag not in VOID:
            self.errors.append(f"self-closed <{tag}/>")

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        self.stack.pop()

    def handle_data(self, data):
        if self.stack[-1:] != ["script"]:
            self.text.append(data)


def check(page: str) -> Checker:
    parser = Checker()
    parser.feed(page)
    parser.close()
    assert parser.errors == [], parser.errors[:5]
    assert parser.stack == [], f"unclosed: {parser.stack}"
    names = {t for t, _ in parser.tags}
    assert not names & {"iframe", "object", "embed", "img", "base", "form"}
    scripts = [a for t, a in parser.tags if t == "script"]
    # only the folder's own scripts, and the JSON data block (which never runs)
    assert [a["src"] for a in scripts if "src" in a] == LOCAL_SCRIPTS
    assert [a.get("type") for a in scripts if "src" not in a] == ["application/json"]
    for _, attrs in parser.tags:
        assert not any(k.startswith("on") for k in attrs), attrs
        for key in ("src", "href"):
            ref = attrs.get(key)
            assert ref is None or ref.startswith("#") or re.fullmatch(r"[\w.-]+", ref), ref
    csp = [a["content"] for t, a in parser.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp == [CSP] and "script-src 'self';" in CSP and "unsafe-eval" not in CSP
    return parser


def test_report_folder_is_valid_escaped_and_self_contained(run_dir):
    results = RunResults.load(run_dir)
    index = write_html(results, run_dir / "report")
    assert sorted(p.name for p in index.parent.iterdir()) == [
        "index.html",
        "plotly.min.js",
        "report.css",
        "report.js",
    ]
    assert (index.parent / "plotly.min.js").stat().st_size > 1_000_000  # plotly.js, local
    page = index.read_text()
    assert page.startswith("<!DOCTYPE html>")
    parser = check(page)
    assert XSS not in page and "<b>" not in page
    text = "".join(parser.text)
    assert "fake<b>model</b>" in text  # server-rendered overview: escaped, shown as text
    assert "Scores per method" in text and "median 95% CI" in text
    data = read_report_data(index)
    # every latent (the dead one too) is in the data, hostile strings intact as data
    assert [lat["index"] for lat in data["latents"]] == [1, 2, 3, 4, 5]
    assert data["latents"][4]["reason"] == "dead: never fired <0 tokens>"
    explanations = [x["text"] for lat in data["latents"] for x in lat["explanations"]]
    assert any(QUOTES in (t or "") for t in explanations)
    tokens = {t for lat in data["latents"] for ex in lat["examples"] for t in ex["t"]}
    assert XSS in tokens or " " + XSS in tokens
    errors = [s["error"] for lat in data["latents"] for s in lat["scores"] if s["error"]]
    assert errors == ["outage " + XSS]
    assert data["methods"] == [
        ["maxact", "detection"],
        ["maxact", "fuzzing"],
        ["vocabproj", "detection"],
        ["vocabproj", "fuzzing"],
    ]
    # one plotly histogram per method, its counts those of the valid scores
    assert len(data["figures"]) == 4
    hist = data["figures"][1]["data"][0]
    assert hist["type"] == "histogram" and len(hist["x"]) == 3  # maxact/fuzzing: one errored


def test_examples_keep_every_token_and_activation(run, run_dir):
    data = read_report_data(write_html(RunResults.load(run_dir), run_dir / "report"))
    by_index = {lat["index"]: lat for lat in data["latents"]}
    record = run.records[0]
    top = [ex for ex in by_index[record.latent.index]["examples"] if ex["g"] == "top"]
    best = max(record.explanation_examples, key=lambda e: e.max_activation)
    assert len(top[0]["t"]) == len(best.tokens) == len(top[0]["a"])
    assert all(
        abs(a - b) <= 1e-4 * best.max_activation
        for a, b in zip(top[0]["a"], best.activations, strict=True)
    )
    assert max(top[0]["a"]) > 0 and top[0]["max"] == round(best.max_activation, 4)
    groups = {ex["g"] for ex in by_index[record.latent.index]["examples"]}
    assert groups == {"top", "sampled", "negative"}


def test_embedded_json_cannot_end_its_script_block():
    hostile = {"x": "</script><script>alert(1)</script><!-- & \u2028\u2029 >"}
    text = embed_json(hostile)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    assert json.loads(text) == hostile


def test_plotly_js_is_written_once(run_dir, tmp_path):
    results = RunResults.load(run_dir)
    folder = tmp_path / "r"
    write_html(results, folder)
    first = (folder / "plotly.min.js").stat().st_mtime_ns
    write_html(results, folder)
    assert (folder / "plotly.min.js").stat().st_mtime_ns == first


def test_write_report_writes_the_folder_and_a_pointer(run_dir):
    paths = write_report(run_dir)
    assert paths["summary"].exists() and paths["html"] == run_dir / "report" / "index.html"
    pointer = (run_dir / "report.html").read_text()
    assert 'content="0; url=report/index.html"' in pointer and "<script" not in pointer
    check(paths["html"].read_text())


def test_empty_and_partial_runs_render(tmp_path):
    check(write_html(RunResults(), tmp_path / "empty").read_text())
    ref = LatentRef(coder_id="c", hook="h", index=0)
    partial = RunResults(scores=[Score(latent=ref, scorer="s", explainer="e", value=0.5)])
    data = read_report_data(write_html(partial, tmp_path / "p"))
    assert data["latents"][0]["scores"][0]["value"] == 0.5 and data["latents"][0]["examples"] == []


def test_latent_info_and_manifest_are_shown(run, tmp_path):
    latents = [{**entry, "n_windows": 3, "reason": "<i>3</i>"} for entry in run.latents]
    manifest = {
        **run.manifest,
        "coder": {"id": "sae<1>", "hook": "h"},
        "plugins": [{"name": "p", "distribution": "d", "version": "1.2", "state": "loaded"}],
    }
    results = RunResults(records=run.records, latents=latents, manifest=manifest)
    index = write_html(results, tmp_path / "r")
    text = "".join(check(index.read_text()).text)
    assert "p (d 1.2)" in text
    data = read_report_data(index)
    assert all(lat["info"] == {"n_windows": "3"} for lat in data["latents"])
    assert all(lat["reason"] == "<i>3</i>" for lat in data["latents"])


def test_deciles_count_correct_answers_per_quantile():
    ref = LatentRef(coder_id="c", hook="h", index=0)
    preds = [
        Prediction(item=0, truth=True, predicted=True, quantile=9),
        Prediction(item=1, truth=True, predicted=False, quantile=9),
        Prediction(item=2, truth=True, predicted=True, quantile=0),
        Prediction(item=3, truth=True, error="x", quantile=0),  # errors are not answers
        Prediction(item=4, truth=False, predicted=False),  # a negative
    ]
    score = Score(latent=ref, scorer="detection", explainer="e", value=0.7, predictions=preds)
    assert deciles(score) == [[-1, 1, 1], [0, 1, 1], [9, 1, 2]]
    no_quantiles = score.model_copy(update={"predictions": (preds[4],)})
    assert deciles(no_quantiles) == []


def test_median_interval_uses_order_statistics():
    # the textbook ranks: n=10 -> (x2, x9), n=100 -> (x40, x61), both at least 95%
    assert median_ci([float(i) for i in range(1, 11)]) == (2.0, 9.0)
    assert median_ci([float(i) for i in range(1, 101)]) == (40.0, 61.0)
    assert median_ci([1.0, 2.0, 3.0]) is None
    lo, hi = median_ci([float(i) for i in range(2000)])  # large n: no float overflow
    assert lo < 1000 < hi and hi - lo < 100


def test_flags_are_turned_around_per_latent():
    flags = {
        "generic": {"maxact": [{"latent": "h_latent1", "text": "en"}]},
        "constant_predictions": {
            "detection": [{"latent": "h_latent1", "explainer": "maxact", "answer": "yes"}]
        },
        "odd": ["not a mapping"],
    }
    assert flags_by_latent(flags) == {
        "h_latent1": ["generic: maxact", "constant_predictions: detection (maxact) yes"]
    }
    assert flags_by_latent(None) == {}


def test_example_html_colours_every_token_by_activation():
    # the Jupyter card (LatentResult._repr_html_): the report's colouring, on the server
    ex = Example(
        tokens=(1, 2, 3, 4),
        str_tokens=("a", " <b>", " c", "Ġd"),
        activations=(0.0, 2.0, 0.1, 1.0),
    )
    out = example_html(ex, latent_max=4.0)
    spans = re.findall(r'<span class="tok" style="([^"]*)" title="([^"]*)">([^<]*)</span>', out)
    assert [s[2] for s in spans] == ["a", " &lt;b&gt;", " c", " d"]  # every token, escaped
    assert [s[1] for s in spans] == [f"activation {a:.4g}" for a in ex.activations]
    alphas = [float(re.search(r"rgba\(255, 140, 0, ([\d.]+)\)", s[0])[1]) for s in spans]
    assert alphas == [0.0, 0.5, 0.025, 0.25]  # relative to the latent's max
    assert "outline" in spans[1][0] and sum("outline" in s[0] for s in spans) == 1
    own = example_html(ex)  # without the latent's max: the example's own
    assert "rgba(255, 140, 0, 1.000)" in own and "<b>" not in own


def test_latent_repr_html_uses_the_report_colouring(run_dir):
    res = RunResults.load(run_dir)[3]
    card = res._repr_html_()
    assert card.count('class="tok"') >= 4 and "<mark" not in card
    assert "<script>" not in card and "&lt;script&gt;" in card  # the XSS token, escaped
    parser = Checker()
    parser.feed(card)
    assert parser.errors == [] and parser.stack == []  # balanced markup
    assert XSS in "".join(parser.text)  # shown as text


def test_written_files_get_the_umask_permissions(tmp_path):
    import os
    import stat

    from saexplain.files import save

    old = os.umask(0o022)
    try:
        path = save(tmp_path / "sub" / "report.html", "<p>x</p>")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_text() == "<p>x</p>"


# --- shuffled controls, skipped scores, filters and coders ----------------------------------------


def test_the_notebook_table_shows_controls_beside_scores_not_as_columns(run):
    explanations, scores, latents, _ = with_controls(run)
    results = RunResults(
        records=run.records, explanations=explanations, scores=scores, latents=latents
    )
    table = results._repr_html_()
    assert "~shuffled" not in table  # no column of their own
    assert "<th>maxact/detection</th>" in table
    assert " (0.100)</td>" in table and " (1.000)</td>" in table  # each beside its score
    # without controls, a score is shown alone
    plain = RunResults(records=run.records, explanations=run.explanations, scores=run.scores)
    assert " (" not in plain._repr_html_().split("<tr>", 2)[2]


def test_shuffled_controls_ride_beside_their_scores(run, tmp_path):
    from saexplain.report.data import paired_baseline

    explanations, scores, latents, flags = with_controls(run)
    results = RunResults(
        records=run.records,
        explanations=explanations,
        scores=scores,
        latents=latents,
        config=run.config,
        manifest=run.manifest,
    )
    assert "maxact~shuffled" in results.explainers  # the run holds them ...
    data = report_data(results, flags=flags)
    # ... but the page has no explainer, column or histogram of their own
    assert data["explainers"] == ["maxact", "vocabproj"]
    assert all("~" not in e for e, _ in data["methods"]) and len(data["figures"]) == 4
    for lat in data["latents"]:
        assert all("~" not in x["explainer"] for x in lat["explanations"])
        assert all("~" not in s["explainer"] for s in lat["scores"])
    # each detection score carries its control: value, text and whose explanation it was
    lat = next(lat for lat in data["latents"] if lat["index"] == 3)
    det = next(
        s for s in lat["scores"] if s["explainer"] == "maxact" and s["scorer"] == "detection"
    )
    control = next(
        e for e in explanations if e.explainer == "maxact~shuffled" and e.latent.index == 3
    )
    assert det["ctrl"]["value"] == 0.1 and det["ctrl"]["text"] == control.text
    assert det["ctrl"]["from"] == control.evidence["shuffled_from"] != lat["key"]
    fuzz = next(s for s in lat["scores"] if s["scorer"] == "fuzzing")
    assert fuzz["ctrl"] is None  # no control scored with fuzzing
    # the histogram overlays the shuffled scores in grey
    hist = data["figures"][0]["data"]
    assert [t["name"] for t in hist] == ["true", "shuffled"] and len(hist[1]["x"]) == 4
    # the overview: true vs shuffled medians, share of wins, "≈ chance" for vocabproj only
    page = render_html(results, data=data)
    parser = check(page)
    text = "".join(parser.text)
    assert "~shuffled" not in text  # no rows of their own in the overview tables
    medians = page[page.index('<table class="medians">') :]
    medians = medians[: medians.index("</table>")]
    rows = {
        r.split("</td>")[0].removeprefix("<td>") + "/" + r.split("<td>")[2].split("<")[0]: r
        for r in medians.split("<tr>")[2:]
    }
    assert "≈ chance" in rows["vocabproj/detection"] and "≈ chance" not in rows["maxact/detection"]
    assert '0.0625">100%</td>' in rows["maxact/detection"]  # 4 of 4 latents beat their control
    assert '">0%</td>' in rows["vocabproj/detection"]
    assert "fewer than 60% of them" in text  # the legend
    # the same numbers as the summary's shuffled section
    summary = results.summary(n_resamples=10)
    for e in ("maxact", "vocabproj"):
        base = paired_baseline(results, e, "detection")
        assert base == summary["methods"][f"{e}/detection"]["shuffled"]
    assert paired_baseline(results, "maxact", "fuzzing") is None


def test_skipped_scores_filters_and_generic_reasons_are_flags(run, tmp_path):
    _, scores, latents, flags = with_controls(run)
    run_dir = run.write(tmp_path / "run")
    (run_dir / "latents.jsonl").write_text("".join(json.dumps(e) + "\n" for e in latents))
    (run_dir / "scores.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in scores))
    (run_dir / "flags.json").write_text(json.dumps(flags))
    data = read_report_data(write_html(RunResults.load(run_dir), run_dir / "report"))
    first = data["latents"][0]
    skipped = next(
        s for s in first["scores"] if s["explainer"] == "vocabproj" and s["scorer"] == "detection"
    )
    assert skipped["skipped"] is True and skipped["value"] is None
    assert not any(s["skipped"] for lat in data["latents"][1:] for s in lat["scores"])
    assert first["flags"] == ["filter: positional", "generic: vocabproj near-duplicate"]
    assert "flags" not in first["info"]  # shown as flags, not as a fact
    assert {"filter: positional", "generic: vocabproj near-duplicate"} <= set(data["flags"])
    assert all(lat["flags"] == [] for lat in data["latents"][1:])


def test_flags_of_two_coders_stay_apart():
    flags = {
        "generic": {"maxact": [{"latent": "h_latent1", "coder": "a", "reason": "instruction-echo"}]}
    }
    assert flags_by_latent(flags) == {"a/h_latent1": ["generic: maxact instruction-echo"]}


def test_two_coders_get_a_coder_column_and_per_coder_medians(run, tmp_path):
    a = with_controls(run)
    b = with_controls(run, coder="sae-b")
    records = [
        *run.records,
        *(
            r.model_copy(update={"latent": r.latent.model_copy(update={"coder_id": "sae-b"})})
            for r in run.records
        ),
    ]
    results = RunResults(
        records=records,
        explanations=[*a[0], *b[0]],
        scores=[*a[1], *b[1]],
        latents=[*a[2], *b[2]],
        config=run.config,
    )
    index = write_html(results, tmp_path / "r")
    data = read_report_data(index)
    coder_a = run.records[0].latent.coder_id
    assert data["coders"] == sorted([coder_a, "sae-b"])
    assert len(data["latents"]) == 10
    # each coder's flag is its own (latent keys are shared between the coders)
    by = {(lat["coder"], lat["index"]): lat["flags"] for lat in data["latents"]}
    assert by[coder_a, 1] == ["filter: positional"] and by["sae-b", 1] == ["filter: positional"]
    page = index.read_text()
    medians = page[page.index('<table class="medians">') :]
    medians = medians[: medians.index("</table>")]
    assert "<th>coder</th>" in medians
    assert medians.count(f"<td>{coder_a}</td>") == 4 and medians.count("<td>sae-b</td>") == 4
