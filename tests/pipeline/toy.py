"""The toy world of the pipeline tests: it lives in `saexplain.testing.toy` (importable by an
executor's worker processes); this module re-exports it for the tests' `from . import toy`."""

from saexplain.testing.toy import *  # noqa: F403
from saexplain.testing.toy import (  # noqa: F401  (hook implementations, found by pluggy)
    register_explainers,
    register_scorers,
)
