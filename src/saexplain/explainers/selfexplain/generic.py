"""Generic answers: moved to the methods kit (`saexplain.methods.generic`); re-exported here."""

from __future__ import annotations

from saexplain.methods import flag_generic

__all__ = ["flag_generic"]
