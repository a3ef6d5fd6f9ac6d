"""The version comparison's verdicts (training_job/monitor/versions.py), on summaries; the
comparison of real captures: tests/training_job/serving/test_rollout.py."""

from __future__ import annotations

from training_job.monitor.versions import Comparison, VariantAnswers


def _answers(variant: str, classes: dict[int, int], doubtful: float = 0.0) -> VariantAnswers:
    return VariantAnswers(variant, sum(classes.values()), 0.97, doubtful, classes)


def test_paired_answers_are_judged_by_their_agreement() -> None:
    production, shadow = _answers("v1", {0: 50, 1: 50}), _answers("v2", {0: 50, 1: 50})
    assert Comparison(production, shadow, paired=100, agreed=95).problem(0.9, 20) is None
    problem = Comparison(production, shadow, paired=100, agreed=60).problem(0.9, 20)
    assert problem is not None and "agrees with v1 on 0.600" in problem


def test_unpaired_answers_are_judged_by_the_bound_their_class_mixes_give() -> None:
    production = _answers("v1", {0: 50, 1: 50})
    assert Comparison(production, _answers("v2", {0: 48, 1: 52}), 0, 0).problem(0.9, 20) is None
    constant = Comparison(production, _answers("v2", {0: 100}), 0, 0)
    assert constant.class_mix_distance() == 0.5
    problem = constant.problem(0.9, 20)
    assert problem is not None and "at most 0.500" in problem


def test_too_little_traffic_or_a_shadow_that_answers_less_stops_the_rollout() -> None:
    few = Comparison(_answers("v1", {0: 3}), _answers("v2", {0: 3}), 3, 3).problem(0.9, 20)
    assert few is not None and "too little traffic" in few
    erroring = Comparison(_answers("v1", {0: 100}), _answers("v2", {0: 40}), 40, 40)
    problem = erroring.problem(0.9, 20)
    assert problem is not None and "answered 0.40 of the requests" in problem
    # Production's answers from before the shadow existed are not copies it missed.
    late = Comparison(_answers("v1", {0: 100}), _answers("v2", {0: 40}), 40, 40, 40)
    assert late.problem(0.9, 20) is None
