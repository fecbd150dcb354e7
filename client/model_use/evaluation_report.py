"""Write an external validation: ``evaluation.json`` and ``evaluation.png``, owner-only.

The figure has a panel per finding: calibration (classification), the decision
curve (binary) and the global feature importance (bars for table and sequence
features, a heat map over the pixels for images). Both files describe the
hospital's own patients, so they are written readable by their owner only, like
the rest of a hospital's records.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: hospitals' servers have no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

from fedcare.client.model_use.external_validation import ValidationResult  # noqa: E402
from fedcare.shared.private_files import private_directory, write_private  # noqa: E402

EVALUATION_JSON = "evaluation.json"
EVALUATION_PNG = "evaluation.png"
_TOP_FEATURES = 15


def check_output_folder(folder: Path) -> None:
    """Refuse a folder that already holds files, before anything is computed.

    Raises
    ------
    FileExistsError
        Naming the folder and what to do.
    """
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise FileExistsError(
            f"'{folder}' already exists and is not an empty folder; choose another --out"
        )


def write_evaluation(folder: Path, result: ValidationResult) -> list[Path]:
    """Write the report and its figure into ``folder`` (created owner-only); return their paths."""
    private_directory(folder)
    report = folder / EVALUATION_JSON
    write_private(report, (json.dumps(_json_safe(result.to_dict()), indent=2) + "\n").encode())
    figure = folder / EVALUATION_PNG
    write_private(figure, _figure(result))
    return [report, figure]


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    return value


def _figure(result: ValidationResult) -> bytes:
    summary = result.summary
    panels = []
    if "mean_predicted" in (summary.get("calibration") or {}):
        panels.append(_calibration_panel)
    if "decision_curve" in summary:
        panels.append(_decision_panel)
    if result.importance is not None:
        panels.append(_importance_panel)
    figure, axes = plt.subplots(1, max(len(panels), 1), figsize=(5 * max(len(panels), 1), 4))
    axes_list = list(axes) if len(panels) > 1 else [axes]
    for axis, panel in zip(axes_list, panels, strict=False):
        panel(axis, result)
    if not panels:
        axes_list[0].axis("off")
        axes_list[0].text(0.5, 0.5, "no curve for this task", ha="center")
    figure.suptitle(f"External validation of {summary['run']} on {summary['data']}", fontsize=9)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return buffer.getvalue()


def _calibration_panel(axis: Axes, result: ValidationResult) -> None:
    curve = result.summary["calibration"]
    axis.plot([0, 1], [0, 1], ":", color="grey", label="perfect")
    axis.plot(curve["mean_predicted"], curve["observed"], "o-", label="model")
    axis.set_xlabel(f"predicted probability ({curve['judged']})")
    axis.set_ylabel("observed rate")
    axis.set_title(f"Calibration (ECE {curve['ece']:.3f})")
    axis.legend(loc="upper left")


def _decision_panel(axis: Axes, result: ValidationResult) -> None:
    curve = result.summary["decision_curve"]
    axis.plot(curve["thresholds"], curve["model"], label="model")
    axis.plot(curve["thresholds"], curve["treat_all"], "--", label="treat all")
    axis.plot(curve["thresholds"], curve["treat_none"], ":", color="grey", label="treat none")
    low = min(min(curve["model"]), 0.0)
    axis.set_ylim(max(low, -0.05), max(max(curve["model"]), max(curve["treat_all"]), 0.01) * 1.1)
    axis.set_xlabel("threshold probability")
    axis.set_ylabel("net benefit")
    axis.set_title("Decision curve")
    axis.legend(loc="upper right")


def _importance_panel(axis: Axes, result: ValidationResult) -> None:
    importance = result.importance
    assert importance is not None
    if importance.ndim == 2:
        shown = axis.imshow(importance, cmap="magma")
        axis.figure.colorbar(shown, ax=axis)
        axis.set_title("Mean |integrated gradients| per pixel")
        axis.axis("off")
        return
    ranked = list(result.summary["importance"].items())[:_TOP_FEATURES]
    names = [name for name, _ in reversed(ranked)]
    axis.barh(names, [value for _, value in reversed(ranked)])
    axis.tick_params(axis="y", labelsize=7)
    axis.set_xlabel("mean |integrated gradients|")
    axis.set_title("Global feature importance")
