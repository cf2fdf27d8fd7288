"""A plain-text table of a run for the terminal (`saexplain show RUN`).

One row per latent. Each explainer gets a text column followed by one column per scorer that
scored it; a two-line header names the explainer over its group and the scorers below. Texts are
cut with "..." to fit `width` (the terminal's width by default); missing values are "-", scores
that errored are "err", and a value whose scorer gave one answer to every item (constant
predictions, e.g. a balanced accuracy of 0.50 from "yes" everywhere) is starred ("0.50*").
The summary lines give each method's median and mean, and for binary scorers the median AUROC
next to them and how many scores had constant predictions. A scorer that intervenes at calibrated
strengths (`intervention`) gets one more line per target KL (the summary's `by_target`): the mean
score with its interval beside the mean of each baseline, and the share of targets reached.

A run with shuffled controls (`shuffled_controls`) has no column of its own for them: each score
cell shows the control beside the latent's own score ("0.82 (0.48)"), the summary line gives the
median true and shuffled scores and the share of latents where true > shuffled, and a scorer
that does not separate them in this run (the summary's `at_chance`) is marked `≈chance` in its
column header and summary line, with a one-line legend under the table. Scores a `skip_generic`
run skipped read "skip".
"""

from __future__ import annotations

import shutil
from typing import Any

from saexplain.models import Status
from saexplain.report.results import LatentResult, RunResults, valid_value
from saexplain.report.summary import CHANCE_FRACTION, is_skipped
from saexplain.rundir import control_name, control_of

MIN_TEXT = 12  # narrowest explanation column
SEP = "  "
CONSTANT_MARK = "*"  # after a value whose scorer gave one answer to every item
CHANCE_MARK = "≈chance"  # a score column whose scorer does not beat shuffled explanations
CHANCE_LEGEND = (
    f"{CHANCE_MARK}: fewer than {CHANCE_FRACTION:.0%} of latents score their own explanation "
    "above a shuffled one (in parentheses): this scorer's numbers are not evidence here"
)


def _fit(text: str, width: int) -> str:
    text = " ".join(text.split())  # newlines and runs of spaces collapse to one space
    if len(text) <= width:
        return text.ljust(width)
    if width <= 3:
        return text[:width]
    return text[: width - 3] + "..."


def _value_cell(res: LatentResult, explainer: str, scorer: str) -> str:
    s = res.scores.get((explainer, scorer))
    if s is None:
        return "-"
    value = valid_value(s)
    if value is None:
        return "skip" if is_skipped(s) else "err"
    constant = isinstance(s.evidence.get("constant_predictions"), str)
    return f"{value:.2f}{CONSTANT_MARK if constant else ''}"


def _score_cell(res: LatentResult, explainer: str, scorer: str, controlled: bool) -> str:
    """The latent's score, with its shuffled control in parentheses when the run has them."""
    cell = _value_cell(res, explainer, scorer)
    if not controlled:
        return cell
    return f"{cell} ({_value_cell(res, control_name(explainer), scorer)})"


def _text_cell(res: LatentResult, explainer: str, first: bool) -> str:
    exp = res.explanations.get(explainer)
    if exp is not None:
        return exp.text if exp.status is Status.OK else f"({exp.status.value}: {exp.error})"
    if first and res.status not in (None, "ok"):
        return f"({res.status}{': ' + res.reason if res.reason else ''})"
    return "-"


