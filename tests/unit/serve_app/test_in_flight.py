"""serve_app.in_flight: what the ingress counts ahead of a request, and what the shedder learns."""

import pytest

from ipa_energy.messages import StageResult
from ipa_energy.spec import Autoscaling, Plan, StagePlan
from serve_app.in_flight import InFlight
from workloads import catalog

PIPELINE = catalog.pipeline("classify")
TARGETS = {"classifier": {"resnet18-112-mini": "d.small", "resnet50-112-mini": "d.large"}}


def _plan(**stage) -> Plan:
    return Plan(pipeline="classify", stages={"classifier": StagePlan(**{"variant": "resnet18-112-mini", **stage})})


def _answer(variant: str = "resnet18-112-mini", batch: int = 1, compute_ms: float = 100.0) -> StageResult:
    return StageResult(output={}, variant=variant, weights="random", replica="r", batch_size=batch, compute_ms=compute_ms)


def test_calls_in_flight_and_admitted_requests_are_both_ahead_of_a_new_one():
    a = InFlight()
    plan = _plan(replicas=2)
    assert a.route(PIPELINE, plan, TARGETS, [0.5]) == [("classifier", "d.small/resnet18-112-mini", 0, 2)]
    first, second = a.admit("d.small"), a.admit("d.small")
    with a.calling("d.small", first) as ahead:
        assert ahead == 0 and a.in_flight["d.small"] == 1 and a.admitted["d.small"] == 1
        assert a.route(PIPELINE, plan, TARGETS, [0.5])[0][2] == 2  # one in flight, one admitted
        assert a.in_flight_to(["d.small", "d.large"]) == 1
    second.release()
    second.release()  # idempotent: the request's end releases it again
    assert a.in_flight["d.small"] == 0 and a.admitted["d.small"] == 0


def test_a_failed_call_leaves_nothing_in_flight():
    a = InFlight()
    with pytest.raises(RuntimeError), a.calling("d.small", a.admit("d.small")):
        raise RuntimeError("replica died")
    assert a.in_flight_to(["d.small"]) == 0 and a.admitted["d.small"] == 0


def test_an_autoscaled_stage_is_judged_at_its_maximum_and_its_calls_teach_no_wait():
    a = InFlight()
    plan = _plan(autoscaling=Autoscaling(min_replicas=1, max_replicas=4))
    assert a.route(PIPELINE, plan, TARGETS, [0.1])[0][3] == 4
    for _ in range(20):  # deep queues, slow answers: at a fixed count they would raise the factor
        a.learn(plan.stages["classifier"], "resnet18-112-mini", "d.small", 10, _answer(), seconds=5.0)
    assert a.shedder.factor == {} and a.shedder.s_per_request["d.small/resnet18-112-mini"] == pytest.approx(0.1)


def test_a_call_answered_by_the_variant_a_slot_switched_from_times_that_variant_only():
    a = InFlight()
    stage = _plan(replicas=1).stages["classifier"]
    a.learn(stage, "resnet18-112-mini", "d.small", 10, _answer("resnet50-112-mini"), seconds=5.0)
    assert a.shedder.factor == {}
    assert set(a.shedder.s_per_request) == {"d.small/resnet50-112-mini"}
    for _ in range(2):  # the first answer times the variant, the second teaches the wait
        a.learn(stage, "resnet18-112-mini", "d.small", 10, _answer(), seconds=5.0)
    assert a.shedder.factor["d.small/resnet18-112-mini"] > 1  # 5 s for what 11 × 0.1 s explains


def test_a_shed_verdict_needs_a_timing_and_a_queue_past_the_sla():
    a = InFlight()
    plan = _plan(replicas=1)
    assert not a.judge(PIPELINE, plan, TARGETS, [0.5]).shed  # no timing yet: never refused blind
    a.learn(plan.stages["classifier"], "resnet18-112-mini", "d.small", 0, _answer(compute_ms=100.0), seconds=0.1)
    for _ in range(30):
        a.admit("d.small")
    verdict = a.judge(PIPELINE, plan, TARGETS, [0.5])
    assert verdict.shed == (31 * 0.1 > PIPELINE.sla_ms / 1000) and verdict.stage in ("", "classifier")
