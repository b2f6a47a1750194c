"""How long a joint plan takes: K of 10 pipelines sharing a 1,000-node × 2-core cluster (issue 13).

The 10 pipelines are two copies each of the catalog's CPU mini pipelines (video, classify,
llm, sam, sam-grounded), planned with the profile store's CPU profiles. Each draw picks a
cluster load u ~ U(0.3, 0.8) (the stages' CPU at a typical option, as a share of the cluster's
cores) and splits it over the K pipelines at random; each pipeline's λ̂ is its share of the
cores ÷ the CPU seconds a request of it costs (the median option per stage). Prints, per K,
the median and max wall time of :func:`planner.joint.optimize_joint` over the draws, the
largest program's binaries, and how many draws were feasible.

    python -m bench.joint_plan                 # 20 draws per K, K in 1 2 5 10
    python -m bench.joint_plan --draws 5 --k 10
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import planner.program as program
from ipa_energy.cluster import ClusterSupply, NodeSupply
from planner.checks import check_plan, is_feasible
from planner.constants import SERVING_CPU_S
from planner.joint import optimize_joint
from planner.profiles import profiles_from_store
from workloads import catalog
from workloads.profile_store import PROFILES_DIR, ProfileStore, hardware_id, planning_hardware

NAMES = ("video", "classify", "llm", "sam", "sam-grounded")

BINARIES: list[int] = []


class _Counting(program._Program):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        BINARIES.append(sum(len(zs) for zs in self.z))


def _pipelines(hardware: str):
    store = ProfileStore(PROFILES_DIR)
    hw, _ = planning_hardware(store, hardware)
    out = []
    for copy in (1, 2):
        for name in NAMES:
            spec = catalog.pipeline(name, "mini")
            profiles = profiles_from_store(store, hw, spec)
            cpu = 0.0  # CPU seconds a request costs: the median option of each stage, at batch 8 or its largest
            for st in spec.stages:
                per = sorted((profiles[(v.name, min(8, v.max_batch_size))].cpu_s_per_request or 0.0)
                             for v in st.variants if (v.name, min(8, v.max_batch_size)) in profiles)
                cpu += per[len(per) // 2]
            out.append((spec.model_copy(update={"name": f"{name}-{copy}"}), profiles, cpu))
    return hw, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--k", type=int, nargs="+", default=[1, 2, 5, 10])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--cores", type=float, default=2.0)
    ap.add_argument("--max-replicas", type=int, default=5000)
    ap.add_argument("--hardware", default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    program._Program = _Counting  # count each program's binaries
    hw, pipes = _pipelines(args.hardware or hardware_id("cpu"))
    supply = ClusterSupply(nodes=tuple(NodeSupply(node_id=f"n{i}", cores=args.cores, memory_mb=24 * 1024)
                                       for i in range(args.nodes)), source="bench")
    print(f"{args.nodes} nodes × {args.cores:g} cores, profiles {hw}, max_replicas {args.max_replicas}, "
          f"{args.draws} draws, cluster load U(0.3, 0.8)")
    print(f"{'K':>3} {'median s':>9} {'max s':>7} {'binaries':>9} {'feasible':>9} {'checks':>7}  pipelines")
    for k in args.k:
        rng = random.Random(args.seed + k)
        chosen = pipes[:k]
        times, feasible, ok = [], 0, 0
        BINARIES.clear()
        for _ in range(args.draws):
            u = rng.uniform(0.3, 0.8)
            shares = [rng.uniform(0.5, 1.5) for _ in chosen]
            loads = [u * supply.cores * s / sum(shares) / cpu for (_, _, cpu), s in zip(chosen, shares)]
            t = time.perf_counter()
            plans = optimize_joint([p for p, _, _ in chosen], [prof for _, prof, _ in chosen], loads,
                                   max_replicas=args.max_replicas, supply=supply, serving_cpu_s=SERVING_CPU_S)
            times.append(time.perf_counter() - t)
            if all(is_feasible(p) for p in plans):
                feasible += 1
                ok += all(not check_plan(spec, plan, prof, max_replicas=args.max_replicas)
                          for (spec, prof, _), plan in zip(chosen, plans))
        print(f"{k:>3} {statistics.median(times):>9.3f} {max(times):>7.3f} {max(BINARIES, default=0):>9} "
              f"{feasible:>4}/{args.draws:<4} {ok:>7}  {', '.join(p.name for p, _, _ in chosen)}")


if __name__ == "__main__":
    main()
