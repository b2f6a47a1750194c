"""CPU cost of the per-node energy actor (target ≤1% of the node), sampling at its defaults.

    .venv/bin/python bench/energy_overhead.py --seconds 60
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402

from energy.actor import node_actor  # noqa: E402
from ipa_energy.energy import NodeEnergyReport  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    try:
        actor = node_actor()
        ray.get(actor.rates.remote())  # started
        first, first_s = NodeEnergyReport.model_validate(ray.get(actor.summary.remote())), time.time()
        time.sleep(args.seconds)
        last, last_s = NodeEnergyReport.model_validate(ray.get(actor.summary.remote())), time.time()
    finally:
        ray.shutdown()
    methods = sorted({d.method for d in last.devices.values()})
    # Steady state only: the actor's CPU seconds between the two summaries, not its start-up.
    core_pct = (last.actor_cpu_s - first.actor_cpu_s) / (last_s - first_s) * 100
    print(f"energy actor, {args.seconds:.0f} s steady state, meters {methods}: {core_pct:.3f}% of one core = "
          f"{core_pct / (os.cpu_count() or 1):.3f}% of this node's {os.cpu_count()} CPUs "
          f"(since start, with start-up: {last.overhead_cpu_percent_of_one_core:.2f}% of one core)")


if __name__ == "__main__":
    main()
