"""PostgreSQL's ``COPY ... (FORMAT text)`` rows, which are also MySQL's ``LOAD DATA`` default: the form of the rows the
loaders write themselves (MedDRA terms, statistics, through ``Dialect.insert_records``) and of the published guide's
``load_normalized_data`` interface. The staged rows of a load are binary COPY (``copybinary.py``).

One row per line, columns separated by a tab, ``\\N`` for NULL. A backslash, tab, line feed or
carriage return inside a value is written as ``\\\\``, ``\\t``, ``\\n``, ``\\r``: so no value can end a
row, split a column or form the ``\\.`` end-of-data line, whatever bytes it holds. Booleans are
``true``/``false``, binary values ``\\\\x`` + hex (bytea's hex input), timestamps ISO 8601 with offset.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

NULL = "\\N"
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
_UNESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"n": "\n", "r": "\r", "t": "\t", "\\": "\\", "b": "\b", "f": "\f", "v": "\v"}


def escape(text: str) -> str:
    return text.translate(_ESCAPES)


def encode(value: Any) -> str:
    """One column's text; None and the empty string are NULL (an empty element carries no value)."""
    if value is None or value == "":
        return NULL
    kind = value.__class__
    if kind is str:
        return value.translate(_ESCAPES)
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return repr(value)
    if isinstance(value, bytes):
        return "\\\\x" + value.hex()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_ESCAPES)
    raise TypeError(f"no staged form for {kind.__name__}")


def encode_row(values: Iterable[Any]) -> bytes:
    return ("\t".join(map(encode, values)) + "\n").encode("utf-8")


def _unescape(field: str) -> str | None:
    if field == NULL:
        return None
    if "\\" not in field:
        return field
    return _UNESCAPE.sub(lambda m: _UNESCAPED.get(m.group(1), m.group(1)), field)


def decode_lines(lines: Iterable[bytes]) -> Iterator[list[str | None]]:
    """Rows of staged lines, each a list of column texts (None for NULL)."""
    for line in lines:
        yield [_unescape(field) for field in line.decode("utf-8").rstrip("\n").split("\t")]
