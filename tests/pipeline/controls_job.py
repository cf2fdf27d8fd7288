"""A run with shuffled controls in its own process, for the SIGKILL test:
`python controls_job.py OUT LATENCY`."""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from saexplain.pipeline import arun
from saexplain.testing import fresh_plugin_manager
from tests.pipeline import toy
from tests.pipeline.test_pipeline import config


def main(out: str, latency: float) -> None:
    backend, coder, texts = toy.world()
    with fresh_plugin_manager() as pm:
        pm.register_plugin(toy, name="toy")
        cfg = config(Path(out), concurrency=2, shuffled_controls=True)
        asyncio.run(
            arun(
                cfg,
                model=backend,
                coder=coder,
                dataset=texts,
                providers={"default": toy.llm(latency)},
                progress=False,
            )
        )


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
