"""Replay a load trace against a served pipeline with Locust (headless or web UI).

    locust -f loadgen/locustfile.py --host http://127.0.0.1:8000 --headless \\
        --pipeline video --trace bursty --offset 330 --seconds 120 --rate-factor 0.15 \\
        --record results/requests.jsonl

`--trace`: a Twitter window of IPA (bursty, steady_low, steady_high, fluctuating; damped by 8
as IPA), `constant:RPS`, or a per-second CSV. The shape keeps `--senders` users alive until every
arrival of the trace has been sent and answered (or `--drain` seconds past its end); each user
sends the next arrival when it is due (exponential gaps within each second, as IPA). Bodies
are valid requests for the pipeline's inputs, read from the server's `GET /v1/pipelines/{name}`.
Run Locust in its own process: gevent's patching and Ray don't mix in one interpreter.
Single process only (the schedule is not shared between Locust workers).
"""

from __future__ import annotations

import json
import time
import urllib.request

import gevent
from locust import FastHttpUser, LoadTestShape, constant, events, task

from ipa_energy.messages import PipelineInfo
from loadgen.options import add_replay_arguments, trace_from_arguments
from loadgen.replay import Replay, row_from_response
from workloads import payloads

STATE: dict = {"replay": None, "bodies": [], "path": ""}
LEAD_S = 2.0  # users spawn before second 0 of the trace


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    group = parser.add_argument_group("ipa-energy trace replay")
    add_replay_arguments(group)
    group.add_argument("--record", default="", help="write every request to this JSONL file (ipa_energy.records.RequestRow)")


def _bodies(host: str, pipeline: str, n: int = 8) -> list[bytes]:
    """Valid bodies for the pipeline's request schema, as the server states it."""
    with urllib.request.urlopen(f"{host.rstrip('/')}/v1/pipelines/{pipeline}", timeout=30) as r:
        info = PipelineInfo.model_validate_json(r.read())
    keys = tuple(info.request_schema.get("properties", {}))
    return [json.dumps(payloads.request_for(keys, seed=s)).encode() for s in range(n)]


@events.test_start.add_listener
def _start(environment, **_) -> None:
    o = environment.parsed_options
    trace = trace_from_arguments(o)
    if STATE["replay"] is not None:
        STATE["replay"].close()
    STATE["replay"] = Replay(trace, o.record or None)
    STATE["replay"].reset(LEAD_S)
    STATE["bodies"] = _bodies(environment.host, o.pipeline)
    STATE["path"] = f"/v1/pipelines/{o.pipeline}"


@events.test_stop.add_listener
def _stop(**_) -> None:
    if STATE["replay"] is not None:
        STATE["replay"].close()


class PipelineUser(FastHttpUser):
    wait_time = constant(0)
    network_timeout = 300.0
    connection_timeout = 30.0

    @task
    def send(self) -> None:
        replay: Replay | None = STATE["replay"]
        due = replay.take() if replay is not None else None
        if due is None:  # trace spent: idle until the shape stops the test
            gevent.sleep(0.5)
            return
        gevent.sleep(max(0.0, due - time.time()))
        body = STATE["bodies"][replay.next_index % len(STATE["bodies"])]
        sent = time.time()
        with self.client.post(STATE["path"], data=body, headers={"content-type": "application/json"},
                              name=STATE["path"], catch_response=True) as r:
            finished = time.time()
            error = "" if r.status_code else f"{type(r.error).__name__}: {r.error}"
            row = row_from_response(due, sent, finished, r.status_code or 0, r.content, error)
            if row.status == 200:
                r.success()
            else:
                r.failure(row.error or f"HTTP {row.status}")
        replay.finished(row)


class TraceShape(LoadTestShape):
    """Keeps the senders alive for the length of the trace plus the drain, then stops."""

    def tick(self):
        o = self.runner.environment.parsed_options
        replay: Replay | None = STATE["replay"]
        if replay is not None and self.get_run_time() > LEAD_S and replay.over(o.drain):
            return None
        return o.senders, max(o.senders, 1)
