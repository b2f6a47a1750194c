"""The closed loop: bounded, decaying per-variant factors from observed timings, and the loop using them."""

import numpy as np
import pytest

from ipa_energy.records import Decision, StageObservation
from planner.checks import plan_model
from planner.correction import DECAY, FACTOR_MAX, HOST, MIN_REQUESTS, WEIGHT, Corrections, expected_s_per_request
from planner.constants import HISTORY_S
from planner.loop import PlannerLoop
from planner.predictor import MaxPredictor
from planner.profiles import profiles_from_store
from planner.terms import Weights
from workloads import catalog
from workloads.profile_store import PROFILES_DIR, ProfileStore

HARDWARE = "cpu-amd-epyc-2c"


@pytest.fixture(scope="module")
def setup():
    pipeline = catalog.pipeline("classify")
    return pipeline, profiles_from_store(ProfileStore(PROFILES_DIR), HARDWARE, pipeline)


def seen(variant: str, s: float, requests: int = 100, batch: float = 1.0, p99: float | None = 100.0,
         seconds: int = 10) -> StageObservation:
    return StageObservation(stage="classifier", variant=variant, seconds=seconds, requests=requests, s_per_request=s,
                            mean_batch=batch, p99_ms=p99)


def test_expected_time_is_the_profiled_batch_p50_per_request_at_the_nearest_batch(setup):
    _, profiles = setup
    p1, p4 = profiles[("resnet18-112-mini", 1)], profiles[("resnet18-112-mini", 4)]
    assert expected_s_per_request(profiles, "resnet18-112-mini", 1.0) == pytest.approx(p1.latency_p50_ms / 1000)
    assert expected_s_per_request(profiles, "resnet18-112-mini", 3.6, stretch=2) == pytest.approx(p4.latency_p50_ms / 4000 * 2)
    assert expected_s_per_request(profiles, "no-such-variant", 1.0) is None


def test_factor_moves_part_way_is_bounded_and_decays(setup):
    _, profiles = setup
    base = expected_s_per_request(profiles, "resnet18-112-mini", 1.0)
    c = Corrections()
    assert c.update([seen("resnet18-112-mini", 2 * base)], profiles) == {"resnet18-112-mini": pytest.approx(1 + WEIGHT),
                                                                         HOST: pytest.approx(1 + WEIGHT)}
    c.update([seen("resnet18-112-mini", 2 * base, requests=MIN_REQUESTS - 1)], profiles)  # too few: decays instead
    host = 1 + WEIGHT * DECAY  # (nothing taught the host factor either)
    assert c.host == pytest.approx(host)
    assert c.factors["resnet18-112-mini"] == pytest.approx(host + (1 + WEIGHT - host) * DECAY)  # toward the host factor
    for _ in range(20):  # a wildly slow interval, again and again: never beyond the bound
        c.update([seen("resnet18-112-mini", 100 * base)], profiles)
    assert FACTOR_MAX - 0.01 < c.factors["resnet18-112-mini"] <= FACTOR_MAX
    for _ in range(20):  # the variant stops running: back to its profile
        c.update([], profiles)
    assert c.factors == {} and c.host == 1.0 and c.logged() == {}


def test_variants_that_have_not_run_take_the_host_factor_of_those_that_did(setup):
    _, profiles = setup
    c = Corrections()
    b18 = expected_s_per_request(profiles, "resnet18-112-mini", 1.0)
    b50 = expected_s_per_request(profiles, "resnet50-112-mini", 2.0)
    # two variants run 1.5× and 2× slower than profiled, with 100 and 300 requests
    c.update([seen("resnet18-112-mini", 1.5 * b18), seen("resnet50-112-mini", 2 * b50, requests=300, batch=2.0)], profiles)
    ratio = np.exp((100 * np.log(1.5) + 300 * np.log(2.0)) / 400)  # request-weighted geometric mean
    assert c.host == pytest.approx(1 + WEIGHT * (ratio - 1))
    assert c.factor("resnet18-112-mini") == pytest.approx(1 + WEIGHT * 0.5)  # its own
    assert c.factor("resnet152-112-mini") == c.host  # never ran: the host's
    out = c.apply(profiles)
    p = profiles[("resnet152-112-mini", 1)]
    assert out[("resnet152-112-mini", 1)].throughput_rps == pytest.approx(p.throughput_rps / c.host)
    # an interval with too few requests teaches nothing: the host factor decays too
    host = c.host
    c.update([seen("resnet18-112-mini", 10 * b18, requests=MIN_REQUESTS - 1)], profiles)
    assert c.host == pytest.approx(1 + (host - 1) * DECAY)


def test_a_variant_that_stops_running_drifts_to_the_host_factor_not_its_profile(setup):
    _, profiles = setup
    c = Corrections()
    b18 = expected_s_per_request(profiles, "resnet18-112-mini", 1.0)
    b50 = expected_s_per_request(profiles, "resnet50-112-mini", 1.0)
    c.update([seen("resnet18-112-mini", 1.0 * b18)], profiles)  # as profiled, at low load
    assert c.factor("resnet18-112-mini") == 1.0
    for _ in range(6):  # then only resnet50 runs, 1.6× slower than its profile: the host is slow
        c.update([seen("resnet50-112-mini", 1.6 * b50)], profiles)
    assert c.host == pytest.approx(1.6, rel=0.03)
    assert c.factor("resnet18-112-mini") == pytest.approx(c.host, rel=0.02)  # not 1: the host's


