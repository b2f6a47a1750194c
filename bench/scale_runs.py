"""Issue 13's scale runs: every policy over the whole Twitter trace on 1,000 nodes, timed.

Each policy is simulated in scale mode (docs/simulator.md, "Scale mode") into one experiment
folder (complete runs are kept: a rerun only does what is missing), then one table is printed:
wall time and × real time per run, SLO attainment, shed, accuracy, J/request dynamic and
system with their ratio to ipa's, and nodes in use (mean, peak).

    .venv/bin/python bench/scale_runs.py --out results/scale            # every policy, 22 days
    .venv/bin/python bench/scale_runs.py --seconds 86400 --policies ipa,ipa-energy   # one day
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from experiments.summary import load_run, summarize_run  # noqa: E402
from loadgen import traces  # noqa: E402
from planner.policies import parse_policies  # noqa: E402
from sim.run import SimConfig, simulate  # noqa: E402

WALL = re.compile(r"simulated (\d+) s in ([0-9.]+) s of wall time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default="video")
    parser.add_argument("--policies", default="all")
    parser.add_argument("--seconds", type=int, default=None, help="of the whole trace (default: all of it)")
    parser.add_argument("--rate-factor", type=float, default=110.0,
                        help="on the damped trace; 110 puts video's peak (5,300 req/s) at ~1/3 of the cores of "
                             "1,000 × 2-core nodes, within the 1,000 replicas a stage may have")
    parser.add_argument("--cluster", type=Path, default=Path("sim/clusters/cpu-1000.yaml"))
    parser.add_argument("--max-replicas", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=300.0,
                        help="planner interval (s); surges step it at once between intervals")
    parser.add_argument("--aggregate", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("results/scale"))
    parser.add_argument("--name", default="")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--table-only", action="store_true", help="simulate nothing: tabulate the complete runs there are")
    args = parser.parse_args()
    trace = traces.parse_trace("full", args.seconds, rate_factor=args.rate_factor)
    cfg = SimConfig(name=args.name or f"scale-{args.pipeline}-{trace.seconds}s", pipeline=args.pipeline,
                    policies=parse_policies(args.policies), trace=trace, cluster=args.cluster, out=args.out,
                    interval_s=args.interval, max_replicas=args.max_replicas, aggregate_s=args.aggregate,
                    poll_s=float(args.aggregate))
    exp = cfg.out / cfg.name if args.table_only else simulate(cfg)
    rows, base = [], None
    for policy in cfg.policies:
        if not (exp / policy / "summary.json").is_file():
            continue  # not simulated (yet)
        run = load_run(exp / policy)
        s = summarize_run(run)
        wall = next((WALL.search(n) for n in run.meta.notes if WALL.search(n)), None)
        nodes = [r.nodes for r in run.replicas if r.nodes is not None]
        rows.append((policy, s, float(wall.group(2)) if wall else None, int(wall.group(1)) if wall else None, nodes))
        if policy == "ipa":
            base = s
    print(f"{cfg.pipeline}, whole Twitter trace from 0 for {trace.seconds} s × {trace.rate_factor:g} "
          f"(damped /{trace.damping:g}), {args.cluster}, interval {cfg.interval_s:g} s, rows per {cfg.aggregate_s} s")
    print("| policy | wall (s) | × real time | requests | SLO | shed | accuracy | J/request (dynamic) | ÷ ipa "
          "| J/request (system) | ÷ ipa | nodes mean / peak |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for policy, s, wall, simulated_s, nodes in rows:
        def ratio(a, b):
            return f"{a / b:.3f}" if a is not None and b else "–"
        print(f"| {policy} | {wall or 0:.0f} | {(simulated_s or 0) / wall if wall else 0:.0f} | {s.requests:,} "
              f"| {s.slo_attainment or 0:.2%} | {s.shed / s.requests if s.requests else 0:.2%} | {s.accuracy or 0:.4f} "
              f"| {s.j_per_request or 0:.3f} | {ratio(s.j_per_request, base and base.j_per_request)} "
              f"| {s.system_j_per_request or 0:.3f} | {ratio(s.system_j_per_request, base and base.system_j_per_request)} "
              f"| {sum(nodes) / len(nodes) if nodes else 0:.0f} / {max(nodes, default=0)} |")
    print(f"energy: {rows[0][1].energy_method} over each run's load window")
    if args.report:
        from experiments.report import write_report

        path, _ = write_report([exp], exp / "report")
        print(f"report: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
