"""The aggregator's reference data in a simulation: held-out test set and baselines."""

from __future__ import annotations

import logging

from fedcare.server.reference import DataReference
from fedcare.shared.config import RunConfig
from fedcare.shared.device import resolve_device
from fedcare.shared.run_model import run_task
from fedcare.simulations.baselines import compute_baselines
from fedcare.simulations.federation import build_federation

logger = logging.getLogger(__name__)


def simulated_reference(config: RunConfig) -> DataReference:
    """Build the test set and train the pooled and local-only baselines for ``config``.

    Data without a test set (interactions: patient embeddings stay at the
    hospitals) gets neither; the report then takes its final metrics from the
    hospitals' own evaluations.

    Raises
    ------
    shared.errors.DataError
        If the data settings cannot give every hospital enough rows.
    """
    federation = build_federation(config.data)
    test = federation.test
    logger.info(
        "simulated federation: %s hospitals (%s), %s",
        len(federation.hospitals),
        ", ".join(
            f"{h.name}: {len(h.site.train)} train / {len(h.site.evaluation)} eval"
            for h in federation.hospitals
        ),
        f"{len(test)} held-out test rows" if test is not None else "no held-out test set",
    )
    baselines: dict[str, dict[str, float]] = {}
    if test is None:
        logger.info(
            "no pooled or local-only baselines: without a test set the hospitals' own "
            "evaluations score the federated model"
        )
    else:
        logger.info("training the pooled and local-only baselines")
        device = resolve_device(config.training.device)
        baselines = compute_baselines(config, federation, device).rows()
    schema = federation.schema
    return DataReference(
        task=run_task(config.training, federation.task),
        feature_names=schema.feature_names,
        input_shape=schema.shared_input_shape,
        input_kind=schema.kind,
        test=test,
        baselines=baselines,
    )
