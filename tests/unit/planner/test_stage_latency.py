"""planner.terms' stage latency: IPA's sum, and the queueing model's p99 of the sum of fill, wait
and service, against a simulated Serve stage."""

import math

import numpy as np
import pytest

from planner.capacity import cs2_from_profile, wait_p99_ms
from planner.terms import IPA_LATENCY, LatencyModel, Option, fill_ms, stage_base_ms, stage_latency_ms

Z99 = 2.326


def _option(batch: int, p50_ms: float, cs2: float) -> Option:
    p99 = p50_ms * (1 + Z99 * math.sqrt(cs2))
    return Option(variant="v", batch=batch, latency_ms=p99, throughput=1000 * batch / p50_ms, energy_j=0.1,
                  idle_w=1.0, resources=1.0, log_acc=-0.3, acc=0.74, l99_ms=p99, service_ms=p50_ms,
                  cs2=cs2_from_profile(p50_ms, p99))


def _simulated_p99_ms(lam: float, n: int, batch: int, timeout_ms: float, p50_ms: float, cs2: float,
                      seconds: int = 3000) -> float:
    """A Serve stage, seeded: Poisson arrivals at λ; each goes to the replica with fewer requests in
    it (Serve's power of two choices, exact for n ≤ 2); a replica's batch closes at `batch`
    requests or `timeout_ms` after its first, and batches run one at a time per replica, each a
    normal service time (mean p50, cs²). The p99 of arrival → answer after a warm-up tenth."""
    rng = np.random.default_rng(3)
    arrivals = np.cumsum(rng.exponential(1 / lam, int(lam * seconds)))
    timeout, sd = timeout_ms / 1000, p50_ms / 1000 * math.sqrt(cs2)
    forming: list[list[float] | None] = [None] * n  # arrival times of each replica's open batch
    free = [0.0] * n
    finishes: list[list[float]] = [[] for _ in range(n)]
    latencies = []

    def close(r: int, at: float) -> None:
        start = max(at, free[r])
        free[r] = start + max(0.2 * p50_ms / 1000, rng.normal(p50_ms / 1000, sd))
        latencies.extend(free[r] - a for a in forming[r])
        finishes[r].extend(free[r] for _ in forming[r])
        forming[r] = None

    for t in arrivals:
        for r in range(n):
            if forming[r] is not None and forming[r][0] + timeout <= t:
                close(r, forming[r][0] + timeout)
        for r in range(n):
            finishes[r] = [f for f in finishes[r] if f > t]
        r = min(range(n), key=lambda k: len(finishes[k]) + len(forming[k] or ()))
        forming[r] = (forming[r] or []) + [t]
        if len(forming[r]) >= batch:
            close(r, t)
    return float(np.percentile(latencies[len(latencies) // 10:], 99) * 1000)


def test_ipa_latency_is_the_papers_p99_plus_batch_fill():
    o = _option(4, 120.0, 0.05)
    model = LatencyModel(queueing=False, stretch=1.5)
    assert stage_latency_ms(o, 1, 10.0, model) == pytest.approx(o.l99_ms * 1.5 + 300.0)
    assert stage_latency_ms(o, 3, 10.0, IPA_LATENCY) == pytest.approx(o.l99_ms + 300.0)


@pytest.mark.parametrize("batch, lam, n", [(1, 4.0, 1), (2, 8.0, 1), (4, 6.0, 2), (8, 30.0, 3)])
def test_the_p99_of_the_sum_lies_between_its_largest_part_and_the_sum_of_the_parts(batch, lam, n):
    o = _option(batch, 80.0 * batch ** 0.7, 0.04)
    for stretch in (1.0, 1.7):
        model = LatencyModel(stretch=stretch)
        fill = fill_ms(batch, lam)
        wait = wait_p99_ms(n, lam, batch, o.service_ms * stretch, o.cs2)
        parts = (o.l99_ms * stretch, fill, wait)
        latency = stage_latency_ms(o, n, lam, model)
        assert max(parts) <= latency <= sum(parts) + 1e-9
        assert latency == pytest.approx(o.service_ms * stretch + math.sqrt(
            ((o.l99_ms - o.service_ms) * stretch) ** 2 + fill ** 2 + wait ** 2))
        base = stage_base_ms(o, lam, model)  # no wait for a replica
        assert base == pytest.approx(o.service_ms * stretch + math.hypot((o.l99_ms - o.service_ms) * stretch, fill))
        assert base <= latency and (base < latency) == (wait > 0)
        # a batch timeout below the fill time shortens the fill
        assert (stage_latency_ms(o, n, lam, model, fill=fill / 2) < latency) == (fill > 0)


# (λ req/s, replicas, batch, p50 ms of a batch, cs²): light to busy, one or two replicas
SERVE_STAGES = [(1.5, 1, 1, 170.0, 0.003), (5.0, 2, 1, 160.0, 0.08), (7.5, 1, 2, 110.0, 0.04), (7.3, 1, 4, 190.0, 0.01),
                (8.0, 2, 2, 110.0, 0.05), (12.0, 2, 4, 250.0, 0.01), (10.0, 1, 1, 60.0, 0.05)]


@pytest.mark.parametrize("lam, n, batch, p50_ms, cs2", SERVE_STAGES)
def test_stage_p99_is_close_to_a_simulated_serve_stage(lam, n, batch, p50_ms, cs2):
    o = _option(batch, p50_ms, cs2)
    predicted = stage_latency_ms(o, n, lam, LatencyModel())
    simulated = _simulated_p99_ms(lam, n, batch, fill_ms(batch, lam), p50_ms, cs2)
    assert predicted == pytest.approx(simulated, rel=0.2)


def test_adding_the_parts_p99s_overpredicts_a_serve_stage():
    """Why the parts are combined: their p99s do not come together (the model before, 2026-12)."""
    errors = []
    for lam, n, batch, p50_ms, cs2 in SERVE_STAGES:
        o = _option(batch, p50_ms, cs2)
        summed = o.l99_ms + fill_ms(batch, lam) + wait_p99_ms(n, lam, batch, p50_ms, o.cs2)
        errors.append(summed / _simulated_p99_ms(lam, n, batch, fill_ms(batch, lam), p50_ms, cs2) - 1)
    assert min(errors) > 0 and float(np.median(errors)) > 0.15
