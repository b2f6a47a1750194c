"""Run an experiment: one pipeline × trace × hardware, each policy once (or K times,
interleaved: `repeat`; layout and order in experiments.repeats), one run after another.

For each policy: apply its opening plan (make-before-break), start its planner actor (planner
policies), replay the trace with Locust in its own process, and meanwhile poll every node's
energy actor and the replica counts; then write the run in the schema of
`experiments.schema` (docs/results.md). A run folder whose run.json says "complete" is kept
unless `force`; an interrupted run is redone.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

import ipa_energy
from experiments.repeats import pending_runs, run_label, run_order
from experiments.schema import (
    Decision,
    EnergyWindow,
    ExperimentMeta,
    ReplicaSample,
    RunMeta,
    TraceSpec,
    variant_infos,
)
from ipa_energy.energy import LOADGEN, NodeEnergyReport
from ipa_energy.files import write_atomic, write_json, write_jsonl
from ipa_energy.records import LoadStart
from loadgen import traces
from energy.supply import physical_cores
from planner.baselines import initial_plan
from planner.capacity import supply_from_ray
from planner.constants import SERVING_CPU_S
from planner.policies import policy_kind
from planner.terms import Weights
from serve_app.constants import APP_NAME
from serve_app.layout import slot_resources

__all__ = ["ExperimentConfig", "run_experiment"]

logger = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
LOCUSTFILE = ROOT / "loadgen" / "locustfile.py"


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9._-]+$", description="Folder name of the experiment under `out`.")
    pipeline: str = "video"
    policies: list[str]
    repeat: int = Field(1, ge=1, description="Runs per policy, interleaved (repeat r of every policy before r + 1); "
                                             "the report gives the mean and min–max over them.")
    trace: TraceSpec
    tier: str = "mini"
    hardware: str | None = Field(None, description="Hardware id of the profiles the planner uses (default: this machine's).")
    out: Path = Path("results")
    force: bool = False
    address: str | None = Field(None, description="Join this Ray cluster (e.g. 'auto') instead of starting one.")
    url: str | None = Field(None, description="Base URL of an app already serving on that cluster.")
    app_name: str = APP_NAME
    num_cpus: int | None = Field(None, description="Logical CPUs of a local Ray (default: the physical cores).")
    interval_s: float = Field(10.0, gt=0)
    predictor: str = "lstm"
    margin: float = Field(1.0, gt=0, description="Planner headroom: plans for predicted load × margin.")
    max_replicas: int = Field(2, ge=1)
    weights: Weights = Field(default_factory=Weights, description="The planner's objective weights, and ipa-energy's "
                                                                  "accuracy budget (planner.terms.Weights).")
    senders: int = Field(200, ge=1, description="Locust users: the most requests in flight.")
    drain_s: float = Field(60.0, ge=0)
    poll_s: float = Field(2.0, gt=0)
    settle_s: float = Field(3.0, ge=0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Session:
    """The Ray cluster and the served app the runs share."""

    def __init__(self, cfg: ExperimentConfig, console: Console):
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        import ray
        from ray import serve

        from serve_app import control
        from serve_app.config import from_args
        from workloads.profile_store import PROFILES_DIR, ProfileStore, hardware_id, planning_hardware

        self.cfg, self.console, self.ray, self.serve = cfg, console, ray, serve
        self.started_ray = not ray.is_initialized() and cfg.address is None
        if not ray.is_initialized():
            control.node_environment()
            # logical CPUs = physical cores: Ray's reservations then count what replicas consume
            ray.init(address=cfg.address, num_cpus=None if cfg.address else (cfg.num_cpus or physical_cores()),
                     include_dashboard=False, log_to_driver=False)
        self.spec, plans = from_args({"pipelines": cfg.pipeline, "tier": cfg.tier})
        self.pipeline = self.spec.pipeline(cfg.pipeline)
        self.machine = hardware_id("cpu")
        from planner.profiles import profiles_from_store

        store = ProfileStore(PROFILES_DIR)
        self.hardware, warning = planning_hardware(store, cfg.hardware or self.machine)
        if warning:
            console.print(f"[yellow]{warning}[/yellow]")
        self.profiles = profiles_from_store(store, self.hardware, self.pipeline)
        if cfg.url:
            self.url = cfg.url.rstrip("/")
        else:
            port = _free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": port})
            self.url = f"http://127.0.0.1:{port}"
            control.deploy(self.spec, plans, name=cfg.app_name)
        self.supply = supply_from_ray()  # physical cores and memory, read on every node

    def close(self) -> None:
        """Stop what this session started: the app (its replicas drain gracefully), then the local Ray.

        Not `serve.shutdown()`: its controller call only ends when the controller kills itself,
        which Ray reports on the driver as a failed, retryable `ServeController.graceful_shutdown`
        task. The Serve controller and proxies stop with the local cluster instead.
        """
        if self.started_ray:
            if not self.cfg.url:
                try:
                    self.serve.delete(self.cfg.app_name)
                except Exception as e:  # the results are written; the local cluster stops anyway
                    logger.warning("app %s not deleted cleanly (%s); stopping Ray", self.cfg.app_name, e)
            self.ray.shutdown()

    # -- observations --------------------------------------------------------------------

    def energy_actors(self) -> dict:
        from energy.actor import ensure_node_actors

        return ensure_node_actors(self.spec.energy)

    def replicas(self) -> ReplicaSample:
        status = self.serve.status().applications.get(self.cfg.app_name)
        counts = {}
        if status is not None:
            prefix = f"{self.pipeline.name}."
            # UPDATING replicas (being reconfigured: a batch size or a variant) hold their resources too
            counts = {n: d.replica_states.get("RUNNING", 0) + d.replica_states.get("UPDATING", 0)
                      for n, d in status.deployments.items() if n.startswith(prefix)}
        units = 0.0
        for name, n in counts.items():
            r = slot_resources(self.pipeline, name)
            units += n * (r.num_cpus + r.num_gpus)
        return ReplicaSample(time_s=time.time(), replicas=counts, cost_units=units)


class EnergyPoller:
    """Chains each node's attribution windows end to end (no overlap, nothing lost)."""

    def __init__(self, actors: Callable[[], dict], start_s: float):
        self.find = actors  # node → its energy actor, started where missing (with the app's energy config)
        self.actors = actors()
        self.cursor = {node: start_s for node in self.actors}
        self.windows: list[EnergyWindow] = []

    def poll(self) -> None:
        import ray

        for node, actor in self.actors.items():
            try:
                rows = ray.get(actor.window.remote(self.cursor[node], time.time()), timeout=10)
            except ray.exceptions.ActorDiedError:  # its successor goes on from its journal
                self.actors[node] = self._successor(node, actor)
                continue
            except Exception:  # a node that does not answer this time is asked again next poll
                continue
            windows = [EnergyWindow.model_validate(w) for w in rows]
            self.windows += [w for w in windows if w.end_s > self.cursor[node]]
            if windows:
                self.cursor[node] = max(self.cursor[node], max(w.end_s for w in windows))

    def _successor(self, node: str, actor):
        try:
            return self.find().get(node, actor)
        except Exception:  # asked again next poll
            return actor


