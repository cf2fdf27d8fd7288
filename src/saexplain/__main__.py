"""`python -m saexplain ...`: the same as the `saexplain` command."""

from __future__ import annotations

import sys

from saexplain.cli import main

if __name__ == "__main__":
    sys.exit(main())
