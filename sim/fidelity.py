"""The simulator against live runs: the same policy, trace window and seed, side by side.

For each live run folder (experiments.schema) the simulator runs the same policy on the
same trace (window, offset, rate factor and seed) with a cluster file for the host the live
run had (sim.calibrate), and the two summaries are compared on the issue-13 bounds:

* SLO attainment within 5 points;
* p99 within 30 % (of the live p99);
* dynamic J/request within 10 %;
* the same plan (variant, batch size, replicas per stage) in force at the end of ≥ 80 % of
  the planner's intervals (10 s buckets from second 0 of the trace).

    python bench/sim_fidelity.py results/bench-classify-bursty results/traces/* --cluster sim/clusters/host-2c.yaml
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

from experiments.summary import Run, load_run, summarize_run
from experiments.schema import RunSummary

__all__ = ["BOUNDS", "Comparison", "compare", "plan_agreement", "planner_lead", "planner_start", "simulate_like"]

#: (SLO points, p99 relative, J/request relative, plan agreement share) of issue 13
BOUNDS = (0.05, 0.30, 0.10, 0.80)


@dataclass
class Comparison:
    label: str
    live: RunSummary
    sim: RunSummary
    plan_agreement: float | None

    @property
    def slo_points(self) -> float:
        return abs((self.sim.slo_attainment or 0) - (self.live.slo_attainment or 0))

    @property
    def p99_error(self) -> float | None:
        return _relative(self.sim.p99_ms, self.live.p99_ms)

    @property
    def j_error(self) -> float | None:
        return _relative(self.sim.j_per_request, self.live.j_per_request)

    def within(self, bounds=BOUNDS) -> dict[str, bool]:
        slo, p99, j, plans = bounds
        return {"slo": self.slo_points <= slo, "p99": self.p99_error is not None and self.p99_error <= p99,
                "j_per_request": self.j_error is not None and self.j_error <= j,
                "plans": self.plan_agreement is None or self.plan_agreement >= plans}

    def row(self) -> str:
        def pct(x):
            return "–" if x is None else f"{x:.1%}"

        ok = self.within()
        return (f"| {self.label} | {pct(self.live.slo_attainment)} | {pct(self.sim.slo_attainment)} | "
                f"{self.live.p99_ms or 0:.0f} | {self.sim.p99_ms or 0:.0f} | {self.live.j_per_request or 0:.3f} | "
                f"{self.sim.j_per_request or 0:.3f} | {pct(self.plan_agreement)} | "
                f"{', '.join(k for k, v in ok.items() if not v) or 'all within'} |")


HEADER = ("| run | live SLO | sim SLO | live p99 ms | sim p99 ms | live J/req | sim J/req | same plan | outside the bounds |\n"
          "|---|---|---|---|---|---|---|---|---|")


def _relative(sim: float | None, live: float | None) -> float | None:
    return abs(sim - live) / live if sim is not None and live else None


def _plans_by_bucket(run: Run, seconds: int, interval: float) -> list:
    start = run.meta.load_start_s
    initial = {s: (sp["variant"], sp.get("batch_size", 1), sp.get("replicas", 1))
               for s, sp in run.meta.initial_plan["stages"].items()}
    timeline = [(d.time_s - start, {s: (v["variant"], v["batch_size"], v["replicas"]) for s, v in d.stages.items()})
                for d in run.decisions if d.changed or d.time_s - start <= 0]
    out, current, i = [], initial, 0
    for b in range(int(seconds // interval)):
        end = (b + 1) * interval
        while i < len(timeline) and timeline[i][0] <= end:
            current = timeline[i][1]
            i += 1
        out.append(current)
    return out


def plan_agreement(live: Run, sim: Run) -> float | None:
    """Share of intervals whose plan in force at the end is the same (None: no planner)."""
    if live.meta.policy_kind != "planner":
        return None
    interval = live.meta.interval_s or 10.0
    seconds = live.meta.trace.seconds
    a, b = _plans_by_bucket(live, seconds, interval), _plans_by_bucket(sim, seconds, interval)
    return sum(x == y for x, y in zip(a, b)) / len(a) if a else None


def planner_start(run: Run) -> float | None:
    """When the live planner's first interval started, in seconds after second 0 of the trace (its
    first decision, an interval earlier); None: no planner or decision, or a first step that was a
    surge (which restarts the interval: the actor's own start is then unknown)."""
    first = run.decisions[0] if run.decisions else None
    if first is None or first.trigger != "interval" or not run.meta.interval_s:
        return None
    return max(0.0, first.time_s - run.meta.load_start_s - run.meta.interval_s)


def planner_lead(run: Run) -> int | None:
    """Whole seconds of the live planner's history before second 0 of the trace (None: not recorded).
    The actor keeps the last int(now − history_from_s) complete Unix seconds, so at its first
    decision (t0) its history began at Unix second int(t0) − int(t0 − history_from_s)."""
    start, first = run.meta.planner_history_from_s, run.decisions[0] if run.decisions else None
    if start is None or first is None:
        return None
    begun = int(first.time_s) - int(first.time_s - start)
    return max(0, math.floor(run.meta.load_start_s) - begun)


def simulate_like(live: Run, cluster: Path, out: Path) -> Run:
    """Simulate `live`'s policy, trace and seed on `cluster` into `out`; the simulated run."""
    from sim.run import SimConfig, simulate_run

    meta = live.meta
    cfg = SimConfig(name="fidelity", pipeline=meta.pipeline, policies=[meta.policy], trace=meta.trace, tier=meta.tier,
                    cluster=cluster, interval_s=meta.interval_s or 10.0, predictor=meta.predictor or "lstm",
                    warm_variants=bool(meta.warm_variants),  # as the live app ran (unrecorded: none kept)
                    load_start_s=meta.load_start_s, planner_start_s=planner_start(live),
                    planner_lead_s=planner_lead(live))
    run_dir = out / meta.policy / str(meta.repeat or 1)
    simulate_run(cfg, meta.policy, run_dir)  # the live run's own seed: the same send times
    return load_run(run_dir)


def compare(live_dir: Path, cluster: Path, out: Path | None = None) -> Comparison:
    live = load_run(live_dir)
    with tempfile.TemporaryDirectory() as tmp:
        sim = simulate_like(live, cluster, Path(out or tmp))
        label = f"{live.meta.pipeline} {live.meta.trace.name}+{live.meta.trace.offset_s} ×{live.meta.trace.rate_factor} " \
                f"{live.meta.policy}" + (f" r{live.meta.repeat}" if live.meta.repeat else "")
        return Comparison(label, summarize_run(live), summarize_run(sim), plan_agreement(live, sim))