def _start_run(session: Session, policy: str, run_dir: Path, repeat: int | None) -> RunMeta:
    """Apply the policy's opening plan and record run.json as "running"."""
    from serve_app import control

    cfg, console = session.cfg, session.console
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    kind = policy_kind(policy)
    offered = traces.rates(cfg.trace)
    plan = initial_plan(policy, session.pipeline, session.profiles, mean_rps=float(offered[: max(1, int(cfg.interval_s) * 2)].mean()),
                        peak_rps=float(offered.max()), max_replicas=cfg.max_replicas, margin=cfg.margin,
                        supply=session.supply, serving_cpu_s=SERVING_CPU_S, weights=cfg.weights)
    weights = {v.weights for s in session.pipeline.stages for v in s.variants}
    meta = RunMeta(
        experiment=cfg.name, pipeline=cfg.pipeline, policy=policy, repeat=repeat, policy_kind=kind, trace=cfg.trace,
        hardware=session.machine, tier=cfg.tier, weights=weights.pop() if len(weights) == 1 else "mixed",
        sla_ms=session.pipeline.sla_ms, interval_s=cfg.interval_s if kind == "planner" else None,
        predictor=cfg.predictor if kind == "planner" else None, load_start_s=time.time(), started_at=time.time(),
        variants=variant_infos(session.pipeline), initial_plan=plan.model_dump(mode="json"),
        carbon_g_per_kwh=session.spec.energy.carbon_g_per_kwh, pue=session.spec.energy.pue,
        warm_variants=session.spec.warm_variants,
        notes=[f"planner profiles: {session.hardware}", f"load margin: {cfg.margin}",
               f"objective weights: {cfg.weights.model_dump(exclude_defaults=True) or 'defaults'}"],
    )
    write_json(run_dir / "run.json", meta)
    with console.status(f"{run_label(policy, repeat)}: applying the opening plan…"):
        control.apply_plan(plan, app_name=cfg.app_name)
        time.sleep(cfg.settle_s)
    return meta


