"""What the pipeline path costs: bare Ray Serve deployment vs ingress + stage router + batching.

Both serve the same model (ResNet18 at 224 px, random weights, one CPU thread) and decode
the same PNG body; both are deployed at once and driven open-loop (Poisson arrivals) at the
same rates, in windows that alternate between the two (bare, pipeline, then pipeline, bare,
...), so a drifting host hits both alike. Prints, per rate, the median over the windows of
p50/p99 latency and throughput, and over the back-to-back window pairs the median
pipeline/bare p50 ratio and the milliseconds the pipeline adds; writes
results/bench-overhead.json with every window.

    make bench-overhead            # or: python bench/overhead.py --rates 2,5,8 --seconds 15 --repeats 5
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import time

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
from ray import serve  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from starlette.requests import Request  # noqa: E402

from ipa_energy.files import write_json  # noqa: E402
from ipa_energy.spec import PipelineSpec, Plan, Resources, StagePlan, StageSpec  # noqa: E402
from loadgen.driver import open_loop, summarize  # noqa: E402
from serve_app import control  # noqa: E402
from serve_app.config import AppSpec  # noqa: E402
from serve_app.requests import Limits, parse_body, request_model  # noqa: E402
from workloads import catalog, payloads  # noqa: E402

VARIANT = catalog.pipeline("classify").stage("classifier").variant("resnet18-112-mini").model_copy(
    update={"name": "resnet18-224", "build_args": {"input_size": 224}, "resources": Resources(num_cpus=1)}
)
PIPELINE = PipelineSpec(name="bench", sla_ms=1000, stages=(StageSpec(name="classifier", variants=(VARIANT,)),))


@serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=64)
class Bare:
    """The same model served the plain Ray Serve way: one deployment, no batching.

    Like a stage replica it runs one forward pass at a time (a stage's batcher does too), so
    the comparison isolates the pipeline machinery rather than a difference in parallelism.
    """

    def __init__(self):
        import torch

        from workloads.tasks import build_runner

        torch.set_num_threads(1)
        self.torch = torch
        self.runner = build_runner(VARIANT)
        self.schema, self.limits = request_model(PIPELINE), Limits()
        self._run([payloads.warmup_payload("classify")])
        self.busy = asyncio.Lock()

    def _run(self, batch):
        with self.torch.inference_mode():
            return self.runner(batch)

    async def __call__(self, request: Request) -> dict:
        payload = await asyncio.to_thread(parse_body, self.schema, await request.body(), self.limits)
        async with self.busy:
            output = (await asyncio.to_thread(self._run, [payload]))[0]
        return {"outputs": {"classifier": output}}


def window(url: str, rate: float, seconds: float, seed: int) -> dict:
    """One open-loop window; the client reads only the status, so both paths pay the same client cost."""
    body = payloads.image_request(224, 224)
    records = asyncio.run(open_loop(url, lambda i: body, rate_rps=rate, duration_s=seconds, seed=seed, read_answer=False))
    return summarize(records, window_s=seconds)


def measure(urls: dict[str, str], rates: list[float], seconds: float, repeats: int) -> dict[str, dict[float, list]]:
    """Windows of both paths interleaved (bare, pipeline, pipeline, bare, ...) so that drift of the
    host hits both alike; `repeats` windows per path and rate."""
    for url in urls.values():  # warm-up, not recorded
        window(url, 2, 5, seed=0)
    out: dict[str, dict[float, list]] = {name: {r: [] for r in rates} for name in urls}
    for i in range(repeats):
        order = list(urls) if i % 2 == 0 else list(reversed(urls))
        for rate in rates:
            for name in order:
                out[name][rate].append(window(urls[name], rate, seconds, seed=int(rate * 10) + i))
    return out


def _median(stats: list[dict], key: str) -> float:
    return float(statistics.median(s[key] for s in stats))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2,5,8", help="request rates (req/s), comma-separated")
    parser.add_argument("--seconds", type=float, default=15.0, help="seconds per window")
    parser.add_argument("--repeats", type=int, default=5, help="windows per path and rate (the table shows medians)")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    control.node_environment()  # as the product starts Ray: it applies to both paths
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    try:  # both deployed at once: whatever runs in the background runs during both
        serve.run(Bare.bind(), name="bare", route_prefix="/bare")
        plan = Plan(pipeline="bench", stages={"classifier": StagePlan(variant=VARIANT.name, batch_size=1)})
        control.deploy(AppSpec(pipelines=(PIPELINE,)), {"bench": plan}, name="pipeline", route_prefix="/p")
        runs = measure({"bare": f"{base}/bare", "pipeline": f"{base}/p/v1/pipelines/bench"}, rates, args.seconds,
                       args.repeats)
    finally:  # the apps drain, then Serve stops with the local cluster (no serve.shutdown noise)
        for app in ("bare", "pipeline"):
            serve.delete(app)
        ray.shutdown()

    table = Table(title=f"pipeline path vs bare deployment ({VARIANT.name}, random weights; {args.repeats} "
                        f"interleaved {args.seconds:.0f} s windows per path and rate; medians)")
    for col in ("req/s offered", "bare p50", "bare p99", "bare req/s", "pipe p50", "pipe p99", "pipe req/s",
                "p50 ratio", "p50 added ms", "p50 ratio per window pair"):
        table.add_column(col, justify="right")
    rows = []
    for rate in rates:
        b, p = runs["bare"][rate], runs["pipeline"][rate]
        pairs = list(zip(b, p))  # windows taken back to back
        ratios = [pw["p50_ms"] / bw["p50_ms"] for bw, pw in pairs]
        added = [pw["p50_ms"] - bw["p50_ms"] for bw, pw in pairs]
        row = {"rate_rps": rate, "bare": b, "pipeline": p, "bare_p50_ms": _median(b, "p50_ms"),
               "pipeline_p50_ms": _median(p, "p50_ms"), "p50_ratio": float(statistics.median(ratios)),
               "p50_added_ms": float(statistics.median(added)), "p50_ratio_per_window_pair": ratios}
        rows.append(row)
        table.add_row(f"{rate:g}", f"{row['bare_p50_ms']:.1f}", f"{_median(b, 'p99_ms'):.1f}",
                      f"{_median(b, 'throughput_rps'):.2f}", f"{row['pipeline_p50_ms']:.1f}",
                      f"{_median(p, 'p99_ms'):.1f}", f"{_median(p, 'throughput_rps'):.2f}", f"{row['p50_ratio']:.3f}",
                      f"{row['p50_added_ms']:+.1f}", " ".join(f"{r:.2f}" for r in ratios))
    Console().print(table)
    out = write_json("results/bench-overhead.json", {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                     "variant": VARIANT.name, "seconds_per_window": args.seconds,
                                                     "repeats": args.repeats, "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
