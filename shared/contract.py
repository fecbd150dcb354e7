"""The data contract: what every hospital's file must look like, agreed by the federation.

The contract names the label and its classes, the task, every feature with its
type and allowed range or categories, identifier columns that are never
features, the missing-value policy, and minimum row counts. The aggregator reads
it to build the model (features give the input width, the task its output); each
hospital checks its own file against it before training. Both sides compare
:meth:`DataContract.fingerprint` so a mismatch is caught before anything runs.

Example
-------
.. code-block:: toml

    name = "breast-cancer-diagnosis"
    task = "binary"                   # binary | multiclass | regression
    label = "diagnosis"
    classes = ["benign", "malignant"] # as written in the file
    positive_class = "malignant"      # binary: what sensitivity refers to
    id_columns = ["patient_id"]       # never used as features
    missing = "reject"                # reject | drop-rows
    min_rows = 30
    min_rows_per_class = 5

    [features.radius_mean]
    type = "float"                    # float | int | category
    min = 0.0
    max = 50.0

    [features.sex]
    type = "category"
    categories = ["F", "M"]           # one-hot: "sex=F", "sex=M"
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from shared.errors import DataError
from shared.tasks import Task, TaskKind


class ContractError(DataError):
    """The contract file itself is malformed; the message names the field and the fix."""


class FeatureType(StrEnum):
    """Types a contract feature can take."""

    FLOAT = "float"
    INT = "int"
    CATEGORY = "category"


class MissingPolicy(StrEnum):
    """What to do with a row that has a missing feature or label."""

    REJECT = "reject"
    DROP_ROWS = "drop-rows"


@dataclass(frozen=True)
class Feature:
    """One feature column.

    Attributes
    ----------
    name : str
        Column name in the file.
    type : FeatureType
        Numeric (float, int) or categorical.
    minimum, maximum : float | None
        Inclusive allowed range of a numeric feature.
    categories : tuple[str, ...]
        Allowed values of a categorical feature, in one-hot order.
    """

    name: str
    type: FeatureType
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()

    def encoded_names(self) -> list[str]:
        """Model input columns this feature becomes (one per category when one-hot)."""
        if self.type is FeatureType.CATEGORY:
            return [f"{self.name}={category}" for category in self.categories]
        return [self.name]


_TOP_LEVEL = {
    "name",
    "task",
    "label",
    "classes",
    "positive_class",
    "id_columns",
    "missing",
    "min_rows",
    "min_rows_per_class",
    "features",
}
_FEATURE_KEYS = {"type", "min", "max", "categories"}


@dataclass(frozen=True)
class DataContract:
    """A parsed, validated data contract (see the module docstring for the format)."""

    name: str
    task_kind: TaskKind
    label: str
    classes: tuple[str, ...]
    positive_class: str | None
    id_columns: tuple[str, ...]
    missing: MissingPolicy
    min_rows: int
    min_rows_per_class: int
    features: tuple[Feature, ...]
    source: str = ""

    @classmethod
    def load(cls, path: Path) -> DataContract:
        """Read and validate the contract file at ``path``.

        Raises
        ------
        ContractError
            If it is missing, not TOML, or breaks a rule; naming the file and field.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ContractError(f"contract {path} does not exist") from None
        except UnicodeDecodeError:
            raise ContractError(f"contract {path} is not UTF-8 text") from None
        return cls.parse(text, source=str(path))

    @classmethod
    def parse(cls, text: str, *, source: str) -> DataContract:
        """Parse contract TOML ``text``; ``source`` names it in errors."""
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ContractError(f"contract {source} is not valid TOML: {error}") from None
        return _Parser(raw, source).contract()

    def task(self) -> Task:
        """The learning task the label defines."""
        if self.task_kind is TaskKind.BINARY:
            return Task(TaskKind.BINARY, positive_label=str(self.positive_class))
        if self.task_kind is TaskKind.MULTICLASS:
            return Task(TaskKind.MULTICLASS, num_classes=len(self.classes))
        return Task(TaskKind.REGRESSION)

    def feature_names(self) -> tuple[str, ...]:
        """Model input columns, in order, categorical features one-hot encoded."""
        return tuple(name for feature in self.features for name in feature.encoded_names())

    def fingerprint(self) -> str:
        """SHA-256 of the contract's content (formatting and comments do not count)."""
        content = {k: v for k, v in asdict(self).items() if k != "source"}
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()


