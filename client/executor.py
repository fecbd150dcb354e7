"""The hospital's worker: Flower's SuperExec role, filled by fedcare for its installed ClientApp.

``fedcare hospital start`` runs ``flower-supernode --isolation process
--superexec-auth-secret-file <state>/runtime.secret``: the SuperNode then starts no
process of its own for a message, and only a holder of the secret may take its
tasks. This worker holds it. For every task it

1. takes the task from the SuperNode's loopback runtime port (signed with the secret),
2. pulls the task's input (context, run, bundle bytes and message),
3. checks the bundle and the run against the hospital's rules
   (:class:`client.admission.Admission`) *before* anything is used,
4. calls the installed :data:`fedcare.client.client_app.app` in this process,
5. pushes the reply (an error reply when it refused: the aggregator always gets
   an answer) and the task's output.

Nothing from a run's bundle is installed, imported or put on ``sys.path``; AgentApp
tasks are taken only to be refused. The worker stays warm between messages:
torch and Opacus are imported once and :mod:`client.warm_cache` keeps the run's
prepared data and model. It sends its own task heartbeat (Flower's raises SIGINT
when a heartbeat is refused, which would stop the worker). While it handles a
message it keeps the task's token and the message's header in an owner-only file,
so that a worker started after a crash answers that message at once
(:func:`recover_interrupted_task`) instead of leaving it to Flower's one-minute expiry.

Run it as ``python -I -m fedcare.client.executor --config site.toml`` (isolated
mode: the working directory is never on ``sys.path``); ``fedcare hospital start``
does.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import httpx
from flwr.app import Context, Error, Message
from flwr.app.message_type import MessageType
from flwr.common.constant import ErrorCode, SubStatus
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.common.serde import context_from_proto, fab_from_proto, run_from_proto
from flwr.proto.node_pb2 import Node  # pylint: disable=no-name-in-module
from flwr.proto.runtime_pb2 import (  # pylint: disable=no-name-in-module
    AcquireTaskRequest,
    PullAppMessagesRequest,
    PullTaskInputRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore.auth.superexec_secret import load_superexec_auth_secret
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.inflatable.inflatable_protobuf_utils import (
    make_confirm_message_received_fn_protobuf,
    make_pull_object_fn_protobuf,
)
from flwr.supercore.inflatable.inflatable_utils import pull_and_inflate_object_from_tree
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
    SuperExecAuthHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker, exponential
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supercore.task_identity import TaskIdentity
from flwr.supernode.runtime.run_clientapp import push_message, push_task_output

from fedcare.client.admission import Admission, TaskFacts, TaskRefused
from fedcare.client.client_app import app as installed_app
from fedcare.client.egress import INTERNAL_ERROR, REFUSED
from fedcare.client.executor_recovery import InFlightTask
from fedcare.client.state_files import RUNTIME_SECRET

logger = logging.getLogger("fedcare.worker")

POLL_SECONDS = 0.1
"""How often an idle worker asks the SuperNode for a task (a loopback request)."""
MESSAGE_WAIT_SECONDS = 30.0
"""How long to wait for a claimed task's message: the SuperNode creates the task
before it has stored the message's content."""
OBJECT_RETRY_SECONDS = (0.02, 0.2)
"""First and longest pause between asks for a message object the SuperNode is still
receiving (Flower's defaults, 1 s and 10 s, would add a second to most messages)."""
HEARTBEAT_DELAY_SECONDS = 10.0
"""When a task's heartbeats start: most messages are answered well before (a heartbeat
is one more request each); a long one keeps its task alive from then on (Flower fails
a running task that sent none for 60 s)."""
RETRY_SECONDS = 60.0
"""How long one call keeps retrying while the SuperNode does not answer (e.g. restarting)."""
_ACQUIRE = "/flwr.proto.Runtime/AcquireTask"
_WORKER = "fedcare-worker"
_UNAVAILABLE = frozenset({502, 503, 504})


def _retry_invoker() -> RetryInvoker:
    """Retry a call the SuperNode did not answer; give up at once on a refusal.

    Flower's own HTTP retry policy sends SIGINT to its process on a 401, which
    would stop the worker when a task it gave up on is refused.
    """
    return RetryInvoker(
        wait_gen_factory=lambda: exponential(max_delay=5),
        recoverable_exceptions=(httpx.TransportError, httpx.HTTPStatusError),
        max_tries=None,
        max_time=RETRY_SECONDS,
        should_giveup=lambda error: (
            isinstance(error, httpx.HTTPStatusError)
            and error.response.status_code not in _UNAVAILABLE
        ),
    )


