"""From a store to `LatentRecord`s: activating windows, samplers, held-out split, negatives.

Activating examples are windows of `window` tokens placed around activation peaks (`lead` tokens
before the peak), never overlapping one another. Samplers pick windows from that pool:

- `top`: the highest-activating windows;
- `random`: uniformly at random;
- `quantile`: stratified by activation bins (equal-count bins over the pool, `n_bins` of them,
  bin 0 the weakest); `n` is spread evenly over the bins;
- `importance`: at random with probability proportional to the window's max activation.

Samplers mix: the explanation samplers draw first, then the scoring samplers draw from what is
left, so explanation and scoring examples are disjoint windows by construction (held-out split).
Every example is tagged with its sampler and its activation bin.

Non-activating examples: `random` (windows where the latent is zero, in contexts where it never
fires), `neighbours` (windows where the latents with the most similar decoder directions fire
and this one does not), `similar_text` (windows nearest to the activating examples in embedding
space; a hashed bag-of-tokens embedding stands in when no embedding model is given).

All randomness comes from a per-latent seed derived from the run seed, the coder and the latent,
so two latents never share their negatives by accident and a rerun reproduces every record.

The pieces live in `config` (`RecordConfig` and its sampler and negatives specs), `selection`
(`select_latents`), `windows` (the window pool and the samplers) and `records` (`RecordBuilder`,
`build_records`); import them from here.
"""

from __future__ import annotations

from saexplain.sampling.config import (
    NegativeName,
    NegativeSpec,
    RecordConfig,
    SamplerName,
    SamplerSpec,
)
from saexplain.sampling.records import (
    Embedder,
    RecordBuilder,
    RecordOutcome,
    build_records,
    token_bag_embedding,
)
from saexplain.sampling.selection import SelectionReport, select_latents
from saexplain.sampling.windows import WindowPool, build_pool, sample

__all__ = [
    "Embedder",
    "NegativeName",
    "NegativeSpec",
    "RecordBuilder",
    "RecordConfig",
    "RecordOutcome",
    "SamplerName",
    "SamplerSpec",
    "SelectionReport",
    "WindowPool",
    "build_pool",
    "build_records",
    "sample",
    "select_latents",
    "token_bag_embedding",
]
