"""The aggregator's reference data in a simulation: held-out test set and baselines."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from fedcare.server.reference import DataReference
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.device import resolve_device
from fedcare.shared.run_model import run_task
from fedcare.simulations.baselines import compute_baselines
from fedcare.simulations.federation import SimulatedFederation, build_federation

logger = logging.getLogger(__name__)


def simulated_reference(config: RunConfig) -> DataReference:
    """Build the built-in data's test set and baselines for ``config``.

    Raises
    ------
    shared.errors.DataError
        If the data settings cannot give every hospital enough rows.
    """
    return federation_reference(config, build_federation(config.data))


def federation_reference(config: RunConfig, federation: SimulatedFederation) -> DataReference:
    """Return the federation's test set and its pooled and local-only baselines.

    The baselines train when the report first reads them (:class:`DeferredBaselines`).
    Data without a test set (interactions: patient embeddings stay at the
    hospitals) gets neither; the report then takes its final metrics from the
    hospitals' own evaluations.
    """
    test = federation.test
    logger.info(
        "simulated federation: %s hospitals (%s), %s",
        len(federation.hospitals),
        _sizes(federation),
        f"{len(test)} held-out test rows" if test is not None else "no held-out test set",
    )
    baselines: Mapping[str, Mapping[str, float]] = {}
    if test is None:
        logger.info(
            "no pooled or local-only baselines: without a test set the hospitals' own "
            "evaluations score the federated model"
        )
    else:
        baselines = DeferredBaselines(config, federation)
    schema = federation.schema
    return DataReference(
        task=run_task(config.training, federation.task),
        feature_names=schema.feature_names,
        input_shape=schema.shared_input_shape,
        input_kind=schema.kind,
        test=test,
        baselines=baselines,
    )


SIZES_LISTED = 10
"""Up to this many hospitals, the start-up log line gives each one's rows; above, the range."""


def _sizes(federation: SimulatedFederation) -> str:
    hospitals = federation.hospitals
    if len(hospitals) <= SIZES_LISTED:
        return ", ".join(
            f"{h.name}: {len(h.site.train)} train / {len(h.site.evaluation)} eval"
            for h in hospitals
        )
    train = [len(h.site.train) for h in hospitals]
    evaluation = [len(h.site.evaluation) for h in hospitals]
    return (
        f"{min(train)} to {max(train)} train and {min(evaluation)} to {max(evaluation)} "
        "eval rows each"
    )


class DeferredBaselines(Mapping[str, Mapping[str, float]]):
    """The pooled and local-only rows, trained the first time the report reads them.

    Only the final report shows them, so the federation's rounds start without
    waiting for them (their DP noise calibrations and trainings take seconds, one
    per hospital for the local-only row).
    """

    def __init__(self, config: RunConfig, federation: SimulatedFederation) -> None:
        self._config = config
        self._federation = federation
        self._rows: dict[str, dict[str, float]] | None = None

    def _trained(self) -> dict[str, dict[str, float]]:
        if self._rows is None:
            logger.info("training the pooled and local-only baselines")
            device = resolve_device(self._config.training.device)
            self._rows = compute_baselines(self._config, self._federation, device).rows()
        return self._rows

    def __getitem__(self, name: str) -> Mapping[str, float]:
        """Return the row ``name`` (``pooled`` or ``local_only``)."""
        return self._trained()[name]

    def __iter__(self) -> Iterator[str]:
        """Iterate over the row names."""
        return iter(self._trained())

    def __len__(self) -> int:
        """Return the number of rows."""
        return len(self._trained())
