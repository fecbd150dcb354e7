"""What the aggregator knows about the data: its shape, never its rows.

In a simulation the aggregator also holds a held-out test set and the pooled and
local-only baselines, so the report can put the federated model beside them; a
real aggregator holds neither and reports the hospitals' own evaluations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.contract import DataContract
from shared.data import TabularData
from shared.tasks import Task


@dataclass(frozen=True)
class DataReference:
    """The data facts a run needs on the aggregator side.

    Attributes
    ----------
    task : Task
        What the model predicts.
    feature_names : tuple[str, ...]
        Input columns, in order (the model's input width).
    test : TabularData | None
        Held-out test rows, standardised, when the aggregator may hold them
        (simulation only).
    baselines : dict[str, dict[str, float]]
        Reference rows for the report (``pooled``, ``local_only``), by name.
    """

    task: Task
    feature_names: tuple[str, ...]
    test: TabularData | None = None
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)


def contract_reference(contract_text: str) -> DataReference:
    """What a real aggregator knows: the task and features the federation's contract defines.

    Raises
    ------
    shared.contract.ContractError
        If the run's contract is malformed.
    """
    contract = DataContract.parse(contract_text, source="the run's contract")
    return DataReference(task=contract.task(), feature_names=contract.feature_names())
