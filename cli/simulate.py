"""`ipa-energy simulate`: the policies over a trace in simulated time (sim), in the experiments' schema."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parsers"]


def _simulate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from cli.experiment import _weights, print_report
    from loadgen.options import trace_from_arguments
    from planner.policies import parse_policies
    from sim.run import SimConfig, simulate

    try:
        trace = trace_from_arguments(args)
        cfg = SimConfig(
            name=args.name or f"sim-{args.pipeline}-{trace.name}", pipeline=args.pipeline,
            policies=parse_policies(args.policies), repeat=args.repeat, trace=trace, tier=args.tier,
            hardware=args.hardware or None, cluster=Path(args.cluster) if args.cluster else None, out=Path(args.out),
            force=args.force, interval_s=args.interval, predictor=args.predictor, margin=args.margin,
            max_replicas=args.max_replicas, weights=_weights(args), drain_s=args.drain,
            loadgen_cpu_s=args.loadgen_cpu_s, warm_variants=args.warm_variants, aggregate_s=args.aggregate, poll_s=args.poll or (args.aggregate or 2.0),
        )
        console = Console()
        exp_dir = simulate(cfg, console)
    except (ValueError, FileNotFoundError) as e:
        print(f"ipa-energy simulate: {e}", file=sys.stderr)
        return 2
    if args.report:
        return print_report([exp_dir], exp_dir / "report", "md", console)
    console.print(f"runs: {exp_dir}")
    return 0


def add_parsers(sub) -> None:
    from cli.experiment import add_weight_arguments
    from loadgen.options import add_replay_arguments

    p = sub.add_parser("simulate", help="simulate policies over a trace, request by request (sim), "
                                        "writing the experiments' result schema")
    add_replay_arguments(p)
    p.add_argument("--policies", default="ipa,ipa-energy", help="comma-separated policies, or 'all'")
    p.add_argument("--cluster", default="", help="cluster YAML (node types × counts; docs/simulator.md); "
                                                 "default: this host")
    p.add_argument("--name", default="", help="experiment folder name (default: sim-<pipeline>-<trace>)")
    p.add_argument("--out", default="results", help="folder the experiment folder goes into")
    p.add_argument("--force", action="store_true", help="simulate runs that are already complete again")
    p.add_argument("--repeat", type=int, default=1, metavar="K", help="runs per policy (repeat r: seed + r − 1)")
    p.add_argument("--tier", default="mini", help="catalog tier: mini or full")
    p.add_argument("--hardware", default="", help="hardware id of the profiles (default: the cluster's, else this machine's)")
    p.add_argument("--interval", type=float, default=10.0, help="planner adaptation interval (s)")
    p.add_argument("--predictor", default="lstm", help="load predictor: lstm, reactive or max")
    p.add_argument("--margin", type=float, default=1.0, help="plan for predicted load × this")
    p.add_argument("--max-replicas", type=int, default=2, help="replica cap per stage")
    add_weight_arguments(p)
    p.add_argument("--loadgen-cpu-s", type=float, default=None, metavar="S",
                   help="CPU seconds per request of a load generator on the first node (default: the cluster file's, 0)")
    p.add_argument("--warm-variants", action=argparse.BooleanOptionalAction, default=None,
                   help="replicas keep their slot's other variants built, a switch a swap (serve_app.warm; "
                        "default: the cluster file's, on)")
    p.add_argument("--aggregate", type=int, default=None, metavar="S",
                   help="scale mode: per-second flows instead of single requests (days of traffic, thousands of "
                        "nodes), written as rows per S seconds (docs/simulator.md, 'Scale mode')")
    p.add_argument("--poll", type=float, default=None, metavar="S",
                   help="seconds between energy windows and replica samples (default 2; scale mode: --aggregate)")
    p.add_argument("--report", action="store_true", help="write the report when done")
    p.set_defaults(func=_simulate)
