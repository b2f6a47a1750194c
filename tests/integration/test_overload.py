"""Three times more load than the plan serves: the app refuses the excess at once (503 +
Retry-After, counted as shed), answers the rest within a bounded time, and recovers."""

import asyncio

import httpx
import numpy as np
import pytest

from ipa_energy.messages import Shed
from loadgen.driver import closed_loop, open_loop, summarize
from serve_app import control
from workloads import catalog, payloads

pytestmark = pytest.mark.integration


def test_three_times_overload_gets_only_fast_503s_and_the_app_recovers(base_url, http):
    pipeline = catalog.pipeline("classify")
    control.apply_plan(pipeline.default_plan())  # one replica, batch 1
    url = f"{base_url}/v1/pipelines/classify"
    body = lambda i: payloads.image_request(seed=i % 4)  # noqa: E731
    # capacity of the plan as this host serves it now: one client back to back
    probe = summarize(asyncio.run(closed_loop(url, body, clients=1, duration_s=5)))
    capacity = probe["requests"] / 5
    rows = asyncio.run(open_loop(url, body, rate_rps=3 * capacity, duration_s=15, seed=1))
    statuses = {r.status for r in rows}
    assert statuses <= {200, 503}, [r.error for r in rows if r.status not in (200, 503)][:3]
    refused = [r for r in rows if r.status == 503]
    assert refused and all(r.shed for r in refused), [r.error for r in refused if not r.shed][:3]
    shed_ms = np.array([r.latency_ms for r in refused])
    answered_ms = np.array([r.latency_ms for r in rows if r.status == 200])
    # The excess is refused, not queued: sheds are answered at once, and the requests let in are
    # answered about within the SLA. Unrefused, the queue would grow all along (to ~30 s here). The
    # bounds leave room for this host's stalls (Ray's own processes and the load generator share
    # its 2 cores: a second or two that every request then in the queue waits through). They test
    # that the queue is bounded, not a speed: answered p90 measured 1.06–2.24 s in four runs on a
    # 2-core host, and 3.12 s once in a fresh-clone run of the whole suite (1.30 s rerun alone);
    # an unbounded queue puts it near 27 s. The growth check below is the finer one.
    assert np.median(shed_ms) < 100, f"median shed answer {np.median(shed_ms):.0f} ms"
    assert answered_ms.size and np.percentile(answered_ms, 90) < 5 * pipeline.sla_ms, np.percentile(answered_ms, 90)
    assert answered_ms.max() < 10 * pipeline.sla_ms, answered_ms.max()
    first, last = np.array_split(answered_ms, 2)
    assert np.median(last) < 2 * np.median(first) + pipeline.sla_ms / 2, "the admitted requests' wait grew: a queue built up"
    recovered = asyncio.run(closed_loop(url, body, clients=1, duration_s=3))
    assert recovered and all(r.status == 200 for r in recovered), [r.error for r in recovered][:3]
    print(f"\n3x overload of classify ({capacity:.1f} req/s served back to back): {len(rows)} sent, {len(refused)} shed "
          f"(p50 {np.median(shed_ms):.0f} ms, p99 {np.percentile(shed_ms, 99):.0f} ms), answered p50 "
          f"{np.median(answered_ms):.0f} ms, p90 {np.percentile(answered_ms, 90):.0f} ms, p99 "
          f"{np.percentile(answered_ms, 99):.0f} ms (SLA {pipeline.sla_ms:g} ms)")


def test_a_shed_answer_carries_retry_after(base_url):
    """Fill the queue with slow requests, then one more gets 503, Retry-After and a Shed body."""
    url = f"{base_url}/v1/pipelines/classify"

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=None)) as client:
            first = await client.post(url, json=payloads.image_request(seed=0))  # a timing for the shedder
            assert first.status_code == 200
            sends = [client.post(url, json=payloads.image_request(seed=i % 4)) for i in range(300)]
            return await asyncio.gather(*sends)

    answers = asyncio.run(burst())
    shed = [r for r in answers if r.status_code == 503]
    assert shed, "300 requests at once on one replica must overflow a 1 s SLA"
    assert all(int(r.headers["retry-after"]) >= 1 for r in shed)
    assert Shed.model_validate_json(shed[0].content).pipeline == "classify"
