"""The public kit for writing explainers and scorers: built-in methods, plugins and your own code
import from here, and only from here.

What to use for what:

- Declaring a method: an explainer has `name`, `needs` and `async explain(record, ctx)`; a scorer
  has `name`, `needs` and `async score(record, explanation, ctx)`. `needs = Needs(provider=...,
  backend=..., coder=...)` says what the run must build for it (`needs_of` reads it). `ctx` is
  a `MethodContext` (`ctx.provider(role)`, `ctx.backend`, `ctx.coder`, `ctx.seed`). Register it
  from a plugin with `hookimpl` and `register_explainers(register)` / `register_scorers(register)`.
  A method that can tell before the run whether it can work with the run's components implements
  `Preflight` (`preflight(ctx)`, raising a `ConfigError`): it runs once, before any work.
- Results: `Explanation`, `Score` (with `Prediction`s and `Status`), `Usage`; `error_score` for a
  scorer that cannot score, `final_score` once its calls are done (a value, or why there is
  none: ERROR when nothing was answered, FAILED otherwise); never a sentinel value.
- Randomness: `latent_seed(ctx, record, purpose)` for every per-latent random choice
  (`derive_seed` for other stable seeds).
- Model work: `run_model(ctx.backend, fn, ...)` runs it off the event loop under the backend's
  model lock (`model_lock` in synchronous code), so methods never see each other's hooks.
- Held-out data for scorers: `draw_items` (the latent's seed, its random stream and the capped
  items drawn from it), `select_items` (scoring examples and negatives as `Item`s),
  `input_error` (an explanation that cannot be scored). Explanation and scoring examples are
  disjoint by construction: `LatentRecord` rejects a record where they overlap.
- Showing text: `first_shown` / `bos_id` (the one BOS rule), `display_tokens`, `neutralise`
  (the one escaping), `one_line`, `one_line_explanation`, `token_list`, `truncate`, and the
  highlight rendering `render_example`, `highlight`, `marked`, `render_token_values`,
  `clean_token(s)`.
- Asking an LLM from an explainer: subclass `LLMExplainer` (implement `gather` returning
  `Evidence` or raising `EvidenceUnavailable`, and `shot_fields`); `ask` / `partial_result` for
  explainers that gather evidence their own way; prompts are data: `load_prompt`,
  `PromptTemplate`, `check_prompt`, `table`.
- Asking an LLM from a scorer: `call` (provider failures become an `Outcome` with an error),
  `total_usage`; binary classification scorers subclass `BinaryScorer` (implement
  `render_items`). An answer a method cannot use (it does not parse) goes to
  `discard_cached(response)`, so a rerun asks again instead of replaying it.
- Reading answers: `parse_explanation`, `bound_explanation` (the style's length bound,
  `STYLE_MAX_WORDS`), `parse_binary`, `token_at_offsets`, `p_one`, `expected_value`,
  `value_mass`; they raise `ParseError`.
- Reading the subject model: `require_model`, `to_numpy`, `logit_lens`, `top_tokens`
  (`TokenScore`); edits `Clamp`, `Add`, `Replace` on a `TokenBatch`; `write_hook(coder)`, where
  a coder's decoder writes (a transcoder's `hook_out`).
- Intervening at equal strength (output-side methods): `calibrate` finds the clamp value or
  steering scale reaching a target mean KL over `NEUTRAL_PROMPTS` (a `Strength`, cached in
  `ctx.work_dir`; `mean_kl` measures one edit), `generate_pairs` gives clean and intervened
  continuations of the same prompts.
- Generic explanations: `generic_reasons` (near-duplicates over a run's explanations, and
  instruction echoes of an explainer's `PromptWording`, with `GenericFlags` thresholds),
  `flag_generic` (exact duplicates), `echoes_prompt`.
- Metrics: `classification_metrics`, `auroc`, `pearson`, `saebench_accuracy`.
- Settings: declare them as a `MethodSettings` subclass named `Settings` in the method class
  (fields with defaults, bounds and a `description`), build with `Settings.parse(name, kwargs)`
  (bad values become a `ConfigError` naming the method and the setting) and record
  `settings.model_dump(mode="json")`; `settings_table` renders the docs table. Errors
  `ConfigError` (bad settings), `LatentIndexError`, `DimensionMismatchError`, `BackendError`,
  `ParseError`, `ProviderError`, all `SaexplainError`s.
"""

from __future__ import annotations

