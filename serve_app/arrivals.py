"""Arrivals per second summed over every ingress replica, for the planner.

A deployment handle reaches one ingress replica, so with `ingress_replicas > 1` asking the
ingress undercounts. Instead each ingress replica pushes its per-second counts, about once
a second, to one small detached actor per app (`arrivals-<app>`), which sums them:

* a push carries the seconds completed since the replica's last acknowledged push, and
  *sets* (replica, pipeline, second) → count, never adds, so a retried or repeated push
  cannot double-count; after a failed push the replica resends its whole window;
* a replica that restarts comes back with a new replica id; what its predecessor pushed
  stays (it was served), and a replica that stops pushing no longer holds the history back;
* the history ends at the last second every live replica has pushed (complete seconds
  only), so the newest second is never undercounted while a push is in flight;
* if the actor itself restarts (it is restartable, its state is not persisted), replicas
  notice its new incarnation in the reply and resend their whole window.

Pushes carry the replica's per-second stage timings too (serve_app.timings), under the same
rules; the planner's closed loop reads them back summed (`ArrivalsActor.stages`). Each push is
followed by the replica's running energy totals per pipeline, which `GET /v1/energy` sums
(`ArrivalsActor.energy_totals`); a restarted actor has them again from the live replicas' next push.

The actor is also the app's registry of what each stage replica runs: a replica reports the
variant it serves, the one it was last asked for and the variants that failed to load there
(`report_replica`), and the plan controller waits on `replicas` until a switch in place has
happened, or failed, on every running replica of a slot.

`ArrivalCounter` (per replica) and `ArrivalBook` (the sum) are plain Python, tested
without Ray; `ArrivalsActor` wraps the book.
"""

from __future__ import annotations

import collections
import uuid

import ray

from ipa_energy import RAY_NAMESPACE
from serve_app.constants import ARRIVALS_HISTORY_S as HISTORY_S
from serve_app.constants import ARRIVALS_STALE_S as STALE_S
from serve_app.request_energy import sum_dumps
from serve_app.timings import StageTimings, observe

#: reports kept per stage deployment (a replica reports at start and at every switch)
REPLICA_STATES_KEPT = 256

__all__ = ["ArrivalBook", "ArrivalCounter", "ArrivalsActor", "Pusher", "actor_name", "arrivals_actor"]


class ArrivalCounter:
    """One ingress replica's arrivals per pipeline per whole Unix second."""

    def __init__(self, pipelines, keep_s: int = HISTORY_S):
        self.keep_s = keep_s
        self.counts: dict[str, collections.Counter] = {p: collections.Counter() for p in pipelines}

    def count(self, pipeline: str, now: float) -> None:
        second = int(now)
        counts = self.counts.setdefault(pipeline, collections.Counter())
        counts[second] += 1
        if counts[second] == 1 and len(counts) > self.keep_s:  # a new second: forget those past the window
            for old in [s for s in counts if s < second - self.keep_s]:
                del counts[old]

    def history(self, pipeline: str, now: float, seconds: int = HISTORY_S) -> list[int]:
        """This replica's counts for the last `seconds` complete seconds, oldest first."""
        end = int(now)
        counts = self.counts.get(pipeline, collections.Counter())
        return [counts.get(s, 0) for s in range(end - seconds, end)]

    def complete(self, now: float, since: int) -> dict[str, dict[int, int]]:
        """Non-zero counts of the complete seconds from `since` on (the current one is still open)."""
        end = int(now)
        return {p: {s: n for s, n in c.items() if since <= s < end} for p, c in self.counts.items()}


