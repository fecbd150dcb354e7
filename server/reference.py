"""What the aggregator knows about the data: its shape, never its rows.

In a simulation the aggregator also holds a held-out test set and the pooled and
local-only baselines, so the report can put the federated model beside them; a
real aggregator holds neither and reports the hospitals' own evaluations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fedcare.shared.config.training import TrainingSettings
from fedcare.shared.contract import DataContract
from fedcare.shared.data import Examples, InputKind
from fedcare.shared.models import check_model_input
from fedcare.shared.run_model import run_task
from fedcare.shared.tasks import Task


@dataclass(frozen=True)
class DataReference:
    """The data facts a run needs on the aggregator side.

    Attributes
    ----------
    task : Task
        What the model learns (:func:`shared.models.model_task`).
    feature_names : tuple[str, ...]
        Names of the input's features, in order.
    input_shape : tuple[int, ...]
        Shape of one example's input.
    input_kind : InputKind
        What one input is (a table row, an image, a sequence).
    test : Examples | None
        Held-out test rows, standardised, when the aggregator may hold them
        (simulation only).
    baselines : Mapping[str, Mapping[str, float]]
        Reference rows for the report (``pooled``, ``local_only``), by name; a
        simulation trains them only when the report first reads them.
    """

    task: Task
    feature_names: tuple[str, ...]
    input_shape: tuple[int, ...]
    input_kind: InputKind = InputKind.TABLE
    test: Examples | None = None
    baselines: Mapping[str, Mapping[str, float]] = field(default_factory=dict)


def contract_reference(
    contract_text: str, training: TrainingSettings, *, source: str = "the run's contract"
) -> DataReference:
    """Return what a real aggregator knows: the task and input the federation's contract defines.

    The contract's format gives the input: a table row, an image or a padded
    sequence, with its shape (:meth:`shared.contract.DataContract.input_shape`).
    ``source`` names the contract in errors.

    Raises
    ------
    shared.contract.ContractError
        If the run's contract is malformed.
    shared.errors.ConfigError
        If the run's model cannot read the contract's inputs.
    """
    contract = DataContract.parse(contract_text, source=source)
    check_model_input(training.model, contract.input_kind(), training.model_version)
    return DataReference(
        task=run_task(training, contract.task()),
        feature_names=contract.feature_names(),
        input_shape=contract.input_shape(),
        input_kind=contract.input_kind(),
    )
