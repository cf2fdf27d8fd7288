"""output_eval on a tiny real GPT-2, through TransformerLens and nnsight, with planted output
latents (each decoder row is a word's unembedding direction, that row made longer so a random
tiny model can be steered to write the word) and a competent scripted judge."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
import torch
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_gpt2

from saexplain.methods import ChatRequest, Explanation, LatentRecord, LatentRef, MethodContext
from saexplain.models import LatentStats, Status
from saexplain.scorers.output_eval import OutputEvalScorer
from saexplain.testing import ScriptedProvider, explanation_keywords

tl_backend = pytest.importorskip("saexplain_transformerlens.backend")
nn_backend = pytest.importorskip("saexplain_nnsight.backend")
convert = pytest.importorskip("saexplain_transformerlens.convert")

HOOK = "blocks.1.hook_resid_pre"
PLANTED = {3: " cat", 7: " river", 11: " violin", 19: " garden"}  # latent -> a one-token word
_SET = re.compile(r"^Set (\d+):$")


def judge(request: ChatRequest) -> str:
    """Picks the set whose continuations mention the explanation's words most (3 times or more:
    a theme, not a stray token); with no such set it answers 1, a position bias that the
    scorer's cycling of the explained set through every slot turns into chance."""
    user = request.messages[-1].content
    described = next(
        ln.split(":", 1)[1] for ln in user.splitlines() if ln.startswith("Description:")
    )
    keywords = explanation_keywords(described)
    counts: list[int] = []
    for line in user.splitlines():
        if _SET.match(line):
            counts.append(0)
        elif line.startswith("- ") and counts:
            written = line.split(" | ", 1)[1].lower()
            counts[-1] += sum(len(re.findall(rf"\b{re.escape(k)}\b", written)) for k in keywords)
    return f"Answer: {int(np.argmax(counts)) + 1 if max(counts) >= 3 else 1}"


@pytest.fixture(scope="module")
def stack():
    tok = gpt2_tokenizer()
    hf = tiny_gpt2()
    coder = make_coder(hf.config.n_embd, 32, HOOK, seed=3)
    gen = torch.Generator().manual_seed(0)
    rows = torch.linalg.qr(torch.randn(hf.config.n_embd, len(PLANTED), generator=gen))[0].T
    with torch.no_grad():
        for row, (latent, word) in zip(rows, PLANTED.items(), strict=True):
            (token,) = tok.encode(word)
            # a random tiny model predicts almost uniformly: a longer (tied) unembedding row
            # lets the planted direction make its word likely
            hf.get_output_embeddings().weight[token] = 4.0 * row
            coder.W_dec[latent] = row
        # the other latents write nothing along the planted words (else, those rows being the
        # longest, any random direction would promote them too)
        others = [i for i in range(coder.d_sae) if i not in PLANTED]
        coder.W_dec[others] -= (coder.W_dec[others] @ rows.T) @ rows
    tl = tl_backend.TransformerLensBackend(convert.hooked_transformer_from_hf(hf, tok))
    nn = nn_backend.NNsightBackend(hf, tokenizer=tok)
    return tl, nn, coder


def record(coder, latent: int) -> LatentRecord:
    ref = LatentRef(coder_id=coder.id, hook=coder.hook, index=latent)
    return LatentRecord(latent=ref, stats=LatentStats(n_tokens=0, count=0))


def said(rec: LatentRecord, word: str) -> Explanation:
    return Explanation(latent=rec.latent, text=f'the word "{word.strip()}"', explainer="planted")


@pytest.mark.parametrize("which", ["transformerlens", "nnsight"])
def test_planted_output_latents_are_picked_and_shuffled_explanations_are_not(stack, which):
    """Figures, the same on both backends (4 planted latents x 3 repetitions): true explanations
    12/12 (accuracy 1.0; each explained latent's strength within 10% of KL 0.5, its set writing
    its word in every continuation); explanations shuffled among the planted latents 4/12 (1/3,
    chance). The random arms are reported unreached: on this flat random model a direction with
    no long unembedding row saturates near KL 0.06 (clamp value 1e4)."""
    tl, nn, coder = stack
    backend = tl if which == "transformerlens" else nn
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": ScriptedProvider(judge)})
    scorer = OutputEvalScorer(max_new_tokens=15)  # shorter than the paper's 25: fast enough
    words = list(PLANTED.values())
    true, shuffled = [], []
    for i, (latent, word) in enumerate(PLANTED.items()):
        rec = record(coder, latent)
        s = asyncio.run(scorer.score(rec, said(rec, word), ctx))
        assert s.status is Status.OK, s.error
        assert s.metrics["strength_reached"] == 1.0
        assert abs(s.metrics["kl_reached"] - 0.5) <= 0.05
        assert s.metrics["n_unreached"] == 2 and len(s.evidence["unreached"]) == 2
        written = s.evidence["sets"][0]["continuations"]
        assert all(c.count(word) >= 3 for c in written), written
        true.append(s.value)
        shuffled.append(asyncio.run(scorer.score(rec, said(rec, words[i - 1]), ctx)).value)
    assert np.mean(true) == 1.0, true
    assert np.mean(shuffled) == pytest.approx(1 / 3), shuffled
