"""Output settings: where the run folder goes, and whether the run resumes there."""

from __future__ import annotations

from dataclasses import dataclass

from fedcare.shared.config.flat import setting


@dataclass(frozen=True)
class OutputSettings:
    """Where the run folder goes.

    Attributes
    ----------
    out_dir : str
        Run folder; empty means ``runs/<timestamp>`` under the working directory.
    resume : bool
        Continue the run in ``out_dir`` from its last complete round, after the
        aggregator stopped (``fedcare run --resume``).
    """

    out_dir: str = setting("out-dir", "")
    resume: bool = setting("resume", False)
