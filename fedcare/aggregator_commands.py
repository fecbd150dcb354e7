"""``fedcare aggregator ...`` and ``fedcare run``: the central aggregator's side."""

from __future__ import annotations

import json
import subprocess
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer

from fedcare.audit_commands import audit_app
from fedcare.console import configure_logging, console, errors, fail
from fedcare.options import (
    Delta,
    Epsilon,
    Hospitals,
    Model,
    NoDp,
    NoSecagg,
    Out,
    Resume,
    Rounds,
    Settings,
    Verbose,
    common_overrides,
    parse_set,
    resumed_run_config,
)
from fedcare.progress import follow_stream
from fedcare.server.report import SUMMARY
from fedcare.server.run_directory import LOG_FILE, check_run_path, default_run_path
from fedcare.server.submission import check_submission, flwr_run_command, write_app
from fedcare.server.superlink import (
    CONNECTION,
    AggregatorSettings,
    HospitalRegistry,
    ServerTls,
    flwr_home,
)
from fedcare.shared.config import RunConfig
from fedcare.shared.errors import ConfigError, FedcareError
from fedcare.shared.flower_process import (
    flower_environment,
    flower_executable,
    run_foreground,
    run_streaming,
)
from fedcare.shared.run_identity import run_config_hash
from fedcare.tables import print_summary_if_written
from fedcare.tracking_commands import Track, TrackingUri, check_trackers, track_after

aggregator_app = typer.Typer(
    help="Run the central aggregator: Flower's SuperLink with TLS and hospital authentication.",
    no_args_is_help=True,
)

aggregator_app.add_typer(audit_app, name="audit")

State = Annotated[Path, typer.Option(help="The aggregator's state folder (database, Flower home).")]


@aggregator_app.command()
def start(
    state: State,
    tls: Annotated[Path, typer.Option(help="Folder with ca.crt, server.pem, server.key.")] = Path(
        "ca/server"
    ),
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port hospitals connect to.")] = 8000,
    insecure_dev: Annotated[
        bool, typer.Option("--insecure-dev", help="No TLS and no authentication: development only.")
    ] = False,
) -> None:
    """Start the aggregator (runs until stopped); hospitals connect to HOST:PORT."""
    try:
        settings = AggregatorSettings(
            state=state,
            host=host,
            port=port,
            tls=None if insecure_dev else ServerTls.from_folder(tls),
        )
        settings.prepare()
        executable = flower_executable("flower-superlink")
    except FedcareError as error:
        raise fail(error) from None
    if insecure_dev:
        errors.print(
            "[bold red]WARNING: --insecure-dev: no TLS and no hospital authentication. "
            "Updates travel in the clear and anyone can join. Never use this with patient data.[/]"
        )
    console.print(f"aggregator listening on [bold]{settings.address}[/]; hospitals connect there")
    console.print(f"register hospitals with: fedcare aggregator register NAME --state {state}")
    raise typer.Exit(
        run_foreground(settings.command(executable), flower_environment(settings.flwr_home))
    )


