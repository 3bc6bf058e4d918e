"""The ``cutscope`` command line.

Every command that fails on bad input prints one line, ``cutscope: error: …``,
and exits non-zero; it never prints a traceback and never writes to the store
it reads.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable

EXIT_USAGE = 2


class CliError(Exception):
    """One clear line for the user."""


def _db_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", metavar="URL", default=None,
                   help="store URL or SQLite path (default: $CUTSCOPE_DB or ./cutscope.db)")


def _out(path: str | None, text: str) -> None:
    if path in (None, "-"):
        sys.stdout.write(text)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# -- export -------------------------------------------------------------------------

def cmd_export(args) -> int:
    import io

    from cutscope.viewer.export import load, write_json

    doc = load(args.db)
    if args.format == "json":
        buf = io.StringIO()
        write_json(doc, buf)
        _out(args.output, buf.getvalue())
    else:
        from cutscope.viewer.shiviz import to_shiviz

        _out(args.output, to_shiviz(doc))
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write the trace as one JSON document (or a ShiViz log)")
    _db_arg(p)
    p.add_argument("--format", choices=_export_formats(), default="json")
    p.add_argument("-o", "--output", metavar="FILE", default=None, help="default: standard output")
    p.set_defaults(func=cmd_export)


def _export_formats() -> list[str]:
    import importlib.util

    fmts = ["json"]
    if importlib.util.find_spec("cutscope.viewer.shiviz") is not None:
        fmts.append("shiviz")
    return fmts


# Each command adds its parser here, in the order `cutscope --help` lists them.
COMMANDS: list[Callable] = [add_export]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cutscope", description="Distributed-debugging tracer: "
                                "record, snapshot and explore consistent cuts of Python services.")
    from cutscope import __version__

    p.add_argument("--version", action="version", version=f"cutscope {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in COMMANDS:
        add(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from cutscope.tracer.store import StoreError

    args = parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (CliError, StoreError) as exc:
        print(f"cutscope: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        print(f"cutscope: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
