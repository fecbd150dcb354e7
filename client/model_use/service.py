"""A prediction service for a run's model at a hospital: FastAPI, served by uvicorn.

``POST /predict`` takes up to :data:`MAX_RECORDS` records, each validated
against the contract by its pydantic schema (:mod:`client.model_use.records`):
a record that breaks it is answered 422 with the field named. It returns one
prediction per record and, with ``"explain": true``, each record's integrated
gradients attributions. ``GET /model`` returns the run's model card; the
OpenAPI description is at ``/docs``.

All HTTP is FastAPI's and uvicorn's. The service refuses to listen beyond the
loopback interface without TLS: records are patient data.

This module does not use postponed annotations: FastAPI reads the endpoint's
annotations to build its request model, and the model is built at run time
from the contract.
"""

import ipaddress
import ssl
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field, create_model

from fedcare.client.model_use.explanations import (
    explained_names,
    integrated_gradients,
    per_feature,
)
from fedcare.client.model_use.predictions import predicted_values
from fedcare.client.model_use.records import encode_records, record_id, record_schema
from fedcare.client.model_use.trained_model import ModelUseError, TrainedModel
from fedcare.shared.data import Examples, InputKind
from fedcare.shared.tasks import TaskKind

MAX_RECORDS = 1000
"""Most records one request may carry."""
LOOPBACK_NAMES = frozenset({"localhost"})


class Prediction(BaseModel):
    """One record's prediction."""

    id: str | None = Field(None, description="The record's id, as sent.")
    predicted: str | float = Field(description="The predicted class, or value (regression).")
    probability: float | None = Field(
        None,
        description="Binary: the positive class's probability; multiclass: the predicted class's.",
    )
    probabilities: dict[str, float] | None = Field(
        None, description="Multiclass: every class's probability."
    )
    attributions: dict[str, float] | list[list[float]] | None = Field(
        None,
        description=(
            "With explain: integrated gradients per feature (tables, stays), or an attribution "
            "map, height x width (images)."
        ),
    )


class PredictResponse(BaseModel):
    """The predictions of a request, in record order."""

    run: str
    round: int
    threshold: float | None = Field(None, description="Binary: the decision threshold used.")
    predictions: list[Prediction]


def build_app(trained: TrainedModel, *, threshold: float = 0.5) -> FastAPI:
    """Build the service for ``trained``; inputs are scaled as in training (``trained.scaler``)."""
    schema = record_schema(trained.contract)
    request_model = create_model(
        "PredictRequest",
        records=(list[schema], Field(min_length=1, max_length=MAX_RECORDS)),  # type: ignore[valid-type]
        explain=(bool, Field(False, description="Also return each record's attributions.")),
    )
    app = FastAPI(
        title=f"fedcare model: {trained.contract.name}",
        description=(
            f"Predictions of the {trained.config.training.model} model of run {trained.run.name} "
            f"(round {trained.round}); inputs must meet the data contract "
            f"'{trained.contract.name}'."
        ),
        version="1",
    )

    def predict(request: request_model) -> PredictResponse:  # type: ignore[valid-type]
        return _predict(trained, request, threshold)

    app.post("/predict", response_model=PredictResponse)(predict)

    @app.get("/model")
    def model_card() -> dict[str, Any]:
        card = trained.model_card()
        if card is None:
            raise HTTPException(
                status_code=404,
                detail="this run has no model_card.json (it predates model cards)",
            )
        return card

    return app


def _predict(trained: TrainedModel, request: Any, threshold: float) -> PredictResponse:
    records = request.records
    raw = encode_records(trained.contract, records)
    examples = Examples(
        raw, np.zeros(len(raw), dtype=np.float32), trained.feature_names, trained.kind
    )
    inputs = trained.scaler.transform(examples).features
    scores = trained.scores(inputs)
    predicted, probability, per_class = predicted_values(trained, scores, threshold)
    explained = _attributions(trained, inputs) if request.explain else None
    predictions = [
        Prediction(
            id=record_id(trained.contract, record),
            predicted=predicted[row],  # type: ignore[arg-type]
            probability=None if probability is None else float(probability[row]),
            probabilities={name: float(values[row]) for name, values in per_class.items()} or None,
            attributions=None if explained is None else explained[row],
        )
        for row, record in enumerate(records)
    ]
    binary = trained.task.kind is TaskKind.BINARY
    return PredictResponse(
        run=trained.run.name,
        round=trained.round,
        threshold=threshold if binary else None,
        predictions=predictions,
    )


def _attributions(trained: TrainedModel, inputs: np.ndarray) -> list[Any]:
    summed = per_feature(
        integrated_gradients(trained.model, inputs, trained.task, trained.kind), trained.kind
    )
    if trained.kind is InputKind.IMAGES:
        return [grid.tolist() for grid in summed]
    names = explained_names(trained.feature_names, trained.kind)
    return [dict(zip(names, (float(v) for v in row), strict=True)) for row in summed]


def check_listening(host: str, certfile: Path | None, keyfile: Path | None) -> None:
    """Refuse to serve patient data in the clear beyond this machine.

    Raises
    ------
    ModelUseError
        If only one of the certificate and key is given, either is missing, or
        ``host`` is not a loopback address and no certificate is given.
    """
    if (certfile is None) != (keyfile is None):
        raise ModelUseError("give both --certfile and --keyfile for TLS, or neither")
    if certfile is not None and keyfile is not None:
        for option, path in (("--certfile", certfile), ("--keyfile", keyfile)):
            if not path.is_file():
                raise ModelUseError(f"{option} {path} does not exist")
        return
    if not is_loopback(host):
        raise ModelUseError(
            f"refusing to serve on {host} without TLS: records are patient data; give "
            "--certfile and --keyfile, or bind to 127.0.0.1 (and put a TLS proxy in front)"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface only."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(  # noqa: PLR0913 - one argument per command option
    app: FastAPI,
    *,
    host: str,
    port: int,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    client_ca: Path | None = None,
) -> None:
    """Run ``app`` with uvicorn until stopped (TLS when given a certificate).

    With ``client_ca`` every client must present a certificate that CA signed
    (mutual TLS).
    """
    import uvicorn

    check_listening(host, certfile, keyfile)
    options: dict[str, Any] = {}
    if certfile is not None:
        options = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}
        if client_ca is not None:
            options |= {"ssl_ca_certs": str(client_ca), "ssl_cert_reqs": ssl.CERT_REQUIRED}
    elif client_ca is not None:
        raise ModelUseError("--client-ca needs TLS: give --certfile and --keyfile too")
    uvicorn.run(app, host=host, port=port, log_level="info", **options)
