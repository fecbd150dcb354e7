"""Read a contract's TOML tables one checked field at a time, naming the field in every error.

:class:`FieldReader` is what every part of the parser
(:mod:`shared.contract.parsing` and the ``[features]``, ``[images]`` and
``[sequences]`` tables) reads the contract with: a value of the wrong type, a
missing required field or an unknown key becomes a :class:`ContractError` that
names the contract, the field and the fix.
"""

from __future__ import annotations

from enum import StrEnum
from types import EllipsisType
from typing import Any, TypeVar

from fedcare.shared.data import InputKind
from fedcare.shared.errors import DataError

_Member = TypeVar("_Member", bound=StrEnum)

Required = EllipsisType
"""The type of ``...``, the default that marks a field as required."""

_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    list: "a list",
    dict: "a table",
    bool: "true or false",
}


class ContractError(DataError):
    """The contract file itself is malformed; the message names the field and the fix."""


class FieldReader:
    """Typed access to a contract's TOML tables; every refusal names the field.

    Parameters
    ----------
    raw : dict[str, Any]
        The contract's top-level table, as :mod:`tomllib` parsed it.
    source : str
        The contract's file (or what stands for it), named in every error.
    """

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self.raw = raw
        self.source = source

    def fail(self, field: str, message: str) -> ContractError:
        """Return the error for ``field``, naming the contract (the caller raises it)."""
        return ContractError(f"contract {self.source}, field '{field}': {message}")

    def get(self, field: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """Return top-level ``field`` checked to be ``kind``; ``...`` as default: required."""
        return self.value(self.raw, field, field, kind, default)

    def value(
        self,
        table: dict[str, Any],
        key: str,
        field: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
    ) -> Any:
        """Return ``table[key]`` checked to be ``kind``; ``field`` names it in errors."""
        if key not in table:
            if default is ...:
                raise self.fail(field, "is required")
            return default
        value = table[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise self.fail(field, f"must be {_type_name(kind)}")
        return value

    def table(self, field: str, keys: set[str]) -> dict[str, Any]:
        """Return the format's own table ``[field]``, holding only ``keys``."""
        if field not in self.raw:
            raise self.fail(
                field,
                f'is required when format = "{field}": add a [{field}] table with '
                f"{', '.join(sorted(keys))}",
            )
        table: dict[str, Any] = self.get(field, dict)
        unknown = sorted(set(table) - keys)
        if unknown:
            raise self.fail(
                f"{field}.{unknown[0]}",
                f"is not a field of the [{field}] table; use {', '.join(sorted(keys))}",
            )
        return table

    def column(self, table: dict[str, Any], key: str, field: str) -> str:
        """Return ``table[key]``, a column name that is not blank."""
        name: str = self.value(table, key, field, str)
        if not name.strip():
            raise self.fail(field, "must name a column (it is blank)")
        return name

    def count(self, field: str) -> int:
        """Return top-level ``field``, a whole number of at least 1 (1 when left out)."""
        value: int = self.get(field, int, 1)
        if value < 1:
            raise self.fail(field, "must be at least 1")
        return value

    def enum(
        self,
        field: str,
        kind: type[_Member],
        default: str | Required = ...,
        *,
        choices: tuple[_Member, ...] | None = None,
        of: InputKind = InputKind.TABLE,
    ) -> _Member:
        """Return top-level ``field`` as a member of ``kind``, one of ``choices`` if given.

        ``of`` is the contract's format, named in the error when ``choices``
        narrow the members to those that format allows.
        """
        value = self.get(field, str, default)
        allowed = [member.value for member in (kind if choices is None else choices)]
        if value not in allowed:
            scope = "" if of is InputKind.TABLE else f' in a format = "{of}" contract'
            raise self.fail(field, f"must be one of {', '.join(allowed)}{scope}")
        return kind(value)

    def strings(self, field: str, default: list[str] | Required = ...) -> list[str]:
        """Return top-level ``field``, a list of distinct non-empty strings."""
        values = self.get(field, list, default)
        if not all(isinstance(v, str) and v for v in values):
            raise self.fail(field, "must be a list of non-empty strings")
        if len(set(values)) != len(values):
            raise self.fail(field, "lists a value twice")
        return list(values)


def _type_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
