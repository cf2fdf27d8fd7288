"""`selfexplain`: the subject model explains its own latent (no LLM, no activation dataset).

A chat prompt asks for the meaning of a placeholder word ("X"), with the answer prefilled up to the
explanation. The residual stream entering block `patch_layer` is replaced, at every placeholder
token, by `scale * d` (`d` the latent's unit decoder direction), for a sweep of scales evaluated
as one batch. From the same patched passes come, per scale:

- self-similarity: cosine between `d` and the residual of the last prompt token entering block
  `probe_layer`;
- entropy of the first answer token's distribution;
- composite: `alpha * norm(selfsim) - (1 - alpha) * norm(entropy)`, both min-max normalised across
  the sweep;
- the answer the model generates (greedy, or sampled), decoded from that same pass's KV cache
  where the backend can.

The answers of the `top_k` scales by composite are the explanations; each of their tokens'
relevancy is its probability with the patch minus without it. A latent whose peak self-similarity
stays under `min_selfsim` is reported as not self-explainable (`Status.FAILED`). `flag_generic`
flags answers that many latents share. Prompts are data (`selfexplain_meaning.toml`,
`selfexplain_repeat.toml`); a `prompts` setting takes bundled names or paths to user files.

The package, one module per part: `prompt` (rendering and placeholder positions), `sweep` (the
scale sweep and composite), `relevancy`, `generic` (the generic-answer flags) and `explainer` (the
`SelfExplainer` method and its registration).
"""

from __future__ import annotations

from saexplain.explainers.selfexplain.explainer import SelfExplainer, register
from saexplain.explainers.selfexplain.generic import flag_generic
from saexplain.explainers.selfexplain.prompt import PreparedPrompt, prepare_prompt
from saexplain.explainers.selfexplain.relevancy import relevancy
from saexplain.explainers.selfexplain.sweep import Sweep, composite, sweep

__all__ = [
    "PreparedPrompt",
    "SelfExplainer",
    "Sweep",
    "composite",
    "flag_generic",
    "prepare_prompt",
    "register",
    "relevancy",
    "sweep",
]
