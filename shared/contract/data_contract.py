"""The data contract: what every hospital's data must look like, agreed by the federation.

A contract has a ``format``: ``"table"`` (the default: one row per patient in a
CSV or Parquet file), ``"images"`` (a MedMNIST-style ``.npz`` file or a folder of
class folders, :mod:`client.image_files`) or ``"sequences"`` (a long-format CSV or
Parquet file, one row per patient per time step, :mod:`client.sequence_files`).
It names the classes and the task, the input's shape (table and sequence
features with their types and ranges; an image's channels and size), and the
minimum counts: ``min_rows`` counts rows, images or patients, by format. The
aggregator reads it to build the model (:meth:`DataContract.input_shape` and
:meth:`DataContract.input_kind`, the task its output); each hospital checks its
own data against it before training. Both sides compare
:meth:`DataContract.fingerprint` so a mismatch is caught before anything runs.

Examples
--------
A table (``format`` may be left out):

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

Images (labels are class indices in the ``.npz``, or class folder names):

.. code-block:: toml

    name = "chest-films"
    format = "images"
    task = "multiclass"               # binary | multiclass
    classes = ["normal", "nodule", "opacity"]  # index 0, 1, 2; folder names
    min_rows = 100                    # images in all
    min_rows_per_class = 10

    [images]
    channels = 1                      # 1 grayscale | 3 RGB
    height = 28                       # pixels, 8 to 512; never resized
    width = 28

Sequences (one row per patient per time step; the label repeated on each row):

.. code-block:: toml

    name = "icu-deterioration"
    format = "sequences"
    task = "binary"                   # binary | multiclass
    label = "deterioration"
    classes = ["0", "1"]              # as written in the file
    positive_class = "1"
    min_rows = 50                     # patients in all
    min_rows_per_class = 5

    [sequences]
    id_column = "patient_id"          # groups rows; never a feature
    time_column = "hour"              # whole, non-negative, unique per patient
    max_length = 24                   # most recent steps kept; shorter ones padded
    min_length = 4                    # fewest steps a patient may have

    [features.heart_rate]
    type = "float"                    # float | int (no category in sequences)
    min = 0.0
    max = 300.0

    [features.lactate]
    type = "float"
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fedcare.shared.data import InputKind
from fedcare.shared.errors import DataError
from fedcare.shared.tasks import Task, TaskKind

if TYPE_CHECKING:
    from fedcare.client.image_files import ImageSpec
    from fedcare.client.sequence_files import SequenceSpec


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


@dataclass(frozen=True)
class ImageLayout:
    """The ``[images]`` table: every image's channels and size.

    Attributes
    ----------
    channels : int
        1 (grayscale) or 3 (RGB).
    height, width : int
        Size in pixels, 8 to 512; images are never resized.
    """

    channels: int
    height: int
    width: int


@dataclass(frozen=True)
class SequenceLayout:
    """The ``[sequences]`` table: how a long-format file's rows become sequences.

    Attributes
    ----------
    id_column : str
        Column identifying the patient (grouping only, never a feature).
    time_column : str
        Column of whole, non-negative time step numbers, unique within a patient.
    max_length : int
        Steps kept per patient (the most recent); shorter sequences are left-padded.
    min_length : int
        Fewest steps a patient may have.
    """

    id_column: str
    time_column: str
    max_length: int
    min_length: int = 1


IMAGE_CHANNEL_NAMES = {1: ("gray",), 3: ("red", "green", "blue")}
"""Feature names of an image's channels, by channel count."""

MASK_NAME = "observed"
"""Feature name of the mask channel added to every sequence (1 real step, 0 padding)."""

