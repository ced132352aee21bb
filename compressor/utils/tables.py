"""One table renderer for every report: markdown, aligned plain text and the terminal (rich)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["markdown_table", "text_table", "print_table"]

Rows = Sequence[Sequence[str]]


def _cell(value: str) -> str:
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Rows) -> str:
    """A markdown table (``|`` inside cells becomes ``/``), ending with a newline."""
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def text_table(header: Sequence[str] | None, rows: Rows, gap: int = 2) -> str:
    """Columns padded to their widest cell (no trailing spaces); ``header`` may be ``None``."""
    table = ([list(header)] if header is not None else []) + [list(r) for r in rows]
    if not table:
        return ""
    widths = [max(len(str(row[i])) for row in table if i < len(row))
              for i in range(max(len(row) for row in table))]
    return "\n".join((" " * gap).join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
                     for row in table)


def print_table(header: Sequence[str] | None, rows: Rows, title: str | None = None,
                right: Sequence[int] = ()) -> None:
    """Print a table on the terminal with rich (``right``: indices of right-aligned columns;
    ``header=None``: no header row, the first column bold)."""
    from rich.console import Console
    from rich.table import Table

    width = len(header) if header is not None else max((len(r) for r in rows), default=0)
    table = Table(title=title, show_header=header is not None,
                  header_style="bold" if header is not None else None)
    for index in range(width):
        table.add_column(header[index] if header is not None else "",
                         justify="right" if index in right else "left",
                         style="bold" if header is None and index == 0 else None)
    for row in rows:
        table.add_row(*[str(c) for c in row])
    Console().print(table)
