"""Command line: a thin layer over the Python API.

    vaebias reproduce --dataset dsprites --profile quick --out results/quick
    vaebias train --model beta_vae --dataset dsprites --steps 1000 --out runs/b0
    vaebias evaluate runs/b0
    vaebias manipulate --entangled runs/b0 --disentangled runs/b1 --out runs/manip
    vaebias report results/quick
    vaebias traverse runs/b0 --out traversal.png --gif traversal.gif
    vaebias sweep grid.yaml --launcher local|ray [--workers N] [--address ADDR]
    vaebias models | datasets | profiles

Errors of input (unknown names, bad values, missing or corrupt files, unwritable
folders) print one line ``vaebias: error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

from vaebias import __version__
from vaebias._internal.errors import VaebiasError
from vaebias._internal.log import configure_cli_logging
from vaebias.cli.commands import COMMANDS

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """argparse with one error line (no usage block before it): ``vaebias train: error: ...``,
    exit status 2; ``--help`` still shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command (:data:`vaebias.cli.commands.COMMANDS`)."""
    p = _Parser(prog="vaebias", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"vaebias {__version__}")
    loud = p.add_mutually_exclusive_group()
    loud.add_argument("-v", "--verbose", action="store_true", help="debug log lines on stderr")
    loud.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = p.add_subparsers(dest="command", required=True)
    for name, cmd in COMMANDS.items():
        cmd.arguments(sub.add_parser(name, help=cmd.help))
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2: bad input, 130: interrupted)."""
    args = build_parser().parse_args(argv)
    if os.getcwd() not in sys.path:  # own models by import path (--model pkg.module:Class), as `python -m`
        sys.path.append(os.getcwd())
    configure_cli_logging(logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO)
    def terminate(signum, frame):  # `kill` stops a command as Ctrl-C does: runs checkpoint at a step boundary
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate) if threading.current_thread() is threading.main_thread() \
        else None
    try:
        return COMMANDS[args.command].run(args) or 0
    except VaebiasError as exc:
        print(f"vaebias: error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print("vaebias: interrupted; rerun the same command to resume", file=sys.stderr)  # noqa: T201
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
