"""``fedcare hospital check``: is this hospital ready to join? Safe to run at any time.

Each check reports ok, warn or fail with one line of detail. Details carry names,
dates and counts only: never a patient row, value, or a key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from client.ledger import PrivacyLedger
from client.site_settings import SiteSettings
from client.site_table import load_site_table
from shared.contract import DataContract
from shared.credentials import certificate_status, check_certificate, load_bundle, probe_tls
from shared.errors import FedcareError
from shared.tasks import TaskKind

LEDGER_FILE = "privacy-ledger.db"


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
            f"the bundle is for '{bundle.name}', not '{settings.node.name}'",
        )
    return Check("credentials", Status.OK, f"node key {bundle.fingerprint} for {bundle.name}")


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
    table = load_site_table(settings.node.data, contract)
    counts = f"{len(table)} rows, {len(contract.feature_names())} model inputs"
    if contract.task_kind is not TaskKind.REGRESSION:
        per_class = [int((table.labels == index).sum()) for index in range(len(contract.classes))]
        if contract.task_kind is TaskKind.BINARY:
            per_class = [int((table.labels == 0).sum()), int((table.labels == 1).sum())]
        counts += "; per class: " + ", ".join(
            f"{c} {n}" for c, n in zip(contract.classes, per_class, strict=True)
        )
    return Check(
        "data", Status.OK, f"{settings.node.data.name} meets contract '{contract.name}': {counts}"
    )


def _budget(settings: SiteSettings) -> Check:
    limits = settings.node.privacy
    path = settings.node.state / LEDGER_FILE
    if not path.exists():
        return Check(
            "privacy budget",
            Status.OK,
            f"nothing spent yet; limit epsilon {limits.max_epsilon:g} at delta {limits.delta:g}",
        )
    with PrivacyLedger(path) as ledger:
        spent = ledger.spent(settings.node.dataset, delta=limits.delta)
    left = limits.max_epsilon - spent
    status = (
        Status.FAIL if left <= 0 else Status.WARN if left < 0.1 * limits.max_epsilon else Status.OK
    )
    return Check(
        "privacy budget",
        status,
        f"spent epsilon {spent:.3f} of {limits.max_epsilon:g} (delta {limits.delta:g}); {max(left, 0):.3f} left",
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
