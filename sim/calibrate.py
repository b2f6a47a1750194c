"""Fit the simulator's host costs to recorded live runs on one host (docs/simulator.md).

What a live app costs beyond the stages' forward passes is a property of the host and the
software, not of a trace: Ray's daemons, Serve's controller and proxy, the planner and the
experiment runner's polling keep cores busy whatever the load, and each request costs the
serving path some CPU. The live energy windows record it as `other_j` (active energy no
replica was charged with) beside `idle_j`; so, over every window of the given runs:

* ``idle_w`` = Σ idle J / Σ window seconds (the node's idle power as the meter modelled it);
* cores busy outside the replicas = other J / window s / the active J per core-second the
  simulator charges (sim.cluster.node_power, from the profiles), fitted by least squares as
  ``background_cores + serving_cpu_s × arrival rate`` (both clipped at 0);
* ``hidden_cores``: of that background, what the live node's energy actor did not read as outside
  the replicas (it counts the replica processes' own CPU as theirs), from the planner decisions'
  ``background_cores``: the simulator then hands its planner the reading the live one had;
* ``planner_start_s`` and ``planner_lead_s``: when the live planner's first interval started after
  second 0 of the trace (its first decision, an interval earlier), and the whole seconds its
  arrival history ran before second 0 (zeros: the runner starts the planner, then Locust), medians;
* ``speed``: the service-time factor the live planner learnt for the host (the median of its
  decisions' ``*`` correction after the first), over the factor the simulator's own run of the
  same window learns with speed 1 (contention is modelled apart, so only the rest is left).

    python -m sim.calibrate results/bench-classify-bursty --out sim/clusters/this-host.yaml

Calibrate on one window; judge fidelity on others (bench/sim_fidelity.py).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
import yaml

from experiments.summary import load_run
from sim.fidelity import planner_lead, planner_start

__all__ = ["fit_host", "hidden_cores", "main", "planner_timing"]


def _runs(paths: list[Path]) -> list:
    runs = []
    for p in paths:
        dirs = [p] if (p / "run.json").is_file() else sorted(d for d in p.iterdir() if (d / "run.json").is_file())
        for d in dirs:
            try:
                runs.append(load_run(d))
            except Exception as e:  # an incomplete run is left out, said so
                print(f"skipped {d}: {e}", file=sys.stderr)
    if not runs:
        raise ValueError(f"no complete run under {[str(p) for p in paths]}")
    return runs


def fit_host(runs: list, active_j_per_core_s: float) -> dict:
    """{idle_w, background_cores, serving_cpu_s, windows} fitted to the runs' energy windows."""
    rates, cores, idle_j, seconds = [], [], 0.0, 0.0
    for run in runs:
        sent = np.sort([r.sent_s for r in run.requests])
        for w in run.energy:
            d = w.end_s - w.start_s
            if d <= 0:
                continue
            n = np.searchsorted(sent, w.end_s) - np.searchsorted(sent, w.start_s)
            rates.append(n / d)
            cores.append(w.other_j / d / active_j_per_core_s)
            idle_j += w.idle_j
            seconds += d
    if len(rates) < 3:
        raise ValueError("too few energy windows to fit the host's costs")
    a = np.vstack([np.ones(len(rates)), rates]).T
    (base, per_request), *_ = np.linalg.lstsq(a, np.asarray(cores), rcond=None)
    return {"idle_w": idle_j / seconds, "background_cores": max(0.0, float(base)),
            "serving_cpu_s": max(0.0, float(per_request)), "windows": len(rates)}


def hidden_cores(runs: list, fit: dict, planner_serving_cpu_s: float) -> float:
    """Of the fitted background, the cores the live planner did not read as outside the replicas:
    the median over decisions of what the simulator would report (background + serving path at the
    observed rate) less what the live node's energy actor did (the decision's ``background_cores``
    plus the serving path the planner takes off it); 0 when no decision logged its background."""
    gaps = [fit["background_cores"] + d.observed_rps * fit["serving_cpu_s"]
            - (d.background_cores + d.observed_rps * planner_serving_cpu_s)
            for run in runs for d in run.decisions if d.background_cores is not None]
    return min(fit["background_cores"], max(0.0, statistics.median(gaps))) if gaps else 0.0


