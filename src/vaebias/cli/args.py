"""Argument types and flag groups shared by the commands; flags of a config dataclass are
generated from its fields and documented from its docstring's ``Attributes`` section."""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
from pathlib import Path

import yaml

from vaebias._internal.errors import ConfigError, RunError
from vaebias._internal.io import atomic_path, probe_writable, versions

__all__ = ["add_config_flags", "add_launcher_args", "check_out", "config_values", "finite_float", "key_values",
           "positive_float", "positive_int", "print_and_write"]


def key_values(items: list[str] | None, flag: str = "--param") -> dict:
    """``KEY=VALUE`` items (values read as YAML) as a dict.

    Raises:
        ConfigError: an item without ``=`` or with a value that is not valid YAML.
    """
    out = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r}: expected KEY=VALUE")
        k, v = item.split("=", 1)
        try:
            out[k] = yaml.safe_load(v)
        except yaml.YAMLError as e:
            where = f" ({e.problem})" if getattr(e, "problem", None) else ""
            raise ConfigError(f"{flag} {item!r}: the value is not valid YAML{where}") from None
    return out


def _positive(kind):
    """argparse type: a number of ``kind`` (int or float) that must be > 0."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{value} must be a finite number > 0")
        return value

    return parse


positive_int = _positive(int)
positive_float = _positive(float)


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer >= 0 (numpy's generators take no negative seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value}: expected a seed >= 0")
    return value


def epsilon_float(text: str) -> float:
    """argparse type: ε of the manipulation, a number in (0, 1] (images lie in [0, 1])."""
    value = finite_float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{value:g}: expected epsilon in (0, 1] (images lie in [0, 1])")
    return value


def finite_float(text: str) -> float:
    """argparse type: a finite float."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{value} must be a finite number")
    return value


def add_launcher_args(p: argparse.ArgumentParser) -> None:
    """``--launcher``, ``--workers`` and ``--address`` of the commands that run many runs."""
    p.add_argument("--launcher", choices=["local", "ray"], default="local",
                   help="local: this machine; ray: one Ray task per run")
    p.add_argument("--workers", type=positive_int, default=None,
                   help="local launcher: runs in parallel, each in its own process with cores/N torch threads "
                        "(default: the profile's 'workers' for reproduce, else 1: in this process)")
    p.add_argument("--address", default=None,
                   help="ray launcher: cluster address host:port or 'auto' (default: $RAY_ADDRESS, "
                        "else a new local cluster)")


def _attribute_docs(cls) -> dict[str, str]:
    """``{field: first sentence}`` from the ``Attributes:`` section of ``cls``'s docstring."""
    doc = cls.__doc__ or ""
    section = doc.split("Attributes:", 1)[1] if "Attributes:" in doc else ""
    out, name = {}, None
    for line in section.splitlines():
        m = re.match(r"^\s{8}(\w+): (.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2).strip()
        elif name and line.startswith(" " * 12):
            out[name] += " " + line.strip()
        elif line.strip() and not line.startswith(" " * 8):
            break
    return {k: re.split(r"(?<=\.)\s", v, maxsplit=1)[0] for k, v in out.items()}


def add_config_flags(p: argparse.ArgumentParser, cls, fields=None) -> None:
    """One flag per field of the config dataclass ``cls`` (``--batch-size`` for
    ``batch_size``), typed from the field (finite numbers; > 0 for the fields named in
    ``cls.POSITIVE``) and documented from the docstring. Every flag
    defaults to None: :func:`config_values` returns only the fields given."""
    docs = _attribute_docs(cls)
    positive = set(getattr(cls, "POSITIVE", ()))
    for f in dataclasses.fields(cls):
        if fields is not None and f.name not in fields:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        help_text = (docs.get(f.name, "") + f" (default: {default})").strip()
        if f.type in ("bool", bool):
            p.add_argument(flag, action="store_true", default=None, help=help_text)
        elif str(f.type).startswith("tuple"):
            p.add_argument(flag, type=float, nargs=len(default or ()) or "+", default=None, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            parse = {int: positive_int if f.name in positive else int,
                     float: positive_float if f.name in positive else finite_float}.get(kind, str)
            p.add_argument(flag, type=parse, default=None, help=help_text,
                           **({"metavar": "N"} if kind is int else {}))


def config_values(args: argparse.Namespace, cls) -> dict:
    """The fields of ``cls`` given on the command line (see :func:`add_config_flags`)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def check_out(path: str, suffix: str, flag: str = "--out") -> None:
    """Refuse an output file of another type, a folder in its place, or a place that cannot
    be written, before any work (nothing is created).

    Raises:
        ConfigError: the suffix is not ``suffix`` or ``path`` is a folder; RunError: the
            place is not writable.
    """
    p = Path(path)
    if p.suffix.lower() != suffix:
        raise ConfigError(f"{flag} {path!r}: expected a {suffix} path")
    if p.is_dir():
        raise ConfigError(f"{flag} {path!r} is a folder; expected a {suffix} file path")
    check_out_folder(str(p.parent), flag, of=path)


def check_out_folder(path: str, flag: str = "--out", *, of: str | None = None) -> None:
    """Refuse an output folder that is a file, lies under a file, or cannot be written, before
    any work. Nothing is created: the first existing folder on the way is probed.

    Raises:
        RunError: naming ``flag``, the path and what is wrong.
    """
    shown = of if of is not None else path
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise RunError(f"{flag} {shown!r}: {str(p)!r} is a file; expected a folder")
    existing = p
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise RunError(f"{flag} {shown!r}: {str(existing)!r} is a file; expected a folder on the way")
    try:
        probe_writable(existing)
    except OSError as exc:
        raise RunError(f"{flag} {shown!r}: {str(existing)!r} is not writable ({exc.strerror or exc})") from None


def print_and_write(lines: list[str], path: Path | None, settings: dict) -> None:
    """Print a command's Markdown table; with ``path``, also write it there (atomically)
    with its settings and library versions, where ``vaebias report`` picks it up."""
    print("\n".join(line for line in lines if line))  # noqa: T201 - the command's result
    if path is not None:
        ver = ", ".join(f"{k} {v}" for k, v in versions().items())
        text = "\n".join(lines) + f"\n\nSettings: {settings}. Versions: {ver}.\n"
        with atomic_path(path) as tmp:
            tmp.write_text(text)