_MIN_SIDE = 8
_MAX_SIDE = 512
_COMMON = {"name", "format", "task", "classes", "positive_class", "min_rows", "min_rows_per_class"}
_TOP_LEVEL = {
    InputKind.TABLE: _COMMON | {"label", "id_columns", "missing", "features"},
    InputKind.IMAGES: _COMMON | {"images"},
    InputKind.SEQUENCES: _COMMON | {"label", "missing", "features", "sequences"},
}
_KNOWN = set().union(*_TOP_LEVEL.values())
_TASKS = {
    InputKind.TABLE: (TaskKind.BINARY, TaskKind.MULTICLASS, TaskKind.REGRESSION),
    InputKind.IMAGES: (TaskKind.BINARY, TaskKind.MULTICLASS),
    InputKind.SEQUENCES: (TaskKind.BINARY, TaskKind.MULTICLASS),
}
_FEATURE_KEYS = {"type", "min", "max", "categories"}
_IMAGE_KEYS = {"channels", "height", "width"}
_SEQUENCE_KEYS = {"id_column", "time_column", "max_length", "min_length"}
_MISPLACED = {
    (InputKind.IMAGES, "label"): (
        "an images contract has no label column: an image's class is its label index in the "
        ".npz file or its class folder; remove label"
    ),
    (InputKind.IMAGES, "features"): (
        "images have no feature columns: their input is the [images] table's channels, height "
        "and width; remove the [features] tables"
    ),
    (InputKind.IMAGES, "id_columns"): "images have no columns; remove id_columns",
    (InputKind.IMAGES, "missing"): "an image has no missing cells; remove missing",
    (InputKind.SEQUENCES, "id_columns"): (
        "a sequence file holds only the id, time, feature and label columns; name the patient "
        "id in the [sequences] table's id_column and remove id_columns"
    ),
}


