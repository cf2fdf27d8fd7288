"""`saexplain ...` in its own process over a slow toy world, for the Ctrl-C tests:

    python cli_job.py MARKER BATCH_S LLM_S run CONFIG [KEY=VALUE ...] [-q]

Backend `toyslow` sleeps BATCH_S per collection batch and creates the file MARKER when
collection starts; provider `toyslowllm` takes LLM_S per call. Everything else is the toy world.
"""

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import saexplain
from saexplain.cli import main
from saexplain.hookspecs import Register
from saexplain.protocols import SparseActivations, SparseCoder, TokenBatch
from saexplain.testing import FakeBackend, fresh_plugin_manager
from tests.pipeline import toy

MARKER, BATCH_S, LLM_S = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])


class SlowBackend(FakeBackend):
    def latent_acts(
        self,
        tokens: TokenBatch,
        coders: Sequence[SparseCoder],
        *,
        latents: Mapping[str, Sequence[int]] | None = None,
    ) -> dict[str, SparseActivations]:
        if tokens.ids.shape[0] > 1:  # a collection batch (the fit check in prepare reads one text)
            MARKER.touch()
            time.sleep(BATCH_S)
        return super().latent_acts(tokens, coders, latents=latents)


class Slow:
    @saexplain.hookimpl
    def register_backends(self, register: Register) -> None:
        def slow(model: Any, **settings: Any) -> SlowBackend:
            return SlowBackend(d_model=16, n_layers=2, vocab_size=256, seed=0)  # as toy.world()

        register("toyslow", slow)

    @saexplain.hookimpl
    def register_providers(self, register: Register) -> None:
        register("toyslowllm", lambda model, **settings: toy.llm(LLM_S))


if __name__ == "__main__":
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        pm.register_plugin(toy.Stack(), name="toystack")
        pm.register_plugin(Slow(), name="slow")
        sys.exit(main(sys.argv[4:]))