from saexplain.concurrency import model_lock, run_model
from saexplain.errors import (
    BackendError,
    ConfigError,
    DimensionMismatchError,
    LatentIndexError,
    ParseError,
    ProviderError,
    SaexplainError,
)
from saexplain.hookspecs import Register, hookimpl
from saexplain.methods.classify import FIRST_TOKENS, BinaryScorer
from saexplain.methods.generic import (
    GenericFlags,
    echoes_prompt,
    flag_generic,
    generic_reasons,
)
from saexplain.methods.interventions import (
    NEUTRAL_PROMPTS,
    Strength,
    calibrate,
    generate_pairs,
    mean_kl,
)
from saexplain.methods.items import (
    Item,
    draw_items,
    error_score,
    final_score,
    input_error,
    select_items,
)
from saexplain.methods.llm import (
    Evidence,
    EvidenceUnavailable,
    LLMExplainer,
    Outcome,
    Style,
    ask,
    call,
    check_prompt,
    partial_result,
    table,
    total_usage,
)
from saexplain.methods.model import TokenScore, logit_lens, require_model, to_numpy, top_tokens
from saexplain.methods.parsing import (
    STYLE_MAX_WORDS,
    Parsed,
    bound_explanation,
    expected_value,
    p_one,
    parse_binary,
    parse_explanation,
    token_at_offsets,
    value_mass,
)
from saexplain.methods.seeds import derive_seed, latent_seed
from saexplain.methods.settings import MethodSettings, settings_table
from saexplain.methods.text import (
    bos_id,
    display_tokens,
    first_shown,
    neutralise,
    one_line,
    one_line_explanation,
    token_list,
    truncate,
)
from saexplain.metrics import auroc, classification_metrics, pearson, saebench_accuracy
from saexplain.models import (
    ChatRequest,
    ChatResponse,
    Choice,
    Example,
    ExampleKind,
    Explanation,
    LatentRecord,
    LatentRef,
    Message,
    Prediction,
    Score,
    Settings,
    Status,
    TokenLogprob,
    Usage,
)
from saexplain.prompts import PromptTemplate, load_prompt
from saexplain.protocols import (
    Add,
    Backend,
    ChatTemplating,
    Clamp,
    MethodContext,
    Needs,
    Preflight,
    ProbeAndGenerate,
    PromptWording,
    Provider,
    Replace,
    SparseCoder,
    TokenBatch,
    needs_of,
    write_hook,
)
from saexplain.providers.cache import discard_cached
from saexplain.render import (
    clean_token,
    clean_tokens,
    highlight,
    marked,
    render_example,
    render_token_values,
    scale_values,
)

__all__ = [
    "FIRST_TOKENS",
    "NEUTRAL_PROMPTS",
    "STYLE_MAX_WORDS",
    "Add",
    "Backend",
    "BackendError",
    "BinaryScorer",
    "ChatRequest",
    "ChatResponse",
    "ChatTemplating",
    "Choice",
    "Clamp",
    "ConfigError",
    "DimensionMismatchError",
    "Evidence",
    "EvidenceUnavailable",
    "Example",
    "ExampleKind",
    "Explanation",
    "GenericFlags",
    "Item",
    "LLMExplainer",
    "LatentIndexError",
    "LatentRecord",
    "LatentRef",
    "Message",
    "MethodContext",
    "MethodSettings",
    "Needs",
    "Outcome",
    "ParseError",
    "Parsed",
    "Prediction",
    "Preflight",
    "ProbeAndGenerate",
    "PromptTemplate",
    "PromptWording",
    "Provider",
    "ProviderError",
    "Register",
    "Replace",
    "SaexplainError",
    "Score",
    "Settings",
    "SparseCoder",
    "Status",
    "Strength",
    "Style",
    "TokenBatch",
    "TokenLogprob",
    "TokenScore",
    "Usage",
    "ask",
    "auroc",
    "bos_id",
    "bound_explanation",
    "calibrate",
    "call",
    "check_prompt",
    "classification_metrics",
    "clean_token",
    "clean_tokens",
    "derive_seed",
    "discard_cached",
    "display_tokens",
    "draw_items",
    "echoes_prompt",
    "error_score",
    "expected_value",
    "final_score",
    "first_shown",
    "flag_generic",
    "generate_pairs",
    "generic_reasons",
    "highlight",
    "hookimpl",
    "input_error",
    "latent_seed",
    "load_prompt",
    "logit_lens",
    "marked",
    "mean_kl",
    "model_lock",
    "needs_of",
    "neutralise",
    "one_line",
    "one_line_explanation",
    "p_one",
    "parse_binary",
    "parse_explanation",
    "partial_result",
    "pearson",
    "render_example",
    "render_token_values",
    "require_model",
    "run_model",
    "saebench_accuracy",
    "scale_values",
    "select_items",
    "settings_table",
    "table",
    "to_numpy",
    "token_at_offsets",
    "token_list",
    "top_tokens",
    "total_usage",
    "truncate",
    "value_mass",
    "write_hook",
]
