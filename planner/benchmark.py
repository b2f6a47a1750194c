"""Decision time of the optimizer on synthetic problems (IPA's scalability figure).

    python -m planner.benchmark --benchmark --stages 1 3 9 --variants 1 5 9   # or: ipa-energy plan --benchmark
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ipa_energy.spec import Accuracy, PipelineSpec, Profile, Resources, StageSpec, VariantSpec
from planner.checks import is_feasible
from planner.constants import DEFAULT_BATCH_SIZES
from planner.optimizer import optimize
from planner.solver import DEFAULT_SOLVER

__all__ = [
    "benchmark", "main", "print_benchmark", "synthetic_problem",
]

def synthetic_problem(n_stages: int, n_variants: int, batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES,
                      seed: int = 0) -> tuple[PipelineSpec, dict[tuple[str, int], Profile], float, float]:
    """A random but plausible problem: (pipeline, profiles, load req/s, SLA ms)."""
    import random
    from datetime import datetime, timezone

    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    res = Resources(num_cpus=1.0)
    stages, profiles = [], {}
    bmax = max(batch_sizes)
    stage_lat = 0.0
    for s in range(n_stages):
        task = "detect" if s == 0 else "classify-crops"
        variants = []
        lat_b1 = []
        for m in range(n_variants):
            size = (m + 1) / n_variants
            name = f"s{s}-v{m}"
            acc = min(0.99, 0.4 + 0.5 * size * rng.uniform(0.85, 1.0))
            variants.append(VariantSpec(name=name, task=task, family="synthetic", architecture="synthetic",
                                        accuracy=Accuracy(value=acc, metric="synthetic", source="synthetic"),
                                        resources=res, max_batch_size=bmax))
            l1 = rng.uniform(5, 20) * (1 + 6 * size)  # ms at batch 1
            lat_b1.append(l1)
            e1 = rng.uniform(0.5, 1.0) * (0.05 + 2 * size)  # J at batch 1
            slope = rng.uniform(0.3, 0.8)
            for b in batch_sizes:
                lat = l1 * (1 + slope * (b - 1))
                profiles[(name, b)] = Profile(
                    variant=name, batch_size=b, hardware="synthetic", resources=res,
                    latency_p50_ms=lat * 0.9, latency_p99_ms=lat, throughput_rps=1000.0 * b / lat,
                    energy_per_request_j=e1 * (0.4 + 0.6 / b), idle_power_w=5.0,
                    energy_method="tdp-estimate", window_s=5.0, weights="random", measured_at=now)
        stage_lat += statistics.median(lat_b1)
        stages.append(StageSpec(name=f"stage{s}", variants=tuple(variants)))
    pipeline = PipelineSpec(name="synthetic", stages=tuple(stages), sla_ms=max(50.0, 3 * stage_lat))
    return pipeline, profiles, rng.uniform(20, 200), pipeline.sla_ms


def benchmark(stages: Iterable[int] = range(1, 10), variants: Iterable[int] = range(1, 10),
              batch_sizes: Sequence[int] = DEFAULT_BATCH_SIZES, max_replicas: int = 100, repeats: int = 5,
              seed: int = 0, solvers: Sequence[str] = (DEFAULT_SOLVER,), policy: str = "ipa-energy",
              show: bool = True) -> list[dict[str, Any]]:
    """Median decision time (build + solve) over `repeats` seeded random problems per size."""
    rows = []
    for s in stages:
        for m in variants:
            for solver in solvers:
                times, feas = [], 0
                for r in range(repeats):
                    pipe, profs, load, sla = synthetic_problem(s, m, batch_sizes, seed=seed * 100_003 + r)
                    t0 = time.perf_counter()
                    plan = optimize(pipe, profs, load, sla_ms=sla, batch_sizes=batch_sizes,
                                    max_replicas=max_replicas, policy=policy, solver=solver)
                    times.append(time.perf_counter() - t0)
                    feas += is_feasible(plan)
                rows.append({"stages": s, "variants": m, "batch_sizes": len(batch_sizes), "solver": solver,
                             "median_s": statistics.median(times), "max_s": max(times),
                             "feasible": feas, "repeats": repeats})
    if show:
        print_benchmark(rows)
    return rows


def print_benchmark(rows: Sequence[Mapping[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Planner decision time (median over seeded random problems)")
    for col in ("stages", "variants", "batch sizes", "solver", "median s", "max s", "feasible"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["stages"]), str(r["variants"]), str(r["batch_sizes"]), r["solver"],
                      f"{r['median_s']:.4f}", f"{r['max_s']:.4f}", f"{r['feasible']}/{r['repeats']}")
    Console().print(table)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m planner.benchmark", description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", action="store_true", help="time the program on synthetic problems")
    ap.add_argument("--stages", type=int, nargs="+", default=list(range(1, 10)))
    ap.add_argument("--variants", type=int, nargs="+", default=list(range(1, 10)))
    ap.add_argument("--max-batch", type=int, default=64, help="batch sizes 1, 2, 4, … up to this")
    ap.add_argument("--max-replicas", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--solver", nargs="+", default=[DEFAULT_SOLVER], choices=["highs", "cbc"])
    ap.add_argument("--policy", default="ipa-energy", help="any optimizer policy (infadapter: --stages 1)")
    args = ap.parse_args(argv)
    if not args.benchmark:
        ap.print_help()
        return 0
    sizes = tuple(2 ** i for i in range(int(math.log2(args.max_batch)) + 1))
    benchmark(args.stages, args.variants, sizes, args.max_replicas, args.repeats, args.seed, args.solver,
              policy=args.policy)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
