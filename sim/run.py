"""`ipa-energy simulate`: each policy over a trace, in simulated time, in the experiments' schema.

The same inputs as `ipa-energy experiment` (pipeline, policies, trace, rate factor, seed,
interval, predictor, margin, weights, repeats) plus a cluster (sim.cluster). Each run:
the policy's opening plan (planner.baselines.initial_plan, fitted to the cluster), the
trace's send times (loadgen.traces.schedule, as Locust replays them), and for planner
policies the real :class:`planner.loop.PlannerLoop` with the real optimizer and predictor,
its clock the simulated one, stepped on the planner actor's cadence (every interval, and at
once on a surge). Its `apply` takes the engine through the change in simulated time, so a
slow change delays the next step as it does live.

Output: the folder layout and files of experiments.schema (docs/results.md), so
`ipa-energy report` reads simulated runs as it reads live ones. Every energy figure is
labelled ``simulated (<the profiles' method>)``; run.json's notes say it was simulated.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

import ipa_energy
from energy.config import EnergyConfig
from experiments.repeats import pending_runs, run_label, run_order
from experiments.schema import (
    Decision, EnergyWindow, ExperimentMeta, ReplicaSample, RequestRow, RunMeta, TraceSpec, variant_infos,
)
from ipa_energy.energy import LOADGEN, join_methods, simulated
from ipa_energy.files import write_atomic, write_json, write_jsonl
from ipa_energy.messages import ApplyReport, ApplyStep
from ipa_energy.records import StageObservation
from ipa_energy.spec import Plan
from loadgen import traces
from planner.baselines import initial_plan
from planner.constants import HISTORY_S, SERVING_CPU_S
from planner.policies import policy_kind
from planner.terms import Weights
from sim.cluster import SimCluster, load_cluster, this_host
from sim.engine import Engine
from sim.fluid import FluidEngine
from sim.plancache import GridOptimizer

__all__ = ["SimConfig", "simulate", "simulate_run"]

#: the load generator's consumer on the first node (system J/request leaves it out, as live)
LOADGEN_CONSUMER = f"{LOADGEN}sim"
#: seconds of arrival history the planner is given (its predictor reads 120 s, its trend 60 s)
HISTORY_KEPT_S = 3600


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="Folder name of the experiment under `out`.")
    pipeline: str = "video"
    policies: list[str]
    repeat: int = Field(1, ge=1, description="Runs per policy; repeat r draws with seed + r − 1.")
    trace: TraceSpec
    tier: str = "mini"
    hardware: str | None = Field(None, description="Profiles' hardware id (default: the cluster file's, else this machine's).")
    cluster: Path | None = Field(None, description="Cluster YAML (sim.cluster); None: this host.")
    out: Path = Path("results")
    force: bool = False
    interval_s: float = Field(10.0, gt=0)
    predictor: str = "lstm"
    margin: float = Field(1.0, gt=0)
    max_replicas: int = Field(2, ge=1)
    weights: Weights = Field(default_factory=Weights)
    drain_s: float = Field(60.0, ge=0)
    poll_s: float = Field(2.0, gt=0, description="Seconds between energy windows and replica samples.")
    loadgen_cpu_s: float | None = Field(None, ge=0, description="Override the cluster's load-generator CPU per request.")
    warm_variants: bool | None = Field(None, description="Whether replicas keep their slot's other variants built "
                                       "(serve_app.warm); None: the cluster file's host setting.")
    load_start_s: float | None = Field(None, description="Unix time of second 0 of the trace. The ingress counts "
                                       "arrivals per whole second of this clock, so its fraction decides how the "
                                       "planner's per-second peaks fall; None: a whole second with a fraction drawn "
                                       "from the seed (a live run's is uniform), so a run repeats.")
    planner_start_s: float | None = Field(None, ge=0, description="Seconds after second 0 of the trace at which the "
                                          "planner's first interval starts; None: the cluster file's host setting.")
    planner_lead_s: int | None = Field(None, ge=0, description="Whole seconds of no arrivals the planner's history "
                                       "starts with before second 0; None: the cluster file's host setting.")
    aggregate_s: int | None = Field(None, ge=1, description="Scale mode (sim.fluid): per-second flows instead of "
                                    "requests, written as rows per this many seconds; None: request by request.")


class _Sim:
    """One policy's run: the engine, the planner loop driven by it, and the rows it records."""

    def __init__(self, cfg: SimConfig, cluster: SimCluster, pipeline, profiles, policy: str, seed: int):
        self.cfg, self.cluster, self.pipeline, self.profiles, self.policy = cfg, cluster, pipeline, profiles, policy
        self.trace = cfg.trace.model_copy(update={"seed": seed})
        self.kind = policy_kind(policy)
        # Unix time of second 0 of the trace
        self.base = cfg.load_start_s if cfg.load_start_s is not None else \
            math.floor(time.time()) + float(np.random.default_rng([seed, 1]).random())  # not the engine's draws
        self.supply = cluster.supply()
        offered = traces.rates(self.trace)
        self.plan = initial_plan(policy, pipeline, profiles, mean_rps=float(offered[: max(1, int(cfg.interval_s) * 2)].mean()),
                                 peak_rps=float(offered.max()), max_replicas=cfg.max_replicas, margin=cfg.margin,
                                 supply=self.supply, serving_cpu_s=SERVING_CPU_S, weights=cfg.weights)
        self.method = simulated(join_methods(p.energy_method for p in profiles.values()) or "tdp-estimate")
        self.end_s = self.trace.seconds + cfg.drain_s
        if cfg.aggregate_s:
            self.counts = traces.counts(offered)
            self.times = None
            self.engine = FluidEngine(pipeline, profiles, cluster, self.plan, self.counts, aggregate_s=cfg.aggregate_s)
            self.engine.base, self.engine.method = self.base, self.method
        else:
            self.engine = Engine(pipeline, profiles, cluster, self.plan, seed=seed)
            self.engine.phase = self.base % 1.0
            self.counts, self.times = traces.schedule(self.trace)
            self.engine.schedule(self.times, self.end_s)
        # the live planner's timing (sim.calibrate): its first interval starts `planner_start` s after
        # second 0, and its history `lead` whole seconds before it, with no arrivals in them. Scale
        # mode's flows move in whole seconds from second 0: neither applies there.
        def timing(asked, host_value, none):
            return none if cfg.aggregate_s else asked if asked is not None else host_value

        self.planner_start = timing(cfg.planner_start_s, cluster.host.planner_start_s, 0.0)
        self.lead = timing(cfg.planner_lead_s, cluster.host.planner_lead_s, 0)
        self.loop = None
        # scale mode solves the program on a grid of its inputs, each solve kept (sim.plancache)
        self.grid = GridOptimizer(profiles) if cfg.aggregate_s else None
        self.log: dict[int, Decision] = {}  # every decision (the loop keeps the latest DECISIONS_KEPT)
        if self.kind == "planner":
            from planner.loop import PlannerLoop
            from planner.predictor import get_predictor

            self.loop = PlannerLoop(pipeline, profiles, get_predictor(cfg.predictor), self._apply, policy=policy,
                                    weights=cfg.weights, margin=cfg.margin, max_replicas=cfg.max_replicas,
                                    interval_s=cfg.interval_s, energy_method=self.method, current=self.plan,
                                    clock=lambda: self.base + self.engine.now, supply=self.supply,
                                    serving_cpu_s=SERVING_CPU_S, record=self._log,
                                    **({"optimize": self.grid} if self.grid is not None else {}))
        self._supplies: dict = {}  # (outside cores, nodes in use) → the supply the planner reads (scale mode)
        self.windows: list[EnergyWindow] = []
        self.replicas: list[ReplicaSample] = []
        self._polled = 0.0

    def _log(self, index: int, decision: Decision) -> None:
        self.log[index] = decision

    # -- the planner's apply, in simulated time ---------------------------------------------

    def _apply(self, plan: Plan) -> ApplyReport:
        engine, host = self.engine, self.cluster.host
        start = engine.now
        engine.run_until(start + host.reconfigure_s)
        change = engine.begin(plan)
        engine.change = change
        try:
            if not engine.run_until(start + host.apply_timeout_s, until=lambda: engine.converged(change)):
                engine.abandon(change)
                raise TimeoutError(f"the change did not converge within {host.apply_timeout_s:.0f} s; rolled back")
            engine.finish(change)
        finally:
            engine.change = None
        seconds = engine.now - start
        step = "make" if change.starting else "switch"
        return ApplyReport(version=engine.version, steps=[ApplyStep(step=step, seconds=seconds)], seconds=seconds)

    # -- observations -----------------------------------------------------------------------

    def _observations(self, seconds: int | None = None) -> list[StageObservation] | None:
        """What each stage variant achieved over the last `seconds` (the interval if None), as the
        ingress reports it live; None for a window the fluid engine does not keep."""
        if seconds is None:
            seconds = max(1, int(self.cfg.interval_s))
        if isinstance(self.engine, FluidEngine):
            if seconds != max(1, int(self.cfg.interval_s)):
                return None
            return [StageObservation(stage=s, variant=v, seconds=seconds, requests=n, s_per_request=sr, mean_batch=max(1.0, k),
                                     p99_ms=p99) for s, v, n, sr, k, p99 in self.engine.observations(self.cfg.interval_s)]
        since = self.engine.now - seconds
        calls = self.engine.calls
        while calls and calls[0][0] < self.engine.now - max(HISTORY_S, 4 * self.cfg.interval_s):
            calls.popleft()
        groups: dict[tuple[str, str], list] = defaultdict(list)
        for t, stage, variant, call_ms, s_per_req, k in calls:
            if t > since:
                groups[(stage, variant)].append((call_ms, s_per_req, k))
        return [StageObservation(stage=s, variant=v, seconds=seconds, requests=len(rows),
                                 s_per_request=float(np.mean([r[1] for r in rows])),
                                 mean_batch=max(1.0, float(np.mean([r[2] for r in rows]))),
                                 p99_ms=float(np.percentile([r[0] for r in rows], 99)))
                for (s, v), rows in groups.items()]

    def _poll(self) -> None:
        now = self.base + self.engine.now
        fluid = isinstance(self.engine, FluidEngine)
        self.replicas.append(ReplicaSample(time_s=now, replicas=self.engine.replica_counts(),
                                           cost_units=self.engine.cost_units(),
                                           nodes=self.engine.active_nodes() if fluid else None))
        for n in (self.engine.groups if fluid else self.engine.nodes):
            if not n.started_ever:
                continue
            idle, other, loadgen, consumers = self.engine.energy_since(n)
            if loadgen:
                consumers[LOADGEN_CONSUMER] = loadgen
            total = idle + other + sum(consumers.values())
            self.windows.append(EnergyWindow(node_id=n.id, start_s=self.base + self._polled, end_s=now, method=self.method,
                                             energy_j={"node": total}, consumers_j=consumers, other_j=other, idle_j=idle))
        self._polled = self.engine.now

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> None:
        engine, loop, interval = self.engine, self.loop, self.cfg.interval_s
        due, next_poll = self.planner_start + interval, self.cfg.poll_s
        total = len(self.times) if self.times is not None else 0
        fluid = isinstance(engine, FluidEngine)
        # per-second arrivals of the seconds complete so far, copied once each: the loop is handed
        # a view (rebuilding an hour's array every second cost minutes over 21 days)
        lead = self.lead
        arrivals, copied = np.zeros(lead + int(math.ceil(self.end_s)) + 2), 0  # `lead` zeros first
        while engine.now < self.end_s:
            if engine.now >= self.trace.seconds and (engine.idle() if fluid else len(engine.finished) >= total):
                break  # every request answered: the drain ends (as Locust's does)
            target = min(math.floor(engine.now + 1e-9) + 1.0, self.end_s)
            if loop is not None and not fluid and engine.now < due - 1e-9:
                target = min(target, due)  # an interval falls due between whole seconds (planner_start_s)
            engine.run_until(target)
            if engine.now >= next_poll - 1e-9:
                self._poll()
                next_poll += self.cfg.poll_s
            if loop is None:
                continue
            # the planner reads the last hour at most (its predictor 120 s, its trend 60 s)
            now_s = engine.complete_seconds()
            complete = min(len(engine.history), now_s)
            if complete > copied:
                arrivals[lead + copied:lead + complete] = engine.history[copied:complete]
                copied = complete
            history = arrivals[max(0, lead + now_s - HISTORY_KEPT_S): lead + now_s]
            between = engine.now < due - 1e-9
            if between and not loop.surging(history):
                continue
            due = engine.now + interval
            loop.supply = self._supply()
            loop.replica_cold_starts(engine.cold_starts)
            window = loop.p99_window_s()
            loop.step(history, self._observations(), trigger="surge" if between else "interval",
                      pooled=self._observations(window) if window else None)
        self._poll()
        if fluid:
            engine.close(self.cfg.drain_s)

    def _supply(self):
        if isinstance(self.engine, FluidEngine):  # the busy cores outside the replicas of each node in use
            key = (round(self.engine.outside_cores(), 2), self.engine.active_nodes())
            if key not in self._supplies:
                nodes = list(self.supply.nodes)
                for i in range(min(key[1], len(nodes))):
                    nodes[i] = nodes[i].model_copy(update={"outside_cores": key[0]})
                self._supplies = {key: self.supply.model_copy(update={"nodes": tuple(nodes)})}
            return self._supplies[key]
        outside = self.engine.outside_cores()
        nodes = tuple(n.model_copy(update={"outside_cores": outside.get(n.node_id, 0.0)}) for n in self.supply.nodes)
        return self.supply.model_copy(update={"nodes": nodes})

    def rows(self) -> list[RequestRow]:
        if isinstance(self.engine, FluidEngine):
            return self.engine.rows
        out = []
        for f in self.engine.finished:
            out.append(RequestRow(scheduled_s=self.base + f.scheduled, sent_s=self.base + f.sent,
                                  finished_s=self.base + f.finished, latency_ms=(f.finished - f.sent) * 1000,
                                  status=f.status, error=f.error, shed=f.shed, plan_version=f.version,
                                  variants=f.variants, energy_j=f.energy_j,
                                  energy_method=self.method if f.energy_j is not None else None))
        answered = len(self.engine.finished)
        if answered < len(self.times):  # no answer by the end of the drain (the oldest unanswered first)
            done = sorted(f.sent for f in self.engine.finished)
            missing = _unmatched(np.sort(self.times), np.asarray(done))
            end = self.base + self.engine.now
            out += [RequestRow(scheduled_s=self.base + t, sent_s=self.base + t, finished_s=end,
                               latency_ms=(end - self.base - t) * 1000, status=0,
                               error=f"no answer within the {self.cfg.drain_s:.0f} s drain") for t in missing]
        return sorted(out, key=lambda r: r.sent_s)


