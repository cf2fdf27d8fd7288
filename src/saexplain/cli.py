"""The `saexplain` command line. Heavy libraries are imported only inside commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from saexplain.plugins import PluginInfo, PluginManager
    from saexplain.registry import Registry


def _cmd_plugins(args: argparse.Namespace) -> int:
    from saexplain.plugins import get_plugin_manager

    manager = get_plugin_manager()
    infos = manager.info()
    if args.json:
        print(json.dumps([info.as_dict() for info in infos], indent=2))
        return 0
    for info in infos:
        origin = f"{info.distribution} {info.version}" if info.distribution else info.source
        print(f"{info.name}  [{info.state}]  {origin}")
        if info.hooks:
            print(f"    hooks: {', '.join(info.hooks)}")
        for kind, names in sorted(info.components.items()):
            print(f"    {kind}s:")
            width = max(len(n) for n in names)
            for name in names:
                print(f"      {name:<{width}}  {_component_note(info, kind, name)}".rstrip())
        for kind, held in sorted(info.refused.items()):
            print(f"    refused {kind}s: {', '.join(sorted(held))} (see conflicts)")
        if info.error:
            print(f"    error: {info.error}")
        if info.hint:
            print(f"    hint: {info.hint}")
    print(_providers_line(manager))
    conflicts = _conflicts(manager, infos)
    if conflicts:
        print("conflicts (a name that more than one plugin registered):")
        for line in conflicts:
            print(f"  {line}")
    failed = sum(info.state == "failed" for info in infos)
    print(f"{len(infos)} plugins, {failed} failed to load")
    return 0


def _providers_line(manager: PluginManager) -> str:
    """The LLM providers a run can name, and how to name one."""
    providers = list(manager.providers)
    if not providers:
        return 'providers: none installed (pip install "saexplain[litellm]" adds litellm and local)'
    names = ", ".join(f"{c.name} ({c.provenance.plugin})" for c in providers)
    return f'providers: {names}; choose one with provider="{providers[0].name}:<model>"'


def _conflicts(manager: PluginManager, infos: Sequence[PluginInfo]) -> list[str]:
    """One line per name that several plugins registered: who claimed it, and what happened."""
    from saexplain.plugins import ENV_DENY, KINDS
    from saexplain.registry import Provenance

    lines: list[str] = []
    for kind in KINDS:
        registry: Registry = getattr(manager, f"{kind}s")  # manager.backends, .scorers, ...
        ambiguous = registry.ambiguous
        for name, claimants in sorted(ambiguous.items()):
            lines.append(
                f"{kind} {name!r}: registered by {', '.join(map(str, claimants))}; refused, none "
                f"of them is used: selecting it is an error until only one plugin is enabled "
                f"({ENV_DENY}=<plugin>)"
            )
        for info in infos:  # a built-in's name taken without override=True: the built-in stays
            for name, holder in sorted(info.refused.get(kind, {}).items()):
                if name not in ambiguous:
                    refused = Provenance(info.name, info.distribution, info.version)
                    lines.append(
                        f"{kind} {name!r}: {holder} is used; {refused} registered it too and was "
                        "refused (a built-in is replaced only with override=True)"
                    )
    return lines


def _component_note(info: Any, kind: str, name: str) -> str:
    """A component's description, and whether it overrides or was overridden."""
    notes = [info.descriptions.get(kind, {}).get(name, "")]
    if name in info.overrides.get(kind, {}):
        notes.append(f"(overrides {info.overrides[kind][name]})")
    if name in info.overridden_by.get(kind, {}):
        notes.append(f"(overridden by {info.overridden_by[kind][name]})")
    return " ".join(n for n in notes if n)


INTERRUPTED = 130  # the exit status of a command stopped by Ctrl-C (128 + SIGINT), as shells use
TOO_MANY_ERRORS = 1  # the run finished, but a method's error rate is above `max_error_rate`