def runtime_client(
    address: str, *, secret: bytes | None = None, token: str = ""
) -> RuntimeHttpClient:
    """Connect to the SuperNode's loopback runtime API, signing with ``secret`` or a task token."""
    interceptors: list[object] = [RuntimeVersionHttpInterceptor(component_name=_WORKER)]
    if secret is not None:
        interceptors.append(
            SuperExecAuthHttpInterceptor(master_secret=secret, protected_methods={_ACQUIRE})
        )
    if token:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address,
        insecure=True,  # loopback only; the SuperNode serves it on 127.0.0.1
        root_certificates=None,
        interceptors=interceptors,  # type: ignore[arg-type]
        retry_invoker=_retry_invoker(),
    )


def _heartbeat(client: RuntimeHttpClient) -> Callable[[], bool]:
    """Make a task heartbeat that logs a refusal instead of raising SIGINT, as Flower's does."""
    request = SendTaskHeartbeatRequest()

    def send() -> bool:
        try:
            response = client.SendTaskHeartbeat(request)
        except httpx.TransportError:
            return False  # retried with back-off
        except httpx.HTTPError as error:
            logger.warning("task heartbeat refused (%s)", error)
            return True
        if not response.success:
            logger.warning("task heartbeat not accepted: the task is no longer this worker's")
        return True

    return send


@contextmanager
def task_channel(address: str, token: str) -> Iterator[RuntimeHttpClient]:
    """Open a runtime client authenticated as the task; heartbeats start if the task runs long."""
    client = runtime_client(address, token=token)
    heartbeat = HeartbeatSender(_heartbeat(client))
    timer = threading.Timer(HEARTBEAT_DELAY_SECONDS, heartbeat.start)
    timer.daemon = True
    timer.start()
    try:
        yield client
    finally:
        timer.cancel()
        timer.join()  # a heartbeat being started right now is then stopped below
        if heartbeat.is_running:
            heartbeat.stop()
        client.close()


def pull_input(
    client: RuntimeHttpClient, *, client_app: bool
) -> tuple[Message, Context, TaskFacts]:
    """Pull a task's context, run, bundle and message (bytes only; nothing is installed)."""
    response = client.PullTaskInput(PullTaskInputRequest())
    TaskIdentity.task_id = response.task_id
    TaskIdentity.run_id = response.run.run_id
    TaskIdentity.node_id = response.context.node_id
    context = context_from_proto(response.context)
    run = run_from_proto(response.run)
    fab = fab_from_proto(response.fab)
    message = _pull_message(client, context)
    facts = TaskFacts(
        run_id=run.run_id,
        client_app=client_app,
        bundle=fab.content,
        bundle_hash=fab.hash_str,
        run_bundle_hash=run.fab_hash,
        run_config=dict(context.run_config),
        instruction=_instruction(message),
        evaluation=message.metadata.message_type == MessageType.EVALUATE,
        stage=_stage(message),
    )
    return message, context, facts


def _pull_message(client: RuntimeHttpClient, context: Context) -> Message:
    deadline = time.monotonic() + MESSAGE_WAIT_SECONDS
    while not (response := client.PullMessages(PullAppMessagesRequest())).messages_list:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no message arrived for the task within {MESSAGE_WAIT_SECONDS} s")
        time.sleep(POLL_SECONDS)
    node = Node(node_id=context.node_id)
    tree = response.message_object_trees[0]
    message = pull_and_inflate_object_from_tree(
        tree,
        make_pull_object_fn_protobuf(client.PullObject, node, context.run_id),
        make_confirm_message_received_fn_protobuf(
            client.ConfirmMessageReceived, node, context.run_id
        ),
        return_type=Message,
        initial_backoff=OBJECT_RETRY_SECONDS[0],
        backoff_cap=OBJECT_RETRY_SECONDS[1],
    )
    # The inflated message does not carry its own id (it is its object id).
    message.metadata.__dict__["_message_id"] = tree.object_id
    return message


def _instruction(message: Message) -> dict[str, bool | int | float | str] | None:
    """Return the run settings a training or evaluation request carries (none in SecAgg+ stages)."""
    for record in ("fitins.config", "evaluateins.config"):  # Flower's legacy record names
        if record in message.content.config_records:
            return dict(message.content.config_records[record])  # type: ignore[arg-type]
    return None


def _stage(message: Message) -> str:
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is not None and Key.STAGE in configs:
        return str(configs[Key.STAGE])
    return str(message.metadata.message_type)


