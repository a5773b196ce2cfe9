"""StudyError: one line naming file:line, the dotted field and what is allowed."""

from __future__ import annotations

import os


class StudyError(Exception):
    """A bad study: one line naming file:line, the dotted field and what is allowed."""

    def __init__(self, message: str, *, file: str | os.PathLike | None = None,
                 line: int | None = None, field: str | None = None):
        self.file = str(file) if file is not None else None
        self.line = line
        self.field = field
        self.message = message
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        field = f"{self.field}: " if self.field else ""
        return " ".join(f"{where}{field}{self.message}".split())