def _fail(message: str) -> int:
    if isinstance(message, _Stopped):
        return INTERRUPTED  # the Ctrl-C handler already printed how to resume
    print(f"saexplain: error: {message}", file=sys.stderr)
    return 2


def _guarded(work: Callable[[], Any]) -> Any:
    """Run `work`, which the first Ctrl-C stops at its next batch boundary. A saexplain error, a
    full disk or a read-only file system becomes a one-line message and exit status 2; Ctrl-C
    exit status 130, without a traceback."""
    import errno

    from saexplain.errors import Interrupted, SaexplainError
    from saexplain.files import storage_error
    from saexplain.interrupts import graceful_interrupts

    with graceful_interrupts():
        try:
            return work()
        except (Interrupted, KeyboardInterrupt):  # the first Ctrl-C, or a second one
            return _Stopped()
        except SaexplainError as e:
            return _Failed(str(e))
        except OSError as e:
            # writes outside `saexplain.files` (the store's arrays); errors that only a write
            # meets, so a file that cannot be read is not reported as one that cannot be written
            typed = storage_error(e.filename or "a file", e)
            if typed is None or e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                raise
            return _Failed(str(typed))


class _Failed(str):
    """What `_guarded` returns instead of a result: the one-line error message."""


class _Stopped(_Failed):
    """`_guarded`'s result when Ctrl-C stopped the work."""


def _check_error_rate(results: Any) -> int:
    """Exit status 1, with one line per method, when more of a method's results are errors
    than the run's `max_error_rate` allows (the results stay written); else 0."""
    from saexplain.models import RunConfig, Status

    limit = float(
        results.config.get("max_error_rate", RunConfig.model_fields["max_error_rate"].default)
    )
    from saexplain.report.summary import score_error_counts

    # (method, what it makes) -> [errors, results]
    counts: dict[tuple[str, str], list[int]] = {}
    for e in results.explanations:
        count = counts.setdefault((e.explainer, "explanations"), [0, 0])
        count[0] += e.status is Status.ERROR
        count[1] += 1
    # the summary's definition: scores of failed or generic-skipped explanations do not count
    for (explainer, scorer), c in score_error_counts(results).items():
        if c.n_scored:
            counts[f"{explainer}/{scorer}", "scores"] = [c.n_errors, c.n_scored]
    over = {key: (n, total) for key, (n, total) in counts.items() if n > limit * total}
    if not over:
        return 0
    print(
        f"saexplain: error: more results are errors than max_error_rate={limit:g} allows "
        f"(each one's `error` is in {results.path}; a rerun retries them):",
        file=sys.stderr,
    )
    for (method, kind), (n, total) in over.items():
        print(f"  {method}: {n} of {total} {kind} are errors ({n / total:.0%})", file=sys.stderr)
    return TOO_MANY_ERRORS


