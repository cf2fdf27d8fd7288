"""LLM providers in the core: building them by role for a run, and the middleware every
provider gets."""
