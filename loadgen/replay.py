"""Open-loop replay state shared by Locust's users (no Locust import: testable alone).

Arrival times come from the trace (``loadgen.traces.schedule``). Every user takes the next
arrival, sleeps until it is due, sends it and waits for the answer; so with enough users
the offered load follows the trace whatever the latency (open loop, as IPA), and when all
users are busy the lag shows up as `sent_s - scheduled_s` in the record.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import IO

import numpy as np

from pydantic import ValidationError

from ipa_energy.messages import PipelineAnswer, Shed
from ipa_energy.files import write_json
from ipa_energy.records import LoadStart, RequestRow, TraceSpec
from loadgen.traces import schedule

__all__ = ["Replay", "per_second", "row_from_response"]


class Replay:
    def __init__(self, trace: TraceSpec, record: str | Path | None = None, clock=time.time):
        self.trace = trace
        self.counts, self.times = schedule(trace)
        self.record_path = Path(record) if record else None
        self.clock = clock
        self._lock = threading.Lock()  # gevent greenlets don't need it; threads (tests) do
        self._file: IO[str] | None = None
        self.reset()

    def reset(self, lead_s: float = 0.0) -> None:
        """Start (again) with second 0 of the trace `lead_s` from now."""
        self.t0 = self.clock() + lead_s
        self.next_index = 0
        self.in_flight = 0
        self.sent = self.done = self.failed = 0
        self._pending: dict[float, int] = {}  # due time → requests taken but not answered
        if self._file:
            self._file.close()
        self._file = None
        if self.record_path:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.record_path.open("w")
            # the runner reads second 0 of the trace from here (RunMeta.load_start_s)
            write_json(self.meta_path, LoadStart(load_start_s=self.t0, trace=self.trace, scheduled=int(self.counts.sum())))

    @property
    def meta_path(self) -> Path:
        return self.record_path.with_suffix(".start.json")

    @property
    def total(self) -> int:
        return len(self.times)

    def take(self) -> float | None:
        """Claim the next arrival: its due time (Unix s), or None when the trace is spent."""
        with self._lock:
            if self.next_index >= len(self.times):
                return None
            due = self.t0 + float(self.times[self.next_index])
            self.next_index += 1
            self.in_flight += 1
            self._pending[due] = self._pending.get(due, 0) + 1
            return due

    def finished(self, row: RequestRow) -> None:
        with self._lock:
            self.in_flight -= 1
            if row.scheduled_s is not None and self._pending.get(row.scheduled_s):
                self._pending[row.scheduled_s] -= 1
            self.done += 1
            self.failed += row.status != 200
            if self._file:
                self._file.write(row.model_dump_json() + "\n")
                self._file.flush()  # a killed generator must not lose what it saw

    def over(self, drain_s: float) -> bool:
        """All arrivals sent and answered, or `drain_s` past the trace's end."""
        spent = self.next_index >= len(self.times)
        return (spent and self.in_flight == 0) or self.clock() > self.t0 + self.trace.seconds + drain_s

    def close(self) -> None:
        """Stop recording; requests still unanswered are recorded as failed (status 0), not dropped."""
        now = self.clock()
        for due, n in sorted(self._pending.items()):
            for _ in range(n):
                sent = min(max(due, self.t0), now)
                self.finished(RequestRow(scheduled_s=due, sent_s=sent, finished_s=now, latency_ms=(now - sent) * 1000,
                                         status=0, error="no answer when the load test stopped (drain time over)"))
        self._pending.clear()
        if self._file:
            self._file.close()
            self._file = None


def row_from_response(scheduled: float, sent: float, finished: float, status: int, body: bytes | str | None,
                      error: str = "") -> RequestRow:
    """A RequestRow from what came back (the pipeline's JSON answer, validated, or an error)."""
    row = RequestRow(scheduled_s=scheduled, sent_s=sent, finished_s=finished, latency_ms=(finished - sent) * 1000,
                     status=status, error=error[:300])
    if status == 200 and body:
        try:
            answer = PipelineAnswer.model_validate_json(body)
        except ValidationError as e:
            row.status, row.error = 0, f"unreadable answer: {e.errors()[0]['msg']}"[:300]
            return row
        row.plan_version, row.variants = answer.plan_version, answer.variants
        if answer.energy is not None:
            row.energy_j, row.energy_method = answer.energy.j, answer.energy.method
    elif status != 200 and not error and body:
        row.error = (body.decode(errors="replace") if isinstance(body, bytes) else body)[:300]
        if status == 503:
            try:
                row.shed = Shed.model_validate_json(body).shed
            except ValidationError:
                pass  # a 503 that is not a shed answer (e.g. a stage failed) stays a failure
    return row


def per_second(times: np.ndarray, seconds: int) -> np.ndarray:
    """How many of `times` (s from the start) fall in each second."""
    return np.bincount(np.floor(times).astype(int), minlength=seconds)[:seconds]
