"""The errors the detection core raises on purpose; everything else it raises is a bug."""

from __future__ import annotations

from pathlib import Path


class EqlstreamError(Exception):
    """Base of every error eqlstream reports to its user with a message and no traceback."""


class RuleError(EqlstreamError):
    """A rule file that cannot be used; the message names the file, the position and the problem."""

    def __init__(self, path: Path | str, problem: str, line: int | None = None, column: int | None = None) -> None:
        where = str(path)
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        super().__init__(f"{where}: {problem}")
        self.path, self.problem, self.line, self.column = str(path), problem, line, column


class UnsupportedRule(RuleError):
    """A well-formed rule that asks for something eqlstream does not evaluate (an EQL feature, an option).

    A directory of rules skips these with a warning, so that a copy of Elastic's rule folders runs
    what it can; a rule file named on its own, or a malformed one, is an error.
    """


class UnsupportedQuery(ValueError):
    """The query uses EQL that this engine does not evaluate; the message says what."""
