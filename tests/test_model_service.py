"""``fedcare serve``: the prediction service over HTTP, with valid and invalid payloads."""

import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from fedcare.cli import app as cli
from fedcare.client.model_use.service import build_app
from fedcare.client.model_use.trained_model import TrainedModel, load_trained_model
from fedcare.server.certificate_authority import init_ca
from fedcare.shared.config.training import ModelName
from fedcare.simulations.local_deployment import Processes, fedcare, free_port, wait_for
from tests.model_runs import (
    Hospital,
    image_hospitals,
    read_csv,
    sequence_hospitals,
    table_hospitals,
)


def _client(hospital: Hospital) -> tuple[TestClient, TrainedModel]:
    trained = load_trained_model(hospital.run, hospital.contract)
    return TestClient(build_app(trained)), trained


@pytest.fixture(scope="module")
def table(tmp_path_factory: pytest.TempPathFactory) -> Hospital:
    return table_hospitals(tmp_path_factory.mktemp("table"))


@pytest.fixture(scope="module")
def table_client(table: Hospital) -> TestClient:
    return _client(table)[0]


def _patients(hospital: Hospital, count: int) -> list[dict[str, object]]:
    frame = read_csv(hospital.external).head(count).drop(columns=["diagnosis"])
    records = frame.to_dict(orient="records")
    return [
        {key: value if key == "patient_id" else float(value) for key, value in record.items()}
        for record in records
    ]


def test_valid_table_records_get_predictions_and_explanations(
    table: Hospital, table_client: TestClient
) -> None:
    records = _patients(table, 3)
    response = table_client.post("/predict", json={"records": records, "explain": True})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["threshold"] == 0.5 and body["round"] == 3
    predictions = body["predictions"]
    assert [p["id"] for p in predictions] == [r["patient_id"] for r in records]
    for prediction in predictions:
        assert prediction["predicted"] in ("benign", "malignant")
        assert 0.0 <= prediction["probability"] <= 1.0
        assert len(prediction["attributions"]) == 30
    plain = table_client.post("/predict", json={"records": records}).json()["predictions"]
    assert all(p["attributions"] is None for p in plain)


def test_the_service_and_predict_give_the_same_probabilities(
    table: Hospital, table_client: TestClient, tmp_path: Path
) -> None:
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(
        cli,
        [
            "predict",
            str(table.run),
            "--data",
            str(table.external),
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    expected = read_csv(out)["probability"].astype(float).head(5).to_numpy()
    served = table_client.post("/predict", json={"records": _patients(table, 5)}).json()
    found = np.array([p["probability"] for p in served["predictions"]])
    np.testing.assert_allclose(found, expected, rtol=1e-5)


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"mean_radius": -3.0}, "mean_radius", "greater than or equal to 6.981"),
        ({"mean_radius": "wide"}, "mean_radius", "valid number"),
        ({"mean_radius": None}, "mean_radius", "valid number"),
        ({"radius": 3.0}, "radius", "Extra inputs are not permitted"),
    ],
)
def test_an_invalid_record_is_answered_422_naming_the_field(
    table: Hospital, table_client: TestClient, change: dict, field: str, message: str
) -> None:
    records = _patients(table, 2)
    records[1] |= change
    response = table_client.post("/predict", json={"records": records})
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert any(e["loc"][-1] == field and e["loc"][2] == 1 and message in e["msg"] for e in errors)


def test_a_missing_feature_and_an_empty_request_are_refused(
    table: Hospital, table_client: TestClient
) -> None:
    records = _patients(table, 1)
    del records[0]["mean_area"]
    response = table_client.post("/predict", json={"records": records})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "mean_area"
    assert table_client.post("/predict", json={"records": []}).status_code == 422
    assert table_client.post("/predict", content=b"not json").status_code == 422


def test_the_model_card_and_the_openapi_description_are_served(
    table: Hospital, table_client: TestClient
) -> None:
    assert table_client.get("/model").status_code == 404  # this run predates model cards
    (table.run / "model_card.json").write_text('{"title": "a card"}')
    try:
        assert table_client.get("/model").json() == {"title": "a card"}
    finally:
        (table.run / "model_card.json").unlink()
    schema = table_client.get("/openapi.json").json()
    record = schema["components"]["schemas"]["PatientRecord"]
    assert record["properties"]["mean_radius"]["minimum"] == 6.981
    assert table_client.get("/docs").status_code == 200


