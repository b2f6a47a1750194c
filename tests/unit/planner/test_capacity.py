"""planner.capacity: Erlang C, the p99 queueing delay against simulation, contention stretch, supply."""

import math

import numpy as np
import pytest

from planner.capacity import cs2_from_profile, erlang_c, stretch, supply_of_this_host, wait_p99_ms


def _simulated_p99_wait_ms(lam: float, service_s: float, n: int, deterministic: bool, requests: int = 60_000) -> float:
    """FIFO M/D/n or M/M/n, seeded: the p99 of the waits after a warm-up tenth."""
    rng = np.random.default_rng(7)
    arrivals = np.cumsum(rng.exponential(1 / lam, requests))
    free = np.zeros(n)
    waits = np.empty(requests)
    for i, a in enumerate(arrivals):
        j = free.argmin()
        start = max(a, free[j])
        waits[i] = start - a
        free[j] = start + (service_s if deterministic else rng.exponential(service_s))
    return float(np.percentile(waits[requests // 10:], 99) * 1000)


def test_erlang_c_known_values():
    assert erlang_c(1, 0.4) == pytest.approx(0.4)  # M/M/1: P(wait) = ρ
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)
    assert erlang_c(3, 0.0) == 0.0 and erlang_c(2, 2.0) == 1.0
    assert erlang_c(4, 2.0) < erlang_c(3, 2.0) < erlang_c(2, 1.9)


def test_mm1_p99_wait_is_the_exact_tail():
    lam, s = 8.0, 0.06  # ρ = 0.48
    want = math.log(0.48 / 0.01) / (1 / s - lam) * 1000  # P(W > t) = ρ e^{-(μ-λ)t}
    assert wait_p99_ms(1, lam, 1, s * 1000, cs2=1.0) == pytest.approx(want)


@pytest.mark.parametrize("lam, service_s, n", [(8, 0.06, 1), (12, 0.06, 1), (20, 0.06, 2), (40, 0.12, 6)])
def test_p99_wait_is_close_to_simulation(lam, service_s, n):
    for deterministic, cs2 in ((True, 0.0), (False, 1.0)):
        simulated = _simulated_p99_wait_ms(lam, service_s, n, deterministic)
        assert wait_p99_ms(n, lam, 1, service_s * 1000, cs2) == pytest.approx(simulated, rel=0.25)


def test_wait_grows_with_load_shrinks_with_replicas_and_is_infinite_past_capacity():
    waits = [wait_p99_ms(2, lam, 1, 60.0) for lam in (5, 15, 25, 32)]
    assert waits == sorted(waits) and waits[0] < waits[-1]
    assert wait_p99_ms(3, 25, 1, 60.0) < wait_p99_ms(2, 25, 1, 60.0)
    assert wait_p99_ms(1, 20, 1, 60.0) == math.inf  # 20 req/s × 60 ms = 1.2 replicas busy
    assert wait_p99_ms(4, 0.5, 1, 60.0) == 0.0  # P(wait) below 1 %: no p99 wait
    assert wait_p99_ms(1, 20, 2, 60.0) < math.inf  # batches of 2: half the batches, same service time


def test_cs2_and_stretch():
    assert cs2_from_profile(100.0, 100.0) == 0.0
    assert cs2_from_profile(100.0, 100.0 + 2.326 * 10) == pytest.approx(0.01)
    assert stretch(2, 0.0) == 1.0 and stretch(2, 1.0) == math.inf
    assert stretch(2, 0.5) == pytest.approx(1 + (1 / 3) / (2 * 0.5))
    assert stretch(2, 0.3) < stretch(2, 0.6) and stretch(8, 0.6) < stretch(2, 0.6)


def test_this_host_reports_physical_cores_and_memory():
    (node,) = supply_of_this_host().nodes
    assert 1 <= node.cores <= (__import__("os").cpu_count() or 1) and node.memory_mb > 100


def test_background_load_takes_its_cores_before_the_plan():
    from ipa_energy.cluster import ClusterSupply, NodeSupply
    from planner.caps import capacities

    node = NodeSupply(node_id="n", cores=2, memory_mb=8000, outside_cores=0.7)
    supply = ClusterSupply(nodes=(node,), source="test")
    assert supply.outside_cores == 0.7
    assert supply.with_background(0.2).background_cores == pytest.approx(0.5)  # less the modelled serving path
    assert supply.with_background(1.0).background_cores == 0.0
    plain = {c.utilisation: c.cpu_cores for c in capacities(supply, 5.0, True, 0.02)}
    loaded = {c.utilisation: c.cpu_cores for c in capacities(supply.with_background(0.1), 5.0, True, 0.02)}
    assert all(loaded[r] == pytest.approx(plain[r] - 0.6) for r in loaded)
    assert len(loaded) < len(plain) or min(loaded.values()) > 0
