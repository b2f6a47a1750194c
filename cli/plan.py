"""`ipa-energy plan`: solve the program for a pipeline at a load (or a problem file), from the profiles."""

from __future__ import annotations

import argparse
import sys

__all__ = ["add_parsers"]


from planner.constants import SERVING_CPU_S  # noqa: E402  (light: constants only)


def _problem(args: argparse.Namespace):
    """(Problem, hardware label) from the flags; None (after a message) when they don't name one."""
    from planner.problem import Problem, problem_from_catalog

    if args.problem:
        try:
            problem = Problem.load(args.problem)
        except (OSError, ValueError) as e:
            print(f"ipa-energy plan: cannot read the problem {args.problem}: {e}", file=sys.stderr)
            return None
        return problem, ",".join(sorted({p.hardware for p in problem.profiles})) or "-"
    if not args.pipeline or args.load is None:
        print("ipa-energy plan: give --pipeline and --load, --problem FILE, or --benchmark", file=sys.stderr)
        return None
    from workloads.profile_store import PROFILES_DIR, ProfileStore, hardware_id

    hardware = args.hardware or hardware_id("cpu")
    if not ProfileStore(PROFILES_DIR).path(hardware).exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.json"))
        print(f"ipa-energy plan: no profiles for {hardware!r}; shipped: {known} (use --hardware)", file=sys.stderr)
        return None
    supply = _supply(args.cluster)
    return problem_from_catalog(args.pipeline, args.load, tier=args.tier, hardware=hardware, sla_ms=args.sla,
                                margin=args.margin, max_replicas=args.max_replicas, max_variants=args.max_variants,
                                queueing=not args.no_queueing, supply=supply,
                                serving_cpu_s=SERVING_CPU_S if supply else 0.0), hardware


def _supply(cluster: str):
    """None, this host's supply, or a ClusterSupply file (JSON or YAML)."""
    if not cluster:
        return None
    from ipa_energy.cluster import ClusterSupply
    from planner.capacity import supply_of_this_host

    if cluster == "this-host":
        return supply_of_this_host()
    import yaml
    from pathlib import Path

    return ClusterSupply.model_validate(yaml.safe_load(Path(cluster).read_text()))


def _plan(args: argparse.Namespace) -> int:
    import json

    from planner.tables import comparison_table

    if args.benchmark:
        from planner import benchmark

        return benchmark.main(["--benchmark", "--repeats", str(args.repeats)])
    found = _problem(args)
    if found is None:
        return 2
    problem, hardware = found
    if args.write_problem:
        from ipa_energy.files import write_json

        write_json(args.write_problem, problem)
        print(f"problem written to {args.write_problem}", file=sys.stderr)
    policies = args.policy.split(",") if args.policy else [problem.policy]
    try:
        plans = [problem.model_copy(update={"policy": policy}).solve() for policy in policies]
    except ValueError as e:  # e.g. an unknown policy, or infadapter on a multi-stage pipeline
        print(f"ipa-energy plan: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([p.model_dump(mode="json") for p in plans], indent=2))
    else:
        print(comparison_table(plans))
    profiles = problem.profile_lookup()
    used = {profiles[(m.variant, m.batch_size)].energy_method for p in plans for sp in p.stages.values()
            for m in sp.members() if (m.variant, m.batch_size) in profiles}
    print(f"power (W) and J/request are predictions from profiles of {hardware} measured with "
          f"{'+'.join(sorted(used)) or 'no profile'}", file=sys.stderr)
    return 0


def add_parsers(sub) -> None:
    from planner.constants import DEFAULT_MAX_REPLICAS, DEFAULT_MAX_VARIANTS
    from planner.policies import PLANNER_POLICIES

    plan = sub.add_parser("plan", help="solve IPA's program (with energy) for a pipeline at a load, from the profiles")
    plan.add_argument("--pipeline", default="", help="catalog pipeline to plan")
    plan.add_argument("--load", type=float, default=None, help="predicted load (req/s)")
    plan.add_argument("--sla", type=float, default=None, help="end-to-end SLA (ms; default: the pipeline's)")
    plan.add_argument("--policy", default=None,
                      help=f"{', '.join(PLANNER_POLICIES)} (comma-separated to compare; default ipa-energy, "
                           "or the problem file's)")
    plan.add_argument("--margin", type=float, default=1.0, help="headroom multiplier on the load")
    plan.add_argument("--tier", default="mini", help="catalog tier: mini (CPU stand-ins) or full")
    plan.add_argument("--hardware", default="", help="profile hardware id (default: this machine's)")
    plan.add_argument("--max-replicas", type=int, default=DEFAULT_MAX_REPLICAS, help="replica cap per stage")
    plan.add_argument("--max-variants", type=int, default=DEFAULT_MAX_VARIANTS, help="most variants in an infadapter mix")
    plan.add_argument("--problem", default="", help="solve this problem JSON (docs/plan-format.md) instead of catalog + store")
    plan.add_argument("--write-problem", default="", help="also write the problem solved as JSON to this file")
    plan.add_argument("--json", action="store_true", help="print the Plan(s) as JSON (the format PUT /v1/plan takes)")
    plan.add_argument("--benchmark", action="store_true", help="decision time on synthetic 1-9 stages x 1-9 variants")
    plan.add_argument("--repeats", type=int, default=5, help="solves per cell of --benchmark")
    plan.add_argument("--cluster", default="", help="fit the plan to a cluster: 'this-host', or a JSON/YAML file "
                                                     "{nodes: [{node_id, cores, memory_mb, gpus}], source} (docs/plan-format.md)")
    plan.add_argument("--no-queueing", action="store_true", help="IPA's latency model: p99 + batch fill, no wait")
    plan.set_defaults(func=_plan)