@dataclass(frozen=True)
class DataContract:
    """A parsed, validated data contract (see the module docstring for the format).

    ``label``, ``id_columns`` and ``features`` are empty for images; ``images``
    is set for images only and ``sequences`` for sequences only.
    """

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
    format: InputKind = InputKind.TABLE
    images: ImageLayout | None = None
    sequences: SequenceLayout | None = None
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

    def input_kind(self) -> InputKind:
        """What one example's input is: a table row, an image or a padded sequence."""
        return self.format

    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example's input.

        Returns
        -------
        tuple[int, ...]
            ``(model inputs,)`` for a table, ``(channels, height, width)`` for
            images, ``(max_length, features + 1)`` for sequences (the last
            channel is the padding mask).
        """
        if self.images is not None:
            return (self.images.channels, self.images.height, self.images.width)
        if self.sequences is not None:
            return (self.sequences.max_length, len(self.features) + 1)
        return (len(self.feature_names()),)

    def feature_names(self) -> tuple[str, ...]:
        """Names of the input's features, in order.

        A table's model input columns (categorical features one-hot encoded), an
        image's channels (``gray``, or ``red``, ``green``, ``blue``), or a
        sequence's channels: its features, then ``observed`` (the mask).
        """
        if self.images is not None:
            return IMAGE_CHANNEL_NAMES[self.images.channels]
        if self.sequences is not None:
            return (*(feature.name for feature in self.features), MASK_NAME)
        return tuple(name for feature in self.features for name in feature.encoded_names())

    def image_spec(self) -> ImageSpec:
        """What :func:`client.image_files.load_image_file` holds the images to.

        Raises
        ------
        ContractError
            If the contract does not describe images.
        """
        # Imported here: the aggregator never reads images, and the reader needs Pillow.
        from fedcare.client.image_files import ImageSpec, ImageSpecError

        layout = self._layout("images", self.images)
        try:
            return ImageSpec(
                channels=layout.channels,
                height=layout.height,
                width=layout.width,
                classes=self.classes,
                min_images=self.min_rows,
                min_images_per_class=self.min_rows_per_class,
            )
        except ImageSpecError as error:
            raise ContractError(f"contract {self.source}: {error}") from None

    def sequence_spec(self) -> SequenceSpec:
        """What :func:`client.sequence_files.load_sequence_file` holds the file to.

        Raises
        ------
        ContractError
            If the contract does not describe sequences.
        """
        # Imported here: the aggregator never reads sequence files (pandas, pyarrow).
        from fedcare.client.sequence_files import SequenceSpec, SequenceSpecError

        layout = self._layout("sequences", self.sequences)
        try:
            return SequenceSpec(
                id_column=layout.id_column,
                time_column=layout.time_column,
                label=self.label,
                features=tuple(feature.name for feature in self.features),
                classes=self.classes,
                max_length=layout.max_length,
                min_length=layout.min_length,
                min_patients=self.min_rows,
                min_patients_per_class=self.min_rows_per_class,
            )
        except SequenceSpecError as error:
            raise ContractError(f"contract {self.source}: {error}") from None

    def labels_from_indices(self, indices: np.ndarray) -> np.ndarray:
        """Turn class indices (positions in ``classes``) into the labels a model trains on.

        Returns
        -------
        np.ndarray
            float32 ``1.0`` for the positive class and ``0.0`` otherwise for a
            binary task, int64 class indices for a multiclass one, as
            :func:`client.site_table.load_site_table` gives them.

        Raises
        ------
        ContractError
            If the task has no classes (regression).
        """
        if self.task_kind is TaskKind.BINARY:
            positive = self.classes.index(str(self.positive_class))
            return (np.asarray(indices) == positive).astype(np.float32)
        if self.task_kind is TaskKind.MULTICLASS:
            return np.asarray(indices).astype(np.int64)
        raise ContractError(f"contract {self.source}: a {self.task_kind} task has no classes")

    def check_sequence_values(self, inputs: np.ndarray, source: str) -> None:
        """Hold padded sequences' real steps to the features' ``int`` type and ``min``/``max``.

        The sequence reader already refuses missing and non-finite values; this
        adds what only the contract knows. Only the steps kept (each patient's
        last ``max_length``) are checked: they are all the model sees.

        Parameters
        ----------
        inputs : np.ndarray
            ``(patients, max_length, features + 1)`` as the reader returns them.
        source : str
            The file they came from, for the message.

        Raises
        ------
        DataError
            Naming the file, each failing column, the rule and how many time
            steps fail it; never a value.
        """
        real = inputs[..., -1] > 0
        problems = []
        for channel, feature in enumerate(self.features):
            values = inputs[..., channel][real]
            problems += [
                f"  {source}: column '{feature.name}': {rule} in {count} time "
                f"step{'s' if count != 1 else ''}: {hint}"
                for rule, failing, hint in _value_checks(feature, values)
                if failing is not None and (count := int(np.count_nonzero(failing)))
            ]
        if problems:
            title = (
                f"{source} does not meet the sequence contract ({len(problems)} problem"
                f"{'s' if len(problems) != 1 else ''}); no patient was loaded:"
            )
            raise DataError("\n".join([title, *problems]))

    def fingerprint(self) -> str:
        """SHA-256 of the contract's content (formatting and comments do not count).

        A table contract's fingerprint leaves out the fields tables do not use
        (``format``, ``images``, ``sequences``), so it is the one it had before
        contracts had formats.
        """
        content = {k: v for k, v in asdict(self).items() if k != "source"}
        if self.format is InputKind.TABLE:
            for key in ("format", "images", "sequences"):
                content.pop(key)
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _layout(self, wanted: str, layout: Any) -> Any:
        if layout is None:
            raise ContractError(
                f"contract {self.source} describes {self.format} data, not {wanted}; use a "
                f'contract with format = "{wanted}"'
            )
        return layout


def _value_checks(feature: Feature, values: np.ndarray) -> list[tuple[str, np.ndarray | None, str]]:
    # Bounds as float32, like the values: 0.1 must not exceed a max of 0.1 by rounding.
    low = None if feature.minimum is None else np.float32(feature.minimum)
    high = None if feature.maximum is None else np.float32(feature.maximum)
    return [
        (
            "not-an-integer",
            values != np.round(values) if feature.type is FeatureType.INT else None,
            "the contract declares whole numbers; round or recode those cells",
        ),
        (
            "below-min",
            values < low if low is not None else None,
            f"values must be >= {feature.minimum} (the contract's min); correct them, or widen "
            "the range in the contract if they are genuine",
        ),
        (
            "above-max",
            values > high if high is not None else None,
            f"values must be <= {feature.maximum} (the contract's max); correct them, or widen "
            "the range in the contract if they are genuine",
        ),
    ]


class _Parser:
    """Turns the TOML tables into a :class:`DataContract`, one checked field at a time."""

    def __init__(self, raw: dict[str, Any], source: str) -> None:
        self.raw = raw
        self.source = source

    def fail(self, field: str, message: str) -> ContractError:
        return ContractError(f"contract {self.source}, field '{field}': {message}")

    def get(self, field: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
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
            raise self.fail(field, f"must be {_kind_name(kind)}")
        return value

    def contract(self) -> DataContract:
        unknown = sorted(set(self.raw) - _KNOWN)
        if unknown:
            raise self.fail(
                unknown[0],
                f"is not a contract field; known fields: {', '.join(sorted(_KNOWN))}",
            )
        # Interaction files have no contract format yet: they are simulated only.
        kind = self.enum("format", InputKind, InputKind.TABLE.value, choices=tuple(_TOP_LEVEL))
        misplaced = sorted(set(self.raw) - _TOP_LEVEL[kind])
        if misplaced:
            field = misplaced[0]
            raise self.fail(field, _misplaced(kind, field))
        task_kind = self.enum("task", TaskKind, choices=_TASKS[kind], of=kind)
        classes, positive = self.classes(task_kind)
        common = {
            "name": self.get("name", str),
            "task_kind": task_kind,
            "classes": classes,
            "positive_class": positive,
            "min_rows": self.count("min_rows"),
            "min_rows_per_class": self.count("min_rows_per_class"),
            "format": kind,
            "source": self.source,
        }
        if kind is InputKind.IMAGES:
            return self.image_contract(common)
        if kind is InputKind.SEQUENCES:
            return self.sequence_contract(common)
        label = self.get("label", str)
        id_columns = tuple(self.strings("id_columns", default=[]))
        return DataContract(
            label=label,
            id_columns=id_columns,
            missing=self.enum("missing", MissingPolicy, MissingPolicy.REJECT.value),
            features=self.features(label, id_columns),
            **common,
        )

    def image_contract(self, common: dict[str, Any]) -> DataContract:
        for name in common["classes"]:
            # A class is also the name of its folder: hidden or path-like names are never found.
            if name.startswith(".") or "/" in name or "\\" in name:
                raise self.fail(
                    "classes",
                    "an image class is also the name of its class folder; use names without "
                    "'/' or '\\' that do not start with '.'",
                )
        return DataContract(
            label="",
            id_columns=(),
            missing=MissingPolicy.REJECT,
            features=(),
            images=self.image_layout(),
            **common,
        )

    def image_layout(self) -> ImageLayout:
        table = self.table("images", _IMAGE_KEYS)
        channels = self.value(table, "channels", "images.channels", int)
        if channels not in IMAGE_CHANNEL_NAMES:
            raise self.fail("images.channels", "must be 1 (grayscale) or 3 (RGB)")
        sides = []
        for key in ("height", "width"):
            side = self.value(table, key, f"images.{key}", int)
            if not _MIN_SIDE <= side <= _MAX_SIDE:
                raise self.fail(
                    f"images.{key}",
                    f"must be {_MIN_SIDE} to {_MAX_SIDE} pixels; images are never resized, so "
                    "give the size the hospitals' images are stored at",
                )
            sides.append(side)
        return ImageLayout(channels=channels, height=sides[0], width=sides[1])

    def sequence_contract(self, common: dict[str, Any]) -> DataContract:
        layout = self.sequence_layout()
        label = self.column(self.raw, "label", "label")
        roles = {layout.id_column: "id_column", layout.time_column: "time_column"}
        if label in roles:
            raise self.fail(
                "label", f"is the [sequences] table's {roles[label]}; name the label column"
            )
        missing = self.enum("missing", MissingPolicy, MissingPolicy.REJECT.value)
        if missing is not MissingPolicy.REJECT:
            raise self.fail(
                "missing",
                "a sequence file may have no missing cell, so only reject applies; remove "
                "missing or set it to reject, and fill or remove the missing cells",
            )
        return DataContract(
            label=label,
            id_columns=(),
            missing=missing,
            features=self.sequence_features(label, layout),
            sequences=layout,
            **common,
        )

    def sequence_layout(self) -> SequenceLayout:
        table = self.table("sequences", _SEQUENCE_KEYS)
        id_column = self.column(table, "id_column", "sequences.id_column")
        time_column = self.column(table, "time_column", "sequences.time_column")
        if time_column == id_column:
            raise self.fail(
                "sequences.time_column",
                "is also the id_column; name the column of time step numbers",
            )
        lengths = {}
        for key, default in (("max_length", ...), ("min_length", 1)):
            field = f"sequences.{key}"
            lengths[key] = self.value(table, key, field, int, default)
            if lengths[key] < 1:
                raise self.fail(field, "must be at least 1 (time steps per patient)")
        return SequenceLayout(id_column=id_column, time_column=time_column, **lengths)

    def sequence_features(self, label: str, layout: SequenceLayout) -> tuple[Feature, ...]:
        tables = self.get("features", dict)
        if not tables:
            raise self.fail("features", "lists no feature")
        roles = {
            label: "the label",
            layout.id_column: "the [sequences] table's id_column",
            layout.time_column: "the [sequences] table's time_column",
        }
        features = []
        for name, table in tables.items():
            field = f"features.{name}"
            if not name.strip():
                raise self.fail(field, "needs a column name that is not blank")
            if name in roles:
                raise self.fail(
                    field, f"is {roles[name]}; it cannot also be a feature: remove [{field}]"
                )
            if name == MASK_NAME:
                raise self.fail(
                    field,
                    "is the name of the mask channel fedcare adds to every sequence; rename "
                    "the column in the file and the contract",
                )
            if isinstance(table, dict) and table.get("type") == FeatureType.CATEGORY.value:
                raise self.fail(
                    f"{field}.type",
                    "category features are not supported in a sequences contract: every "
                    "sequence feature must be a number; use float or int, and encode a "
                    "category as 0/1 columns",
                )
            features.append(self.feature(name, table))
        return tuple(features)

    def table(self, field: str, keys: set[str]) -> dict[str, Any]:
        if field not in self.raw:
            raise self.fail(
                field,
                f'is required when format = "{field}": add a [{field}] table with '
                f"{', '.join(sorted(keys))}",
            )
        table = self.get(field, dict)
        unknown = sorted(set(table) - keys)
        if unknown:
            raise self.fail(
                f"{field}.{unknown[0]}",
                f"is not a field of the [{field}] table; use {', '.join(sorted(keys))}",
            )
        return table

    def column(self, table: dict[str, Any], key: str, field: str) -> str:
        name = self.value(table, key, field, str)
        if not name.strip():
            raise self.fail(field, "must name a column (it is blank)")
        return name

    def count(self, field: str) -> int:
        value = self.get(field, int, 1)
        if value < 1:
            raise self.fail(field, "must be at least 1")
        return value

    def enum(
        self,
        field: str,
        kind: type[StrEnum],
        default: Any = ...,
        *,
        choices: tuple[StrEnum, ...] | None = None,
        of: InputKind = InputKind.TABLE,
    ) -> Any:
        value = self.get(field, str, default)
        allowed = [member.value for member in (kind if choices is None else choices)]
        if value not in allowed:
            scope = "" if of is InputKind.TABLE else f' in a format = "{of}" contract'
            raise self.fail(field, f"must be one of {', '.join(allowed)}{scope}")
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


def _misplaced(kind: InputKind, field: str) -> str:
    """Why a known top-level ``field`` has no place in a ``kind`` contract, and the fix."""
    if field in ("images", "sequences"):
        return (
            f'describes {field} data, but the contract\'s format is "{kind}"; set '
            f'format = "{field}", or remove the [{field}] table'
        )
    return _MISPLACED.get((kind, field), f'is not used by a format = "{kind}" contract; remove it')
