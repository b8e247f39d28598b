"""Discard noise from its raw bytes, before any JSON parsing.

Nearly every event on the firehose is irrelevant, and parsing it costs more than the rest of the
pipeline. From the compiled rules we know literals that any matching event must contain (e.g.
``mshta.exe``, in some ASCII case). A record whose bytes miss a required literal cannot match,
with one exception: JSON may spell a character as a ``\\uXXXX`` escape. A record that contains an
escape of a character occurring in a literal is therefore kept (and parsed), so the prefilter never
changes a result; it only decides how cheaply a record is dropped.

Scanning uses Hyperscan (Intel's multi-pattern matcher, as used by Suricata). Records can be
checked one by one, or many at once: a block of newline-separated records is scanned in a single
call and only the lines with a hit are looked at individually, so noise never costs a Python-level
operation per record. In CPython, ``bytes.lower()`` plus two substring searches per record is about
3x slower on the reference machine (bench/RESULTS.md).
"""

from __future__ import annotations

import re
from typing import Any

import hyperscan

from app.core.rule.predicates import Requirement

_CASELESS = hyperscan.HS_FLAG_CASELESS
# Lines whose shape is not a JSON object (blank, text, truncated) are flagged too, so that they are
# parsed (and rejected with a reason) rather than silently dropped as noise.
_MALFORMED_LINE_PATTERNS = [rb"^[^{\n]", rb"[^}\r\n]\r?$", rb"^\n"]


class Prefilter:
    """Tells whether raw record bytes may satisfy a requirement (see the module docstring)."""

    def __init__(self, requirement: Requirement) -> None:
        self.keeps_everything = not requirement
        self._clauses = [sorted(clause) for clause in sorted(requirement, key=sorted)]
        literals = [re.escape(literal) for clause in self._clauses for literal in clause]
        escape = _escape_pattern(b"".join(lit for clause in self._clauses for lit in clause))
        self._escape = re.compile(rb"(?<!\\)(?:\\\\)*" + escape, re.IGNORECASE)
        self._escape_id = len(self._clauses)
        self._needed = frozenset(range(len(self._clauses)))
        self._seen: set[int] = set()
        self._hits: list[int] = []
        if self.keeps_everything:
            return
        # One database per use: single records stop at the first decisive hit, blocks want every hit.
        ids = [i for i, clause in enumerate(self._clauses) for _ in clause]
        self._record_scan = _compile(
            [*literals, escape],
            [*ids, self._escape_id],
            [_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH] * len(literals) + [_CASELESS],
        )
        self._block_scan = _compile(
            [*literals, escape, *_MALFORMED_LINE_PATTERNS],
            list(range(len(literals) + 1 + len(_MALFORMED_LINE_PATTERNS))),
            [_CASELESS] * (len(literals) + 1) + [hyperscan.HS_FLAG_MULTILINE] * len(_MALFORMED_LINE_PATTERNS),
        )

    def __call__(self, raw: bytes) -> bool:
        """True if the record may match (and must be parsed); False if it certainly cannot."""
        if self.keeps_everything:
            return True
        seen = self._seen
        seen.clear()
        try:
            # Positional arguments: keyword parsing costs the binding as much as the scan itself.
            self._record_scan(raw, self._on_record_match)
        except hyperscan.ScanTerminated:
            if self._escape_id not in seen:
                return True
            # Rare: an escape of a literal character, or an escaped backslash followed by such text
            # (Hyperscan has no lookbehind). Decide exactly, in Python.
            lowered = raw.lower()
            return self._escape.search(raw) is not None or all(
                any(literal in lowered for literal in clause) for clause in self._clauses
            )
        return False

    def _on_record_match(self, match_id: int, start: int, end: int, flags: int, context: object) -> bool:
        """Returning True stops the scan: the hits seen so far decide."""
        self._seen.add(match_id)
        return match_id == self._escape_id or self._needed <= self._seen

    def lines_to_check(self, block: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        """(start, end) of the lines of ``block[start:end]`` that need a closer look, in order.

        Every other line is noise: it has no literal, no relevant escape, and the shape of a JSON
        object. A returned line may still be noise (``__call__`` on it decides); blank lines come
        back as empty spans. Offsets are positions in ``block`` (which is not copied).
        """
        end = len(block) if end is None else end
        if self.keeps_everything:
            return _all_lines(block, start, end)
        hits = self._hits
        hits.clear()
        self._block_scan(memoryview(block)[start:end], self._on_block_match)
        spans: dict[int, int] = {}
        for hit_end in hits:
            position = start + hit_end - 1
            line_start = block.rfind(b"\n", start, position) + 1 or start
            if line_start not in spans:
                stop = block.find(b"\n", position, end)
                spans[line_start] = end if stop < 0 else stop
        return sorted(spans.items())

    def _on_block_match(self, match_id: int, start: int, end: int, flags: int, context: object) -> None:
        self._hits.append(end)


def _compile(expressions: list[bytes], ids: list[int], flags: list[int]) -> Any:  # a bound method of the C extension
    database = hyperscan.Database(mode=hyperscan.HS_MODE_BLOCK)
    database.compile(expressions=expressions, ids=ids, elements=len(expressions), flags=flags)
    return database.scan


def _all_lines(block: bytes, start: int, end: int) -> list[tuple[int, int]]:
    spans = []
    while start < end:
        stop = block.find(b"\n", start, end)
        stop = end if stop < 0 else stop
        spans.append((start, stop))
        start = stop + 1
    return spans


def _escape_pattern(literals: bytes) -> bytes:
    """``\\u00XX`` escapes (hex digits in any case) of the characters of ``literals`` in either ASCII case."""
    codes = set()
    for byte in set(literals):
        char = chr(byte)
        codes.update({ord(char.lower()), ord(char.upper())})
    hex_codes = sorted(f"{code:02x}".encode() for code in codes if code < 0x80)
    return rb"\\u00(?:" + b"|".join(hex_codes) + rb")"
