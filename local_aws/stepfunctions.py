"""Step Functions in the local AWS: where moto's ASL interpreter is laxer than AWS, one
patch per gap (listed and installed by local_aws/moto_patches.py).

moto's interpreter (moto/stepfunctions/parser, derived from LocalStack's) already fails a
task or state whose output is over 256 KiB with `States.DataLimitExceeded`. What it got
wrong is who may catch that, and it started executions of any input size. Its EventBridge
task turned a refused PutEvents into States.Runtime instead of a task failure the state
machine can catch.
"""

from __future__ import annotations

from typing import Any

# Step Functions' quota on a task's, state's or execution's input or output: 256 KiB of
# UTF-8 (the same number StartExecution's API reference gives as `input`'s maximum length).
MAX_PAYLOAD_BYTES = 256 * 1024


def patch_states_all_leaves_terminal_errors() -> None:
    """`States.ALL` matched every error, so a Catch on it turned `States.DataLimitExceeded`
    into an ordinary failure branch. On AWS, States.ALL "can't catch the
    States.DataLimitExceeded terminal error or Runtime error types" (Step Functions
    developer guide, Error names): the execution fails with that error. (A Retry or Catch
    that names the error itself is left as moto has it: this workflow names neither.)"""
    from moto.stepfunctions.parser.asl.component.common.error_name.error_equals_decl import (
        ErrorEqualsDecl,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.eval.environment import Environment

    terminal = [
        StatesErrorName(typ=StatesErrorNameType.StatesStatesDataLimitExceeded),
        StatesErrorName(typ=StatesErrorNameType.StatesRuntime),
    ]
    states_all = StatesErrorName(typ=StatesErrorNameType.StatesALL)
    evaluate = ErrorEqualsDecl._eval_body

    def eval_body(self: ErrorEqualsDecl, env: Environment) -> None:
        error_name: Any = env.stack[-1]
        if states_all in self.error_names and error_name in terminal:
            env.stack.pop()
            env.stack.append(False)
            return
        evaluate(self, env)

    ErrorEqualsDecl._eval_body = eval_body  # type: ignore[method-assign]


def check_execution_input(execution_input: str | None) -> None:
    """AWS refuses an execution input over 256 KiB with ValidationException (StartExecution
    and StartSyncExecution alike), before an execution exists."""
    from moto.stepfunctions.exceptions import ValidationException

    if execution_input and len(str(execution_input).encode()) > MAX_PAYLOAD_BYTES:
        raise ValidationException(
            "1 validation error detected: Value at 'input' failed to satisfy "
            f"constraint: Member must have length less than or equal to {MAX_PAYLOAD_BYTES}"
        )


def patch_execution_input_size_checked() -> None:
    """StartExecution accepted any input (check_execution_input)."""
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    start_execution = StepFunctionsParserBackend.start_execution

    def start_checked_execution(
        self: StepFunctionsParserBackend, state_machine_arn: str, *args: Any, **kwargs: Any
    ) -> Any:
        check_execution_input(kwargs.get("execution_input", args[1] if len(args) > 1 else None))
        return start_execution(self, state_machine_arn, *args, **kwargs)

    StepFunctionsParserBackend.start_execution = start_checked_execution  # type: ignore[method-assign]


def patch_eventbridge_task_errors_named() -> None:
    """An `events:putEvents` task whose call EventBridge refuses (AccessDenied, a
    ValidationException) fails on AWS with `EventBridge.<error code>`, as DynamoDB's task
    fails with `DynamoDB.<error code>`: a TaskFailed a Catch on States.ALL catches. moto
    named it States.Runtime, a terminal error no Catch sees."""
    from botocore.exceptions import ClientError
    from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
        CustomErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
        state_task_service_events,
    )
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails

    StateTaskServiceEvents = state_task_service_events.StateTaskServiceEvents
    from_error = StateTaskServiceEvents._from_error

    def from_client_error(self: Any, env: Environment, ex: Exception) -> Any:
        if not isinstance(ex, ClientError):
            return from_error(self, env, ex)
        error = f"EventBridge.{ex.response['Error']['Code']}"
        return FailureEvent(
            env=env,
            error_name=CustomErrorName(error),
            event_type=HistoryEventType.TaskFailed,
            event_details=EventDetails(  # type: ignore[typeddict-item]
                taskFailedEventDetails=TaskFailedEventDetails(
                    error=error,
                    cause=str(ex.response["Error"].get("Message") or ex),
                    resource=self._get_sfn_resource(),
                    resourceType=self._get_sfn_resource_type(),
                )
            ),
        )

    StateTaskServiceEvents._from_error = from_client_error  # type: ignore[method-assign]
