"""serve_app.warm: the warm-variant cache of a stage replica, without Ray."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from types import SimpleNamespace

import pytest

from serve_app.warm import WARM_NICE, WarmModels, warm_order

NAMES = ["r18", "r34", "r50", "r101", "r152"]


class Memory:
    """A node's memory as psutil reports it: `available` is what the test sets."""

    def __init__(self, available: float, total: float = 100.0):
        self.available, self.total = available, total

    def __call__(self):
        return SimpleNamespace(available=self.available, total=self.total)


def test_order_is_nearest_first():
    assert warm_order(NAMES, "r50") == ["r34", "r101", "r18", "r152"]
    assert warm_order(NAMES, "r18") == ["r34", "r50", "r101", "r152"]
    assert warm_order(NAMES, "unknown") == NAMES  # nothing runs yet: from the first


def test_fill_builds_every_other_variant_at_the_lowest_priority():
    built, priorities = [], []

    def load(name):
        built.append(name)
        if sys.platform.startswith("linux"):
            priorities.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return f"model:{name}"

    warm = WarmModels(load, memory=Memory(90))
    asyncio.run(warm.fill(NAMES, lambda: "r50"))
    assert built == ["r34", "r101", "r18", "r152"]
    assert warm.runners == {n: f"model:{n}" for n in built}
    if sys.platform.startswith("linux"):
        assert priorities == [WARM_NICE] * 4
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) != WARM_NICE  # only the build thread
    warm.close()


def test_fill_stops_when_memory_runs_short():
    memory = Memory(90)

    def load(name):
        memory.available -= 30  # each model takes 30 % of the node
        return name

    warm = WarmModels(load, reserve=0.25, memory=memory)
    asyncio.run(warm.fill(NAMES, lambda: "r18"))
    # 90 → 60 → 30 (kept: above the 25 % reserve) → 0 (over: dropped, and the rest not built)
    assert memory.available == 0
    assert warm.runners == {}  # the build that crossed the reserve emptied the cache
    memory.available = 60
    assert warm.evict() == []


def test_take_keep_and_evict():
    memory = Memory(90)
    warm = WarmModels(lambda name: name, memory=memory)
    warm.keep("a", 1)
    warm.keep("b", 2)
    assert warm.take("a") == 1 and warm.take("a") is None
    memory.available = 10
    assert warm.evict() == ["b"] and warm.runners == {}
    warm.keep("c", 3)  # no room: not kept
    assert warm.runners == {}


def test_a_variant_that_fails_to_build_is_skipped():
    def load(name):
        if name == "r34":
            raise RuntimeError("no weights")
        return name

    warm = WarmModels(load, memory=Memory(90))
    asyncio.run(warm.fill(NAMES, lambda: "r18"))
    assert sorted(warm.runners) == ["r101", "r152", "r50"]
    warm.close()


def test_the_builds_cpu_time_is_counted_apart():
    def load(name):
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass
        return name

    warm = WarmModels(load, memory=Memory(90))
    main_cpu = time.thread_time()
    asyncio.run(warm.fill(["a", "b"], lambda: "a"))
    if not hasattr(time, "pthread_getcpuclockid"):
        pytest.skip("no per-thread CPU clocks on this platform")
    assert warm.cpu_s() >= 0.2
    assert time.thread_time() - main_cpu < 0.15  # the main thread did not do the build
    warm.close()
