"""Warm variants: a stage replica keeps its slot's other variants built, so a switch is a swap.

An in-place switch used to build the new model while the replica served the old one: 4–6 s
on a busy 2-core host, with the build's CPU taken from serving, at the moment a ramp needs
every core (issue 11: the adaptive policies' misses fell in those seconds; in the simulator,
switches that cost nothing lift ipa from 90 % to 100 % SLO attainment on the bench window).
So once a replica serves its first variant, it builds the others of its slot one by one, in
a thread of its own, and keeps them beside the one it serves. A switch to a warm variant
swaps at once; the variant left stays warm, so switching back costs nothing either.

A build starts only when the node has a core to spare (`WARM_IDLE_CORES`, measured over the
last second) and no switch is building in the replica: builds use cycles serving leaves idle.
They are not run at a lower priority instead: the build thread shares the replica's GIL with
the serving and switching threads, and a deprioritised thread holding it stalls them (a
switch's build took 21 s on a busy 2-core host with a nice-19 warm build beside it, where it
takes about one).

Warm models live in memory the plan leaves free. The capacity model counts one model per
replica (its profile's ``memory_mb_per_replica``); these are a cache on top: a model is kept
only while the node has more than ``reserve`` of its memory available, and the cache is
emptied when it falls below (checked after every build and at each health check). GPU slots
keep no warm models: the program places fractional-GPU replicas by GPU memory, which a cache
would exceed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psutil

__all__ = ["WARM_IDLE_CORES", "WARM_RESERVE", "WarmModels", "idle_cores", "warm_order"]

logger = logging.getLogger("ray.serve")

#: share of the node's memory that must stay available for a warm model to be kept
WARM_RESERVE = 0.25
#: cores the node must have idle (over the last second) for a warm build to start
WARM_IDLE_CORES = 1.0
#: how often a replica waiting to build looks at the node again (s)
WARM_POLL_S = 1.0


def idle_cores() -> float:
    """Cores of this node idle since the last call (psutil: per process, so each replica has its own span)."""
    return psutil.cpu_count() * (1.0 - psutil.cpu_percent(interval=None) / 100.0)


def warm_order(names: Sequence[str], active: str) -> list[str]:
    """The variants other than `active`, nearest first in the slot's order (the catalog lists a
    stage's variants by size, and a plan moves to a neighbour more often than across)."""
    at = list(names).index(active) if active in names else 0
    return sorted((n for n in names if n != active), key=lambda n: (abs(list(names).index(n) - at), list(names).index(n)))


class WarmModels:
    """Built models beside the one a replica serves (variant name → runner)."""

    def __init__(self, load: Callable[[str], Any], *, reserve: float = WARM_RESERVE,
                 memory: Callable[[], Any] = psutil.virtual_memory, idle: Callable[[], float] = idle_cores,
                 busy: Callable[[], bool] = lambda: False, poll_s: float = WARM_POLL_S):
        """`load` builds a variant's runner by name; `busy` says whether the replica is building a
        switch (warm builds wait for it); `idle` reads the node's idle cores."""
        self._load, self.reserve, self._memory = load, reserve, memory
        self._idle, self._busy, self.poll_s = idle, busy, poll_s
        self.runners: dict[str, Any] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._thread: int | None = None  # the build thread's pthread id (its CPU clock)
        self._cpu_s = 0.0

    def _start_thread(self) -> None:
        self._thread = threading.get_ident()

    def cpu_s(self) -> float:
        """CPU seconds the warm builds have used (their thread's clock): the replica subtracts
        them from a batch's process CPU time, so a build never counts as serving."""
        if self._thread is not None:
            try:
                self._cpu_s = time.clock_gettime(time.pthread_getcpuclockid(self._thread))
            except (OSError, AttributeError):  # the thread has ended, or no per-thread clocks here
                pass
        return self._cpu_s

    def room(self) -> bool:
        """Whether the node has more than `reserve` of its memory available."""
        vm = self._memory()
        return vm.available > self.reserve * vm.total

    def take(self, name: str) -> Any | None:
        """The warm runner of `name`, out of the cache (None: not warm)."""
        return self.runners.pop(name, None)

    def keep(self, name: str, runner: Any) -> None:
        """Keep `runner` warm (a variant switched away from) while memory allows."""
        if self.room():
            self.runners[name] = runner
        else:
            self.evict()

    def evict(self) -> list[str]:
        """Drop every warm model if memory is short; returns the variants dropped."""
        if not self.runners or self.room():
            return []
        dropped = sorted(self.runners)
        self.runners.clear()
        gc.collect()
        logger.info("warm models dropped, memory short: %s", dropped)
        return dropped

    async def fill(self, names: Sequence[str], active: Callable[[], str | None]) -> None:
        """Build the variants `names` not yet warm (nearest to the active one first), one at a
        time when the node has a core to spare, until all are warm or memory is short."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="warm", initializer=self._start_thread)
        loop = asyncio.get_running_loop()
        self._idle()  # starts the idle span
        while True:
            running = active()
            todo = [n for n in warm_order(names, running or "") if n not in self.runners]
            if not todo or not self.room():
                return
            await asyncio.sleep(self.poll_s)
            if self._busy() or self._idle() < WARM_IDLE_CORES:
                continue
            name = todo[0]
            try:
                runner = await loop.run_in_executor(self._pool, self._load, name)
            except Exception:  # a variant that does not build stays cold; a switch to it reports why
                logger.exception("warm build of %s failed", name)
                names = [n for n in names if n != name]
                continue
            if name != active():
                self.keep(name, runner)
            if not self.room():
                return

    def close(self) -> None:
        self.runners.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
