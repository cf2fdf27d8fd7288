"""The data the HTML report's page renders: one JSON-ready dict per latent, the overview's plotly
figures, and the safe way to embed them in a page.

The page (`html.py`) renders the overview on the server and every latent section in the
browser, on demand, from this data (`report.js`), so a run of thousands of latents builds in
seconds and opens fast. Strings from datasets and LLMs travel as JSON and reach the page only
through `textContent`; `embed_json` makes the JSON safe inside a `<script type=
"application/json">` block.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from saexplain.models import Example, Explanation, LatentRecord, Score, Status
from saexplain.render import clean_token
from saexplain.report.results import LatentResult, RunResults, valid_value
from saexplain.rundir import SKIPPED_GENERIC, control_name, control_of

EVIDENCE_CHARS = 20_000  # an explanation's or score's evidence beyond this is cut (JSON text)

# characters that could end the script block or start markup, and the two line separators
# JavaScript once treated as newlines: written as \u escapes, which JSON.parse reads back
_UNSAFE = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def embed_json(value: Any) -> str:
    """`value` as JSON text that is safe between `<script type="application/json">` tags."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    for char, escaped in _UNSAFE.items():
        text = text.replace(char, escaped)
    return text


def _round(value: float, digits: int = 4) -> float | None:
    """A float for the page: 4 significant digits, None when not finite."""
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _jsonable(value: Any, limit: int = EVIDENCE_CHARS) -> Any:
    """Evidence as plain JSON (non-finite floats as None); cut to a string when too long."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) > limit:
        return {"cut": text[:limit] + "…", "note": f"{len(text)} characters, cut"}
    out = json.loads(
        text, parse_constant=lambda _: None
    )  # NaN/Infinity from json.dumps -> None (JSON has neither)
    return out


# a vocabulary repeats across thousands of examples: clean each distinct token string once
_clean = functools.lru_cache(maxsize=200_000)(clean_token)


def _activations(values: Sequence[float]) -> list[float]:
    """Activations to 4 significant digits of the example's largest (the page shows no more),
    fast enough for millions of tokens; non-finite values as 0."""
    finite = [a if math.isfinite(a) else 0.0 for a in values]
    top = max((abs(a) for a in finite), default=0.0)
    digits = 4 - math.floor(math.log10(top)) if top > 0 else 4
    return [round(a, digits) for a in finite]


def example_data(example: Example, group: str) -> dict[str, Any]:
    """One example: its cleaned tokens `t`, activations `a`, max, and which group it is from."""
    return {
        "g": group,
        "t": [_clean(t) for t in example.str_tokens],
        "a": _activations(example.activations),
        "max": _round(example.max_activation),
        "q": example.quantile,
    }


def _examples(record: LatentRecord | None, max_examples: int) -> list[dict[str, Any]]:
    if record is None:
        return []
    top = sorted(record.explanation_examples, key=lambda e: -e.max_activation)[:max_examples]
    sampled = list(record.scoring_examples)[:max_examples]
    negative = list(record.non_activating)[: max(1, max_examples // 3)]
    groups = (("top", top), ("sampled", sampled), ("negative", negative))
    return [example_data(e, name) for name, examples in groups for e in examples]


def deciles(score: Score) -> list[list[int]]:
    """Per activation decile of the scored items (`Prediction.quantile`; -1 for negatives):
    [decile, correct answers, answered items], ascending; empty when no item has a decile."""
    counts: dict[int, list[int]] = {}
    for p in score.predictions:
        if p.correct is None:
            continue
        c = counts.setdefault(-1 if p.quantile is None else p.quantile, [0, 0])
        c[0] += int(p.correct)
        c[1] += 1
    if all(q == -1 for q in counts):
        return []
    return [[q, *counts[q]] for q in sorted(counts)]


def _explanation(exp: Explanation) -> dict[str, Any]:
    return {
        "explainer": exp.explainer,
        "status": exp.status.value,
        "text": exp.text if exp.status is Status.OK else None,
        "error": exp.error,
        "tokens": exp.usage.total_tokens,
        "cost": exp.usage.cost_usd,
        "evidence": _jsonable(exp.evidence) if exp.evidence else None,
    }


def _score(score: Score) -> dict[str, Any]:
    constant = score.evidence.get("constant_predictions")
    evidence = {k: v for k, v in score.evidence.items() if k != "constant_predictions"}
    metrics = {k: _round(v) for k, v in score.metrics.items() if v is not None and math.isfinite(v)}
    value = valid_value(score)
    return {
        "explainer": score.explainer,
        "scorer": score.scorer,
        "value": None if value is None else _round(value),
        "status": score.status.value,
        "error": score.error,
        # not scored on purpose (`skip_generic`): the page says "skipped", not an error
        "skipped": (score.error or "").startswith(SKIPPED_GENERIC),
        "metrics": metrics,
        "n": len(score.predictions),
        "n_err": score.n_errors,
        "constant": constant if isinstance(constant, str) else None,
        "deciles": deciles(score),
        "evidence": _jsonable(evidence) if evidence else None,
    }


def _control(res: LatentResult, explainer: str, scorer: str) -> dict[str, Any] | None:
    """The shuffled control beside a true score: the control's value (or why it has none),
    its explanation and which latent that explanation was written for; None when this scorer
    did not score a control."""
    name = control_name(explainer)
    score, exp = res.scores.get((name, scorer)), res.explanations.get(name)
    if score is None:
        return None
    source = exp.evidence.get("shuffled_from") if exp is not None else None
    value = valid_value(score)
    return {
        "value": None if value is None else _round(value),
        "status": score.status.value,
        "error": score.error,
        "text": exp.text if exp is not None and exp.status is Status.OK else None,
        "from": source if isinstance(source, str) else None,
    }


def flags_by_latent(flags: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """`flags.json` turned around: per latent, one label per flag (`generic: maxact
    near-duplicate`, `constant_predictions: detection (maxact) yes`). An entry naming its coder
    is keyed `<coder>/<latent key>` (two coders share latent keys), one without by the latent
    key alone (see `latent_flags`). Unknown shapes are ignored."""
    out: dict[str, list[str]] = {}
    for kind, per_method in (flags or {}).items():
        if not isinstance(per_method, dict):
            continue
        for method, entries in per_method.items():
            for entry in entries if isinstance(entries, list) else []:
                if not isinstance(entry, dict) or not isinstance(entry.get("latent"), str):
                    continue
                label = f"{kind}: {method}"
                for field, fmt in (("explainer", " ({})"), ("answer", " {}"), ("reason", " {}")):
                    if isinstance(entry.get(field), str):
                        label += fmt.format(entry[field])
                key = entry["latent"]
                if isinstance(entry.get("coder"), str):
                    key = f"{entry['coder']}/{key}"
                out.setdefault(key, []).append(label)
    return out


def latent_flags(res: LatentResult, by_latent: Mapping[str, Sequence[str]]) -> list[str]:
    """A latent's flag labels: the latent filters' findings (`filter: dead`), then its
    `flags.json` entries (`flags_by_latent`)."""
    found = res.info.get("flags")
    labels = [f"filter: {f}" for f in found] if isinstance(found, list) else []
    key = res.latent.key
    labels += [*by_latent.get(f"{res.latent.coder_id}/{key}", ()), *by_latent.get(key, ())]
    return list(dict.fromkeys(labels))


def latent_data(
    res: LatentResult,
    *,
    position: int,
    explainers: Sequence[str],
    max_examples: int = 10,
    flags: Sequence[str] = (),
) -> dict[str, Any]:
    """Everything the page shows about one latent, JSON-ready. The shuffled controls
    (`<explainer>~shuffled`) are no explanations of their own: each true score carries its
    control as `ctrl` (see `_control`)."""
    stats = res.stats
    names = [n for n in explainers if n in res.explanations]
    names += [n for n in res.explanations if n not in names]
    names = [n for n in names if control_of(n) is None]
    scores = []
    for (explainer, scorer), score in res.scores.items():
        if control_of(explainer) is not None:
            continue
        scores.append(_score(score) | {"ctrl": _control(res, explainer, scorer)})
    return {
        "pos": position,
        "index": res.latent.index,
        "coder": res.latent.coder_id,
        "hook": res.latent.hook,
        "key": res.latent.key,
        "status": res.status,
        "reason": res.reason,
        # the filters' flags are shown as flags, not as facts
        "info": {k: str(v) for k, v in res.info.items() if k != "flags"},
        "stats": None
        if stats is None
        else {
            "n_tokens": stats.n_tokens,
            "count": stats.count,
            "freq": stats.frequency,
            "max": _round(stats.max),
            "mean": _round(stats.mean),
        },
        "explanations": [_explanation(res.explanations[n]) for n in names],
        "scores": scores,
        "examples": _examples(res.record, max_examples),
        "flags": list(flags),
    }


def median_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float] | None:
    """A distribution-free interval for the median from order statistics: the widest pair of
    ranks (j, n+1-j) whose binomial(n, 1/2) coverage reaches `level`; None below 6 values."""
    x = sorted(values)
    n = len(x)
    if n < 6:
        return None
    # P(B <= j-1) for B ~ Binomial(n, 1/2); the interval [x_j, x_{n+1-j}] covers with 1 - 2 P
    cdf, j, total = 0.0, 0, 1 << n  # an int: 2.0**n overflows a float past n=1023
    while j < n // 2:
        p_next = math.comb(n, j) / total
        if 1 - 2 * (cdf + p_next) < level:
            break
        cdf += p_next
        j += 1
    if j == 0:
        return None
    return x[j - 1], x[n - j]


def score_values(
    results: RunResults, *, coder: str | None = None
) -> dict[tuple[str, str], list[float]]:
    """The valid headline values per (explainer, scorer); of one coder's latents if given."""
    out: dict[tuple[str, str], list[float]] = {}
    for s in results.scores:
        v = valid_value(s)
        if v is not None and (coder is None or s.latent.coder_id == coder):
            out.setdefault((s.explainer, s.scorer), []).append(v)
    return out


