"""The speed changes to moto (local_aws/moto_speedups.py): executions share one parsed
program (reuse_parsed_state_machines) only when nothing in it is set while it runs."""

from __future__ import annotations

import json

import pytest

from local_aws.moto_speedups import components_of, prepare_for_sharing

TASK_WITH_RETRY = {
    "Type": "Task",
    "Resource": "arn:aws:states:::lambda:invoke",
    "Parameters": {"FunctionName": "arn:aws:lambda:us-east-1:123456789012:function:f"},
    "Retry": [{"ErrorEquals": ["States.ALL"], "MaxAttempts": 2, "BackoffRate": 2}],
    "End": True,
}


def parse(states: dict[str, object]) -> object:
    from moto.stepfunctions.parser.asl.parse.asl_parser import AmazonStateLanguageParser

    definition = {"StartAt": next(iter(states)), "States": states}
    return AmazonStateLanguageParser.parse(json.dumps(definition))[0]


def eval_components(program: object) -> list[object]:
    from moto.stepfunctions.parser.asl.component.eval_component import EvalComponent

    return [item for item in components_of(program) if isinstance(item, EvalComponent)]


def test_a_program_of_tasks_and_choices_is_shared_with_every_heap_key_set_before() -> None:
    """The retriers keep their attempt counts in each execution's env.heap under the
    component's heap_key; that key is set lazily, so a shared program must have it set
    before two executions race to set different ones."""
    program = parse(
        {
            "Pick": {
                "Type": "Choice",
                "Choices": [{"Variable": "$.a", "BooleanEquals": True, "Next": "Call"}],
                "Default": "Done",
            },
            "Call": TASK_WITH_RETRY,
            "Done": {"Type": "Succeed"},
        }
    )
    components = eval_components(program)
    unset = [c for c in components if c._EvalComponent__heap_key is None]  # type: ignore[attr-defined]
    assert unset, "a freshly parsed program has lazy heap keys"
    assert prepare_for_sharing(program) is True
    keys = [c._EvalComponent__heap_key for c in components]  # type: ignore[attr-defined]
    assert all(keys) and len(set(keys)) == len(keys)


@pytest.mark.parametrize("kind", ["Map", "Parallel"])
def test_a_program_with_a_map_or_parallel_state_gets_a_copy_per_execution(kind: str) -> None:
    inner = {"StartAt": "Call", "States": {"Call": TASK_WITH_RETRY}}
    state: dict[str, object] = {"Type": kind, "End": True}
    state.update({"ItemProcessor": inner} if kind == "Map" else {"Branches": [inner]})
    assert prepare_for_sharing(parse({"Fan": state})) is False
