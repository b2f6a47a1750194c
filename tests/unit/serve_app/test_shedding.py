"""The ingress's shed rule: expected time through the stages, from the replicas' own timings, against the SLA."""

import pytest

from serve_app.shedding import EWMA_WEIGHT, FACTOR_MAX, FACTOR_MIN, LoadShedder


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


def test_a_request_with_nothing_ahead_is_never_shed():
    """Its expectation is its own service time, not a queue (a cold first batch inflates it)."""
    shedder = LoadShedder()
    shedder.observe("a", 1_250, 1)  # a fresh variant's cold first batch
    assert not shedder.judge([("det", "a", 0, 1)], budget_s=1.0).shed
    assert shedder.judge([("det", "a", 1, 1)], budget_s=1.0).shed  # one ahead: a queue of 2.5 s
    shedder.observe("b", 100, 1)
    assert shedder.judge([("det", "a", 0, 1), ("cls", "b", 20, 1)], budget_s=1.0).shed


def test_timings_follow_a_moving_average():
    shedder = LoadShedder()
    shedder.observe("d", 100, 1)
    shedder.observe("d", 200, 1)
    assert shedder.s_per_request["d"] == pytest.approx(0.1 + EWMA_WEIGHT * 0.1)
    for _ in range(60):  # a slower host (contention) is learnt within a few dozen batches
        shedder.observe("d", 300, 1)
    assert shedder.s_per_request["d"] == pytest.approx(0.3, rel=1e-3)


def test_queued_calls_that_took_longer_than_expected_raise_the_expectation_within_bounds():
    shedder = LoadShedder()
    shedder.observe("d", 100, 1)  # 0.1 s per request: 9 ahead → 1.0 s expected
    shedder.observe_call("d", ahead=9, replicas=1, batch_size=1, seconds=1.5)  # took 1.5× that
    assert shedder.factor["d"] == pytest.approx(1.5)
    assert shedder.wait_s("d", in_flight=9, replicas=1) == pytest.approx(1.5)
    assert shedder.judge([("s", "d", 7, 1)], budget_s=1.0).shed  # 8 × 0.1 × 1.5 = 1.2 s
    for _ in range(60):  # a call 100× slower moves it to the bound, not beyond
        shedder.observe_call("d", ahead=9, replicas=1, batch_size=1, seconds=100.0)
    assert shedder.factor["d"] == pytest.approx(FACTOR_MAX)
    for _ in range(80):
        shedder.observe_call("d", ahead=9, replicas=1, batch_size=1, seconds=0.01)
    assert shedder.factor["d"] == pytest.approx(FACTOR_MIN)


def test_a_call_behind_a_short_queue_teaches_nothing():
    """Its time is a batch's fill and forward, which (L + 1) × s does not describe."""
    shedder = LoadShedder()
    shedder.observe("d", 400, 4)
    shedder.observe_call("d", ahead=0, replicas=1, batch_size=1, seconds=5.0)
    shedder.observe_call("d", ahead=6, replicas=1, batch_size=4, seconds=5.0)  # under two batches ahead
    assert "d" not in shedder.factor
    assert LoadShedder().observe_call("d", ahead=50, replicas=1, batch_size=1, seconds=5.0) is None  # no timing yet
    shedder.observe_call("d", ahead=7, replicas=1, batch_size=4, seconds=1.2)  # 8 × 0.1 = 0.8 s expected
    assert shedder.factor["d"] == pytest.approx(1.5)


def test_calls_behind_a_short_queue_ease_the_factor_back_toward_one():
    """A high factor refuses the deep queues whose calls could lower it: short-queue answers ease it."""
    shedder = LoadShedder()
    shedder.observe("d", 100, 1)
    shedder.observe_call("d", ahead=9, replicas=1, batch_size=1, seconds=2.0)
    assert shedder.factor["d"] == pytest.approx(FACTOR_MAX)
    for _ in range(100):
        shedder.observe_call("d", ahead=0, replicas=1, batch_size=1, seconds=5.0)
    assert shedder.factor["d"] == pytest.approx(1.0, abs=0.01)
