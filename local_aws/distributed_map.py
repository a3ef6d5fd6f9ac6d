"""Step Functions' Distributed Map in the local AWS: the subset the backfill
(statemachine/backfill.asl.yml) uses, with AWS's limits and error names.

moto's interpreter parses a Distributed Map but cannot run ours: its grammar refuses
`ItemBatcher`, `ExecutionType: EXPRESS` and an integer `ToleratedFailurePercentage`; its
S3 listing reads one page (and fails on an empty prefix) without the execution role; its
ResultWriter writes a manifest naming no result files; its child failures never fail the
Map. So, two hooks:

- `patch_distributed_map_definitions`: before moto parses a definition, each Map in
  DISTRIBUTED mode is checked against AWS's rules (InvalidDefinition otherwise), stored
  here under a token, and handed to moto without the fields its grammar refuses (the
  token rides in the ItemProcessor's Comment);
- `patch_distributed_map_runs`: moto's map run of such a Map is replaced by `run_map`
  (local_aws/distributed_map_run.py: the S3 listing with the role, batches, the
  tolerated-failure thresholds, AWS's ResultWriter files), each child its ItemProcessor
  run through moto's own interpreter.

The subset: ItemReader over an S3 prefix (`arn:aws:states:::s3:listObjectsV2`), ItemBatcher
(MaxItemsPerBatch, MaxInputBytesPerBatch, BatchInput with `.$` paths), MaxConcurrency,
ToleratedFailurePercentage/Count, ResultWriter (`arn:aws:states:::s3:putObject`), the
ItemProcessor in EXPRESS or STANDARD. Not emulated (docs/local-mode.md): ItemSelector,
ReaderConfig, the child executions' own ARNs in ListExecutions, Express's at-least-once
re-runs and its 5-minute duration limit, redrive.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

from local_aws.distributed_map_run import (
    MAX_BATCH_INPUT_BYTES,
    MAX_CONCURRENCY,
    MapRunFailed,
    MapSpec,
    run_map,
)

ITEM_READER_RESOURCE = "arn:aws:states:::s3:listObjectsV2"
RESULT_WRITER_RESOURCE = "arn:aws:states:::s3:putObject"
EXECUTION_TYPES = ("EXPRESS", "STANDARD")
TOKEN_PREFIX = "local_aws.distributed_map:"


class InvalidMapDefinition(ValueError):
    """A Distributed Map AWS would refuse at CreateStateMachine (InvalidDefinition)."""


_SPECS: dict[str, MapSpec] = {}
_SPECS_LOCK = threading.Lock()


def is_distributed(state: dict[str, Any]) -> bool:
    processor = state.get("ItemProcessor") if state.get("Type") == "Map" else None
    config = processor.get("ProcessorConfig", {}) if isinstance(processor, dict) else {}
    return isinstance(config, dict) and config.get("Mode") == "DISTRIBUTED"


def check(state: dict[str, Any]) -> None:
    """AWS's rules for the fields this emulator takes over; InvalidMapDefinition names
    the first one broken."""
    config = state["ItemProcessor"]["ProcessorConfig"]
    if config.get("ExecutionType") not in EXECUTION_TYPES:
        raise InvalidMapDefinition(
            "a Map in DISTRIBUTED mode needs ProcessorConfig.ExecutionType EXPRESS or STANDARD"
        )
    if "ItemSelector" in state or "ReaderConfig" in state.get("ItemReader", {}):
        raise InvalidMapDefinition(
            "the local AWS runs no ItemSelector or ReaderConfig in a Distributed Map"
        )
    reader = state.get("ItemReader")
    if reader is not None and reader.get("Resource") != ITEM_READER_RESOURCE:
        raise InvalidMapDefinition(f"the local AWS reads items only with {ITEM_READER_RESOURCE}")
    concurrency = state.get("MaxConcurrency", 0)
    if not isinstance(concurrency, int) or not 0 <= concurrency <= MAX_CONCURRENCY:
        raise InvalidMapDefinition(f"MaxConcurrency must be an integer from 0 to {MAX_CONCURRENCY}")
    percentage = state.get("ToleratedFailurePercentage", 0)
    if not isinstance(percentage, int | float) or not 0 <= percentage <= 100:
        raise InvalidMapDefinition("ToleratedFailurePercentage must be a number from 0 to 100")
    count = state.get("ToleratedFailureCount", 0)
    if not isinstance(count, int) or count < 0:
        raise InvalidMapDefinition("ToleratedFailureCount must be a non-negative integer")
    batcher = state.get("ItemBatcher")
    if batcher is not None:
        items, size = batcher.get("MaxItemsPerBatch"), batcher.get("MaxInputBytesPerBatch")
        if items is None and size is None:
            raise InvalidMapDefinition(
                "ItemBatcher needs MaxItemsPerBatch or MaxInputBytesPerBatch (or both)"
            )
        if items is not None and (not isinstance(items, int) or items < 1):
            raise InvalidMapDefinition("MaxItemsPerBatch must be a positive integer")
        if size is not None and (
            not isinstance(size, int) or not 1 <= size <= MAX_BATCH_INPUT_BYTES
        ):
            raise InvalidMapDefinition(
                f"MaxInputBytesPerBatch must be an integer from 1 to {MAX_BATCH_INPUT_BYTES}"
            )
    writer = state.get("ResultWriter")
    if writer is not None and writer.get("Resource") != RESULT_WRITER_RESOURCE:
        raise InvalidMapDefinition(
            f"the local AWS writes results only with {RESULT_WRITER_RESOURCE}"
        )


def for_moto(definition: str) -> str:
    """The definition with each Distributed Map stored here and reduced to what moto's
    grammar parses; any other definition unchanged."""
    try:
        document = json.loads(definition)
    except ValueError:
        return definition  # moto's own parser names the syntax error
    if not isinstance(document, dict) or not _reduce_states(document):
        return definition
    return json.dumps(document)


def _reduce_states(machine: dict[str, Any]) -> bool:
    changed = False
    for state in (machine.get("States") or {}).values():
        if not isinstance(state, dict):
            continue
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if isinstance(processor, dict) and _reduce_states(processor):
            changed = True
        if not is_distributed(state):
            continue
        check(state)
        # Named by its content: parsing the same definition again stores nothing new.
        text = json.dumps(state, sort_keys=True)
        token = f"{TOKEN_PREFIX}{hashlib.sha256(text.encode()).hexdigest()}"
        with _SPECS_LOCK:
            _SPECS.setdefault(token, MapSpec(json.loads(text)))
        for name in ("ItemBatcher", "ResultWriter", "ToleratedFailurePercentage",
                     "ToleratedFailureCount"):  # fmt: skip
            state.pop(name, None)
        state["ItemProcessor"]["ProcessorConfig"]["ExecutionType"] = "STANDARD"
        state["ItemProcessor"]["Comment"] = token
        changed = True
    return changed


# --- the hooks into moto -------------------------------------------------------------


def patch_distributed_map_definitions() -> None:
    """Every definition moto parses (CreateStateMachine's check, each execution's start)
    goes through `for_moto` first; a broken Distributed Map is InvalidDefinition, under
    that error code (moto's parser backend answered an empty code for every
    InvalidDefinition)."""
    from moto.core.exceptions import AWSError
    from moto.stepfunctions.parser.api import InvalidDefinition
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser
    from moto.stepfunctions.parser.models import StepFunctionsParserBackend

    class InvalidDefinitionError(AWSError):
        TYPE = "InvalidDefinition"
        STATUS = 400

    validate = StepFunctionsParserBackend._validate_definition

    def validate_named(definition: str) -> None:
        try:
            validate(definition)
        except InvalidDefinition as invalid:
            raise InvalidDefinitionError(str(invalid.message)) from None

    StepFunctionsParserBackend._validate_definition = staticmethod(validate_named)  # type: ignore[method-assign]
    parse = AmazonStateLanguageParser.parse

    def parse_with_distributed_maps(definition: str) -> Any:
        try:
            reduced = for_moto(definition)
        except InvalidMapDefinition as invalid:
            # CreateStateMachine turns a parser exception into InvalidDefinition.
            raise ValueError(f"Invalid Distributed Map: {invalid}") from None
        return parse(reduced)

    AmazonStateLanguageParser.parse = staticmethod(parse_with_distributed_maps)  # type: ignore[method-assign]


def patch_distributed_map_runs() -> None:
    """A Distributed Map stored by `for_moto` runs through `run_map`; a child is its
    ItemProcessor run by moto's interpreter in a frame of its own."""
    from moto.stepfunctions.parser.api import HistoryEventType, MapRunFailedEventDetails
    from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
        CustomErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
        FailureEvent,
        FailureEventException,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
        StatesErrorName,
    )
    from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
        StatesErrorNameType,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_map.iteration import (
        distributed_iteration_component as component,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task import (
        lambda_eval_utils,
    )
    from moto.stepfunctions.parser.asl.component.state.exec.state_task.credentials import (
        StateCredentials,
    )
    from moto.stepfunctions.parser.asl.eval.environment import Environment
    from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
    from moto.stepfunctions.parser.asl.eval.program_state import ProgramEnded, ProgramError
    from moto.stepfunctions.parser.asl.eval.states import ItemData, MapData

    from local_aws import iam

    Component = component.DistributedIterationComponent
    eval_body = Component._eval_body

    def run_distributed(self: Any, env: Environment) -> None:
        comment = getattr(getattr(self, "_comment", None), "comment", "")
        with _SPECS_LOCK:
            spec = _SPECS.get(comment)
        if spec is None:
            eval_body(self, env)
            return
        eval_input = env.stack.pop()
        record = eval_input.map_run_record
        context: dict[str, Any] = dict(env.states.context_object.context_object_data)
        program = self._get_iteration_program()
        # The role's clients, as the state machine's own tasks get them (local_aws.iam).
        credentials = StateCredentials(role_arn=env.aws_execution_details.role_arn)
        credentials.source_arn = context["StateMachine"]["Id"]  # type: ignore[attr-defined]
        s3 = lambda_eval_utils.boto_client_for(env.aws_execution_details.region, "s3", credentials)

        def run_child(child_input: Any) -> Any:
            frame = env.open_inner_frame()
            try:
                frame.states.context_object.context_object_data["Map"] = MapData(
                    Item=ItemData(Index=0, Value=child_input)
                )
                frame.states.reset(child_input)
                program.eval(frame)
                state = frame.program_state()
                if isinstance(state, ProgramError):
                    failed: dict[str, Any] = dict(state.error or {})
                    raise MapRunFailed(str(failed.get("error", "")), str(failed.get("cause", "")))
                if not isinstance(state, ProgramEnded):
                    raise MapRunFailed("States.Runtime", f"the child ended {type(state).__name__}")
                return frame.states.get_input()
            except FailureEventException as failure:
                error, cause = failure.extract_error_cause_pair() or ("States.Runtime", "")
                raise MapRunFailed(str(error), str(cause)) from None
            finally:
                env.delete_frame(frame)

        def authorize(action: str, resource: str) -> None:
            role = env.aws_execution_details.role_arn
            try:
                iam.authorize(iam.Request(role, action, resource, {}))
            except iam.AccessDenied as denied:
                print(f"local AWS: AccessDenied: {denied}", flush=True)
                raise MapRunFailed("States.Runtime", f"AccessDeniedException: {denied}") from None

        def counted(status: str, items: int) -> None:
            getattr(record.item_counter, status).count(items)
            getattr(record.execution_counter, status).count()

        try:
            output = run_map(
                spec,
                env.states.get_input(),
                context,
                record.map_run_arn,
                s3,
                run_child,
                env.is_running,
                counted,
                authorize,
            )
        except MapRunFailed as failure:
            details = MapRunFailedEventDetails(error=failure.error, cause=failure.cause)
            env.event_manager.add_event(
                context=env.event_history_context,
                event_type=HistoryEventType.MapRunFailed,
                event_details=EventDetails(mapRunFailedEventDetails=details),  # type: ignore[typeddict-item]
            )
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=(
                        StatesErrorName(typ=StatesErrorNameType.from_name(failure.error))
                        if failure.error.startswith("States.")
                        else CustomErrorName(failure.error)
                    ),
                    event_type=HistoryEventType.MapRunFailed,
                    event_details=EventDetails(mapRunFailedEventDetails=details),  # type: ignore[typeddict-item]
                )
            ) from None
        env.event_manager.add_event(
            context=env.event_history_context, event_type=HistoryEventType.MapRunSucceeded
        )
        env.stack.append(output)

    Component._eval_body = run_distributed  # type: ignore[method-assign]
