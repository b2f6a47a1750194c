"""What the pipeline path costs: bare Ray Serve deployment vs ingress + stage router + batching.

Both serve the same model (ResNet18 at 224 px, random weights, one CPU thread) and decode
the same PNG body; both are driven open-loop (Poisson arrivals) at the same rates, one
setup at a time. Prints p50/p99 latency and throughput per rate and the pipeline/bare
ratios; writes results/bench-overhead.json.

    make bench-overhead            # or: python bench/overhead.py --rates 2,5,8 --seconds 20
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
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


def measure(url: str, rates: list[float], seconds: float) -> dict[float, dict]:
    body = payloads.image_request(224, 224)
    # The client reads only the status (read_answer=False): both paths pay the same client cost.
    asyncio.run(open_loop(url, lambda i: body, rate_rps=2, duration_s=5, read_answer=False))  # warm-up, not recorded
    out = {}
    for rate in rates:
        records = asyncio.run(open_loop(url, lambda i: body, rate_rps=rate, duration_s=seconds, seed=int(rate * 10),
                                        read_answer=False))
        out[rate] = summarize(records, window_s=seconds)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="2,5,8", help="request rates (req/s), comma-separated")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per rate")
    args = parser.parse_args()
    rates = [float(r) for r in args.rates.split(",")]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    base = f"http://127.0.0.1:{port}"
    try:
        serve.run(Bare.bind(), name="bare", route_prefix="/bare")
        bare = measure(f"{base}/bare", rates, args.seconds)
        serve.delete("bare")
        plan = Plan(pipeline="bench", stages={"classifier": StagePlan(variant=VARIANT.name, batch_size=1)})
        control.deploy(AppSpec(pipelines=(PIPELINE,)), {"bench": plan}, name="pipeline", route_prefix="/p")
        piped = measure(f"{base}/p/v1/pipelines/bench", rates, args.seconds)
    finally:
        serve.shutdown()
        ray.shutdown()

    table = Table(title=f"pipeline path vs bare deployment ({VARIANT.name}, random weights, {args.seconds:.0f} s per rate)")
    for col in ("req/s offered", "bare p50", "bare p99", "bare req/s", "pipe p50", "pipe p99", "pipe req/s", "p50 ratio", "p99 ratio"):
        table.add_column(col, justify="right")
    rows = []
    for rate in rates:
        b, p = bare[rate], piped[rate]
        row = {"rate_rps": rate, "bare": b, "pipeline": p, "p50_ratio": p["p50_ms"] / b["p50_ms"], "p99_ratio": p["p99_ms"] / b["p99_ms"]}
        rows.append(row)
        table.add_row(f"{rate:g}", f"{b['p50_ms']:.1f}", f"{b['p99_ms']:.1f}", f"{b['throughput_rps']:.2f}",
                      f"{p['p50_ms']:.1f}", f"{p['p99_ms']:.1f}", f"{p['throughput_rps']:.2f}",
                      f"{row['p50_ratio']:.3f}", f"{row['p99_ratio']:.3f}")
    Console().print(table)
    out = write_json("results/bench-overhead.json", {"measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                     "variant": VARIANT.name, "seconds_per_rate": args.seconds,
                                                     "rows": rows})
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