class ArrivalBook:
    """The sum over replicas of what they pushed."""

    def __init__(self, keep_s: int = HISTORY_S, stale_s: float = STALE_S):
        self.keep_s, self.stale_s = keep_s, stale_s
        self.incarnation = uuid.uuid4().hex  # new on every (re)start of the holder
        self.counts: dict[str, dict[str, dict[int, int]]] = {}  # replica → pipeline → second → count
        self.timings: dict[str, dict[str, dict[int, list]]] = {}  # replica → stage variant → second → entry
        self.pushed: dict[str, tuple[int, float]] = {}  # replica → (last complete second, when pushed)

    def update(self, replica: str, counts: dict[str, dict[int, int]], complete_through: int, now: float,
               timings: dict[str, dict[int, list]] | None = None) -> str:
        """Record `replica`'s counts and stage timings (complete up to and including
        `complete_through`); returns the incarnation."""
        mine = self.counts.setdefault(replica, {})
        for pipeline, seconds in counts.items():
            mine.setdefault(pipeline, {}).update({int(s): int(n) for s, n in seconds.items()})
        timed = self.timings.setdefault(replica, {})
        for k, seconds in (timings or {}).items():
            timed.setdefault(k, {}).update({int(s): e for s, e in seconds.items()})
        self.pushed[replica] = (int(complete_through), now)
        self._prune(now)
        return self.incarnation

    def end(self, now: float) -> int:
        """First second not yet complete for every live replica (exclusive end of the history)."""
        live = [through for through, at in self.pushed.values() if now - at <= self.stale_s]
        return min([int(now)] + [through + 1 for through in live])

    def history(self, pipeline: str, now: float, seconds: int = HISTORY_S) -> list[int]:
        """Arrivals per second over all replicas for `seconds` complete seconds, oldest first."""
        end = self.end(now)
        total: collections.Counter = collections.Counter()
        for by_pipeline in self.counts.values():
            total.update(by_pipeline.get(pipeline, {}))
        return [total.get(s, 0) for s in range(end - seconds, end)]

    def stages(self, pipeline: str, now: float, seconds: int) -> list:
        """What each stage variant of `pipeline` achieved over the last `seconds` complete seconds."""
        end = self.end(now)
        return observe(self.timings.values(), pipeline, end - seconds, end)

    def by_replica(self, pipeline: str) -> dict[str, int]:
        """Arrivals kept per replica (to see how the ingress replicas share the load)."""
        return {r: sum(c.get(pipeline, {}).values()) for r, c in self.counts.items()}

    def _prune(self, now: float) -> None:
        oldest = int(now) - self.keep_s
        for book in (self.counts, self.timings):
            for by_key in book.values():
                for seconds in by_key.values():
                    for s in [s for s in seconds if s < oldest]:
                        del seconds[s]
        for replica in list(self.counts):
            if self.pushed.get(replica, (0, 0.0))[1] < now - self.keep_s:  # gone for a whole window
                del self.counts[replica]
                self.timings.pop(replica, None)
                self.pushed.pop(replica, None)


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=4)
class ArrivalsActor:
    def __init__(self):
        self.book = ArrivalBook()
        self.states: dict[str, dict[str, dict]] = {}  # stage deployment → replica id → StageReplica.running()
        self.energy: dict[str, dict[str, dict]] = {}  # ingress replica → pipeline → its running energy totals

    def update(self, replica: str, counts: dict, complete_through: int, timings: dict | None = None) -> str:
        import time

        return self.book.update(replica, counts, complete_through, time.time(), timings)

    def stages(self, pipeline: str, seconds: int) -> list[dict]:
        """Dumped :class:`~ipa_energy.records.StageObservation` rows of the last `seconds`."""
        import time

        return [o.model_dump(mode="json") for o in self.book.stages(pipeline, time.time(), seconds)]

    def history(self, pipeline: str, seconds: int = HISTORY_S) -> list[int]:
        import time

        return self.book.history(pipeline, time.time(), seconds)

    def by_replica(self, pipeline: str) -> dict[str, int]:
        return self.book.by_replica(pipeline)

    def report_energy(self, replica: str, totals: dict[str, dict]) -> None:
        """An ingress replica's running totals per pipeline ({requests, energy_j, methods}); they
        replace its last report (kept after it stops: what it answered was answered)."""
        self.energy[replica] = totals

    def energy_totals(self) -> dict[str, dict]:
        """Pipeline → {requests, energy_j, methods} summed over every ingress replica that reported."""
        return sum_dumps(list(self.energy.values()))  # a copy: a report may come in meanwhile (another thread)

    def report_replica(self, deployment: str, replica: str, state: dict) -> None:
        states = self.states.setdefault(deployment, {})
        states.pop(replica, None)
        states[replica] = state
        while len(states) > REPLICA_STATES_KEPT:  # replicas come and go: forget the longest silent
            del states[next(iter(states))]

    def cold_starts(self, prefix: str = "") -> dict[str, float]:
        """Replica id → its cold start (s), for the replicas of deployments named `prefix`… that
        reported one (the planner's horizon: how long a replica it adds takes to answer)."""
        return {replica: state["cold_start_s"] for deployment, states in self.states.items()
                if deployment.startswith(prefix) for replica, state in states.items() if state.get("cold_start_s")}

    def replicas(self, deployments: list[str]) -> dict[str, dict[str, dict]]:
        """Deployment → replica id → its last report (replicas that never reported are absent)."""
        return {d: dict(self.states.get(d, {})) for d in deployments}


def actor_name(app_name: str) -> str:
    return f"arrivals-{app_name}"


def arrivals_actor(app_name: str):
    """The app's aggregator (created by whoever asks first; detached: outlives replicas)."""
    return ArrivalsActor.options(
        name=actor_name(app_name), namespace=RAY_NAMESPACE, lifetime="detached", get_if_exists=True,
    ).remote()


class Pusher:
    """The ingress side: what to push next, given the last reply (plain Python)."""

    def __init__(self, counter: ArrivalCounter, replica: str, timings: StageTimings | None = None):
        self.counter, self.replica, self.timings = counter, replica, timings
        self.incarnation: str | None = None  # None: the book may lack our history, send it all
        self.through = self._pending = 0  # last complete second the book has from us

    def payload(self, now: float) -> tuple[str, dict[str, dict[int, int]], int, dict]:
        """Arguments of `ArrivalsActor.update`: what the book may lack, complete through now - 1."""
        since = 0 if self.incarnation is None else self.through + 1
        self._pending = int(now) - 1
        timings = self.timings.complete(now, since) if self.timings is not None else {}
        return self.replica, self.counter.complete(now, since), self._pending, timings

    def acknowledge(self, incarnation: str | None) -> None:
        """Call with the book's reply to the last payload, or None when the push failed."""
        if incarnation is None or self.incarnation not in (None, incarnation):
            self.incarnation = None  # failed, or the book restarted since: resend everything next time
        else:
            self.incarnation, self.through = incarnation, self._pending
