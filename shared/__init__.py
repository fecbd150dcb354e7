"""What the aggregator and the hospitals both need: config, tasks, models, metrics, keys."""

__all__: list[str] = []