def _unmatched(times: np.ndarray, done: np.ndarray) -> list[float]:
    """Send times in `times` with no equal entry in `done` (both sorted; multisets)."""
    out, j = [], 0
    for t in times:
        if j < len(done) and done[j] == t:
            j += 1
        else:
            out.append(float(t))
    return out


def simulate_run(cfg: SimConfig, policy: str, run_dir: Path, repeat: int | None = None,
                 context: tuple | None = None) -> RunMeta:
    """One policy's simulated run into `run_dir` (every file of the schema; run.json last)."""
    cluster, pipeline, profiles = context or _context(cfg)
    seed = cfg.trace.seed + (repeat or 1) - 1
    started = time.time()
    sim = _Sim(cfg, cluster, pipeline, profiles, policy, seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = {v.weights for s in pipeline.stages for v in s.variants}
    energy = EnergyConfig()
    meta = RunMeta(
        experiment=cfg.name, pipeline=cfg.pipeline, policy=policy, repeat=repeat, policy_kind=sim.kind, trace=sim.trace,
        hardware=cluster.hardware, tier=cfg.tier, weights=weights.pop() if len(weights) == 1 else "mixed",
        sla_ms=pipeline.sla_ms, interval_s=cfg.interval_s if sim.kind == "planner" else None,
        predictor=cfg.predictor if sim.kind == "planner" else None, load_start_s=sim.base, started_at=sim.base,
        variants=variant_infos(pipeline), initial_plan=sim.plan.model_dump(mode="json"),
        carbon_g_per_kwh=energy.carbon_g_per_kwh, pue=energy.pue, status="running",
        warm_variants=cluster.host.warm_variants,
        planner_history_from_s=math.floor(sim.base) - sim.lead if sim.kind == "planner" else None,  # whole seconds
        notes=[f"simulated (ipa-energy simulate, sim.engine) on {cluster.nodes} node(s) from {cluster.source}; "
               f"profiles: {cluster.hardware}", f"load margin: {cfg.margin}",
               f"objective weights: {cfg.weights.model_dump(exclude_defaults=True) or 'defaults'}"],
    )
    write_json(run_dir / "run.json", meta)
    sim.run()
    decisions: list[Decision] = [sim.log[i] for i in sorted(sim.log)] if sim.loop is not None else []
    write_jsonl(run_dir / "requests.jsonl", sim.rows())
    write_jsonl(run_dir / "decisions.jsonl", decisions)
    write_jsonl(run_dir / "energy.jsonl", sim.windows)
    write_jsonl(run_dir / "replicas.jsonl", sim.replicas)
    counts = traces.counts(traces.rates(sim.trace))
    write_atomic(run_dir / "load.csv", "second,scheduled\n" + "".join(f"{i},{c}\n" for i, c in enumerate(counts)))
    meta.energy_methods = [sim.method]
    meta.consumers = {r: {"deployment": r.split("#")[0], "pipeline": cfg.pipeline} for w in sim.windows
                      for r in w.consumers_j if not r.startswith(LOADGEN)}
    meta.ended_at = sim.base + sim.engine.now
    meta.status = "complete"
    meta.notes.append(f"simulated {sim.engine.now:.0f} s in {time.time() - started:.1f} s of wall time")
    if sim.grid is not None:
        meta.notes.append(f"scale mode (sim.fluid): rows per {cfg.aggregate_s} s; the program solved on a "
                          f"{sim.grid.step:.0%} grid of its inputs: {sim.grid.misses} solves "
                          f"({sim.grid.solve_s:.0f} s), {sim.grid.hits} reused")
    write_json(run_dir / "run.json", meta)
    return meta


def _context(cfg: SimConfig) -> tuple:
    """(cluster, pipeline, planning profiles) of a simulation."""
    from planner.profiles import profiles_from_store
    from workloads import catalog
    from workloads.profile_store import PROFILES_DIR, ProfileStore, hardware_id, planning_hardware

    pipeline = catalog.pipeline(cfg.pipeline, cfg.tier)
    store = ProfileStore(PROFILES_DIR)
    cluster = load_cluster(cfg.cluster, cfg.hardware) if cfg.cluster else None
    hardware, _warning = planning_hardware(store, cfg.hardware or (cluster.hardware if cluster else hardware_id("cpu")))
    if cluster is None:
        cluster = this_host(hardware)
    else:
        cluster = cluster.model_copy(update={"hardware": hardware})
    if cfg.loadgen_cpu_s is not None:
        cluster = cluster.model_copy(update={"host": cluster.host.model_copy(update={"loadgen_cpu_s": cfg.loadgen_cpu_s})})
    if cfg.warm_variants is not None:
        cluster = cluster.model_copy(update={"host": cluster.host.model_copy(update={"warm_variants": cfg.warm_variants})})
    profiles = profiles_from_store(store, hardware, pipeline)
    if not profiles:
        raise ValueError(f"no profiles of {cfg.pipeline!r} on hardware {hardware!r}")
    return cluster, pipeline, profiles


def simulate(cfg: SimConfig, console=None) -> Path:
    """Every run of the simulation not yet complete; returns the experiment folder."""
    from experiments.summary import load_run, summarize_run, write_summary

    exp_dir = cfg.out / cfg.name
    context = _context(cfg)
    meta = ExperimentMeta(experiment=cfg.name, pipeline=cfg.pipeline, trace=cfg.trace, hardware=context[0].hardware,
                          tier=cfg.tier, policies=cfg.policies, repeat=cfg.repeat, created_at=time.time(),
                          tool_version=ipa_energy.__version__)
    exp_dir.mkdir(parents=True, exist_ok=True)
    write_json(exp_dir / "experiment.json", meta)
    for slot in pending_runs(exp_dir, run_order(cfg.policies, cfg.repeat), cfg.force):
        run_dir = exp_dir / slot.folder
        simulate_run(cfg, slot.policy, run_dir, slot.repeat, context)
        loaded = load_run(run_dir)
        write_summary(run_dir, run=loaded)
        if console is not None:
            s = summarize_run(loaded)
            console.print(f"{run_label(slot.policy, slot.repeat)}: {s.requests} requests, {s.failed} failed, "
                          f"{s.shed} shed, p99 {s.p99_ms or 0:.0f} ms, SLO {s.slo_attainment or 0:.1%}, "
                          f"{s.j_per_request or 0:.3f} J/request ({s.j_per_request_method})")
    return exp_dir
