"""The ingress's shed rule: expected time through the stages, from the replicas' own timings, against the SLA."""

import pytest

from serve_app.shedding import EWMA_WEIGHT, LoadShedder


def test_a_deployment_without_timings_is_never_judged():
    shedder = LoadShedder()
    assert shedder.wait_s("p.s.v", in_flight=10_000, replicas=1) is None
    assert not shedder.judge([("s", "p.s.v", 10_000, 1)], budget_s=0.001).shed


def test_wait_is_calls_ahead_times_seconds_per_request_over_replicas():
    shedder = LoadShedder()
    shedder.observe("d", compute_ms=400, batch_size=4)  # 0.1 s per request
    assert shedder.wait_s("d", in_flight=9, replicas=1) == pytest.approx(1.0)
    assert shedder.wait_s("d", in_flight=9, replicas=2) == pytest.approx(0.5)
    # two ingress replicas: each sees half the calls and owns half the replicas' capacity
    assert LoadShedder(ingress_replicas=2).wait_s("d", 9, 2) is None
    two = LoadShedder(ingress_replicas=2)
    two.observe("d", 100, 1)
    assert two.wait_s("d", in_flight=9, replicas=2) == pytest.approx(1.0)


def test_sheds_only_past_the_budget_and_names_the_stage_with_most_work():
    shedder = LoadShedder()
    shedder.observe("a", 100, 1)
    shedder.observe("b", 50, 1)
    under = shedder.judge([("det", "a", 9, 1), ("cls", "b", 9, 1)], budget_s=1.5)  # 1.0 + 0.5
    assert not under.shed and under.expected_s == pytest.approx(1.5)
    over = shedder.judge([("det", "a", 29, 1), ("cls", "b", 9, 1)], budget_s=1.5)  # 3.0 + 0.5
    assert over.shed and over.stage == "det" and over.expected_s == pytest.approx(3.5)
    assert over.retry_after_s == 2  # ceil(3.5 − 1.5)
    assert shedder.judge([("det", "a", 14, 1)], budget_s=1.4).retry_after_s == 1  # never 0


def test_timings_follow_a_moving_average():
    shedder = LoadShedder()
    shedder.observe("d", 100, 1)
    shedder.observe("d", 200, 1)
    assert shedder.s_per_request["d"] == pytest.approx(0.1 + EWMA_WEIGHT * 0.1)
    for _ in range(60):  # a slower host (contention) is learnt within a few dozen batches
        shedder.observe("d", 300, 1)
    assert shedder.s_per_request["d"] == pytest.approx(0.3, rel=1e-3)
