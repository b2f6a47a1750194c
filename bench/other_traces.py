"""ipa and ipa-energy on traces besides the demo's: IPA's four Twitter windows on classify, and
llm on a constant and a bursty trace. One experiment per trace (both policies interleaved
per repeat), then one table: SLO attainment, shed, failed, J/request and accuracy per policy.

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
from rich.table import Table  # noqa: E402

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

    from experiments.report import collect
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
    table = Table("experiment", "policy", "runs", "SLO attainment", "shed / sent", "failed / sent", "J/request",
                  "system J/request", "accuracy", "p99 ms", "p99 pred. error", title="ipa and ipa-energy on other traces")
    for group in collect(dirs, allow_partial=True):
        for policy in ("ipa", "ipa-energy"):
            runs = [s for s in group.summaries if s.policy == policy]
            if not runs:
                continue
            slo = [s.slo_attainment or 0.0 for s in runs]
            table.add_row(group.name, policy, str(len(runs)),
                          f"{sum(slo) / len(slo):.1%} ({min(slo):.1%}–{max(slo):.1%})",
                          f"{sum(s.shed for s in runs)} / {sum(s.requests for s in runs)}",
                          f"{sum(s.failed for s in runs)} / {sum(s.requests for s in runs)}",
                          _mean([s.j_per_request for s in runs], ".3f"), _mean([s.system_j_per_request for s in runs], ".3f"),
                          _mean([s.accuracy for s in runs], ".4f"), _mean([s.p99_ms for s in runs], ".0f"),
                          _mean([s.p99_prediction_error for s in runs], ".0%"))
    console.print(table)
    return 0


def _mean(values, fmt: str) -> str:
    got = [v for v in values if v is not None]
    return format(sum(got) / len(got), fmt) if got else "n/a"


if __name__ == "__main__":
    raise SystemExit(main())
