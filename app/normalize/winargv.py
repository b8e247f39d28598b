"""Split a Windows command line into arguments the way ``CommandLineToArgvW`` does.

Windows hands a process one command-line string; every program splits it itself. Sysmon records
that string, and Elastic's ingest pipeline splits it into ``process.args`` so that rules can test a
single argument (``process.args : "-Embedding"``). ``shlex`` gets this wrong (backslashes are path
separators on Windows, not escapes), so the Windows rules are implemented here.

Behaviour followed, as documented by Microsoft for ``CommandLineToArgvW`` (shellapi.h reference):

* Spaces and tabs outside quotes separate arguments; trailing whitespace is ignored.
* If the command line starts with whitespace, the first argument (the program name) is empty.
* ``2n`` backslashes followed by ``"`` give ``n`` backslashes, and the quote toggles "in quotes"
  mode without being copied.
* ``2n + 1`` backslashes followed by ``"`` give ``n`` backslashes and a literal ``"``; the mode is
  unchanged.
* Backslashes not followed by ``"`` are copied as they are.
* An empty command line returns the path of the calling executable. There is no such program
  here, so the result is an empty list (and the pipeline never splits an empty command line).

Behaviour Microsoft does not document, as established by Wine's conformance tests, which run
against Windows (``dlls/shell32/tests/shlexec.c``, ``test_commandline2argv``):

* The program name has its own rules. If it starts with ``"``, it runs up to the next ``"`` no
  matter what (backslashes are literal, ``"C:\\dir\\"`` ends at that quote); the argument after it
  starts right there, even without whitespace in between. Otherwise it runs up to the first space
  or tab, quotes and backslashes included literally.
* ``""`` inside a quoted region gives one literal ``"`` and *ends* the quoted region (Wine's
  "3n quotes" rule reduces to this). That is the C runtime's rule before Visual C++ 2008; the C
  runtime since 2008 stays in quotes instead, but ``CommandLineToArgvW`` did not change, and
  Elastic's pipeline script applies the same "prior to 2008" rule, so both the real function and
  Elasticsearch's ``process.args`` agree with this choice.
* A quoted region left open runs to the end of the command line; a lone ``"`` (or ``""``)
  between separators is an empty argument.
"""

from __future__ import annotations

import re

# The program name: a quoted run up to the next quote (which may be missing), or a bare run up to
# the first space or tab (empty if the command line starts with whitespace).
_PROGRAM_NAME = re.compile(r'"(?P<quoted>[^"]*)"?|(?P<bare>[^ \t]*)')
_BLANKS = re.compile(r"[ \t]*")
# After the program name every character belongs to exactly one of these tokens.
_TOKEN = re.compile(r'(?P<quote>\\*")|(?P<backslashes>\\+)|(?P<blanks>[ \t]+)|(?P<text>[^ \t"\\]+)')


def split_command_line(command_line: str) -> list[str]:
    """The arguments ``CommandLineToArgvW`` returns for ``command_line``, program name first."""
    if not command_line:
        return []
    program = _PROGRAM_NAME.match(command_line)
    quoted_name = program.group("quoted")
    args = [quoted_name if quoted_name is not None else program.group("bare")]
    _split_arguments(command_line, _BLANKS.match(command_line, program.end()).end(), args)
    return args


def _split_arguments(text: str, position: int, args: list[str]) -> None:
    """Append the arguments of ``text[position:]`` (which starts with no whitespace) to ``args``."""
    parts: list[str] = []
    in_argument = False  # an argument has begun, possibly still empty (as after "")
    in_quotes = False
    end = len(text)
    while position < end:
        token = _TOKEN.match(text, position)
        position = token.end()
        kind = token.lastgroup
        if kind == "blanks" and not in_quotes:
            args.append("".join(parts))
            parts.clear()
            in_argument = False
            continue
        in_argument = True
        if kind != "quote":
            parts.append(token.group())
            continue
        backslashes = len(token.group()) - 1
        parts.append("\\" * (backslashes // 2))
        if backslashes % 2:
            parts.append('"')
        elif in_quotes and text.startswith('"', position):
            # "" inside quotes: one literal quote, and the quoted region ends.
            parts.append('"')
            position += 1
            in_quotes = False
        else:
            in_quotes = not in_quotes
    if in_argument:
        args.append("".join(parts))
