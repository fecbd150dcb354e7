"""The egress guard lets out model updates and allowed aggregates, and nothing else."""

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import Code, EvaluateRes, FitIns, FitRes, Status, ndarrays_to_parameters
from flwr.compat.common import recorddict_compat as compat

from fedcare.client.egress import EGRESS_BLOCKED, INTERNAL_ERROR, REFUSED, egress_guard_mod
from fedcare.shared.errors import PrivacyBudgetExceededError

pytestmark = pytest.mark.usefixtures("task_identity")

CANARY = "CANARY-4242.4242"
SHAPES = [(1, 3), (1,)]


def _request(kind: str = MessageType.TRAIN) -> Message:
    arrays = [np.zeros(shape, np.float32) for shape in SHAPES]
    content = compat.fitins_to_recorddict(
        FitIns(ndarrays_to_parameters(arrays), {}), keep_input=True
    )
    return Message(content=content, dst_node_id=1, message_type=kind)


def _context() -> Context:
    return Context(run_id=1, node_id=1, node_config={}, state=RecordDict(), run_config={})


def _fit_reply(
    request: Message,
    *,
    arrays: list[np.ndarray] | None = None,
    rows: int = 50,
    metrics: dict | None = None,
) -> Message:
    arrays = arrays if arrays is not None else [np.ones(shape, np.float32) for shape in SHAPES]
    res = FitRes(
        Status(Code.OK, "Success"),
        ndarrays_to_parameters(arrays),
        rows,
        metrics or {"hospital": "h", "epsilon": 1.0},
    )
    return Message(compat.fitres_to_recorddict(res, keep_input=True), reply_to=request)


def _guard(request: Message, reply: Message) -> Message:
    return egress_guard_mod(request, _context(), lambda msg, ctxt: reply)


def test_a_well_formed_update_passes_untouched() -> None:
    request = _request()
    reply = _fit_reply(request)
    assert _guard(request, reply) is reply


@pytest.mark.parametrize(
    ("reply_kwargs", "rule"),
    [
        (
            {"metrics": {"hospital": "h", "patient-age": 61.0}},
            "metric 'patient-age' is not on the allowed list",
        ),
        ({"metrics": {"hospital": "h", "auroc": CANARY}}, "metric 'auroc' is not a number"),
        ({"rows": 4}, "fewer than 10 patients"),
        (
            {"arrays": [np.zeros((2, 3), np.float32), np.zeros(1, np.float32)]},
            "differ from the model",
        ),
        ({"arrays": [np.zeros((1, 3), np.int64), np.zeros(1, np.int64)]}, "unexpected type"),
    ],
)
def test_anything_else_is_blocked_by_rule_never_by_value(reply_kwargs: dict, rule: str) -> None:
    request = _request()
    blocked = _guard(request, _fit_reply(request, **reply_kwargs))
    assert blocked.has_error() and blocked.error.code == EGRESS_BLOCKED
    assert rule in blocked.error.reason
    assert CANARY not in blocked.error.reason and "61" not in blocked.error.reason


def test_an_extra_record_is_blocked() -> None:
    request = _request()
    reply = _fit_reply(request)
    reply.content.config_records["side-channel"] = compat.ConfigRecord({"x": CANARY})  # type: ignore[attr-defined]
    blocked = _guard(request, reply)
    assert blocked.error.code == EGRESS_BLOCKED and CANARY not in blocked.error.reason


def test_evaluation_metrics_need_enough_patients() -> None:
    request = _request(MessageType.EVALUATE)
    res = EvaluateRes(Status(Code.OK, "Success"), 0.3, 5, {"hospital": "h", "auroc": 0.9})
    blocked = _guard(request, Message(compat.evaluateres_to_recorddict(res), reply_to=request))
    assert blocked.error.code == EGRESS_BLOCKED and "fewer than 10 patients" in blocked.error.reason


@pytest.mark.parametrize("count", [[61.0, 62.0], float("nan")])
def test_a_patient_count_that_is_no_number_is_refused_like_a_small_one(count: object) -> None:
    request = _request()
    reply = _fit_reply(request)
    for name, record in reply.content.metric_records.items():
        if name.endswith(".num_examples"):
            record["num_examples"] = count  # type: ignore[index]
    blocked = _guard(request, reply)
    assert blocked.error.code == EGRESS_BLOCKED and "fewer than 10 patients" in blocked.error.reason
    assert "61" not in blocked.error.reason


def test_exceptions_leave_by_type_only_unless_they_are_fedcare_refusals() -> None:
    request = _request()

    def leaky(msg: Message, ctxt: Context) -> Message:
        raise ValueError(f"could not convert string to float: '{CANARY}'")

    reply = egress_guard_mod(request, _context(), leaky)
    assert reply.error.code == INTERNAL_ERROR and CANARY not in reply.error.reason
    assert "ValueError" in reply.error.reason

    def refuses(msg: Message, ctxt: Context) -> Message:
        raise PrivacyBudgetExceededError("h refuses to train: spent 2.9 of 3")

    refused = egress_guard_mod(request, _context(), refuses)
    assert refused.error.code == REFUSED and "refuses to train" in refused.error.reason


def test_refusals_leave_without_paths_small_counts_or_fingerprints() -> None:
    from fedcare.client.site_settings import SiteConfigError
    from fedcare.shared.errors import DataError

    request = _request()
    fingerprint = "9f" * 32
    leaks = [
        DataError("/srv/st-mary/patients.csv: column 'age' is above-max in 1 row"),
        SiteConfigError("hospital.data", "/srv/st-mary/site.toml must set data (a str)"),
        PrivacyBudgetExceededError(
            f"dataset {fingerprint} at /srv/st-mary/state/privacy-ledger.db has spent 2.9 of 3"
        ),
    ]
    for error in leaks:

        def raises(msg: Message, ctxt: Context, error: Exception = error) -> Message:
            raise error

        reason = egress_guard_mod(request, _context(), raises).error.reason
        assert "/srv" not in reason and fingerprint not in reason and "1 row" not in reason
        assert reason.startswith(type(error).__name__)
    budget = egress_guard_mod(request, _context(), raises).error.reason
    assert "spent 2.9 of 3" in budget and "<path>" in budget and "<fingerprint>" in budget
