"""`ipa-energy experiment | report | sweep` (added to the main command line by ipa_energy.cli)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _experiment(args: argparse.Namespace) -> int:
    from rich.console import Console

    from experiments.policies import parse_policies
    from experiments.runner import ExperimentConfig, run_experiment
    from loadgen.traces import parse_trace

    try:
        trace = parse_trace(args.trace, args.seconds or None, rate_factor=args.rate_factor, offset_s=args.offset, seed=args.seed)
        cfg = ExperimentConfig(
            name=args.name or f"{args.pipeline}-{trace.name}", pipeline=args.pipeline, policies=parse_policies(args.policies),
            trace=trace, tier=args.tier, hardware=args.hardware or None, out=Path(args.out), force=args.force,
            address=args.address, url=args.url, interval_s=args.interval, predictor=args.predictor, margin=args.margin,
            max_replicas=args.max_replicas, senders=args.senders, drain_s=args.drain,
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"ipa-energy experiment: {e}", file=sys.stderr)
        return 2
    console = Console()
    exp_dir = run_experiment(cfg, console)
    if args.report:
        return _report_paths([exp_dir], exp_dir / "report", "md", console)
    return 0


def _report_paths(paths: list[Path], out: Path, fmt: str, console) -> int:
    from experiments.report import headline_table, ipa_energy_ratio, write_report

    report, groups = write_report(paths, out, fmt=fmt)
    for group in groups:
        console.print(f"[bold]{group.name}[/bold]")
        print(headline_table(group.summaries))  # plain: a wrapped markdown table is unreadable
        ratio = ipa_energy_ratio(group.summaries)
        if ratio:
            console.print(ratio)
        for policy, why in group.skipped.items():
            console.print(f"[yellow]{policy}: not in the table: {why}[/yellow]")
    console.print(f"report: {report}")
    return 0


def _report(args: argparse.Namespace) -> int:
    from rich.console import Console

    paths = [Path(p) for p in args.runs]
    missing = [str(p) for p in paths if not p.is_dir()]
    if missing:
        print(f"ipa-energy report: not a folder: {missing}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else (paths[0] / "report" if len(paths) == 1 else Path("results/report"))
    return _report_paths(paths, out, "html" if args.html else "md", Console())


def _sweep(args: argparse.Namespace) -> int:
    from experiments.sweep import sweep

    from experiments.sweep import KINDS

    for kind in KINDS if args.kind == "all" else (args.kind,):
        out = sweep(kind, Path(args.out), hardware_ids=[h for h in args.hardware.split(",") if h] or None,
                    families=[f for f in args.family.split(",") if f] or None)
        print(f"sweep {kind}: {out}")
    return 0


def add_parsers(sub) -> None:
    exp = sub.add_parser("experiment", help="replay a trace with Locust against each policy in turn and record everything")
    exp.add_argument("--pipeline", default="video")
    exp.add_argument("--policies", default="ipa,ipa-energy", help="comma-separated, or 'all' (every baseline)")
    exp.add_argument("--trace", default="bursty", help="Twitter window (bursty, steady_low, steady_high, fluctuating), constant:RPS or a CSV")
    exp.add_argument("--seconds", type=int, default=0, help="seconds of the trace (0 = all)")
    exp.add_argument("--offset", type=int, default=0, help="seconds of the trace to skip")
    exp.add_argument("--rate-factor", type=float, default=1.0, help="scale the trace's rate to the machine (recorded)")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("--name", default="", help="experiment folder name (default: <pipeline>-<trace>)")
    exp.add_argument("--out", default="results")
    exp.add_argument("--force", action="store_true", help="rerun runs that are already complete")
    exp.add_argument("--tier", default="mini")
    exp.add_argument("--hardware", default="", help="hardware id of the planner's profiles (default: this machine's)")
    exp.add_argument("--address", default=None, help="join a Ray cluster (e.g. auto) instead of starting one")
    exp.add_argument("--url", default=None, help="base URL of an app already serving there")
    exp.add_argument("--interval", type=float, default=10.0, help="planner interval (s)")
    exp.add_argument("--predictor", default="lstm", help="lstm, reactive or max")
    exp.add_argument("--margin", type=float, default=1.0, help="plan for predicted load × this (headroom)")
    exp.add_argument("--max-replicas", type=int, default=2)
    exp.add_argument("--senders", type=int, default=200, help="Locust users (most requests in flight)")
    exp.add_argument("--drain", type=float, default=60.0, help="seconds to wait for answers after the trace ends")
    exp.add_argument("--report", action="store_true", help="write the report when done")
    exp.set_defaults(func=_experiment)

    rep = sub.add_parser("report", help="markdown/HTML report with plots from experiment or run folders")
    rep.add_argument("runs", nargs="+", help="experiment folders (or single run folders)")
    rep.add_argument("--out", default="", help="report folder (default: <experiment>/report)")
    rep.add_argument("--html", action="store_true", help="HTML instead of markdown")
    rep.set_defaults(func=_report)

    sw = sub.add_parser("sweep", help="energy per request vs batch size, model size, hardware, or TDP estimate vs measured")
    sw.add_argument("kind", choices=("batch", "model", "hardware", "method", "all"))
    sw.add_argument("--hardware", default="", help="comma-separated hardware ids (default: every stored profile file)")
    sw.add_argument("--family", default="", help="only these variant families, comma-separated (e.g. resnet)")
    sw.add_argument("--out", default="results/sweeps")
    sw.set_defaults(func=_sweep)
