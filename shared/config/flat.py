"""Flower's flat run config: how a setting declares its key, and how a value is checked.

Each settings section is a frozen dataclass whose fields are declared with
:func:`setting`, binding the field to its kebab-case run-config key. :func:`parse_section`
builds a section from the flat mapping, checking each value against the type of the
field's default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field, fields
from enum import StrEnum
from typing import Any, TypeVar

from fedcare.shared.errors import ConfigError

FlatValue = bool | int | float | str
"""A value of Flower's run config (its ``UserConfigValue``)."""

_Section = TypeVar("_Section")


def setting(key: str, default: FlatValue) -> Any:
    """Declare a dataclass field bound to run-config key ``key``."""
    return field(default=default, metadata={"key": key})


def require(condition: bool, key: str, message: str) -> None:
    """Raise a :class:`ConfigError` naming ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(key, message)


def setting_key(section: type[Any], attribute: str) -> str:
    """Return the run-config key of ``section.attribute``, e.g. ``secure-aggregation``."""
    key: str = next(f.metadata["key"] for f in fields(section) if f.name == attribute)
    return key


def parse_section(section: type[_Section], flat: Mapping[str, FlatValue]) -> _Section:
    """Build ``section`` from the keys of ``flat`` it declares; the rest take defaults."""
    kwargs = {
        f.name: _coerce(f.metadata["key"], flat[f.metadata["key"]], f.default)
        for f in fields(section)  # type: ignore[arg-type]
        if f.metadata["key"] in flat
    }
    return section(**kwargs)


def _coerce(key: str, value: FlatValue, default: Any) -> Any:
    """Check ``value`` against the type of ``default``; ints are accepted for floats."""
    if isinstance(default, StrEnum):
        choices = [member.value for member in type(default)]
        require(value in choices, key, f"must be one of {', '.join(choices)} (got {value!r})")
        return type(default)(str(value))
    if isinstance(default, bool):
        require(isinstance(value, bool), key, f"must be true or false (got {value!r})")
        return value
    if isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
        require(ok, key, f"must be an integer (got {value!r})")
        return value
    if isinstance(default, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        require(ok, key, f"must be a number (got {value!r})")
        return float(value)
    require(isinstance(value, str), key, f"must be a string (got {value!r})")
    return value
