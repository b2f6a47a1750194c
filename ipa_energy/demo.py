"""`make demo`: serve the video pipeline on a local Ray, drive it, change the plan midway."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time

import httpx
from rich.console import Console
from rich.table import Table

from ipa_energy.spec import Plan, StagePlan

console = Console(width=max(Console().width, 120))


def _port(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]


def _stats_row(table: Table, label: str, stats: dict) -> None:
    table.add_row(label, str(stats["requests"]), str(stats["failed"]), f"{stats['p50_ms']:.0f}",
                  f"{stats['p99_ms']:.0f}", f"{stats['throughput_rps']:.2f}")


def run_demo(duration_s: float = 60.0, clients: int = 8, port: int = 8000) -> int:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray
    from ray import serve

    from loadgen.driver import closed_loop, summarize
    from planner.actor import start_planner, stop_planner
    from serve_app import control
    from serve_app.config import from_args
    from workloads import payloads

    port = _port(port)
    spec, plans = from_args({"pipelines": "video"})
    pipeline = spec.pipeline("video")
    new_plan = Plan(
        pipeline="video",
        policy="demo",
        stages={
            "detector": StagePlan(variant="ssdlite320-mobilenet-v3-large-mini", batch_size=2),
            "classifier": StagePlan(variant="resnet34-mini", batch_size=4),
        },
    )
    with console.status("starting a local Ray cluster and the video pipeline (detector → classifier)…"):
        t0 = time.monotonic()
        ray.init(num_cpus=max(4, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        control.deploy(spec, plans)
    console.print(f"app up in {time.monotonic() - t0:.1f} s at http://127.0.0.1:{port}/ (weights: random, mini tier)")
    console.print(f"plan v1: {_describe(plans['video'])}  accuracy {pipeline.accuracy(plans['video']):.4f}")

    report: dict = {}
    change_at = duration_s / 3

    planner: list = []

    def change() -> None:
        # A manual plan change a third of the way in; then the planner adapts on its own.
        time.sleep(change_at)
        report.update(control.apply_plan(new_plan))
        # One replica per stage at most: the demo's Ray declares more CPUs than this host has.
        planner.append(start_planner("ipa", "video", policy="ipa-energy", interval_s=5.0, predictor="lstm", max_replicas=1))

    bodies = [payloads.image_request(seed=s) for s in range(8)]
    changer = threading.Thread(target=change, daemon=True)
    try:
        with console.status(f"{clients} clients for {duration_s:.0f} s; plan change at {change_at:.0f} s…"):
            changer.start()
            records = asyncio.run(
                closed_loop(f"http://127.0.0.1:{port}/v1/pipelines/video", lambda i: bodies[i % 8], clients, duration_s)
            )
            changer.join()
        energy = httpx.get(f"http://127.0.0.1:{port}/v1/energy", timeout=30).json()
        decisions = ray.get(planner[0].decisions.remote()) if planner else []
        stop_planner("ipa", "video")
    finally:
        if report:
            console.print(f"plan v{report['version']}: {_describe(new_plan)}  accuracy {pipeline.accuracy(new_plan):.4f}")
            steps = ", ".join(f"{s['step']} {s['seconds']:.1f} s" for s in report["steps"])
            console.print(f"plan change converged in {report['seconds']:.1f} s ({steps}); changes: {report['changes']}")
        serve.shutdown()
        ray.shutdown()

    table = Table(title="video pipeline under load (latency measured at the client)")
    for col in ("requests", "count", "failed", "p50 ms", "p99 ms", "req/s"):
        table.add_column(col, justify="right")
    overall = summarize(records)
    _stats_row(table, "all", overall)
    for version in sorted({r.plan_version for r in records if r.plan_version is not None}):
        _stats_row(table, f"plan v{version}", summarize([r for r in records if r.plan_version == version]))
    console.print(table)
    if "decisions" in locals():
        _print_decisions(decisions)
    if "energy" in locals():
        _print_energy(energy)
    failed = overall["failed"]
    first_failure = next((r.error for r in records if not r.ok), "")
    console.print(f"[bold]{failed} failed requests[/bold]" + (f": {first_failure}" if failed else ""))
    return 0 if failed == 0 and report else 1


def _print_decisions(decisions: list[dict]) -> None:
    table = Table(title="planner (ipa-energy policy, LSTM load predictor; max of the history until it has 120 s)")
    for col in ("interval", "observed req/s", "predicted req/s", "plan", "accuracy", "predicted W", "J/request", "applied"):
        table.add_column(col, justify="right")
    for n, d in enumerate(decisions, 1):
        plan = ", ".join(f"{s}={v['variant']}×{v['replicas']}@b{v['batch_size']}" for s, v in d["stages"].items())
        if d["error"]:
            applied = f"failed: {d['error']}"
        elif not d["changed"]:
            applied = "no change"
        else:
            applied = "applying…" if d["apply_s"] is None else f"yes, {d['apply_s']:.1f} s"
        table.add_row(str(n), f"{d['observed_rps']:.1f}", f"{d['predicted_rps']:.1f}", plan, f"{d['accuracy']:.4f}",
                      f"{d['predicted_power_w']:.2f}", f"{d['predicted_j_per_request']:.3f}", applied)
    console.print(table)
    console.print(f"planner made {sum(d['changed'] for d in decisions)} plan change(s) in {len(decisions)} intervals "
                  f"(predicted W and J/request from profiles measured with {decisions[0]['energy_method'] if decisions else '-'})")


def _print_energy(energy: dict) -> None:
    table = Table(title="energy (every figure names its method; tdp-estimate = TDP × utilisation, not a measurement)")
    for col in ("scope", "requests", "J/request", "mean W", "energy J", "g CO2e", "method"):
        table.add_column(col, justify="right")
    for name, p in energy["pipelines"].items():
        table.add_row(f"pipeline {name}", str(p["requests"]), f"{p['j_per_request']:.3f}", "", f"{p['energy_j']:.1f}",
                      f"{p['carbon_g']:.4f}", "+".join(p["methods"]))
    for node in energy["nodes"]:
        if "error" in node:
            table.add_row(f"node {node['node_id'][:8]}", "", "", "", "", "", node["error"])
            continue
        for device, d in node["devices"].items():
            table.add_row(f"node {node['node_id'][:8]} {device}", "", "", f"{d['mean_power_w']:.1f}", f"{d['energy_j']:.1f}",
                          f"{d['carbon_g']:.4f}", d["method"])
    console.print(table)
    carbon = energy["carbon"]
    console.print(f"carbon: {carbon['g_per_kwh']} g CO2e/kWh × PUE {carbon['pue']}; node totals are since its energy actor started; "
                  "J/request is dynamic energy (idle excluded)")


def _describe(plan: Plan) -> str:
    return ", ".join(f"{s}={sp.variant} (batch {sp.batch_size}, ×{sp.replicas})" for s, sp in plan.stages.items())
