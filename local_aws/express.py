"""Express workflows in the local AWS, with AWS's semantics (hooked in by
local_aws/moto_patches.py, between two of local_aws/stepfunctions.py's patches).

moto 5.2.5 ran every state machine as a Standard one: CloudFormation's `StateMachineType`
and `LoggingConfiguration` were dropped, StartSyncExecution did not exist, and no
execution wrote its history to CloudWatch Logs. On AWS ("Standard vs. Express Workflows"
and "Execution guarantees", Step Functions developer guide):

- An Express execution's ARN is `arn:...:states:REGION:ACCOUNT:express:MACHINE:NAME:ID`.
  Starting one is not idempotent: the same name starts another execution.
- Its history is not kept by Step Functions: DescribeExecution and GetExecutionHistory
  refuse its ARN (InvalidArn), ListExecutions refuses the machine
  (StateMachineTypeNotSupported). Its history is its log group's, if logging is on.
- StartSyncExecution runs an Express execution and answers with its end (status
  SUCCEEDED, FAILED or TIMED_OUT, output or error and cause, billing details) with 200 OK
  even when it failed; on a STANDARD machine it is refused (StateMachineTypeNotSupported).
- An Express execution runs for at most five minutes (it then times out); its input is
  limited to 256 KiB like a Standard one's (local_aws/stepfunctions.py checks both starts).

Logging (both types, "Using CloudWatch Logs to log execution history"): each history
event the configured level keeps is one JSON record in the machine's log group (`id`,
`type`, `details`, `previous_event_id`, `event_timestamp` in epoch milliseconds,
`execution_arn`, `redrive_count`), without the execution's data (input, output, a task's
parameters) when includeExecutionData is false.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import threading
import uuid
from types import SimpleNamespace
from typing import Any

MAX_DURATION_SECONDS = 300  # Express: "can run for up to five minutes"
# Express bills memory in 64-MB chunks and duration in 100-ms units (Step Functions
# pricing); the workflow's state is far under 64 MB, so one chunk is what it uses.
BILLED_MEMORY_MB = 64
BILLED_DURATION_UNIT_MS = 100
NOT_EXPRESS = "This operation is not supported by this type of state machine"
EXECUTION_DATA_KEYS = ("input", "inputDetails", "output", "outputDetails", "parameters")

_logs_lock = threading.Lock()  # moto's log streams append without a lock of their own


def is_express(state_machine: Any) -> bool:
    return getattr(state_machine, "type", "STANDARD") == "EXPRESS"


def is_express_arn(arn: str) -> bool:
    return arn.split(":")[5:6] == ["express"]


def _errors() -> tuple[type[Exception], type[Exception]]:
    from moto.core.exceptions import AWSError
    from moto.stepfunctions.exceptions import InvalidArn

    class TypeNotSupported(AWSError):
        TYPE = "StateMachineTypeNotSupported"
        STATUS = 400

    return TypeNotSupported, InvalidArn


def logging_configuration_from_template(properties: dict[str, Any]) -> dict[str, Any] | None:
    """CloudFormation's LoggingConfiguration in the API's shape (the same fields, camelCase)."""
    logging = properties.get("LoggingConfiguration")
    if not logging:
        return None
    return {
        "level": logging.get("Level", "OFF"),
        "includeExecutionData": bool(logging.get("IncludeExecutionData", False)),
        "destinations": [
            {"cloudWatchLogsLogGroup": {"logGroupArn": d["CloudWatchLogsLogGroup"]["LogGroupArn"]}}
            for d in logging.get("Destinations", [])
            if "CloudWatchLogsLogGroup" in d
        ],
    }


def patch_type_and_logging_from_templates() -> None:
    """`AWS::StepFunctions::StateMachine`'s StateMachineType and LoggingConfiguration reach
    the state machine (moto kept neither: every stack's machine was a Standard one
    without logging)."""
    from moto.stepfunctions import models

    create = models.StateMachine.create_from_cloudformation_json
    update = models.StateMachine.update_from_cloudformation_json

    def configured(machine: Any, properties: dict[str, Any], created: bool) -> Any:
        if created:
            machine.type = properties.get("StateMachineType", "STANDARD")
        logging = logging_configuration_from_template(properties)
        if logging is not None:
            machine.loggingConfiguration = logging
        return machine

    def create_configured(cls: Any, name: str, template: Any, *args: Any, **kwargs: Any) -> Any:
        machine = create(name, template, *args, **kwargs)
        return configured(machine, template.get("Properties", {}), created=True)

    def update_configured(
        cls: Any, original: Any, name: str, template: Any, *a: Any, **k: Any
    ) -> Any:
        machine = update(original, name, template, *a, **k)
        # A new type replaces the machine on AWS; moto's update keeps it unless renamed.
        return configured(machine, template.get("Properties", {}), machine is not original)

    models.StateMachine.create_from_cloudformation_json = classmethod(create_configured)  # type: ignore[assignment]
    models.StateMachine.update_from_cloudformation_json = classmethod(update_configured)  # type: ignore[assignment]


class ExecutionLog:
    """One execution's history records, put into its state machine's log group as
    Step Functions does (a stream per execution, `states/MACHINE/MINUTE/ID`)."""

    def __init__(
        self, execution_arn: str, machine_name: str, logging: dict[str, Any], started: Any
    ) -> None:
        from moto.logs.models import logs_backends
        from moto.stepfunctions.parser.asl.eval.event.logging import CloudWatchLoggingConfiguration

        account, region, group = CloudWatchLoggingConfiguration.extract_log_arn_parts_from(
            logging  # type: ignore[arg-type]
        ) or ("", "", "")
        self.execution_arn = execution_arn
        self.level = logging.get("level", "OFF")
        self.include_data = bool(logging.get("includeExecutionData", False))
        # moto's event manager reads this one setting from the session's configuration.
        self.configuration = SimpleNamespace(include_execution_data=self.include_data)
        self.group = group
        self.stream = f"states/{machine_name}/{started:%Y-%m-%d-%H-%M}/{uuid.uuid4().hex[:8]}"
        self.logs = logs_backends[account][region] if group else None

    def log_level_filter(self, history_event_type: Any) -> bool:
        from moto.stepfunctions.parser.asl.eval.event.logging import is_logging_enabled_for

        level, event_type = self.level, history_event_type
        return bool(is_logging_enabled_for(log_level=level, history_event_type=event_type))

    def publish_history_log(self, history_log: dict[str, Any]) -> None:
        if self.logs is None:
            return
        timestamp = history_log["event_timestamp"]  # moto hands it over as ISO 8601 text
        if isinstance(timestamp, str):
            timestamp = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        milliseconds = int(timestamp.timestamp() * 1000)
        details = dict(history_log.get("details") or {})
        if not self.include_data:
            for key in EXECUTION_DATA_KEYS:
                details.pop(key, None)
        record = {
            "id": history_log["id"],
            "type": getattr(history_log["type"], "value", history_log["type"]),
            "details": details,
            "previous_event_id": history_log["previous_event_id"],
            "event_timestamp": str(milliseconds),
            "execution_arn": self.execution_arn,
            "redrive_count": "0",
        }
        event = {"timestamp": milliseconds, "message": json.dumps(record, default=str)}
        with _logs_lock:
            if self.group not in self.logs.groups:
                return  # no such group: nothing is delivered, the execution runs on
            group = self.logs.groups[self.group]
            if self.stream not in group.streams:
                self.logs.create_log_stream(self.group, self.stream)
            self.logs.put_log_events(self.group, self.stream, [event])


def logging_session(execution_arn: str, machine: Any, started: Any) -> Any:
    """What moto's event manager publishes history records to, or None without logging."""
    logging = getattr(machine, "loggingConfiguration", None) or {}
    if logging.get("level", "OFF") == "OFF" or not logging.get("destinations"):
        return None
    session = ExecutionLog(execution_arn, machine.name, logging, started)
    return session if session.logs is not None else None


