"""Discard noise from its raw bytes, before any JSON parsing.

Nearly every event on the firehose is irrelevant, and parsing it costs more than the rest of the
pipeline. From the compiled rules we know literals that any matching event must contain (e.g.
``mshta.exe``). A record whose lowercased bytes miss a required literal cannot match, with one
exception: JSON may spell a character as a ``\\uXXXX`` escape. When a record contains such an
escape of a character that occurs in a literal, it is passed on to be parsed, so the prefilter
never changes a result; it only decides how cheaply a record is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from app.rule.predicates import Requirement

Prefilter = Callable[[bytes], bool]

# A \u escape is a backslash preceded by an even number of backslashes (``\\u`` is an escaped
# backslash followed by the letter u, as in ``C:\\users``).
_ESCAPE_RE = re.compile(rb"(?<!\\)(?:\\\\)*\\u([0-9A-Fa-f]{4})")


def build_prefilter(requirement: Requirement) -> Prefilter:
    """A function telling whether raw record bytes may satisfy ``requirement``."""
    if not requirement:
        return _keep_all
    clauses = [tuple(sorted(clause, key=len, reverse=True)) for clause in requirement]
    alphabet = frozenset(b for clause in clauses for literal in clause for b in literal)

    def escaped_may_match(raw: bytes) -> bool:
        for match in _ESCAPE_RE.finditer(raw):
            code = int(match.group(1), 16)
            if code < 0x80 and ord(chr(code).lower()) in alphabet:
                return True
        return False

    if len(clauses) == 1 and len(clauses[0]) == 1:
        (literal,) = clauses[0]

        # The common case (one literal, e.g. the process name), kept to two byte scans.
        def keep_one(raw: bytes) -> bool:
            return literal in raw.lower() or (b"\\u" in raw and escaped_may_match(raw))

        return keep_one

    def keep(raw: bytes) -> bool:
        lowered = raw.lower()
        for clause in clauses:
            if not any(literal in lowered for literal in clause):
                return b"\\u" in raw and escaped_may_match(raw)
        return True

    return keep


def _keep_all(raw: bytes) -> bool:
    return True
