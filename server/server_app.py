"""The aggregator's Flower ServerApp: parse the run config once, then hand over.

``app`` reads Flower's run config (a run ``fedcare run`` submits);
:func:`make_server_app` binds an already-parsed config instead, and takes a
simulation's data reference (``fedcare simulate``, and ``flwr run .`` through
:mod:`simulations.flower_app`). Whatever stops the run reaches the operator as
one sentence in Flower's stream, pointing to the run folder's log for the rest
(:func:`server.run_directory.record_failure`), never as a traceback.
"""

from __future__ import annotations

from collections.abc import Callable
from logging import ERROR
from pathlib import Path

from flwr.app import Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedcare.server.aggregator import log_rounds_to_stream, run_aggregator
from fedcare.server.reference import DataReference, contract_reference
from fedcare.server.run_directory import RunDirectory, default_run_path, record_failure
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.errors import ConfigError


def reference_for(config: RunConfig) -> DataReference:
    """Return what the aggregator knows of real hospitals' data: its contract's facts.

    Raises
    ------
    ConfigError
        If the run carries no contract: only a simulation runs without one, and it
        passes its own reference (:data:`ReferenceSource`). Or if it names no
        hospital: a deployed run reports each hospital under the name the node
        registry gives its key, never under a name its replies claim.
    """
    if config.data.simulated:
        raise ConfigError(
            "contract",
            "the run carries no data contract, so no real hospital can take part; "
            "simulations run through `fedcare simulate`",
        )
    reference = contract_reference(config.data.contract, config.training)
    if not config.federation.hospital_names:
        raise ConfigError(
            "hospital-names",
            "the run names no registered hospital, so replies could not be told apart from "
            "a hospital posing as another; start runs with `fedcare run`, which names them from "
            "the aggregator's registry (register hospitals with `fedcare aggregator register`)",
        )
    return reference


ReferenceSource = Callable[[RunConfig], DataReference]
"""What a simulation passes the aggregator instead of :func:`reference_for`: its data's facts
(the built-in dataset's or the user's own files' test set and baselines)."""


def serve(
    grid: Grid, context: Context, config: RunConfig, reference: ReferenceSource | None = None
) -> None:
    """Resolve the run folder and data reference, then run the federation."""
    if not config.output.out_dir:
        config = config.with_out_dir(str(default_run_path()))
    facts = (reference or reference_for)(config)
    run_dir = RunDirectory(Path(config.output.out_dir), reopen=config.output.resume)
    run_aggregator(grid, context, config=config, reference=facts, run_dir=run_dir)


def make_server_app(
    config: RunConfig | None = None, reference: ReferenceSource | None = None
) -> ServerApp:
    """Build a ServerApp; with ``config`` it ignores Flower's run config.

    A simulation passes ``reference``: what its aggregator knows of its data
    (the test rows and baselines of the built-in dataset or the user's own files).
    """
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        if config is None:  # deployed: the operator follows the run through Flower's stream
            log_rounds_to_stream()
        out_dir = config.output.out_dir if config else str(context.run_config.get("out-dir", ""))
        try:
            serve(grid, context, config or RunConfig.from_flat(context.run_config), reference)
        except Exception as error:  # noqa: BLE001 - one sentence out; the traceback goes to the log
            log(ERROR, "%s", record_failure(Path(out_dir) if out_dir else None, error))

    return server_app


app = make_server_app()
