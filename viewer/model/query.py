"""Structured search over events: ``field=value``, regular expressions, ``&&`` and ``||``.

A query is alternatives joined by ``||``; each alternative is terms joined by
``&&`` (or by spaces), all of which must match. ``&&`` binds tighter than
``||``; there are no parentheses. A term is one of:

- ``FIELD=VALUE`` / ``FIELD!=VALUE``: the field's value, as text, equals (or
  not) VALUE;
- ``FIELD~REGEX``: a regular expression searched in the field's value as text;
- ``FIELD<N``, ``FIELD<=N``, ``FIELD>N``, ``FIELD>=N``: a numeric comparison
  (an event whose field is not a number does not match);
- ``/REGEX/``: a regular expression searched in the event's description (the
  text of its row);
- ``p:NAME``, ``k:KIND``: shorthands for ``process=NAME``, ``kind=KIND``;
- any other word: found in the description, ignoring case.

FIELD is an event field (``process``, ``seq``, ``lamport``, ``kind``,
``channel``, ``msg``, ``nbytes``, ``snapshot``) or a field its ``local`` event
recorded (``label``, or any ``cutscope.event`` keyword; ``data.NAME`` names one
explicitly). An event without the field does not match (``!=`` included).
"""

from __future__ import annotations

import re
from typing import Callable, Mapping, NamedTuple

_TERM = re.compile(r"^([A-Za-z_][\w.]*)\s*(!=|<=|>=|=|~|<|>)(.*)$", re.S)
EVENT_FIELDS = ("process", "seq", "lamport", "kind", "channel", "msg", "nbytes", "snapshot")
_MISSING = object()


class Term(NamedTuple):
    field: str | None  # None: the description
    op: str  # "=", "!=", "~", "<", "<=", ">", ">=", "text"
    value: object  # str, float, or a compiled regex

    def needs_description(self) -> bool:
        return self.field is None


def _field(e: Mapping, name: str):
    if name.startswith("data."):
        return (e.get("data") or {}).get(name[5:], _MISSING)
    if name in e:
        return e[name]
    return (e.get("data") or {}).get(name, _MISSING)


def _as_text(v) -> str:
    if v is None:
        return "None"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def parse_term(tok: str) -> Term:
    tok = tok.strip()
    if len(tok) >= 2 and tok.startswith("/") and tok.endswith("/"):
        try:
            return Term(None, "~", re.compile(tok[1:-1]))
        except re.error as exc:
            raise ValueError(f"bad regular expression {tok}: {exc}") from None
    for short, name in (("p:", "process"), ("process:", "process"), ("k:", "kind"), ("kind:", "kind")):
        if tok.startswith(short):
            return Term(name, "=", tok[len(short):].lower() if name == "kind" else tok[len(short):])
    m = _TERM.match(tok)
    if m is None:
        return Term(None, "text", tok.lower())
    field, op, value = m.group(1), m.group(2), m.group(3).strip()
    if op == "~":
        try:
            return Term(field, op, re.compile(value))
        except re.error as exc:
            raise ValueError(f"bad regular expression in {tok!r}: {exc}") from None
    if op in ("<", "<=", ">", ">="):
        try:
            return Term(field, op, float(value))
        except ValueError:
            raise ValueError(f"not a number in {tok!r}: {value!r}") from None
    return Term(field, op, value)


def _split_terms(text: str) -> list[str]:
    """Terms separated by spaces, except inside ``/.../``."""
    out, cur, in_re = [], [], False
    for ch in text:
        if ch == "/" and (in_re or not cur):
            in_re = not in_re
            cur.append(ch)
            continue
        if ch.isspace() and not in_re:
            if cur:
                out.append("".join(cur))
                cur = []
            continue
        cur.append(ch)
    if in_re:
        raise ValueError(f"unclosed /regular expression/ in {text!r}")
    if cur:
        out.append("".join(cur))
    return out


class Query:
    """A parsed query: ``alternatives`` (OR) of term lists (AND)."""

    def __init__(self, text: str):
        self.text = text.strip()
        self.alternatives: list[list[Term]] = []
        for alt in self.text.split("||"):
            terms = []
            for part in alt.split("&&"):
                toks = _split_terms(part)
                if not toks:
                    raise ValueError(f"empty side of && or || in {self.text!r}")
                terms.extend(map(parse_term, toks))
            self.alternatives.append(terms)

    @property
    def needs_description(self) -> bool:
        return any(t.needs_description() for alt in self.alternatives for t in alt)

    def matches(self, e: Mapping, describe: Callable[[], str]) -> bool:
        text: list[str] = []

        def desc() -> str:
            if not text:
                text.append(describe())
            return text[0]

        return any(all(_match(t, e, desc) for t in alt) for alt in self.alternatives)


def _match(t: Term, e: Mapping, desc: Callable[[], str]) -> bool:
    if t.field is None:
        d = desc()
        return t.value in d.lower() if t.op == "text" else bool(t.value.search(d))
    v = _field(e, t.field)
    if v is _MISSING:
        return False
    if t.op == "=":
        return _as_text(v) == t.value
    if t.op == "!=":
        return _as_text(v) != t.value
    if t.op == "~":
        return bool(t.value.search(_as_text(v)))
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    return {"<": v < t.value, "<=": v <= t.value, ">": v > t.value, ">=": v >= t.value}[t.op]


def is_structured(text: str) -> bool:
    """Whether ``text`` uses more than the ``p:``/``k:``/words filter."""
    return any(s in text for s in ("=", "~", "&&", "||", "<", ">")) or any(
        tok.startswith("/") for tok in text.split())
