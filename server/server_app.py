"""The aggregator's Flower ServerApp: parse the run config once, then hand over.

``app`` reads Flower's run config (``flwr run .``); :func:`make_server_app` binds
an already-parsed config instead, for in-process simulation.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from fedcare.server.aggregator import log_rounds_to_stream, run_aggregator
from fedcare.server.reference import DataReference, contract_reference
from fedcare.server.run_directory import RunDirectory, default_run_path
from fedcare.shared.config import RunConfig


def reference_for(config: RunConfig) -> DataReference:
    """The contract's facts for real hospitals; the simulation's test set and baselines otherwise."""
    if not config.data.simulated:
        return contract_reference(config.data.contract, config.training)
    # Imported here: only a simulation trains baselines (and imports the simulation package).
    from fedcare.simulations.reference import simulated_reference

    return simulated_reference(config)


def serve(grid: Grid, context: Context, config: RunConfig) -> None:
    """Resolve the run folder and data reference, then run the federation."""
    if not config.output.out_dir:
        config = config.with_out_dir(str(default_run_path()))
    reference = reference_for(config)
    run_dir = RunDirectory(Path(config.output.out_dir), reopen=config.output.resume)
    run_aggregator(grid, context, config=config, reference=reference, run_dir=run_dir)


def make_server_app(config: RunConfig | None = None) -> ServerApp:
    """Build a ServerApp; with ``config`` it ignores Flower's run config."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        if config is None:  # deployed: the operator follows the run through Flower's stream
            log_rounds_to_stream()
        serve(grid, context, config or RunConfig.from_flat(context.run_config))

    return server_app


app = make_server_app()
