"""Split a Windows command line into ``process.args`` the way Elastic's Sysmon pipeline does.

Windows hands a process one command-line string and every program splits it itself. Elastic's
ingest pipelines (Winlogbeat's Sysmon module, the Windows integration's ``sysmon_operational``)
split ``process.command_line`` with a Painless port of Go's ``commandLineToArgv``, and rules test
single arguments of the result (``process.args : "-Embedding"``). Parity with Elasticsearch wins
over Windows here, so this follows that script, not ``CommandLineToArgvW``:

* spaces and tabs outside quotes separate arguments; blanks before an argument are skipped (no
  empty first argument for a leading blank);
* every argument, the program name included, follows the same rules: ``2n`` backslashes and a
  ``"`` give ``n`` backslashes and toggle quoting; ``2n + 1`` backslashes and a ``"`` give ``n``
  backslashes and a literal ``"``; other backslashes are literal;
* a quote toggles quoting **without ending the argument**, so ``"C:\\...\\mshta.exe"-Embedding`` is
  one argument, ``C:\\...\\mshta.exe-Embedding`` (``CommandLineToArgvW`` would end the program name
  at its closing quote);
* ``""`` inside quotes gives one literal ``"`` and ends the quoted part (the C runtime's rule before
  Visual C++ 2008);
* an empty command line gives no arguments (the pipeline never splits one).

Hand-written: no maintained Python library implements this pipeline's variant.
"""

from __future__ import annotations

_BLANKS = " \t"


def split_command_line(command_line: str) -> list[str]:
    """``process.args`` as Elastic's pipeline computes it from ``command_line``."""
    args: list[str] = []
    position, end = 0, len(command_line)
    while position < end:
        if command_line[position] in _BLANKS:
            position += 1
            continue
        argument, position = _read_argument(command_line, position)
        args.append(argument)
    return args


def _read_argument(text: str, position: int) -> tuple[str, int]:
    """The argument starting at ``position`` and the position after it (and after its ending blank)."""
    parts: list[str] = []
    in_quotes = False
    backslashes = 0
    end = len(text)
    while position < end:
        char = text[position]
        position += 1
        if char == "\\":
            backslashes += 1
            continue
        if char == '"':
            parts.append("\\" * (backslashes // 2))
            if backslashes % 2:
                parts.append('"')
            else:
                if in_quotes and position < end and text[position] == '"':
                    parts.append('"')
                    position += 1
                in_quotes = not in_quotes
            backslashes = 0
            continue
        parts.append("\\" * backslashes)
        backslashes = 0
        if char in _BLANKS and not in_quotes:
            return "".join(parts), position
        parts.append(char)
    parts.append("\\" * backslashes)
    return "".join(parts), position