def patch_executions_logged() -> None:
    """Every execution of a machine with a logging configuration writes its history events
    to the log group (moto's parser passed no logging session to any execution)."""
    from moto.stepfunctions.parser.backend.execution import Execution

    start = Execution.start

    def start_logged(self: Execution) -> None:
        if self._cloud_watch_logging_session is None:
            self._cloud_watch_logging_session = logging_session(
                self.exec_arn, self.state_machine, self.start_date
            )
        start(self)

    Execution.start = start_logged  # type: ignore[method-assign]


def cap_at_five_minutes(worker: Any) -> None:
    """The execution times out at five minutes, or at the definition's own TimeoutSeconds
    if shorter (the parsed program is shared between executions: change a copy)."""
    from moto.stepfunctions.parser.asl.component.common.timeouts.timeout import TimeoutSeconds

    entrypoint = worker._get_evaluation_entrypoint

    def capped() -> Any:
        program = copy.copy(entrypoint())
        own = getattr(program.timeout_seconds, "timeout_seconds", None)
        if not isinstance(own, int) or own > MAX_DURATION_SECONDS:
            program.timeout_seconds = TimeoutSeconds(timeout_seconds=MAX_DURATION_SECONDS)
        return program

    worker._get_evaluation_entrypoint = capped


def start_express(
    backend: Any, machine: Any, name: str | None, execution_input: str, sync: bool
) -> Any:
    """Start an Express execution: not idempotent, not listed, its history only logged."""
    from moto.stepfunctions.parser.api import InvalidExecutionInput
    from moto.stepfunctions.parser.backend.execution import Execution, SyncExecution

    try:
        json.loads(execution_input)
    except ValueError as error:
        raise InvalidExecutionInput(str(error)) from error
    name = name or str(uuid.uuid4())
    arn = (
        f"arn:{backend.partition}:states:{backend.region_name}:{backend.account_id}:express:"
        f"{machine.name}:{name}:{uuid.uuid4()}"
    )
    snapshot = copy.deepcopy(
        machine, {id(machine.executions): [], id(machine.backend): machine.backend}
    )
    kind = SyncExecution if sync else Execution
    execution = kind(
        name=name,
        sm_type=snapshot.sm_type,
        role_arn=snapshot.roleArn,
        exec_arn=arn,
        account_id=backend.account_id,
        region_name=backend.region_name,
        state_machine=snapshot,
        start_date=datetime.datetime.now(tz=datetime.UTC),
        cloud_watch_logging_session=None,
        input_data=execution_input,
        activity_store={},
    )
    worker_of = execution._get_start_execution_worker

    def capped_worker() -> Any:
        worker = worker_of()
        cap_at_five_minutes(worker)
        return worker

    execution._get_start_execution_worker = capped_worker  # type: ignore[method-assign]
    execution.start()
    return execution


