"""In-process HTTP load: closed-loop clients or open-loop Poisson arrivals (asyncio + httpx).

For short demos, tests and benchmarks. Trace replay at scale is Locust's job (the
locustfiles here run in their own process: Locust's gevent patching and Ray don't mix).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable

import httpx
import numpy as np

from ipa_energy.records import RequestRow
from loadgen.replay import row_from_response

__all__ = ["closed_loop", "open_loop", "summarize"]


async def _send(client: httpx.AsyncClient, url: str, body: dict, read_answer: bool) -> RequestRow:
    """One request; with `read_answer` a 200 must carry a valid PipelineAnswer (variants, energy)."""
    sent = time.time()
    try:
        r = await client.post(url, json=body)
    except httpx.HTTPError as e:
        return row_from_response(None, sent, time.time(), 0, None, f"{type(e).__name__}: {e}")
    finished = time.time()
    return row_from_response(None, sent, finished, r.status_code, r.content if read_answer or r.status_code != 200 else None)


async def closed_loop(
    url: str, make_body: Callable[[int], dict], clients: int, duration_s: float, timeout_s: float = 120.0,
    read_answer: bool = True,
) -> list[RequestRow]:
    """`clients` clients each send a request, wait for its answer, and repeat for `duration_s`."""
    records: list[RequestRow] = []
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def worker(n: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                records.append(await _send(client, url, make_body(n * 1_000_003 + i), read_answer))
                i += 1

        await asyncio.gather(*(worker(n) for n in range(clients)))
    return records


async def open_loop(
    url: str, make_body: Callable[[int], dict], rate_rps: float, duration_s: float, seed: int = 0, timeout_s: float = 120.0,
    read_answer: bool = True,
) -> list[RequestRow]:
    """Poisson arrivals at `rate_rps` for `duration_s`, regardless of how fast answers come."""
    rng = random.Random(seed)
    bodies = [make_body(i) for i in range(8)]  # encode payloads up front: the sender must not lag
    async with httpx.AsyncClient(timeout=timeout_s, limits=httpx.Limits(max_connections=None)) as client:
        tasks = []
        start = time.monotonic()
        t, i = 0.0, 0
        while True:
            t += rng.expovariate(rate_rps)
            if t > duration_s:
                break
            await asyncio.sleep(max(0.0, start + t - time.monotonic()))
            tasks.append(asyncio.create_task(_send(client, url, bodies[i % len(bodies)], read_answer)))
            i += 1
        return list(await asyncio.gather(*tasks))


def summarize(records: list[RequestRow], window_s: float | None = None) -> dict:
    """Counts, failures, latency percentiles (ms) and throughput of successful requests.

    Shed requests (503 + Retry-After: the app refused load beyond its plan) are counted apart
    from failures, as in experiment summaries."""
    ok = [r for r in records if r.status == 200]
    shed = sum(1 for r in records if r.shed)
    lat = np.array([r.latency_ms for r in ok]) if ok else np.array([np.nan])
    span = window_s or (max(r.finished_s for r in records) - min(r.sent_s for r in records) if records else 0)
    return {
        "requests": len(records),
        "failed": len(records) - len(ok) - shed,
        "shed": shed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_ms": float(np.mean(lat)),
        "throughput_rps": len(ok) / span if span else 0.0,
    }