def warm_up() -> None:
    """Pay every one-time import before the first message, so round 1 is not slower.

    torch, Opacus and pandas come with fedcare's modules; the compiler module torch
    imports when the first optimizer is built (several seconds) comes with a throwaway one.
    """
    for module in (
        "fedcare.client.session",
        "fedcare.client.training",
        "fedcare.client.readers.table",
        "fedcare.shared.contract",
    ):
        importlib.import_module(module)
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


class Worker:
    """Takes the SuperNode's tasks one at a time and answers each.

    Parameters
    ----------
    site_toml : Path
        The hospital's settings (state folder, runtime port, policy).
    """

    def __init__(self, site_toml: Path) -> None:
        warm_up()
        self.admission = Admission(site_toml)
        settings = self.admission.settings
        self.address = f"127.0.0.1:{settings.runtime_port}"
        self.inflight = InFlightTask(settings.node.state)
        secret = load_superexec_auth_secret(str(settings.node.state / RUNTIME_SECRET))
        self._control = runtime_client(self.address, secret=secret)
        self._stop = threading.Event()

    def stop(self, _signum: int = 0, _frame: FrameType | None = None) -> None:
        """Finish the task in hand, then leave the loop."""
        self._stop.set()

    def serve(self) -> None:
        """Answer tasks until :meth:`stop` (or a signal) says to leave."""
        self.inflight.recover(lambda token: runtime_client(self.address, token=token))
        while not self._stop.is_set():
            try:
                response = self._control.AcquireTask(
                    AcquireTaskRequest(
                        supported_task_types=[TaskType.CLIENT_APP, TaskType.AGENT_APP]
                    )
                )
            except httpx.HTTPError as error:
                logger.warning("the SuperNode's runtime port did not answer (%s); retrying", error)
                self._stop.wait(1.0)
                continue
            if response.HasField("task") and response.token:
                self.handle(response.task.type == TaskType.CLIENT_APP, response.token)
            else:
                self._stop.wait(POLL_SECONDS)
        self._control.close()

    def handle(self, client_app: bool, token: str) -> None:
        """Answer one claimed task: check it, run the installed app or refuse, reply."""
        started = time.monotonic()
        with task_channel(self.address, token) as client:
            try:
                message, context, facts = pull_input(client, client_app=client_app)
            except Exception:  # noqa: BLE001 - Flower's task expiry answers it
                logger.exception("could not read a task's input; Flower will answer it as failed")
                return
            self.inflight.begin(token, message)
            reply, status = self._answer(message, context, facts)
            self.inflight.replying()
            try:
                push_message(client, reply, context)
            except Exception:  # noqa: BLE001 - the task is failed below; Flower answers it
                logger.exception("could not push the reply of run %s", facts.run_id)
                status = SubStatus.FAILED
            details = (reply.error.reason or "") if reply.has_error() else ""
            push_task_output(client, context, status, details)
            self.inflight.end()
        logger.info(
            "run %s, %s: %s in %.3f s",
            facts.run_id,
            facts.stage,
            "refused" if reply.has_error() else "answered",
            time.monotonic() - started,
        )

    def _answer(self, message: Message, context: Context, facts: TaskFacts) -> tuple[Message, str]:
        try:
            self.admission.check(facts)
            reply = installed_app(message, context)
        except TaskRefused as refusal:
            code = ErrorCode.INVALID_FAB if refusal.bundle else REFUSED
            return _error(message, code, str(refusal)), SubStatus.FAILED
        except Exception as error:  # noqa: BLE001 - the aggregator must always get an answer
            logger.exception("could not answer run %s", facts.run_id)
            reason = f"{type(error).__name__} inside the hospital; the details stay in its log"
            return _error(message, INTERNAL_ERROR, reason), SubStatus.FAILED
        if not reply.has_error():
            self.admission.answered(facts)
        return reply, SubStatus.COMPLETED


def _error(message: Message, code: int, reason: str) -> Message:
    return Message(Error(code=code, reason=reason), reply_to=message)


def _log_to_stderr() -> None:
    # fedcare's own logger, not the root one: Opacus configures the root logger on import.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    root = logging.getLogger("fedcare")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


def main(argv: list[str] | None = None) -> None:
    """Run the worker for ``--config site.toml`` until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(description="fedcare's hospital worker (see module docs)")
    parser.add_argument("--config", type=Path, required=True, help="the hospital's site.toml")
    arguments = parser.parse_args(argv)
    _log_to_stderr()
    worker = Worker(arguments.config.resolve())
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, worker.stop)
    logger.info("worker ready on %s; runs only the installed fedcare ClientApp", worker.address)
    worker.serve()


if __name__ == "__main__":
    main()
