"""The aggregator's Flower ServerApp: parse the run config once, then hand over.

``app`` reads Flower's run config (``flwr run .``); :func:`make_server_app` binds
an already-parsed config instead, for in-process simulation.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from server.aggregator import run_aggregator
from server.run_directory import RunDirectory, default_run_path
from shared.config import RunConfig


def serve(grid: Grid, context: Context, config: RunConfig) -> None:
    """Resolve the run folder and data reference, then run the federation."""
    # Imported here: a real aggregator will take its reference from elsewhere.
    from simulations.reference import simulated_reference

    if not config.output.out_dir:
        config = config.with_out_dir(str(default_run_path()))
    reference = simulated_reference(config)
    run_dir = RunDirectory(Path(config.output.out_dir))
    run_aggregator(grid, context, config=config, reference=reference, run_dir=run_dir)


def make_server_app(config: RunConfig | None = None) -> ServerApp:
    """Build a ServerApp; with ``config`` it ignores Flower's run config."""
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        serve(grid, context, config or RunConfig.from_flat(context.run_config))

    return server_app


app = make_server_app()
