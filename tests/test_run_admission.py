"""What a hospital's worker decides before anything runs: the run's bundle, policy and approval.

Bundles are built with Flower's own builder, exactly as ``flwr run`` builds them;
the site is the demo hospital's real files and ``site.toml``.
"""

from __future__ import annotations

import io
import stat
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
import tomli_w
from flwr.cli.build import build_fab_from_files

from fedcare.client.admission import Admission, TaskFacts, TaskRefused, run_decisions
from fedcare.client.bundle import BundleRefused, verify_bundle
from fedcare.client.policy import PolicyRefusal, RunRefused, RunRequest, check_run
from fedcare.client.site_policy import PolicyConfigError, SitePolicy, approve_run
from fedcare.client.site_settings import SitePrivacy, SiteSettings
from fedcare.client.state_files import AUDIT_FILE
from fedcare.server.submission import app_pyproject
from fedcare.shared.audit import verify_audit_log
from fedcare.shared.config.run_config import RunConfig
from fedcare.shared.config.training import ModelName
from fedcare.shared.run_identity import run_config_hash
from fedcare.simulations.hospital_files import site_toml, write_demo_hospitals

CONFIG = RunConfig.from_flat({"contract": "x", "num-server-rounds": 3})


def _bundle(pyproject: dict, extra: dict[str, bytes] | None = None) -> bytes:
    files = {"pyproject.toml": tomli_w.dumps(pyproject).encode(), **(extra or {})}
    return build_fab_from_files(files)[0]


def _verify(content: bytes) -> dict:
    import hashlib

    digest = hashlib.sha256(content).hexdigest()
    return verify_bundle(content, declared_hash=digest, run_hash=digest)


def test_fedcares_own_bundle_is_accepted() -> None:
    config = _verify(_bundle(app_pyproject(CONFIG, "0.1.0")))
    assert config["tool"]["flwr"]["app"]["config"]["num-server-rounds"] == 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"clientapp": "client.client_app:app"}, "components other than fedcare's"),
        ({"agentapp": "fedcare.client.client_app:app"}, "AgentApp"),
    ],
)
def test_other_components_are_refused(change: dict, reason: str) -> None:
    pyproject = app_pyproject(CONFIG, "0.1.0")
    pyproject["tool"]["flwr"]["app"]["components"] |= change
    with pytest.raises(BundleRefused, match=reason):
        _verify(_bundle(pyproject))


def test_a_bundle_that_ships_code_is_refused_before_anything_is_read_from_it() -> None:
    code = {"client/client_app.py": b"open('/tmp/marker', 'w')\n", "client/__init__.py": b""}
    with pytest.raises(BundleRefused, match="client/__init__.py, client/client_app.py"):
        _verify(_bundle(app_pyproject(CONFIG, "0.1.0"), code))


def test_publisher_dependencies_and_hashes_must_be_fedcares() -> None:
    pyproject = app_pyproject(CONFIG, "0.1.0")
    pyproject["tool"]["flwr"]["app"]["publisher"] = "someone"
    with pytest.raises(BundleRefused, match="publisher"):
        _verify(_bundle(pyproject))
    pyproject = app_pyproject(CONFIG, "0.1.0")
    pyproject["project"]["dependencies"] = ["requests"]
    with pytest.raises(BundleRefused, match="dependencies"):
        _verify(_bundle(pyproject))
    content = _bundle(app_pyproject(CONFIG, "0.1.0"))
    with pytest.raises(BundleRefused, match="SHA-256"):
        verify_bundle(content, declared_hash="0" * 64, run_hash="0" * 64)


def _rezip(content: bytes, edit) -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            edit(target, info, source.read(info))
    return out.getvalue()


