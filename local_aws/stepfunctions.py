"""Step Functions in the local AWS: where moto's ASL interpreter is laxer than AWS, one
patch per gap (registered in local_aws.server.EMULATOR_PATCHES).

moto's interpreter (moto/stepfunctions/parser, derived from LocalStack's) already fails a
task or state whose output is over 256 KiB with `States.DataLimitExceeded`. What it got
wrong is who may catch that.
"""

from __future__ import annotations

from typing import Any


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


PATCHES = (patch_states_all_leaves_terminal_errors,)
