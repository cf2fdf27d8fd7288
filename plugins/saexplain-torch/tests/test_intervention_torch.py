"""The `intervention` scorer on real torch backends: a tiny random GPT-2 whose SAE at the last
residual has a planted *output* latent (its decoder row is the unembedding direction of " cat",
so clamping it makes the model write "cat"), through the TransformerLens and nnsight backends,
scored by a competent scorer-model double that never knows which arm a text came from."""

from __future__ import annotations

import asyncio
import dataclasses
import re

import pytest
import torch
from saexplain_torch.testing import gpt2_tokenizer, make_coder, tiny_gpt2
from torch_stacks import BACKENDS

from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    Explanation,
    LatentRecord,
    LatentRef,
    LatentStats,
    Status,
    TokenLogprob,
    Usage,
)
from saexplain.protocols import MethodContext
from saexplain.scorers.intervention import InterventionScorer
from saexplain.testing import ScriptedProvider, check_scorer, explanation_keywords

LATENT = 5
HOOK = "blocks.1.hook_resid_post"  # the last residual of the 2-layer model: the final norm next
SETTINGS = {"target_kl": [0.5], "max_new_tokens": 12, "n_random_latents": 2}


def competent_pm(request: ChatRequest) -> ChatResponse:
    """log p(explanation | text): a keyword of the explanation is likelier (-1 vs -4) when the
    text it reads contains that word."""
    assert request.score_text is not None
    text = re.search(r"^Text: (.*)$", request.messages[-1].content, re.MULTILINE)
    seen = {w.lower() for w in re.findall(r"\w+", text.group(1) if text else "")}
    keywords = set(explanation_keywords(request.score_text)) & seen
    scored = tuple(
        TokenLogprob(token=w, logprob=-1.0 if w.lower() in keywords else -4.0)
        for w in re.findall(r"\w+|[^\w\s]+", request.score_text)
    )
    return ChatResponse(model="pm", choices=(Choice(text=""),), scored=scored, usage=Usage(calls=1))


@pytest.fixture(scope="module")
def planted():
    tok = gpt2_tokenizer()
    hf = tiny_gpt2(seed=3)
    sae = make_coder(hf.config.n_embd, 16, HOOK, seed=4)
    cat = tok.encode(" cat")[0]
    with torch.no_grad():
        # A random GPT-2's logits are tiny (0.02-scale embeddings after the final norm), so no
        # edit could reach a KL of 0.5: sharpen them as training would.
        hf.transformer.ln_f.weight.mul_(10.0)
        u = hf.lm_head.weight[cat] / hf.lm_head.weight[cat].norm()  # tied: the embedding row
        sae.W_dec[LATENT] = u
        sae.W_enc[:, LATENT] = u
    return hf, tok, sae


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_the_true_explanation_beats_both_baselines_on_a_real_model(planted, name):
    hf, tok, coder = planted
    backend = BACKENDS[name](hf, tok)
    provider = ScriptedProvider(competent_pm)
    provider.capabilities = dataclasses.replace(provider.capabilities, prompt_logprobs=True)
    ctx = MethodContext(backend=backend, coder=coder, providers={"scorer": provider}, seed=5)
    ref = LatentRef(coder_id=coder.id, hook=coder.hook, index=LATENT)
    record = LatentRecord(latent=ref, stats=LatentStats(n_tokens=0, count=0))

    def said(word: str) -> Explanation:
        return Explanation(latent=ref, text=f'the word "{word}"', explainer="planted")

    true = check_scorer(InterventionScorer(**SETTINGS), record, said("cat"), ctx)
    assert true.status is Status.OK and true.n_errors == 0, true.error
    m = true.metrics
    print(name, {k: v for k, v in m.items() if k.startswith("kl=")})
    assert m["kl=0.5/reached"] == 1.0 and abs(m["kl=0.5/kl"] - 0.5) <= 0.05
    pairs = true.evidence["targets"][0]["pairs"]
    # sampled at temperature 1: the intervened arm says " cat" clearly more often than the clean
    said_cat = [sum("cat" in pair[arm] for pair in pairs) for arm in (0, 1)]
    assert said_cat[1] >= said_cat[0] + 2, pairs
    assert m["kl=0.5/score"] > m["kl=0.5/random_latents"] + 1.0
    assert m["kl=0.5/score"] > m["kl=0.5/decoys"] + 1.0
    shuffled = asyncio.run(InterventionScorer(**SETTINGS).score(record, said("river"), ctx))
    assert shuffled.value is not None and abs(shuffled.value) < 0.5 < true.value
