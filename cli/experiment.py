"""`ipa-energy experiment | report | sweep`: run policies on a trace, report runs, sweep the profiles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parsers", "print_report"]


def _experiment(args: argparse.Namespace) -> int:
    from rich.console import Console

    from experiments.runner import ExperimentConfig, run_experiment
    from loadgen.options import trace_from_arguments
    from planner.policies import parse_policies

    try:
        trace = trace_from_arguments(args)
        cfg = ExperimentConfig(
            name=args.name or f"{args.pipeline}-{trace.name}", pipeline=args.pipeline, policies=parse_policies(args.policies),
            repeat=args.repeat, trace=trace, tier=args.tier, hardware=args.hardware or None, out=Path(args.out), force=args.force,
            address=args.address, url=args.url, interval_s=args.interval, predictor=args.predictor, margin=args.margin,
            max_replicas=args.max_replicas, senders=args.senders, drain_s=args.drain,
            weights=_weights(args),
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"ipa-energy experiment: {e}", file=sys.stderr)
        return 2
    console = Console()
    exp_dir = run_experiment(cfg, console)
    if args.report:
        return print_report([exp_dir], exp_dir / "report", "md", console)
    return 0


def print_report(paths: list[Path], out: Path, fmt: str, console, allow_partial: bool = False) -> int:
    """Write the report of `paths` into `out` and print each experiment's headline table (with repeats:
    the repeats table, mean (min–max) per policy, then the per-run table)."""
    from experiments.repeats import ratio_note, repeat_table
    from experiments.report import (
        group_repeat_stats, has_repeats, headline_table, ipa_energy_ratio, run_labels, write_report,
    )
    from experiments.summary import RunFormatError

    try:
        report, groups = write_report(paths, out, fmt=fmt, allow_partial=allow_partial)
    except RunFormatError as e:
        print(f"ipa-energy report: {e}", file=sys.stderr)
        return 2
    for group in groups:
        console.print(f"[bold]{group.name}[/bold]")
        if has_repeats(group):
            stats = group_repeat_stats(group)
            console.print("mean (min–max) over each policy's runs:")
            print(repeat_table(stats))  # plain: a wrapped markdown table is unreadable
            console.print("every run:")
            print(headline_table(group.summaries, run_labels(group)))
            ratio = ratio_note(stats)
        else:
            print(headline_table(group.summaries))
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
    return print_report(paths, out, "html" if args.html else "md", Console(), allow_partial=args.allow_partial)


def _sweep(args: argparse.Namespace) -> int:
    from experiments.sweep import KINDS, sweep

    def listed(text: str) -> list[str] | None:
        return [x for x in text.split(",") if x] or None

    for kind in KINDS if args.kind == "all" else (args.kind,):
        out = sweep(kind, Path(args.out), hardware_ids=listed(args.hardware), pipelines=listed(args.pipeline),
                    families=listed(args.family), variants=listed(args.variant), batch_size=args.batch_size)
        print(f"sweep {kind}: {out}")
    return 0


def _weights(args):
    """The objective weights the flags set (the rest at their defaults)."""
    from planner.terms import Weights

    flags = {"gamma": args.gamma, "gamma_relative": args.gamma_relative, "accuracy_budget": args.accuracy_budget}
    given = {k: v for k, v in flags.items() if v is not None}
    if args.gamma is not None and args.gamma_relative is None:
        given["gamma_relative"] = None  # a weight per watt asked for: it decides, not the elasticity
    return Weights(**given)


def add_weight_arguments(p) -> None:
    """ipa-energy's objective flags (experiment and simulate)."""
    p.add_argument("--gamma", type=float, default=None,
                   help="ipa-energy's weight per watt of predicted power, instead of --gamma-relative")
    p.add_argument("--gamma-relative", type=float, default=None, metavar="ELASTICITY",
                   help="ipa-energy's energy weight relative to IPA's plan at the same load: 0.1 (the default, "
                        "planner.terms.Weights) trades 1 %% of relative accuracy for 10 %% less power")
    p.add_argument("--accuracy-budget", type=float, default=None, metavar="FRACTION",
                   help="ipa-energy gives up at most this much pipeline accuracy (0.01 = one point, the default) "
                        "against IPA's plan at the same load and capacity; 1: no limit")


def add_parsers(sub) -> None:
    from loadgen.options import add_replay_arguments
    from planner.policies import POLICIES

    exp = sub.add_parser("experiment", help="replay a trace with Locust against each policy in turn and record everything")
    add_replay_arguments(exp)
    exp.add_argument("--policies", default="ipa,ipa-energy",
                     help=f"comma-separated policies ({', '.join(p for p in POLICIES if p != 'static')}), "
                          "or 'all' for every one of the comparison but infadapter")
    exp.add_argument("--name", default="", help="experiment folder name (default: <pipeline>-<trace>)")
    exp.add_argument("--out", default="results", help="folder the experiment folder goes into")
    exp.add_argument("--force", action="store_true", help="rerun runs that are already complete")
    exp.add_argument("--repeat", type=int, default=1, metavar="K",
                     help="run each policy K times, interleaved (repeat r of every policy before r + 1; repeat r ≥ 2 "
                          "in <policy>.r<r>); the report gives the mean and min–max of each figure")
    exp.add_argument("--tier", default="mini", help="catalog tier: mini (CPU stand-ins) or full")
    exp.add_argument("--hardware", default="", help="hardware id of the planner's profiles (default: this machine's)")
    exp.add_argument("--address", default=None, help="join a Ray cluster (e.g. auto) instead of starting one")
    exp.add_argument("--url", default=None, help="base URL of an app already serving there")
    exp.add_argument("--interval", type=float, default=10.0, help="planner adaptation interval (s)")
    exp.add_argument("--predictor", default="lstm", help="load predictor: lstm, reactive or max")
    exp.add_argument("--margin", type=float, default=1.0, help="plan for predicted load × this (headroom)")
    exp.add_argument("--max-replicas", type=int, default=2, help="replica cap per stage")
    add_weight_arguments(exp)
    exp.add_argument("--report", action="store_true", help="write the report when done")
    exp.set_defaults(func=_experiment)

    rep = sub.add_parser("report", help="markdown/HTML report with plots from experiment or run folders")
    rep.add_argument("runs", nargs="+", help="experiment folders (or single run folders)")
    rep.add_argument("--out", default="", help="report folder (default: <experiment>/report)")
    rep.add_argument("--html", action="store_true", help="HTML instead of markdown")
    rep.add_argument("--allow-partial", action="store_true", help="include runs whose status is not complete")
    rep.set_defaults(func=_report)

    from experiments.sweep import KINDS

    sw = sub.add_parser("sweep", help="energy per request vs batch size, model size, hardware, or TDP estimate vs measured")
    sw.add_argument("kind", choices=(*KINDS, "all"), help="what to sweep")
    sw.add_argument("--hardware", default="", help="comma-separated hardware ids (default: every stored profile file)")
    sw.add_argument("--pipeline", default="", help="only these catalog pipelines, comma-separated")
    sw.add_argument("--family", default="", help="only these variant families, comma-separated (e.g. resnet)")
    sw.add_argument("--variant", default="", help="only these variants, comma-separated")
    sw.add_argument("--batch-size", type=int, default=None, help="only this batch size")
    sw.add_argument("--out", default="results/sweeps", help="folder for the sweep's markdown and PNGs")
    sw.set_defaults(func=_sweep)
