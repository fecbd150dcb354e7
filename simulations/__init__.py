"""Local federations: built-in data, partitioners, scenarios, baselines and benchmarks."""

__all__: list[str] = []