def test_corrected_profiles_are_slower_and_serve_less(setup):
    _, profiles = setup
    c = Corrections()
    c.factors["resnet18-112-mini"] = 2.0
    out = c.apply(profiles)
    p, q = profiles[("resnet18-112-mini", 4)], out[("resnet18-112-mini", 4)]
    assert q.latency_p99_ms == pytest.approx(2 * p.latency_p99_ms) and q.throughput_rps == pytest.approx(p.throughput_rps / 2)
    assert out[("resnet50-112-mini", 1)] is profiles[("resnet50-112-mini", 1)]


def test_the_loop_logs_predicted_and_observed_p99_and_plans_with_the_correction(setup):
    pipeline, profiles = setup
    applied, now = [], [1000.0]
    # no accuracy budget: at 4 req/s it would keep the slowed variant (the one within a point of IPA's)
    w = Weights(accuracy_budget=None)
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda p: applied.append(p), interval_s=10,
                          clock=lambda: now[0], weights=w)
    load = np.full(60, 4.0)
    planner.step(load)  # the initial plan
    now[0] += 20  # an interval after the change has settled
    running = planner.current.stages["classifier"]
    base = expected_s_per_request(profiles, running.variant, running.batch_size, plan_model(planner.current).stretch)
    # the running variant turns out twice as slow as modelled, with a p99 far over the prediction
    slow = seen(running.variant, 2 * base, batch=running.batch_size, p99=900.0)
    d = planner.step(load, [slow])
    for _ in range(3):  # the running plan still fits as corrected: a switch must be chosen twice in a row
        if not d.deferred:
            break
        now[0] += 20
        d = planner.step(load, [slow])
    assert d.observed_p99_ms == {"classifier": 900.0}
    assert d.predicted_p99_ms["classifier"] > 0
    assert d.corrections[running.variant] > 1.2
    uncorrected = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda p: None, interval_s=10, weights=w).step(load)
    cap = lambda stages: sum(v["replicas"] for v in stages.values())  # noqa: E731
    # slower than profiled: the plan keeps more capacity, or moves to a lighter variant
    assert cap(d.stages) > cap(uncorrected.stages) or d.stages != uncorrected.stages


def test_an_interval_that_saw_a_change_teaches_nothing(setup):
    pipeline, profiles = setup
    now = [1000.0]
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda p: None, interval_s=10, clock=lambda: now[0])
    first = planner.step(np.full(60, 4.0))  # the initial plan is applied: a change
    assert first.changed
    running = planner.current.stages["classifier"]
    slow = seen(running.variant, 10.0, batch=running.batch_size, p99=5000.0)
    now[0] += 5  # within an interval of the change
    during = planner.step(np.full(60, 4.0), [slow])
    assert during.observed_p99_ms == {"classifier": 5000.0} and during.predicted_p99_ms == {}
    assert during.corrections == {} and planner.corrections.factors == {}
    now[0] += 20
    after = planner.step(np.full(60, 4.0), [slow])
    assert after.corrections and after.predicted_p99_ms


def test_a_stage_the_model_says_cannot_keep_up_has_no_prediction_and_the_decision_round_trips(setup):
    pipeline, profiles = setup
    now = [1000.0]
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda p: None, interval_s=10, clock=lambda: now[0])
    planner.step(np.full(60, 4.0))
    now[0] += 20
    running = planner.current.stages["classifier"]
    flood = seen(running.variant, 0.5, batch=running.batch_size, p99=9000.0)
    d = planner.step(np.full(60, 500.0), [flood])  # far past what the running plan serves: an unbounded wait
    assert d.observed_p99_ms == {"classifier": 9000.0} and d.predicted_p99_ms == {}
    assert Decision.model_validate_json(d.model_dump_json()) == d  # the decision log reads back (no null p99)


def test_p99s_are_compared_over_the_running_plans_window_and_only_with_enough_calls(setup):
    pipeline, profiles = setup
    now = [1000.0]
    planner = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda p: None, interval_s=10, clock=lambda: now[0])
    assert planner.p99_window_s() == 0  # nothing runs yet
    planner.step(np.full(60, 4.0))  # the initial plan: a change
    now[0] += 5
    assert planner.p99_window_s() == 0  # less than an interval since it was applied
    now[0] += 15
    assert planner.p99_window_s() == 20
    running = planner.current.stages["classifier"]
    s = expected_s_per_request(profiles, running.variant, running.batch_size, plan_model(planner.current).stretch)
    few = seen(running.variant, s, requests=40, batch=running.batch_size, p99=300.0)  # as modelled: no change
    d = planner.step(np.full(60, 4.0), [few])  # 40 calls: their p99 is their largest, not a p99
    assert d.observed_p99_ms == {"classifier": 300.0} and d.predicted_p99_ms == {} and d.p99_window_s == 10
    now[0] += 10
    assert planner.p99_window_s() == 30  # what the actor reads the pooled calls over
    pooled = seen(running.variant, s, requests=120, batch=running.batch_size, p99=250.0, seconds=30)
    d = planner.step(np.full(60, 4.0), [few], pooled=[pooled])
    assert not d.changed
    assert d.observed_p99_ms == {"classifier": 250.0} and d.p99_window_s == 30 and d.predicted_p99_ms["classifier"] > 0
    now[0] += 1000
    assert planner.p99_window_s() == HISTORY_S  # what the arrivals book keeps
    # a loop given the running plan: it has run since the loop started, as far as the loop knows
    given = PlannerLoop(pipeline, profiles, MaxPredictor(), lambda p: None, interval_s=10, clock=lambda: now[0],
                        current=planner.current)
    assert given.p99_window_s() == 0
    now[0] += 12
    assert given.p99_window_s() == 12