def paired_baseline(
    results: RunResults, explainer: str, scorer: str, *, coder: str | None = None
) -> dict[str, Any] | None:
    """A true (explainer, scorer) pair beside its shuffled control on the latents (of `coder`,
    if given) that have valid values for both, as the summary's `shuffled` section defines it
    (`saexplain.report.summary`): n, median_true, median_shuffled, frac_true_gt_shuffled,
    sign_test_p, at_chance. None when the run has no control for the pair."""
    from saexplain.report.summary import CHANCE_FRACTION, sign_test_p

    control = control_name(explainer)
    if control_of(explainer) is not None or (control, scorer) not in results.methods:
        return None
    controls = {s.latent: s for s in results.scores if (s.explainer, s.scorer) == (control, scorer)}
    pairs = []
    for s in results.scores:
        if (s.explainer, s.scorer) != (explainer, scorer):
            continue
        if coder is not None and s.latent.coder_id != coder:
            continue
        shuffled = controls.get(s.latent)
        a, b = valid_value(s), None if shuffled is None else valid_value(shuffled)
        if a is not None and b is not None:
            pairs.append((a, b))
    wins, losses = sum(a > b for a, b in pairs), sum(a < b for a, b in pairs)
    frac = wins / len(pairs) if pairs else None
    return {
        "explainer": control,
        "n": len(pairs),
        "median_true": _median([a for a, _ in pairs]),
        "median_shuffled": _median([b for _, b in pairs]),
        "frac_true_gt_shuffled": frac,
        "sign_test_p": sign_test_p(wins, losses),
        "at_chance": None if frac is None else frac < CHANCE_FRACTION,
    }


def _median(values: Sequence[float]) -> float | None:
    if not values:
        return None
    x, n = sorted(values), len(values)
    return x[n // 2] if n % 2 else (x[n // 2 - 1] + x[n // 2]) / 2
