"""`make demo`: replay a Twitter window against `ipa` and `ipa-energy` on a local Ray, then report.

The classify pipeline (ResNet18…152 stand-ins, mini tier, random weights) on a local Ray
cluster; Locust replays the rising edge of IPA's `bursty` window, scaled to 2 cores, once per
policy with the planner actor adapting every 10 s; the report (markdown + PNGs) lands in
results/demo/report/ and its headline table is printed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

__all__ = ["DEMO_TRACE", "add_parsers", "run_demo"]

console = Console(width=max(Console().width, 120))

#: the window's rise from ~6 to ~28 req/s (×8 damped) sits at 340–460 s
DEMO_TRACE = {"name": "bursty", "offset_s": 340, "seconds": 120, "rate_factor": 0.3}


def run_demo(out: str = "results", pipeline: str = "classify", seconds: int = DEMO_TRACE["seconds"],
             rate_factor: float = DEMO_TRACE["rate_factor"], interval_s: float = 10.0) -> int:
    from cli.experiment import print_report
    from experiments.runner import ExperimentConfig, run_experiment
    from experiments.summary import load_run
    from loadgen.traces import twitter

    trace = twitter(DEMO_TRACE["name"], seconds, offset_s=DEMO_TRACE["offset_s"], rate_factor=rate_factor)
    cfg = ExperimentConfig(name="demo", pipeline=pipeline, policies=["ipa", "ipa-energy"], trace=trace, out=Path(out),
                           force=True, interval_s=interval_s, max_replicas=2, drain_s=60)
    console.print(f"demo: {pipeline} pipeline (mini tier, random weights) on a local Ray; Locust replays {trace.name} "
                  f"seconds {trace.offset_s}–{trace.offset_s + seconds} ×{rate_factor} for ipa, then ipa-energy "
                  f"(planner every {interval_s:.0f} s)")
    exp_dir = run_experiment(cfg, console)
    code = print_report([exp_dir], exp_dir / "report", "md", console)
    runs = [load_run(exp_dir / p, allow_partial=True) for p in cfg.policies]
    for run in runs:
        changes = [d for d in run.decisions if d.changed]
        console.print(f"{run.meta.policy}: {len(changes)} plan change(s): " + "; ".join(
            ", ".join(f"{s}={v['variant']}×{v['replicas']}@b{v['batch_size']}" for s, v in d.stages.items())
            + f" (predicted {d.predicted_rps:.1f} req/s)" for d in changes))
    failed = [r.meta.policy for r in runs if r.meta.status != "complete"]
    if failed:
        console.print(f"[red]runs not complete: {failed}[/red]")
    return code or (1 if failed else 0)


def _demo(args: argparse.Namespace) -> int:
    return run_demo(out=args.out, pipeline=args.pipeline, seconds=args.seconds, rate_factor=args.rate_factor)


def add_parsers(sub) -> None:
    demo = sub.add_parser("demo", help="replay a Twitter window against ipa and ipa-energy locally, write the report")
    demo.add_argument("--out", default="results", help="results folder (the demo writes <out>/demo)")
    demo.add_argument("--pipeline", default="classify", help="catalog pipeline to serve")
    demo.add_argument("--seconds", type=int, default=DEMO_TRACE["seconds"], help="seconds of the bursty window to replay")
    demo.add_argument("--rate-factor", type=float, default=DEMO_TRACE["rate_factor"],
                      help="scale of the trace's rate for this machine")
    demo.set_defaults(func=_demo)
