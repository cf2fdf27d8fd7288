"""Competent LLM doubles: `ScriptedProvider` responders that explain and score like a
careful LLM, from the prompt's evidence only (never from the truth)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from saexplain.models import (
    ChatRequest,
    TokenLogprob,
)
from saexplain.testing.providers import ScriptedProvider

# --- the explainer double ---

_HIGHLIGHT = re.compile(r"<<(.+?)>>", re.DOTALL)
_JSON_STRING = r'"(?:[^"\\]|\\.)*"'
_TOKEN_LIST_LINE = re.compile(rf"\s*(?:{_JSON_STRING}\s*,\s*)+{_JSON_STRING}\s*")
_ANSWER_FORMAT = re.compile(r'"([A-Z][A-Za-z ]{2,30}):\s*<')


def _concept_key(text: str) -> str:
    """Group surface variants of one word: case, edge punctuation, a plural -s."""
    word = re.sub(r"^\W+|\W+$", "", text.strip().lower()) or text.strip()
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


def competent_explainer(request: ChatRequest) -> str:
    """A `ScriptedProvider` responder that explains like a competent LLM.

    It reads only the LAST user message (few-shot turns before it are examples, not evidence):
    every `<<highlighted>>` span counts as one vote, and so does each of the first ten tokens of
    the first token list (a line of comma-separated JSON strings; prompts list promoted tokens
    first). Votes are grouped by word (case, punctuation and a plural -s ignored); the winner,
    ties going to the first seen, is the concept. It answers in the format the prompt asks for:
    the marker it names (`"Explanation: <...>"`), a short label when asked for 1 to 6 words,
    and a line of reasoning first when asked to think step by step.
    """
    users = [m.content for m in request.messages if m.role == "user"]
    last = users[-1] if users else ""
    system = "\n".join(m.content for m in request.messages if m.role == "system")
    votes: dict[str, list[str]] = {}
    for span in _HIGHLIGHT.findall(last):
        votes.setdefault(_concept_key(span), []).append(span.strip())
    for line in last.splitlines():
        if _TOKEN_LIST_LINE.fullmatch(line):
            for quoted in re.findall(_JSON_STRING, line)[:10]:
                token = str(json.loads(quoted))
                if token.strip():
                    votes.setdefault(_concept_key(token), []).append(token.strip())
            break
    if not votes:
        return "I could not find a pattern in this evidence."
    key = max(votes, key=lambda k: len(votes[k]))  # max keeps the first of equal counts
    forms = votes[key]
    surface = max(dict.fromkeys(f.lower() for f in forms), key=[f.lower() for f in forms].count)
    found = _ANSWER_FORMAT.search(system + "\n" + last)
    marker = found.group(1) if found else "Explanation"
    if re.search(r"\b1 to 6 words\b", system):
        answer = surface
    else:
        answer = f'the word "{surface}" and its close variants'
    lines = []
    if "step by step" in system.lower():
        total = sum(len(v) for v in votes.values())
        lines.append(f'Most of the evidence ({len(forms)} of {total} items) is "{surface}".')
    lines.append(f"{marker}: {answer}")
    return "\n".join(lines)


# --- the scorer double ---

# Double, curly double, curly single quotes and backticks; not ' (it is also an apostrophe).
_SCORER_QUOTES = re.compile(
    r'"([^"]+)"|\u201c([^\u201d]+)\u201d|\u2018([^\u2019]+)\u2019|`([^`]+)`'
)
_SCORER_STOPWORDS = frozenset(
    re.findall(
        r"\w+",
        "the a an and or of in on at to for with by from as is are be this that these those it "
        "its word words token tokens latent feature neuron fires activates activating activation "
        "text texts about mentions mention related relating containing contains like such when "
        "where which who whose any all some more most very other only also not",
    )
)
_SCORER_EXAMPLE = re.compile(r"^Example (\d+): ?(.*)$")
_SCORER_NUMBERED = re.compile(r"^(\d+)\t(.*)$")
_SCORER_ECHO = re.compile(r"^(.*)\tunknown$")
_SCORER_MARK = re.compile(r"<<(.*?)>>")
_SCORER_LP_TOKEN = re.compile(r"\d+|\s+|[^\d\s]+")


def explanation_keywords(explanation: str) -> list[str]:
    """What a careful reader would look for: the quoted words of an explanation (`the word
    "cat"` -> `cat`), else its content words."""
    quoted = [next(g for g in m.groups() if g) for m in _SCORER_QUOTES.finditer(explanation)]
    if quoted:
        return [q.strip().lower() for q in quoted if q.strip()]
    words = re.findall(r"[A-Za-z0-9]+", explanation)
    return [w.lower() for w in words if len(w) > 2 and w.lower() not in _SCORER_STOPWORDS]


def _scorer_mentions(text: str, keywords: Sequence[str]) -> bool:
    return any(
        re.search(rf"(?<![A-Za-z0-9]){re.escape(k)}(?![A-Za-z0-9])", text, re.IGNORECASE)
        for k in keywords
    )


def competent_scorer(request: ChatRequest) -> str:
    """A `ScriptedProvider` responder that answers the bundled scorer prompts like a competent
    LLM: it reads the `Description:` line and judges each item by the explanation's keywords
    (`explanation_keywords`), never by the truth.

    - detection (`Example k: text` lines): 1 where the text mentions a keyword;
    - fuzzing (lines with `<<marks>>`): 1 where every mark mentions a keyword;
    - simulation (`k<TAB>token` lines): `k<TAB>10` on tokens that mention a keyword, else 0;
    - simulation echo (`token<TAB>unknown` lines): the token copied, a tab, 10 or 0.

    Detection and fuzzing answers are lists like `[1, 0, 0, 1, 0]`, or the bare digit when the
    reply is prefilled (`ChatRequest.prefill`: the text continues after it).
    """
    user = next(m.content for m in reversed(request.messages) if m.role == "user")
    lines = user.splitlines()
    described = next((ln.split(":", 1)[1] for ln in lines if ln.startswith("Description:")), "")
    keywords = explanation_keywords(described)
    echo = [m.group(1) for ln in lines if (m := _SCORER_ECHO.match(ln))]
    numbered = [(m.group(1), m.group(2)) for ln in lines if (m := _SCORER_NUMBERED.match(ln))]
    if echo and len(echo) >= len(numbered):  # a token may itself be a number or "unknown"
        return "\n".join(f"{t}\t{10 if _scorer_mentions(t, keywords) else 0}" for t in echo)
    if numbered:
        return "\n".join(f"{k}\t{10 if _scorer_mentions(t, keywords) else 0}" for k, t in numbered)
    answers = []
    for ln in lines:
        m = _SCORER_EXAMPLE.match(ln)
        if m is None:
            continue
        text = m.group(2)
        spans = _SCORER_MARK.findall(text)
        if "<<" in text:
            answers.append(int(bool(spans) and all(_scorer_mentions(s, keywords) for s in spans)))
        else:
            answers.append(int(_scorer_mentions(text, keywords)))
    if request.prefill is not None and len(answers) == 1:
        return str(answers[0])
    return "[" + ", ".join(map(str, answers)) + "]"


def competent_logprobs(request: ChatRequest, text: str) -> list[TokenLogprob]:
    """Logprobs for `competent_scorer`'s answers: numbers are single tokens; an answer value v
    in 0..10 gets probability 0.8 and its neighbours v-1 and v+1 share the rest, so P(1) is
    about 0.89 where the answer is 1 and 0.2 where it is 0 (a confident, calibrated reader)."""
    out = []
    for tok in _SCORER_LP_TOKEN.findall(text):
        top: tuple[tuple[str, float], ...] = ()
        logprob = 0.0
        if tok.isdigit() and int(tok) <= 10:
            v = int(tok)
            others = [u for u in (v - 1, v + 1) if 0 <= u <= 10]
            logprob = float(np.log(0.8))
            top = ((tok, logprob), *((str(u), float(np.log(0.2 / len(others)))) for u in others))
        out.append(TokenLogprob(token=tok, logprob=logprob, top=top))
    return out


def competent_scorer_provider(*, logprobs: bool = True, **kwargs: Any) -> ScriptedProvider:
    """A ScriptedProvider answering with `competent_scorer` (and `competent_logprobs`)."""
    return ScriptedProvider(
        competent_scorer, logprobs=competent_logprobs if logprobs else None, **kwargs
    )


# --- the writer double (generation, input_eval) ---

_WRITE_TEXTS = re.compile(r"\bWrite (\d+) texts\b")
_WRITE_SETS = re.compile(r"\bWrite (\d+) activating sentences and (\d+) neutral sentences\b")
_WRITER_ADJ = ("old", "small", "quiet", "early", "late")
_WRITER_VERB = ("sat", "ran", "stood", "slept")
_WRITER_NOUN = ("road", "mat", "garden", "table", "window", "stone")


def _written(i: int, keyword: str | None, keywords: Sequence[str]) -> str:
    """The i-th text: the keyword mid-sentence (never first, where a tokenizer reads it without
    its leading space), else fillers only; fillers that are keywords are left out."""

    def pick(words: Sequence[str], k: int) -> str:
        allowed = [w for w in words if w not in keywords] or ["thing"]
        return allowed[k % len(allowed)]

    adj, verb, noun = pick(_WRITER_ADJ, i), pick(_WRITER_VERB, i), pick(_WRITER_NOUN, i)
    subject = keyword if keyword is not None else pick(_WRITER_NOUN, i + 3)
    return f"the {adj} {subject} {verb} by the {noun}"


def competent_writer(request: ChatRequest) -> str:
    """A `ScriptedProvider` responder that writes texts from an explanation like a competent
    LLM (the `generation` and `input_eval` prompts): texts that should activate the latent use
    the explanation's keywords (`explanation_keywords`), neutral ones use none. Any other
    request is answered by `competent_scorer`, so one provider serves every bundled scorer."""
    user = next(m.content for m in reversed(request.messages) if m.role == "user")
    described = next(
        (ln.split(":", 1)[1] for ln in user.splitlines() if ln.startswith("Description:")), ""
    )
    keywords = explanation_keywords(described) or ["thing"]
    if m := _WRITE_SETS.search(user):
        n_on, n_off = int(m.group(1)), int(m.group(2))
        on = [f"{i + 1}. {_written(i, keywords[i % len(keywords)], keywords)}" for i in range(n_on)]
        off = [f"{i + 1}. {_written(i, None, keywords)}" for i in range(n_off)]
        return "\n".join(["Activating:", *on, "Neutral:", *off])
    if m := _WRITE_TEXTS.search(user):
        n = int(m.group(1))
        lines = [f"{i + 1}. {_written(i, keywords[i % len(keywords)], keywords)}" for i in range(n)]
        return "\n".join(lines)
    return competent_scorer(request)
