"""`ipa-energy` command line: demo, serve, apply-plan, energy, plan, profile, catalog, experiment, report, sweep."""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def _serve(args: argparse.Namespace) -> int:
    import time

    import ray
    from ray import serve

    from serve_app import control
    from serve_app.config import from_args

    bad = [kv for kv in args.args if "=" not in kv]
    if bad:
        print(f"ipa-energy serve: arguments are key=value, got {bad}", file=sys.stderr)
        return 2
    spec, plans = from_args(dict(kv.split("=", 1) for kv in args.args))
    ray.init(address=args.address, include_dashboard=args.dashboard)
    serve.start(http_options={"host": args.host, "port": args.port})
    control.deploy(spec, plans, name=args.name)
    print(f"serving {[p.name for p in spec.pipelines]} at http://{args.host}:{args.port}/ (OpenAPI: /docs); Ctrl-C stops")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        serve.shutdown()
    return 0


def _apply_plan(args: argparse.Namespace) -> int:
    import ray

    from serve_app import control
    from serve_app.config import load_plans

    plans = load_plans(args.file)
    ray.init(address=args.address, namespace="serve", log_to_driver=False)
    report = control.apply_plan(plans.values(), app_name=args.name, timeout_s=args.timeout)
    print(json.dumps(report, indent=2))
    return 0


def _catalog(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from workloads import catalog

    table = Table(title=f"catalog, tier {args.tier}")
    for col in ("pipeline", "stage", "variant", "accuracy", "metric", "stands for", "weights"):
        table.add_column(col)
    for p in catalog.pipelines(args.tier).values():
        for s in p.stages:
            for v in s.variants:
                table.add_row(p.name, s.name, v.name, f"{v.accuracy.value:.4f}", v.accuracy.metric, v.stands_for or "", v.weights)
    Console(width=max(Console().width, 180)).print(table)
    return 0


def _energy_table(measurements, config) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="energy")
    for col in ("device", "J", "mean W", "window s", "g CO2e", "method"):
        table.add_column(col, justify="right")
    for m in measurements:
        for device, joules in m.energy_j.items():
            watts = joules / m.duration_s if m.duration_s > 0 else 0.0
            label = m.method if m.measured else f"{m.method} (estimate)"
            table.add_row(device, f"{joules:.3f}", f"{watts:.2f}", f"{m.duration_s:.2f}", f"{config.carbon_g(joules):.4f}", label)
    Console(stderr=True).print(table)


def _energy_run(args: argparse.Namespace) -> int:
    from energy.config import EnergyConfig
    from energy.etrace2 import format_etrace2, measure_command
    from energy.node import select_meters

    command = args.command_args[1:] if args.command_args[:1] == ["--"] else args.command_args
    if not command:
        print("ipa-energy energy run: give a command after --", file=sys.stderr)
        return 2
    config = EnergyConfig(force_estimate=args.estimate)
    cpu, *others = select_meters(config)
    starts = [m.sample() for m in others]  # counter-based meters need only the two ends
    code, measurement = measure_command(command, cpu, interval_s=args.interval)
    from energy.base import Measurement

    measurements = [measurement, *(Measurement.between(a, m.sample()) for a, m in zip(starts, others))]
    for m in measurements:
        print(format_etrace2(m), end="")
    _energy_table(measurements, config)
    return code


def _energy_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from energy.config import EnergyConfig
    from energy.etrace2 import parse_etrace2

    _energy_table([parse_etrace2(Path(f).read_text()) for f in args.files], EnergyConfig())
    return 0


