"""The hospital side: site data, DP-SGD training, privacy accounting, local evaluation."""

__all__: list[str] = []
