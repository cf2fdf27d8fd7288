"""The `saexplain` command line. Heavy libraries are imported only inside commands."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def _cmd_plugins(args: argparse.Namespace) -> int:
    from saexplain.plugins import get_plugin_manager

    infos = get_plugin_manager().info()
    if args.json:
        print(json.dumps([info.as_dict() for info in infos], indent=2))
        return 0
    for info in infos:
        origin = f"{info.distribution} {info.version}" if info.distribution else info.source
        print(f"{info.name}  [{info.state}]  {origin}")
        if info.hooks:
            print(f"    hooks: {', '.join(info.hooks)}")
        for kind, names in sorted(info.components.items()):
            print(f"    {kind}s: {', '.join(names)}")
        if info.error:
            print(f"    error: {info.error}")
        if info.hint:
            print(f"    hint: {info.hint}")
    failed = sum(info.state == "failed" for info in infos)
    print(f"{len(infos)} plugins, {failed} failed to load")
    return 0


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
        help="list installed plugins, their hooks, components and load errors",
        description="List every plugin saexplain found: built-in, installed, or failed to load.",
    )
    plugins.add_argument("--json", action="store_true", help="print machine-readable JSON")
    plugins.set_defaults(run=_cmd_plugins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
