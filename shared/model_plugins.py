"""Model plugins: networks a party installed, found through entry points, never shipped.

A plugin is an installed Python distribution that registers a builder under the
``fedcare.models`` entry point group (its ``pyproject.toml``)::

    [project.entry-points."fedcare.models"]
    residual-mlp = "my_models:residual_mlp"

The builder takes one example's input shape and the task's output width and
returns an ``nn.Module`` (``examples/fedcare-example-models`` is a worked
example). A run names the entry point and the distribution's version; every
party resolves them among its *own* installed distributions only: nothing named
by a run beyond that name and version is imported, and a party whose installed
version differs refuses, so all parties build the same network.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

from torch import nn

from fedcare.shared.errors import FedcareError

PLUGIN_GROUP = "fedcare.models"

PluginBuilder = Callable[[tuple[int, ...], int], nn.Module]


class ModelPluginError(FedcareError, LookupError):
    """The run's model plugin is not installed here, or in another version."""


def installed_plugins() -> dict[str, str]:
    """Every installed model plugin: entry point name -> ``distribution==version``."""
    return {point.name: _source(point) for point in entry_points(group=PLUGIN_GROUP)}


def _source(point: EntryPoint) -> str:
    dist = point.dist
    return f"{dist.name}=={dist.version}" if dist is not None else "an unknown distribution"


def _find(name: str) -> EntryPoint:
    found = [point for point in entry_points(group=PLUGIN_GROUP) if point.name == name]
    if not found:
        available = ", ".join(f"{n} ({s})" for n, s in sorted(installed_plugins().items()))
        raise ModelPluginError(
            f"model '{name}' is not installed here: no installed package registers it under "
            f"the '{PLUGIN_GROUP}' entry point group (installed here: {available or 'none'}). "
            "Install the package that provides it, in the run's version, and restart."
        )
    if len(found) > 1:
        sources = ", ".join(_source(point) for point in found)
        raise ModelPluginError(
            f"model '{name}' is registered by more than one installed package ({sources}); "
            "uninstall all but one"
        )
    return found[0]


def load_plugin(name: str, version: str) -> tuple[PluginBuilder, str]:
    """Import the builder installed plugin ``name`` registers, if its version is ``version``.

    Returns
    -------
    tuple[PluginBuilder, str]
        The builder, and its source as ``distribution==version``.

    Raises
    ------
    ModelPluginError
        If no installed distribution registers ``name``, or its version differs
        from ``version``; nothing is imported then.
    """
    point = _find(name)
    dist = point.dist
    installed = dist.version if dist is not None else None
    if installed != version:
        package = dist.name if dist is not None else "its package"
        raise ModelPluginError(
            f"model '{name}' comes from {package} {installed} here, but the run needs version "
            f"{version}; install {package}=={version} (every party must build the same model)"
        )
    builder = point.load()
    if not callable(builder):
        raise ModelPluginError(
            f"model '{name}' ({_source(point)}) registers {point.value}, which is not callable; "
            "a fedcare.models entry point must name a function (input_shape, output_dim) -> module"
        )
    return builder, _source(point)
