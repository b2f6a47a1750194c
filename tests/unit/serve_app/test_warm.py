"""serve_app.warm: the warm-variant cache of a stage replica, without Ray."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import pytest

from serve_app.warm import WarmModels, warm_order

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


def warm_models(load, memory=None, **kw):
    """WarmModels on an idle node that polls at once."""
    return WarmModels(load, memory=memory or Memory(90), idle=kw.pop("idle", lambda: 2.0), poll_s=0.0, **kw)


def test_fill_builds_every_other_variant_nearest_first():
    built = []

    def load(name):
        built.append(name)
        return f"model:{name}"

    warm = warm_models(load)
    asyncio.run(warm.fill(NAMES, lambda: "r50"))
    assert built == ["r34", "r101", "r18", "r152"]
    assert warm.runners == {n: f"model:{n}" for n in built}
    warm.close()


def test_a_build_waits_for_an_idle_core_and_for_a_switch_to_finish():
    readings = iter([0.0, 0.5, 0.9, 1.5, 0.2, 1.0, 3.0])  # the first call starts the span
    switching = iter([False, True, False, False])
    built = []

    def load(name):
        built.append((name, spare[-1]))
        return name

    spare = []

    def idle():
        spare.append(next(readings))
        return spare[-1]

    warm = warm_models(load, idle=idle, busy=lambda: next(switching, False))
    asyncio.run(warm.fill(["a", "b", "c"], lambda: "a"))
    # 0.5 idle cores, then a switch building, then 0.9 idle cores: no build; then ≥ 1 core idle, each time
    assert built == [("b", 1.5), ("c", 1.0)]
    warm.close()


def test_fill_stops_when_memory_runs_short():
    memory = Memory(90)

    def load(name):
        memory.available -= 30  # each model takes 30 % of the node
        return name

    warm = warm_models(load, memory, reserve=0.25)
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

    warm = warm_models(load)
    asyncio.run(warm.fill(NAMES, lambda: "r18"))
    assert sorted(warm.runners) == ["r101", "r152", "r50"]
    warm.close()


def test_the_builds_cpu_time_is_counted_apart():
    def load(name):
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            pass
        return name

    warm = warm_models(load)
    main_cpu = time.thread_time()
    asyncio.run(warm.fill(["a", "b"], lambda: "a"))
    if not hasattr(time, "pthread_getcpuclockid"):
        pytest.skip("no per-thread CPU clocks on this platform")
    assert warm.cpu_s() >= 0.2
    assert time.thread_time() - main_cpu < 0.15  # the main thread did not do the build
    warm.close()
