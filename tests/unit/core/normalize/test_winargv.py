"""``split_command_line`` against Elastic's Sysmon pipeline script (parity with Elasticsearch wins).

Rules test single arguments of ``process.args``, which Elasticsearch computed with its pipeline's
port of Go's ``commandLineToArgv``, so the expected values follow that script (the rules listed in
app/core/normalize/winargv.py), not ``CommandLineToArgvW``: leading blanks are skipped, the program
name follows the same backslash and quote rules as every other argument, a quote toggles quoting
without ending the argument, and ``""`` inside quotes is one literal quote that ends the quoting.
Where Windows splits differently, the difference is named. Raw strings keep the backslashes
readable: r'a\\"b' is the command line a, two backslashes, a quote, b.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.normalize.winargv import split_command_line


@pytest.mark.parametrize(
    ("command_line", "expected"),
    [
        # -- whitespace ---------------------------------------------------------------------
        ("prog", ["prog"]),
        ("prog a b c", ["prog", "a", "b", "c"]),
        ("prog   a \t\t b", ["prog", "a", "b"]),
        ("prog\ta\tb", ["prog", "a", "b"]),
        ("prog a b   ", ["prog", "a", "b"]),
        ("prog \t ", ["prog"]),
        # Only space and tab separate arguments.
        ("prog a\rb\nc\vd", ["prog", "a\rb\nc\vd"]),
        # -- quotes ---------------------------------------------------------------------------
        ('prog "a b" c', ["prog", "a b", "c"]),
        ('prog "a\tb"', ["prog", "a\tb"]),
        ('prog a"b c"d e', ["prog", "ab cd", "e"]),
        ('prog "a"b "c"', ["prog", "ab", "c"]),
        ('prog "unclosed arg', ["prog", "unclosed arg"]),
        ('prog "unclosed   ', ["prog", "unclosed   "]),
        ("prog 'single quotes' are text", ["prog", "'single", "quotes'", "are", "text"]),
        ('prog a^"b &c|d', ["prog", "a^b &c|d"]),
        # -- empty arguments -----------------------------------------------------------------
        ('prog ""', ["prog", ""]),
        ('prog "" ""', ["prog", "", ""]),
        ('prog a "" b', ["prog", "a", "", "b"]),
        ('prog "', ["prog", ""]),
        ('prog a "', ["prog", "a", ""]),
        ('prog "\t"', ["prog", "\t"]),
        # -- backslashes not followed by a quote are literal --------------------------------
        (r"prog C:\dir\file.txt", ["prog", r"C:\dir\file.txt"]),
        (r"prog a\\b c\\\d", ["prog", r"a\\b", r"c\\\d"]),
        (r'prog "a\b" "c\\d"', ["prog", r"a\b", r"c\\d"]),
        (r"prog trailing\ ", ["prog", "trailing\\"]),
        (r"prog trailing\\", ["prog", r"trailing\\"]),
        # -- 2n backslashes + quote: n backslashes, the quote toggles quoting ----------------
        (r'prog a\\"b c"', ["prog", r"a\b c"]),
        (r'prog a\\\\"b c" d', ["prog", r"a\\b c", "d"]),
        (r'prog "C:\dir\\" next', ["prog", "C:\\dir\\", "next"]),
        (r'prog "x\\\\" y', ["prog", r"x\\", "y"]),
        # -- 2n+1 backslashes + quote: n backslashes and a literal quote ---------------------
        (r"prog \"a", ["prog", '"a']),
        (r"prog a\\\"b c d", ["prog", r"a\"b", "c", "d"]),
        (r'prog "a\" b"', ["prog", 'a" b']),
        (r'prog "C:\dir\" next', ["prog", 'C:\\dir" next']),
        (r"prog \\\\\"x", ["prog", r'\\"x']),
        # -- doubled quotes: in quotes, "" is one literal quote and closes the quoted region --
        ('prog "a""b c"', ["prog", 'a"b', "c"]),
        ('prog "a"" b', ["prog", 'a"', "b"]),
        ('prog "a""" b" c', ["prog", 'a" b', "c"]),
        ('prog "a"""" b', ["prog", 'a"', "b"]),
        ('prog "a""""" b', ["prog", 'a""', "b"]),
        ('prog a""b c', ["prog", "ab", "c"]),
        ('prog a"""b c', ["prog", 'a"b', "c"]),
        ('prog """a b"', ["prog", '"a', "b"]),
        (r'prog "x \\"""\\" y', ["prog", 'x \\"\\', "y"]),
        # -- the program name follows the same rules (CommandLineToArgvW ends it at its closing quote) --
        ('"C:\\Program Files\\App\\app.exe" -x', ["C:\\Program Files\\App\\app.exe", "-x"]),
        # One backslash and a quote: a literal quote, still quoted (Windows: C:\dir\ then -Embedding).
        ('"C:\\dir\\" -Embedding', ['C:\\dir" -Embedding']),
        ('"C:\\dir\\"-Embedding', ['C:\\dir"-Embedding']),
        ('"C:\\dir\\\\" -Embedding', ["C:\\dir\\", "-Embedding"]),
        # The quote closes the quoted part, not the argument: one argument (Windows: two).
        (
            '"C:\\Windows\\System32\\mshta.exe"-Embedding',
            ["C:\\Windows\\System32\\mshta.exe-Embedding"],
        ),
        ('"prog"arg" one" two', ["progarg one", "two"]),
        ('"prog""" next', ['prog" next']),
        ('"prog"" spaced ', ['prog"', "spaced"]),
        ('"prog""""x', ['prog"x']),
        ('"unclosed program name', ["unclosed program name"]),
        ('""', [""]),
        ('"" a', ["", "a"]),
        ('prog"with"quotes a', ["progwithquotes", "a"]),
        ('pro\\"g a', ['pro"g', "a"]),
        ("C:\\Windows\\System32\\mshta.exe\t-Embedding", ["C:\\Windows\\System32\\mshta.exe", "-Embedding"]),
        # Leading blanks are skipped: no empty program name (Windows: an empty first argument).
        (" a b", ["a", "b"]),
        ("\ta", ["a"]),
        ('  "a"b c', ["ab", "c"]),
        (" ", []),
        # -- an empty command line names no program -----------------------------------------
        ("", []),
    ],
)
def test_documented_behaviour(command_line: str, expected: list[str]) -> None:
    assert split_command_line(command_line) == expected


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        # The classic table of Microsoft's argument-parsing documentation, after a program name.
        ('"abc" d e', ["abc", "d", "e"]),
        (r'a\\b d"e f"g h', [r"a\\b", "de fg", "h"]),
        (r"a\\\"b c d", [r"a\"b", "c", "d"]),
        (r'a\\\\"b c" d e', [r"a\\b c", "d", "e"]),
        # The C runtime since 2008 gives 'ab" c d' here; CommandLineToArgvW ends the quotes.
        ('a"b"" c d', ['ab"', "c", "d"]),
    ],
)
def test_microsoft_examples(arguments: str, expected: list[str]) -> None:
    assert split_command_line("prog.exe " + arguments) == ["prog.exe", *expected]


