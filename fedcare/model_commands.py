"""``fedcare evaluate / predict / serve``: a run's model in use at a hospital.

Each command reads the hospital's own files under the run's contract and writes
only at the hospital: nothing is sent anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from fedcare.console import console, fail
from fedcare.shared.errors import FedcareError

if TYPE_CHECKING:
    from fedcare.client.model_use.operating_point import Target

Run = Annotated[Path, typer.Argument(help="The run folder (fedcare simulate / fedcare run).")]
Data = Annotated[
    Path,
    typer.Option("--data", help="The hospital's file (or image folder), in the contract's format."),
]
ContractOption = Annotated[
    Path | None,
    typer.Option(
        "--contract",
        help="The data contract; a deployed run carries its own, a simulated run needs one.",
    ),
]
Threshold = Annotated[
    float | None,
    typer.Option("--threshold", help="Binary: decision threshold (e.g. one `evaluate` chose)."),
]
Explain = Annotated[bool, typer.Option("--explain", help="Add integrated-gradients attributions.")]


def evaluate(  # noqa: PLR0913 - one option per documented setting
    run: Run,
    data: Data,
    contract: ContractOption = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for evaluation.json and .png, new or empty "
            "(default evaluations/<run>/<data file>).",
        ),
    ] = None,
    target_sensitivity: Annotated[
        float | None,
        typer.Option(help="Binary: choose the threshold reaching this sensitivity (default 0.8)."),
    ] = None,
    target_specificity: Annotated[
        float | None, typer.Option(help="Binary: choose the threshold reaching this specificity.")
    ] = None,
    threshold: Threshold = None,
    validation_fraction: Annotated[
        float, typer.Option(help="Binary: share of rows that choose the threshold.")
    ] = 0.3,
    subgroup: Annotated[
        list[str] | None,
        typer.Option(help="Feature to group by: `sex`, or bands of a number: `age=40,65`."),
    ] = None,
    min_count: Annotated[int, typer.Option(help="Groups with fewer patients are suppressed.")] = 10,
    bootstrap: Annotated[int, typer.Option(help="Bootstrap resamples per interval.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the split and the bootstrap.")] = 0,
    no_explain: Annotated[
        bool, typer.Option("--no-explain", help="Skip the global feature importance.")
    ] = False,
) -> None:
    """Validate a run's model on this hospital's labelled file: metrics with 95% intervals.

    Writes evaluation.json and evaluation.png; nothing leaves the hospital.
    """
    from fedcare.client.model_use.evaluation_report import check_output_folder, write_evaluation
    from fedcare.client.model_use.external_validation import ValidationSettings, validate
    from fedcare.client.model_use.operating_point import DEFAULT_SENSITIVITY
    from fedcare.client.model_use.trained_model import load_trained_model

    # Beside the hospital's work, not inside the run folder: a run folder may travel back
    # to the aggregator, and an evaluation describes this hospital's patients.
    folder = out or Path("evaluations") / run.resolve().name / data.stem
    try:
        target, goal = _target(target_sensitivity, target_specificity, threshold)
        check_output_folder(folder)
        trained = load_trained_model(run, contract)
        settings = ValidationSettings(
            target=target,
            goal=DEFAULT_SENSITIVITY if goal is None else goal,
            validation_fraction=validation_fraction,
            subgroups=tuple(subgroup or ()),
            min_count=min_count,
            resamples=bootstrap,
            seed=seed,
            explain=not no_explain,
        )
        result = validate(trained, data, settings)
        written = write_evaluation(folder, result)
    except (FedcareError, FileExistsError) as error:
        raise fail(error) from None
    _print_metrics(result.summary)
    for path in written:
        console.print(f"wrote [bold]{path}[/]")


def _target(
    sensitivity: float | None, specificity: float | None, threshold: float | None
) -> tuple[Target, float | None]:
    from fedcare.client.model_use.operating_point import Target

    given = [
        (target, value)
        for target, value in (
            (Target.SENSITIVITY, sensitivity),
            (Target.SPECIFICITY, specificity),
            (Target.FIXED, threshold),
        )
        if value is not None
    ]
    if len(given) > 1:
        raise FedcareError("give one of --target-sensitivity, --target-specificity and --threshold")
    return given[0] if given else (Target.SENSITIVITY, None)


def _print_metrics(summary: dict[str, object]) -> None:
    from rich.table import Table

    rows = summary["rows"]
    assert isinstance(rows, dict)
    title = f"External validation on {summary['data']}: {rows['test']} test rows"
    table = Table(
        title=title + (f", {rows['validation']} validation rows" if rows["validation"] else "")
    )
    for column in ("metric", "value", "95% interval"):
        table.add_column(column, justify="right" if column != "metric" else "left")
    metrics = summary["metrics"]
    assert isinstance(metrics, dict)
    for name, interval in metrics.items():
        table.add_row(name, _number(interval["value"]), _range(interval))
    console.print(table)
    point = summary.get("operating_point")
    if isinstance(point, dict):
        if point["chosen_for"] == "fixed":
            console.print(f"operating threshold {point['threshold']:.3f} (given)")
        else:
            console.print(
                f"operating threshold {point['threshold']:.3f}, chosen for {point['chosen_for']} "
                f">= {point['goal']} on the validation rows (sensitivity "
                f"{_number(point['validation_sensitivity'])}, specificity "
                f"{_number(point['validation_specificity'])} there)"
            )


def _number(value: object) -> str:
    return "n/a" if value is None or value != value else f"{value:.3f}"


def _range(interval: dict[str, object]) -> str:
    low, high = interval["low"], interval["high"]
    if low is None or high is None or low != low or high != high:
        return "n/a"
    return f"{low:.3f} to {high:.3f}"


def predict(  # noqa: PLR0913 - one option per documented setting
    run: Run,
    data: Data,
    out: Annotated[
        Path, typer.Option("--out", help="The predictions CSV to write (never overwritten).")
    ] = Path("predictions.csv"),
    contract: ContractOption = None,
    threshold: Threshold = None,
    explain: Explain = False,
) -> None:
    """Predict for every patient of a file: one row each, scored or reported with its fault."""
    from fedcare.client.model_use.predictions import predict_file, write_predictions
    from fedcare.client.model_use.trained_model import load_trained_model

    try:
        if out.exists():
            raise FileExistsError(f"'{out}' already exists; choose another --out")
        trained = load_trained_model(run, contract)
        table = predict_file(
            trained,
            data,
            threshold=0.5 if threshold is None else threshold,
            explain=explain,
        )
        written = write_predictions(out, table)
    except (FedcareError, FileExistsError) as error:
        raise fail(error) from None
    scored = len(table.rows) - table.not_scored
    console.print(f"{scored} of {len(table.rows)} patients scored")
    if table.not_scored:
        console.print(
            f"[yellow]{table.not_scored} not scored[/]: status 'not scored', with the fields at "
            "fault in the 'problem' column"
        )
    for path in written:
        console.print(f"wrote [bold]{path}[/]")


def serve(  # noqa: PLR0913 - one option per documented setting
    run: Run,
    contract: ContractOption = None,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    client_ca: Annotated[
        Path | None, typer.Option(help="Require client certificates signed by this CA.")
    ] = None,
    threshold: Threshold = None,
) -> None:
    """Serve the run's model over HTTP: POST /predict, GET /model, docs at /docs."""
    from fedcare.client.model_use.service import build_app, check_listening
    from fedcare.client.model_use.service import serve as run_service
    from fedcare.client.model_use.trained_model import load_trained_model

    try:
        check_listening(host, certfile, keyfile)
        trained = load_trained_model(run, contract)
        app = build_app(trained, threshold=0.5 if threshold is None else threshold)
    except FedcareError as error:
        raise fail(error) from None
    scheme = "https" if certfile else "http"
    console.print(f"serving {run} at [bold]{scheme}://{host}:{port}[/] (docs at /docs)")
    try:
        run_service(
            app, host=host, port=port, certfile=certfile, keyfile=keyfile, client_ca=client_ca
        )
    except FedcareError as error:
        raise fail(error) from None
