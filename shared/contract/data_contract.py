"""The data contract: what every hospital's data must look like, agreed by the federation.

A contract has a ``format``: ``"table"`` (the default: one row per patient in a
CSV or Parquet file), ``"images"`` (a MedMNIST-style ``.npz`` file or a folder of
class folders, :mod:`client.readers.images`) or ``"sequences"`` (a long-format CSV or
Parquet file, one row per patient per time step, :mod:`client.readers.sequences`).
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
    missing = "reject"                # reject | drop-rows | impute (each feature may override)
    min_rows = 30
    min_rows_per_class = 5
    min_rows_per_class_scope = "hospital"  # hospital | federation (all hospitals together)

    [features.radius_mean]
    type = "float"                    # float | int | category
    min = 0.0
    max = 50.0

    [features.lactate]
    type = "float"
    min = 0.0
    max = 30.0
    missing = "impute"                # an empty cell takes fill
    fill = "dp-mean"                  # a number (public), or "dp-mean" (the hospital's DP mean)
    indicator = true                  # adds the input "lactate_missing" (1 where empty)

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
    missing = "reject"                # reject | forward-fill (then every feature needs fill)

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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from fedcare.shared.contract.features import Feature, FeatureType
from fedcare.shared.contract.fields import ContractError
from fedcare.shared.contract.images import (
    IMAGE_CHANNEL_NAMES,
    ImageLayout,
    ImageSpec,
    ImageSpecError,
)
from fedcare.shared.contract.missing import Fill, MissingPolicy
from fedcare.shared.contract.parsing import ClassMinimumScope, parse_contract_fields
from fedcare.shared.contract.sequences import (
    SequenceLayout,
    SequenceSpec,
    SequenceSpecError,
    sequence_input_names,
)
from fedcare.shared.data import FeatureBounds, InputKind
from fedcare.shared.tasks import Task, TaskKind

_Layout = TypeVar("_Layout", ImageLayout, SequenceLayout)


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
    min_rows_per_class_scope: ClassMinimumScope = ClassMinimumScope.HOSPITAL
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
        """Parse contract TOML ``text``; ``source`` names it in errors.

        Raises
        ------
        ContractError
            If it is not TOML or breaks a rule (:mod:`shared.contract.parsing`).
        """
        return cls(**parse_contract_fields(text, source=source))

    def task(self) -> Task:
        """Return the learning task the label defines."""
        if self.task_kind is TaskKind.BINARY:
            return Task(TaskKind.BINARY, positive_label=str(self.positive_class))
        if self.task_kind is TaskKind.MULTICLASS:
            return Task(TaskKind.MULTICLASS, num_classes=len(self.classes))
        return Task(TaskKind.REGRESSION)

    def input_kind(self) -> InputKind:
        """Return what one example's input is: a table row, an image or a padded sequence."""
        return self.format

    def input_shape(self) -> tuple[int, ...]:
        """Return the shape of one example's input.

        Returns
        -------
        tuple[int, ...]
            ``(model inputs,)`` for a table, ``(channels, height, width)`` for
            images, ``(max_length, channels)`` for sequences (the features, under
            forward-fill each one's observed and time-since channels, and last
            the padding mask).
        """
        if self.images is not None:
            return (self.images.channels, self.images.height, self.images.width)
        if self.sequences is not None:
            return (self.sequences.max_length, len(self.feature_names()))
        return (len(self.feature_names()),)

    def feature_names(self) -> tuple[str, ...]:
        """Return the names of the input's features, in order.

        A table's model input columns (categorical features one-hot encoded,
        missing indicators after their feature), an image's channels (``gray``,
        or ``red``, ``green``, ``blue``), or a sequence's channels
        (:func:`shared.contract.sequences.sequence_input_names`).
        """
        if self.images is not None:
            return IMAGE_CHANNEL_NAMES[self.images.channels]
        if self.sequences is not None:
            return sequence_input_names(self.features, self.missing)
        return tuple(name for feature in self.features for name in feature.encoded_names())

    @property
    def hospital_min_rows_per_class(self) -> int:
        """Fewest rows (images, patients) of each class one hospital's file must hold.

        ``min_rows_per_class`` where it applies to each hospital, 0 where it
        applies to the federation (:class:`shared.contract.parsing.ClassMinimumScope`).
        """
        if self.min_rows_per_class_scope is ClassMinimumScope.FEDERATION:
            return 0
        return self.min_rows_per_class

    def fills(self) -> dict[str, Fill]:
        """Return each filled numeric feature's fill (a number, or a DP statistic), by name."""
        return {
            feature.name: feature.fill
            for feature in self.features
            if feature.missing.fills and feature.fill is not None
        }

    def feature_bounds(self) -> FeatureBounds | None:
        """Return the public bounds of the model's input features: what hospitals scale with.

        A table's numeric column keeps its ``min``/``max`` (unbounded where the
        contract gives none, and then left unscaled), a one-hot column and a
        missing indicator are in [0, 1]; a sequence's channels take their
        feature's range, and its observation and time-since channels are in
        [0, 1] already. Images have none: their pixels are already in [0, 1].
        """
        if self.images is not None:
            return None
        unit = (0.0, 1.0, False)
        pairs: list[tuple[float, float, bool]] = []
        for feature in self.features:
            if feature.type is FeatureType.CATEGORY:
                pairs.extend([unit] * len(feature.categories))
            else:
                low = -math.inf if feature.minimum is None else feature.minimum
                high = math.inf if feature.maximum is None else feature.maximum
                pairs.append((low, high, feature.log_scale))
            if feature.indicator and self.sequences is None:
                pairs.append(unit)
        if self.sequences is not None and self.missing is MissingPolicy.FORWARD_FILL:
            pairs.extend([unit] * (2 * len(self.features)))
        low_bounds, high_bounds, log = np.array(pairs, dtype=np.float64).reshape(-1, 3).T
        return FeatureBounds(low=low_bounds, high=high_bounds, log=log.astype(bool))

    def image_spec(self) -> ImageSpec:
        """Return what :func:`client.readers.images.load_image_file` holds the images to.

        Raises
        ------
        ContractError
            If the contract does not describe images.
        """
        layout = self._layout("images", self.images)
        try:
            return ImageSpec(
                channels=layout.channels,
                height=layout.height,
                width=layout.width,
                classes=self.classes,
                min_images=self.min_rows,
                min_images_per_class=self.hospital_min_rows_per_class,
            )
        except ImageSpecError as error:
            raise ContractError(f"contract {self.source}: {error}") from None

    def sequence_spec(self) -> SequenceSpec:
        """Return what :func:`client.readers.sequences.load_sequence_file` holds the file to.

        Raises
        ------
        ContractError
            If the contract does not describe sequences.
        """
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
                min_patients_per_class=self.hospital_min_rows_per_class,
                forward_fill=self.missing is MissingPolicy.FORWARD_FILL,
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
            :func:`client.readers.table.load_site_table` gives them.

        Raises
        ------
        ContractError
            If the task has no classes (regression).
        """
        if self.task_kind is TaskKind.BINARY:
            positive = self.classes.index(str(self.positive_class))
            is_positive: np.ndarray = np.asarray(indices) == positive
            return is_positive.astype(np.float32)
        if self.task_kind is TaskKind.MULTICLASS:
            return np.asarray(indices).astype(np.int64)
        raise ContractError(f"contract {self.source}: a {self.task_kind} task has no classes")

    def fingerprint(self) -> str:
        """Return the SHA-256 of the contract's content (formatting and comments do not count).

        A table contract's fingerprint leaves out the fields tables do not use
        (``format``, ``images``, ``sequences``), and every contract's the fields
        added since at their defaults (the class minimum's scope, each feature's
        own scale, missing policy, fill and indicator), so a contract that uses none of
        them keeps the fingerprint it had before they existed.
        """
        content = {k: v for k, v in asdict(self).items() if k != "source"}
        if self.format is InputKind.TABLE:
            for key in ("format", "images", "sequences"):
                content.pop(key)
        if self.min_rows_per_class_scope is ClassMinimumScope.HOSPITAL:
            content.pop("min_rows_per_class_scope")
        content["features"] = [_feature_content(feature, self.missing) for feature in self.features]
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _layout(self, wanted: str, layout: _Layout | None) -> _Layout:
        if layout is None:
            raise ContractError(
                f"contract {self.source} describes {self.format} data, not {wanted}; use a "
                f'contract with format = "{wanted}"'
            )
        return layout


def _feature_content(feature: Feature, missing: MissingPolicy) -> dict[str, object]:
    """Return a feature's fingerprinted fields: missing-value ones only where they say something."""
    content = asdict(feature)
    defaults = {"missing": missing, "fill": None, "indicator": False, "log_scale": False}
    for key, default in defaults.items():
        if content[key] == default:
            content.pop(key)
    return content