def _locust_command(session: Session, record: Path) -> list[str]:
    cfg, trace = session.cfg, session.cfg.trace
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", session.url, "--headless", "--only-summary",
            "--pipeline", cfg.pipeline, "--trace", trace.argument(), "--seconds", str(trace.seconds),
            "--offset", str(trace.offset_s), "--rate-factor", str(trace.rate_factor), "--seed", str(trace.seed),
            "--senders", str(cfg.senders), "--drain", str(cfg.drain_s), "--record", str(record),
            "--exit-code-on-error", "0"]  # failed requests are data (in the record), not a failed run


def _replay(session: Session, meta: RunMeta, cmd: list[str], run_dir: Path, energy: EnergyPoller,
            replicas: list[ReplicaSample]) -> subprocess.Popen:
    """Run Locust to the end of the trace (+ drain), polling energy and replica counts meanwhile."""
    cfg, trace, label = session.cfg, session.cfg.trace, run_label(meta.policy, meta.repeat)
    record = run_dir / "requests.jsonl"
    with (run_dir / "locust.log").open("w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        _register_loadgen(energy.actors, proc.pid)
        try:
            deadline = time.time() + trace.seconds + cfg.drain_s + 120
            with session.console.status(f"{label}: replaying {trace.name} ×{trace.rate_factor}…") as status:
                while proc.poll() is None and time.time() < deadline:
                    time.sleep(cfg.poll_s)
                    energy.poll()
                    replicas.append(session.replicas())
                    done = sum(1 for _ in record.open()) if record.exists() else 0
                    status.update(f"{label}: {time.time() - meta.started_at:.0f} s, {done} answered "
                                  f"({trace.name} ×{trace.rate_factor}, {trace.seconds} s)")
        finally:  # an interrupted run leaves no load generator behind (run.json stays "running")
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    energy.poll()
    return proc


def _register_loadgen(actors: dict, pid: int) -> None:
    """Let this node's energy actor attribute the load generator's CPU apart (system J/request
    leaves it out). A driver outside the Ray nodes, or an actor that does not answer, only
    means the generator's share stays in "other"."""
    import ray

    actor = actors.get(ray.get_runtime_context().get_node_id())
    if actor is None:
        return
    try:
        ray.get(actor.register.remote(f"{LOADGEN}{pid}", pid, {"role": "loadgen", "deployment": "loadgen"}, [], 0.0),
                timeout=10)
    except Exception as e:
        logger.warning("load generator not registered for energy attribution: %s", e)


def run_policy(session: Session, policy: str, run_dir: Path, repeat: int | None = None) -> RunMeta:
    """One policy's run (`repeat`: which one, None for a single run), every file of the result schema
    written; run.json's "complete" goes last."""
    import ray

    from planner.actor import start_planner, stop_planner

    cfg = session.cfg
    meta = _start_run(session, policy, run_dir, repeat)
    planner = None
    if meta.policy_kind == "planner":
        meta.planner_history_from_s = time.time()
        planner = start_planner(cfg.app_name, cfg.pipeline, tier=cfg.tier, policy=policy, interval_s=cfg.interval_s,
                                predictor=cfg.predictor, hardware=session.hardware, max_replicas=cfg.max_replicas,
                                margin=cfg.margin, history_from_s=meta.planner_history_from_s,
                                weights=cfg.weights.model_dump())
    record = run_dir / "requests.jsonl"
    cmd = _locust_command(session, record)
    energy = EnergyPoller(session.energy_actors, time.time())
    replicas = [session.replicas()]
    try:
        proc = _replay(session, meta, cmd, run_dir, energy, replicas)
        decisions = [Decision.model_validate(d) for d in ray.get(planner.decisions.remote())] if planner else []
    finally:  # an interrupted run leaves no planner behind
        if planner is not None:
            stop_planner(cfg.app_name, cfg.pipeline)
    start = record.with_suffix(".start.json")
    if proc.returncode != 0 or not start.exists():
        meta.status, meta.error = "failed", f"locust exited {proc.returncode}; see locust.log"
    else:
        meta.load_start_s = LoadStart.model_validate_json(start.read_bytes()).load_start_s
        meta.status = "complete"
    write_jsonl(run_dir / "decisions.jsonl", decisions)
    write_jsonl(run_dir / "energy.jsonl", energy.windows)
    write_jsonl(run_dir / "replicas.jsonl", replicas)
    counts = traces.counts(traces.rates(cfg.trace))
    write_atomic(run_dir / "load.csv", "second,scheduled\n" + "".join(f"{i},{c}\n" for i, c in enumerate(counts)))
    meta.consumers = _consumers(energy.actors)
    meta.energy_methods = sorted({w.method for w in energy.windows})
    meta.locust = {"command": cmd, "exit_code": proc.returncode, "senders": cfg.senders}
    meta.ended_at = time.time()
    write_json(run_dir / "run.json", meta)  # "complete" goes last
    return meta


def _consumers(actors: dict) -> dict[str, dict[str, str]]:
    import ray

    out = {}
    for actor in actors.values():
        try:
            report = NodeEnergyReport.model_validate(ray.get(actor.summary.remote(), timeout=10))
            out |= {c: {k: str(v) for k, v in labels.items()} for c, labels in report.consumers.items()}
        except Exception:
            continue
    return out


def run_experiment(cfg: ExperimentConfig, console: Console | None = None) -> Path:
    """Run every run of the experiment not yet complete, interleaved; returns the experiment folder."""
    console = console or Console()
    exp_dir = cfg.out / cfg.name
    meta = ExperimentMeta(experiment=cfg.name, pipeline=cfg.pipeline, trace=cfg.trace, hardware="", tier=cfg.tier,
                          policies=cfg.policies, repeat=cfg.repeat, created_at=time.time(),
                          tool_version=ipa_energy.__version__)
    meta_path = exp_dir / "experiment.json"
    if meta_path.exists() and not cfg.force:
        old = ExperimentMeta.model_validate_json(meta_path.read_text())
        if (old.pipeline, old.trace, old.tier) != (cfg.pipeline, cfg.trace, cfg.tier):
            raise ValueError(f"{exp_dir} holds an experiment with another pipeline, trace or tier; "
                             "choose another --name or pass --force")
        # another repeat count is fine: more repeats add run folders beside the complete ones
        meta = old.model_copy(update={"policies": list(dict.fromkeys(old.policies + cfg.policies)),
                                      "repeat": max(old.repeat, cfg.repeat)})
    order = run_order(cfg.policies, cfg.repeat)
    pending = pending_runs(exp_dir, order, cfg.force)
    for slot in order:
        if slot not in pending:
            console.print(f"{run_label(slot.policy, slot.repeat)}: complete in {exp_dir / slot.folder}; "
                          "kept (--force to run again)")
    exp_dir.mkdir(parents=True, exist_ok=True)
    if not pending:
        return exp_dir
    session = Session(cfg, console)
    try:
        meta.hardware = session.machine
        write_json(meta_path, meta)
        for slot in pending:
            run = run_policy(session, slot.policy, exp_dir / slot.folder, slot.repeat)
            _summarize(exp_dir / slot.folder, console, run)
    finally:
        session.close()
    return exp_dir


def _summarize(run_dir: Path, console: Console, run: RunMeta) -> None:
    from experiments.summary import load_run, summarize_run, write_summary

    label = run_label(run.policy, run.repeat)
    if run.status != "complete":
        console.print(f"[red]{label}: {run.error}[/red]")
        return
    try:
        loaded = load_run(run_dir)
        write_summary(run_dir, run=loaded)
        summary = summarize_run(loaded)
    except Exception as e:  # a broken summary is reported; the run's files are kept as they are
        console.print(f"[red]{label}: summary failed: {e}[/red]")
        return
    console.print(f"{label}: {summary.requests} requests, {summary.failed} failed, p99 {summary.p99_ms or 0:.0f} ms, "
                  f"SLO {summary.slo_attainment or 0:.1%}, {summary.j_per_request or 0:.3f} J/request "
                  f"({summary.j_per_request_method})")