def _profile(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.progress import Progress

    from energy.config import EnergyConfig
    from energy.node import select_meters
    from workloads import catalog
    from workloads.profile_store import PROFILES_DIR, ProfileStore, format_table, hardware_id
    from workloads.profiler import profile_missing

    variants = {v.name: v for p in catalog.pipelines(args.tier).values() for s in p.stages for v in s.variants}
    names = [n.strip() for n in args.variants.split(",")] if args.variants else sorted(variants)
    unknown = [n for n in names if n not in variants]
    if unknown:
        print(f"ipa-energy profile: unknown variants {unknown}; known: {sorted(variants)}", file=sys.stderr)
        return 2
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    hardware = hardware_id(args.device)
    store = ProfileStore(Path(args.out) if args.out else PROFILES_DIR)
    meters = select_meters(EnergyConfig(force_estimate=args.estimate))
    with Progress(console=Console(stderr=True)) as progress:
        task = progress.add_task(f"profiling on {hardware}", total=len(names) * len(batch_sizes))

        def advance(event) -> None:
            progress.update(task, completed=event.done, description=f"{event.variant} b={event.batch_size}: {event.status}")

        measured = profile_missing(
            [variants[n] for n in names], batch_sizes, store, force=args.force, progress=advance,
            meters=meters, hardware=hardware, device=args.device, warmup_s=args.warmup, window_s=args.window,
        )
    shown = [p for n in names for b in batch_sizes if (p := store.get(n, b, hardware=hardware)) is not None]
    Console(width=max(Console().width, 150)).print(format_table(shown, title=f"profiles on {hardware} ({len(measured)} new)"))
    print(f"profiles: {store.path(hardware)}")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from planner.problem import Problem, problem_from_catalog
    from planner.tables import comparison_table

    if args.benchmark:
        from planner import benchmark

        return benchmark.main(["--benchmark", "--repeats", str(args.repeats)])
    if args.problem:
        try:
            problem = Problem.load(args.problem)
        except (OSError, ValueError) as e:
            print(f"ipa-energy plan: cannot read the problem {args.problem}: {e}", file=sys.stderr)
            return 2
        hardware = ",".join(sorted({p.hardware for p in problem.profiles})) or "-"
    else:
        if not args.pipeline or args.load is None:
            print("ipa-energy plan: give --pipeline and --load, --problem FILE, or --benchmark", file=sys.stderr)
            return 2
        from workloads.profile_store import PROFILES_DIR, ProfileStore, hardware_id

        hardware = args.hardware or hardware_id("cpu")
        if not ProfileStore(PROFILES_DIR).path(hardware).exists():
            known = sorted(p.stem for p in PROFILES_DIR.glob("*.json"))
            print(f"ipa-energy plan: no profiles for {hardware!r}; shipped: {known} (use --hardware)", file=sys.stderr)
            return 2
        problem = problem_from_catalog(args.pipeline, args.load, tier=args.tier, hardware=hardware, sla_ms=args.sla,
                                       margin=args.margin, max_replicas=args.max_replicas, max_variants=args.max_variants)
    if args.write_problem:
        with open(args.write_problem, "w", encoding="utf-8") as f:
            f.write(problem.model_dump_json(indent=2))
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


def _demo(args: argparse.Namespace) -> int:
    from ipa_energy.demo import run_demo

    return run_demo(out=args.out, pipeline=args.pipeline, seconds=args.seconds, rate_factor=args.rate_factor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ipa-energy", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="replay a Twitter window against ipa and ipa-energy locally, write the report")
    demo.add_argument("--out", default="results", help="results folder (the demo writes <out>/demo)")
    demo.add_argument("--pipeline", default="classify")
    demo.add_argument("--seconds", type=int, default=120, help="seconds of the bursty window to replay")
    demo.add_argument("--rate-factor", type=float, default=0.3, help="scale of the trace's rate for this machine")
    demo.set_defaults(func=_demo)

    srv = sub.add_parser("serve", help="start Ray locally (or join --address) and serve the app")
    srv.add_argument("args", nargs="*", metavar="key=value", help="same arguments as `serve run serve_app:app`")
    srv.add_argument("--address", default=None, help="Ray address (default: start a local cluster)")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--name", default="ipa", help="Serve application name")
    srv.add_argument("--dashboard", action="store_true", help="also start the Ray dashboard")
    srv.set_defaults(func=_serve)

    ap = sub.add_parser("apply-plan", help="apply plans from a JSON file to a running app")
    ap.add_argument("file")
    ap.add_argument("--address", default="auto")
    ap.add_argument("--name", default="ipa")
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.set_defaults(func=_apply_plan)

    energy = sub.add_parser("energy", help="measure a command, or read etrace2 output").add_subparsers(dest="energy_command", required=True)
    run = energy.add_parser("run", help="run CMD and print its energy in etrace2's format (best meter of this node)")
    run.add_argument("--interval", type=float, default=0.5, help="sampling period (s); keeps RAPL wraparound visible")
    run.add_argument("--estimate", action="store_true", help="use the TDP estimate even where RAPL is readable")
    run.add_argument("command_args", nargs=argparse.REMAINDER, metavar="-- CMD ...")
    run.set_defaults(func=_energy_run)
    imp = energy.add_parser("import", help="read etrace2 output files (e.g. from Chameleon nodes)")
    imp.add_argument("files", nargs="+")
    imp.set_defaults(func=_energy_import)

    plan = sub.add_parser("plan", help="solve IPA's program (with energy) for a pipeline at a load, from the profiles")
    plan.add_argument("--pipeline", default="")
    plan.add_argument("--load", type=float, default=None, help="predicted load (req/s)")
    plan.add_argument("--sla", type=float, default=None, help="end-to-end SLA (ms; default: the pipeline's)")
    plan.add_argument("--policy", default=None,
                      help="ipa, ipa-energy, fa2-low, fa2-high, rim, infadapter (comma-separated to compare; "
                           "default ipa-energy, or the problem file's)")
    plan.add_argument("--margin", type=float, default=1.0, help="headroom multiplier on the load")
    plan.add_argument("--tier", default="mini")
    plan.add_argument("--hardware", default="", help="profile hardware id (default: this machine's)")
    plan.add_argument("--max-replicas", type=int, default=16, help="replica cap per stage")
    plan.add_argument("--max-variants", type=int, default=3, help="most variants in an infadapter mix")
    plan.add_argument("--problem", default="", help="solve this problem JSON (docs/plan-format.md) instead of catalog + store")
    plan.add_argument("--write-problem", default="", help="also write the problem solved as JSON to this file")
    plan.add_argument("--json", action="store_true", help="print the Plan(s) as JSON (the format PUT /v1/plan takes)")
    plan.add_argument("--benchmark", action="store_true", help="decision time on synthetic 1-9 stages x 1-9 variants")
    plan.add_argument("--repeats", type=int, default=5)
    plan.set_defaults(func=_plan)

    prof = sub.add_parser("profile", help="measure latency, throughput and energy per variant × batch size")
    prof.add_argument("--tier", default="mini")
    prof.add_argument("--variants", default="", help="comma-separated variant names (default: every variant of the tier)")
    prof.add_argument("--batch-sizes", default="1,2,4,8")
    prof.add_argument("--device", default="cpu", help="cpu or cuda:N")
    prof.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up left out of the window")
    prof.add_argument("--window", type=float, default=5.0, help="seconds of steady-state window")
    prof.add_argument("--force", action="store_true", help="measure again what the store already has")
    prof.add_argument("--estimate", action="store_true", help="use the TDP estimate even where RAPL is readable")
    prof.add_argument("--out", default="", help="profile store folder (default: the shipped workloads/profiles)")
    prof.set_defaults(func=_profile)

    cat = sub.add_parser("catalog", help="list pipelines, stages and variants with their accuracy sources")
    cat.add_argument("--tier", default="mini")
    cat.set_defaults(func=_catalog)

    from experiments.cli import add_parsers

    add_parsers(sub)

    args = parser.parse_args(argv)
    from ipa_energy.errors import IpaEnergyError

    try:
        return args.func(args)
    except IpaEnergyError as e:
        print(f"ipa-energy: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