def patch_express_starts() -> None:
    """StartExecution, the one wrapper of moto's: an unnamed execution gets a UUID, and
    on an EXPRESS machine it starts an Express execution (above).

    Gap: StartExecution's `name` is optional and AWS generates a UUID; moto's parser
    backend (the one that runs executions) passed the missing name on as `None`, so the
    second unnamed execution of a state machine failed with "Execution Already Exists:
    ...:None". That broke `sls invoke stepf` (it sends no name) from its second run, and
    an EventBridge target (which moto starts with the name "").
    """
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    start_execution = StepFunctionsParserBackend.start_execution

    def start(
        self: StepFunctionsParserBackend,
        state_machine_arn: str,
        name: str | None = None,
        execution_input: str | None = None,
        trace_header: str | None = None,
    ) -> Any:
        name = name or str(uuid.uuid4())
        machine = self.describe_state_machine(state_machine_arn)
        if is_express(machine):
            return start_express(self, machine, name, execution_input or "{}", sync=False)
        return start_execution(self, state_machine_arn, name, execution_input, trace_header)  # type: ignore[arg-type]

    StepFunctionsParserBackend.start_execution = start  # type: ignore[method-assign]


def patch_express_history_not_kept() -> None:
    """DescribeExecution and GetExecutionHistory refuse an Express execution's ARN, and
    ListExecutions an Express machine, as AWS does."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    type_not_supported, invalid_arn = _errors()

    def refusing_express_arns(method: Any) -> Any:
        def refuse(self: Any, execution_arn: str, *args: Any, **kwargs: Any) -> Any:
            if is_express_arn(execution_arn):
                raise invalid_arn("Invalid Arn: 'Resource type not valid in this context: express'")
            return method(self, execution_arn, *args, **kwargs)

        return refuse

    for name in ("describe_execution", "get_execution_history"):
        setattr(
            StepFunctionsParserBackend,
            name,
            refusing_express_arns(getattr(StepFunctionsParserBackend, name)),
        )
    list_executions = StepFunctionsParserBackend.list_executions

    def list_standard_executions(
        self: Any, state_machine_arn: str, *args: Any, **kwargs: Any
    ) -> Any:
        if is_express(self.describe_state_machine(state_machine_arn)):
            raise type_not_supported(NOT_EXPRESS)
        return list_executions(self, state_machine_arn, *args, **kwargs)

    StepFunctionsParserBackend.list_executions = list_standard_executions  # type: ignore[method-assign,assignment]


def sync_result(execution: Any) -> dict[str, Any]:
    """StartSyncExecution's answer, with the billing details AWS reports."""
    stopped = execution.stop_date or datetime.datetime.now(tz=datetime.UTC)
    milliseconds = (stopped - execution.start_date).total_seconds() * 1000
    status = execution.sync_execution_status
    result: dict[str, Any] = {
        "executionArn": execution.exec_arn,
        "stateMachineArn": execution.state_machine.arn,
        "name": execution.name,
        "startDate": execution.start_date,
        "stopDate": stopped,
        "status": getattr(status, "value", status),
        "input": json.dumps(execution.input_data, separators=(",", ":")),
        "inputDetails": {"included": True},
        "billingDetails": {
            "billedMemoryUsedInMB": BILLED_MEMORY_MB,
            "billedDurationInMilliseconds": BILLED_DURATION_UNIT_MS
            * max(1, math.ceil(milliseconds / BILLED_DURATION_UNIT_MS)),
        },
    }
    if result["status"] == "SUCCEEDED":
        result["output"] = json.dumps(execution.output, separators=(",", ":"))
        result["outputDetails"] = {"included": True}
    if execution.error is not None:
        result["error"] = execution.error
    if execution.cause is not None:
        result["cause"] = execution.cause
    return result


def patch_start_sync_execution() -> None:
    """StartSyncExecution: runs an Express execution to its end in the request."""
    from moto.core.responses import ActionResult
    from moto.stepfunctions.responses import StepFunctionResponse

    from local_aws.stepfunctions import check_execution_input

    type_not_supported, _ = _errors()

    def start_sync_execution(self: StepFunctionResponse) -> ActionResult:
        backend = self.stepfunction_backend
        machine = backend.describe_state_machine(self._get_param("stateMachineArn"))
        if not is_express(machine):
            raise type_not_supported(NOT_EXPRESS)
        execution_input = self._get_param("input", if_none="{}")
        check_execution_input(execution_input)
        execution = start_express(
            backend, machine, self._get_param("name"), execution_input, sync=True
        )
        return ActionResult(sync_result(execution))

    StepFunctionResponse.start_sync_execution = start_sync_execution  # type: ignore[attr-defined]