def planner_timing(runs: list, default_lead_s: int) -> tuple[float, int]:
    """(planner_start_s, planner_lead_s): the median over the runs of when the live planner's first
    interval started after second 0, and of the whole seconds its history ran before it (recorded
    since 2026-12-04; `default_lead_s` where no run recorded it)."""
    starts = [s for r in runs if (s := planner_start(r)) is not None]
    leads = [x for r in runs if (x := planner_lead(r)) is not None]
    return (round(statistics.median(starts), 1) if starts else 0.0,
            round(statistics.median(leads)) if leads else default_lead_s)


def host_factor(runs: list) -> float | None:
    """The median over planner decisions (after each run's first) of the learnt host factor."""
    factors = [d.corrections.get("*") for run in runs for d in run.decisions[1:] if d.corrections.get("*")]
    return statistics.median(factors) if factors else None


def main(argv: list[str] | None = None) -> int:
    from planner.constants import SERVING_CPU_S
    from sim.cluster import NodeType, node_power, this_host
    from planner.profiles import profiles_from_store
    from workloads import catalog
    from workloads.profile_store import PROFILES_DIR, ProfileStore, planning_hardware

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="live experiment or run folders, all from this host")
    parser.add_argument("--out", type=Path, required=True, help="cluster YAML to write")
    parser.add_argument("--sim-factor", type=float, default=None,
                        help="the host factor the simulator learns on the same window at speed 1 (see above); "
                             "without it speed stays 1")
    parser.add_argument("--planner-lead-s", type=int, default=3,
                        help="whole seconds the planner's history runs before second 0 where no run recorded it "
                             "(this host: Locust's import, ~1 s, and its 2 s lead; loadgen.locustfile.LEAD_S)")
    args = parser.parse_args(argv)
    runs = _runs(args.runs)
    pipeline = catalog.pipeline(runs[0].meta.pipeline, runs[0].meta.tier)
    store = ProfileStore(PROFILES_DIR)
    hardware, _ = planning_hardware(store, runs[0].meta.hardware)
    profiles = profiles_from_store(store, hardware, pipeline)
    host = this_host(hardware)
    node: NodeType = host.node_types[0]
    _, active = node_power(node, profiles, pipeline)
    fit = fit_host(runs, active)
    hidden = hidden_cores(runs, fit, SERVING_CPU_S)
    live = host_factor(runs)
    start_s, lead_s = planner_timing(runs, args.planner_lead_s)
    speed = round(live / args.sim_factor, 3) if live and args.sim_factor else 1.0
    doc = {
        "hardware": hardware,
        "idle_timeout_minutes": 10,
        "host": {"background_cores": round(fit["background_cores"], 3), "hidden_cores": round(hidden, 3),
                 "serving_cpu_s": round(fit["serving_cpu_s"], 4), "planner_start_s": start_s,
                 "planner_lead_s": lead_s},
        "available_node_types": {"local": {
            "count": 1, "min_workers": 1,
            "resources": {"CPU": node.cores, "memory": f"{node.memory_mb:.0f}MiB"},
            "power": {"idle_w": round(fit["idle_w"], 3)}, "speed": speed}},
    }
    header = (f"# Fitted by `python -m sim.calibrate` to {len(runs)} live run(s) ({fit['windows']} energy windows): "
              f"{', '.join(sorted({str(r.run_dir) for r in runs}))}\n"
              f"# live host factor {live}, simulator's at speed 1: {args.sim_factor}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + yaml.safe_dump(doc, sort_keys=False))
    print(header + yaml.safe_dump(doc, sort_keys=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
