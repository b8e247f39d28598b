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
from collections.abc import Iterable
from typing import Any

import hyperscan

from app.core.rule.predicates import Requirement, or_requirements

_CASELESS = hyperscan.HS_FLAG_CASELESS
# Lines whose shape is not a JSON object (blank, text, truncated) are flagged too, so that they are
# parsed (and rejected with a reason) rather than silently dropped as noise.
_MALFORMED_LINE_PATTERNS = [rb"^[^{\n]", rb"[^}\r\n]\r?$", rb"^\n"]


class Prefilter:
    """Tells whether raw record bytes may satisfy one of the stages' requirements (see the module docstring).

    Each stage of each rule has its own requirement, and a record may match only if it meets one
    of them. Blocks are scanned for a weaker single condition first (the requirements merged, see
    ``or_requirements``); a record that passes is then checked exactly, from the set of literals
    one scan finds in it, which also tells the extractor which stages to evaluate (``present``).
    With one rule the two checks nearly coincide; with dozens, the merged condition is met by most
    records (some rule names ``svchost.exe``) while the exact one still drops them.
    """

    def __init__(self, requirements: Iterable[Requirement]) -> None:
        requirements = list(dict.fromkeys(requirements))
        # One stage without a requirement (every network event, say) makes every record relevant;
        # the literals of the others still tell which of their stages a record may meet.
        self.keeps_everything = not requirements or not all(requirements)
        self._hits: list[int] = []
        self._found: list[int] = []
        # The extractor asks twice about a record it keeps (to keep it, then to pick its stages):
        # the last answers are kept, by identity, so the record is scanned once.
        self._last_present: tuple[bytes, frozenset[bytes] | None] | None = None
        self._last_met: tuple[frozenset[bytes], frozenset[Requirement]] | None = None
        self._literals = sorted({literal for r in requirements for clause in r for literal in clause})
        # Each literal leads to the requirements that name it: a met requirement names a present literal.
        self._naming: dict[bytes, list[Requirement]] = {}
        for requirement in requirements:
            for literal in {literal for clause in requirement for literal in clause}:
                self._naming.setdefault(literal, []).append(requirement)
        if not self._literals:
            return
        escape = _escape_pattern(b"".join(self._literals))
        self._escape = re.compile(rb"(?<!\\)(?:\\\\)*" + escape, re.IGNORECASE)
        self._escape_id = len(self._literals)
        literals = [re.escape(literal) for literal in self._literals]
        self._record_scan = _compile(
            [*literals, escape],
            list(range(len(literals) + 1)),
            [_CASELESS | hyperscan.HS_FLAG_SINGLEMATCH] * (len(literals) + 1),
        )
        if self.keeps_everything:
            return
        clauses = [sorted(clause) for clause in or_requirements(requirements)]
        block_literals = [re.escape(literal) for clause in clauses for literal in clause]
        self._block_scan = _compile(
            [*block_literals, escape, *_MALFORMED_LINE_PATTERNS],
            list(range(len(block_literals) + 1 + len(_MALFORMED_LINE_PATTERNS))),
            [_CASELESS] * (len(block_literals) + 1) + [hyperscan.HS_FLAG_MULTILINE] * len(_MALFORMED_LINE_PATTERNS),
        )

    def __call__(self, raw: bytes) -> bool:
        """True if the record may match (and must be parsed); False if it certainly cannot."""
        return self.keeps_everything or self.admits(self.present(raw))

    def present(self, raw: bytes) -> frozenset[bytes] | None:
        """The literals in ``raw`` (in any ASCII case), or None when one may be hidden behind a
        ``\\uXXXX`` escape of its characters (or when there are no literals to look for)."""
        if not self._literals:
            return None
        last = self._last_present
        if last is not None and last[0] is raw:
            return last[1]
        found = self._found
        found.clear()
        # Positional arguments: keyword parsing costs the binding as much as the scan itself.
        self._record_scan(raw, self._on_record_match)
        present = None
        # Hyperscan has no lookbehind: an escaped backslash followed by "u00.." hits too. Rare; decided in Python.
        if self._escape_id not in found or self._escape.search(raw) is None:
            present = frozenset(self._literals[i] for i in found if i != self._escape_id)
        self._last_present = (raw, present)
        return present

    def admits(self, present: frozenset[bytes] | None) -> bool:
        """Whether a record with literals ``present`` (None: unknown) meets one of the requirements."""
        return self.keeps_everything or present is None or bool(self.met(present))

    def met(self, present: frozenset[bytes] | None) -> frozenset[Requirement] | None:
        """The non-empty requirements that literals ``present`` meet (None: unknown, any may be met).

        Only the requirements naming a present literal are checked, so a record costs what its
        literals lead to, not one check per stage loaded.
        """
        if present is None:
            return None
        last = self._last_met
        if last is not None and last[0] is present:
            return last[1]
        naming = self._naming
        met = frozenset(
            requirement for literal in present for requirement in naming[literal] if _meets(present, requirement)
        )
        self._last_met = (present, met)
        return met

    def _on_record_match(self, match_id: int, start: int, end: int, flags: int, context: object) -> None:
        self._found.append(match_id)

    def lines_to_check(self, block: bytes, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
        """(start, end) of the lines of ``block[start:end]`` that need a closer look, in order.

        Every other line is noise: it misses the merged condition's literals, has no relevant
        escape, and has the shape of a JSON object. A returned line may still be noise (``__call__``
        on it decides); blank lines come back as empty spans. Offsets are positions in ``block``
        (which is not copied).
        """
        end = len(block) if end is None else end
        if self.keeps_everything:
            return _all_lines(block, start, end)
        hits = self._hits
        hits.clear()
        self._block_scan(memoryview(block)[start:end], self._on_block_match)
        spans: dict[int, int] = {}
        line_start = line_stop = -1
        for hit_end in hits:
            position = start + hit_end - 1
            if line_start <= position < line_stop:
                continue  # another hit in the line just found (hits come nearly in order)
            line_start = block.rfind(b"\n", start, position) + 1 or start
            stop = block.find(b"\n", position, end)
            line_stop = end if stop < 0 else stop
            spans[line_start] = line_stop
        return sorted(spans.items())

    def _on_block_match(self, match_id: int, start: int, end: int, flags: int, context: object) -> None:
        self._hits.append(end)


def _meets(present: frozenset[bytes], requirement: Requirement) -> bool:
    """Whether literals ``present`` in a record meet ``requirement`` (a literal of every clause)."""
    return all(not clause.isdisjoint(present) for clause in requirement)


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
