"""One fixed plan at a constant load in the request-level simulator, beside the planner's model of it.

Prints per stage what the planner's queueing model predicts (p99, the contention stretch of
the cap it is given) and what the request engine (sim.engine: Serve's routing, per-replica
batching, replicas packed on nodes by their CPU reservation, processor sharing) makes of
the same plan: the batch that forms, the call time (service + contention), the stage p99;
then the run's SLO attainment and p99, and how the replicas sit on the nodes (replicas per
node in use, the nodes' busy cores ÷ their cores). Session 20 used it to find why the
planner's plans miss their SLA at scale (docs/simulator.md, "What the scale runs found").

    .venv/bin/python bench/fixed_plan.py --cluster sim/clusters/cpu-1000.yaml --rate 150 \\
        fcos-resnet50-fpn-mini:2:30 resnet152-mini:16:14
    # a stage: variant:batch:replicas[:batch wait ms] (default wait: the planner's, the batch's fill at the rate)
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ipa_energy.spec import Plan, StagePlan  # noqa: E402
from loadgen import traces  # noqa: E402
from planner.capacity import stretch  # noqa: E402
from planner.checks import stage_p99_ms  # noqa: E402
from planner.terms import LatencyModel, fill_ms  # noqa: E402
from sim.engine import Engine  # noqa: E402
from sim.run import SimConfig, _context  # noqa: E402

WARMUP_S = 60  # calls before this are not counted (the opening replicas settle)


def _plan(pipeline, stages: list[str], rate: float) -> Plan:
    if len(stages) != len(pipeline.stages):
        raise SystemExit(f"{pipeline.name} has {len(pipeline.stages)} stages "
                         f"({', '.join(s.name for s in pipeline.stages)}): give one variant:batch:replicas each")
    out = {}
    for st, text in zip(pipeline.stages, stages):
        parts = text.split(":")
        if len(parts) not in (3, 4):
            raise SystemExit(f"{text!r}: want variant:batch:replicas[:batch wait ms]")
        variant, batch, replicas = parts[0], int(parts[1]), int(parts[2])
        st.variant(variant)  # KeyError names an unknown variant
        wait = float(parts[3]) if len(parts) == 4 else round(min(fill_ms(batch, rate), 1000.0), 3)
        out[st.name] = StagePlan(variant=variant, batch_size=batch, replicas=replicas, batch_wait_timeout_ms=wait)
    return Plan(pipeline=pipeline.name, stages=out, policy="static")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stages", nargs="+", help="variant:batch:replicas[:batch wait ms], one per stage")
    parser.add_argument("--pipeline", default="video")
    parser.add_argument("--cluster", type=Path, default=Path("sim/clusters/cpu-1000.yaml"))
    parser.add_argument("--rate", type=float, default=150.0, help="constant load (req/s)")
    parser.add_argument("--seconds", type=int, default=300)
    parser.add_argument("--rho", type=float, default=None,
                        help="the node utilisation cap whose contention stretch the planner's model uses (default: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    trace = traces.parse_trace(f"constant:{args.rate:g}", args.seconds)
    cfg = SimConfig(name="fixed-plan", pipeline=args.pipeline, policies=["static-min-energy"], trace=trace,
                    cluster=args.cluster, out=Path("/nonexistent"))
    cluster, pipeline, profiles = _context(cfg)
    plan = _plan(pipeline, args.stages, args.rate)
    cores = min(t.cores for t in cluster.node_types)
    model = LatencyModel(queueing=True, stretch=stretch(cores, args.rho) if args.rho else 1.0)
    predicted = stage_p99_ms(pipeline, plan.model_copy(update={"objective": {
        "queueing": 1.0, "stretch": model.stretch, "fill_factor": 1.0}}), profiles, args.rate)

    engine = Engine(pipeline, profiles, cluster, plan, seed=args.seed)
    _counts, times = traces.schedule(trace)
    end = args.seconds + 30
    engine.schedule(times, end)
    engine.run_until(end)

    calls: dict[str, list] = defaultdict(list)
    for t, stage, _variant, call_ms, _s_per_req, k in engine.calls:
        if t > WARMUP_S:
            calls[stage].append((call_ms, k))
    print(f"{pipeline.name} at {args.rate:g} req/s for {args.seconds} s on {args.cluster} "
          f"(request engine; calls after {WARMUP_S} s); planner's model at stretch {model.stretch:.2f}")
    print("| stage | plan (variant b × n, wait ms) | profile p50 ms | planner p99 ms | batch formed | call p50 ms | call p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for st in pipeline.stages:
        sp, rows = plan.stages[st.name], calls.get(st.name, [])
        ms = np.array([c for c, _ in rows]) if rows else np.array([np.nan])
        ks = np.array([k for _, k in rows]) if rows else np.array([np.nan])
        prof = profiles[(sp.variant, sp.batch_size)]
        print(f"| {st.name} | {sp.variant} {sp.batch_size} × {sp.replicas}, {sp.batch_wait_timeout_ms:g} "
              f"| {prof.latency_p50_ms:.0f} | {predicted[st.name]:.0f} | {np.mean(ks):.2f} "
              f"| {np.percentile(ms, 50):.0f} | {np.percentile(ms, 99):.0f} |")
    done = [f for f in engine.finished if f.scheduled > WARMUP_S]
    answered = np.array([1000 * (f.finished - f.sent) for f in done if f.status == 200])
    met = int((answered <= pipeline.sla_ms).sum())
    print(f"requests after {WARMUP_S} s: {len(done)}, shed {sum(f.shed for f in done)}, SLO {met / max(1, len(done)):.1%}, "
          f"p99 {np.percentile(answered, 99) if answered.size else float('nan'):.0f} ms (SLA {pipeline.sla_ms:g} ms)")
    used = [n for n in engine.nodes if n.active]
    per_node = defaultdict(int)
    for slot in engine.slots.values():
        for r in slot.replicas:
            per_node[r.node.id] += 1
    print(f"nodes in use: {len(used)} of {len(engine.nodes)} ({cores:g} cores each); replicas per node in use: "
          f"mean {np.mean(list(per_node.values())):.2f}, max {max(per_node.values())}; CPU reserved per node "
          f"{np.mean([n.cpus_used for n in used]):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
