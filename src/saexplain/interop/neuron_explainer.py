"""OpenAI neuron-explainer (automated-interpretability): records and explanations, both ways.

Records: a `NeuronRecord` JSON object (`"dataclass_name": "NeuronRecord"`) with `neuron_id`
(`{"dataclass_name": "NeuronId", "layer_index", "neuron_index"}`),
`most_positive_activation_records`, `random_sample`, `random_sample_by_quantile` (a list of
lists), `quantile_boundaries`, and the moments `mean`, `variance`, `skewness`, `kurtosis`; each
example an `ActivationRecord` with `tokens` (strings) and `activations`.

`load_neuron_record` maps it to a `LatentRecord`: the most positive records are the explanation
examples (sampler `top`), the quantile samples the scoring examples (their bin as `quantile`,
sampler `quantile`), the random sample the negatives (kind `random`). The format has token
strings only, so token ids are -1. Its statistics are over all tokens, ours over firing ones, so
the record's `LatentStats` are recomputed from the imported examples (`n_tokens`: their tokens).

Explanations: a `NeuronSimulationResults` object with `neuron_id` and `scored_explanations`, each
`{"explanation", "scored_simulation": {"ev_correlation_score", ...}}`. `load_neuron_explanations`
reads one file or a folder of them (keyed by (`layer<layer_index>`, neuron index); the score is
`ev_correlation_score`). `export_neuron_record` and `export_neuron_explanations` write the same
shapes, the latter with a `simulation` scorer's value (if the run has one) as the score.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from saexplain.files import save
from saexplain.interop._common import (
    ImportedExplanation,
    ImportedExplanations,
    InteropFormatError,
    coder_latents,
    collect,
    exported_explainers,
    read_json_file,
    valid_value,
)
from saexplain.models import Example, ExampleKind, LatentRecord, LatentRef, LatentStats

if TYPE_CHECKING:
    from saexplain.report.results import RunResults

__all__ = [
    "EXPLAINER_NAME",
    "export_neuron_explanations",
    "export_neuron_record",
    "load_neuron_explanations",
    "load_neuron_record",
]

EXPLAINER_NAME = "neuron_explainer"  # the explainer name imported explanations get


def _tagged(data: object, name: str, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InteropFormatError(f"{where}: expected a {name} object")
    tag = data.get("dataclass_name")
    if tag is not None and tag != name:
        raise InteropFormatError(f"{where}: dataclass_name is {tag!r}, expected {name!r}")
    return data


def _neuron_id(data: dict[str, Any], where: str) -> tuple[int, int]:
    nid = _tagged(data.get("neuron_id"), "NeuronId", f"{where}: neuron_id")
    layer, neuron = nid.get("layer_index"), nid.get("neuron_index")
    for name, value in (("layer_index", layer), ("neuron_index", neuron)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InteropFormatError(f"{where}: neuron_id.{name} must be a non-negative integer")
    assert isinstance(layer, int) and isinstance(neuron, int)
    return layer, neuron


def layer_source(layer: int) -> str:
    """The source name of a neuron-explainer layer (the hook of imported records)."""
    return f"layer{layer}"


def _example(data: object, where: str, **fields: Any) -> Example:
    rec = _tagged(data, "ActivationRecord", where)
    tokens, acts = rec.get("tokens"), rec.get("activations")
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise InteropFormatError(f"{where}: `tokens` must be a list of strings")
    if not isinstance(acts, list):
        raise InteropFormatError(f"{where}: `activations` must be a list of numbers")
    try:
        return Example(
            tokens=tuple(-1 for _ in tokens),  # the format has token strings only
            str_tokens=tuple(tokens),
            activations=tuple(acts),
            **fields,
        )
    except ValidationError as e:
        problem = e.errors()[0]["msg"]
        raise InteropFormatError(f"{where}: {problem}") from e


def _stats(examples: Sequence[Example], boundaries: tuple[float, ...]) -> LatentStats:
    acts = [a for ex in examples for a in ex.activations]
    firing = [a for a in acts if a > 0]
    return LatentStats(
        n_tokens=len(acts),
        count=len(firing),
        max=max(acts, default=0.0),
        mean=sum(firing) / len(firing) if firing else 0.0,
        quantiles=boundaries,
    )


def load_neuron_record(
    path: str | Path, *, coder_id: str = "neuron-explainer", hook: str | None = None
) -> LatentRecord:
    """A `NeuronRecord` JSON file as a `LatentRecord` of `coder_id` at `hook` (default
    `layer<layer_index>`); malformed input raises `InteropFormatError` naming the file."""
    file = Path(path)
    data = _tagged(read_json_file(file, "NeuronRecord"), "NeuronRecord", str(file))
    layer, neuron = _neuron_id(data, str(file))

    def records(key: str) -> list[object]:
        value = data.get(key, [])
        if not isinstance(value, list):
            raise InteropFormatError(f"{file}: `{key}` must be a list of ActivationRecords")
        return value

    top = [
        _example(r, f"{file}: most_positive_activation_records[{i}]", sampler="top")
        for i, r in enumerate(records("most_positive_activation_records"))
    ]
    scoring = []
    for q, group in enumerate(records("random_sample_by_quantile")):
        if not isinstance(group, list):
            raise InteropFormatError(f"{file}: random_sample_by_quantile[{q}] must be a list")
        scoring += [
            _example(
                r, f"{file}: random_sample_by_quantile[{q}][{i}]", quantile=q, sampler="quantile"
            )
            for i, r in enumerate(group)
        ]
    negatives = [
        _example(r, f"{file}: random_sample[{i}]", kind=ExampleKind.RANDOM, sampler="random")
        for i, r in enumerate(records("random_sample"))
    ]
    bounds = data.get("quantile_boundaries") or []
    if not isinstance(bounds, list) or not all(
        isinstance(b, int | float) and not isinstance(b, bool) for b in bounds
    ):
        raise InteropFormatError(f"{file}: `quantile_boundaries` must be a list of numbers")
    return LatentRecord(
        latent=LatentRef(coder_id=coder_id, hook=hook or layer_source(layer), index=neuron),
        stats=_stats([*top, *scoring, *negatives], tuple(float(b) for b in bounds)),
        explanation_examples=tuple(top),
        scoring_examples=tuple(scoring),
        non_activating=tuple(negatives),
        sampling={"imported_from": "neuron-explainer", "layer_index": layer},
    )


def _activation_record(ex: Example) -> dict[str, Any]:
    return {
        "dataclass_name": "ActivationRecord",
        "tokens": list(ex.str_tokens),
        "activations": list(ex.activations),
    }


def _neuron_id_json(layer: int, index: int) -> dict[str, Any]:
    return {"dataclass_name": "NeuronId", "layer_index": layer, "neuron_index": index}


def export_neuron_record(record: LatentRecord, path: str | Path, *, layer: int = 0) -> Path:
    """Write a `LatentRecord` as a `NeuronRecord` JSON file (the moments are over all the
    record's tokens, as neuron-explainer computes them)."""
    by_quantile: dict[int, list[dict[str, Any]]] = {}
    for ex in record.scoring_examples:
        by_quantile.setdefault(ex.quantile or 0, []).append(_activation_record(ex))
    n_bins = max(by_quantile, default=-1) + 1
    acts = [
        a
        for ex in (*record.explanation_examples, *record.scoring_examples, *record.non_activating)
        for a in ex.activations
    ]
    mean = sum(acts) / len(acts) if acts else 0.0
    var = sum((a - mean) ** 2 for a in acts) / len(acts) if acts else 0.0
    data = {
        "dataclass_name": "NeuronRecord",
        "neuron_id": _neuron_id_json(layer, record.latent.index),
        "random_sample": [_activation_record(ex) for ex in record.non_activating],
        "random_sample_by_quantile": [by_quantile.get(q, []) for q in range(n_bins)],
        "quantile_boundaries": list(record.stats.quantiles),
        "mean": mean,
        "variance": var,
        "skewness": None,  # not computed: saexplain keeps no third and fourth moments
        "kurtosis": None,
        "most_positive_activation_records": [
            _activation_record(ex) for ex in record.explanation_examples
        ],
    }
    return save(path, json.dumps(data, ensure_ascii=False) + "\n")


def export_neuron_explanations(
    results: RunResults,
    out_dir: str | Path,
    *,
    explainer: str,
    scorer: str = "simulation",
    layer: int = 0,
    coder_id: str | None = None,
    include_controls: bool = False,
) -> list[Path]:
    """One `NeuronSimulationResults` file per latent with an ok explanation,
    `<out>/<layer>/<index>.json` (neuron-explainer's layout); the score is `scorer`'s value.
    A shuffled control is refused unless `include_controls`."""
    exported_explainers(results, explainer, include_controls=include_controls)
    paths = []
    for res in coder_latents(results, coder_id):
        text = res.explanation(explainer)
        if text is None:
            continue
        score = res.scores.get((explainer, scorer))
        data = {
            "dataclass_name": "NeuronSimulationResults",
            "neuron_id": _neuron_id_json(layer, res.latent.index),
            "scored_explanations": [
                {
                    "dataclass_name": "ScoredExplanation",
                    "explanation": text,
                    "scored_simulation": {
                        "dataclass_name": "ScoredSimulation",
                        "scored_sequence_simulations": [],
                        "ev_correlation_score": None if score is None else valid_value(score),
                    },
                }
            ],
        }
        target = Path(out_dir) / str(layer) / f"{res.latent.index}.json"
        paths.append(save(target, json.dumps(data, ensure_ascii=False) + "\n"))
    return paths


def _explanations_of(file: Path) -> list[ImportedExplanation]:
    data = _tagged(
        read_json_file(file, "NeuronSimulationResults"), "NeuronSimulationResults", str(file)
    )
    layer, neuron = _neuron_id(data, str(file))
    scored = data.get("scored_explanations")
    if not isinstance(scored, list):
        raise InteropFormatError(f"{file}: `scored_explanations` must be a list")
    out = []
    for i, entry in enumerate(scored):
        where = f"{file}: scored_explanations[{i}]"
        entry = _tagged(entry, "ScoredExplanation", where)
        text = entry.get("explanation")
        if not isinstance(text, str) or not text.strip():
            raise InteropFormatError(f"{where}: `explanation` must be a non-empty string")
        sim = entry.get("scored_simulation")
        value = sim.get("ev_correlation_score") if isinstance(sim, dict) else None
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InteropFormatError(f"{where}: ev_correlation_score must be a number or null")
        name = EXPLAINER_NAME if i == 0 else f"{EXPLAINER_NAME}_{i}"  # several per neuron
        score = None if value is None else float(value)
        out.append(
            ImportedExplanation(layer_source(layer), neuron, text.strip(), name, score=score)
        )
    return out


def load_neuron_explanations(path: str | Path) -> ImportedExplanations:
    """Explanations from `NeuronSimulationResults` JSON: one file, or a folder of them
    (searched recursively for `*.json`), keyed by (`layer<layer_index>`, neuron index)."""
    root = Path(path)
    if root.is_dir():
        files = sorted(root.rglob("*.json"))
    elif root.is_file():
        files = [root]
    else:
        raise InteropFormatError(f"{root}: no such file or folder (neuron-explainer results)")
    return collect([item for file in files for item in _explanations_of(file)], root)
