"""In-process HTTP load: closed-loop clients or open-loop Poisson arrivals (asyncio + httpx).

For short demos, tests and benchmarks. Trace replay at scale is Locust's job (the
locustfiles here run in their own process: Locust's gevent patching and Ray don't mix).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import numpy as np


@dataclass
class RequestRecord:
    """One request as the client saw it. Times are seconds on the monotonic clock."""

    sent: float
    latency_s: float
    status: int  # HTTP status; 0 when no response arrived (connection error, timeout)
    error: str = ""
    variants: dict = field(default_factory=dict)
    plan_version: int | None = None

    @property
    def ok(self) -> bool:
        return self.status == 200


async def _send(client: httpx.AsyncClient, url: str, body: dict) -> RequestRecord:
    sent = time.monotonic()
    try:
        r = await client.post(url, json=body)
    except httpx.HTTPError as e:
        return RequestRecord(sent, time.monotonic() - sent, 0, f"{type(e).__name__}: {e}")
    latency = time.monotonic() - sent
    if r.status_code != 200:
        return RequestRecord(sent, latency, r.status_code, r.text[:300])
    data = r.json()
    return RequestRecord(sent, latency, 200, "", data.get("variants", {}), data.get("plan_version"))


async def closed_loop(
    url: str, make_body: Callable[[int], dict], clients: int, duration_s: float, timeout_s: float = 120.0
) -> list[RequestRecord]:
    """`clients` clients each send a request, wait for its answer, and repeat for `duration_s`."""
    records: list[RequestRecord] = []
    deadline = time.monotonic() + duration_s
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:

        async def worker(n: int) -> None:
            i = 0
            while time.monotonic() < deadline:
                records.append(await _send(client, url, make_body(n * 1_000_003 + i)))
                i += 1

        await asyncio.gather(*(worker(n) for n in range(clients)))
    return records


async def open_loop(
    url: str, make_body: Callable[[int], dict], rate_rps: float, duration_s: float, seed: int = 0, timeout_s: float = 120.0
) -> list[RequestRecord]:
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
            tasks.append(asyncio.create_task(_send(client, url, bodies[i % len(bodies)])))
            i += 1
        return list(await asyncio.gather(*tasks))


def summarize(records: list[RequestRecord], window_s: float | None = None) -> dict:
    """Counts, failures, latency percentiles (ms) and throughput of successful requests."""
    ok = [r for r in records if r.ok]
    lat = np.array([r.latency_s * 1000 for r in ok]) if ok else np.array([np.nan])
    span = window_s or (max(r.sent + r.latency_s for r in records) - min(r.sent for r in records) if records else 0)
    return {
        "requests": len(records),
        "failed": len(records) - len(ok),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "mean_ms": float(np.mean(lat)),
        "throughput_rps": len(ok) / span if span else 0.0,
    }
