"""The project's own error types: each names the file, the message and the element involved."""

from __future__ import annotations


class E2BError(Exception):
    """Base class: a problem with an input file or one of its messages."""

    def __init__(
        self,
        reason: str,
        *,
        file: str | None = None,
        position: int | None = None,
        case_id: str | None = None,
        element: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.file = file
        self.position = position
        self.case_id = case_id
        self.element = element

    def __str__(self) -> str:
        return self.described()

    def described(self, *, with_file: bool = True) -> str:
        """The reason after where it happened; ``with_file=False`` for a report that names the file already."""
        where = [f"file {self.file}" if self.file and with_file else None]
        if self.position is not None:
            where.append(f"message #{self.position}")
        if self.case_id:
            where.append(f"case {self.case_id}")
        if self.element:
            where.append(f"element {self.element}")
        located = ", ".join(w for w in where if w)
        return f"{located}: {self.reason}" if located else self.reason


class HostileXMLError(E2BError):
    """The file uses XML features that are refused (DTDs, entities)."""


class MalformedXMLError(E2BError):
    """The file is not well-formed XML (truncated, wrong encoding, not XML at all)."""


class NotE2BError(E2BError):
    """Well-formed XML, but not an E2B(R3) batch or message."""


class MappingError(E2BError):
    """One message could not be mapped (missing C.1.1, a date that is not a date...)."""
