"""``fedcare``: the command line.

Each command parses its options into a :class:`shared.config.run_config.RunConfig` (or a
hospital's :class:`client.site_settings.SiteSettings`) at the edge; a bad setting
stops everything with one sentence naming it, exit code 2.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fedcare.aggregator_commands import aggregator_app, run
from fedcare.ca_commands import ca_app
from fedcare.console import configure_logging, console, fail
from fedcare.data_commands import contract_app
from fedcare.hospital_commands import hospital_app
from fedcare.model_commands import evaluate, predict, serve
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
from fedcare.progress import watch
from fedcare.server.run_directory import default_run_path
from fedcare.shared.config.flat import FlatValue
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import ConfigError, FedcareError
from fedcare.simulate_data import (
    ContractOption,
    DataOption,
    DataOptions,
    SiteColumnOption,
    TestOption,
    own_data,
    resumed_own_data,
)
from fedcare.simulations.scenarios import DEFAULT_SCENARIO, SCENARIOS, scenario_overrides
from fedcare.simulations.simulate import SimulationError
from fedcare.simulations.simulate import simulate as run_simulation
from fedcare.tables import print_summary, print_summary_if_written
from fedcare.tracking_commands import Track, TrackingUri, check_trackers, track, track_after

if TYPE_CHECKING:
    from fedcare.simulations.own_data import OwnData

app = typer.Typer(
    name="fedcare",
    help="Federated, privacy-preserving learning for hospitals (Flower + Opacus + SecAgg+).",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """Federated, privacy-preserving learning for hospitals."""


@app.command()
def simulate(  # noqa: PLR0913 - one option per documented setting
    scenario: Annotated[
        str, typer.Option(help=f"Preset: {', '.join(SCENARIOS)}.")
    ] = DEFAULT_SCENARIO,
    contract: ContractOption = None,
    data: DataOption = None,
    site_column: SiteColumnOption = None,
    test: TestOption = None,
    hospitals: Hospitals = None,
    rounds: Rounds = None,
    epsilon: Epsilon = None,
    delta: Delta = None,
    partition: Annotated[
        str | None, typer.Option(help="iid, dirichlet, quantity or natural.")
    ] = None,
    alpha: Annotated[
        float | None, typer.Option("--alpha", help="Dirichlet concentration (skew).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of every data split.")] = None,
    model: Model = None,
    out: Out = None,
    no_dp: NoDp = False,
    no_secagg: NoSecagg = False,
    settings: Settings = None,
    resume: Resume = None,
    compare: Annotated[
        str | None,
        typer.Option(
            help="Run the same federation once per method (fedavg, fedprox, fedadam, "
            "fedyogi, fedadagrad, or e.g. fedyogi+fedprox), comma-separated, and write one "
            "side-by-side table (comparison.md)."
        ),
    ] = None,
    verbose: Verbose = False,
    actors: Annotated[
        int | None,
        typer.Option(help="Hospitals served at once, each in a Ray actor (default: one per core)."),
    ] = None,
    track_to: Track = None,
    tracking_uri: TrackingUri = None,
) -> None:
    """Simulate a federation of virtual hospitals on this machine (DP and SecAgg+ on).

    The hospitals share a built-in dataset (``--scenario``), or each reads its
    own file (``--contract`` with ``--data``). With ``--resume RUN_DIR`` it
    continues a stopped simulation from its last complete round; with
    ``--compare fedavg,fedyogi,...`` it runs one simulation per method, each in a
    sub-folder, and compares them.
    """
    configure_logging(verbose=verbose)
    shared = common_overrides(
        hospitals=hospitals,
        rounds=rounds,
        epsilon=epsilon,
        delta=delta,
        model=model,
        out=out,
        no_dp=no_dp,
        no_secagg=no_secagg,
    )
    simulation_only = {"partition": partition, "dirichlet-alpha": alpha, "seed": seed}
    files = DataOptions(
        contract=contract,
        data=tuple(data or ()),
        site_column=site_column,
        test=test,
        partition=partition is not None,
        hospitals=hospitals is not None,
    )
    try:
        check_trackers(track_to)
        # A file cut up among hospitals lives here until the simulation ends.
        with tempfile.TemporaryDirectory(prefix="fedcare-hospital-files-") as scratch:
            given = {k: v for k, v in simulation_only.items() if v is not None}
            options = shared | given
            config, source = _simulation_config(scenario, files, resume, options, settings, scratch)
            if compare is not None:
                if resume is not None:
                    raise ConfigError("compare", "cannot be combined with --resume")

                def simulate_one(method_config: RunConfig) -> dict[str, Any]:
                    with watch(method_config, verbose=verbose):
                        return run_simulation(method_config, source, verbose=verbose, actors=actors)

                _compare(config, compare, simulate_one)
                return
            with watch(config, verbose=verbose):
                summary = run_simulation(config, source, verbose=verbose, actors=actors)
    except SimulationError as error:
        print_summary_if_written(config)
        raise fail(error, code=1) from None
    except FedcareError as error:
        raise fail(error) from None
    print_summary(summary, Path(summary["config"]["out-dir"]))
    track_after(Path(summary["config"]["out-dir"]), track_to, tracking_uri)
    if summary["status"] != "completed":
        raise typer.Exit(1)


def _simulation_config(  # noqa: PLR0913 - the options that decide a simulation's settings
    scenario: str,
    files: DataOptions,
    resume: Path | None,
    options: dict[str, FlatValue],
    settings: list[str] | None,
    scratch: str,
) -> tuple[RunConfig, OwnData | None]:
    """Return the simulation's run config (new or resumed, with its run folder) and data source.

    A run to resume, a setting, an option or a file that cannot be used raises
    :class:`shared.errors.FedcareError`.
    """
    if resume is not None:
        scenario_given = None if scenario == DEFAULT_SCENARIO else scenario
        config = resumed_run_config(resume, options | parse_set(settings), scenario_given)
        source = resumed_own_data(files, config, Path(scratch)) if files.given else None
    else:
        config, source = _new_simulation(scenario, files, options, settings, scratch)
    if not config.output.out_dir:
        config = config.with_out_dir(str(default_run_path()))
    return config, source


def _new_simulation(
    scenario: str,
    files: DataOptions,
    options: dict[str, FlatValue],
    settings: list[str] | None,
    scratch: str,
) -> tuple[RunConfig, OwnData | None]:
    """Return a new simulation's run config, and its data source when it runs on the user's files.

    Raises
    ------
    shared.errors.FedcareError
        For any setting, option or file that cannot be used.
    """
    if not files.given:
        flat = {**scenario_overrides(scenario), **parse_set(settings), **options}
        return RunConfig.from_flat(flat), None
    if scenario != DEFAULT_SCENARIO:
        raise ConfigError("scenario", "a scenario picks built-in data; drop it with --data")
    flat = {**parse_set(settings), **options}
    source, fixed = own_data(files, RunConfig.from_flat(flat), Path(scratch))
    return RunConfig.from_flat(flat | fixed), source


def _compare(
    config: RunConfig, methods: str, simulate_one: Callable[[RunConfig], dict[str, Any]]
) -> None:
    """Run ``config`` once per method and print the comparison table."""
    from fedcare.simulations.comparison import COMPARISON_MD, compare, parse_methods

    comparison = compare(config, parse_methods(methods), simulate_one)
    table = Path(comparison["folder"]) / COMPARISON_MD
    console.print(table.read_text(encoding="utf-8"), markup=False)
    console.print(f"comparison in [bold]{table}[/]")
    if any(row["status"] != "completed" for row in comparison["rows"]):
        raise typer.Exit(1)  # a failed run, or one that aggregated too few rounds


@app.command("demo-data")
def demo_data(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo files.")] = Path("demo"),
    aggregator: Annotated[
        str, typer.Option(help="HOST:PORT of the aggregator.")
    ] = "127.0.0.1:8000",
    hospitals: Hospitals = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the split.")] = None,
) -> None:
    """Write demo hospital files: a CSV and site.toml per hospital, and the data contract.

    Each hospital then makes its own key pair: ``fedcare hospital keygen --config SITE``.
    """
    from fedcare.simulations.hospital_files import write_demo_hospitals, write_demo_sites

    overrides = {k: v for k, v in {"hospitals": hospitals, "seed": seed}.items() if v is not None}
    try:
        files = write_demo_hospitals(out, RunConfig.from_flat(overrides).data)
    except FedcareError as error:
        raise fail(error) from None
    sites = write_demo_sites(files, aggregator=aggregator)
    console.print(f"contract: [bold]{files.contract}[/]")
    for name, site in sites.items():
        console.print(f"{name}: data {files.hospitals[name]}, settings [bold]{site}[/]")


app.command()(run)
app.command()(evaluate)
app.command()(predict)
app.command()(serve)
app.command()(track)
app.add_typer(contract_app, name="contract")
app.add_typer(ca_app, name="ca")
app.add_typer(aggregator_app, name="aggregator")
app.add_typer(hospital_app, name="hospital")


def main() -> None:
    """Entry point of the ``fedcare`` script."""
    app()
