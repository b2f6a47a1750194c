"""ipa and ipa-energy on traces besides the demo's: IPA's four Twitter windows on classify, and
llm on a constant and a bursty trace. One experiment per trace (both policies interleaved
per repeat), then one table, the report's repeats table per experiment: mean (min–max) of
J/request and system J/request (with their method), accuracy, p99, SLO attainment, shed and
failed shares, plan changes, and the p99 prediction error.

    make bench-traces        # or: python bench/other_traces.py --repeat 1 --seconds 120 --out results/traces

Rate factors scale each window's peak to about what this 2-core host serves (8–9 req/s on
classify); nothing here is tuned to one trace. The experiments are idempotent: a rerun keeps
complete runs.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from rich.console import Console  # noqa: E402

#: (experiment, pipeline, trace, offset s, rate factor): Twitter windows are damped by 8 first
TRACES = [
    ("classify-bursty", "classify", "bursty", 0, 0.25),
    ("classify-steady-low", "classify", "steady_low", 0, 1.0),
    ("classify-steady-high", "classify", "steady_high", 0, 0.25),
    ("classify-fluctuating", "classify", "fluctuating", 0, 0.25),
    ("llm-constant", "llm", "constant:5", 0, 1.0),
    ("llm-bursty", "llm", "bursty", 600, 0.3),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/traces", help="results folder")
    parser.add_argument("--seconds", type=int, default=120, help="seconds of each trace")
    parser.add_argument("--repeat", type=int, default=1, help="runs per policy and trace, interleaved")
    parser.add_argument("--only", default="", help="comma-separated experiment names (default: all)")
    args = parser.parse_args()

    from experiments.markdown import markdown_table
    from experiments.repeats import REPEAT_HEADERS, repeat_rows
    from experiments.report import collect, group_repeat_stats
    from experiments.runner import ExperimentConfig, run_experiment
    from loadgen.traces import parse_trace

    console = Console(width=160)
    wanted = {n for n in args.only.split(",") if n}
    dirs = []
    for name, pipeline, trace, offset, factor in TRACES:
        if wanted and name not in wanted:
            continue
        spec = parse_trace(trace, args.seconds, offset_s=offset, rate_factor=factor)
        cfg = ExperimentConfig(name=name, pipeline=pipeline, policies=["ipa", "ipa-energy"], trace=spec,
                               out=Path(args.out), repeat=args.repeat, max_replicas=2)
        dirs.append(run_experiment(cfg, console))
    # the repeats table of the report (energy cells name their method), one block per experiment
    rows = []
    for group in collect(dirs, allow_partial=True):
        stats = group_repeat_stats(group)
        for st, row in zip(stats, repeat_rows(stats)):
            error = st.fields.get("p99_prediction_error")
            rows.append([group.name, *row, "n/a" if error is None else f"{error.mean:.0%} ({error.min:.0%}–{error.max:.0%})"])
    console.print("ipa and ipa-energy on other traces, mean (min–max) over each policy's runs:")
    print(markdown_table(("experiment", *REPEAT_HEADERS, "p99 prediction error"), rows))  # plain: never wrapped
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