def _print_run(results: Any, *, report: bool) -> int:
    from saexplain.report import format_table

    if isinstance(results, _Failed):
        return _fail(results)
    print(format_table(results))
    where = results.path / "report" / "index.html" if report else results.path
    print(f"\n{'report' if report else 'run directory'}: {where}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from saexplain.config import load_config
    from saexplain.pipeline import run
    from saexplain.providers import spend_cap_stop

    config = args.config
    results = _guarded(lambda: run(load_config(config, args.overrides), progress=not args.quiet))
    code = _print_run(results, report=False)
    stop = None if code else spend_cap_stop(results.manifest.get("provider_calls"))
    if stop:
        return _fail(stop)  # work left undone by the cap: a non-zero exit
    return code or _check_error_rate(results)


def _cmd_score(args: argparse.Namespace) -> int:
    from saexplain.api import read_explanations, score_config
    from saexplain.config import load_config
    from saexplain.pipeline import run
    from saexplain.providers import spend_cap_stop

    def work() -> Any:
        explanations = read_explanations(args.file)
        config = score_config(load_config(args.config, args.overrides), explanations)
        return run(config, progress=not args.quiet)

    results = _guarded(work)
    code = _print_run(results, report=False)
    stop = None if code else spend_cap_stop(results.manifest.get("provider_calls"))
    if stop:
        return _fail(stop)
    return code or _check_error_rate(results)


def _cmd_demo(args: argparse.Namespace) -> int:
    # The one place the core names the demo plugin: `saexplain demo` is the README's first command.
    try:
        from saexplain_demo.config import run_demo
    except ImportError as e:
        return _fail(f"the demo needs the saexplain-demo plugin: pip install saexplain-demo ({e})")
    results = _guarded(
        lambda: run_demo(
            quick=args.quick,
            output_dir=args.output_dir,
            progress=not args.quiet,
            explainer_model=args.explainer_model,
        )
    )
    return _print_run(results, report=True) or _check_error_rate(results)


def _cmd_estimate(args: argparse.Namespace) -> int:
    from saexplain.config import load_config
    from saexplain.estimate import estimate, format_estimate

    result = _guarded(
        lambda: estimate(
            load_config(args.config, args.overrides),
            n_latents=args.latents,
            progress=not args.quiet,
        )
    )
    if isinstance(result, _Failed):
        return _fail(result)
    print(json.dumps(result, indent=2) if args.json else format_estimate(result))
    return 0


def _load_run(run: str) -> Any:
    """The run's `RunResults`, or a `_Failed` saying why it cannot be read."""
    from pathlib import Path

    from saexplain.report import RunFormatError, RunResults

    if not Path(run).is_dir():
        return _Failed(f"{run!r} is not a run directory")
    try:
        return RunResults.load(run)
    except RunFormatError as e:
        return _Failed(f"{run} is damaged: {e}")


def _cmd_show(args: argparse.Namespace) -> int:
    from saexplain.report import format_table

    results = _load_run(args.run)
    if isinstance(results, _Failed):
        return _fail(results)
    print(format_table(results))
    index = results.path / "report" / "index.html"
    if args.open and not index.is_file() and (code := _write_report_or_fail(results)):
        return code
    if not index.is_file():
        print(f"\nno report yet: `saexplain report {args.run}` writes {index}")
        return 0
    print(f"\nreport: {index}")
    if args.open:
        import webbrowser

        webbrowser.open(index.resolve().as_uri())
    return 0


def _write_report_or_fail(results: Any) -> int:
    from saexplain.report import write_report

    try:
        paths = write_report(results.path, results=results)
    except OSError as e:
        return _fail(f"cannot write the report of {results.path}: {e}")
    print(f"report: {paths['html']}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    results = _load_run(args.run)
    if isinstance(results, _Failed):
        return _fail(results)
    return _write_report_or_fail(results)


def _cmd_compare(args: argparse.Namespace) -> int:
    from saexplain.analysis.cli import run_compare

    out = _guarded(
        lambda: run_compare(
            args.run_a,
            args.run_b,
            coders=args.coders,
            method=args.method,
            k=args.k,
            explainer=args.explainer,
            limit=args.limit,
            as_json=args.json,
            as_html=args.html,
        )
    )
    if isinstance(out, _Failed):
        return _fail(out)
    print(out)
    return 0


def _cmd_search(args: argparse.Namespace) -> int:
    from saexplain.analysis.cli import run_search

    out = _guarded(lambda: run_search(args.run, args.query, k=args.k, explainer=args.explainer))
    if isinstance(out, _Failed):
        return _fail(out)
    print(out)
    return 0


EXPORT_FORMATS = ("neuronpedia", "saebench", "delphi", "neuron-explainer", "parquet")
IMPORT_FORMATS = ("neuronpedia", "saebench", "delphi", "neuron-explainer")


def _only_explainer(results: Any, chosen: str | None) -> str:
    from saexplain.errors import ConfigError
    from saexplain.rundir import control_of

    if chosen is not None:
        return chosen
    # shuffled controls (`<explainer>~shuffled`) are baselines, not explainers to export
    real = [e for e in results.explainers if control_of(e) is None]
    if len(real) != 1:
        names = ", ".join(real) or "none"
        raise ConfigError(f"this run has explainers {names}; choose one with --explainer")
    return str(real[0])


def _export(args: argparse.Namespace) -> list[Any]:
    """Write RUN in a format of the field (saexplain.interop); the paths written."""
    from saexplain import interop
    from saexplain.errors import ConfigError
    from saexplain.report import RunResults

    results = RunResults.load(args.run)
    fmt, out = args.format, args.out
    if fmt == "parquet":
        return [interop.to_parquet(results, out)]
    if fmt == "delphi":
        return interop.export_delphi(results, out, explainer=args.explainer, coder_id=args.coder)
    if fmt == "neuronpedia":
        if not args.model_id or not args.source:
            raise ConfigError("--format neuronpedia needs --model-id and --source (its ids)")
        return interop.export_neuronpedia(
            results, out, model_id=args.model_id, source=args.source, coder_id=args.coder
        )
    explainer = _only_explainer(results, args.explainer)
    if fmt == "saebench":
        if not args.release or not args.sae_id:
            raise ConfigError("--format saebench needs --release and --sae-id (SAELens ids)")
        return [
            interop.export_saebench(
                results,
                out,
                release=args.release,
                sae_id=args.sae_id,
                explainer=explainer,
                scorer=args.scorer or "detection",
                coder_id=args.coder,
            )
        ]
    return interop.export_neuron_explanations(
        results, out, explainer=explainer, scorer=args.scorer or "simulation", coder_id=args.coder
    )


def _cmd_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    if not Path(args.run).is_dir():
        return _fail(f"{args.run!r} is not a run directory")
    try:
        paths = _guarded(lambda: _export(args))
    except ImportError as e:  # parquet without saexplain[pandas]: the message names the extra
        return _fail(str(e))
    if isinstance(paths, _Failed):
        return _fail(paths)
    print(f"{args.format}: wrote {len(paths)} files under {args.out}")
    return 0


def _import(args: argparse.Namespace) -> Any:
    from saexplain import interop

    loaders = {
        "neuronpedia": lambda p: interop.load_neuronpedia_explanations(p, model_id=args.model_id),
        "saebench": lambda p: interop.load_saebench(p).explanations,
        "delphi": interop.load_delphi_explanations,
        "neuron-explainer": interop.load_neuron_explanations,
    }
    imported = loaders[args.format](args.path)
    if args.output is not None:
        imported.write_jsonl(args.output, args.source, args.explainer)
    return imported


def _cmd_import(args: argparse.Namespace) -> int:
    imported = _guarded(lambda: _import(args))
    if isinstance(imported, _Failed):
        return _fail(imported)
    counts: dict[tuple[str, str], int] = {}
    for item in imported:
        counts[(item.source, item.explainer)] = counts.get((item.source, item.explainer), 0) + 1
    for (source, explainer), n in sorted(counts.items()):
        print(f"{source}\t{explainer}\t{n} explanations")
    if args.output is not None:
        print(f"wrote {args.output}: score it with `saexplain score CONFIG {args.output}`")
    return 0


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a run config file (.yaml, .toml or .json)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override config values, dotted keys for nested ones (latents.sample=20)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    from saexplain import __version__

    parser = argparse.ArgumentParser(
        prog="saexplain",
        description="Explain and score the latents of sparse autoencoders, automatically.",
    )
    parser.add_argument("--version", action="version", version=f"saexplain {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    plugins = commands.add_parser(
        "plugins",
        help="list installed plugins, their hooks, components, overrides and load errors",
        description="List every plugin saexplain found (built-in, installed, or failed to "
        "load) with each component's description and which plugin overrode which component.",
    )
    plugins.add_argument("--json", action="store_true", help="print machine-readable JSON")
    plugins.set_defaults(handler=_cmd_plugins)

    run = commands.add_parser(
        "run",
        help="collect, build records, explain and score the latents a config selects",
        description="Run (or resume) the pipeline a config file describes. Rerunning the same "
        "command after a crash skips the finished (latent, method) pairs.",
    )
    _add_config_args(run)
    run.set_defaults(handler=_cmd_run)

    score = commands.add_parser(
        "score",
        help="score explanations you already have (a JSONL file) with a config's scorers",
        description="Score the explanations in FILE (one JSON object a line: `latent`, its "
        "index, and `explanation`) with the config's scorers, on the records a run of the "
        "config uses (the same run directory: its store and records are reused). They show "
        "as the explainer `given`.",
    )
    score.add_argument("config", help="a run config file (.yaml, .toml or .json)")
    score.add_argument("file", help='explanations, JSONL: {"latent": 3, "explanation": ...}')
    score.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override config values, dotted keys for nested ones (scorers=[detection])",
    )
    score.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    score.set_defaults(handler=_cmd_score)

    est = commands.add_parser(
        "estimate",
        help="estimate tokens and cost of a run without calling an LLM",
        description="Builds the records (collecting activations if needed), renders every "
        "prompt a run would send for a sample of latents, and extrapolates tokens and cost.",
    )
    _add_config_args(est)
    est.add_argument("--latents", type=int, default=5, help="latents to sample (default 5)")
    est.add_argument("--json", action="store_true", help="print machine-readable JSON")
    est.set_defaults(handler=_cmd_estimate)

    show = commands.add_parser(
        "show",
        help="print a run's table and the path of its HTML report (--open opens it)",
        description="Print the table of a run directory (finished or in progress) and the "
        "path of its HTML report; --open opens the report in a browser.",
    )
    show.add_argument("run", help="a run directory")
    show.add_argument(
        "--open", action="store_true", help="open the HTML report in a browser (writing it first)"
    )
    show.set_defaults(handler=_cmd_show)

    report = commands.add_parser(
        "report",
        help="(re)write a run's summary.json and HTML report (report/index.html)",
        description="Read a run directory (finished or in progress) and write its summary.json, "
        "the HTML report folder report/ and report.html, which points to it.",
    )
    report.add_argument("run", help="a run directory")
    report.set_defaults(handler=_cmd_report)

    compare = commands.add_parser(
        "compare",
        help="match the latents of two coders and compare their explanations",
        description="Match latents on decoder cosine (Hungarian; blockwise top-k for wide "
        "coders) and compare matched explanations by embedding similarity (docs/analysis.md). "
        "Needs saexplain[analysis]; the similarity needs saexplain-embeddings.",
    )
    compare.add_argument("run_a", help="a run directory")
    compare.add_argument("run_b", nargs="?", help="another run directory (or use --coders)")
    compare.add_argument("--coders", nargs=2, metavar=("A", "B"), help="two coder ids")
    compare.add_argument("--method", default="auto", choices=("auto", "exact", "blockwise"))
    compare.add_argument("-k", type=int, default=8, help="blockwise: candidates per latent")
    compare.add_argument("--explainer", help="the explainer to compare (default: the first)")
    compare.add_argument("--limit", type=int, default=20, help="pairs to print")
    compare.add_argument("--json", metavar="FILE", help="write every pair and the plot data")
    compare.add_argument(
        "--html", metavar="FILE", help="write a page with the cosine/similarity scatter"
    )
    compare.set_defaults(handler=_cmd_compare)

    search = commands.add_parser(
        "search",
        help="semantic search over a run's explanations",
        description="The explanations nearest to QUERY (needs saexplain-embeddings).",
    )
    search.add_argument("run", help="a run directory")
    search.add_argument("query", help="what to look for, in words")
    search.add_argument("-k", type=int, default=10, help="how many results")
    search.add_argument("--explainer", help="the explainer to search (default: the first)")
    search.set_defaults(handler=_cmd_search)

    export = commands.add_parser(
        "export",
        help="write a run in a format of the field (Neuronpedia, SAEBench, delphi, parquet, ...)",
        description="Export a run directory's explanations and scores (saexplain.interop; "
        "docs/interop.md). Neuronpedia needs --model-id and --source, SAEBench --release and "
        "--sae-id; parquet needs saexplain[pandas].",
    )
    export.add_argument("run", help="a run directory")
    export.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    export.add_argument("out", help="the folder to write into")
    export.add_argument("--explainer", help="the explainer to export (default: the only one)")
    export.add_argument("--scorer", help="SAEBench: detection; neuron-explainer: simulation")
    export.add_argument("--coder", help="the coder to export (default: the only one)")
    export.add_argument("--model-id", help="Neuronpedia model id (gpt2-small)")
    export.add_argument("--source", help="Neuronpedia source id (8-res-jb)")
    export.add_argument("--release", help="SAEBench: the SAELens release")
    export.add_argument("--sae-id", help="SAEBench: the SAELens sae_id")
    export.set_defaults(handler=_cmd_export)

    imp = commands.add_parser(
        "import",
        help="read explanations from another tool, to score them with `saexplain score`",
        description="Read explanations in a format of the field and list them by source and "
        "explainer; with -o, write the JSONL file `saexplain score CONFIG FILE` reads.",
    )
    imp.add_argument("--format", required=True, choices=IMPORT_FORMATS)
    imp.add_argument("path", help="the file or folder to read")
    imp.add_argument("-o", "--output", help="write the explanations of one source/explainer")
    imp.add_argument("--source", help="the source (SAE/layer) to write (default: the only one)")
    imp.add_argument("--explainer", help="the explainer to write (default: the only one)")
    imp.add_argument("--model-id", help="Neuronpedia: keep only this model's rows")
    imp.set_defaults(handler=_cmd_import)

    demo = commands.add_parser(
        "demo",
        help="the offline demo: explains latents of a small SAE on SmolLM2, offline",
        description="Explains 16 latents of the small SAE on SmolLM2-135M-Instruct that ships "
        "with the demo (top tokens, and SmolLM2 reading examples), scores each explanation "
        "beside a shuffled one with MiniLM, prints the table and writes an HTML report. Needs "
        "the saexplain-demo plugin (it brings the others it uses).",
    )
    demo.add_argument("--quick", action="store_true", help="fewer latents and tokens (CI)")
    demo.add_argument("--output-dir", default="runs", help="where to write the run (runs/)")
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    demo.add_argument(
        "--explainer-model",
        default=None,
        metavar="MODEL",
        help="a hosted LLM as explainer and scorer instead of SmolLM2, as a litellm model string "
        "(e.g. openai/gpt-4o-mini; needs its API key)",
    )
    demo.set_defaults(handler=_cmd_demo)
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line, options accepted anywhere: argparse stops filling the `KEY=VALUE`
    overrides at the first option after them (`run.yaml a=1 -q b=2`), so the overrides it
    leaves over are collected here; anything else unknown is an error, as usual."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    overrides = getattr(args, "overrides", None)
    unknown = [a for a in extra if overrides is None or a.startswith("-")]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides is not None:
        args.overrides = [*overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    from saexplain.errors import SaexplainError

    try:
        args = parse_args(argv)
        if args.command is None:
            build_parser().print_help()
            return 0
        code: int = args.handler(args)
        return code
    except KeyboardInterrupt:  # Ctrl-C outside a run (which handles its own): no traceback
        print("saexplain: interrupted", file=sys.stderr)
        return INTERRUPTED
    except SaexplainError as e:  # e.g. a plugin that fails under SAEXPLAIN_STRICT_PLUGINS=1
        return _fail(str(e))


if __name__ == "__main__":
    sys.exit(main())
