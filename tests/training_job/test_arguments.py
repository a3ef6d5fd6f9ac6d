"""training_job/arguments.py: bounded numbers for every command's options."""

from __future__ import annotations

import argparse

import pytest

from local_aws.__main__ import main as local_aws_main
from local_aws.endpoint import config as endpoint_config
from training_job.__main__ import main
from training_job.arguments import bounded
from training_job.demo.__main__ import main as demo_main


def parser_with(kind: type, *bounds: float | None, **open_ends: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cmd", exit_on_error=False)
    parser.add_argument("--n", type=bounded(kind, "a number as asked", *bounds, **open_ends))
    return parser


@pytest.mark.parametrize(
    ("kind", "bounds", "open_ends", "text", "value"),
    [
        (int, (1, None), {}, "1", 1),
        (int, (1, 50), {}, "50", 50),
        (int, (0, 3600), {}, " 7 ", 7),
        (float, (0, 1), {}, "0", 0.0),
        (float, (0, None), {"above": True}, "0.001", 0.001),
        (float, (0, 1), {"above": True, "below": True}, "0.5", 0.5),
    ],
)
def test_a_number_within_its_bounds_is_its_value(
    kind: type, bounds: tuple, open_ends: dict[str, bool], text: str, value: float
) -> None:
    assert parser_with(kind, *bounds, **open_ends).parse_args(["--n", text]).n == value


@pytest.mark.parametrize(
    ("kind", "bounds", "open_ends", "text"),
    [
        (int, (1, None), {}, "0"),
        (int, (1, 50), {}, "51"),
        (int, (1, 50), {}, "2.5"),
        (int, (1, None), {}, "abc"),
        (int, (1, None), {}, ""),
        (int, (1, None), {}, "9" * 10_000),
        (float, (0, None), {"above": True}, "0"),
        (float, (0, 1), {"above": True, "below": True}, "1"),
        (float, (0, None), {}, "nan"),
        (float, (0, None), {}, "inf"),
        (float, (0, None), {}, "1e400"),
        (float, (0, None), {}, "-0.1"),
    ],
)
def test_anything_else_is_refused_with_what_was_expected(
    kind: type, bounds: tuple, open_ends: dict[str, bool], text: str
) -> None:
    with pytest.raises(argparse.ArgumentError) as refused:
        parser_with(kind, *bounds, **open_ends).parse_args(["--n", text])
    message = str(refused.value)
    assert "is not a number as asked" in message
    assert len(message) < 200  # a hostile text is cut, not repeated


@pytest.mark.parametrize(
    ("argv", "complaint"),
    [
        # Issue 24 item 9: each was accepted, and failed later (a traceback, a 300 s hang,
        # a job that failed after it was created and billed, a -1 scaling policy).
        (["deploy", "--mode", "local", "--port", "-1"], "'-1' is not a port from 1 to 65535"),
        (["deploy", "--mode", "local", "--port", "70000"], "is not a port from 1 to 65535"),
        (["deploy", "--mode", "local", "--port", "0"], "'0' is not a port from 1 to 65535"),
        (["deploy", "--mode", "local", "--max-batch-wait-ms", "nan"], "is not a wait from 0"),
        (["deploy", "--mode", "local", "--max-batch-wait-ms", "-5"], "is not a wait from 0"),
        (["deploy", "--mode", "local", "--torch-threads", "-3"], "is not a number of threads"),
        (["deploy", "--mode", "sagemaker", "--target-invocations", "-1"],
         "'-1' is not a number of invocations per instance per minute"),
        (["train", "--epochs", "0"], "'0' is not a positive integer"),
        (["train", "--epochs", "-1"], "'-1' is not a positive integer"),
        (["train", "--batch-size", "-4"], "'-4' is not a positive integer"),
        (["train", "--learning-rate", "nan"], "is not a learning rate above 0"),
        (["train", "--learning-rate", "-0.1"], "is not a learning rate above 0"),
        (["train", "--seed", "-1"], "is not a seed"),
        (["monitor", "versions", "--bucket", "b", "--endpoint-name", "e", "--production",
          "v1", "--shadow", "v2", "--minutes", "0"], "is not a number of minutes"),
        (["monitor", "versions", "--bucket", "b", "--endpoint-name", "e", "--production",
          "v1", "--shadow", "v2", "--min-agreement", "nan"], "is not a share"),
        (["evaluate", "--concurrency", "0"], "'0' is not a number of executions from 1 to 256"),
        (["evaluate", "--timeout", "-1"], "'-1' is not a positive number"),
        (["evaluate", "--timeout", "nan"], "'nan' is not a positive number"),
        (["evaluate", "--timeout", "inf"], "'inf' is not a positive number"),
        (["evaluate", "--concurrency", "257"], "is not a number of executions from 1 to 256"),
        (["rollout", "--min-compared", "-1"], "is not a positive integer"),
    ],
)  # fmt: skip
def test_a_numeric_option_out_of_its_range_is_refused_before_anything_runs(
    argv: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """AWS refuses some of these only late, or never: SageMaker's Image Classification
    Hyperparameters page takes epochs and mini_batch_size as positive integers and
    learning_rate as a float in [0, 1], checked once the job runs (created, billed);
    Application Auto Scaling's TargetTrackingScalingPolicyConfiguration takes any
    TargetValue from -2^360 to 2^360, so a -1 target policy was created. Each is refused
    here, by the parser, before any request."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, "--region", "us-east-1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert complaint in err, err
    assert "Traceback" not in err


def test_the_endpoint_servers_own_options_are_the_same_numbers() -> None:
    parser = argparse.ArgumentParser(prog="endpoint", exit_on_error=False)
    endpoint_config.add_arguments(parser)
    for argv in (["--port", "0"], ["--torch-threads", "-3"], ["--max-batch-wait-ms", "inf"]):
        with pytest.raises(argparse.ArgumentError):
            parser.parse_args(argv)
    accepted = parser.parse_args(["--torch-threads", "0", "--max-batch-wait-ms", "0"])
    assert (accepted.torch_threads, accepted.max_batch_wait_ms) == (0, 0.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve", "--port", "70000"],
        ["up", "--port", "0"],
        ["up", "--endpoint-port", "-1"],
    ],
)
def test_the_local_aws_commands_take_the_same_numbers(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        local_aws_main(argv)
    assert exited.value.code == 2
    assert "is not a" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--port", "abc"], ["--epochs", "0"]])
def test_the_demo_takes_the_same_numbers(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        demo_main(argv)
    assert exited.value.code == 2
    assert "is not a" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["deploy", "--mode", "local", "--bucket", "b"],
        ["rollout", "--bucket", "b", "--model-version", "2"],
        ["models", "list"],
    ],
    ids=["deploy", "rollout", "models"],
)
@pytest.mark.parametrize("name", ["scones_endpoint", "-scones", "e" * 64, "scones\n", ""])
def test_every_endpoint_name_option_refuses_what_sagemaker_refuses(
    argv: list[str], name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """One check (training_job.arguments.endpoint_name, SageMaker's name rule) for every
    `--endpoint-name`: a usage error (exit 2) before any AWS call, a trailing newline too."""
    with pytest.raises(SystemExit) as exited:
        main([*argv, f"--endpoint-name={name}", "--region", "us-east-1"])
    assert exited.value.code == 2
    assert "is not a SageMaker endpoint name" in capsys.readouterr().err