def test_an_executable_entry_or_a_manifest_that_lies_is_refused() -> None:
    content = _bundle(app_pyproject(CONFIG, "0.1.0"))

    def executable(target: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> None:
        info.external_attr = (stat.S_IFREG | 0o755) << 16
        target.writestr(info, data)

    with pytest.raises(BundleRefused, match="executable"):
        _verify(_rezip(content, executable))

    def unlisted(target: zipfile.ZipFile, info: zipfile.ZipInfo, data: bytes) -> None:
        target.writestr(info, b"other,0,0" if info.filename.endswith("CONTENT") else data)

    with pytest.raises(BundleRefused, match="manifest"):
        _verify(_rezip(content, unlisted))


def test_the_run_configuration_hash_is_stable_and_ignores_what_a_resume_changes() -> None:
    config = RunConfig.from_flat({"epsilon": 2.0, "out-dir": "/a"})
    same = RunConfig.from_flat({"out-dir": "/b", "resume": True, "ledger-run": "7", "epsilon": 2})
    assert run_config_hash(config) == run_config_hash(same)
    assert run_config_hash(config) != run_config_hash(RunConfig.from_flat({"epsilon": 2.5}))
    assert len(run_config_hash(config)) == 64


def _request(**flat: object) -> RunRequest:
    config = RunConfig.from_flat({"epsilon": 2.0, **flat})  # type: ignore[arg-type]
    return RunRequest(config, run_config_hash(config))


def test_the_run_policy_refuses_what_the_hospital_does_not_allow() -> None:
    limits = SitePrivacy(max_epsilon=5.0)
    policy = SitePolicy(
        models=frozenset({ModelName.LOGREG}),
        max_epsilon_per_run=2.0,
        max_rounds=10,
        max_local_epochs=3,
        max_evaluations=2,
    )
    check_run(_request(epsilon=2.0), policy, limits, site="h")
    cases = [
        (_request(model="mlp"), "does not train model 'mlp'"),
        (_request(epsilon=2.5), "per-run limit of 2"),
        (_request(**{"num-server-rounds": 11}), "11 rounds"),
        (_request(**{"local-epochs": 4}), "4 local epochs"),
    ]
    for request, reason in cases:
        with pytest.raises(RunRefused, match=reason):
            check_run(request, policy, limits, site="h")
    config = RunConfig.from_flat({"epsilon": 2.0})
    evaluation = RunRequest(config, run_config_hash(config), evaluation=True, evaluations_done=2)
    with pytest.raises(RunRefused, match="at most 2 evaluation"):
        check_run(evaluation, policy, limits, site="h")
    with pytest.raises(RunRefused, match="does not evaluate"):
        check_run(evaluation, SitePolicy(allow_evaluation=False), limits, site="h")
    with pytest.raises(PolicyRefusal, match="differential privacy off"):
        check_run(_request(**{"differential-privacy": False}), policy, limits, site="h")


def test_only_approved_runs_pass_when_approval_is_required() -> None:
    request = _request()
    policy = SitePolicy(require_approval=True)
    with pytest.raises(RunRefused, match=request.config_hash):
        check_run(request, policy, SitePrivacy(), site="h")
    approved = SitePolicy(require_approval=True, approved=frozenset({request.config_hash}))
    check_run(request, approved, SitePrivacy(), site="h")


def _site(tmp_path: Path, policy: dict | None = None) -> Path:
    files = write_demo_hospitals(tmp_path / "data", RunConfig().data)
    content = site_toml(
        name="hospital-1",
        aggregator="127.0.0.1:1",
        credentials=tmp_path,
        data=files.hospitals["hospital-1"],
        contract=files.contract,
        runtime_port=9,
    )
    content["hospital"]["state"] = str(tmp_path / "state")
    if policy is not None:
        content["policy"] = policy
    path = tmp_path / "site.toml"
    path.write_text("# the hospital's settings\n" + tomli_w.dumps(content))
    return path


def test_approve_adds_the_hash_once_keeps_comments_and_is_read_back(tmp_path: Path) -> None:
    path = _site(tmp_path, {"require-approval": True})
    digest = run_config_hash(CONFIG)
    assert approve_run(path, digest) and not approve_run(path, digest)
    assert path.read_text().startswith("# the hospital's settings")
    assert SiteSettings.load(path).policy.approved == {digest}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(PolicyConfigError, match="64 hex digits"):
        approve_run(path, "abc")


def test_a_bad_policy_table_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(PolicyConfigError, match="policy.max-round"):
        SiteSettings.load(_site(tmp_path, {"max-round": 3}))
    with pytest.raises(PolicyConfigError, match="policy.models"):
        SiteSettings.load(_site(tmp_path, {"models": "logreg"}))


def _facts(bundle: bytes, config: RunConfig, *, evaluation: bool = False) -> TaskFacts:
    import hashlib

    digest = hashlib.sha256(bundle).hexdigest()
    return TaskFacts(
        run_id=77,
        client_app=True,
        bundle=bundle,
        bundle_hash=digest,
        run_bundle_hash=digest,
        run_config=config.to_flat(),
        instruction={**config.to_flat(), "server-round": 1},
        evaluation=evaluation,
        stage="evaluate" if evaluation else "train",
    )


def test_admission_audits_what_asked_and_what_was_decided(tmp_path: Path) -> None:
    path = _site(tmp_path, {"require-approval": True, "max-evaluations": 1})
    admission = Admission(path)
    config = RunConfig.from_flat({"contract": "x"})
    facts = _facts(_bundle(app_pyproject(config, "0.1.0")), config)
    with pytest.raises(TaskRefused, match="run 77: hospital-1 refuses: it takes part only"):
        admission.check(facts)
    approve_run(path, run_config_hash(config))  # read again without a restart
    assert admission.check(facts) == "77"
    evaluation = _facts(facts.bundle, config, evaluation=True)
    admission.check(evaluation)
    admission.answered(evaluation)
    with pytest.raises(TaskRefused, match="at most 1 evaluation"):
        admission.check(evaluation)
    shipped = _bundle(app_pyproject(config, "0.1.0"), {"fedcare/__init__.py": b""})
    with pytest.raises(TaskRefused) as refused:
        admission.check(_facts(shipped, config))
    assert refused.value.bundle and "fedcare/__init__.py" in str(refused.value)
    log = tmp_path / "state" / AUDIT_FILE
    assert verify_audit_log(log).ok and stat.S_IMODE(log.stat().st_mode) == 0o600
    [decision] = run_decisions(log)
    assert decision.admitted and decision.refusals == 3
    assert decision.config_hash == run_config_hash(config)
    assert "fedcare/__init__.py" in decision.last_reason


def test_an_instruction_that_differs_from_the_run_or_an_agentapp_task_is_refused(
    tmp_path: Path,
) -> None:
    admission = Admission(_site(tmp_path))
    config = RunConfig.from_flat({"contract": "x"})
    facts = _facts(_bundle(app_pyproject(config, "0.1.0")), config)
    sneaky = replace(facts, instruction={"epsilon": 3.0, "contract": "y"})
    with pytest.raises(TaskRefused, match="differ from the run's configuration"):
        admission.check(sneaky)
    agent = replace(facts, client_app=False)
    with pytest.raises(TaskRefused, match="AgentApp"):
        admission.check(agent)


def test_key_exchange_stages_pass_the_policy_but_never_a_foreign_bundle(tmp_path: Path) -> None:
    # SecAgg+ cannot finish a round for the others if a hospital leaves before sharing
    # its keys; a hospital outside the policy refuses at the first stage that uses data.
    admission = Admission(_site(tmp_path, {"require-approval": True}))
    config = RunConfig.from_flat({"contract": "x"})
    facts = _facts(_bundle(app_pyproject(config, "0.1.0")), config)
    for stage in ("setup", "share_keys", "unmask"):
        admission.check(replace(facts, stage=stage, instruction=None))
    with pytest.raises(TaskRefused, match="approved runs"):
        admission.check(replace(facts, stage="collect_masked_vectors"))
    shipped = _bundle(app_pyproject(config, "0.1.0"), {"client/x.py": b""})
    with pytest.raises(TaskRefused, match="client/x.py"):
        admission.check(replace(_facts(shipped, config), stage="setup"))
