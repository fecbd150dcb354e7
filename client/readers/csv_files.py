"""Read a hospital's CSV file: UTF-8, comma-separated, well-formed, with data rows.

Every cell is read as text (pandas' own missing-value guesses are off), then
trimmed and parsed by :func:`client.readers.columns.text_column`, so the same
rules hold whatever a spreadsheet did to the file.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pandas as pd

from fedcare.client.readers.columns import Layout, Table, Unreadable, text_column, unreadable
from fedcare.client.readers.problems import Rule

_LIKELY_SEPARATORS = {";": "';'", "\t": "tabs", "|": "'|'"}


def read_csv(path: Path, file: str, layout: Layout) -> Table:
    """Read a CSV file's header, row count and the columns ``layout`` asks for.

    Raises
    ------
    Unreadable
        On the first problem with the file as a whole: nothing more can be checked.
    """
    text = _decode(path.read_bytes(), file, layout)
    header = _csv_header(text, file, layout)
    try:
        # dtype=str and no default NA list: MISSING_TOKENS alone decide what is missing.
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, ValueError):
        # Where field counts went unchecked, a row longer than the header is the likely cause.
        cause = "" if layout.count_fields else " (a row with more fields than the header?)"
        hint = f"pandas cannot parse it as CSV{cause}; export it again"
        raise unreadable(file, Rule.MALFORMED, hint) from None
    if frame.shape[1] != len(header):
        raise unreadable(
            file, Rule.MALFORMED, "its rows and header do not line up; export it again"
        )
    if len(frame) == 0:
        raise unreadable(file, Rule.NO_DATA_ROWS, "the file has a header but no data rows")
    columns = {
        # By position: pandas renames a repeated header name, the raw header keeps it.
        name: text_column(
            frame.iloc[:, header.index(name)].to_numpy(dtype=object, na_value=""), kind
        )
        for name, kind in layout.kinds.items()
        if name in header
    }
    return Table(file, layout, header, len(frame), columns)


def _decode(raw: bytes, file: str, layout: Layout) -> str:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark; still strict UTF-8.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        bad_lines = sum(1 for line in raw.split(b"\n") if not _is_utf8(line))
        counted = " (counted as rows)" if layout.lines_as_rows else ""
        hint = (
            f"the file must be UTF-8 and these lines are not{counted}; re-save it as UTF-8 "
            "(Excel: 'CSV UTF-8'; pandas: encoding='utf-8')"
        )
        raise unreadable(file, Rule.NOT_UTF8, hint, bad_lines) from None


def _is_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _csv_header(text: str, file: str, layout: Layout) -> tuple[str, ...]:
    """Return the header (names trimmed) after checking the CSV's shape, never its values."""
    try:
        # Blank lines are skipped, as pandas does.
        rows = (row for row in csv.reader(io.StringIO(text)) if row)
        first = next(rows, None)
        if first is None:
            raise unreadable(file, Rule.EMPTY_FILE, "the file holds no header and no rows")
        header = tuple(name.strip() for name in first)
        if len(header) == 1 and len(layout.columns) > 1:
            raise _not_comma_separated(file, first[0], layout)
        # Counting fields reads every row, so the quoting of every row is checked too.
        ragged = sum(1 for row in rows if len(row) != len(header)) if layout.count_fields else 0
    except csv.Error:
        raise unreadable(
            file, Rule.MALFORMED, "not well-formed CSV (check quotes); export it again"
        ) from None
    if ragged:
        hint = (
            f"every row must have {len(header)} fields like the header; quote cells that "
            "contain commas, or export the file again"
        )
        raise unreadable(file, Rule.WRONG_FIELD_COUNT, hint, ragged)
    return header


def _not_comma_separated(file: str, header: str, layout: Layout) -> Unreadable:
    found = [name for separator, name in _LIKELY_SEPARATORS.items() if separator in header]
    seems = f"; it seems separated by {found[0]}" if found else ""
    return unreadable(
        file,
        Rule.NOT_COMMA_SEPARATED,
        f"the file does not look comma-separated: its header is one column where the "
        f"{layout.agreement} expects {len(layout.columns)}{seems}; export it as CSV with ',' "
        "between columns",
    )
