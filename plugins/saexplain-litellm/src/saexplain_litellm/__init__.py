"""saexplain-litellm: LLM providers for saexplain.

Importing this module must stay light: litellm is imported only when a provider is built.
"""

from __future__ import annotations

from saexplain import hookimpl
from saexplain.hookspecs import Register


@hookimpl
def register_providers(register: Register) -> None:
    """Providers are added here as they are implemented."""
