"""fedcare's command line: one entry point for simulations, aggregators and hospitals."""

__all__: list[str] = []
