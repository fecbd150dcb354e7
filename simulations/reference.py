"""The aggregator's reference data in a simulation: held-out test set and baselines."""

from __future__ import annotations

import logging

from server.reference import DataReference
from shared.config import RunConfig
from shared.device import resolve_device
from shared.models import model_task
from simulations.baselines import compute_baselines
from simulations.federation import build_federation

logger = logging.getLogger(__name__)


def simulated_reference(config: RunConfig) -> DataReference:
    """Build the test set and train the pooled and local-only baselines for ``config``.

    Raises
    ------
    shared.errors.DataError
        If the data settings cannot give every hospital enough rows.
    """
    federation = build_federation(config.data)
    logger.info(
        "simulated federation: %s hospitals (%s), %s held-out test rows",
        len(federation.hospitals),
        ", ".join(
            f"{h.name}: {len(h.site.train)} train / {len(h.site.evaluation)} eval"
            for h in federation.hospitals
        ),
        len(federation.test),
    )
    logger.info("training the pooled and local-only baselines")
    baselines = compute_baselines(config, federation, resolve_device(config.training.device))
    return DataReference(
        task=model_task(config.training.model, federation.task),
        feature_names=federation.test.feature_names,
        input_shape=federation.test.input_shape,
        input_kind=federation.test.kind,
        test=federation.test,
        baselines=baselines.rows(),
    )
