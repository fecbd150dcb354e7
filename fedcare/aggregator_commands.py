"""``fedcare aggregator ...`` and ``fedcare run``: the central aggregator's side."""

from __future__ import annotations

import json
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Annotated, Any

import typer

from fedcare.audit_commands import audit_app
from fedcare.console import configure_logging, console, fail
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
from fedcare.server.aggregator_service import serve
from fedcare.server.certificate_authority import SERVER_DIR
from fedcare.server.node_registration import register_hospital, unregister_node
from fedcare.server.report import SUMMARY
from fedcare.server.run_directory import LOG_FILE, check_run_path, default_run_path
from fedcare.server.submission import check_submission, flwr_run_command, write_app
from fedcare.server.superlink import (
    AggregatorSettings,
    HospitalRegistry,
    ServerTls,
    flwr_home,
)
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import ConfigError, FedcareError
from fedcare.shared.flower_process import (
    flower_environment,
    flower_executable,
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


CaFolder = Annotated[
    Path,
    typer.Option(
        "--ca", help="The federation's CA folder (its server/ certificate and registry.json)."
    ),
]


@aggregator_app.command()
def start(
    state: State,
    ca: CaFolder = Path("ca"),
    host: Annotated[
        str, typer.Option(help="Public address the front listens on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Public port hospitals connect to.")] = 8000,
    internal_port: Annotated[
        int, typer.Option(help="The SuperLink's port on 127.0.0.1 (never exposed).")
    ] = 9093,
) -> None:
    """Start the aggregator (runs until stopped); hospitals connect to HOST:PORT only.

    The SuperLink listens on 127.0.0.1:INTERNAL_PORT; nginx on HOST:PORT forwards
    only the Fleet API hospitals use. Operator commands talk to the loopback port.
    """
    try:
        settings = AggregatorSettings(
            state=state,
            host=host,
            port=port,
            internal_port=internal_port,
            tls=ServerTls.from_folder(ca / SERVER_DIR),
        )
        code = serve(settings, ca, _say)
    except FedcareError as error:
        raise fail(error) from None
    raise typer.Exit(code)


def _say(text: str) -> None:
    console.print(text, soft_wrap=True, highlight=False, markup=False)


@aggregator_app.command()
def register(
    name: Annotated[
        str, typer.Argument(help="The hospital's name, as given to `fedcare ca add-hospital`.")
    ],
    state: State,
    ca: CaFolder = Path("ca"),
) -> None:
    """Allow a hospital's key (as the CA recorded it) to connect; the aggregator must run."""
    try:
        node_id = register_hospital(state, ca, name)
    except FedcareError as error:
        raise fail(error) from None
    _say(f"{name} registered as node {node_id}; it may now connect")


@aggregator_app.command()
def unregister(
    name: Annotated[str, typer.Argument(help="The hospital's name.")],
    state: State,
) -> None:
    """Refuse a registered hospital from its next request on (the CA's record stays)."""
    try:
        node_id = HospitalRegistry(state).node_of(name)
        if node_id is None:
            raise ConfigError("name", f"'{name}' is not registered at the aggregator in {state}")
        unregister_node(state, node_id)
    except FedcareError as error:
        raise fail(error) from None
    _say(f"{name} (node {node_id}) unregistered; its next request is refused")


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
        config = _checked_run_config(state, contract, resume, overrides)
        run_dir = Path(config.output.out_dir)
    except FedcareError as error:
        raise fail(error) from None
    log_path = run_dir / LOG_FILE
    # On a line of its own, never wrapped: operators copy it to the hospitals.
    console.print(f"run configuration hash: {run_config_hash(config)}", soft_wrap=True)
    console.print("hospitals that require approval take part after `fedcare hospital approve HASH`")
    code, last_error = _submit_and_follow(state, config, log_path, verbose=verbose)
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


def _checked_run_config(
    state: Path, contract: Path | None, resume: Path | None, overrides: dict[str, Any]
) -> RunConfig:
    """Return the run's configuration (new or resumed), checked as the aggregator will.

    Raises
    ------
    FedcareError
        If a setting, the contract, the run folder or the submission is refused.
    """
    if resume is not None:
        config = resumed_run_config(resume, overrides, contract)
    else:
        config = _new_run(state, contract, overrides)
        check_run_path(Path(config.output.out_dir))
    source = str(contract) if contract else f"the contract of {resume}"
    check_submission(config, contract_source=source)
    return config


def _submit_and_follow(
    state: Path, config: RunConfig, log_path: Path, *, verbose: bool
) -> tuple[int, str | None]:
    """Submit the run with ``flwr run`` and follow it; return its exit code and last error."""
    with tempfile.TemporaryDirectory(prefix="fedcare-run-") as tmp:
        app = write_app(Path(tmp) / "app", config, version("fedcare"))
        command = flwr_run_command(flower_executable("flwr"), app)
        environment = flower_environment(flwr_home(state))
        return follow_stream(
            lambda on_line: run_streaming(command, environment, on_line),
            log_path,
            secure_aggregation=config.secure_aggregation.enabled,
            verbose=verbose,
        )


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
