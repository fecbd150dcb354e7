"""A curious aggregator against the real ClientApp: every attack of issue 12, replayed.

Each test sends Flower messages to ``fedcare.client.client_app.app`` (egress
guard, SecAgg+ floor, the hospital's session) at a real hospital: a demo CSV
file checked against its contract, a privacy ledger and an audit log in its
state folder. Each attack is refused, or answered only with noise that the
ledger accounted before the answer left.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import EvaluateIns, FitIns, ndarrays_to_parameters
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.compat.common import recorddict_compat as compat
from flwr.supercore.primitives.asymmetric import generate_key_pairs, public_key_to_bytes

from fedcare.client.client_app import app
from fedcare.client.egress import REFUSED
from fedcare.client.evaluation_round import check_group_counts
from fedcare.client.hospital import fresh_model
from fedcare.client.ledger import PrivacyLedger, ledger_path
from fedcare.client.ledger_records import Mechanism
from fedcare.client.policy import PolicyRefusal
from fedcare.client.secure_aggregation import SECAGG_REFUSED
from fedcare.client.site import load_site
from fedcare.client.site_settings import SiteNode, SitePrivacy
from fedcare.client.state_files import AUDIT_FILE
from fedcare.shared.config.data import DataSettings
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import DeviceName
from fedcare.shared.keys import NodeConfigKey
from fedcare.shared.private_metrics import SCORE_BINS, sums_from_reply
from fedcare.shared.serialization import get_weights
from fedcare.shared.tasks import Task, TaskKind
from fedcare.simulations.hospital_files import write_demo_hospitals
from tests.privacy_oracle import independent_epsilon

pytestmark = pytest.mark.usefixtures("task_identity")

NODE_ID = 7
HOSPITAL = "hospital-1"
FEATURE = 0  # the attacked feature (mean radius)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("demo")
    files = write_demo_hospitals(folder, DataSettings())
    return files.hospitals[HOSPITAL], files.contract


def _node(demo: tuple[Path, Path], state: Path, **privacy: object) -> dict:
    data, contract = demo
    node = SiteNode(
        name=HOSPITAL,
        data=data,
        contract=contract,
        device=DeviceName.CPU,
        state=state,
        privacy=SitePrivacy(**privacy),  # type: ignore[arg-type]
        dataset="st-elsewhere",
    )
    return node.to_node_config()


@pytest.fixture()
def node_config(demo: tuple[Path, Path], tmp_path: Path) -> dict:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return _node(demo, state)


def _run(demo: tuple[Path, Path], **settings: object) -> RunConfig:
    contract = demo[1].read_text(encoding="utf-8")
    return RunConfig.from_flat({"contract": contract, "device": "cpu", **settings})  # type: ignore[dict-item]


def _context(node_config: dict, run_id: int = 1) -> Context:
    return Context(
        run_id=run_id, node_id=NODE_ID, node_config=node_config, state=RecordDict(), run_config={}
    )


def _instruction(config: RunConfig, server_round: int = 1) -> dict:
    return {**config.to_flat(), "server-round": server_round}


def _evaluate(weights: list[np.ndarray], config: RunConfig, context: Context) -> Message:
    ins = EvaluateIns(ndarrays_to_parameters(weights), _instruction(config))
    message = Message(
        content=compat.evaluateins_to_recorddict(ins, keep_input=True),
        dst_node_id=NODE_ID,
        message_type=MessageType.EVALUATE,
    )
    return app(message, context)


def _metrics(reply: Message) -> dict:
    return dict(compat.recorddict_to_evaluateres(reply.content).metrics)


def _audit_events(node_config: dict) -> list[dict]:
    path = Path(node_config[NodeConfigKey.STATE_DIR]) / AUDIT_FILE
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _ledger(node_config: dict) -> PrivacyLedger:
    return PrivacyLedger(ledger_path(Path(node_config[NodeConfigKey.STATE_DIR])))


# --- 1. SecAgg+ settings taken on trust ------------------------------------------


def _secagg(stage: str, context: Context, **configs: object) -> Message:
    record = ConfigRecord({Key.STAGE: stage, **configs})  # type: ignore[arg-type]
    message = Message(
        content=RecordDict({RECORD_KEY_CONFIGS: record}),
        dst_node_id=NODE_ID,
        message_type=MessageType.TRAIN,
        group_id="1",
    )
    return app(message, context)


def _setup(context: Context, *, sample: int, shares: int, threshold: int) -> Message:
    return _secagg(
        Stage.SETUP,
        context,
        **{
            Key.SAMPLE_NUMBER: sample,
            Key.SHARE_NUMBER: shares,
            Key.THRESHOLD: threshold,
            Key.CLIPPING_RANGE: 4.0,
            Key.TARGET_RANGE: 2**22,
            Key.MOD_RANGE: 2**32,
            Key.MAX_WEIGHT: 1000.0,
        },
    )


def _public_keys() -> list[bytes]:
    return [public_key_to_bytes(generate_key_pairs()[1]) for _ in range(2)]


def _assert_refused_by_the_floor(reply: Message, node_config: dict, words: str) -> None:
    assert reply.has_error() and reply.error.code == SECAGG_REFUSED
    assert words in reply.error.reason
    assert not reply.has_content()  # no public key, share or masked vector left
    refusal = _audit_events(node_config)[-1]
    assert refusal["event"] == "round-refused" and words in refusal["fields"]["reason"]


@pytest.mark.parametrize(
    ("sample", "shares", "threshold", "words"),
    [
        (1, 1, 1, "a neighbourhood of 1 hospitals"),
        (5, 5, 1, "reconstruction threshold (1 of 5 shares) is unsafe"),
        (5, 5, 2, "reconstruction threshold (2 of 5 shares) is unsafe"),
        (4, 5, 3, "more shares than hospitals"),
    ],
)
def test_a_crafted_secagg_setup_is_refused_before_any_key_is_made(
    node_config: dict, sample: int, shares: int, threshold: int, words: str
) -> None:
    reply = _setup(_context(node_config), sample=sample, shares=shares, threshold=threshold)
    _assert_refused_by_the_floor(reply, node_config, words)


def test_a_lone_neighbour_is_refused_and_an_honest_setup_goes_on(node_config: dict) -> None:
    context = _context(node_config)
    accepted = _setup(context, sample=3, shares=3, threshold=2)
    assert not accepted.has_error()
    own = accepted.content.config_records[RECORD_KEY_CONFIGS]
    keys = {str(NODE_ID): [own[Key.PUBLIC_KEY_1], own[Key.PUBLIC_KEY_2]], "8": _public_keys()}
    reply = _secagg(Stage.SHARE_KEYS, context, **keys)
    _assert_refused_by_the_floor(reply, node_config, "holds 1 other hospital(s)")


def test_masking_with_too_few_neighbours_is_refused_before_training(node_config: dict) -> None:
    context = _context(node_config)
    accepted = _setup(context, sample=3, shares=3, threshold=2)
    own = accepted.content.config_records[RECORD_KEY_CONFIGS]
    keys = {str(NODE_ID): [own[Key.PUBLIC_KEY_1], own[Key.PUBLIC_KEY_2]]}
    keys |= {"8": _public_keys(), "9": _public_keys()}
    assert not _secagg(Stage.SHARE_KEYS, context, **keys).has_error()
    reply = _secagg(
        Stage.COLLECT_MASKED_VECTORS,
        context,
        **{Key.CIPHERTEXT_LIST: [b"x"], Key.SOURCE_LIST: [8]},
    )
    _assert_refused_by_the_floor(reply, node_config, "shares arrived from 1 other hospital(s)")
    assert not ledger_path(Path(node_config[NodeConfigKey.STATE_DIR])).exists()  # nothing trained


@pytest.mark.parametrize(
    ("active", "dead", "words"),
    [
        ([NODE_ID, 8, 9], [9], "as both active and dead"),
        ([8, 9], [NODE_ID], "help unmask its own update"),
        ([NODE_ID, 8], [9], "the sum to unmask holds 2 hospital(s)"),
        ([NODE_ID, 8, 11], [], "outside this hospital's neighbourhood"),
    ],
)
def test_unsafe_unmasking_requests_are_refused(
    node_config: dict, active: list[int], dead: list[int], words: str
) -> None:
    context = _context(node_config)
    own = _setup(context, sample=3, shares=3, threshold=2).content.config_records[
        RECORD_KEY_CONFIGS
    ]
    keys = {str(NODE_ID): [own[Key.PUBLIC_KEY_1], own[Key.PUBLIC_KEY_2]]}
    keys |= {"8": _public_keys(), "9": _public_keys()}
    assert not _secagg(Stage.SHARE_KEYS, context, **keys).has_error()
    reply = _secagg(
        Stage.UNMASK, context, **{Key.ACTIVE_NODE_ID_LIST: active, Key.DEAD_NODE_ID_LIST: dead}
    )
    _assert_refused_by_the_floor(reply, node_config, words)


# --- 2. evaluation: crafted weights, binary search, policy -------------------------


def _threshold_model(config: RunConfig, node_config: dict, threshold: float) -> list[np.ndarray]:
    """Logistic regression that calls a patient positive iff its scaled FEATURE > threshold."""
    site = load_site(node_config, config, "run-1")
    weight, bias = get_weights(fresh_model(config, site))
    weight[:] = 0.0
    weight[0, FEATURE] = 1000.0
    bias[:] = -1000.0 * threshold
    return [weight, bias]


def test_a_binary_search_with_crafted_weights_gets_only_accounted_noise(
    node_config: dict, demo: tuple[Path, Path]
) -> None:
    config = _run(demo)
    site = load_site(node_config, config, "run-1")
    scaled = site.data.evaluation.features[:, FEATURE]
    low, high, answers, refusals = -1.0, 1.0, [], []
    for step in range(40):
        middle = (low + high) / 2
        weights = _threshold_model(config, node_config, middle)
        context = _context(node_config, run_id=100 + step)  # a fresh run for every query
        reply = _evaluate(weights, config, context)
        if reply.has_error():
            refusals.append(reply.error)
            continue
        sums = sums_from_reply(_metrics(reply))
        assert sums is not None
        exact_above = int((scaled > middle).sum())
        half, bins = SCORE_BINS // 2, SCORE_BINS  # predicted positive: the upper half of bins
        answers.append((sums[half:bins].sum() + sums[bins + half :].sum(), exact_above))
        # A second query in the same run is refused: the run planned one evaluation.
        second = _evaluate(weights, config, context)
        assert second.has_error() and "planned 1 evaluation release" in second.error.reason
        low, high = (middle, high) if answers[-1][0] > len(scaled) / 2 else (low, middle)
    # The hospital answered a few times, then its cap refused every further query.
    assert 1 <= len(answers) <= 10 and len(refusals) == 40 - len(answers)
    assert all(
        error.code == REFUSED and "past the hospital's cap" in error.reason for error in refusals
    )
    # Every answer was noisy: the released count is never the exact one.
    assert all(abs(noisy - exact) > 1e-6 for noisy, exact in answers)
    with _ledger(node_config) as ledger:
        entries = ledger.history(site.ledger_key, label=site.dataset)
    assert len(entries) == len(answers) and all(e.mechanism == Mechanism.GAUSSIAN for e in entries)
    composed = independent_epsilon([e.history_entry() for e in entries], config.privacy.delta)
    assert entries[-1].epsilon_after == pytest.approx(composed, rel=1e-9)
    assert composed <= SitePrivacy().max_epsilon


def test_an_evaluation_in_a_run_that_breaks_the_policy_is_refused_before_the_data_is_read(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    # The data file is gone: a refusal that reads no data is the only possible answer.
    data = tmp_path / "gone.csv"
    shutil.copy(demo[0], data)
    node_config = _node((data, demo[1]), tmp_path / "state")
    data.unlink()
    for settings, words in [
        ({"secure-aggregation": False}, "requires secure aggregation"),
        ({"differential-privacy": False}, "turned differential privacy off"),
        ({"epsilon": 8.0}, "above the hospital's limit"),
        ({"batch-size": 4}, "below the hospital's min-batch-size"),
    ]:
        config = _run(demo, **settings)
        reply = _evaluate(
            [np.zeros((1, 30), np.float32), np.zeros(1, np.float32)], config, _context(node_config)
        )
        assert reply.has_error() and reply.error.code == REFUSED and words in reply.error.reason
        assert _audit_events(node_config)[-1]["event"] == "round-refused"
    assert not ledger_path(tmp_path / "state").exists()


def test_an_evaluation_needs_min_count_rows_in_every_class(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    # 10% held out leaves this hospital fewer than 10 malignant rows to evaluate on.
    node_config = _node(demo, tmp_path / "state", eval_fraction=0.1)
    config = _run(demo)
    reply = _evaluate(_threshold_model(config, node_config, 0.0), config, _context(node_config))
    assert reply.has_error() and "one class of them, number fewer than its min-count (10)" in (
        reply.error.reason
    )
    with _ledger(node_config) as ledger:
        assert ledger.datasets() == []


class _Rows(SimpleNamespace):
    def __init__(self, labels: np.ndarray) -> None:
        super().__init__(labels=labels)

    def __len__(self) -> int:
        return len(self.labels)


def test_a_class_with_no_held_out_row_is_a_class_below_min_count() -> None:
    # Its noisy sums would be noise alone, and a sensitivity computed from them a made-up fact.
    site = SimpleNamespace(
        name="benign-only",
        min_count=10,
        task=Task(TaskKind.BINARY),
        data=SimpleNamespace(evaluation=_Rows(np.zeros(40, np.int64))),
    )
    with pytest.raises(PolicyRefusal, match="benign-only refuses to evaluate"):
        check_group_counts(site)  # type: ignore[arg-type]


# --- 3. training loss at sample rate 1 ---------------------------------------------


def test_a_sample_rate_one_round_releases_no_loss_and_is_accounted(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    node_config = _node(demo, tmp_path / "state", require_secure_aggregation=False)
    config = _run(demo, **{"batch-size": 100000, "secure-aggregation": False})
    site = load_site(node_config, config, "run-1")
    weights = get_weights(fresh_model(config, site))
    ins = FitIns(ndarrays_to_parameters(weights), _instruction(config))
    message = Message(
        content=compat.fitins_to_recorddict(ins, keep_input=True),
        dst_node_id=NODE_ID,
        message_type=MessageType.TRAIN,
    )
    reply = app(message, _context(node_config))
    assert not reply.has_error()
    metrics = dict(compat.recorddict_to_fitres(reply.content, keep_input=True).metrics)
    assert "train-loss" not in metrics and "loss" not in metrics
    assert metrics["sample-rate"] == 1.0
    with _ledger(node_config) as ledger:
        (entry,) = ledger.history(site.ledger_key)
    assert (entry.sample_rate, entry.mechanism) == (1.0, Mechanism.SUBSAMPLED_GAUSSIAN)
    expected = independent_epsilon([entry.history_entry()], config.privacy.delta)
    assert metrics["training-epsilon"] == pytest.approx(expected, rel=1e-9)


# --- 6. the budget follows the patients ---------------------------------------------


def test_a_renamed_label_or_a_copied_state_folder_meets_the_spent_budget(
    demo: tuple[Path, Path], tmp_path: Path
) -> None:
    node_config = _node(demo, tmp_path / "state")
    config = _run(demo)
    site = load_site(node_config, config, "run-1")
    with _ledger(node_config) as ledger:  # the dataset's budget is spent
        ledger.reserve(
            site.ledger_key,
            label=site.dataset,
            run_id="earlier",
            server_round=1,
            noise_multiplier=0.5,
            sample_rate=0.2,
            steps=200,
            delta=1e-5,
            cap_epsilon=1e6,
        )
    renamed = {**node_config, NodeConfigKey.DATASET: "a-new-label"}
    shutil.copytree(tmp_path / "state", tmp_path / "copied")
    copied = {
        **renamed,
        NodeConfigKey.STATE_DIR: str(tmp_path / "copied"),
        NodeConfigKey.HOSPITAL_NAME: "hospital-1b",
    }
    weights = _threshold_model(config, node_config, 0.0)
    for attempt in (renamed, copied):
        reply = _evaluate(weights, config, _context(attempt))
        assert reply.has_error() and "past the hospital's cap" in reply.error.reason
        assert site.ledger_key not in reply.error.reason  # the fingerprint never leaves


# --- 3b. the hospital owns its split ------------------------------------------------


def test_the_run_cannot_choose_a_real_hospitals_split(
    node_config: dict, demo: tuple[Path, Path]
) -> None:
    ours = load_site(node_config, _run(demo), "run-1")
    theirs = load_site(node_config, _run(demo, **{"seed": 12345, "eval-fraction": 0.9}), "run-1")
    assert np.array_equal(ours.data.evaluation.features, theirs.data.evaluation.features)
    assert np.array_equal(ours.data.train.features, theirs.data.train.features)
    reseeded = load_site({**node_config, NodeConfigKey.SPLIT_SEED: 99}, _run(demo), "run-1")
    assert not np.array_equal(ours.data.evaluation.features, reseeded.data.evaluation.features)
    assert reseeded.ledger_key == ours.ledger_key  # a new split of the same rows: same budget
