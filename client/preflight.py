"""``fedcare hospital check``: is this hospital ready to join? Safe to run at any time.

Each check reports ok, warn or fail with one line of detail. Details carry names,
dates and counts only: never a patient row, value, or a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from fedcare.client.ledger import PrivacyLedger, ledger_path
from fedcare.client.readers import read_site_data
from fedcare.client.site import hospital_fingerprint
from fedcare.client.site_settings import SiteSettings
from fedcare.shared.certificate_checks import certificate_status, check_certificate, probe_tls
from fedcare.shared.contract import DataContract
from fedcare.shared.data import Examples, InputKind
from fedcare.shared.errors import FedcareError
from fedcare.shared.hospital_credentials import load_bundle
from fedcare.shared.tasks import TaskKind


class Status(StrEnum):
    """Outcome of one check."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One line of the readiness summary."""

    name: str
    status: Status
    detail: str


def _credentials(settings: SiteSettings) -> Check:
    bundle = load_bundle(settings.credentials)
    if bundle.name != settings.node.name:
        return Check(
            "credentials",
            Status.FAIL,
            f"the operator recorded this key as '{bundle.name}', not '{settings.node.name}'",
        )
    detail = (
        f"own node key {bundle.fingerprint} for {bundle.name}; "
        f"federation CA {bundle.ca_fingerprint}"
    )
    if bundle.aggregator != settings.aggregator:
        return Check(
            "credentials",
            Status.WARN,
            f"{detail}; site.toml dials {settings.aggregator}, the operator's bundle says "
            f"{bundle.aggregator}",
        )
    return Check("credentials", Status.OK, detail)


def _ca_certificate(settings: SiteSettings) -> Check:
    status = check_certificate(settings.credentials / "ca.crt")
    if not status.valid:
        return Check(
            "CA certificate",
            Status.FAIL,
            f"not valid now (valid {status.not_before:%Y-%m-%d} to {status.not_after:%Y-%m-%d})",
        )
    level = Status.WARN if status.expiring_soon else Status.OK
    return Check(
        "CA certificate",
        level,
        f"valid until {status.not_after:%Y-%m-%d} ({status.days_left} days)",
    )


def _aggregator(settings: SiteSettings) -> Check:
    status = certificate_status(probe_tls(settings.aggregator, settings.credentials / "ca.crt"))
    level = Status.WARN if status.expiring_soon else Status.OK
    return Check(
        "aggregator",
        level,
        f"{settings.aggregator} answers over TLS with the federation's certificate "
        f"(valid until {status.not_after:%Y-%m-%d})",
    )


def _data(settings: SiteSettings) -> Check:
    contract = DataContract.load(settings.node.contract)
    data = read_site_data(settings.node.data, contract)
    counts = f"{_count(len(data), _UNITS[contract.input_kind()])}, {_shape(contract)}"
    if contract.task_kind is not TaskKind.REGRESSION:
        per_class = zip(contract.classes, _per_class(contract, data), strict=True)
        counts += "; per class: " + ", ".join(f"{name} {count}" for name, count in per_class)
    return Check(
        "data", Status.OK, f"{settings.node.data.name} meets contract '{contract.name}': {counts}"
    )


_UNITS = {InputKind.TABLE: "row", InputKind.IMAGES: "image", InputKind.SEQUENCES: "patient"}


def _count(count: int, unit: str) -> str:
    return f"{count} {unit}{'s' if count != 1 else ''}"


def _shape(contract: DataContract) -> str:
    shape = contract.input_shape()
    if contract.input_kind().is_image:
        return f"{'x'.join(map(str, shape))} pixels (channels x height x width)"
    if contract.sequences is not None:
        return f"up to {shape[0]} steps of {_count(shape[1] - 1, 'feature')}"
    return f"{shape[0]} model inputs"


def _per_class(contract: DataContract, data: Examples) -> list[int]:
    """How many examples of each of the contract's classes, in the contract's order."""
    if contract.task_kind is TaskKind.BINARY:
        # Binary labels are 1.0 for the positive class, whichever position it has.
        targets = [float(name == contract.positive_class) for name in contract.classes]
    else:
        targets = list(range(len(contract.classes)))
    return [int((data.labels == target).sum()) for target in targets]


def _budget(settings: SiteSettings) -> Check:
    limits = settings.node.privacy
    path = ledger_path(settings.node.state)
    if not path.exists():
        return Check(
            "privacy budget",
            Status.OK,
            f"nothing spent yet; limit epsilon {limits.max_epsilon:g} at delta {limits.delta:g}",
        )
    # The budget follows the rows (their fingerprint) as well as the label.
    fingerprint = hospital_fingerprint(settings.node)
    with PrivacyLedger(path) as ledger:
        spent = ledger.spent(fingerprint, label=settings.node.dataset, delta=limits.delta)
    left = limits.max_epsilon - spent
    status = (
        Status.FAIL if left <= 0 else Status.WARN if left < 0.1 * limits.max_epsilon else Status.OK
    )
    return Check(
        "privacy budget",
        status,
        f"spent epsilon {spent:.3f} of {limits.max_epsilon:g} (delta {limits.delta:g}); "
        f"{max(left, 0):.3f} left",
    )


CHECKS: tuple[tuple[str, Callable[[SiteSettings], Check]], ...] = (
    ("credentials", _credentials),
    ("CA certificate", _ca_certificate),
    ("aggregator", _aggregator),
    ("data", _data),
    ("privacy budget", _budget),
)


def run_preflight(settings: SiteSettings) -> list[Check]:
    """Run every check; one failing never stops the others."""
    results = []
    for name, check in CHECKS:
        try:
            results.append(check(settings))
        except FedcareError as error:
            results.append(Check(name, Status.FAIL, str(error)))
    return results
