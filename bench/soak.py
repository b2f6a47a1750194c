"""Soak (issue 12): the demo pipeline at a steady rate for a long time, with the planner running.

Serves the classify pipeline (the demo's) on a local Ray with logical CPUs = physical cores,
starts the ipa-energy planner (LSTM, 10 s interval), and sends Poisson arrivals at `--rate`
for `--minutes`. It prints every Ray process's memory (USS, by process title: each actor,
each Serve replica, the raylet and the GCS) after a warm-up and at the end, and flags growth
over `--flag` percent. A replica the planner replaced in between shows as gone and new.
Exit 1 if a request failed or something grew past the flag.

    .venv/bin/python bench/soak.py --minutes 30 --rate 3        # make soak
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from energy.supply import physical_cores  # noqa: E402
from loadgen.driver import open_loop, summarize  # noqa: E402
from planner.actor import start_planner, stop_planner  # noqa: E402
from serve_app import control  # noqa: E402
from serve_app.config import from_args  # noqa: E402
from workloads import payloads  # noqa: E402

RAY_DAEMONS = ("raylet", "gcs_server")


def ray_memory_mb() -> dict[int, tuple[str, float]]:
    """pid → (process title, USS in MiB), for Ray's workers (``ray::…``) and daemons on this host."""
    out = {}
    for p in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            cmd = p.info["cmdline"] or []
            title = cmd[0] if cmd else ""
            if title.startswith("ray::") and "IDLE" not in title:
                name = title.split(" ")[0].removesuffix(".listen_for_change")  # the task it runs, for some
            elif p.info["name"] in RAY_DAEMONS:
                name = p.info["name"]
            else:
                continue
            out[p.info["pid"]] = (name, p.memory_full_info().uss / 2**20)
        except (psutil.Error, IndexError):
            continue
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=3.0, help="requests per second (Poisson)")
    parser.add_argument("--warmup", type=float, default=120.0, help="seconds before the first memory reading")
    parser.add_argument("--flag", type=float, default=5.0, help="flag growth over this percent")
    args = parser.parse_args()
    control.node_environment()
    ray.init(num_cpus=physical_cores(), include_dashboard=False, log_to_driver=False)
    port = 8000 + os.getpid() % 1000
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    spec, plans = from_args({"pipelines": "classify"})
    control.deploy(spec, plans)
    url = f"http://127.0.0.1:{port}/v1/pipelines/classify"
    planner = start_planner("ipa", "classify", policy="ipa-energy", interval_s=10.0, predictor="lstm")
    memory: dict[str, dict[int, tuple[str, float]]] = {}

    async def drive() -> list:
        async def read_memory():
            await asyncio.sleep(args.warmup)
            memory["start"] = await asyncio.to_thread(ray_memory_mb)
            await asyncio.sleep(max(0.0, args.minutes * 60 - args.warmup - 5))
            memory["end"] = await asyncio.to_thread(ray_memory_mb)

        reader = asyncio.create_task(read_memory())
        records = await open_loop(url, lambda i: payloads.image_request(seed=i), args.rate, args.minutes * 60)
        await reader
        return records

    started = time.time()
    try:
        records = asyncio.run(drive())
        decisions = ray.get(planner.decisions.remote())
    finally:
        stop_planner("ipa", "classify")
        serve.shutdown()
        ray.shutdown()
    stats = summarize(records)
    print(f"soak: {args.minutes:g} min at {args.rate:g} req/s (Poisson), classify, ipa-energy planner: "
          f"{stats['requests']} requests, {stats['failed']} failed, {stats['shed']} shed, p50 {stats['p50_ms']:.0f} ms, "
          f"p99 {stats['p99_ms']:.0f} ms, {len(decisions)} decisions ({sum(d['changed'] for d in decisions)} changes), "
          f"{time.time() - started:.0f} s wall")
    start, end = memory.get("start", {}), memory.get("end", {})
    print(f"\n| process | USS after {args.warmup:g} s (MiB) | USS at the end (MiB) | growth |")
    print("|---|---|---|---|")
    flagged = []
    for pid in sorted(set(start) | set(end), key=lambda p: (start.get(p) or end.get(p))[0]):
        name = f"{(start.get(pid) or end.get(pid))[0]} ({pid})"
        a, b = (start[pid][1] if pid in start else None), (end[pid][1] if pid in end else None)
        if a is None or b is None:
            print(f"| {name} | {'—' if a is None else f'{a:.0f}'} | {'—' if b is None else f'{b:.0f}'} | "
                  f"{'started since' if a is None else 'gone'} |")
            continue
        growth = (b - a) / a * 100 if a else 0.0
        mark = " **over the flag**" if growth > args.flag else ""
        if mark:
            flagged.append(name)
        print(f"| {name} | {a:.0f} | {b:.0f} | {growth:+.1f}%{mark} |")
    if flagged:
        print(f"\ngrew more than {args.flag:g}%: {', '.join(flagged)}")
    return 0 if not flagged and stats["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
