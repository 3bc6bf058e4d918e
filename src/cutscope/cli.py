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


def _check_writable(path: str) -> None:
    """One clear line for an output file that cannot be written, before any work."""
    d = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(d):
        raise CliError(f"cannot write {path}: directory does not exist: {d}")


def _out(path: str | None, text: str) -> None:
    if path in (None, "-"):
        sys.stdout.write(text)
        return
    _check_writable(path)
    if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
        # /dev/null, a FIFO, a symlink: write through it. Replacing it (below) would
        # put a regular file in its place: `-o /dev/null` as root destroyed /dev/null.
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# -- export -------------------------------------------------------------------------

class _Progress:
    """Export progress on standard error, one line rewritten in place (a terminal only)."""

    def __init__(self) -> None:
        self.shown = False

    def __call__(self, phase: str, done: int, total: int) -> None:
        text = (f"reading the events: {done:,}" if phase == "read" else
                f"writing the events: {done:,} of {total:,} ({100 * done // max(total, 1)}%)")
        sys.stderr.write(f"\r{text}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _export_json(db: str | None, path: str | None) -> None:
    """The JSON document written as it is made (``store_json``): a million events
    in a bounded memory, into a temporary file renamed at the end."""
    from cutscope.tracer.store import open_store
    from cutscope.viewer.export import store_json

    progress = _Progress() if sys.stderr.isatty() else None
    store = open_store(db, create=False)
    try:
        if path in (None, "-"):
            store_json(store, sys.stdout, progress)
        else:
            _check_writable(path)
            if os.path.islink(path) or (os.path.exists(path) and not os.path.isfile(path)):
                with open(path, "w", encoding="utf-8") as f:  # /dev/null, a FIFO: through it
                    store_json(store, f, progress)
            else:
                tmp = f"{path}.tmp{os.getpid()}"
                try:
                    with open(tmp, "w", encoding="utf-8") as f:
                        store_json(store, f, progress)
                    os.replace(tmp, path)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
    finally:
        store.close()
        if progress is not None:
            progress.done()


def cmd_export(args) -> int:
    import io

    from cutscope.viewer.export import load

    if args.format == "json":
        _export_json(args.db, args.output)
        return 0
    doc = load(args.db)
    if args.format == "chrome":
        from cutscope.viewer.chrome import write_chrome

        buf = io.StringIO()
        write_chrome(doc, buf)
        _out(args.output, buf.getvalue())
    else:
        from cutscope.viewer.shiviz import to_shiviz

        _out(args.output, to_shiviz(doc))
    return 0


def add_export(sub) -> None:
    p = sub.add_parser("export", help="write the trace as one JSON document (or a ShiViz log, or "
                                      "Chrome's trace-event JSON for Perfetto)")
    _db_arg(p)
    p.add_argument("--format", choices=_export_formats(), default="json")
    p.add_argument("-o", "--output", metavar="FILE", default=None, help="default: standard output")
    p.set_defaults(func=cmd_export)


def _export_formats() -> list[str]:
    import importlib.util

    fmts = ["json"]
    if importlib.util.find_spec("cutscope.viewer.shiviz") is not None:
        fmts.append("shiviz")
    if importlib.util.find_spec("cutscope.viewer.chrome") is not None:
        fmts.append("chrome")
    return fmts


# -- check / render / view (viewer/model/, viewer/render.py, viewer/app.py) ---------------

def cmd_check(args) -> int:
    import json

    from cutscope.viewer.model import check_report
    from cutscope.viewer.export import load_trace

    t = load_trace(args.db)
    problems, notes = check_report(t.doc, t)
    n = len(t.snapshots)
    if args.json:
        json.dump({"ok": not problems, "snapshots": n, "problems": problems, "notes": notes},
                  sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        for line in problems:
            print(line)
        for line in notes:
            print(f"note: {line}", file=sys.stderr)
        if not problems:
            print(f"{n} snapshot{'s' if n != 1 else ''} checked: every one verifies against the events")
    return 1 if problems else 0


def add_check(sub) -> None:
    p = sub.add_parser("check", help="verify every stored snapshot against the recorded events")
    _db_arg(p)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_check)


def cmd_predicate(args) -> int:
    """Possibly or Definitely of a conjunctive predicate; exit 0 if it holds, 1 if not."""
    import json

    from cutscope.viewer.export import load_trace
    from cutscope.viewer.model import format_cut, parse_conjunct

    t = load_trace(args.db)
    phi = {}
    for text in args.conjuncts:
        try:
            p, expr = parse_conjunct(text, t.processes)
        except ValueError as exc:
            raise CliError(str(exc)) from None
        if p in phi:
            raise CliError(f"two local predicates for {p}: join them with 'and'")
        phi[p] = expr
    try:
        ans = t.possibly(phi) if args.modality == "possibly" else t.definitely(phi)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        json.dump({"modality": ans.modality, "holds": ans.holds, "cut": ans.cut,
                   "predicate": {p: e.text for p, e in phi.items()}}, sys.stdout)
        sys.stdout.write("\n")
    elif ans.holds:
        print(f"{ans.modality}: holds; witness cut {format_cut(ans.cut)}")
    else:
        print(f"{ans.modality}: does not hold")
    return 0 if ans.holds else 1


def add_predicate(sub) -> None:
    for modality, what in (("possibly", "some consistent cut satisfies the predicate"),
                           ("definitely", "every run passes a cut that satisfies the predicate")):
        p = sub.add_parser(
            modality, help=f"whether {what} (a conjunction of local predicates; docs/viewer.md)",
            description=f"Whether {what}. Each CONJUNCT is 'PROCESS: EXPRESSION' over the values "
                        "the process recorded (cutscope.event fields, snapshot states); all must "
                        "hold at once. Exit 0 and the witness cut if it holds, 1 if not.")
        _db_arg(p)
        p.add_argument("conjuncts", nargs="+", metavar="CONJUNCT", help="PROCESS: EXPRESSION")
        p.add_argument("--json", action="store_true", help="print the answer as one JSON object")
        p.set_defaults(func=cmd_predicate, modality=modality)


def cmd_render(args) -> int:
    from cutscope.viewer.model import parse_cut, snapshot_cut
    from cutscope.viewer.export import load_trace

    ext = os.path.splitext(args.output)[1].lstrip(".").lower()
    if ext not in ("svg", "png", "dot"):
        raise CliError(f"cannot tell the format from {args.output!r}: use a .svg, .png or .dot file")
    _check_writable(args.output)
    t = load_trace(args.db)
    if args.snapshot is not None:
        snap = t.snapshot(args.snapshot)
        if snap is None:
            have = ", ".join(str(s["id"]) for s in t.snapshots) or "none"
            raise CliError(f"no snapshot {args.snapshot} in this trace (snapshots: {have})")
        cut = snapshot_cut(snap)
        if not cut:
            raise CliError(f"snapshot {args.snapshot} has no recorded process state")
        title = f"snapshot {args.snapshot} ({snap.get('status')})"
    else:
        try:
            cut = parse_cut(args.cut)
        except ValueError as exc:
            raise CliError(f"--cut: {exc}") from None
        title = "cut"
    hidden = [p for p in (args.hide or "").split(",") if p.strip()]
    order = [p for p in (args.order or "").split(",") if p.strip()]
    unknown = [p for p in list(cut) + hidden + order if p not in t.events]
    if unknown:
        raise CliError(f"no process {unknown[0]!r} in this trace "
                       f"(processes: {', '.join(t.processes) or 'none'})")
    if not [p for p in t.processes if p not in hidden and len(t.seqs[p])]:
        raise CliError("--hide: every process with events is hidden: nothing to draw")
    import graphviz

    from cutscope.viewer.render import render_file

    try:
        render_file(t, cut, args.output, window=args.window, title=title, order=order,
                    hidden=hidden, grouped=args.group)
    except graphviz.ExecutableNotFound:
        raise CliError("Graphviz's dot is not installed (Debian: apt-get install graphviz)") from None
    except graphviz.CalledProcessError as exc:
        raise CliError(f"dot failed: {(exc.stderr or b'').decode(errors='replace').strip()}") from None
    orphans = t.orphans(cut)
    state = "consistent" if not orphans else \
        f"inconsistent ({len(orphans)} orphan{'s' if len(orphans) != 1 else ''})"
    print(f"{args.output}: {title}, {state}, {len(t.in_transit(cut))} in transit")
    return 0


def add_render(sub) -> None:
    p = sub.add_parser("render", help="draw the space-time diagram with a cut across it (Graphviz)")
    _db_arg(p)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--snapshot", metavar="ID", type=int, help="the cut of a stored snapshot")
    which.add_argument("--cut", metavar="P=N,...",
                       help="a cut: each process's last event inside (seq; 0 = none)")
    p.add_argument("-o", "--output", metavar="FILE", required=True,
                   help="output file; .svg, .png or .dot")
    p.add_argument("--window", metavar="N", type=int, default=12,
                   help="for large traces, events drawn on each side of the frontier (default 12)")
    p.add_argument("--hide", metavar="P,...",
                   help="processes without a lane; their messages are dashed arrows between the "
                        "events they link through them")
    p.add_argument("--order", metavar="P,...", help="the lanes' order, left to right (the rest follow)")
    p.add_argument("--group", action="store_true",
                   help="the lanes of a group (a name without its trailing number) side by side")
    p.set_defaults(func=cmd_render)


def cmd_view(args) -> int:
    from cutscope.tracer.store import open_store, resolve_url

    url = resolve_url(args.db)  # the app follows, snapshots and titles by this URL
    view = None
    if args.open is not None:
        from cutscope.viewer.views import read_view

        try:
            view = read_view(args.open)
        except ValueError as exc:
            raise CliError(str(exc)) from None
    open_store(url, create=False).close()  # a bad database: one line and exit 2
    from cutscope.viewer.app import run

    return run(url, follow=not args.no_follow, view=view)


def add_view(sub) -> None:
    p = sub.add_parser("view", help="explore the trace and its cuts in the terminal")
    _db_arg(p)
    p.add_argument("--no-follow", action="store_true",
                   help="do not reload when new events arrive")
    p.add_argument("--open", metavar="FILE", default=None,
                   help="open at a view saved with the v key (cut, selected process, filter)")
    p.set_defaults(func=cmd_view)


# -- run ----------------------------------------------------------------------------

def cmd_run(args) -> int:
    """Trace an unmodified program: sitecustomize first on PYTHONPATH, then exec it."""
    import shutil

    from cutscope import _boot
    from cutscope.tracer.store import open_store, resolve_url

    prog = list(args.program)
    if prog and prog[0] == "--":
        prog = prog[1:]
    if not prog:
        raise CliError("run needs a program: cutscope run [options] -- PROGRAM [ARGS...]")
    if args.capture_payload is not None and args.capture_payload < 0:
        raise CliError("--capture-payload must be 0 or more bytes")
    exe = shutil.which(prog[0])
    if exe is None:
        raise CliError(f"program not found: {prog[0]}")
    env = dict(os.environ)
    url = resolve_url(args.db)  # absolute: children may change directory
    open_store(url, create=True).close()  # a bad URL fails here, in one line, not in the program
    env["CUTSCOPE_DB"] = url
    if args.name:
        env["CUTSCOPE_NAME"] = args.name
    if args.state:
        from cutscope.tracer.providers import ENV, check_spec

        try:
            specs = [check_spec(s) for s in args.state]
        except ValueError as exc:
            raise CliError(f"--state: {exc}") from None
        env[ENV] = ",".join([p for p in env.get(ENV, "").split(",") if p.strip()] + specs)
    if args.capture_payload is not None:
        env["CUTSCOPE_CAPTURE_PAYLOAD"] = str(args.capture_payload)
    boot = os.path.dirname(os.path.abspath(_boot.__file__))
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if os.path.abspath(paths[0]) != boot if paths else True:  # not twice
        env["PYTHONPATH"] = os.pathsep.join([boot] + [p for p in paths if os.path.abspath(p) != boot])
    env["CUTSCOPE_BOOT"] = "1"
    from cutscope.tracer import active

    if active() is not None:  # this CLI was itself started under `cutscope run`: exec'ing
        import cutscope       # would lose its buffer; the program is instrumented once, below

        cutscope.stop()
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(exe, prog, env)
    except OSError as exc:
        raise CliError(f"cannot run {prog[0]}: {exc.strerror or exc}") from None
    return 1  # not reached


def add_run(sub) -> None:
    p = sub.add_parser("run", help="trace an unmodified program and its child processes",
                       description="Run PROGRAM with cutscope tracing every Python process it "
                       "starts (through sitecustomize on PYTHONPATH); exits with its exit code.",
                       usage="cutscope run [--db URL] [--name NAME] [--capture-payload N] "
                             "[--state MODULE:FUNCTION ...] -- PROGRAM [ARGS...]")
    _db_arg(p)
    p.add_argument("--name", default=None, help="logical-process name of the program "
                   "(default: host:pid; children are <parent>/<pid>)")
    p.add_argument("--capture-payload", type=int, default=None, metavar="N",
                   help="keep the first N bytes of every message's payload (default 0)")
    p.add_argument("--state", action="append", default=[], metavar="MODULE:FUNCTION",
                   help="a function returning a JSON-serialisable dict of a process's local "
                   "state for snapshots, imported at the process's first snapshot (the "
                   "program's own module resolves to __main__); repeatable; also "
                   "CUTSCOPE_STATE=spec,spec")
    p.add_argument("program", nargs=argparse.REMAINDER, help="-- PROGRAM [ARGS...]")
    p.set_defaults(func=cmd_run)


# -- snapshot -----------------------------------------------------------------------

def _positive_seconds(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise CliError(f"--timeout: not a number of seconds: {text!r}") from None
    if not v > 0 or v == float("inf"):
        raise CliError(f"--timeout: must be a positive number of seconds: {text!r}")
    return v


def format_snapshot(snap, ends: dict | None = None) -> str:
    """The human form of a finished snapshot: a summary line, the states, the channels
    (``ends``: channel id -> its row, to name each channel's sender and receiver)."""
    import json

    lines = [snap.summary()]
    width = max([len(p) for p in snap.states] + [7])
    for p in sorted(snap.states):
        state = {k: v for k, v in snap.states[p].items() if k != "_cutscope"}
        shown = json.dumps(state, sort_keys=True, default=repr)
        if len(shown) > 200:
            shown = shown[:197] + "..."
        lines.append(f"  {p:<{width}}  seq {snap.event_seqs.get(p, '?'):<6} {shown}")
    chans = snap.entry.get("channels", []) if snap.entry else []
    for c in chans:
        msgs = c.get("messages", [])
        if not msgs:
            continue
        shown = []
        for m in msgs[:5]:
            v = m.get("value")
            shown.append(m["msg"] + (f" {json.dumps(v, default=repr)}" if v is not None
                                     else f" ({m.get('nbytes', 0)} bytes)"))
        more = f" ... ({len(msgs)} messages)" if len(msgs) > 5 else ""
        flag = "" if c.get("complete") else " [incomplete]"
        e = (ends or {}).get(c["channel"]) or {}
        who = f" {e.get('src') or '?'} -> {e.get('dst') or '?'}" if e else ""
        lines.append(f"  channel {c['channel']}{who}{flag}: " + ", ".join(shown) + more)
    if snap.missing:
        lines.append("missing:")
        for m in snap.missing:
            what = (f"process {m['process']}" if "process" in m else
                    f"channel {m.get('channel')} ({m.get('src') or '?'} -> {m.get('dst') or '?'})")
            lines.append(f"  {what}: {m.get('reason', '')}")
    return "\n".join(lines) + "\n"


def cmd_snapshot(args) -> int:
    import json

    from cutscope.tracer.snapshot import Coordinator, SnapshotError
    from cutscope.tracer.store import open_store

    timeout = _positive_seconds(args.timeout)
    store = open_store(args.db, create=False)
    try:
        c = Coordinator(store, initiator=args.initiator, timeout=timeout)
        try:
            c.start()
        except SnapshotError as exc:
            raise CliError(str(exc)) from None
        try:
            snap = c.wait()
        except KeyboardInterrupt:
            c.interrupt("interrupted")
            raise
        ends = {} if args.json else {e["id"]: e for e in store.channel_ends()}
    finally:
        store.close()
    if args.json:
        sys.stdout.write(json.dumps(snap.entry, indent=1, default=repr) + "\n")
    else:
        sys.stdout.write(format_snapshot(snap, ends))
    return 0 if snap.status == "complete" else 1


def add_snapshot(sub) -> None:
    p = sub.add_parser("snapshot", help="take a Chandy-Lamport snapshot of the running system",
                       description="Take a consistent global snapshot of the traced processes "
                       "that are running against this store, without stopping them, and print "
                       "it. Exits 0 when it is complete, 1 when it is partial (what is missing "
                       "is printed).")
    _db_arg(p)
    p.add_argument("--from", dest="initiator", metavar="PROCESS", default=None,
                   help="the logical process that starts it (default: any live one)")
    p.add_argument("--timeout", default="10", metavar="S",
                   help="seconds to wait before storing it as partial (default 10)")
    p.add_argument("--json", action="store_true",
                   help="print the snapshot as the interchange format has it (docs/format.md)")
    p.set_defaults(func=cmd_snapshot)


# Each command adds its parser here, in the order `cutscope --help` lists them.
COMMANDS: list[Callable] = [add_export, add_check, add_predicate, add_render, add_view, add_run,
                            add_snapshot]


class _Parser(argparse.ArgumentParser):
    """argparse, with bad input in one line, ``cutscope: error: ...``, and exit 2."""

    def error(self, message: str):
        cmd = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        if "required: COMMAND" in message:
            names = [a.dest for a in self._actions if isinstance(a, argparse._SubParsersAction)
                     for a in a._choices_actions]
            message = f"no command given (one of: {', '.join(names)})"
        sys.stderr.write(f"cutscope: error: {cmd}{message} (see: {self.prog} --help)\n")
        sys.exit(EXIT_USAGE)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cutscope", description="Distributed-debugging tracer: "
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
