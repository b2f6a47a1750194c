"""`ipa-energy serve | apply-plan | catalog`: run the app, change its plan, list what it can serve."""

from __future__ import annotations

import argparse
import sys
import time

__all__ = ["add_parsers"]


def _serve(args: argparse.Namespace) -> int:
    import ray
    from ray import serve

    from serve_app import control
    from serve_app.config import from_args

    bad = [kv for kv in args.args if "=" not in kv]
    if bad:
        print(f"ipa-energy serve: arguments are key=value, got {bad}", file=sys.stderr)
        return 2
    spec, plans = from_args(dict(kv.split("=", 1) for kv in args.args))
    from energy.supply import physical_cores

    control.node_environment()
    # a local Ray gets logical CPUs = physical cores, so reservations count what replicas consume
    ray.init(address=args.address, include_dashboard=args.dashboard,
             num_cpus=None if args.address else (args.num_cpus or physical_cores()))
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
    print(report.model_dump_json(indent=2))
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


def add_parsers(sub) -> None:
    from serve_app.constants import APP_NAME

    srv = sub.add_parser("serve", help="start Ray locally (or join --address) and serve the app")
    srv.add_argument("args", nargs="*", metavar="key=value", help="same arguments as `serve run serve_app:app`")
    srv.add_argument("--address", default=None, help="Ray address (default: start a local cluster)")
    srv.add_argument("--host", default="127.0.0.1", help="HTTP address to bind (default: this host only)")
    srv.add_argument("--port", type=int, default=8000, help="HTTP port")
    srv.add_argument("--name", default=APP_NAME, help="Serve application name")
    srv.add_argument("--dashboard", action="store_true", help="also start the Ray dashboard")
    srv.add_argument("--num-cpus", type=int, default=None, help="logical CPUs of a local Ray (default: physical cores)")
    srv.set_defaults(func=_serve)

    ap = sub.add_parser("apply-plan", help="apply plans from a JSON file to a running app")
    ap.add_argument("file", help="JSON file with a Plan or a list of Plans (docs/plan-format.md)")
    ap.add_argument("--address", default="auto", help="Ray address of the cluster the app runs on")
    ap.add_argument("--name", default=APP_NAME, help="Serve application name")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds each step may take before it rolls back")
    ap.set_defaults(func=_apply_plan)

    cat = sub.add_parser("catalog", help="list pipelines, stages and variants with their accuracy sources")
    cat.add_argument("--tier", default="mini", help="catalog tier: mini (CPU stand-ins) or full")
    cat.set_defaults(func=_catalog)
