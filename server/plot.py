"""The report's figure: the headline metric per round beside the baselines, and epsilon spent."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TypedDict

import matplotlib

matplotlib.use("Agg")  # headless: aggregators run without a display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from fedcare.server.run_record import RunRecord  # noqa: E402
from fedcare.shared.keys import ReplyKey  # noqa: E402

_BASELINE_STYLES = {"pooled": ":", "local_only": "--"}


LABELLED_HOSPITALS = 12
"""Up to this many hospitals, each has its own labelled epsilon line; above, faint
unlabelled lines (a legend of hundreds would cover the figure)."""


class _LineStyle(TypedDict, total=False):
    """The keyword arguments of ``Axes.plot`` an epsilon line sets."""

    color: str
    alpha: float
    linewidth: float
    marker: str
    label: str


_MANY_STYLE: _LineStyle = {"color": "tab:blue", "alpha": 0.25, "linewidth": 0.6}


def plot_run(
    path: Path,
    *,
    record: RunRecord,
    headline: str,
    baselines: Mapping[str, Mapping[str, float]],
    target_epsilon: float | None,
) -> None:
    """Draw the two-panel report figure into ``path`` (PNG), atomically."""
    figure, (metric_axis, epsilon_axis) = plt.subplots(1, 2, figsize=(11, 4))
    _plot_metric(metric_axis, record, headline, baselines)
    _plot_epsilon(epsilon_axis, record, target_epsilon)
    for axis in (metric_axis, epsilon_axis):
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    figure.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)


def _plot_metric(
    axis: Axes, record: RunRecord, headline: str, baselines: Mapping[str, Mapping[str, float]]
) -> None:
    for scope, label in (
        ("test_metrics", "federated (test set)"),
        ("federated_metrics", "federated (hospitals' eval)"),
    ):
        points = [
            (r.round, getattr(r, scope)[headline])
            for r in record.rounds
            if headline in getattr(r, scope)
        ]
        if points:
            axis.plot(*zip(*points, strict=True), marker="o", label=label)
    for name, metrics in baselines.items():
        if headline in metrics:
            axis.axhline(
                metrics[headline],
                linestyle=_BASELINE_STYLES.get(name, "-."),
                color="grey",
                label=name.replace("_", "-"),
            )
    axis.set_xlabel("round")
    axis.set_ylabel(headline)
    axis.set_title(f"{headline} of the global model")
    axis.legend(loc="lower right", fontsize="small")


def _plot_epsilon(axis: Axes, record: RunRecord, target_epsilon: float | None) -> None:
    names = sorted({name for r in record.rounds for name in r.hospitals})
    many = len(names) > LABELLED_HOSPITALS
    for name in names:
        points = [
            (r.round, r.hospitals[name].privacy[ReplyKey.EPSILON])
            for r in record.rounds
            if name in r.hospitals and ReplyKey.EPSILON in r.hospitals[name].privacy
        ]
        if points:
            style: _LineStyle = _MANY_STYLE if many else {"marker": "o", "label": name}
            axis.plot(*zip(*points, strict=True), **style)
    if many:
        axis.plot([], [], **_MANY_STYLE, label=f"{len(names)} hospitals")
    if target_epsilon is not None:
        axis.axhline(target_epsilon, linestyle="--", color="red", label="target epsilon")
    axis.set_xlabel("round")
    axis.set_ylabel("epsilon spent")
    axis.set_title("privacy budget spent per hospital")
    axis.legend(loc="upper left", fontsize="small")
