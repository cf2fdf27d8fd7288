"""A two-coder run in its own process, for the SIGKILL test:
`python multi_coder_job.py OUT LATENCY`."""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.pipeline.test_multi_coder import run_world

if __name__ == "__main__":
    asyncio.run(run_world(Path(sys.argv[1]), "both", float(sys.argv[2])))