def format_table(
    results: RunResults,
    width: int | None = None,
    *,
    max_rows: int | None = None,
    summary: bool = True,
) -> str:
    """The run as a text table at most `width` characters wide (as far as the columns allow)."""
    if width is None:
        width = shutil.get_terminal_size((100, 24)).columns
    # a control is shown beside the explainer it shuffles, not as an explainer of its own
    explainers = [e for e in results.explainers if control_of(e) is None]
    methods = results.methods
    controlled = {(control_of(e), s) for e, s in methods if control_of(e) is not None}
    computed = results.summary() if controlled or (summary and methods) else None
    stats = computed["methods"] if computed is not None else {}
    chance = {
        (e, s)
        for e, s in controlled
        if ((stats.get(f"{e}/{s}") or {}).get("shuffled") or {}).get("at_chance")
    }
    multi_coder = len({ref.coder_id for ref in results.latents}) > 1
    rows = list(results)
    shown = rows if max_rows is None else rows[:max_rows]

    def latent_label(res: LatentResult) -> str:
        ref = res.latent
        return f"{ref.coder_id}:{ref.index}" if multi_coder else str(ref.index)

    lat_w = max([len("latent"), *(len(latent_label(r)) for r in shown)])
    groups: list[tuple[str, list[str]]] = []
    for e in explainers:
        groups.append((e, [s for ex, s in methods if ex == e]))

    def mark(e: str, s: str) -> str:
        return f" {CHANCE_MARK}" if (e, s) in chance else ""

    # a long scorer name is cut, never its at-chance mark
    score_w = {(e, s): max(4, min(len(s), 16) + len(mark(e, s))) for e, ss in groups for s in ss}
    score_cells = {
        (res.latent, e, s): _score_cell(res, e, s, (e, s) in controlled)
        for res in shown
        for e, ss in groups
        for s in ss
    }
    for (_, e, s), cell in score_cells.items():
        score_w[e, s] = max(score_w[e, s], len(cell))  # room for a starred value or a control
    fixed = lat_w + sum(len(SEP) + score_w[e, s] for e, ss in groups for s in ss)
    fixed += len(SEP) * len(groups)
    text_w = max(MIN_TEXT, (width - fixed) // max(1, len(groups))) if groups else 0

    # header: explainer names over their groups, then column names
    top = ["".ljust(lat_w)]
    sub = ["latent".ljust(lat_w)]
    for e, ss in groups:
        group_w = text_w + sum(len(SEP) + score_w[e, s] for s in ss)
        top.append(_fit(e, group_w))
        heads = (_fit(s, score_w[e, s] - len(mark(e, s))) + mark(e, s) for s in ss)
        sub.append(SEP.join(["explanation".ljust(text_w)[:text_w], *heads]))
    lines = [SEP.join(top).rstrip(), SEP.join(sub).rstrip()]
    lines.append("-" * min(width, max(len(line) for line in lines)))
    for res in shown:
        cells = [latent_label(res).rjust(lat_w)]
        for i, (e, ss) in enumerate(groups):
            group = [_fit(_text_cell(res, e, first=i == 0), text_w)]
            group += [score_cells[res.latent, e, s].rjust(score_w[e, s]) for s in ss]
            cells.append(SEP.join(group))
        if not groups:
            status = res.status or "-"
            cells.append(f"({status}{': ' + res.reason if res.reason else ''})")
        lines.append(SEP.join(cells).rstrip())
    if len(shown) < len(rows):
        lines.append(f"... {len(rows) - len(shown)} more latents")
    if not rows:
        lines.append("(no latents yet)")
    if any(CONSTANT_MARK in cell for cell in score_cells.values()):
        lines.append(f"{CONSTANT_MARK} the scorer gave one answer to every item (see flags.json)")
    if controlled:
        lines.append("(x.xx) the same scorer on the explanation of another latent (shuffled)")
    if chance:
        lines.append(CHANCE_LEGEND)
    if summary and methods:
        lines.append("")
        lines.extend(_summary_lines(computed or results.summary()))
    return "\n".join(lines)


# the metrics of a target shown as baselines, in this order (others the scorer adds come after);
# `kl` and `value` describe the strength, `reached` is shown as a share
BASELINES = ("random_latents", "random_coder", "decoys")
_NOT_BASELINES = ("score", "kl", "value", "reached")


def target_lines(by_target: dict[str, Any], indent: str = "  ") -> list[str]:
    """One line per target KL of a summary's `by_target`: the score (mean [95% CI]) beside the
    mean of each baseline, the mean KL reached and the share of targets reached."""
    out = []
    for target, names in by_target.items():
        parts = []
        score = names.get("score") or {}
        if score.get("n"):
            ci = score.get("mean_ci95")
            parts.append(
                f"score {score['mean']:.3f}"
                + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")
                + f" n={score['n']}"
            )
        others = [n for n in names if n not in (*BASELINES, *_NOT_BASELINES)]
        for name in (*BASELINES, *others):
            d = names.get(name) or {}
            if d.get("n"):
                parts.append(f"{name} {d['mean']:.3f}")
        kl = names.get("kl") or {}
        if kl.get("n"):
            parts.append(f"KL {kl['mean']:.3f}")
        reached = names.get("reached") or {}
        if reached.get("n"):
            parts.append(f"reached {100 * reached['mean']:.0f}%")
        if parts:
            out.append(f"{indent}{target}: " + ", ".join(parts))
    return out


def shuffled_text(shuffled: dict[str, Any] | None) -> str:
    """The summary's `shuffled` entry as text: "shuffled median 0.490, true > shuffled on 9 of
    20 latents (45%) ≈chance", or "" without controls."""
    if not shuffled or not shuffled.get("n"):
        return ""
    n, frac = shuffled["n"], shuffled["frac_true_gt_shuffled"]
    mark = f" {CHANCE_MARK}" if shuffled.get("at_chance") else ""
    return (
        f"shuffled median {shuffled['median_shuffled']:.3f}, true > shuffled on "
        f"{round(frac * n)} of {n} latents ({frac:.0%}){mark}"
    )


def _summary_lines(summary: dict[str, Any]) -> list[str]:
    out = []
    methods = summary["methods"]
    for name, m in methods.items():
        control = m.get("control_of")
        if control is not None and f"{control}/{m['scorer']}" in methods:
            continue  # shown beside the explainer it shuffles
        skipped = m.get("n_skipped") or 0
        if m["n"] == 0:
            out.append(
                f"{name}: no valid scores ({m['n_errors']} errors"
                + (f", {skipped} skipped as generic" if skipped else "")
                + ")"
            )
            continue
        lo, hi = m["mean_ci95"]
        auroc = m.get("auroc") or {}
        n_constant = m.get("n_constant") or 0
        beside = shuffled_text(m.get("shuffled"))
        rate = m["error_rate"]
        out.append(
            f"{name}: median {m['median']:.3f} (IQR {m['q25']:.3f}-{m['q75']:.3f}), "
            + (f"{beside}, " if beside else "")
            + f"mean {m['mean']:.3f} [{lo:.3f}, {hi:.3f}], "
            + (f"AUROC median {auroc['median']:.3f}, " if auroc.get("n") else "")
            + f"n={m['n']}, "
            + (f"constant answers {n_constant}, " if n_constant else "")
            + (f"skipped as generic {skipped}, " if skipped else "")
            + f"errors {0 if rate is None else 100 * rate:.0f}%"
        )
        out.extend(target_lines(m.get("by_target") or {}))
    total = summary["usage"]["total"]
    out.append(
        f"tokens: {total['prompt_tokens']} prompt + {total['completion_tokens']} completion, "
        f"cost ${total['cost_usd']:.4f}"
    )
    return out
