"""Which hospital keys the aggregator's SuperLink accepts, kept in step with the CA.

Three records say who may connect:

* the CA's registry (``CA/registry.json``): which hospital keys are valid;
* Flower's SuperLink: which keys are registered (through its Control API, on
  loopback only);
* the aggregator's registry (``state/hospitals.json``): which registered node id is
  which hospital, with its key's fingerprint.

They are kept in step by three rules, so that revoking a hospital never depends
on the operator remembering a second command:

* ``fedcare aggregator register NAME`` registers only a key the CA lists as active;
* ``fedcare aggregator start --ca CA`` records its state folder in
  ``CA/aggregator.json``, and ``fedcare ca remove-hospital NAME`` unregisters that
  hospital's node there at once: its next request is refused;
* every ``fedcare aggregator start`` unregisters, before the public port opens,
  every node whose key the CA no longer lists as active (a removal made while the
  aggregator was down).

Flower's Control API is used through the ``flwr`` command line with the
operator's connection (``state/flwr-home``), which points at the loopback port.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedcare.server.ca_registry import HospitalRecord, check_hospital_name, hospital_records
from fedcare.server.certificate_authority import HOSPITALS_DIR
from fedcare.server.superlink import (
    CONNECTION,
    HospitalRegistry,
    RegisteredHospital,
    flwr_home,
    internal_connection,
)
from fedcare.shared.certificate_checks import https_status
from fedcare.shared.credentials import public_key_fingerprint
from fedcare.shared.errors import FedcareError
from fedcare.shared.flower_process import flower_environment, flower_executable
from fedcare.shared.hospital_credentials import NODE_PUBLIC_KEY, read_node_public_key
from fedcare.shared.private_files import write_private

AGGREGATOR_LINK = "aggregator.json"
"""File in the CA folder naming the state folder of the aggregator that serves it."""


class ControlError(FedcareError):
    """Flower's Control API refused a request, or the aggregator is not running."""


def _flwr(state: Path, *arguments: str) -> dict[str, Any]:
    """Run ``flwr ARGUMENTS fedcare --format json`` with the operator's connection."""
    command = [flower_executable("flwr"), *arguments, CONNECTION, "--format", "json"]
    result = subprocess.run(
        command,
        env=flower_environment(flwr_home(state)),
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        answer = json.loads(result.stdout)
    except json.JSONDecodeError:
        answer = {"error-message": (result.stdout + result.stderr).strip()[-500:]}
    if not isinstance(answer, dict) or answer.get("success") is not True:
        message = answer.get("error-message", "no answer") if isinstance(answer, dict) else ""
        raise ControlError(
            f"the aggregator's SuperLink refused `flwr {' '.join(arguments[:2])}`: {message}"
        )
    return answer


def aggregator_running(state: Path) -> bool:
    """Whether the SuperLink of ``state`` answers on its loopback port."""
    try:
        address, ca_certificate = internal_connection(state)
    except FedcareError:
        return False
    return https_status(address, "/health", ca_certificate) == 200


def active_record(ca_dir: Path, name: str) -> HospitalRecord:
    """Return the CA's active record of hospital ``name``.

    Raises
    ------
    ControlError
        If the CA has no active hospital of that name.
    """
    check_hospital_name(name)
    for record in hospital_records(ca_dir):
        if record.name == name and record.active:
            return record
    raise ControlError(
        f"the CA in {ca_dir} has no active hospital '{name}'; record its public key first: "
        f"fedcare ca add-hospital {name} --dir {ca_dir} --public-key NODE.PUB "
        "--aggregator HOST:PORT"
    )


def register_hospital(state: Path, ca_dir: Path, name: str) -> int:
    """Register hospital ``name``'s key (as the CA recorded it) at the SuperLink.

    Returns
    -------
    int
        The node id Flower gave it.

    Raises
    ------
    ControlError
        If the CA does not list it as active, its ``node.pub`` is not the key
        the CA recorded, it is already registered, or the SuperLink refuses.
    """
    record = active_record(ca_dir, name)
    public_key = ca_dir / HOSPITALS_DIR / name / NODE_PUBLIC_KEY
    if public_key_fingerprint(read_node_public_key(public_key)) != record.fingerprint:
        raise ControlError(
            f"{public_key} is not the key the CA recorded for '{name}' ({record.fingerprint}); "
            "restore it from the CA's backup or record the hospital again"
        )
    registry = HospitalRegistry(state)
    if registry.node_of(name) is not None:
        raise ControlError(
            f"'{name}' is already registered as node {registry.node_of(name)}; "
            f"`fedcare aggregator unregister {name}` first to register another key"
        )
    answer = _flwr(state, "supernode", "register", str(public_key), "--name", name)
    node_id = int(answer["node-id"])
    registry.add(node_id, RegisteredHospital(name, record.fingerprint))
    return node_id


def unregister_node(state: Path, node_id: int) -> None:
    """Unregister ``node_id`` at the SuperLink and forget it in the aggregator's registry.

    Raises
    ------
    ControlError
        If the SuperLink refuses (it is then still registered there).
    """
    _flwr(state, "supernode", "unregister", str(node_id))
    HospitalRegistry(state).remove(node_id)


def revoked_nodes(
    registered: dict[int, RegisteredHospital], records: list[HospitalRecord]
) -> dict[int, RegisteredHospital]:
    """Return the registered nodes whose key the CA no longer lists as active."""
    valid = {(r.name, r.fingerprint) for r in records if r.active}
    return {
        node: hospital
        for node, hospital in registered.items()
        if (hospital.name, hospital.fingerprint) not in valid
    }


def unregister_revoked(
    state: Path, ca_dir: Path, unregister: Callable[[Path, int], None] = unregister_node
) -> list[str]:
    """Unregister every node of ``state`` whose key the CA in ``ca_dir`` revoked.

    Returns
    -------
    list[str]
        The hospitals unregistered.

    Raises
    ------
    ControlError
        If the SuperLink refuses one (the others are still unregistered).
    """
    revoked = revoked_nodes(HospitalRegistry(state).load(), hospital_records(ca_dir))
    failures = []
    for node_id, hospital in sorted(revoked.items()):
        try:
            unregister(state, node_id)
        except ControlError as error:
            failures.append(f"{hospital.name} (node {node_id}): {error}")
    if failures:
        raise ControlError("could not unregister " + "; ".join(failures))
    return [hospital.name for _, hospital in sorted(revoked.items())]


def link_aggregator(ca_dir: Path, state: Path) -> None:
    """Record in the CA folder that the aggregator in ``state`` serves this federation."""
    content = {"state": str(state.resolve())}
    write_private(ca_dir / AGGREGATOR_LINK, (json.dumps(content, indent=2) + "\n").encode())


def linked_aggregator(ca_dir: Path) -> Path | None:
    """Return the state folder of the aggregator started with this CA, if one was."""
    try:
        content = json.loads((ca_dir / AGGREGATOR_LINK).read_text(encoding="utf-8"))
        return Path(content["state"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
