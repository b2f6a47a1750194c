"""The simulator against one recorded live run (tests/fixtures/runs/live-bench; docs/simulator.md)."""

from pathlib import Path

import pytest

from experiments.summary import load_run
from sim.fidelity import compare, simulate_like

ROOT = Path(__file__).resolve().parents[3]
LIVE = ROOT / "tests" / "fixtures" / "runs" / "live-bench" / "ipa"
CLUSTER = ROOT / "sim" / "clusters" / "host-2c.yaml"


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    return compare(LIVE, CLUSTER, tmp_path_factory.mktemp("fidelity"))


def _missing_buckets(run, sla_ms, share=0.05):
    """10 s buckets of the trace in which more than `share` of the requests sent missed the SLA."""
    start, buckets = run.meta.load_start_s, {}
    for r in run.requests:
        b = int((r.sent_s - start) // 10)
        sent, missed = buckets.get(b, (0, 0))
        buckets[b] = (sent + 1, missed + (r.status != 200 or r.latency_ms > sla_ms))
    return {b for b, (sent, missed) in buckets.items() if missed > share * sent}


def test_the_simulator_misses_where_the_live_run_missed(tmp_path):
    live = load_run(LIVE)
    sim = simulate_like(live, CLUSTER, tmp_path)
    live_misses, sim_misses = _missing_buckets(live, live.meta.sla_ms), _missing_buckets(sim, live.meta.sla_ms)
    assert live_misses and sim_misses  # the ramp of the window costs both
    assert all(any(abs(b - m) <= 1 for m in live_misses) for b in sim_misses)  # within 10 s of a live miss
    assert len(sim.requests) == len(live.requests)  # the same send times


def test_p99_is_within_30_percent_of_the_live_run(comparison):
    assert comparison.within()["p99"], comparison.row()


@pytest.mark.xfail(strict=True, reason="fidelity gap (docs/simulator.md, 'Session 13'): SLO, p99 and dynamic "
                                       "J/request are within the bounds for this live run, but the same plan is in "
                                       "force in 58 % of the intervals, not 80 %")
def test_every_issue_13_bound_holds(comparison):
    assert all(comparison.within().values()), comparison.row()
