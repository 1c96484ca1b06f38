"""The ``vaebias`` command line: a thin layer over the Python API."""

from vaebias.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
