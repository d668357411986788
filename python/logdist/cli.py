"""`logdist`: the one command-line entry point (also `python -m logdist`).

It only wires subcommands to the modules that own them. Each module exposes
`add_arguments(parser)` and `run(args) -> int` (or the named functions in COMMANDS). Only the
module of the chosen subcommand is imported, so a role that cannot load (say, the Rust core is
not built) does not break the others, and the error says what to do.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, NamedTuple


class Command(NamedTuple):
    module: str
    help: str
    add: str = "add_arguments"
    run: str = "run"


COMMANDS: dict[str, Command] = {
    "distributor": Command("logdist.distributor", "run a distributor (ingest, route by weight, deliver)"),
    "analyzer": Command("logdist.analyzer", "run an analyzer (the v0 analyzer API; dedup and counts)"),
    "emitter": Command("logdist.emitter", "run an emitter server (the v0 emitter API), or --once to generate"),
    "generate": Command(
        "logdist.tools.cluster",
        "send synthetic traffic to distributors, print a summary",
        "add_generate",
        "run_generate",
    ),
    "verify-weights": Command(
        "logdist.tools.cluster", "check each analyzer's processed share against its weight", "add_verify", "run_verify"
    ),
    "status": Command(
        "logdist.tools.cluster", "show a running distributor and its analyzers", "add_status", "run_status"
    ),
    "up": Command("logdist.tools.up", "start a whole local pipeline with a live view of the shares"),
    "bench": Command("logdist.tools.bench", "run the end-to-end benchmark"),
    "dlq": Command("logdist.tools.cluster", "list or replay a distributor's dead letters", "add_dlq", "run_dlq"),
}


def _backend_note() -> str:
    try:
        from logdist import core

        return f"core: {core.BACKEND}"
    except ImportError:
        return "core: not built"


class _Version(argparse.Action):
    """--version, worked out only when asked (it loads the core to name the backend)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **_: Any) -> None:
        super().__init__(option_strings, argparse.SUPPRESS, nargs=0, help="show the version and the core backend")

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from logdist import __version__

        print(f"logdist {__version__} ({_backend_note()})")
        parser.exit()


class CliError(Exception):
    """A usage problem that is reported as one line and exit status 2."""


def _load(name: str) -> ModuleType:
    cmd = COMMANDS[name]
    try:
        return importlib.import_module(cmd.module)
    except ModuleNotFoundError as exc:
        if exc.name == cmd.module:
            raise CliError(f"'{name}' is not available in this build ({cmd.module} is missing)") from None
        raise CliError(f"cannot load {cmd.module}: {exc}") from None
    except ImportError as exc:
        raise CliError(f"cannot load {cmd.module}: {exc}") from None


def _chosen(argv: Sequence[str]) -> str | None:
    for a in argv:
        if a in COMMANDS:
            return a
        if not a.startswith("-"):
            return None
    return None


Runner = Callable[[argparse.Namespace], int]


def build_parser(argv: Sequence[str] = ()) -> tuple[argparse.ArgumentParser, Runner | None]:
    """The parser; the chosen subcommand (from argv) gets its full arguments."""
    parser = argparse.ArgumentParser(
        prog="logdist",
        description="logdist: a weighted log distributor that loses nothing.",
        epilog="Run `logdist COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = _chosen(argv)
    runner: Runner | None = None
    for name, cmd in COMMANDS.items():
        sp = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if name == chosen:
            mod = _load(name)
            try:
                add = getattr(mod, cmd.add)
                runner = getattr(mod, cmd.run)
            except AttributeError as exc:
                raise CliError(f"{cmd.module} does not provide the '{name}' command ({exc})") from None
            add(sp)
    return parser, runner


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    from logdist.errors import ConfigError, LogdistError

    try:
        parser, runner = build_parser(argv)
    except CliError as exc:
        print(f"logdist: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if args.command is None or runner is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(runner(args) or 0)
    except ConfigError as exc:
        print(f"logdist {args.command}: {exc}", file=sys.stderr)
        return 2
    except LogdistError as exc:
        print(f"logdist {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # e.g. the port is taken (a closed stdout pipe lands here too: exit 1)
        print(f"logdist {args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
