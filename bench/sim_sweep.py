"""The planner's SLO and energy across traces in the simulator: a minute's check before a live bench.

Every window of `bench/other_traces.py` plus the bench's own (classify, bursty from second 340
× 0.3), each policy `--repeat` times (seeds differ), on this host's calibrated cluster
(sim/clusters/host-2c.yaml). Prints per window and policy the mean (min–max) SLO attainment,
shed share and J/request (`simulated (tdp-estimate)`), then the mean over windows.

    python bench/sim_sweep.py --repeat 3 --out /tmp/sweep

The simulator is optimistic in some ramps and pessimistic in others (docs/simulator.md,
fidelity): use it to compare planner changes with each other, not as the acceptance figure.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from other_traces import TRACES  # noqa: E402

#: the bench's window (Makefile `bench`), beside other_traces' windows
WINDOWS = [("classify-bench", "classify", "bursty", 340, 0.3), *TRACES]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/sim-sweep")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=120)
    parser.add_argument("--policies", default="ipa,ipa-energy")
    parser.add_argument("--only", default="", help="comma-separated window names (default: all)")
    parser.add_argument("--cluster", default=str(Path(__file__).resolve().parents[1] / "sim/clusters/host-2c.yaml"))
    args = parser.parse_args()

    from experiments.markdown import markdown_table
    from experiments.summary import load_run, summarize_run
    from loadgen.traces import parse_trace
    from sim.run import SimConfig, simulate

    wanted = {n for n in args.only.split(",") if n}
    policies = [p for p in args.policies.split(",") if p]
    table: dict[tuple[str, str], list] = {}
    started = time.time()
    for name, pipeline, trace, offset, factor in WINDOWS:
        if wanted and name not in wanted:
            continue
        spec = parse_trace(trace, args.seconds, offset_s=offset, rate_factor=factor)
        cfg = SimConfig(name=name, pipeline=pipeline, policies=policies, trace=spec, out=Path(args.out),
                        repeat=args.repeat, cluster=Path(args.cluster), force=True)
        exp = simulate(cfg)
        for policy in policies:
            for r in range(1, args.repeat + 1):
                folder = exp / (policy if r == 1 else f"{policy}.r{r}")
                s = summarize_run(load_run(folder))
                table.setdefault((name, policy), []).append(s)

    def cell(values, fmt):
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        return f"{fmt(sum(values) / len(values))} ({fmt(min(values))}–{fmt(max(values))})"

    rows, means = [], {}
    for (name, policy), runs in table.items():
        slo = [s.slo_attainment for s in runs]
        shed = [s.shed / max(s.requests, 1) for s in runs]
        jpr = [s.j_per_request for s in runs]
        rows.append([name, policy, cell(slo, lambda v: f"{v:.1%}"), cell(shed, lambda v: f"{v:.1%}"),
                     cell(jpr, lambda v: f"{v:.3f}"), f"{sum(s.plan_changes or 0 for s in runs) / len(runs):.1f}"])
        means.setdefault(policy, []).append(sum(slo) / len(slo))
    methods = sorted({s.j_per_request_method for runs in table.values() for s in runs if s.j_per_request_method})
    print(markdown_table(("window", "policy", "SLO", "shed", f"J/request ({', '.join(methods) or 'n/a'})",
                          "plan changes"), rows))
    for policy, v in means.items():
        print(f"{policy}: mean SLO over windows {sum(v) / len(v):.1%}, worst window {min(v):.1%}")
    print(f"{time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
