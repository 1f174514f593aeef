"""The inventory's one error type, and the problems it carries."""

from __future__ import annotations

from dataclasses import dataclass

from relaunch.errors import RelaunchError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an inventory.

    ``file`` is the inventory file as messages name it ('' when not from a file), ``line``
    is 1-based (None when unknown), ``path`` the key path in display form
    (``apps[blog].health[0].status``; '' for the whole document), ``message`` what was
    expected or what is wrong (never a secret's value), ``code`` a short machine-readable
    kind (``yaml``, ``schema``, ``reference``, ``secret-missing-file``, ...).
    """

    file: str
    line: int | None
    path: str
    message: str
    code: str = "schema"

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line is not None and self.file else "")
        parts = [p for p in (where, self.path) if p]
        return ": ".join([*parts, self.message])


class InventoryError(RelaunchError):
    """An inventory (or its secrets) cannot be used; the message lists every problem found.

    One problem: the message is that problem (``file:line: key.path: expected ...``).
    Several: a summary line, then one problem per line.
    """

    def __init__(self, problems: list[Problem] | Problem | str, *, file: str = "") -> None:
        if isinstance(problems, str):
            problems = Problem(file, None, "", problems)
        if isinstance(problems, Problem):
            problems = [problems]
        if not problems:
            raise ValueError("an InventoryError needs at least one problem")
        self.problems: list[Problem] = list(problems)
        self.file = file or self.problems[0].file
        super().__init__(_format(self.problems, self.file))


class UnknownNameError(InventoryError, KeyError):
    """``Inventory.app(name)`` / ``Inventory.database(name)`` found no such entry."""

    def __str__(self) -> str:  # KeyError would repr-quote the message
        return str(self.problems[0])


def _format(problems: list[Problem], file: str) -> str:
    if len(problems) == 1:
        return str(problems[0])
    head = f"{file + ': ' if file else ''}{len(problems)} problems"
    return "\n".join([head, *(f"  {p}" for p in problems)])
