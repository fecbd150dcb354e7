"""Cells a spreadsheet will not run: the one place text bound for CSV is neutralised.

Spreadsheet programs run a cell that starts with ``=``, ``+``, ``-`` or ``@`` (or a
tab or carriage return) as a formula: ``=HYPERLINK(...)`` in a hospital's name
would become a live link in the operator's spreadsheet ("CSV injection", OWASP).
Every text cell fedcare writes to a CSV file goes through :func:`neutralise_cell`,
which puts an apostrophe before such text, so spreadsheets show it as text.
Numbers stay numbers: fedcare writes them itself, and a negative loss is no formula.
"""

from __future__ import annotations

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutralise_cell(value: object) -> object:
    """Return ``value``, with an apostrophe before text a spreadsheet would run as a formula."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value