def test_real_command_lines() -> None:
    assert split_command_line("C:\\Windows\\System32\\mshta.exe -Embedding") == [
        "C:\\Windows\\System32\\mshta.exe",
        "-Embedding",
    ]
    assert split_command_line('"C:\\Windows\\system32\\notepad.exe" ') == ["C:\\Windows\\system32\\notepad.exe"]
    assert split_command_line('powershell.exe -NoP -c "Get-Item \\"C:\\Program Files\\\\\\" | fl"') == [
        "powershell.exe",
        "-NoP",
        "-c",
        'Get-Item "C:\\Program Files\\" | fl',
    ]


_PLAIN = st.text(alphabet=st.characters(blacklist_characters=' \t"\\'), min_size=1)


@given(st.lists(_PLAIN, min_size=1, max_size=8))
def test_plain_words_split_on_whitespace(words: list[str]) -> None:
    assert split_command_line(" ".join(words)) == words


@given(st.text(alphabet=' \t"\\ab', max_size=40))
def test_any_line_splits_without_error(command_line: str) -> None:
    args = split_command_line(command_line)
    assert (args == []) == (command_line.strip(" \t") == "")
    assert all(isinstance(arg, str) for arg in args)


@given(st.text(alphabet=' \t"\\ab', max_size=40))
def test_the_program_name_is_split_like_any_other_argument(command_line: str) -> None:
    """The pipeline has no special rule for the first argument: a line splits the same after a program name."""
    assert split_command_line("prog " + command_line) == ["prog", *split_command_line(command_line)]
