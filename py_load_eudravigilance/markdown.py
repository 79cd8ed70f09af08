"""Markdown tables for reports (Dagster metadata, the command line): one renderer, cells that cannot break a row."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """``rows`` of texts under ``columns``; a pipe or a line break in a cell is escaped so the table keeps its shape."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\r", " ").replace("\n", " ")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(text) for text in row) + " |" for row in rows]
    return "\n".join(lines)