@aggregator_app.command()
def register(
    name: Annotated[
        str, typer.Argument(help="The hospital's name, as given to `fedcare ca add-hospital`.")
    ],
    state: State,
    ca: Annotated[Path, typer.Option(help="The federation's CA folder.")] = Path("ca"),
) -> None:
    """Allow a hospital's key to connect (the aggregator must be running)."""
    public_key = ca / "hospitals" / name / "node.pub"
    if not public_key.is_file():
        raise fail(
            ConfigError(
                "name", f"{public_key} does not exist; run `fedcare ca add-hospital {name}` first"
            )
        )
    command = [
        flower_executable("flwr"),
        "supernode",
        "register",
        str(public_key),
        CONNECTION,
        "--name",
        name,
        "--format",
        "json",
    ]
    result = subprocess.run(
        command,
        env=flower_environment(flwr_home(state)),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        node_id = int(json.loads(result.stdout)["node-id"])
    except (ValueError, KeyError, TypeError):
        errors.print(result.stdout + result.stderr, highlight=False, markup=False)
        raise fail(
            FedcareError(
                f"could not register {name}; is the aggregator running with --state {state}?"
            )
        ) from None
    HospitalRegistry(state).add(node_id, name)
    console.print(f"{name} registered as node {node_id}; it may now connect")


@aggregator_app.command()
def unregister(
    node_id: Annotated[str, typer.Argument(help="Node id shown by `flwr supernode ls`.")],
    state: State,
) -> None:
    """Revoke a registered hospital's access."""
    command = [flower_executable("flwr"), "supernode", "unregister", node_id, CONNECTION]
    raise typer.Exit(run_foreground(command, flower_environment(flwr_home(state))))


def run(  # noqa: PLR0913 - one option per documented setting
    state: State,
    contract: Annotated[
        Path | None, typer.Option(help="The federation's data contract (TOML).")
    ] = None,
    resume: Resume = None,
    hospitals: Hospitals = None,
    rounds: Rounds = None,
    epsilon: Epsilon = None,
    delta: Delta = None,
    model: Model = None,
    out: Out = None,
    no_dp: NoDp = False,
    no_secagg: NoSecagg = False,
    settings: Settings = None,
    verbose: Verbose = False,
    track_to: Track = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Submit a training run to the running aggregator and follow its progress.

    With ``--resume RUN_DIR`` it continues a stopped run from its last complete
    round, with the run's own settings. Flower's full log goes to the run
    folder's ``fedcare.log`` (and, with ``--verbose``, to the terminal).
    """
    configure_logging(verbose=verbose)
    try:
        check_trackers(track_to)
        overrides = parse_set(settings) | common_overrides(
            hospitals=hospitals,
            rounds=rounds,
            epsilon=epsilon,
            delta=delta,
            model=model,
            out=out,
            no_dp=no_dp,
            no_secagg=no_secagg,
        )
        if resume is not None:
            config = resumed_run_config(resume, overrides, contract)
        else:
            config = _new_run(state, contract, overrides)
            check_run_path(Path(config.output.out_dir))
        source = str(contract) if contract else f"the contract of {resume}"
        check_submission(config, contract_source=source)
        run_dir = Path(config.output.out_dir)
    except FedcareError as error:
        raise fail(error) from None
    log_path = run_dir / LOG_FILE
    # On a line of its own, never wrapped: operators copy it to the hospitals.
    console.print(f"run configuration hash: {run_config_hash(config)}", soft_wrap=True)
    console.print("hospitals that require approval take part after `fedcare hospital approve HASH`")
    with tempfile.TemporaryDirectory(prefix="fedcare-run-") as tmp:
        app = write_app(Path(tmp) / "app", config, version("fedcare"))
        command = flwr_run_command(flower_executable("flwr"), app)
        environment = flower_environment(flwr_home(state))
        code, last_error = follow_stream(
            lambda on_line: run_streaming(command, environment, on_line),
            log_path,
            secure_aggregation=config.secure_aggregation.enabled,
            verbose=verbose,
        )
    if not print_summary_if_written(config):
        # The aggregator said why in one sentence; the rest is in the run's log.
        cause = f": {last_error}" if last_error else ""
        raise fail(
            FedcareError(
                f"the run ended without a report (exit code {code}){cause} (full log: {log_path})"
            ),
            code=code or 1,
        )
    track_after(run_dir, track_to, tracking_uri)
    if code != 0:
        cause = f": {last_error}" if last_error else ""
        raise fail(
            FedcareError(f"the run ended with exit code {code}{cause} (full log: {log_path})"),
            code=code,
        )
    raise typer.Exit(0 if _completed(run_dir) else 1)


def _completed(run_dir: Path) -> bool:
    """Whether the run's report says it completed (not stopped or failed midway)."""
    report = json.loads((run_dir / SUMMARY).read_text(encoding="utf-8"))
    return bool(report["status"] == "completed")


def _new_run(state: Path, contract: Path | None, overrides: dict[str, Any]) -> RunConfig:
    """Return a new run's configuration: the options, the contract's text, the hospitals' names.

    Raises
    ------
    ConfigError
        If the contract is not given or cannot be read, or a setting is bad.
    """
    if contract is None:
        raise ConfigError("--contract", "a new run needs the federation's data contract")
    try:
        contract_text = contract.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError("--contract", f"cannot read {contract}: {error}") from None
    names = HospitalRegistry(state).as_setting()
    flat = {"out-dir": str(default_run_path().resolve())} | overrides
    return RunConfig.from_flat(flat | {"contract": contract_text, "hospital-names": names})
