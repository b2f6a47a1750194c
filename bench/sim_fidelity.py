"""The simulator against recorded live runs (issue 13's fidelity table; docs/simulator.md).

Each live run folder under the given experiment folders is simulated with its own policy,
trace window and seed on the cluster file, and the two summaries are compared (sim.fidelity).

    .venv/bin/python bench/sim_fidelity.py results/bench-classify-bursty results/traces/* \
        --cluster sim/clusters/host-2c.yaml --policies ipa,ipa-energy
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sim.fidelity import BOUNDS, HEADER, compare  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", type=Path, help="live experiment (or run) folders")
    parser.add_argument("--cluster", type=Path, required=True, help="cluster YAML of the live runs' host")
    parser.add_argument("--policies", default="ipa,ipa-energy", help="only runs of these policies")
    args = parser.parse_args()
    wanted = set(args.policies.split(","))
    runs = []
    for p in args.experiments:
        runs += [p] if (p / "run.json").is_file() else sorted(d for d in p.iterdir() if (d / "summary.json").is_file())
    print(f"bounds: SLO ±{BOUNDS[0]:.0%} points, p99 ±{BOUNDS[1]:.0%}, J/request ±{BOUNDS[2]:.0%}, "
          f"same plan in ≥ {BOUNDS[3]:.0%} of intervals")
    print(HEADER)
    within = total = 0
    for run in runs:
        if run.name.split(".")[0] not in wanted:
            continue
        try:
            c = compare(run, args.cluster)
        except Exception as e:  # an incomplete or unreadable live run is reported, not fatal
            print(f"| {run} | not compared: {e} |")
            continue
        print(c.row(), flush=True)
        total += 1
        within += all(c.within().values())
    print(f"\n{within} of {total} runs within every bound")
    return 0


if __name__ == "__main__":
    sys.exit(main())
