"""The aggregator side: strategy, secure aggregation, checkpoints and the run report."""

__all__: list[str] = []
