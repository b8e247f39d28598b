"""Discard noise from its raw bytes, before any JSON parsing.

Nearly every event on the firehose is irrelevant, and parsing it costs more than the rest of the
pipeline. From the compiled rules we know literals that any matching event must contain (e.g.
``mshta.exe``, in some ASCII case). A record whose bytes miss a required literal cannot match,
with one exception: JSON may spell a character as a ``\\uXXXX`` escape. A record that contains an
escape of a character occurring in a literal is therefore kept (and parsed), so the prefilter never
changes a result; it only decides how cheaply a record is dropped.

The scan uses Hyperscan (Intel's multi-pattern matcher, as used by Suricata): one pass finds every
literal case-insensitively and every relevant escape. In CPython, ``bytes.lower()`` followed by
two substring searches costs about 3.5x more per 1.4 KB record on the reference machine
(bench/RESULTS.md).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import hyperscan

from app.rule.predicates import Requirement

Prefilter = Callable[[bytes], bool]

_LITERAL_FLAGS = hyperscan.HS_FLAG_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH


def build_prefilter(requirement: Requirement) -> Prefilter:
    """A function telling whether raw record bytes may satisfy ``requirement``."""
    if not requirement:
        return _keep_all
    clauses = [sorted(clause) for clause in sorted(requirement, key=sorted)]
    escape_id = len(clauses)
    expressions: list[bytes] = []
    ids: list[int] = []
    for clause_id, clause in enumerate(clauses):
        for literal in clause:
            expressions.append(re.escape(literal))
            ids.append(clause_id)
    expressions.append(_escape_pattern(b"".join(lit for clause in clauses for lit in clause)))
    ids.append(escape_id)
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(
        expressions=expressions,
        ids=ids,
        elements=len(expressions),
        flags=[_LITERAL_FLAGS] * (len(expressions) - 1) + [hyperscan.HS_FLAG_CASELESS],
    )
    scan = database.scan
    needed = frozenset(range(len(clauses)))
    seen: set[int] = set()
    precise_escape = re.compile(rb"(?<!\\)(?:\\\\)*" + expressions[-1], re.IGNORECASE)

    def on_match(match_id: int, start: int, end: int, flags: int, context: object) -> bool:
        """Returning True stops the scan."""
        seen.add(match_id)
        return match_id == escape_id or needed <= seen

    def keep(raw: bytes) -> bool:
        seen.clear()
        try:
            # Positional arguments: keyword parsing costs the binding as much as the scan itself.
            scan(raw, on_match)
        except hyperscan.ScanTerminated:
            if escape_id not in seen:
                return True
            # Rare: an escape of a literal character, or an escaped backslash followed by such text
            # (Hyperscan has no lookbehind). Decide exactly, in Python.
            lowered = raw.lower()
            return precise_escape.search(raw) is not None or all(
                any(literal in lowered for literal in clause) for clause in clauses
            )
        return False

    return keep


def _escape_pattern(literals: bytes) -> bytes:
    """``\\u00XX`` escapes (hex digits in any case) of the characters of ``literals`` in either ASCII case."""
    codes = set()
    for byte in set(literals):
        char = chr(byte)
        codes.update({ord(char.lower()), ord(char.upper())})
    hex_codes = sorted(f"{code:02x}".encode() for code in codes if code < 0x80)
    return rb"\\u00(?:" + b"|".join(hex_codes) + rb")"


def _keep_all(raw: bytes) -> bool:
    return True