class _Parser:
    """Turns the TOML tables into a :class:`DataContract`, one checked field at a time."""

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self.raw = raw
        self.source = source

    def fail(self, field: str, message: str) -> ContractError:
        return ContractError(f"contract {self.source}, field '{field}': {message}")

    def get(self, field: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        if field not in self.raw:
            if default is ...:
                raise self.fail(field, "is required")
            return default
        value = self.raw[field]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise self.fail(field, f"must be {_kind_name(kind)}")
        return value

    def contract(self) -> DataContract:
        unknown = sorted(set(self.raw) - _TOP_LEVEL)
        if unknown:
            raise self.fail(
                unknown[0],
                f"is not a contract field; known fields: {', '.join(sorted(_TOP_LEVEL))}",
            )
        task_kind = self.enum("task", TaskKind)
        label = self.get("label", str)
        classes, positive = self.classes(task_kind)
        id_columns = tuple(self.strings("id_columns", default=[]))
        features = self.features(label, id_columns)
        min_rows = self.get("min_rows", int, 1)
        if min_rows < 1:
            raise self.fail("min_rows", "must be at least 1")
        min_per_class = self.get("min_rows_per_class", int, 1)
        if min_per_class < 1:
            raise self.fail("min_rows_per_class", "must be at least 1")
        return DataContract(
            name=self.get("name", str),
            task_kind=task_kind,
            label=label,
            classes=classes,
            positive_class=positive,
            id_columns=id_columns,
            missing=self.enum("missing", MissingPolicy, MissingPolicy.REJECT.value),
            min_rows=min_rows,
            min_rows_per_class=min_per_class,
            features=features,
            source=self.source,
        )

    def enum(self, field: str, kind: type[StrEnum], default: Any = ...) -> Any:
        value = self.get(field, str, default)
        choices = [member.value for member in kind]
        if value not in choices:
            raise self.fail(field, f"must be one of {', '.join(choices)}")
        return kind(value)

    def strings(self, field: str, default: Any = ...) -> list[str]:
        values = self.get(field, list, default)
        if not all(isinstance(v, str) and v for v in values):
            raise self.fail(field, "must be a list of non-empty strings")
        if len(set(values)) != len(values):
            raise self.fail(field, "lists a value twice")
        return list(values)

    def classes(self, task_kind: TaskKind) -> tuple[tuple[str, ...], str | None]:
        if task_kind is TaskKind.REGRESSION:
            if "classes" in self.raw or "positive_class" in self.raw:
                raise self.fail(
                    "classes", "a regression contract has no classes; remove classes/positive_class"
                )
            return (), None
        classes = self.strings("classes")
        wanted = 2 if task_kind is TaskKind.BINARY else 3
        if (task_kind is TaskKind.BINARY and len(classes) != 2) or len(classes) < wanted:
            raise self.fail(
                "classes",
                f"a {task_kind.value} task needs {'exactly 2' if wanted == 2 else 'at least 3'} classes",
            )
        if task_kind is TaskKind.MULTICLASS:
            return tuple(classes), None
        positive = self.get("positive_class", str)
        if positive not in classes:
            raise self.fail("positive_class", "must be one of classes")
        return tuple(classes), positive

    def features(self, label: str, id_columns: tuple[str, ...]) -> tuple[Feature, ...]:
        tables = self.get("features", dict)
        if not tables:
            raise self.fail("features", "lists no feature")
        features = tuple(self.feature(name, table) for name, table in tables.items())
        for feature in features:
            if feature.name == label:
                raise self.fail(
                    f"features.{feature.name}", "is the label; a label cannot also be a feature"
                )
            if feature.name in id_columns:
                raise self.fail(
                    f"features.{feature.name}", "is an id column; identifiers are never features"
                )
        return features

    def feature(self, name: str, table: Any) -> Feature:
        field = f"features.{name}"
        if not isinstance(table, dict):
            raise self.fail(field, "must be a table with at least a type")
        unknown = sorted(set(table) - _FEATURE_KEYS)
        if unknown:
            raise self.fail(
                f"{field}.{unknown[0]}",
                f"is not a feature field; use {', '.join(sorted(_FEATURE_KEYS))}",
            )
        if "type" not in table:
            raise self.fail(f"{field}.type", "is required (float, int or category)")
        if table["type"] not in [t.value for t in FeatureType]:
            raise self.fail(f"{field}.type", "must be float, int or category")
        kind = FeatureType(table["type"])
        if kind is FeatureType.CATEGORY:
            return self.categorical(name, table)
        minimum, maximum = (self.bound(f"{field}.{key}", table.get(key)) for key in ("min", "max"))
        if minimum is not None and maximum is not None and minimum > maximum:
            raise self.fail(field, "has min greater than max")
        return Feature(name=name, type=kind, minimum=minimum, maximum=maximum)

    def categorical(self, name: str, table: dict[str, Any]) -> Feature:
        field = f"features.{name}.categories"
        categories = table.get("categories")
        if not isinstance(categories, list) or not categories:
            raise self.fail(field, "must list the allowed categories")
        if not all(isinstance(c, str) and c for c in categories):
            raise self.fail(field, "must be non-empty strings")
        if len(set(categories)) != len(categories):
            raise self.fail(field, "lists a category twice")
        if "min" in table or "max" in table:
            raise self.fail(f"features.{name}", "a category has no min or max")
        return Feature(name=name, type=FeatureType.CATEGORY, categories=tuple(categories))

    def bound(self, field: str, value: Any) -> float | None:
        if value is None:
            return None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise self.fail(field, "must be a finite number")
        return float(value)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {
        str: "a string",
        int: "an integer",
        list: "a list",
        dict: "a table",
        bool: "true or false",
    }
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)