def test_images_are_served_and_a_wrong_size_is_refused(tmp_path: Path) -> None:
    hospital = image_hospitals(tmp_path)
    client, _ = _client(hospital)
    with np.load(hospital.external) as archive:
        pixels = archive["train_images"][:2] / 255.0
    records = [{"id": f"film-{i}", "pixels": image.tolist()} for i, image in enumerate(pixels)]
    response = client.post("/predict", json={"records": records, "explain": True})
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["id"] == "film-0" and prediction["predicted"] in (
        "normal",
        "nodule",
        "opacity",
    )
    assert set(prediction["probabilities"]) == {"normal", "nodule", "opacity"}
    assert np.asarray(prediction["attributions"]).shape == (28, 28)
    records[1]["pixels"] = np.zeros((16, 16)).tolist()
    response = client.post("/predict", json={"records": records})
    assert response.status_code == 422
    error = response.json()["detail"][0]
    assert error["loc"][-1] == "pixels" and "images are never resized" in error["msg"]


def test_stays_are_served_and_a_repeated_hour_is_refused(tmp_path: Path) -> None:
    hospital = sequence_hospitals(tmp_path, ModelName.GRU, epochs=10)
    client, _ = _client(hospital)
    frame = read_csv(hospital.external)
    stay_id = frame["patient_id"].iloc[0]
    steps = [
        {key: int(value) if key == "hour" else float(value) for key, value in row.items()}
        for row in frame[frame["patient_id"] == stay_id]
        .drop(columns=["patient_id", "deterioration"])
        .to_dict(orient="records")
    ]
    response = client.post(
        "/predict", json={"records": [{"patient_id": stay_id, "steps": steps}], "explain": True}
    )
    assert response.status_code == 200, response.text
    prediction = response.json()["predictions"][0]
    assert prediction["id"] == stay_id and prediction["predicted"] in ("0", "1")
    assert "lactate" in prediction["attributions"]
    steps[1]["hour"] = steps[0]["hour"]
    response = client.post("/predict", json={"records": [{"patient_id": stay_id, "steps": steps}]})
    assert response.status_code == 422
    assert "each hour may appear once" in response.json()["detail"][0]["msg"]


def test_serving_beyond_loopback_without_tls_is_refused(table: Hospital) -> None:
    result = CliRunner().invoke(cli, ["serve", str(table.run), "--host", "0.0.0.0"])
    assert result.exit_code == 2
    assert "without TLS" in " ".join(result.output.split())


@pytest.fixture()
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path / "logs")
    yield started
    started.stop_all()


def _client_certificate(folder: Path) -> tuple[Path, Path, Path]:
    """Write a client CA, and a client certificate and key it signed: (CA, cert, key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(text: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(name("ward CA"))
        .issuer_name(name("ward CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    client = (
        x509.CertificateBuilder()
        .subject_name(name("ward PC"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "client-ca.pem", folder / "client.pem", folder / "client.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(client.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@pytest.mark.integration
def test_a_real_service_answers_over_mutual_tls_on_loopback(
    table: Hospital, tmp_path: Path, processes: Processes
) -> None:
    credentials = init_ca(tmp_path / "ca", name="Hospital services").issue_server_certificate(
        ["127.0.0.1"]
    )
    client_ca, client_cert, client_key = _client_certificate(tmp_path)
    port = free_port()
    processes.start(
        "serve",
        fedcare(
            "serve",
            str(table.run),
            "--port",
            str(port),
            "--certfile",
            str(credentials.certificate),
            "--keyfile",
            str(credentials.key),
            "--client-ca",
            str(client_ca),
        ),
    )
    url = f"https://127.0.0.1:{port}"
    trusted = ssl.create_default_context(cafile=str(credentials.ca_certificate))
    trusted.load_cert_chain(client_cert, client_key)
    no_certificate = ssl.create_default_context(cafile=str(credentials.ca_certificate))
    wrong_authority = ssl.create_default_context()
    wrong_authority.load_cert_chain(client_cert, client_key)

    def answering() -> bool:
        try:
            return httpx.get(f"{url}/docs", verify=trusted).is_success
        except httpx.TransportError:
            return False

    wait_for(answering, timeout=60, what="the prediction service")
    with httpx.Client(base_url=url, verify=trusted) as client:
        good = client.post("/predict", json={"records": _patients(table, 2)})
        assert good.status_code == 200 and len(good.json()["predictions"]) == 2
        bad = client.post("/predict", json={"records": [{"mean_radius": 1.0}]})
        assert bad.status_code == 422
    # Without a client certificate the handshake fails; so does a client that does not
    # trust the hospital's CA: the service is reachable only over authenticated TLS.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/docs", verify=no_certificate)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/docs", verify=wrong_authority)
