"""The DP-SGD family section's tables: per family, and per grad-sample mode."""

from __future__ import annotations

import os

import torch
from rich.console import Console
from rich.table import Table

from fedcare.shared.models import MODELS
from fedcare.simulations.dp_mode_benchmark import (
    CHECK_TOLERANCE,
    FAMILY_BATCH_SIZE,
    family_results,
)
from fedcare.simulations.dp_mode_results import (
    GRAD_SAMPLE_MODES,
    FamilyResult,
    Measurement,
    recommended_mode,
)


def _ms(measurement: Measurement) -> str:
    text = f"{measurement.ms_per_step:.2f}" if measurement.ms_per_step is not None else "-"
    return f"{text} (e)" if measurement.empty_batch else text


def _mib(measurement: Measurement | None) -> str:
    if measurement is None or measurement.peak_mib is None:
        return "-"
    return f"{measurement.peak_mib:.1f}"


def family_table(results: list[FamilyResult], *, title: str) -> Table:
    """One row per (dataset, model): plain SGD, the fastest DP-SGD mode, and their peaks."""
    table = Table(title=title)
    columns = ("family", "model", "params", "plain ms", "best DP mode", "DP ms", "DP / plain")
    for column in (*columns, "peak plain MiB", "peak DP MiB", "registry"):
        table.add_column(column, justify="left" if column in columns[:2] else "right")
    for result in results:
        best = result.best_mode
        private = result.modes[best] if best else None
        plain = result.plain
        ratio = (
            f"{private.ms_per_step / plain.ms_per_step:.2f}x"
            if private and private.ms_per_step and plain.ms_per_step
            else "-"
        )
        table.add_row(
            result.family,
            str(result.model),
            f"{plain.params:,}",
            _ms(plain),
            best or "none",
            _ms(private) if private else "-",
            ratio,
            _mib(plain),
            _mib(private),
            recommended_mode(results, result.model),
        )
    return table


def modes_table(results: list[FamilyResult], *, title: str) -> Table:
    """One row per (dataset, model): every grad-sample mode's ms per step and peak MiB."""
    table = Table(title=title)
    table.add_column("dataset")
    table.add_column("model")
    for mode in GRAD_SAMPLE_MODES:
        table.add_column(mode, justify="right")
    for result in results:
        cells = []
        for mode in GRAD_SAMPLE_MODES:
            measurement = result.modes[mode]
            if measurement.ms_per_step is None:
                cells.append(str(measurement.failure))
            elif measurement.failure:
                cells.append(f"{measurement.ms_per_step:.2f}, {measurement.failure}")
            else:
                cells.append(f"{_ms(measurement)}, {_mib(measurement)} MiB")
        table.add_row(str(result.dataset), str(result.model), *cells)
    return table


def print_family_section(
    console: Console, *, warmup: int, steps: int, device: torch.device, threads: int
) -> None:
    """Measure and print the family section, why each mode failed, and the registry's modes."""
    load_before = os.getloadavg()[0]
    results = family_results(
        warmup=warmup, steps=steps, device=device, threads=threads, console=console
    )
    setting = (
        f"fastest of {steps} steps after {warmup} warm-up, batch {FAMILY_BATCH_SIZE}, "
        f"{device.type}, {threads} thread{'s' if threads > 1 else ''}, load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    )
    console.print(family_table(results, title=f"DP-SGD vs plain SGD per family ({setting})"))
    console.print(modes_table(results, title=f"Opacus grad-sample modes, ms per step ({setting})"))
    console.print(
        "(e): a step on an empty batch raises; wrong-grads: the noiseless clipped update "
        f"differs from per-example clipping by more than {CHECK_TOLERANCE:g} (relative).",
        markup=False,
    )
    for result in results:
        for mode, measurement in {"plain": result.plain, **result.modes}.items():
            if measurement.detail:
                console.print(
                    f"{result.dataset} / {result.model} {mode}: {measurement.detail[:200]}",
                    markup=False,
                )
    for model in dict.fromkeys(result.model for result in results):
        console.print(
            f'ModelName.{model.name}: "{recommended_mode(results, model)}"  '
            f'(registry now "{MODELS[model].grad_sample_mode}")',
            markup=False,
        )
